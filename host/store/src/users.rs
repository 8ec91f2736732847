//! Users (`td:user:{tenant}:{email}`) and the token signing key (`td:auth:signing-key`).
//! The auth component reads and writes users through the host's `user-store` import,
//! which the `tapedeck` binary implements with [`UserStore`].

use std::collections::HashMap;

use deadpool_redis::Pool;
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
