//! The components built into the binary (by `build.rs`, a nested cargo build for
//! wasm32-wasip2). Embedded here and nowhere else, so editing a handler does not
//! re-embed them and editing a component recompiles only this crate.

/// The auth stage (`components/auth`).
pub const DEFAULT_AUTH: &[u8] = include_bytes!(env!("TAPEDECK_DEFAULT_AUTH_WASM"));

/// The converter stage (`components/converter`).
pub const DEFAULT_CONVERTER: &[u8] = include_bytes!(env!("TAPEDECK_DEFAULT_CONVERTER_WASM"));

/// The notifier stage (`components/notifier`).
pub const DEFAULT_NOTIFIER: &[u8] = include_bytes!(env!("TAPEDECK_DEFAULT_NOTIFIER_WASM"));
