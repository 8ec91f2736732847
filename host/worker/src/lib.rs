//! The conversion worker: takes convert-stream entries (fairly across tenants), runs the
//! converter on a temp copy of the input, stores the MP3 and marks the job done, or
//! retries / fails it.
//!
//! The converter sits behind the small [`Converter`] trait (blocking, file in, file out,
//! progress callback), so the pipeline does not depend on how a conversion runs; `serve`
//! wires the WebAssembly plugin runtime into it.
//!
//! Idempotency: the MP3 goes to a key derived from the job id (`out/{tenant}/{job}.mp3`),
//! and only the first completion marks the job done, so a job converted twice (e.g. a
//! slow worker whose entry was claimed by another) stores one output.
//!
//! Cancelling: every run gets a [`RunCancel`]. Deleting a converting job publishes on
//! the cancel channel; one subscription per process ([`Worker::run`]) sets the flag of
//! the run converting that job, whose runner is then killed at once; should the message
//! be lost, the heartbeat finds the job gone. A shutdown past its grace period cancels
//! every run after handing it back ([`Worker::hand_back`]).
//!
//! Outages: the outcome of a finished attempt waits for Redis (tried again with backoff
//! until Redis takes it, or a shutdown hands the job back), so a short outage neither
//! loses a conversion nor has it run again after the visibility timeout; every loop here
//! backs off while Redis is down and logs a repeated failure once in a while.
//!
//! Quota: a run's output is capped at the room left in its tenant's `quota_bytes`, and
//! completing checks the quota again atomically; an MP3 the quota cannot hold is
//! deleted and the job fails with `limit_exceeded`.

pub mod janitor;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use tapedeck_blobs::BlobStore;
use tapedeck_model::backoff::Backoff;
use tapedeck_model::canary::CanarySettings;
pub use tapedeck_model::convert::{
    ConvertFailure, ConvertJob, ConvertSummary, Converter, ProgressFn, RunCancel,
};
use tapedeck_model::job::JobRecord;
use tapedeck_model::logs::Throttled;
use tapedeck_model::run_limits::LimitPolicy;
use tapedeck_model::stage::{Installed, Stage};
use tapedeck_store::canary;
use tapedeck_store::queue::{
    AttemptStart, CancelRequest, Completion, Delivery, JOB_CANCEL_CHANNEL, JobOutput, JobQueue,
    Orphan, QueueError, consumer_name,
};

/// Settings of one worker process.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Conversions run at once by this process.
    pub slots: usize,
    /// This machine's name: consumers are `{host}-{pid}-{slot}` (see `queue::consumer_name`).
    pub host: String,
    /// Temp files of this process's conversions (`{data_dir}/scratch/{pid}`), removed by
    /// [`clean_stale_scratch`] once the process is gone.
    pub scratch_dir: PathBuf,
    /// How long an idle slot's wait for a wake-up token blocks (on a connection of its
    /// own) before it looks at the queue again: new work wakes it at once, so this only
    /// bounds how long a lost token can go unnoticed.
    pub idle_poll: Duration,
    /// How each conversion's limits are sized (the service's `--run-*` settings).
    pub limits: LimitPolicy,
    /// The server defaults of the tenant limits (`--tenant-defaults`).
    pub tenant_defaults: tapedeck_model::tenant::TenantLimits,
    /// The Redis the cancel subscription listens on (a connection of its own, to any
    /// node of a cluster; `None`: a deleted job's run goes on until the heartbeat finds
    /// the job gone).
    pub redis: Option<tapedeck_store::Pool>,
}

/// A job's side of the canary running in its scope: the canary's settings, whether this
/// attempt runs the canary, and, if so, the deadline of its run.
struct Arm<'a> {
    settings: &'a CanarySettings,
    on_canary: bool,
    deadline: Option<canary::Deadline>,
}

/// The conversions running now, by entry id.
type InFlight = Arc<Mutex<std::collections::HashMap<String, Running>>>;

/// One conversion running now.
struct Running {
    delivery: Delivery,
    /// Stops its run (its runner child is killed).
    cancel: RunCancel,
}

/// Runs conversion slots until `shutdown` is cancelled.
pub struct Worker {
    queue: JobQueue,
    blobs: BlobStore,
    /// Resolved per job: the component running the converter stage for its tenant now.
    converter: Stage<dyn Converter>,
    settings: WorkerSettings,
    /// Entries of dead predecessors on this host, taken before new work.
    orphans: Mutex<Vec<Orphan>>,
    /// The deliveries being converted now, by entry id: what [`Worker::hand_back`]
    /// returns to the queue when shutdown cannot wait for them, and what the cancel
    /// subscription looks a deleted job up in.
    in_flight: InFlight,
    /// Awaited before a job's component is chosen: the registry's current version is
    /// applied for the job's scope (`serve` sets it; none: the stage as it is).
    registry_gate: Option<Arc<dyn tapedeck_model::registry::RegistryGate>>,
    /// The one slot of this process a canary may hold at a time (see `process`).
    canary_slot: Arc<tokio::sync::Semaphore>,
}

/// Longest a worker process's promoter sleeps between looks at the retry set: retries
/// this process schedules wake it when due; those of other processes (which promote
/// their own on time) are seen within this.
const RETRY_POLL: Duration = Duration::from_secs(5);
/// How often the leases of dead workers are looked for (each lease runs the visibility
/// timeout, a minute by default).
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// Removes the scratch dirs of processes that no longer run (`scratch/{pid}`), and
/// anything else in `root`: what a killed worker left behind.
pub fn clean_stale_scratch(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let live = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|pid| pid != std::process::id() && process_alive(pid));
        if live {
            continue;
        }
        let path = entry.path();
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        match removed {
            Ok(()) => tracing::info!(path = %path.display(), "removed stale scratch"),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove stale scratch")
            }
        }
    }
}

/// Whether a process with this pid exists (on this machine).
pub fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill(2) with signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

impl Worker {
    /// The run limits of a job of `tenant`: the `--run-*` settings, tightened by the
    /// server defaults of the tenant limits, then by the tenant's own, the output capped
    /// at the room left in its storage quota; and that quota (`None`: none).
    async fn run_limits(&self, tenant: &str) -> Result<(LimitPolicy, Option<u64>), ConvertFailure> {
        let retry = |what: &str, e: &dyn std::fmt::Display| {
            ConvertFailure::Retryable(format!("reading the {what}: {e}"))
        };
        let own = tapedeck_store::tenants::load_cached(self.queue.pool(), tenant)
            .await
            .map_err(|e| retry("tenant", &e))?
            .map(|t| t.limits)
            .unwrap_or_default();
        let mut server = self
            .settings
            .limits
            .for_tenant(tenant, &self.settings.tenant_defaults);
        // What the server defaults set is the operator's setting, not the tenant's.
        server.set_by_tenant = Default::default();
        let mut policy = server.for_tenant(tenant, &own);
        let quota = own.over(&self.settings.tenant_defaults).quota_bytes;
        if let Some(quota) = quota {
            let stored = tapedeck_store::usage::stored_bytes(self.queue.pool(), tenant)
                .await
                .map_err(|e| retry("tenant's usage", &e))?;
            policy.cap_output_at_quota(quota.saturating_sub(stored));
        }
        Ok((policy, quota))
    }

    pub fn new(
        queue: JobQueue,
        blobs: BlobStore,
        converter: impl Into<Stage<dyn Converter>>,
        settings: WorkerSettings,
    ) -> Self {
        Self {
            queue,
            blobs,
            converter: converter.into(),
            settings,
            orphans: Mutex::new(Vec::new()),
            in_flight: Arc::default(),
            registry_gate: None,
            canary_slot: Arc::new(tokio::sync::Semaphore::new(1)),
        }
    }

    /// Makes every job wait for `gate` before its component is chosen.
    pub fn with_registry_gate(
        mut self,
        gate: Arc<dyn tapedeck_model::registry::RegistryGate>,
    ) -> Self {
        self.registry_gate = Some(gate);
        self
    }

    /// Returns every conversion still running to the queue at once, its attempt not
    /// counted, and stops its run (the runner child is killed): what a shutdown does
    /// when its grace period is over, so a rolling update or a scale-in loses nothing,
    /// no job waits out the visibility timeout, and no runner outlives the process. The
    /// slot that ran it records nothing more (its delivery is no longer in flight).
    pub async fn hand_back(&self) -> usize {
        let running: Vec<Running> = self
            .in_flight
            .lock()
            .expect("in-flight lock is never poisoned")
            .drain()
            .map(|(_, r)| r)
            .collect();
        for r in &running {
            r.cancel.cancel();
        }
        let mut handed = 0;
        for d in running.iter().map(|r| &r.delivery) {
            let reason = "the worker shut down before the conversion finished; handed back";
            match self.queue.hand_back(d, reason).await {
                Ok(()) => handed += 1,
                Err(e) => tracing::warn!(job = %d.job_id, error = %e, "could not hand back"),
            }
        }
        if handed > 0 {
            tracing::info!(
                jobs = handed,
                "handed unfinished conversions back to the queue"
            );
        }
        handed
    }

    /// Runs every slot; returns when all have stopped after `shutdown`. A conversion in
    /// progress is finished first (the caller bounds the wait).
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        std::fs::create_dir_all(&self.settings.scratch_dir).ok();
        if let Some(pool) = &self.settings.redis {
            watch_cancels(pool.clone(), self.in_flight.clone(), shutdown.clone());
        }
        // This process's own pid counts as gone: a container restarted with the same
        // hostname and pid must not wait for its own former entries.
        let me = std::process::id();
        match self
            .queue
            .orphans(&self.settings.host, |pid| pid != me && process_alive(pid))
            .await
        {
            Ok(found) => {
                if !found.is_empty() {
                    tracing::info!(
                        entries = found.len(),
                        "taking over entries of a stopped worker"
                    );
                }
                *self
                    .orphans
                    .lock()
                    .expect("orphan list lock is never poisoned") = found;
            }
            Err(e) => tracing::warn!(error = %e, "could not look for entries of stopped workers"),
        }
        if let Err(e) = self.queue.seed_ready().await {
            tracing::warn!(error = %e, "could not seed the scheduler");
        }
        let mut slots = tokio::task::JoinSet::new();
        {
            let worker = self.clone();
            let shutdown = shutdown.clone();
            slots.spawn(async move { worker.housekeeping(shutdown).await });
        }
        for slot in 0..self.settings.slots.max(1) {
            let worker = self.clone();
            let shutdown = shutdown.clone();
            slots.spawn(async move { worker.run_slot(slot, shutdown).await });
        }
        while slots.join_next().await.is_some() {}
    }

    /// Promotes retries when they are due (sleeping until the next one, or until this
    /// process schedules one) and sweeps the leases of dead workers every
    /// [`SWEEP_EVERY`], until `shutdown`.
    async fn housekeeping(&self, shutdown: CancellationToken) {
        let mut backoff = Backoff::redis();
        let warnings = Throttled::default();
        let mut swept = Instant::now() - SWEEP_EVERY;
        while !shutdown.is_cancelled() {
            let mut wait = RETRY_POLL;
            match self.queue.promote_retries().await {
                Ok((_, next)) => {
                    backoff.succeeded();
                    if let Some(due) = next {
                        let in_ms = due.saturating_sub(tapedeck_store::queue::now_ms());
                        wait = wait.min(Duration::from_millis(in_ms));
                    }
                }
                Err(e) => {
                    tapedeck_model::warn_throttled!(warnings, "could not promote retries", e);
                    wait = backoff.failed();
                }
            }
            if swept.elapsed() >= SWEEP_EVERY {
                swept = Instant::now();
                if let Err(e) = self.queue.sweep_leases().await {
                    tapedeck_model::warn_throttled!(warnings, "could not sweep expired leases", e);
                }
            }
            wait = wait.min(SWEEP_EVERY.saturating_sub(swept.elapsed()));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.queue.retry_scheduled() => {}
                _ = shutdown.cancelled() => {}
            }
        }
    }

    async fn run_slot(&self, slot: usize, shutdown: CancellationToken) {
        let consumer = consumer_name(&self.settings.host, std::process::id(), slot);
        // While Redis is down every call fails at once: wait longer each time, and log
        // each failure once in a while.
        let mut backoff = Backoff::new(
            Duration::from_millis(500),
            Duration::from_secs(5),
            Duration::ZERO,
        );
        let warnings = Throttled::default();
        while !shutdown.is_cancelled() {
            let orphan = self
                .orphans
                .lock()
                .expect("orphan list lock is never poisoned")
                .pop();
            let next = match orphan {
                Some(orphan) => match self.queue.claim_orphan(&orphan, &consumer).await {
                    Ok(None) => continue,
                    other => other,
                },
                // No wait inside: an idle slot waits below, where a shutdown ends it.
                None => self.queue.next_delivery(&consumer, Duration::ZERO).await,
            };
            let pause = match next {
                Ok(Some(delivery)) => {
                    backoff.succeeded();
                    let span = tracing::info_span!(
                        "job",
                        job = %delivery.job_id,
                        tenant = %delivery.tenant,
                        request_id = tracing::field::Empty
                    );
                    tracing::Instrument::instrument(self.process(&consumer, delivery), span).await;
                    continue;
                }
                Ok(None) => {
                    backoff.succeeded();
                    if let Err(e) = self.queue.trim_skipped().await {
                        tapedeck_model::warn_throttled!(warnings, "could not trim a stream", e);
                    }
                    // Until a wake-up token (new work) or `idle_poll`; abandoning the
                    // read at shutdown closes its connection, nothing else.
                    let waited = tokio::select! {
                        waited = self.queue.scheduler().wait(self.settings.idle_poll) => waited,
                        _ = shutdown.cancelled() => Ok(false),
                    };
                    match waited {
                        Ok(_) => Duration::ZERO,
                        Err(e) => {
                            tapedeck_model::warn_throttled!(warnings, "could not wait for work", e);
                            backoff.failed()
                        }
                    }
                }
                Err(e) => {
                    tapedeck_model::warn_throttled!(warnings, "could not read the queue", e);
                    backoff.failed()
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.cancelled() => {}
            }
        }
    }

    async fn process(&self, consumer: &str, d: Delivery) {
        // The component is pinned for this attempt (and recorded on the job by the script
        // that starts it): a hot swap from here on affects the next job or attempt. A
        // canary running in the job's scope may take the job's first attempt.
        if let Some(gate) = &self.registry_gate {
            gate.ready_for(&d.tenant).await;
        }
        let (stable, canary) = self.converter.for_job(&d.tenant);
        let owner = match &canary {
            Some(c) if c.settings.sticky == tapedeck_model::canary::Sticky::User => {
                match self.queue.get(&d.tenant, &d.job_id).await {
                    Ok(Some(job)) => job.user_id,
                    _ => String::new(),
                }
            }
            _ => String::new(),
        };
        // A canary holds at most one of this process's slots at a time: a job it would
        // take while that slot is busy runs the stable component, so a slow or looping
        // canary never keeps anyone's job waiting (its share of jobs drops instead).
        let canary_slot = canary
            .as_ref()
            .filter(|c| c.settings.takes(&d.tenant, &owner, &d.job_id))
            .and_then(|_| self.canary_slot.clone().try_acquire_owned().ok());
        let offered = canary
            .as_ref()
            .filter(|_| canary_slot.is_some())
            .map(|c| c.settings.digest.as_str());
        let stable_digest = stable.digest.clone();
        let (attempt, on_canary, job) = match self
            .queue
            .start_attempt_reading(&d, &stable.digest, offered)
            .await
        {
            Ok((AttemptStart::Convert(n), on_canary, job)) => (n, on_canary, job),
            Ok((AttemptStart::Skip, ..)) => return,
            Err(e) => {
                tracing::warn!(job = %d.job_id, error = %e, "could not start an attempt");
                return;
            }
        };
        let cancel = RunCancel::new();
        self.in_flight
            .lock()
            .expect("in-flight lock is never poisoned")
            .insert(
                d.entry_id.clone(),
                Running {
                    delivery: d.clone(),
                    cancel: cancel.clone(),
                },
            );
        let _canary_slot = canary_slot.filter(|_| on_canary);
        let installed = match (&canary, on_canary) {
            (Some(c), true) => c.installed.clone(),
            _ => stable,
        };
        // A canary's run gets a deadline from what the stable component took on inputs
        // of similar length (none yet: the ordinary limits).
        let deadline = match (&canary, on_canary) {
            (Some(c), true) => match canary::run_times(self.queue.pool(), &stable_digest).await {
                Ok(times) => Some(c.settings.deadline(times)),
                Err(e) => {
                    tracing::warn!(error = %e, "stable run times not read: no canary deadline");
                    None
                }
            },
            _ => None,
        };
        let max = self.queue.policy().max_attempts;
        let outcome = if attempt > max {
            // Earlier attempts never reported back (their workers died): give up.
            Err(ConvertFailure::Permanent(format!(
                "gave up after {max} attempts (the conversion did not finish)"
            )))
        } else {
            tracing::info!(job = %d.job_id, tenant = %d.tenant, attempt, canary = on_canary, "converting");
            let arm = canary.as_ref().map(|c| Arm {
                settings: &c.settings,
                on_canary,
                deadline,
            });
            match job {
                Some(job) => {
                    self.attempt(consumer, &d, &job, &installed, arm, &cancel)
                        .await
                }
                // Deleted meanwhile (or not this tenant's): nothing to convert.
                None => Ok(()),
            }
        };
        if !self.is_in_flight(&d) {
            // Handed back by a shutdown: the queue has it again.
            return;
        }
        // Each outcome is recorded once Redis takes it (see `until_recorded`); the
        // delivery stays in flight meanwhile, so a shutdown can still hand it back.
        let recorded = match outcome {
            Ok(()) => Ok(()),
            Err(_) if cancel.is_cancelled() => {
                // The job was deleted while converting: nothing to record but the entry
                // (failing a missing job only acknowledges it); no attempt is counted
                // against the component.
                tracing::info!(job = %d.job_id, "conversion cancelled: the job was deleted");
                let reason = "cancelled: the job was deleted";
                self.until_recorded(&d, || self.queue.fail(&d, reason, attempt))
                    .await
            }
            Err(failure) if on_canary => {
                // A canary's failure is the canary's problem, not the user's: the job
                // goes straight back for the stable component.
                let reason = format!(
                    "the canary converter {} failed ({failure}); retrying on the stable one",
                    short(&installed.digest)
                );
                tracing::info!(job = %d.job_id, %reason, "canary attempt failed");
                self.until_recorded(&d, || self.queue.retry_on_stable(&d, &reason))
                    .await
            }
            Err(ConvertFailure::Permanent(reason) | ConvertFailure::Refused(reason)) => {
                tracing::info!(job = %d.job_id, %reason, "job failed");
                self.until_recorded(&d, || self.queue.fail(&d, &reason, attempt))
                    .await
            }
            Err(ConvertFailure::Retryable(reason) | ConvertFailure::TimedOut(reason))
                if attempt >= max =>
            {
                tracing::info!(job = %d.job_id, %reason, "job failed after retries");
                let reason = format!("{reason} (after {attempt} attempts)");
                self.until_recorded(&d, || self.queue.fail(&d, &reason, attempt))
                    .await
            }
            Err(ConvertFailure::Retryable(reason) | ConvertFailure::TimedOut(reason)) => {
                let delay = self.queue.policy().backoff(attempt);
                tracing::info!(job = %d.job_id, %reason, ?delay, "retrying later");
                self.until_recorded(&d, || self.queue.retry_later(&d, &reason, delay))
                    .await
            }
        };
        self.in_flight
            .lock()
            .expect("in-flight lock is never poisoned")
            .remove(&d.entry_id);
        if let Err(e) = recorded {
            // The entry stays pending; another worker claims it after the timeout.
            tracing::warn!(job = %d.job_id, error = %e, "could not record the outcome");
        }
    }

    /// Whether `d` is still this process's to finish (a shutdown's [`Worker::hand_back`]
    /// has not returned it to the queue).
    fn is_in_flight(&self, d: &Delivery) -> bool {
        self.in_flight
            .lock()
            .expect("in-flight lock is never poisoned")
            .contains_key(&d.entry_id)
    }

    /// Runs `record` (a script writing the outcome of `d`'s attempt) until Redis takes
    /// it: while Redis is unreachable (restarting, failing over) it is tried again with
    /// backoff, so an outcome is not lost to a short outage — a stored MP3 would
    /// otherwise wait out the visibility timeout and be converted again. Gives up on
    /// other errors, and once a shutdown has handed `d` back.
    async fn until_recorded<T, F, Fut>(&self, d: &Delivery, mut record: F) -> Result<T, QueueError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, QueueError>>,
    {
        let mut backoff = Backoff::redis();
        let warnings = Throttled::default();
        loop {
            match record().await {
                Err(e) if unavailable(&e) && self.is_in_flight(d) => {
                    tapedeck_model::warn_throttled!(
                        warnings,
                        "recording a finished attempt waits for Redis",
                        e
                    );
                    tokio::time::sleep(backoff.failed()).await;
                }
                other => return other,
            }
        }
    }

    /// Records one run in its canary's analysis (`arm`: the canary's settings, and
    /// whether this run was the canary's), and acts on the verdict.
    async fn record_arm(&self, arm: Option<&Arm<'_>>, result: canary::RunResult, ms: u64) {
        let Some(&Arm {
            settings,
            on_canary,
            ..
        }) = arm
        else {
            return;
        };
        let pool = self.queue.pool();
        let side = if on_canary { "canary" } else { "stable" };
        let outcome = canary::Outcome { result, ms };
        if let Err(e) = canary::record(pool, settings, side, outcome).await {
            tracing::warn!(error = %e, "canary outcome not recorded");
            return;
        }
        if on_canary {
            match canary::evaluate(pool, settings).await {
                Ok(Some(verdict)) => {
                    tracing::warn!(digest = %settings.digest, ?verdict, "canary ended by its analysis")
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "canary analysis failed"),
            }
        }
    }
    /// One attempt: fetch, convert (heart-beating and forwarding progress), store, mark done.
    async fn attempt(
        &self,
        consumer: &str,
        d: &Delivery,
        job: &JobRecord,
        installed: &Installed<dyn Converter>,
        arm: Option<Arm<'_>>,
        cancel: &RunCancel,
    ) -> Result<(), ConvertFailure> {
        let retry = |what: &str, e: &dyn std::fmt::Display| {
            ConvertFailure::Retryable(format!("{what}: {e}"))
        };
        let scratch = tempfile::Builder::new()
            .prefix("job-")
            .tempdir_in(&self.settings.scratch_dir)
            .map_err(|e| retry("creating a temp dir", &e))?;
        let input = self
            .blobs
            .fetch_to_file(&job.input.key, &scratch.path().join("input"))
            .await
            .map_err(|e| retry("fetching the upload", &e))?;
        let output = scratch.path().join("output.mp3");

        let (progress_tx, mut progress_rx) = mpsc::unbounded_channel::<f32>();
        let forwarder = {
            let queue = self.queue.clone();
            let (tenant, job_id) = (d.tenant.clone(), d.job_id.clone());
            tokio::spawn(async move {
                while let Some(p) = progress_rx.recv().await {
                    if let Err(e) = queue.report_progress(&tenant, &job_id, p).await {
                        tracing::debug!(job = %job_id, error = %e, "progress not recorded");
                    }
                }
            })
        };
        // Kept up until the outcome is recorded (dropped with this function), also while
        // recording waits for Redis: another worker must not claim a finished job.
        let _heartbeat = {
            let queue = self.queue.clone();
            let d = d.clone();
            let consumer = consumer.to_owned();
            let every = queue.policy().visibility_timeout / 3;
            let cancel = cancel.clone();
            AbortOnDrop(tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    match queue.heartbeat(&d, &consumer).await {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::warn!(job = %d.job_id, "another worker claimed this entry")
                        }
                        Err(e) => tracing::warn!(job = %d.job_id, error = %e, "heartbeat failed"),
                    }
                    // The cancel message may have been missed (a reconnect): a deleted
                    // job's run stops here at the latest.
                    if let Ok(false) = queue.exists(&d.tenant, &d.job_id).await {
                        cancel.cancel();
                    }
                }
            }))
        };
        if let Some(id) = &job.request_id {
            tracing::Span::current().record("request_id", id.as_str());
        }
        let (limits, quota) = self.run_limits(&job.tenant).await?;
        let created_at = job.created_at;
        tracing::debug!(job = %job.id, converter = %installed.digest, "converter chosen");
        let converter = installed.stage.clone();
        let (input_path, output_path) = (input.clone(), output.clone());
        let cpu_ms = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let cpu_used = cpu_ms.clone();
        let run_cancel = cancel.clone();
        let started = Instant::now();
        let job = job.clone();
        let deadline = arm.as_ref().and_then(|a| a.deadline.clone());
        let converted = tokio::task::spawn_blocking(move || {
            let throttle = Mutex::new((Instant::now(), 0.0f32));
            let progress = move |p: f32| {
                let p = p.clamp(0.0, 1.0);
                let mut last = throttle.lock().expect("progress lock is never poisoned");
                if p - last.1 >= 0.01 && last.0.elapsed() >= Duration::from_millis(200) {
                    *last = (Instant::now(), p);
                    let _ = progress_tx.send(p);
                }
            };
            let run = ConvertJob {
                job_id: &job.id,
                tenant: &job.tenant,
                input: &input_path,
                output: &output_path,
                options: &job.options,
                limits: &limits,
                cpu_ms: &cpu_used,
                cancel: &run_cancel,
                deadline: deadline.as_ref(),
            };
            converter.convert(&run, &progress)
        })
        .await
        .unwrap_or_else(|e| {
            Err(ConvertFailure::Retryable(format!(
                "converter panicked: {e}"
            )))
        });
        // The progress sender was dropped with the closure: wait for the last updates.
        let _ = forwarder.await;
        let spent = cpu_ms.load(std::sync::atomic::Ordering::Relaxed);
        if spent > 0 {
            metrics::histogram!("tapedeck_conversion_cpu_seconds", "tenant" => d.tenant.clone())
                .record(spent as f64 / 1000.0);
        }
        // The script that marks a job done counts its CPU time with the rest; any other
        // outcome counts it here.
        let record_cpu = async || {
            if spent > 0
                && let Err(e) = self.queue.record_cpu(&d.tenant, spent).await
            {
                tracing::warn!(job = %d.job_id, error = %e, "CPU time not recorded");
            }
        };
        if converted.is_err() {
            record_cpu().await;
        }
        let ms = started.elapsed().as_millis() as u64;
        let outcome = match &converted {
            // Stopped from outside (the job was deleted, a shutdown): not the plugin's doing.
            Err(_) if cancel.is_cancelled() => "cancelled",
            Ok(_) => "ok",
            Err(ConvertFailure::Refused(_)) => "refused",
            Err(ConvertFailure::Permanent(_)) => "limit",
            Err(ConvertFailure::Retryable(_)) => "trap",
            Err(ConvertFailure::TimedOut(_)) => "deadline",
        };
        metrics::counter!(
            "tapedeck_plugin_runs_total",
            "stage" => "converter",
            "tenant" => d.tenant.clone(),
            "digest" => installed.digest.clone(),
            "outcome" => outcome
        )
        .increment(1);
        metrics::histogram!("tapedeck_conversion_seconds", "outcome" => outcome)
            .record(ms as f64 / 1000.0);
        let result = match &converted {
            Ok(summary) if summary.output_valid() => Some(canary::RunResult::Ok),
            Ok(_) => Some(canary::RunResult::Invalid),
            // The input's fault, whichever component ran: not counted.
            Err(ConvertFailure::Refused(_)) => None,
            Err(_) => Some(canary::RunResult::Fail),
        };
        if let Some(result) = result
            && !cancel.is_cancelled()
        {
            self.record_arm(arm.as_ref(), result, ms).await;
        }
        match (&converted, &arm) {
            // What later canaries' deadlines are derived from: this component's time on
            // this much audio.
            (Ok(summary), _) if summary.output_valid() => {
                if let Some(input_ms) = summary.input_ms {
                    let run = canary::RunTime {
                        input_ms,
                        run_ms: ms,
                    };
                    if let Err(e) =
                        canary::record_run_time(self.queue.pool(), &installed.digest, run).await
                    {
                        tracing::debug!(error = %e, "run time not recorded");
                    }
                }
            }
            // A canary past its deadline is stuck or far slower than stable: it is
            // rolled back now, not after `min_jobs` more runs each costing a deadline.
            (
                Err(ConvertFailure::TimedOut(why)),
                Some(Arm {
                    settings,
                    on_canary: true,
                    ..
                }),
            ) => {
                let why = format!("a canary run passed its deadline: {why}");
                match canary::end(self.queue.pool(), settings, "canary-rollback", &why).await {
                    Ok(true) => {
                        tracing::warn!(digest = %settings.digest, %why, "canary rolled back")
                    }
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, "canary rollback failed"),
                }
            }
            _ => {}
        }
        let summary = converted?;
        if arm.as_ref().is_some_and(|a| a.on_canary) && !summary.output_valid() {
            record_cpu().await;
            return Err(ConvertFailure::Retryable(format!(
                "its MP3 is {} ms long by the host's count, the input {} ms",
                summary
                    .decoded_ms
                    .map_or("not decodable".into(), |d| d.to_string()),
                summary.input_ms.map_or("unknown".into(), |d| d.to_string())
            )));
        }

        let key = format!("out/{}/{}.mp3", d.tenant, d.job_id);
        let bytes = match self.blobs.put_file(&key, &output).await {
            Ok(bytes) => bytes,
            Err(e) => {
                record_cpu().await;
                return Err(retry("storing the MP3", &e));
            }
        };
        let out = JobOutput {
            key: key.clone(),
            bytes,
            duration_ms: summary.duration_ms,
            bitrate_kbps: Some(summary.bitrate_kbps).filter(|&k| k > 0),
        };
        let completed = self
            .until_recorded(d, || self.queue.complete_counting(d, &out, quota, spent))
            .await;
        if !matches!(completed, Ok(Completion::Done)) {
            record_cpu().await;
        }
        match completed {
            Ok(Completion::OverQuota) => {
                self.blobs.delete(&key).await.ok();
                Err(ConvertFailure::Permanent(format!(
                    "limit_exceeded: quota_bytes: the MP3 of {bytes} bytes would take the \
                     tenant's stored bytes past its quota of {} bytes and was not kept; \
                     delete jobs to make room, or the operator can raise quota_bytes",
                    quota.unwrap_or(0)
                )))
            }
            Ok(Completion::Done) => {
                tracing::info!(job = %d.job_id, bytes, "job done");
                let age_ms = tapedeck_store::queue::now_ms().saturating_sub(created_at * 1000);
                metrics::histogram!("tapedeck_job_latency_seconds", "status" => "done")
                    .record(age_ms as f64 / 1000.0);
                Ok(())
            }
            Ok(Completion::Deleted) => {
                // Deleted while converting: drop what we stored.
                self.blobs.delete(&key).await.ok();
                Ok(())
            }
            Err(e) => Err(retry("marking the job done", &e)),
        }
    }
}

/// A task stopped when its handle goes.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Follows the cancel channel on a thread of its own (one subscription per process, on a
/// blocking connection: a message is handled the moment it arrives), cancelling the run
/// of each job named there that this process converts, until `stop`.
fn watch_cancels(pool: tapedeck_store::Pool, in_flight: InFlight, stop: CancellationToken) {
    let spawned = std::thread::Builder::new()
        .name("cancel-watch".into())
        .spawn(move || {
            let mut backoff = Backoff::redis();
            let warnings = Throttled::default();
            while !stop.is_cancelled() {
                let began = Instant::now();
                // A client per subscription: on a cluster, the next node each time.
                let client = pool.pubsub_client();
                let wait = match follow_cancels(&client, &in_flight, &stop) {
                    Ok(()) => continue,
                    Err(e) => {
                        tapedeck_model::warn_throttled!(
                            warnings,
                            "cancel subscription lost; subscribing again",
                            e
                        );
                        backoff.ended_after(began.elapsed())
                    }
                };
                // In steps, so a shutdown is noticed.
                let until = Instant::now() + wait;
                while !stop.is_cancelled() && Instant::now() < until {
                    std::thread::sleep(wait.min(Duration::from_millis(200)));
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "no cancel subscription: deleted jobs stop at a heartbeat");
    }
}

fn follow_cancels(
    client: &redis::Client,
    in_flight: &InFlight,
    stop: &CancellationToken,
) -> redis::RedisResult<()> {
    let mut conn = client.get_connection_with_timeout(Duration::from_secs(2))?;
    let mut pubsub = conn.as_pubsub();
    pubsub.subscribe(JOB_CANCEL_CHANNEL)?;
    // Wakes up now and then to notice `stop`.
    pubsub.set_read_timeout(Some(Duration::from_secs(1)))?;
    while !stop.is_cancelled() {
        let message = match pubsub.get_message() {
            Ok(m) => m,
            Err(e) if e.is_timeout() => continue,
            Err(e) => return Err(e),
        };
        let Some(request) = CancelRequest::parse(message.get_payload_bytes()) else {
            continue;
        };
        let running = in_flight.lock().expect("in-flight lock is never poisoned");
        for r in running.values() {
            if r.delivery.tenant == request.tenant && r.delivery.job_id == request.job {
                tracing::info!(job = %request.job, "stopping the conversion of a deleted job");
                r.cancel.cancel();
            }
        }
    }
    Ok(())
}

/// Whether `e` says Redis cannot be reached now (down, restarting, loading its data,
/// failing over) rather than that the command itself was wrong.
fn unavailable(e: &QueueError) -> bool {
    match e {
        QueueError::Redis(e) => {
            e.is_io_error()
                || e.is_connection_refusal()
                || e.is_connection_dropped()
                || e.is_timeout()
                || matches!(
                    e.code(),
                    Some("LOADING" | "BUSY" | "TRYAGAIN" | "CLUSTERDOWN" | "MASTERDOWN")
                )
        }
        // The pool could not hand out a connection.
        _ => true,
    }
}

/// The first 12 characters of a digest, for messages.
fn short(digest: &str) -> &str {
    digest.get(..12).unwrap_or(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_scratch_goes_and_live_scratch_stays() {
        let root = tempfile::tempdir().unwrap();
        // pid 1 is always alive; u32::MAX - 1 never is; ours is about to start over.
        let live = root.path().join("1");
        let dead = root.path().join((u32::MAX - 1).to_string());
        let own = root.path().join(std::process::id().to_string());
        let legacy = root.path().join("job-abc");
        for dir in [&live, &dead, &own, &legacy] {
            std::fs::create_dir_all(dir.join("job-x")).unwrap();
            std::fs::write(dir.join("job-x/input"), b"x").unwrap();
        }
        clean_stale_scratch(root.path());
        assert!(live.exists());
        assert!(!dead.exists());
        assert!(!own.exists());
        assert!(!legacy.exists());
    }
}
