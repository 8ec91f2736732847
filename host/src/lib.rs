//! Tapedeck host: runs every service stage as a sandboxed WebAssembly component.
//!
//! # Layout
//! - `plugins`: wasmtime engine, compile cache, per-run limits, host imports, isolation
//!   (subprocess runner or in-process).
//! - `cli`: the `tapedeck` command line.
//! - `config`: settings of `tapedeck serve` (flags, env vars, TOML file).
//! - `serve`: runs the service (managed Redis, gateway, workers, graceful shutdown).
//! - `gateway`: the HTTP API (axum), authentication, uploads, SSE, downloads.
//! - `queue`: the job pipeline in Redis Streams.
//! - `notify`: e-mail and signed webhooks when a job finishes or fails (the notifier
//!   component composes, the host delivers).
//! - `worker`: runs conversions from the queue through the `Converter` seam.
//! - `storage`: blob store (local directory or S3).
//! - `links`: signed download links in notifications, the published public URL.
//! - `media`: the length of an upload's audio, from its container (sizes CPU limits).

pub mod cli;
pub mod plugins;

pub mod config;
pub mod gateway;
pub mod links;
pub mod media;
pub mod notify;
pub mod queue;
pub mod serve;
pub mod storage;
pub mod worker;
