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
use redis::AsyncCommands;
use sha2::Digest;

use crate::keys::{session_key, tenant_key, user_sessions_key};

/// Records a session if the tenant exists and is not being deleted: mints the tenant's
/// incarnation if it has none yet (tenants created before incarnations existed).
/// KEYS: session, user's sessions, tenant. ARGV: user id, expiry (unix ms), token sha,
/// fresh incarnation. Returns 1, or 0 when the tenant is gone.
const RECORD: &str = r"
if redis.call('EXISTS', KEYS[3]) == 0 or redis.call('HGET', KEYS[3], 'deleting') == '1' then
  return 0
end
redis.call('HSETNX', KEYS[3], 'incarnation', ARGV[4])
local inc = redis.call('HGET', KEYS[3], 'incarnation')
redis.call('HSET', KEYS[1], 'user', ARGV[1], 'inc', inc)
redis.call('PEXPIREAT', KEYS[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
local ttl = redis.call('PTTL', KEYS[2])
local want = tonumber(ARGV[2]) - tonumber(redis.call('TIME')[1]) * 1000
if ttl < want then redis.call('PEXPIREAT', KEYS[2], ARGV[2]) end
return 1
";

/// The user id of a live session of a live tenant incarnation, or nil.
/// KEYS: session, tenant.
const CHECK: &str = r"
local s = redis.call('HMGET', KEYS[1], 'user', 'inc')
if not s[1] then return false end
local t = redis.call('HMGET', KEYS[2], 'incarnation', 'deleting')
if t[1] ~= s[2] or t[2] == '1' then return false end
return s[1]
";

/// The second to issue an account's next token at: now, or one past the last one if that
/// was now or later. KEYS: last issue. ARGV: now (unix s).
const RESERVE_SECOND: &str = r"
local t = math.max(tonumber(ARGV[1]), (tonumber(redis.call('GET', KEYS[1])) or 0) + 1)
redis.call('SET', KEYS[1], t, 'EX', 120)
return t
";

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
    record: redis::Script,
    check: redis::Script,
}

impl Sessions {
    pub fn new(pool: Pool) -> Self {
        Self {
            pool,
            record: redis::Script::new(RECORD),
            check: redis::Script::new(CHECK),
        }
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
        redis::Script::new(RESERVE_SECOND)
            .key(crate::keys::last_issue_key(tenant, email))
            .arg(now)
            .invoke_async(&mut conn)
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
        let recorded: u8 = self
            .record
            .key(session_key(tenant, &sha))
            .key(user_sessions_key(tenant, user_id))
            .key(tenant_key(tenant))
            .arg(user_id)
            .arg(expires_at.saturating_mul(1000))
            .arg(&sha)
            .arg(new_incarnation())
            .invoke_async(&mut conn)
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
        let user: Option<String> = self
            .check
            .key(session_key(tenant, &token_sha256(token)))
            .key(tenant_key(tenant))
            .invoke_async(&mut conn)
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
