//! Everything Tapedeck keeps in Redis: the key map ([`keys`], mirrored by
//! `redis/README.md`), the job pipeline and its Lua transitions ([`queue`]), tenants,
//! users and the token signing key, notification settings, and the keys behind signed
//! download links. No HTTP and no wasmtime here.
//!
//! # Layout
//! - `keys`: every `td:*` key and channel.
//! - `queue`: job records, per-tenant convert streams, retries, dead letters, events,
//!   usage counters, enqueue-time limits.
//! - `sched`: weighted fair dispatch across tenants (stride scheduling), leases, retries.
//! - `streams`: the consumer-group protocol both pipelines use.
//! - `sessions`: login sessions (what makes tokens revocable).
//! - `tenants` (and their limits), `usage`, `users` (and the operator token),
//!   `notify_settings`, `links`, `plugins` (the plugin registry).

pub mod canary;
pub mod keys;
pub mod links;
pub mod notify_settings;
pub mod plugins;
pub mod queue;
pub mod sched;
pub mod sessions;
pub mod streams;
pub mod tenants;
pub mod usage;
pub mod users;

/// Every key matching `pattern` (`SCAN MATCH`, in batches: never blocks Redis).
pub async fn scan_keys(
    conn: &mut impl redis::aio::ConnectionLike,
    pattern: &str,
) -> redis::RedisResult<Vec<String>> {
    let mut found = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(500)
            .query_async(conn)
            .await?;
        found.extend(keys);
        cursor = next;
        if cursor == 0 {
            return Ok(found);
        }
    }
}

/// A pool failure as a Redis error, for functions that answer `RedisResult`.
pub fn pool_error(e: deadpool_redis::PoolError) -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Io, "redis pool", e.to_string()))
}
