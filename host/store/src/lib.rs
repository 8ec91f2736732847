//! Everything Tapedeck keeps in Redis: the key map ([`keys`], mirrored by
//! `redis/README.md`), the job pipeline and its Lua transitions ([`queue`]), tenants,
//! users and the token signing key, notification settings, and the keys behind signed
//! download links. No HTTP and no wasmtime here.
//!
//! # Layout
//! - `keys`: every `td:*` key and channel.
//! - `queue`: job records, per-tenant convert streams, retries, dead letters, events.
//! - `streams`: the consumer-group protocol both pipelines use.
//! - `tenants`, `users`, `notify_settings`, `links`.

pub mod keys;
pub mod links;
pub mod notify_settings;
pub mod plugins;
pub mod queue;
pub mod sched;
pub mod streams;
pub mod tenants;
pub mod usage;
pub mod users;

/// A pool failure as a Redis error, for functions that answer `RedisResult`.
pub fn pool_error(e: deadpool_redis::PoolError) -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Io, "redis pool", e.to_string()))
}
