//! The job pipeline in Redis: job records, per-tenant convert streams with one consumer
//! group, fair consumption, visibility timeouts, retries with backoff, dead letters,
//! notify entries, progress events and safe trimming.
//!
//! Every key is listed in `redis/README.md`. State transitions are Lua scripts
//! (`scripts.rs`) so the job hash and the stream never disagree.
//!
//! Contact points: the gateway creates, reads, lists and deletes jobs and subscribes to
//! `events_channel`, and requeues failed jobs (`requeue_failed`); the worker calls `next_delivery`, `start_attempt`, `heartbeat`,
//! `report_progress`, `complete`, `fail` and `retry_later`.

pub mod job;
mod scripts;

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use deadpool_redis::Pool;
use redis::AsyncCommands;
use redis::streams::{StreamAutoClaimReply, StreamReadReply};

pub use job::{JobInput, JobOptions, JobOutput, JobRecord, JobStatus, now_ms};

/// The one consumer group on every convert stream.
pub const GROUP: &str = "workers";
/// Set of tenants that have a convert stream.
pub const TENANTS_WITH_STREAMS: &str = "td:convert:tenants";
/// Retries waiting for their backoff to pass.
pub const RETRY_ZSET: &str = "td:convert:retry";
/// Jobs that failed for good, with the reason.
pub const DEAD_LETTER: &str = "td:deadletter";
/// Finished (done or failed) jobs for the notifier.
pub const NOTIFY: &str = "td:notify";
/// Prefix of the per-tenant convert streams.
const CONVERT_PREFIX: &str = "td:convert:";
/// Cap for streams that no consumer group reads yet (dead letters, notify).
const UNREAD_STREAM_CAP: u64 = 100_000;

pub fn job_key(id: &str) -> String {
    format!("td:job:{id}")
}
pub fn convert_stream(tenant: &str) -> String {
    format!("{CONVERT_PREFIX}{tenant}")
}
pub fn user_jobs_key(tenant: &str, user_id: &str) -> String {
    format!("td:jobs:{tenant}:{user_id}")
}
pub fn tenant_jobs_key(tenant: &str) -> String {
    format!("td:jobs:{tenant}")
}
/// Pub/sub channel carrying a job's progress and status changes (JSON).
pub fn events_channel(id: &str) -> String {
    format!("td:events:{id}")
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis pool: {0}")]
    Pool(#[from] deadpool_redis::PoolError),
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
}

impl PipelinePolicy {
    /// Delay before attempt `attempts + 1`: base * 2^(attempts-1), plus jitter.
    pub fn backoff(&self, attempts: u32) -> Duration {
        let exp = self.retry_base * 2u32.saturating_pow(attempts.saturating_sub(1).min(16));
        let jitter = rand::random_range(0.0..0.5);
        exp.mul_f64(1.0 + jitter)
    }
}

/// One convert-stream entry held by this worker.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub tenant: String,
    pub stream: String,
    pub entry_id: String,
    pub job_id: String,
}

/// What `start_attempt` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptStart {
    /// Convert now; this is attempt number `n` (1-based).
    Convert(u32),
    /// Nothing to do: the job was deleted or already finished (the entry is acknowledged).
    Skip,
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
}

impl JobQueue {
    pub fn new(pool: Pool, policy: PipelinePolicy) -> Self {
        Self { pool, policy }
    }

    pub fn policy(&self) -> &PipelinePolicy {
        &self.policy
    }

    async fn conn(&self) -> Result<deadpool_redis::Connection> {
        Ok(self.pool.get().await?)
    }

    /// Creates the group of `tenant`'s convert stream (and the stream) if missing.
    pub async fn ensure_stream(&self, tenant: &str) -> Result<()> {
        let mut conn = self.conn().await?;
        let created: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(convert_stream(tenant))
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await;
        match created {
            Err(e) if e.code() == Some("BUSYGROUP") => {}
            other => other?,
        }
        let _: () = conn.sadd(TENANTS_WITH_STREAMS, tenant).await?;
        Ok(())
    }

    /// Stores a new job and queues it on its tenant's stream, atomically.
    pub async fn enqueue(&self, job: &JobRecord) -> Result<()> {
        self.ensure_stream(&job.tenant).await?;
        let mut conn = self.conn().await?;
        // Listing order ("newest first") needs more than `created_at`'s whole seconds:
        // jobs uploaded within one second would tie and come back in id order.
        let created_ms = now_ms().max(job.created_at * 1000);
        redis::pipe()
            .atomic()
            .hset_multiple(job_key(&job.id), &job.to_fields())
            .ignore()
            .zadd(
                user_jobs_key(&job.tenant, &job.user_id),
                &job.id,
                created_ms,
            )
            .ignore()
            .zadd(tenant_jobs_key(&job.tenant), &job.id, created_ms)
            .ignore()
            .cmd("XADD")
            .arg(convert_stream(&job.tenant))
            .arg("*")
            .arg("job")
            .arg(&job.id)
            .ignore()
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    pub async fn get(&self, id: &str) -> Result<Option<JobRecord>> {
        let mut conn = self.conn().await?;
        let h: HashMap<String, String> = conn.hgetall(job_key(id)).await?;
        Ok(JobRecord::from_hash(&h))
    }

    /// Jobs newest first: a user's own (`user_id`), or the whole tenant's.
    /// Returns the page and the offset of the next page, if any.
    pub async fn list(
        &self,
        tenant: &str,
        user_id: Option<&str>,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<JobRecord>, Option<usize>)> {
        let mut conn = self.conn().await?;
        let key = match user_id {
            Some(u) => user_jobs_key(tenant, u),
            None => tenant_jobs_key(tenant),
        };
        // One extra id tells whether another page follows.
        let ids: Vec<String> = conn
            .zrevrange(&key, offset as isize, (offset + limit) as isize)
            .await?;
        let more = ids.len() > limit;
        if ids.is_empty() {
            return Ok((Vec::new(), None));
        }
        let mut pipe = redis::pipe();
        for id in ids.iter().take(limit) {
            pipe.hgetall(job_key(id));
        }
        let hashes: Vec<HashMap<String, String>> = pipe.query_async(&mut conn).await?;
        let jobs = hashes.iter().filter_map(JobRecord::from_hash).collect();
        Ok((jobs, more.then_some(offset + limit)))
    }

    /// Removes a job's record and index entries. A queued entry left on the stream is
    /// acknowledged and skipped by the worker that reads it.
    pub async fn delete(&self, job: &JobRecord) -> Result<()> {
        let mut conn = self.conn().await?;
        redis::pipe()
            .atomic()
            .del(job_key(&job.id))
            .ignore()
            .zrem(user_jobs_key(&job.tenant, &job.user_id), &job.id)
            .ignore()
            .zrem(tenant_jobs_key(&job.tenant), &job.id)
            .ignore()
            .zrem(RETRY_ZSET, format!("{} {}", job.tenant, job.id))
            .ignore()
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    /// Next entry for `consumer`, taking tenants round-robin from `cursor` so one
    /// tenant's backlog cannot starve another: for each tenant in turn, first an entry
    /// abandoned past the visibility timeout (XAUTOCLAIM), then a new one.
    pub async fn next_delivery(
        &self,
        consumer: &str,
        cursor: &AtomicUsize,
        known: &Mutex<Vec<String>>,
    ) -> Result<Option<Delivery>> {
        let mut conn = self.conn().await?;
        let mut tenants: Vec<String> = conn.smembers(TENANTS_WITH_STREAMS).await?;
        tenants.sort();
        if tenants.is_empty() {
            return Ok(None);
        }
        let fresh: Vec<String> = {
            let known = known.lock().expect("tenant list lock is never poisoned");
            tenants
                .iter()
                .filter(|t| !known.contains(t))
                .cloned()
                .collect()
        };
        for t in fresh {
            self.ensure_stream(&t).await?;
            known
                .lock()
                .expect("tenant list lock is never poisoned")
                .push(t);
        }
        let start = cursor.fetch_add(1, Ordering::Relaxed);
        let min_idle = self.policy.visibility_timeout.as_millis() as u64;
        for i in 0..tenants.len() {
            let tenant = &tenants[(start + i) % tenants.len()];
            let stream = convert_stream(tenant);
            let claimed: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
                .arg(&stream)
                .arg(GROUP)
                .arg(consumer)
                .arg(min_idle)
                .arg("0-0")
                .arg("COUNT")
                .arg(1)
                .query_async(&mut conn)
                .await?;
            let entry = match claimed.claimed.into_iter().next() {
                Some(entry) => {
                    tracing::info!(tenant, entry = %entry.id, "claimed an abandoned entry");
                    Some(entry)
                }
                None => {
                    let read: Option<StreamReadReply> = redis::cmd("XREADGROUP")
                        .arg("GROUP")
                        .arg(GROUP)
                        .arg(consumer)
                        .arg("COUNT")
                        .arg(1)
                        .arg("STREAMS")
                        .arg(&stream)
                        .arg(">")
                        .query_async(&mut conn)
                        .await?;
                    read.and_then(|r| r.keys.into_iter().next())
                        .and_then(|k| k.ids.into_iter().next())
                }
            };
            if let Some(entry) = entry {
                let job_id: String = entry.get("job").unwrap_or_default();
                return Ok(Some(Delivery {
                    tenant: tenant.clone(),
                    stream,
                    entry_id: entry.id,
                    job_id,
                }));
            }
        }
        Ok(None)
    }

    /// Marks the job `converting` and counts the attempt; acknowledges entries whose job
    /// is gone or already finished.
    pub async fn start_attempt(&self, d: &Delivery) -> Result<AttemptStart> {
        let mut conn = self.conn().await?;
        let (status, attempts): (String, u32) = scripts::START_ATTEMPT
            .key(job_key(&d.job_id))
            .arg(events_channel(&d.job_id))
            .invoke_async(&mut conn)
            .await?;
        if status == "converting" {
            return Ok(AttemptStart::Convert(attempts));
        }
        let _: () = redis::cmd("XACK")
            .arg(&d.stream)
            .arg(GROUP)
            .arg(&d.entry_id)
            .query_async(&mut conn)
            .await?;
        Ok(AttemptStart::Skip)
    }

    /// Resets the entry's idle time while we work on it. False if another worker has
    /// claimed it meanwhile.
    pub async fn heartbeat(&self, d: &Delivery, consumer: &str) -> Result<bool> {
        let mut conn = self.conn().await?;
        let ours: i64 = scripts::HEARTBEAT
            .key(&d.stream)
            .arg(GROUP)
            .arg(consumer)
            .arg(&d.entry_id)
            .invoke_async(&mut conn)
            .await?;
        Ok(ours == 1)
    }

    pub async fn report_progress(&self, job_id: &str, progress: f32) -> Result<()> {
        let mut conn = self.conn().await?;
        let _: i64 = scripts::PROGRESS
            .key(job_key(job_id))
            .arg(format!("{progress:.3}"))
            .arg(events_channel(job_id))
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Marks the job done with its output and acknowledges the entry. False when the
    /// job was deleted meanwhile (the caller removes the MP3).
    pub async fn complete(&self, d: &Delivery, output: &JobOutput) -> Result<bool> {
        let mut conn = self.conn().await?;
        let kept: i64 = scripts::COMPLETE
            .key(job_key(&d.job_id))
            .key(&d.stream)
            .key(NOTIFY)
            .arg(GROUP)
            .arg(&d.entry_id)
            .arg(&output.key)
            .arg(output.bytes)
            .arg(output.duration_ms)
            .arg(now_ms() / 1000)
            .arg(&d.job_id)
            .arg(&d.tenant)
            .arg(events_channel(&d.job_id))
            .invoke_async(&mut conn)
            .await?;
        self.trim(&d.stream).await?;
        Ok(kept == 1)
    }

    /// Fails the job for good with `reason` (dead letter + notify) and acknowledges.
    pub async fn fail(&self, d: &Delivery, reason: &str, attempts: u32) -> Result<()> {
        let mut conn = self.conn().await?;
        let _: i64 = scripts::FAIL
            .key(job_key(&d.job_id))
            .key(&d.stream)
            .key(DEAD_LETTER)
            .key(NOTIFY)
            .arg(GROUP)
            .arg(&d.entry_id)
            .arg(reason)
            .arg(now_ms() / 1000)
            .arg(&d.job_id)
            .arg(&d.tenant)
            .arg(attempts)
            .arg(events_channel(&d.job_id))
            .invoke_async(&mut conn)
            .await?;
        self.trim(&d.stream).await?;
        Ok(())
    }

    /// Queues a failed job again, attempts starting over, and drops its dead letter.
    pub async fn requeue_failed(&self, job: &JobRecord) -> Result<Requeue> {
        self.ensure_stream(&job.tenant).await?;
        let mut conn = self.conn().await?;
        let before: String = scripts::REQUEUE_FAILED
            .key(job_key(&job.id))
            .key(convert_stream(&job.tenant))
            .key(DEAD_LETTER)
            .arg(&job.id)
            .arg(events_channel(&job.id))
            .invoke_async(&mut conn)
            .await?;
        Ok(match before.as_str() {
            "failed" => Requeue::Queued,
            "missing" => Requeue::Missing,
            _ => Requeue::NotFailed(before),
        })
    }

    /// Requeues the job after `delay` and acknowledges this entry.
    pub async fn retry_later(&self, d: &Delivery, reason: &str, delay: Duration) -> Result<()> {
        let mut conn = self.conn().await?;
        let _: i64 = scripts::RETRY_LATER
            .key(job_key(&d.job_id))
            .key(&d.stream)
            .key(RETRY_ZSET)
            .arg(GROUP)
            .arg(&d.entry_id)
            .arg(reason)
            .arg(now_ms() + delay.as_millis() as u64)
            .arg(format!("{} {}", d.tenant, d.job_id))
            .arg(events_channel(&d.job_id))
            .invoke_async(&mut conn)
            .await?;
        self.trim(&d.stream).await?;
        Ok(())
    }

    /// Moves retries whose backoff has passed back onto their streams.
    pub async fn promote_due_retries(&self) -> Result<u64> {
        let mut conn = self.conn().await?;
        let moved: u64 = scripts::PROMOTE_RETRIES
            .key(RETRY_ZSET)
            .arg(now_ms())
            .arg(CONVERT_PREFIX)
            .invoke_async(&mut conn)
            .await?;
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
    conn: &mut impl redis::aio::ConnectionLike,
    stream: &str,
) -> redis::RedisResult<u64> {
    scripts::SAFE_TRIM
        .key(stream)
        .arg(UNREAD_STREAM_CAP)
        .invoke_async(conn)
        .await
}
