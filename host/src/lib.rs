//! Tapedeck host: runs every service stage as a sandboxed WebAssembly component.
//!
//! # Layout
//! - `plugins`: wasmtime engine, compile cache, per-run limits, host imports.
//! - `cli`: the `tapedeck` command line.
