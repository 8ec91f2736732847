//! Users (`td:{tenant}:user:{email}`), the token signing key (`td:auth:signing-key`) and
//! the operator token's hash (`td:admin:token-sha256`).
//! The auth component reads and writes users through the host's `user-store` import,
//! which the `tapedeck` binary implements with [`UserStore`].

use std::collections::HashMap;

use crate::Pool;
use redis::AsyncCommands;
use tapedeck_model::auth::AuthError;

use crate::keys::{SIGNING_KEY, user_key};

/// A stored user (`td:user:{tenant}:{email}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub id: String,
    pub tenant: String,
    pub email: String,
    pub role: String,
    /// PHC string of the password hash.
    pub password_hash: String,
    /// Unix seconds (0 for accounts stored before this field existed).
    pub created_at: u64,
}

/// Users in Redis, keyed by tenant and normalized email.
#[derive(Clone)]
pub struct UserStore {
    pool: Pool,
}

impl UserStore {
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }

    pub async fn get(&self, tenant: &str, email: &str) -> Result<Option<UserRecord>, AuthError> {
        let mut conn = self.pool.get().await.map_err(backend)?;
        let h: HashMap<String, String> = conn
            .hgetall(user_key(tenant, email))
            .await
            .map_err(backend)?;
        let field = |k: &str| h.get(k).cloned();
        Ok((|| {
            Some(UserRecord {
                id: field("id")?,
                tenant: field("tenant")?,
                email: field("email")?,
                role: field("role")?,
                password_hash: field("password_hash")?,
                created_at: field("created_at")
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(0),
            })
        })())
    }

    /// Stores `user` unless the email is taken; false if it was.
    pub async fn insert(&self, user: &UserRecord) -> Result<bool, AuthError> {
        let mut conn = self.pool.get().await.map_err(backend)?;
        let key = user_key(&user.tenant, &user.email);
        let created: bool = conn.hset_nx(&key, "id", &user.id).await.map_err(backend)?;
        if !created {
            return Ok(false);
        }
        let _: () = conn
            .hset_multiple(
                &key,
                &[
                    ("tenant", &user.tenant),
                    ("email", &user.email),
                    ("role", &user.role),
                    ("password_hash", &user.password_hash),
                    ("created_at", &user.created_at.to_string()),
                ],
            )
            .await
            .map_err(backend)?;
        Ok(true)
    }
}

impl UserStore {
    /// Every user of `tenant`, by email (one `SCAN` of the tenant's user keys).
    pub async fn list(&self, tenant: &str) -> Result<Vec<UserRecord>, AuthError> {
        let mut conn = self.pool.get().await.map_err(backend)?;
        let keys = crate::scan_keys(&mut conn, &user_key(tenant, "*"))
            .await
            .map_err(backend)?;
        let prefix = user_key(tenant, "");
        let mut emails: Vec<String> = keys
            .iter()
            .filter_map(|k| k.strip_prefix(&prefix).map(str::to_owned))
            .collect();
        drop(conn);
        emails.sort();
        emails.dedup();
        let mut users = Vec::new();
        for email in emails {
            if let Some(u) = self.get(tenant, &email).await? {
                users.push(u);
            }
        }
        Ok(users)
    }

    /// Sets a user's role; false if there is no such user.
    pub async fn set_role(&self, tenant: &str, email: &str, role: &str) -> Result<bool, AuthError> {
        let mut conn = self.pool.get().await.map_err(backend)?;
        let key = user_key(tenant, email);
        let exists: bool = conn.exists(&key).await.map_err(backend)?;
        if exists {
            let _: () = conn.hset(&key, "role", role).await.map_err(backend)?;
        }
        Ok(exists)
    }

    /// Replaces a user's password hash (a PHC string the auth stage made); false if
    /// there is no such user.
    pub async fn set_password_hash(
        &self,
        tenant: &str,
        email: &str,
        hash: &str,
    ) -> Result<bool, AuthError> {
        let mut conn = self.pool.get().await.map_err(backend)?;
        let key = user_key(tenant, email);
        let exists: bool = conn.exists(&key).await.map_err(backend)?;
        if exists {
            let _: () = conn
                .hset(&key, "password_hash", hash)
                .await
                .map_err(backend)?;
        }
        Ok(exists)
    }

    /// Removes a user; false if there was none.
    pub async fn remove(&self, tenant: &str, email: &str) -> Result<bool, AuthError> {
        let mut conn = self.pool.get().await.map_err(backend)?;
        let n: u64 = conn.del(user_key(tenant, email)).await.map_err(backend)?;
        Ok(n > 0)
    }
}

/// Makes sure an operator token exists: the configured one (its hash is stored, replacing
/// any other), or a generated one on the first start of a deployment. Returns the token
/// when it was just generated, for the caller to print once.
pub async fn ensure_operator_token(
    pool: &Pool,
    configured: Option<&str>,
) -> anyhow::Result<Option<String>> {
    use sha2::Digest;
    let mut conn = pool.get().await?;
    if let Some(token) = configured {
        let hash = hex::encode(sha2::Sha256::digest(token.as_bytes()));
        let _: () = conn.set(crate::keys::ADMIN_TOKEN_HASH, hash).await?;
        return Ok(None);
    }
    let fresh = format!("tdop_{}", hex::encode(rand::random::<[u8; 24]>()));
    let hash = hex::encode(sha2::Sha256::digest(fresh.as_bytes()));
    let created: bool = conn.set_nx(crate::keys::ADMIN_TOKEN_HASH, hash).await?;
    Ok(created.then_some(fresh))
}

/// Whether `token` is the operator token (compares SHA-256 digests in constant time).
pub async fn is_operator_token(pool: &Pool, token: &str) -> redis::RedisResult<bool> {
    use sha2::Digest;
    let mut conn = pool.get().await.map_err(crate::pool_error)?;
    let stored: Option<String> = conn.get(crate::keys::ADMIN_TOKEN_HASH).await?;
    let Some(stored) = stored.and_then(|s| hex::decode(s).ok()) else {
        return Ok(false);
    };
    let given = sha2::Sha256::digest(token.as_bytes());
    Ok(stored.len() == given.len()
        && stored
            .iter()
            .zip(given.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0)
}

fn backend(e: impl std::fmt::Display) -> AuthError {
    AuthError::Backend(e.to_string())
}

/// The shared signing key: read it, or create it (32 random bytes, hex) if absent.
pub async fn load_or_create_signing_key(pool: &Pool) -> anyhow::Result<Vec<u8>> {
    let mut conn = pool.get().await?;
    let fresh: [u8; 32] = rand::random();
    let _: bool = conn.set_nx(SIGNING_KEY, hex::encode(fresh)).await?;
    let stored: String = conn.get(SIGNING_KEY).await?;
    Ok(hex::decode(stored)?)
}

/// Normalizes and checks an email address, as login throttling keys it. The auth
/// component applies its own (stricter) rule when registering.
pub fn normalize_email(email: &str) -> Result<String, AuthError> {
    let email = email.trim().to_lowercase();
    let valid = email.len() <= 254
        && email.split_once('@').is_some_and(|(user, host)| {
            !user.is_empty() && !host.is_empty() && !email.contains(char::is_whitespace)
        });
    if valid {
        Ok(email)
    } else {
        Err(AuthError::InvalidInput(
            "email is not a valid address".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalized() {
        assert_eq!(normalize_email(" A@B.c ").unwrap(), "a@b.c");
        assert!(normalize_email("nobody").is_err());
        assert!(normalize_email("a b@c").is_err());
    }
}
