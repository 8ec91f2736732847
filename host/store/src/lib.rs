//! Everything Tapedeck keeps in Redis: the key map ([`keys`], mirrored by
//! `redis/README.md`), the job pipeline and its Lua transitions ([`queue`]), tenants,
//! users and the token signing key, notification settings, and the keys behind signed
//! download links. No HTTP and no wasmtime here.
//!
//! # Layout
//! - `conn`: the connection every command goes over ([`Pool`]: one multiplexed
//!   connection per process, a single Redis or a Cluster), blocking reads, pub/sub.
//! - `keys`: every `td:*` key and channel.
//! - `queue`: job records, per-tenant convert streams, retries, dead letters, events,
//!   usage counters, enqueue-time limits.
//! - `sched`: weighted fair dispatch across tenants (stride scheduling), leases, retries.
//! - `streams`: the consumer-group protocol both pipelines use.
//! - `sessions`: login sessions (what makes tokens revocable).
//! - `tenants` (and their limits), `usage`, `users` (and the operator token),
//!   `notify_settings`, `links`, `registry` (the plugin registry).

pub mod canary;
pub mod conn;
pub mod keys;
pub mod links;
pub mod lua;
pub mod notify_settings;
pub mod queue;
pub mod registry;
pub mod sched;
pub mod sessions;
pub mod streams;
pub mod tenants;
pub mod usage;
pub mod users;

pub use conn::{Connection, Pool, PoolError, pool_error, scan_keys};
