//! The job pipeline in Redis: job records, per-tenant convert streams with one consumer
//! group, weighted fair dispatch under per-tenant running caps (`crate::sched`),
//! visibility timeouts, retries with backoff, dead letters, notify entries, progress
//! events and safe trimming.
//!
//! Every key is listed in `redis/README.md`. State transitions are Lua scripts
//! (`host/store/lua/`, run through `crate::lua`) so the job hash and the stream never
//! disagree.
//!
//! Contact points: the gateway creates, reads, lists and deletes jobs and subscribes to
//! `events_channel`, and requeues failed jobs (`requeue_failed`); the worker calls `next_delivery`, `start_attempt`, `heartbeat`,
//! `report_progress`, `complete`, `fail` and `retry_later`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::Pool;
use redis::AsyncCommands;

use crate::lua;
use crate::sched::Scheduler;

pub use tapedeck_model::job::{
    JobChange, JobInput, JobOptions, JobOutput, JobRecord, JobStatus, now_ms,
};

/// The one consumer group on every convert stream.
pub const GROUP: &str = "workers";
/// Cap for streams that no consumer group reads yet (dead letters, notify).
const UNREAD_STREAM_CAP: u64 = 100_000;

pub use crate::keys::{
    JOB_CANCEL_CHANNEL, NOTIFY_READY, NOTIFY_WAKE, TENANTS, convert_dead_key, convert_stream,
    events_channel, job_key, job_rate_key, notify_stream, running_key, tenant_jobs_key, tenant_key,
    usage_key, user_jobs_key,
};
use tapedeck_model::tenant::TenantLimits;

/// How long hourly usage is kept (the janitor prunes older hours, `usage::prune`).
pub const HOUR_TTL_SECS: u64 = 8 * 24 * 3600;
/// How long daily usage is kept (likewise).
pub const DAY_TTL_SECS: u64 = 400 * 24 * 3600;

/// The hour and day (unix seconds of their start) `now_s` falls in.
pub fn periods(now_s: u64) -> (u64, u64) {
    (now_s / 3600 * 3600, now_s / 86_400 * 86_400)
}

/// A limit that refused something: its name, its effective value, what was in use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub limit: String,
    pub value: u64,
    pub current: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis pool: {0}")]
    Pool(#[from] crate::PoolError),
}

type Result<T> = std::result::Result<T, QueueError>;

/// Retry and visibility settings of the pipeline.
#[derive(Debug, Clone)]
pub struct PipelinePolicy {
    /// Attempts before a job goes to the dead-letter stream.
    pub max_attempts: u32,
    /// An entry idle this long (its worker stopped heart-beating) is claimed by another.
    pub visibility_timeout: Duration,
    /// First retry delay; doubles per attempt, with up to 50% jitter added.
    pub retry_base: Duration,
    /// Conversions one tenant may run at once across all workers unless its own limit is
    /// lower (0: no server-wide cap).
    pub max_running_per_tenant: u64,
    /// CPU seconds of conversions one tenant may use per hour unless its own limit is
    /// lower (0: no server-wide cap).
    pub cpu_seconds_per_hour_per_tenant: u64,
}

impl PipelinePolicy {
    /// Delay before attempt `attempts + 1`: base * 2^(attempts-1), plus jitter.
    pub fn backoff(&self, attempts: u32) -> Duration {
        crate::streams::backoff(self.retry_base, attempts, Duration::from_secs(24 * 3600))
    }
}

/// The `workers` group of a convert stream.
fn group(stream: &str) -> crate::streams::Group<'_> {
    crate::streams::Group {
        stream,
        name: GROUP,
    }
}

/// This machine's name; consumer names in the streams start with it, so a restarted
/// process can tell its dead predecessors' entries.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into())
}

/// A worker consumer's name: `{host}-{pid}-{slot}`.
pub fn consumer_name(host: &str, pid: u32, slot: usize) -> String {
    format!("{host}-{pid}-{slot}")
}

/// The host and pid of a worker consumer's name, if it has that form.
pub fn parse_consumer_name(name: &str) -> Option<(&str, u32)> {
    let mut parts = name.rsplitn(3, '-');
    let _slot: usize = parts.next()?.parse().ok()?;
    let pid: u32 = parts.next()?.parse().ok()?;
    Some((parts.next()?, pid))
}

/// A convert-stream entry left pending by a worker process that no longer runs.
#[derive(Debug, Clone)]
pub struct Orphan {
    pub tenant: String,
    pub entry_id: String,
    /// How long it had been idle when found; claiming requires at least this, so two
    /// restarted processes cannot both take it.
    pub idle_ms: u64,
}

/// A position in a job listing: the last job of a page (its enqueue time in ms, its id).
/// Written as `{created_ms}-{id}`, opaque to clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListCursor {
    pub created_ms: u64,
    pub id: String,
}

impl std::fmt::Display for ListCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.created_ms, self.id)
    }
}

impl std::str::FromStr for ListCursor {
    type Err = ();

    fn from_str(s: &str) -> std::result::Result<Self, ()> {
        let (ms, id) = s.split_once('-').ok_or(())?;
        let valid_id =
            (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric());
        if !valid_id {
            return Err(());
        }
        Ok(ListCursor {
            created_ms: ms.parse().map_err(|_| ())?,
            id: id.to_owned(),
        })
    }
}

/// One convert-stream entry held by this worker.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub tenant: String,
    pub stream: String,
    pub entry_id: String,
    pub job_id: String,
    /// The worker slot that took it (its consumer name in the group).
    pub consumer: String,
    /// A running-jobs cap applied when it was taken: its end makes the tenant ready again
    /// (another worker may have parked it at the cap meanwhile). Without one, a tenant
    /// is parked only when it has nothing to take, and an enqueue brings it back.
    pub capped: bool,
}

/// A conversion that failed for good, as its tenant's dead-letter stream has it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeadLetter {
    /// The stream entry's id.
    pub id: String,
    pub tenant: String,
    pub job_id: String,
    pub reason: String,
    pub attempts: u32,
    /// Unix seconds.
    pub at: u64,
}

/// What `start_attempt` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptStart {
    /// Convert now; this is attempt number `n` (1-based).
    Convert(u32),
    /// Nothing to do: the job was deleted or already finished (the entry is acknowledged).
    Skip,
}

/// What deleting a converting job asks its worker, on [`JOB_CANCEL_CHANNEL`]: stop the
/// run of this job.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CancelRequest {
    pub tenant: String,
    pub job: String,
}

impl CancelRequest {
    /// A message of [`JOB_CANCEL_CHANNEL`]; `None` if it is not one.
    pub fn parse(payload: &[u8]) -> Option<Self> {
        serde_json::from_slice(payload).ok()
    }
}

/// What `complete_within` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// The job is done (now, or by an earlier delivery).
    Done,
    /// The job was deleted meanwhile: the caller drops the MP3.
    Deleted,
    /// The tenant's stored bytes plus the MP3 would pass its quota: nothing changed; the
    /// caller drops the MP3 and fails the job.
    OverQuota,
}

/// What `requeue_failed` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requeue {
    /// The job is `queued` again.
    Queued,
    /// Nothing: the job is not `failed` but in this status.
    NotFailed(String),
    /// Nothing: the job was deleted meanwhile.
    Missing,
}

/// Handle to the pipeline's Redis state; cheap to clone.
#[derive(Clone)]
pub struct JobQueue {
    pool: Pool,
    policy: PipelinePolicy,
    sched: Scheduler,
    /// What this process already did once per tenant, so that it is not repeated for
    /// every job.
    seen: Arc<Seen>,
}

/// See [`JobQueue::seen`].
#[derive(Default)]
struct Seen {
    /// Tenants this process has put in `td:tenants` (`SADD` is idempotent, and a
    /// tenant's deletion removes it from the set before the tenant can exist again).
    listed: Mutex<HashSet<String>>,
    /// Woken when this process schedules a retry, so its promoter can wait for the
    /// earliest one due rather than poll ([`JobQueue::retry_scheduled`]).
    retries: tokio::sync::Notify,
    /// When this process last looked for idle entries (`XAUTOCLAIM`) of a tenant: at
    /// most every [`CLAIM_EVERY`] (an abandoned entry waits the visibility timeout
    /// anyway; the lease sweep makes its tenant ready again).
    claimed: Mutex<HashMap<String, Instant>>,
    /// When this process last trimmed each convert stream (at most every [`TRIM_EVERY`]),
    /// and whether an ack skipped a trim since ([`JobQueue::trim_skipped`] does it).
    trimmed: Mutex<HashMap<String, (Instant, bool)>>,
    /// The tenant each worker slot (consumer) was handed by the script that ended its
    /// last conversion (`FINISH` picks the slot's next tenant in the same call): its next
    /// [`JobQueue::next_delivery`] starts there instead of picking.
    prepicked: Mutex<HashMap<String, crate::sched::Picked>>,
    /// Retries found still `converting` when due (`"{tenant} {job}"`), and when first:
    /// [`JobQueue::promote_due_retries`] looks again, later each time, until a deadline.
    rechecks: Mutex<HashMap<String, Instant>>,
}

/// How often a worker process trims a convert stream when it acknowledges an entry
/// (a trim is two to three commands; on every ack it was a tenth of a job's commands).
/// Acknowledged entries wait this long at most; an idle stream is trimmed by the next
/// ack.
const TRIM_EVERY: Duration = Duration::from_secs(1);

/// How often a worker process looks for entries idle past the visibility timeout on a
/// tenant that keeps having new ones.
const CLAIM_EVERY: Duration = Duration::from_secs(1);
/// A retry found still `converting` when it was due is looked at again after this long
/// (then after as long as it has waited so far, until the visibility timeout).
const RETRY_RECHECK: Duration = Duration::from_millis(500);
/// A tenant parked at its running-jobs cap is looked at again after this long at the
/// latest (see `Delivery::capped`).
const CAPPED_RECHECK: Duration = Duration::from_secs(5);

/// The tighter of a tenant's own limit and the server's (`0`: none), `0` for none.
fn tighter(own: Option<u64>, server: u64) -> u64 {
    match (own.filter(|&v| v > 0), server) {
        (Some(v), 0) => v,
        (Some(v), s) => v.min(s),
        (None, s) => s,
    }
}

/// What one `TAKE` on a tenant's stream found.
enum Take {
    Entry(Delivery),
    /// Nothing to take now (or the tenant is at its running-jobs cap).
    Nothing,
}

impl JobQueue {
    pub fn new(pool: Pool, policy: PipelinePolicy) -> Self {
        let sched = Scheduler::new(pool.clone());
        Self {
            pool,
            policy,
            sched,
            seen: Arc::default(),
        }
    }

    /// The dispatcher this queue feeds.
    pub fn scheduler(&self) -> &Scheduler {
        &self.sched
    }

    /// The Redis pool this queue uses.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    pub fn policy(&self) -> &PipelinePolicy {
        &self.policy
    }

    async fn conn(&self) -> Result<crate::Connection> {
        Ok(self.pool.get().await?)
    }

    /// Creates the group of `tenant`'s convert stream (and the stream) if missing.
    pub async fn ensure_stream(&self, tenant: &str) -> Result<()> {
        let mut conn = self.conn().await?;
        let stream = convert_stream(tenant);
        group(&stream).ensure(&mut conn, "0").await?;
        let _: () = conn.sadd(TENANTS, tenant).await?;
        Ok(())
    }

    /// Puts `tenant` in `td:tenants` (once per process).
    async fn list_tenant(&self, tenant: &str) -> Result<()> {
        let listed = |t: &str| {
            self.seen
                .listed
                .lock()
                .expect("lock is never poisoned")
                .contains(t)
        };
        if !listed(tenant) {
            let _: () = self.conn().await?.sadd(TENANTS, tenant).await?;
            self.seen
                .listed
                .lock()
                .expect("lock is never poisoned")
                .insert(tenant.to_owned());
        }
        Ok(())
    }

    /// Puts every tenant that may have work in the ready set (a worker's start: heals
    /// any tenant left out by a crash between two steps).
    pub async fn seed_ready(&self) -> Result<()> {
        let tenants: Vec<String> = self.conn().await?.smembers(TENANTS).await?;
        for t in tenants {
            self.ensure_stream(&t).await?;
            self.sched.add(&t, false).await?;
        }
        Ok(())
    }

    /// Stores a new job and queues it on its tenant's stream, atomically, with no tenant
    /// limits (tests and tools).
    pub async fn enqueue(&self, job: &JobRecord) -> Result<()> {
        self.enqueue_within(job, &TenantLimits::default())
            .await
            .map(|_| ())
    }

    /// Stores a new job and queues it on its tenant's stream, atomically, if `limits`
    /// (the tenant's effective ones) allow: jobs per minute, jobs not finished, stored
    /// bytes. `Ok(Some(refusal))` when one does not.
    pub async fn enqueue_within(
        &self,
        job: &JobRecord,
        limits: &TenantLimits,
    ) -> Result<Option<Refusal>> {
        // The stream's group is created by the first `TAKE` that misses it.
        self.list_tenant(&job.tenant).await?;
        let mut conn = self.conn().await?;
        // Listing order ("newest first") needs more than `created_at`'s whole seconds:
        // jobs uploaded within one second would tie and come back in id order.
        let now = now_ms();
        let created_ms = now.max(job.created_at * 1000);
        let (hour, day) = periods(now / 1000);
        let t = &job.tenant;
        let mut call = lua::ENQUEUE.call();
        call.key("job", job_key(t, &job.id))
            .key("user_jobs", user_jobs_key(t, &job.user_id))
            .key("tenant_jobs", tenant_jobs_key(t))
            .key("convert", convert_stream(t))
            .key("usage", usage_key(t))
            .key("rate", job_rate_key(t, now / 60_000 * 60))
            .arg("created_ms", created_ms)
            .arg("job_id", &job.id)
            .arg("input_bytes", job.input.bytes)
            .arg("jobs_per_minute", limits.jobs_per_minute.unwrap_or(0))
            .arg("max_queued", limits.max_queued.unwrap_or(0))
            .arg("quota_bytes", limits.quota_bytes.unwrap_or(0))
            .arg("hour_prefix", crate::usage::hour_prefix(hour))
            .arg("day_prefix", crate::usage::day_prefix(day));
        for (field, value) in job.to_fields() {
            call.arg("fields", field).arg("fields", value);
        }
        let reply: Vec<String> = call.invoke(&mut conn).await?;
        drop(conn);
        if reply.first().map(String::as_str) != Some("ok") {
            let num = |i: usize| reply.get(i).and_then(|v| v.parse().ok()).unwrap_or(0);
            return Ok(Some(Refusal {
                limit: reply.first().cloned().unwrap_or_default(),
                value: num(1),
                current: num(2),
            }));
        }
        // The job exists now: the caller must get its id whatever happens next (an
        // error would make its retry a second job). Putting the tenant in the ready set
        // is retried for a few seconds; a tenant still left out is put back by the
        // janitor's next retention scan (`seed_ready`), as after a crash in between.
        let mut backoff = tapedeck_model::backoff::Backoff::redis();
        for attempt in 1.. {
            match self.sched.add(&job.tenant, true).await {
                Ok(_) => break,
                Err(e) if attempt < 6 => {
                    tracing::debug!(tenant = %job.tenant, error = %e, "ready set: trying again");
                    tokio::time::sleep(backoff.failed()).await;
                }
                Err(e) => {
                    tracing::warn!(tenant = %job.tenant, job = %job.id, error = %e,
                        "the job is queued but its tenant is not in the ready set yet: \
                         the janitor's next scan puts it back");
                    break;
                }
            }
        }
        Ok(None)
    }

    /// What `enqueue_within` would refuse now for a job of `bytes` (0: before the size is
    /// known), without changing anything: lets the gateway refuse before reading a body.
    pub async fn admission(
        &self,
        tenant: &str,
        limits: &TenantLimits,
        bytes: u64,
    ) -> Result<Option<Refusal>> {
        let limited = limits.jobs_per_minute.is_some()
            || limits.max_queued.is_some()
            || limits.quota_bytes.is_some();
        if !limited {
            return Ok(None);
        }
        let mut conn = self.conn().await?;
        let now = now_ms();
        type Counts = (Option<u64>, Option<u64>, Option<u64>);
        let (rate, usage): (Option<u64>, Counts) = redis::pipe()
            .get(job_rate_key(tenant, now / 60_000 * 60))
            .cmd("HMGET")
            .arg(usage_key(tenant))
            .arg("queued")
            .arg("converting")
            .arg("stored_bytes")
            .query_async(&mut conn)
            .await?;
        let refuse = |limit: &str, value: u64, current: u64| {
            Some(Refusal {
                limit: limit.to_owned(),
                value,
                current,
            })
        };
        let rate = rate.unwrap_or(0);
        if let Some(max) = limits.jobs_per_minute
            && rate >= max
        {
            return Ok(refuse("jobs_per_minute", max, rate));
        }
        let unfinished = usage.0.unwrap_or(0) + usage.1.unwrap_or(0);
        if let Some(max) = limits.max_queued
            && unfinished >= max
        {
            return Ok(refuse("max_queued", max, unfinished));
        }
        let stored = usage.2.unwrap_or(0);
        if let Some(max) = limits.quota_bytes
            && stored.saturating_add(bytes) > max
        {
            return Ok(refuse("quota_bytes", max, stored));
        }
        Ok(None)
    }

    /// A job of `tenant` by id; `None` if it does not exist (or is another tenant's).
    pub async fn get(&self, tenant: &str, id: &str) -> Result<Option<JobRecord>> {
        let mut conn = self.conn().await?;
        let h: HashMap<String, String> = conn.hgetall(job_key(tenant, id)).await?;
        Ok(JobRecord::from_hash(&h).filter(|j| j.tenant == tenant))
    }

    /// Jobs newest first: a user's own (`user_id`), or the whole tenant's, from just after
    /// `after` (the `next` of the previous page). Returns the page and the cursor of the
    /// next page, if any. The cursor is a position (time and id), not an offset, so jobs
    /// added or deleted between pages neither repeat nor skip an item.
    pub async fn list(
        &self,
        tenant: &str,
        user_id: Option<&str>,
        after: Option<&ListCursor>,
        limit: usize,
    ) -> Result<(Vec<JobRecord>, Option<ListCursor>)> {
        let mut conn = self.conn().await?;
        let key = match user_id {
            Some(u) => user_jobs_key(tenant, u),
            None => tenant_jobs_key(tenant),
        };
        // Ties (jobs of one millisecond) come in descending id order; the ones at the
        // cursor's time up to its id were on earlier pages.
        let (max, ties) = match after {
            None => ("+inf".to_owned(), 0),
            Some(c) => {
                let ties: usize = conn.zcount(&key, c.created_ms, c.created_ms).await?;
                (c.created_ms.to_string(), ties)
            }
        };
        // One extra id tells whether another page follows.
        let scored: Vec<(String, u64)> = redis::cmd("ZRANGE")
            .arg(&key)
            .arg(&max)
            .arg("-inf")
            .arg("BYSCORE")
            .arg("REV")
            .arg("LIMIT")
            .arg(0)
            .arg(limit + 1 + ties)
            .arg("WITHSCORES")
            .query_async(&mut conn)
            .await?;
        let mut page: Vec<(String, u64)> = scored
            .into_iter()
            .filter(|(id, ms)| match after {
                Some(c) => *ms < c.created_ms || (*ms == c.created_ms && *id < c.id),
                None => true,
            })
            .take(limit + 1)
            .collect();
        let more = page.len() > limit;
        page.truncate(limit);
        if page.is_empty() {
            return Ok((Vec::new(), None));
        }
        let mut pipe = redis::pipe();
        for (id, _) in &page {
            pipe.hgetall(job_key(tenant, id));
        }
        let hashes: Vec<HashMap<String, String>> = pipe.query_async(&mut conn).await?;
        let jobs = hashes.iter().filter_map(JobRecord::from_hash).collect();
        let next = more.then(|| {
            let (id, created_ms) = page.last().cloned().expect("the page is not empty");
            ListCursor { created_ms, id }
        });
        Ok((jobs, next))
    }

    /// Removes a job's record and index entries and its share of the tenant's totals.
    /// A queued entry left on the stream is acknowledged and skipped by the worker that
    /// reads it.
    pub async fn delete(&self, job: &JobRecord) -> Result<()> {
        let mut conn = self.conn().await?;
        let _: String = lua::DELETE
            .call()
            .key("job", job_key(&job.tenant, &job.id))
            .key("user_jobs", user_jobs_key(&job.tenant, &job.user_id))
            .key("tenant_jobs", tenant_jobs_key(&job.tenant))
            .key("usage", usage_key(&job.tenant))
            .arg("job_id", &job.id)
            // Wakes the job's SSE followers, which then find it gone.
            .arg("channel", events_channel(&job.id))
            .arg(
                "event",
                serde_json::to_string(&JobChange::deleted()).expect("a change serializes"),
            )
            // Stops its run if a worker is converting it.
            .arg("cancel_channel", JOB_CANCEL_CHANNEL)
            .arg(
                "cancel_message",
                serde_json::to_string(&CancelRequest {
                    tenant: job.tenant.clone(),
                    job: job.id.clone(),
                })
                .expect("a cancel request serializes"),
            )
            .invoke(&mut conn)
            .await?;
        drop(conn);
        self.sched.drop_retry(&job.tenant, &job.id).await?;
        Ok(())
    }

    /// Marks a finished job `expired` once the retention sweeper removed its blobs.
    pub async fn expire(&self, job: &JobRecord) -> Result<bool> {
        let mut conn = self.conn().await?;
        let n: i64 = lua::EXPIRE_JOB
            .call()
            .key("job", job_key(&job.tenant, &job.id))
            .key("usage", usage_key(&job.tenant))
            .arg("now_s", now_ms() / 1000)
            .arg("channel", events_channel(&job.id))
            .invoke(&mut conn)
            .await?;
        Ok(n == 1)
    }

    /// Jobs of `tenant` created before `before_ms`, oldest first (at most `limit`).
    pub async fn created_before(
        &self,
        tenant: &str,
        before_ms: u64,
        limit: usize,
    ) -> Result<Vec<JobRecord>> {
        let mut conn = self.conn().await?;
        let ids: Vec<String> = conn
            .zrangebyscore_limit(
                tenant_jobs_key(tenant),
                "-inf",
                before_ms,
                0,
                limit as isize,
            )
            .await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.hgetall(job_key(tenant, id));
        }
        let hashes: Vec<HashMap<String, String>> = pipe.query_async(&mut conn).await?;
        Ok(hashes.iter().filter_map(JobRecord::from_hash).collect())
    }

    /// Adds CPU time a conversion of `tenant` used to its hourly and daily usage.
    pub async fn record_cpu(&self, tenant: &str, cpu_ms: u64) -> Result<()> {
        let mut conn = self.conn().await?;
        let (hour, day) = periods(now_ms() / 1000);
        let _: i64 = lua::RECORD_CPU
            .call()
            .key("usage", usage_key(tenant))
            .arg("cpu_ms", cpu_ms)
            .arg("hour_prefix", crate::usage::hour_prefix(hour))
            .arg("day_prefix", crate::usage::day_prefix(day))
            .invoke(&mut conn)
            .await?;
        Ok(())
    }

    /// Next entry for `consumer`: the tenant the scheduler picks (weighted fair, see
    /// `crate::sched`), first an entry of it abandoned past the visibility timeout, else
    /// a new one, under the tenant's running-jobs cap. A tenant with nothing to take (or
    /// at its cap) is parked and looked at once more, so work added meanwhile is not
    /// stranded.
    ///
    /// When no tenant is ready, waits up to `block` for a wake-up token (left by every
    /// enqueue), so a job uploaded to an idle service starts at once rather than at the
    /// next poll. `block` must stay below the Redis client's response timeout (500 ms).
    ///
    /// A slot whose last conversion ended here was handed its next tenant by the same
    /// script (see `Seen::prepicked`): it starts there, without a pick of its own.
    pub async fn next_delivery(&self, consumer: &str, block: Duration) -> Result<Option<Delivery>> {
        let mut prepicked = self
            .seen
            .prepicked
            .lock()
            .expect("lock is never poisoned")
            .remove(consumer);
        for _ in 0..16 {
            let picked = match prepicked.take() {
                Some(p) => Some(p),
                None => self.sched.pick_charged().await?,
            };
            let Some(picked) = picked else {
                if !block.is_zero() {
                    self.sched.wait(block).await?;
                }
                return Ok(None);
            };
            let tenant = &picked.tenant;
            if let Take::Entry(d) = self.take(tenant, consumer, false).await? {
                return Ok(Some(d));
            }
            self.sched.park_picked(&picked).await?;
            if let Take::Entry(d) = self.take(tenant, consumer, true).await? {
                self.sched.add(tenant, false).await?;
                return Ok(Some(d));
            }
        }
        Ok(None)
    }

    /// One `TAKE` on `tenant`'s stream (see `lua/take.lua`), recording the lease;
    /// `again`: the look right after parking (new entries only).
    async fn take(&self, tenant: &str, consumer: &str, again: bool) -> Result<Take> {
        let order = if again {
            "new"
        } else {
            let mut claimed = self.seen.claimed.lock().expect("lock is never poisoned");
            match claimed.get(tenant) {
                Some(at) if at.elapsed() < CLAIM_EVERY => "new",
                _ => {
                    claimed.insert(tenant.to_owned(), Instant::now());
                    "claim"
                }
            }
        };
        // The tenant's own caps from the record this process read less than a second ago
        // (`tenants::load_cached`): a changed cap applies within that second.
        let own = crate::tenants::load_cached(&self.pool, tenant)
            .await?
            .map(|t| t.limits)
            .unwrap_or_default();
        let max_running = tighter(own.max_running, self.policy.max_running_per_tenant);
        let cpu_per_hour = tighter(
            own.cpu_seconds_per_hour,
            self.policy.cpu_seconds_per_hour_per_tenant,
        );
        let mut conn = self.conn().await?;
        let now = now_ms();
        let lease_ms = self.policy.visibility_timeout.as_millis() as u64;
        let stream = convert_stream(tenant);
        let (hour, _) = periods(now / 1000);
        let reply: redis::RedisResult<Vec<String>> = lua::TAKE
            .call()
            .key("convert", &stream)
            .key("running", running_key(tenant))
            .key("usage", usage_key(tenant))
            .arg("group", GROUP)
            .arg("consumer", consumer)
            .arg("now_ms", now)
            .arg("lease_ms", lease_ms)
            .arg("visibility_ms", lease_ms)
            .arg("max_running", max_running)
            .arg("cpu_seconds_per_hour", cpu_per_hour)
            .arg("order", order)
            .arg("cpu_field", crate::usage::hour_field(hour, "cpu_ms"))
            .invoke(&mut conn)
            .await;
        let reply = match reply {
            Ok(r) => r,
            // A tenant whose stream or group is gone (deleted meanwhile): nothing to take.
            Err(e) if e.to_string().contains("NOGROUP") => return Ok(Take::Nothing),
            Err(e) => return Err(e.into()),
        };
        match reply.first().map(String::as_str) {
            Some("entry") if reply.len() >= 4 => {
                let d = Delivery {
                    tenant: tenant.to_owned(),
                    stream,
                    consumer: consumer.to_owned(),
                    entry_id: reply[1].clone(),
                    job_id: reply[2].clone(),
                    capped: max_running > 0,
                };
                if reply[3] == "1" {
                    tracing::info!(tenant, entry = %d.entry_id, "claimed an abandoned entry");
                }
                drop(conn);
                self.sched
                    .lease(tenant, &d.entry_id, now + lease_ms)
                    .await?;
                Ok(Take::Entry(d))
            }
            Some("capped") if reply.get(1).map(String::as_str) == Some("cpu_seconds_per_hour") => {
                // Out of CPU for this hour: look again when the next one starts.
                let next_hour = (now / 3_600_000 + 1) * 3_600_000;
                drop(conn);
                self.sched.add_retry(tenant, "*", next_hour).await?;
                self.seen.retries.notify_one();
                Ok(Take::Nothing)
            }
            Some("capped") => {
                // At its running-jobs cap: parked until a capped conversion of it ends.
                // One that was taken before the cap was set does not know to bring the
                // tenant back: look again in a few seconds whatever happens.
                drop(conn);
                self.sched
                    .add_retry(tenant, "*", now + CAPPED_RECHECK.as_millis() as u64)
                    .await?;
                self.seen.retries.notify_one();
                Ok(Take::Nothing)
            }
            _ => Ok(Take::Nothing),
        }
    }

    /// How many conversions of `tenant` hold a lease now.
    pub async fn running(&self, tenant: &str) -> Result<u64> {
        let mut conn = self.conn().await?;
        Ok(conn.zcount(running_key(tenant), now_ms(), "+inf").await?)
    }

    /// Ends the leases of workers that died: each expired lease whose entry is still
    /// pending puts its tenant back in the ready set (the next `TAKE` claims the entry
    /// once it is idle past the visibility timeout); a lease of a finished entry goes.
    pub async fn sweep_leases(&self) -> Result<usize> {
        let now = now_ms();
        let expired = self.sched.expired_leases(now, 100).await?;
        let n = expired.len();
        for (tenant, entry) in expired {
            let mut conn = self.conn().await?;
            let pending: i64 = lua::PENDING
                .call()
                .key("stream", convert_stream(&tenant))
                .arg("group", GROUP)
                .arg("entry", &entry)
                .invoke(&mut conn)
                .await?;
            drop(conn);
            if pending > 0 {
                let again = now + (self.policy.visibility_timeout / 2).as_millis() as u64;
                self.sched.lease(&tenant, &entry, again).await?;
                self.sched.add(&tenant, true).await?;
            } else {
                self.sched.forget_lease(&tenant, &entry).await?;
            }
        }
        Ok(n)
    }

    /// Ends this delivery's lease in the scheduler (`FINISH`: its tenant made ready again
    /// under a running cap; with `notify`, the notifiers told of its notify entry) and
    /// picks its slot's next tenant in the same script, kept for the slot's next
    /// [`next_delivery`](Self::next_delivery).
    async fn finish(&self, d: &Delivery, notify: bool) -> Result<()> {
        let next = self
            .sched
            .finish(&d.tenant, &d.entry_id, notify, d.capped)
            .await?;
        let mut prepicked = self.seen.prepicked.lock().expect("lock is never poisoned");
        match next {
            Some(p) => prepicked.insert(d.consumer.clone(), p),
            None => prepicked.remove(&d.consumer),
        };
        Ok(())
    }

    /// Ends this delivery's lease in the scheduler and lets its tenant run again.
    async fn release(&self, d: &Delivery) -> Result<()> {
        self.finish(d, false).await
    }

    /// Entries pending for worker consumers of this `host` whose process is gone
    /// (`alive(pid)` false): a restarted worker takes them at once instead of waiting
    /// out the visibility timeout.
    pub async fn orphans(&self, host: &str, alive: impl Fn(u32) -> bool) -> Result<Vec<Orphan>> {
        let mut conn = self.conn().await?;
        let mut tenants: Vec<String> = conn.smembers(TENANTS).await?;
        tenants.sort();
        let mut found = Vec::new();
        for tenant in tenants {
            let stream = convert_stream(&tenant);
            let group = crate::streams::Group {
                stream: &stream,
                name: GROUP,
            };
            for crate::streams::Pending {
                entry_id,
                consumer,
                idle_ms,
            } in group.pending(&mut conn, 1000).await?
            {
                let dead =
                    parse_consumer_name(&consumer).is_some_and(|(h, pid)| h == host && !alive(pid));
                if dead {
                    found.push(Orphan {
                        tenant: tenant.clone(),
                        entry_id,
                        idle_ms,
                    });
                }
            }
        }
        Ok(found)
    }

    /// Takes `orphan` over for `consumer`; `None` if another process was quicker or the
    /// entry is gone.
    pub async fn claim_orphan(&self, orphan: &Orphan, consumer: &str) -> Result<Option<Delivery>> {
        let mut conn = self.conn().await?;
        let stream = convert_stream(&orphan.tenant);
        let claimed: redis::streams::StreamClaimReply = redis::cmd("XCLAIM")
            .arg(&stream)
            .arg(GROUP)
            .arg(consumer)
            .arg(orphan.idle_ms)
            .arg(&orphan.entry_id)
            .query_async(&mut conn)
            .await?;
        let Some(entry) = claimed.ids.into_iter().next() else {
            return Ok(None);
        };
        tracing::info!(
            tenant = %orphan.tenant,
            entry = %entry.id,
            "took over an entry of a worker that stopped on this host"
        );
        // The dead worker's lease on this entry becomes ours (same member, new expiry).
        let expires = now_ms() + self.policy.visibility_timeout.as_millis() as u64;
        let _: () = conn
            .zadd(running_key(&orphan.tenant), &entry.id, expires)
            .await?;
        drop(conn);
        self.sched.lease(&orphan.tenant, &entry.id, expires).await?;
        Ok(Some(Delivery {
            tenant: orphan.tenant.clone(),
            stream,
            job_id: entry.get("job").unwrap_or_default(),
            consumer: consumer.to_owned(),
            entry_id: entry.id,
            // Its cap is not known here: its end makes the tenant ready again anyway.
            capped: true,
        }))
    }

    /// Marks the job `converting` and counts the attempt; acknowledges entries whose job
    /// is gone or already finished.
    pub async fn start_attempt(&self, d: &Delivery) -> Result<AttemptStart> {
        self.start_attempt_with(d, "").await
    }

    /// [`start_attempt`](Self::start_attempt), recording in the same script that the
    /// converter `digest` runs this attempt (the job's `converters`).
    pub async fn start_attempt_with(&self, d: &Delivery, digest: &str) -> Result<AttemptStart> {
        Ok(self.start_attempt_pinned(d, digest, None).await?.0)
    }

    /// [`start_attempt_with`](Self::start_attempt_with), with the digest of a canary the
    /// job may run instead: true when this attempt runs it (a job's first attempt, once).
    pub async fn start_attempt_pinned(
        &self,
        d: &Delivery,
        digest: &str,
        canary: Option<&str>,
    ) -> Result<(AttemptStart, bool)> {
        let (start, on_canary, _) = self.start_attempt_reading(d, digest, canary).await?;
        Ok((start, on_canary))
    }

    /// [`start_attempt_pinned`](Self::start_attempt_pinned), also giving the job as the
    /// script read it (in the same round trip) when the attempt is to run: its status is
    /// `converting` and its attempts counted, the rest as stored.
    pub async fn start_attempt_reading(
        &self,
        d: &Delivery,
        digest: &str,
        canary: Option<&str>,
    ) -> Result<(AttemptStart, bool, Option<JobRecord>)> {
        let mut conn = self.conn().await?;
        let (status, attempts, on_canary, job): (String, u32, u32, HashMap<String, String>) =
            lua::START_ATTEMPT
                .call()
                .key("job", job_key(&d.tenant, &d.job_id))
                .arg("channel", events_channel(&d.job_id))
                .arg("digest", digest)
                .arg("canary", canary.unwrap_or(""))
                .invoke(&mut conn)
                .await?;
        if status == "converting" {
            let job = JobRecord::from_hash(&job)
                .filter(|j| j.tenant == d.tenant)
                .map(|mut j| {
                    j.status = JobStatus::Converting;
                    j.attempts = attempts;
                    j
                });
            return Ok((AttemptStart::Convert(attempts), on_canary == 1, job));
        }
        redis::pipe()
            .atomic()
            .cmd("XACK")
            .arg(&d.stream)
            .arg(GROUP)
            .arg(&d.entry_id)
            .ignore()
            .zrem(running_key(&d.tenant), &d.entry_id)
            .ignore()
            .query_async::<()>(&mut conn)
            .await?;
        drop(conn);
        self.release(d).await?;
        Ok((AttemptStart::Skip, false, None))
    }

    /// Resets the entry's idle time while we work on it. False if another worker has
    /// claimed it meanwhile.
    pub async fn heartbeat(&self, d: &Delivery, consumer: &str) -> Result<bool> {
        let mut conn = self.conn().await?;
        let ours = group(&d.stream)
            .heartbeat(&mut conn, consumer, &d.entry_id)
            .await?;
        if ours {
            let expires = now_ms() + self.policy.visibility_timeout.as_millis() as u64;
            let _: () = redis::cmd("ZADD")
                .arg(running_key(&d.tenant))
                .arg("XX")
                .arg(expires)
                .arg(&d.entry_id)
                .query_async(&mut conn)
                .await?;
            drop(conn);
            self.sched.lease(&d.tenant, &d.entry_id, expires).await?;
        }
        Ok(ours)
    }

    /// Marks a job as watched (see `lua/watch.lua`): its changes are published from now
    /// on. Call it before reading the job whose changes are to be followed. False if
    /// there is no such job.
    pub async fn watch(&self, tenant: &str, job_id: &str) -> Result<bool> {
        let mut conn = self.conn().await?;
        let found: i64 = lua::WATCH
            .call()
            .key("job", job_key(tenant, job_id))
            .invoke(&mut conn)
            .await?;
        Ok(found == 1)
    }

    pub async fn report_progress(&self, tenant: &str, job_id: &str, progress: f32) -> Result<()> {
        let mut conn = self.conn().await?;
        let _: i64 = lua::PROGRESS
            .call()
            .key("job", job_key(tenant, job_id))
            .arg("progress", format!("{progress:.3}"))
            .arg("channel", events_channel(job_id))
            .invoke(&mut conn)
            .await?;
        Ok(())
    }

    /// Marks the job done with its output and acknowledges the entry. False when the
    /// job was deleted meanwhile (the caller removes the MP3).
    pub async fn complete(&self, d: &Delivery, output: &JobOutput) -> Result<bool> {
        Ok(self.complete_within(d, output, None).await? == Completion::Done)
    }

    /// [`complete`](Self::complete), unless the MP3 would take the tenant's stored bytes
    /// past `quota` (its effective `quota_bytes`; `None`: no quota), decided atomically
    /// with the stored total.
    pub async fn complete_within(
        &self,
        d: &Delivery,
        output: &JobOutput,
        quota: Option<u64>,
    ) -> Result<Completion> {
        self.complete_counting(d, output, quota, 0).await
    }

    /// [`complete_within`](Self::complete_within), adding the conversion's `cpu_ms` to
    /// the tenant's hour and day in the same script (no separate `record_cpu`).
    pub async fn complete_counting(
        &self,
        d: &Delivery,
        output: &JobOutput,
        quota: Option<u64>,
        cpu_ms: u64,
    ) -> Result<Completion> {
        // One clock read: the hour, the day and `finished_at` agree.
        let now_s = now_ms() / 1000;
        let (hour, day) = periods(now_s);
        let mut conn = self.conn().await?;
        let kept: i64 = lua::COMPLETE
            .call()
            .key("job", job_key(&d.tenant, &d.job_id))
            .key("convert", &d.stream)
            .key("notify", notify_stream(&d.tenant))
            .key("running", running_key(&d.tenant))
            .key("usage", usage_key(&d.tenant))
            .arg("group", GROUP)
            .arg("entry", &d.entry_id)
            .arg("output_key", &output.key)
            .arg("output_bytes", output.bytes)
            .arg("duration_ms", output.duration_ms)
            .arg("finished_at", now_s)
            .arg("job_id", &d.job_id)
            .arg("tenant", &d.tenant)
            .arg("channel", events_channel(&d.job_id))
            .arg(
                "bitrate_kbps",
                output
                    .bitrate_kbps
                    .map(|k| k.to_string())
                    .unwrap_or_default(),
            )
            .arg("hour_prefix", crate::usage::hour_prefix(hour))
            .arg("day_prefix", crate::usage::day_prefix(day))
            .arg("quota_bytes", quota.unwrap_or(0))
            .arg("cpu_ms", cpu_ms)
            .arg("trim", self.trim_due(&d.stream))
            .invoke(&mut conn)
            .await?;
        drop(conn);
        if kept == 2 {
            // Still converting, still leased: the caller fails it (which releases).
            return Ok(Completion::OverQuota);
        }
        // Released, and the notifiers told of the new entry, in one script.
        self.finish(d, kept == 1).await?;
        Ok(if kept == 1 {
            Completion::Done
        } else {
            Completion::Deleted
        })
    }

    /// `1` when this process has not trimmed `stream` in the last [`TRIM_EVERY`] (and
    /// counts this as its trim), else `0`: the ack scripts' trim argument.
    fn trim_due(&self, stream: &str) -> &'static str {
        let mut trimmed = self.seen.trimmed.lock().expect("lock is never poisoned");
        if let Some((at, skipped)) = trimmed.get_mut(stream)
            && at.elapsed() < TRIM_EVERY
        {
            *skipped = true;
            return "0";
        }
        trimmed.insert(stream.to_owned(), (Instant::now(), false));
        "1"
    }

    /// Trims the convert streams whose trim an ack skipped, once [`TRIM_EVERY`] has
    /// passed since their last: a stream that went idle keeps no acknowledged entries
    /// for long. Idle worker slots call it; no Redis command unless one is due.
    pub async fn trim_skipped(&self) -> Result<()> {
        let due: Vec<String> = {
            let mut trimmed = self.seen.trimmed.lock().expect("lock is never poisoned");
            trimmed
                .iter_mut()
                .filter(|(_, (at, skipped))| *skipped && at.elapsed() >= TRIM_EVERY)
                .map(|(stream, entry)| {
                    *entry = (Instant::now(), false);
                    stream.clone()
                })
                .collect()
        };
        if due.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn().await?;
        for stream in due {
            trim_stream(&mut conn, &stream).await?;
        }
        Ok(())
    }

    /// Whether a job still exists (a worker's check that it was not deleted while its
    /// run went on, should the cancel message have been missed).
    pub async fn exists(&self, tenant: &str, id: &str) -> Result<bool> {
        let mut conn = self.conn().await?;
        Ok(conn.exists(job_key(tenant, id)).await?)
    }

    /// Fails the job for good with `reason` (dead letter + notify) and acknowledges.
    pub async fn fail(&self, d: &Delivery, reason: &str, attempts: u32) -> Result<()> {
        // One clock read: the hour, the day and `finished_at` agree.
        let now_s = now_ms() / 1000;
        let (hour, day) = periods(now_s);
        let mut conn = self.conn().await?;
        let _: i64 = lua::FAIL
            .call()
            .key("job", job_key(&d.tenant, &d.job_id))
            .key("convert", &d.stream)
            .key("dead_letter", convert_dead_key(&d.tenant))
            .key("notify", notify_stream(&d.tenant))
            .key("running", running_key(&d.tenant))
            .key("usage", usage_key(&d.tenant))
            .arg("group", GROUP)
            .arg("entry", &d.entry_id)
            .arg("reason", reason)
            .arg("finished_at", now_s)
            .arg("job_id", &d.job_id)
            .arg("tenant", &d.tenant)
            .arg("attempts", attempts)
            .arg("channel", events_channel(&d.job_id))
            .arg("hour_prefix", crate::usage::hour_prefix(hour))
            .arg("day_prefix", crate::usage::day_prefix(day))
            .arg("trim", self.trim_due(&d.stream))
            .invoke(&mut conn)
            .await?;
        drop(conn);
        self.finish(d, true).await?;
        Ok(())
    }

    /// The newest `count` dead letters of a tenant's conversions.
    pub async fn dead_letters(&self, tenant: &str, count: usize) -> Result<Vec<DeadLetter>> {
        let mut conn = self.conn().await?;
        let reply: redis::streams::StreamRangeReply = redis::cmd("XREVRANGE")
            .arg(convert_dead_key(tenant))
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut conn)
            .await?;
        Ok(reply
            .ids
            .iter()
            .map(|e| DeadLetter {
                at: e
                    .id
                    .split('-')
                    .next()
                    .and_then(|ms| ms.parse::<u64>().ok())
                    .unwrap_or(0)
                    / 1000,
                id: e.id.clone(),
                tenant: tenant.to_owned(),
                job_id: e.get("job").unwrap_or_default(),
                reason: e.get("reason").unwrap_or_default(),
                attempts: e
                    .get::<String>("attempts")
                    .and_then(|a| a.parse().ok())
                    .unwrap_or(0),
            })
            .collect())
    }

    /// Queues a failed job again, attempts starting over, and drops its dead letter.
    pub async fn requeue_failed(&self, job: &JobRecord) -> Result<Requeue> {
        self.ensure_stream(&job.tenant).await?;
        let mut conn = self.conn().await?;
        let before: String = lua::REQUEUE_FAILED
            .call()
            .key("job", job_key(&job.tenant, &job.id))
            .key("convert", convert_stream(&job.tenant))
            .key("dead_letter", convert_dead_key(&job.tenant))
            .key("usage", usage_key(&job.tenant))
            .arg("job_id", &job.id)
            .arg("channel", events_channel(&job.id))
            .invoke(&mut conn)
            .await?;
        drop(conn);
        if before == "failed" {
            self.sched.add(&job.tenant, true).await?;
        }
        Ok(match before.as_str() {
            "failed" => Requeue::Queued,
            "missing" => Requeue::Missing,
            _ => Requeue::NotFailed(before),
        })
    }

    /// Requeues the job after `delay` and acknowledges this entry.
    pub async fn retry_later(&self, d: &Delivery, reason: &str, delay: Duration) -> Result<()> {
        self.requeue_attempt(d, reason, delay, false).await
    }

    /// Requeues a job a canary failed at once, for the stable converter; the canary's
    /// attempt does not count against `max_attempts`.
    pub async fn retry_on_stable(&self, d: &Delivery, reason: &str) -> Result<()> {
        self.requeue_attempt(d, reason, Duration::ZERO, true).await
    }

    /// Returns a delivery being converted to the queue now (a worker shutting down); the
    /// attempt does not count.
    pub async fn hand_back(&self, d: &Delivery, reason: &str) -> Result<()> {
        self.requeue_attempt(d, reason, Duration::ZERO, true).await
    }

    async fn requeue_attempt(
        &self,
        d: &Delivery,
        reason: &str,
        delay: Duration,
        refund: bool,
    ) -> Result<()> {
        let due = now_ms() + delay.as_millis() as u64;
        // The retry entry first: a crash before the script leaves one the promoter drops.
        self.sched.add_retry(&d.tenant, &d.job_id, due).await?;
        self.seen.retries.notify_one();
        let mut conn = self.conn().await?;
        let _: i64 = lua::RETRY_LATER
            .call()
            .key("job", job_key(&d.tenant, &d.job_id))
            .key("convert", &d.stream)
            .key("running", running_key(&d.tenant))
            .arg("group", GROUP)
            .arg("entry", &d.entry_id)
            .arg("reason", reason)
            .arg("due_ms", due)
            .arg("channel", events_channel(&d.job_id))
            .arg("refund", if refund { "1" } else { "0" })
            .arg("trim", self.trim_due(&d.stream))
            .invoke(&mut conn)
            .await?;
        drop(conn);
        self.release(d).await?;
        Ok(())
    }

    /// Moves retries whose backoff has passed back onto their streams, and says when the
    /// next one is due (unix ms): what a promoter sleeps until (waking earlier at
    /// [`retry_scheduled`](Self::retry_scheduled)).
    pub async fn promote_retries(&self) -> Result<(u64, Option<u64>)> {
        let moved = self.promote_due_retries().await?;
        let next = self.sched.next_retry_after(now_ms()).await?;
        Ok((moved, next))
    }

    /// Resolves when this process schedules a retry (or has since the last call).
    pub async fn retry_scheduled(&self) {
        self.seen.retries.notified().await
    }

    /// Moves retries whose backoff has passed back onto their streams.
    pub async fn promote_due_retries(&self) -> Result<u64> {
        let due = self.sched.take_due_retries(now_ms(), 100).await?;
        let mut moved = 0;
        for (tenant, job) in due {
            if job == "*" {
                // A tenant's CPU hour is over, or it was parked at its running cap: it
                // may run again.
                self.sched.add(&tenant, true).await?;
                continue;
            }
            let mut conn = self.conn().await?;
            let queued: i64 = lua::PROMOTE_RETRY
                .call()
                .key("job", job_key(&tenant, &job))
                .key("convert", convert_stream(&tenant))
                .arg("job_id", &job)
                .invoke(&mut conn)
                .await?;
            drop(conn);
            let member = format!("{tenant} {job}");
            if queued == 2 {
                // Still converting: not requeued yet (its worker writes the retry entry
                // first), or its worker died converting. Look again, each time twice as
                // late, for as long as a conversion's lease lasts; past that, the attempt
                // that claims the entry decides (and schedules its own retry if any).
                let first = *self
                    .seen
                    .rechecks
                    .lock()
                    .expect("lock is never poisoned")
                    .entry(member.clone())
                    .or_insert_with(Instant::now);
                let age = first.elapsed();
                if age < self.policy.visibility_timeout {
                    let again = now_ms() + RETRY_RECHECK.max(age).as_millis() as u64;
                    self.sched.add_retry(&tenant, &job, again).await?;
                    self.seen.retries.notify_one();
                    continue;
                }
                tracing::info!(%tenant, %job, "a retry whose job stays converting is dropped; the attempt that claims its entry decides");
            }
            self.seen
                .rechecks
                .lock()
                .expect("lock is never poisoned")
                .remove(&member);
            if queued == 1 {
                moved += 1;
                self.sched.add(&tenant, true).await?;
            }
        }
        Ok(moved)
    }

    /// Trims `stream` without dropping entries any group still needs.
    pub async fn trim(&self, stream: &str) -> Result<u64> {
        let mut conn = self.conn().await?;
        Ok(trim_stream(&mut conn, stream).await?)
    }
}

/// Trims `stream` below the oldest entry any consumer group still needs (pending, or not
/// yet delivered); a stream without groups keeps its newest `UNREAD_STREAM_CAP` entries.
/// Shared by the convert streams and the notify stream.
pub async fn trim_stream(
    conn: &mut (impl redis::aio::ConnectionLike + Send),
    stream: &str,
) -> redis::RedisResult<u64> {
    lua::SAFE_TRIM
        .call()
        .key("stream", stream)
        .arg("cap", UNREAD_STREAM_CAP)
        .invoke(conn)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_names_round_trip_with_dashes_in_the_host() {
        let name = consumer_name("web-1.example", 4242, 3);
        assert_eq!(name, "web-1.example-4242-3");
        assert_eq!(parse_consumer_name(&name), Some(("web-1.example", 4242)));
        assert_eq!(parse_consumer_name("notifier-x"), None);
        assert_eq!(parse_consumer_name("a-b-c"), None);
    }

    #[test]
    fn list_cursors_round_trip_and_reject_junk() {
        let c = ListCursor {
            created_ms: 1_700_000_000_123,
            id: "abc123".into(),
        };
        assert_eq!(c.to_string().parse::<ListCursor>(), Ok(c));
        for junk in ["", "3", "x-abc", "12-", "12-a b", "12-a:b"] {
            assert!(junk.parse::<ListCursor>().is_err(), "{junk}");
        }
    }
}
