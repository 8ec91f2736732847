//! The plugin registry's seam to the plugin runtime: the gateway (which does not link
//! wasmtime) asks a [`PluginCheck`] whether a published component may run a stage.

use futures::future::BoxFuture;

/// The stages the registry can swap.
pub const REGISTRY_STAGES: &[&str] = &["converter", "notifier", "auth"];

/// What checking a component found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// Time to compile it, milliseconds.
    pub compile_ms: u64,
    /// The world it implements, e.g. `tapedeck:plugin/converter@0.1.0`.
    pub world: String,
    /// What the smoke run did and found.
    pub smoke: String,
    /// How long the smoke run took, milliseconds.
    pub smoke_ms: u64,
}

/// Checks a component before the registry accepts it: it compiles, its exports match
/// the stage's world, its imports are within what the host provides for that stage, and
/// a smoke run passes.
pub trait PluginCheck: Send + Sync + 'static {
    /// `Err` carries the reason, for the operator.
    fn check<'a>(
        &'a self,
        stage: &'a str,
        bytes: &'a [u8],
    ) -> BoxFuture<'a, Result<CheckReport, String>>;
}
