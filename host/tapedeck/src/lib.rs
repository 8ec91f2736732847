//! The `tapedeck` binary's library: the composition root of the host's crates.
//!
//! # Layout
//! - `cli`: the `tapedeck` command line (`convert`, `serve`, the hidden `plugin-run`).
//! - `config`: settings of `tapedeck serve` (flags, env vars, TOML file).
//! - `serve`: runs the service: managed Redis, the auth stage adapter, the gateway,
//!   workers and the notifier, graceful shutdown.
//! - `components`: the built-in components, embedded at build time (the only
//!   `include_bytes!` of the workspace).
//!
//! The host's crates, along a job's flow (re-exported as `tapedeck::model`, `gateway`, `store`,
//! `storage` (blobs), `worker`, `runtime`, `notify`):
//! `tapedeck-model` (vocabulary and seams), `tapedeck-gateway` (HTTP), `tapedeck-store`
//! (Redis), `tapedeck-blobs`, `tapedeck-worker`, `tapedeck-runtime` (wasmtime; the only
//! one besides this crate that links it), `tapedeck-notify`.

mod admin_cli;
pub mod cli;
pub mod components;
pub mod config;
pub mod plugin_kit;
pub mod serve;

pub use tapedeck_blobs as storage;
pub use tapedeck_gateway as gateway;
pub use tapedeck_model as model;
pub use tapedeck_notify as notify;
pub use tapedeck_runtime as runtime;
pub use tapedeck_store as store;
pub use tapedeck_store::queue;
pub use tapedeck_worker as worker;
