//! Tapedeck host: runs every service stage as a sandboxed WebAssembly component.
//!
//! # Layout
//! - `plugins`: wasmtime engine, compile cache, per-run limits, host imports, isolation
//!   (subprocess runner or in-process).
//! - `cli`: the `tapedeck` command line.

pub mod cli;
pub mod plugins;
