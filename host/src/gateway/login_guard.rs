//! Slows down password guessing: failed logins are counted per account and per client
//! address in Redis over a window; past a threshold, logins are refused (429 with
//! `Retry-After`) until the window expires. A successful login clears the account's count.

use std::net::IpAddr;
use std::time::Duration;

use deadpool_redis::Pool;
use redis::AsyncCommands;

use crate::gateway::error::ApiError;

/// Thresholds of the guard.
#[derive(Debug, Clone)]
pub struct LoginGuard {
    pool: Pool,
    /// Failures allowed per account within `window`.
    pub per_account: u64,
    /// Failures allowed per client address within `window`.
    pub per_address: u64,
    /// How long failures are remembered (and a refused client must wait at most).
    pub window: Duration,
}

fn account_key(tenant: &str, email: &str) -> String {
    format!("td:loginfail:acct:{tenant}:{email}")
}
fn address_key(addr: IpAddr) -> String {
    format!("td:loginfail:addr:{addr}")
}

impl LoginGuard {
    pub fn new(pool: Pool) -> Self {
        Self {
            pool,
            per_account: 5,
            per_address: 30,
            window: Duration::from_secs(15 * 60),
        }
    }

    /// Refuses with 429 if the account or the address is locked out.
    pub async fn check(
        &self,
        tenant: &str,
        email: &str,
        addr: Option<IpAddr>,
    ) -> Result<(), ApiError> {
        let mut conn = self.pool.get().await?;
        let mut keys = vec![(account_key(tenant, email), self.per_account)];
        if let Some(addr) = addr {
            keys.push((address_key(addr), self.per_address));
        }
        for (key, limit) in keys {
            let count: Option<u64> = conn.get(&key).await?;
            if count.unwrap_or(0) >= limit {
                let ttl: i64 = conn.ttl(&key).await?;
                return Err(ApiError::TooManyRequests(ttl.max(1) as u64));
            }
        }
        Ok(())
    }

    /// Counts a failed login.
    pub async fn record_failure(
        &self,
        tenant: &str,
        email: &str,
        addr: Option<IpAddr>,
    ) -> Result<(), ApiError> {
        let mut conn = self.pool.get().await?;
        let mut pipe = redis::pipe();
        let window = self.window.as_secs() as i64;
        pipe.incr(account_key(tenant, email), 1).ignore();
        pipe.expire(account_key(tenant, email), window)
            .arg("NX")
            .ignore();
        if let Some(addr) = addr {
            pipe.incr(address_key(addr), 1).ignore();
            pipe.expire(address_key(addr), window).arg("NX").ignore();
        }
        let _: () = pipe.query_async(&mut conn).await?;
        Ok(())
    }

    /// Clears the account's failures after a successful login.
    pub async fn record_success(&self, tenant: &str, email: &str) -> Result<(), ApiError> {
        let mut conn = self.pool.get().await?;
        let _: () = conn.del(account_key(tenant, email)).await?;
        Ok(())
    }
}
