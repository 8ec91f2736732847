//! Login sessions: what makes a token revocable.
//!
//! A token (a JWT from the auth stage) proves who it was issued to; it says nothing of
//! what happened since. So every login also records a session under the SHA-256 of its
//! token (`td:{T}:session:{sha}`: the user id and the tenant's *incarnation*, a random id
//! minted when the tenant was created), indexed per user (`td:{T}:sessions:{user}`), and
//! a token is accepted only while its session exists, names the user the token names, and
//! its incarnation is the tenant's current one. Ending a session is deleting it:
//! `logout` (one), `logout-all`, a role or password change and a user's removal (all of
//! the user's); a deleted tenant's tokens die with its incarnation, even if a tenant of
//! the same name is created again.
//!
//! Checking costs one script call (one round trip); the gateway caches a positive answer
//! for at most a second or two.

use crate::Pool;
use crate::lua;
use redis::AsyncCommands;
use sha2::Digest;

use crate::keys::{session_key, tenant_key, user_sessions_key};

/// The SHA-256 (hex) of a token: what its session is stored under (the token itself
/// never is).
pub fn token_sha256(token: &str) -> String {
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

/// A fresh tenant incarnation id.
pub fn new_incarnation() -> String {
    hex::encode(rand::random::<[u8; 12]>())
}

/// Sessions in Redis; cheap to clone.
#[derive(Clone)]
pub struct Sessions {
    pool: Pool,
}

impl Sessions {
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }

    /// The second (unix s) to issue `email`'s next token at: HS256 tokens have no nonce,
    /// so two logins within one second would otherwise get the same token, and logging
    /// out on one device would log out the other. At most a few seconds ahead of `now`.
    pub async fn issue_second(
        &self,
        tenant: &str,
        email: &str,
        now: u64,
    ) -> redis::RedisResult<u64> {
        let mut conn = self.pool.get().await.map_err(crate::pool_error)?;
        lua::RESERVE_SECOND
            .call()
            .key("last_issue", crate::keys::last_issue_key(tenant, email))
            .arg("now_s", now)
            .invoke(&mut conn)
            .await
    }

    /// Records the session of a token just issued to `user_id` of `tenant`, valid until
    /// `expires_at` (unix s). False if the tenant is gone (the token must not be handed out).
    pub async fn record(
        &self,
        tenant: &str,
        user_id: &str,
        token: &str,
        expires_at: u64,
    ) -> redis::RedisResult<bool> {
        let mut conn = self.pool.get().await.map_err(crate::pool_error)?;
        let sha = token_sha256(token);
        let recorded: u8 = lua::SESSION_RECORD
            .call()
            .key("session", session_key(tenant, &sha))
            .key("user_sessions", user_sessions_key(tenant, user_id))
            .key("tenant", tenant_key(tenant))
            .arg("user_id", user_id)
            .arg("expires_ms", expires_at.saturating_mul(1000))
            .arg("token_sha", &sha)
            .arg("incarnation", new_incarnation())
            .invoke(&mut conn)
            .await?;
        Ok(recorded == 1)
    }

    /// Whether `token` (of `user_id` in `tenant`) has a live session.
    pub async fn is_live(
        &self,
        tenant: &str,
        user_id: &str,
        token: &str,
    ) -> redis::RedisResult<bool> {
        let mut conn = self.pool.get().await.map_err(crate::pool_error)?;
        let user: Option<String> = lua::SESSION_CHECK
            .call()
            .key("session", session_key(tenant, &token_sha256(token)))
            .key("tenant", tenant_key(tenant))
            .invoke(&mut conn)
            .await?;
        Ok(user.as_deref() == Some(user_id))
    }

    /// Ends one session (`logout`).
    pub async fn end(&self, tenant: &str, user_id: &str, token: &str) -> redis::RedisResult<()> {
        let mut conn = self.pool.get().await.map_err(crate::pool_error)?;
        let sha = token_sha256(token);
        redis::pipe()
            .del(session_key(tenant, &sha))
            .ignore()
            .srem(user_sessions_key(tenant, user_id), &sha)
            .ignore()
            .query_async::<()>(&mut conn)
            .await
    }

    /// Ends every session of a user; returns how many there were. A login racing with
    /// this may survive it: it began after the change that called this, so it is the
    /// user as they are now.
    pub async fn end_all(&self, tenant: &str, user_id: &str) -> redis::RedisResult<u64> {
        let mut conn = self.pool.get().await.map_err(crate::pool_error)?;
        let index = user_sessions_key(tenant, user_id);
        let shas: Vec<String> = conn.smembers(&index).await?;
        let mut pipe = redis::pipe();
        for sha in &shas {
            pipe.del(session_key(tenant, sha)).ignore();
        }
        pipe.srem(&index, &shas).ignore();
        if !shas.is_empty() {
            pipe.query_async::<()>(&mut conn).await?;
        }
        Ok(shas.len() as u64)
    }
}
