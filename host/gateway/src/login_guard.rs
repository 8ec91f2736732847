//! Slows down password guessing without handing attackers a way to lock owners out.
//!
//! Failed logins are counted in Redis over a window, three ways:
//! - per account *and* client address: past `per_pair` that address is refused for that
//!   account (429 with `Retry-After`) until the window expires;
//! - per client address: past `per_address` the address is refused for every account;
//! - per account alone: past `per_account`, every login to the account is *slowed*
//!   (a delay doubling per further failure, at most `max_delay`), never refused, so
//!   guesses from many addresses stay slow while the owner, from their own address, still
//!   gets in.
//!
//! - per account, once its failures pass `per_account`: a token bucket
//!   (`guess_burst` attempts, refilled at `guesses_per_minute`) caps the attempts from
//!   addresses the account never logged in from, so guesses spread over many addresses
//!   get a few per minute in all. Addresses the account logged in from successfully (the
//!   last 20, for 90 days) skip the cap and the slowing: the owner is never locked out
//!   of a correct password from a known address.
//!
//! A successful login clears the account's counts. The client address is the peer's,
//! or, when the peer is a trusted proxy, the one it names in `X-Forwarded-For`
//! ([`ClientAddr`]).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use redis::AsyncCommands;
use tapedeck_store::Pool;

use crate::AppState;
use crate::error::ApiError;
use tapedeck_model::net::IpNet;

/// Thresholds of the guard.
#[derive(Debug, Clone)]
pub struct LoginGuard {
    pool: Pool,
    /// Failures allowed per account from one address within `window`.
    pub per_pair: u64,
    /// Failures allowed per client address (all accounts) within `window`.
    pub per_address: u64,
    /// Failures per account (all addresses) after which its logins are slowed.
    pub per_account: u64,
    /// Longest delay added to a login of a slowed account.
    pub max_delay: Duration,
    /// How long failures are remembered (and a refused client must wait at most).
    pub window: Duration,
    /// Attempts an account under attack allows at once from unknown addresses.
    pub guess_burst: u64,
    /// ... and then per minute.
    pub guesses_per_minute: u64,
}

/// Addresses remembered per account as known, and for how long.
const KNOWN_ADDRESSES: isize = 20;
const KNOWN_FOR: Duration = Duration::from_secs(90 * 24 * 3600);

use tapedeck_store::keys::{
    login_bucket_key as bucket_key, login_fail_account_key as account_key,
    login_fail_address_key as address_key, login_fail_pair_key as pair_key,
    login_known_key as known_key,
};

/// The delay for an account with `failures` failed logins (0 up to `threshold`).
pub fn slow_down(failures: u64, threshold: u64, max: Duration) -> Duration {
    if failures < threshold {
        return Duration::ZERO;
    }
    let doublings = (failures - threshold).min(16) as u32;
    (Duration::from_millis(250) * 2u32.pow(doublings)).min(max)
}

impl LoginGuard {
    pub fn new(pool: Pool) -> Self {
        Self {
            pool,
            per_pair: 5,
            per_address: 30,
            per_account: 5,
            max_delay: Duration::from_secs(5),
            window: Duration::from_secs(15 * 60),
            guess_burst: 3,
            guesses_per_minute: 3,
        }
    }

    /// Refuses with 429 if this address is locked out (for this account or all), and
    /// waits first if the account is being slowed.
    pub async fn check(
        &self,
        tenant: &str,
        email: &str,
        addr: Option<IpAddr>,
    ) -> Result<(), ApiError> {
        let mut conn = self.pool.get().await?;
        // Without a known address, the account's own count is all there is to lock on.
        let mut locks = vec![match addr {
            Some(addr) => (pair_key(tenant, email, addr), self.per_pair),
            None => (account_key(tenant, email), self.per_pair),
        }];
        if let Some(addr) = addr {
            locks.push((address_key(addr), self.per_address));
        }
        for (key, limit) in locks {
            let count: Option<u64> = conn.get(&key).await?;
            if count.unwrap_or(0) >= limit {
                let ttl: i64 = conn.ttl(&key).await?;
                return Err(ApiError::TooManyRequests(ttl.max(1) as u64));
            }
        }
        let failures: u64 = conn
            .get::<_, Option<u64>>(account_key(tenant, email))
            .await?
            .unwrap_or(0);
        if failures < self.per_account {
            return Ok(());
        }
        // Under attack: a known address goes through as if nothing happened; any other
        // takes an attempt from the account's bucket.
        if let Some(addr) = addr {
            let seen: Option<f64> = conn
                .zscore(known_key(tenant, email), addr.to_string())
                .await?;
            if seen.is_some() {
                return Ok(());
            }
        }
        let per_attempt_ms = 60_000 / self.guesses_per_minute.max(1);
        let wait_ms: u64 = tapedeck_store::lua::LOGIN_ATTEMPT
            .call()
            .key("bucket", bucket_key(tenant, email))
            .arg("now_ms", tapedeck_model::now_ms())
            .arg("capacity", self.guess_burst.max(1))
            .arg("per_attempt_ms", per_attempt_ms)
            .arg("ttl_s", self.window.as_secs())
            .invoke(&mut conn)
            .await?;
        if wait_ms > 0 {
            return Err(ApiError::TooManyRequests(wait_ms.div_ceil(1000)));
        }
        drop(conn);
        let delay = slow_down(failures, self.per_account, self.max_delay);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
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
        let mut keys = vec![account_key(tenant, email)];
        if let Some(addr) = addr {
            keys.push(pair_key(tenant, email, addr));
            keys.push(address_key(addr));
        }
        for key in keys {
            pipe.incr(&key, 1).ignore();
            pipe.expire(&key, window).arg("NX").ignore();
        }
        let _: () = pipe.query_async(&mut conn).await?;
        Ok(())
    }

    /// Clears the account's failures after a successful login.
    pub async fn record_success(
        &self,
        tenant: &str,
        email: &str,
        addr: Option<IpAddr>,
    ) -> Result<(), ApiError> {
        let mut conn = self.pool.get().await?;
        let mut keys = vec![account_key(tenant, email), bucket_key(tenant, email)];
        if let Some(addr) = addr {
            keys.push(pair_key(tenant, email, addr));
        }
        let mut pipe = redis::pipe();
        pipe.del(keys).ignore();
        if let Some(addr) = addr {
            let known = known_key(tenant, email);
            pipe.zadd(&known, addr.to_string(), tapedeck_model::now_ms())
                .ignore()
                .zremrangebyrank(&known, 0, -(KNOWN_ADDRESSES + 1))
                .ignore()
                .expire(&known, KNOWN_FOR.as_secs() as i64)
                .ignore();
        }
        let _: () = pipe.query_async(&mut conn).await?;
        Ok(())
    }
}

/// The client's address: the peer's, or, when the peer is a trusted proxy, the last
/// address in `X-Forwarded-For` that is not itself a trusted proxy (proxies append, so
/// everything left of that may be forged by the client). `None` without connect info.
pub struct ClientAddr(pub Option<IpAddr>);

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, std::convert::Infallible> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(a)| a.ip());
        let forwarded: Vec<&str> = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        Ok(ClientAddr(peer.map(|peer| {
            client_address(peer, &forwarded, &state.trusted_proxies)
        })))
    }
}

/// See [`ClientAddr`]; `forwarded` holds the `X-Forwarded-For` header values in order.
pub fn client_address(peer: IpAddr, forwarded: &[&str], trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let hops: Vec<&str> = forwarded
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    for hop in hops.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) if is_trusted(ip) => continue,
            Ok(ip) => return ip,
            // Garbage where an address should be: trust nothing further left.
            Err(_) => return peer,
        }
    }
    peer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_counts_only_behind_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // Not from a proxy: the header is the client's own claim, ignored.
        assert_eq!(
            client_address(ip("203.0.113.9"), &["1.2.3.4"], &trusted),
            ip("203.0.113.9")
        );
        // From a proxy: the last untrusted hop; forged entries to its left are ignored.
        assert_eq!(
            client_address(
                ip("10.0.0.2"),
                &["6.6.6.6, 198.51.100.7", "10.0.0.5"],
                &trusted
            ),
            ip("198.51.100.7")
        );
        assert_eq!(
            client_address(ip("10.0.0.2"), &[], &trusted),
            ip("10.0.0.2")
        );
        assert_eq!(
            client_address(ip("10.0.0.2"), &["junk, 10.0.0.3"], &trusted),
            ip("10.0.0.2")
        );
    }

    #[test]
    fn slowing_doubles_from_the_threshold_up_to_the_cap() {
        let max = Duration::from_secs(5);
        assert_eq!(slow_down(4, 5, max), Duration::ZERO);
        assert_eq!(slow_down(5, 5, max), Duration::from_millis(250));
        assert_eq!(slow_down(7, 5, max), Duration::from_secs(1));
        assert_eq!(slow_down(500, 5, max), max);
    }
}
