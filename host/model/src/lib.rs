//! Tapedeck's shared vocabulary: what a job is, who is calling, what a run may spend, and
//! the seams between the stages. No I/O framework and no wasmtime: every other host
//! crate depends on this one, and this one on none of them.
//!
//! # Layout
//! - `api`: bodies of the operator API that the gateway serves and `tapedeck admin`
//!   reads (tenants and their limits).
//! - `job`: the job record, its options and status, and how it reads as a Redis hash.
//! - `auth`: token claims and the [`auth::Authenticator`] seam (gateway → auth stage).
//! - `convert`: the [`convert::Converter`] seam (worker → converter stage) and its job.
//! - `notify`: the [`notify::Composer`] seam (notifier → notifier stage), the messages
//!   it returns and the policy that bounds them.
//! - `run_limits`: [`run_limits::RunLimits`] and [`run_limits::LimitPolicy`] (what one component run may spend; the tenant limits are in `tenant`).
//! - `net`: which addresses webhooks may reach.
//! - `iso_bmff`: [`iso_bmff::Probe`], the bounded walk over an untrusted MP4's boxes that
//!   the gateway (sample rate, ranged reads of the blob) and the worker (length, the local
//!   file) share, over [`iso_bmff::ReadAt`].
//! - `stage`: [`stage::Stage`], the replaceable handle through which every call finds the
//!   component that runs its stage (the registry seam).
//! - `backoff`, `logs`: how loops on Redis wait after a failure ([`backoff::Backoff`])
//!   and log failures that repeat ([`logs::Throttled`]), so none spins or floods its log
//!   during an outage.

pub mod api;
pub mod auth;
pub mod backoff;
pub mod canary;
pub mod convert;
pub mod iso_bmff;
pub mod job;
pub mod logs;
pub mod net;
pub mod notify;
pub mod registry;
pub mod run_limits;
pub mod stage;
pub mod tenant;

pub use job::{JobInput, JobOptions, JobOutput, JobRecord, JobStatus, now_ms};
