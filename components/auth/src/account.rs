//! Accounts as the store keeps them and as callers see them.

use serde::{Deserialize, Serialize};

/// What a user may do; carried in tokens as `"user"` or `"admin"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Admin,
}

/// One user as the host's store keeps it, keyed by (`tenant`, `email`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// Random UUID v4, chosen at registration; never reused, never changes.
    pub user_id: String,
    /// The tenant the user belongs to; a user of one tenant is unknown to every other.
    pub tenant: String,
    /// Normalised address (see [`crate::email::normalize_email`]).
    pub email: String,
    /// argon2id PHC string.
    pub password_hash: String,
    /// What the user may do.
    pub role: Role,
    /// Seconds since the Unix epoch.
    pub created_at: u64,
}

/// A registered account, without its password hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// See [`UserRecord::user_id`].
    pub user_id: String,
    /// See [`UserRecord::tenant`].
    pub tenant: String,
    /// Normalised address.
    pub email: String,
    /// What the user may do.
    pub role: Role,
}

impl From<&UserRecord> for Account {
    fn from(record: &UserRecord) -> Self {
        Account {
            user_id: record.user_id.clone(),
            tenant: record.tenant.clone(),
            email: record.email.clone(),
            role: record.role,
        }
    }
}

/// A random UUID v4 in its usual hyphenated lower-case form.
pub(crate) fn new_user_id() -> String {
    let mut bytes = [0u8; 16];
    crate::random::fill(&mut bytes);
    bytes[6] = (bytes[6] & 0x0f) | 0x40; // version 4
    bytes[8] = (bytes[8] & 0x3f) | 0x80; // RFC 4122 variant
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_are_uuid_v4_and_differ() {
        let a = new_user_id();
        let b = new_user_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"));
        assert_eq!(a.matches('-').count(), 4);
    }
}
