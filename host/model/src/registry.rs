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
    /// The conformance cases it failed that do not refuse it (one line each: name and
    /// detail): recorded on the plugin; a canary of it is not promoted automatically.
    pub failures: Vec<String>,
}

/// What publishing asks to check.
#[derive(Debug, Clone, Copy)]
pub struct CheckRequest<'a> {
    pub stage: &'a str,
    pub bytes: &'a [u8],
    /// The tenant publishing it, whose CPU budget the check's runs count against (none:
    /// the operator).
    pub tenant: Option<&'a str>,
}

/// Why a check did not accept a component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckError {
    /// The component failed the check (the reason, for the publisher).
    Refused(String),
    /// No check slot came free within the wait allowed: publish again later.
    Busy(String),
}

/// Checks a component before the registry accepts it: it compiles, its exports match
/// the stage's world, its imports are within what the host provides for that stage, and
/// a smoke run passes. A check is work like a conversion: bounded in CPU and wall time,
/// a few at a time, stopped when the publish is abandoned.
pub trait PluginCheck: Send + Sync + 'static {
    fn check<'a>(
        &'a self,
        request: CheckRequest<'a>,
    ) -> BoxFuture<'a, Result<CheckReport, CheckError>>;
}

/// What a worker awaits before it picks the component for a job: that this process has
/// heard of the registry's current version, and that no component the job's scope is
/// switching to is still compiling. So a job never runs on a component its scope has
/// left, whether the process just started or the operator just activated another.
pub trait RegistryGate: Send + Sync + 'static {
    /// Resolves once a job of `tenant` may take the component installed for it.
    fn ready_for<'a>(&'a self, tenant: &'a str) -> BoxFuture<'a, ()>;
}
