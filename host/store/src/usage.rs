//! What a tenant has used: jobs by state, stored bytes, running conversions, and its
//! activity per hour (last 24) and per day (last 30), all in one hash (`keys::usage_key`):
//! a job's enqueue, completion or failure changes it with one read and one write
//! (`lua/lib_usage.lua`). Written by the pipeline scripts and the worker (CPU time); read
//! here for `/v1/tenant/usage` and the operator's usage; old periods pruned here too.

use std::collections::HashMap;

use crate::Pool;
use serde::{Deserialize, Serialize};

use crate::keys::{running_key, usage_key};
use crate::queue::{DAY_TTL_SECS, HOUR_TTL_SECS, now_ms, periods};
use redis::AsyncCommands;

/// Jobs of a tenant by state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobCounts {
    pub queued: u64,
    pub converting: u64,
    pub done: u64,
    pub failed: u64,
    pub expired: u64,
}

/// A tenant's activity in one hour or day.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Period {
    /// Its start, unix seconds.
    pub start: u64,
    /// Jobs created.
    pub jobs: u64,
    pub done: u64,
    pub failed: u64,
    /// CPU time of conversions (measured), seconds.
    pub cpu_seconds: f64,
    /// Bytes uploaded.
    pub bytes_in: u64,
    /// MP3 bytes written.
    pub bytes_out: u64,
}

/// Everything `GET /v1/tenant/usage` reports.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Usage {
    pub tenant: String,
    pub jobs: JobCounts,
    /// Conversions holding a lease now.
    pub running: u64,
    /// Uploads and MP3s stored, bytes.
    pub stored_bytes: u64,
    /// The last 24 hours with activity, newest first.
    pub hours: Vec<Period>,
    /// The last 30 days with activity, newest first.
    pub days: Vec<Period>,
}

fn number(h: &HashMap<String, String>, field: &str) -> u64 {
    // Counters can dip below zero for a moment only if a bug double-counts; report 0.
    h.get(field)
        .and_then(|v| v.parse::<i64>().ok())
        .map_or(0, |v| v.max(0) as u64)
}

/// The usage hash's totals fields.
const TOTALS: [&str; 6] = [
    "queued",
    "converting",
    "done",
    "failed",
    "expired",
    "stored_bytes",
];

/// Jobs by state from the usage hash's totals and the leases running now: `queued` counts
/// every unfinished job (and `converting`, in hashes from before, some of them); the
/// converting ones are those holding a lease.
fn job_counts(h: &HashMap<String, String>, running: u64) -> JobCounts {
    let unfinished = number(h, "queued") + number(h, "converting");
    let converting = running.min(unfinished);
    JobCounts {
        queued: unfinished - converting,
        converting,
        done: number(h, "done"),
        failed: number(h, "failed"),
        expired: number(h, "expired"),
    }
}

/// The totals from an `HMGET` of [`TOTALS`].
fn totals(values: Vec<Option<String>>) -> HashMap<String, String> {
    TOTALS
        .iter()
        .zip(values)
        .filter_map(|(f, v)| Some(((*f).to_owned(), v?)))
        .collect()
}

/// What a period counts, as its fields' names end.
const PERIOD_NAMES: [&str; 6] = ["jobs", "done", "failed", "cpu_ms", "bytes_in", "bytes_out"];

/// What the usage hash's fields of the hour starting at `start` (unix s) begin with; the
/// scripts add the name (`lua/lib_usage.lua`).
pub fn hour_prefix(start: u64) -> String {
    format!("h:{start}:")
}

/// What the usage hash's fields of the day starting at `start` (unix s) begin with.
pub fn day_prefix(start: u64) -> String {
    format!("d:{start}:")
}

/// The usage hash's field for `name` in the hour starting at `start` (unix s).
pub fn hour_field(start: u64, name: &str) -> String {
    hour_prefix(start) + name
}

/// The usage hash's field for `name` in the day starting at `start` (unix s).
pub fn day_field(start: u64, name: &str) -> String {
    day_prefix(start) + name
}

/// The period starting at `start` from its fields (`field(start, name)`), if it had any
/// activity.
fn period(
    start: u64,
    h: &HashMap<String, String>,
    field: fn(u64, &str) -> String,
) -> Option<Period> {
    let n = |name: &str| number(h, &field(start, name));
    let p = Period {
        start,
        jobs: n("jobs"),
        done: n("done"),
        failed: n("failed"),
        cpu_seconds: n("cpu_ms") as f64 / 1000.0,
        bytes_in: n("bytes_in"),
        bytes_out: n("bytes_out"),
    };
    PERIOD_NAMES
        .iter()
        .any(|name| h.contains_key(&field(start, name)))
        .then_some(p)
}

/// A tenant's usage now (one pipelined round trip: the usage hash's fields for the totals
/// and the last 24 hours and 30 days, and the running leases).
pub async fn load(pool: &Pool, tenant: &str) -> redis::RedisResult<Usage> {
    let mut conn = pool.get().await.map_err(crate::pool_error)?;
    let now = now_ms();
    let (hour, day) = periods(now / 1000);
    let hours: Vec<u64> = (0..24).map(|i| hour - i * 3600).collect();
    let days: Vec<u64> = (0..30).map(|i| day - i * 86_400).collect();
    let mut fields: Vec<String> = TOTALS.map(str::to_owned).to_vec();
    for name in PERIOD_NAMES {
        fields.extend(hours.iter().map(|h| hour_field(*h, name)));
        fields.extend(days.iter().map(|d| day_field(*d, name)));
    }
    let (values, running): (Vec<Option<String>>, u64) = redis::pipe()
        .cmd("HMGET")
        .arg(usage_key(tenant))
        .arg(&fields)
        .cmd("ZCOUNT")
        .arg(running_key(tenant))
        .arg(now)
        .arg("+inf")
        .query_async(&mut conn)
        .await?;
    let h: HashMap<String, String> = fields
        .into_iter()
        .zip(values)
        .filter_map(|(f, v)| Some((f, v?)))
        .collect();
    Ok(Usage {
        tenant: tenant.to_owned(),
        jobs: job_counts(&h, running),
        running,
        stored_bytes: number(&h, "stored_bytes"),
        hours: hours
            .iter()
            .filter_map(|s| period(*s, &h, hour_field))
            .collect(),
        days: days
            .iter()
            .filter_map(|s| period(*s, &h, day_field))
            .collect(),
    })
}

/// Drops a tenant's periods older than they are kept (hours `HOUR_TTL_SECS`, days
/// `DAY_TTL_SECS`) from its usage hash; the janitor calls it now and then. Returns the
/// fields removed.
pub async fn prune(pool: &Pool, tenant: &str, now_s: u64) -> redis::RedisResult<usize> {
    let mut conn = pool.get().await.map_err(crate::pool_error)?;
    let key = usage_key(tenant);
    let names: Vec<String> = conn.hkeys(&key).await?;
    let old: Vec<&String> = names
        .iter()
        .filter(|f| {
            let mut parts = f.splitn(3, ':');
            let (kind, start) = (
                parts.next(),
                parts.next().and_then(|s| s.parse::<u64>().ok()),
            );
            match (kind, start, parts.next()) {
                (Some("h"), Some(start), Some(_)) => start + HOUR_TTL_SECS < now_s,
                (Some("d"), Some(start), Some(_)) => start + DAY_TTL_SECS < now_s,
                _ => false,
            }
        })
        .collect();
    for chunk in old.chunks(500) {
        let _: () = conn.hdel(&key, chunk).await?;
    }
    Ok(old.len())
}

/// The bytes a tenant stores now (uploads, MP3s, its own published components): what
/// its `quota_bytes` is measured against.
pub async fn stored_bytes(pool: &Pool, tenant: &str) -> redis::RedisResult<u64> {
    let mut conn = pool.get().await.map_err(crate::pool_error)?;
    let v: Option<i64> = redis::cmd("HGET")
        .arg(usage_key(tenant))
        .arg("stored_bytes")
        .query_async(&mut conn)
        .await?;
    Ok(v.map_or(0, |v| v.max(0) as u64))
}

/// Adds `bytes` to what a tenant stores if that stays within `quota` (`None`: no quota),
/// atomically; `Ok(false)`, changing nothing, if it would not. For what a tenant stores
/// besides jobs (a published component); [`release_stored`] gives it back.
pub async fn charge_stored(
    pool: &Pool,
    tenant: &str,
    bytes: u64,
    quota: Option<u64>,
) -> redis::RedisResult<bool> {
    let mut conn = pool.get().await.map_err(crate::pool_error)?;
    let charged: i64 = crate::lua::CHARGE_STORED
        .call()
        .key("usage", usage_key(tenant))
        .arg("bytes", bytes)
        .arg("quota", quota.unwrap_or(0))
        .invoke(&mut conn)
        .await?;
    Ok(charged == 1)
}

/// Takes `bytes` charged by [`charge_stored`] off what a tenant stores.
pub async fn release_stored(pool: &Pool, tenant: &str, bytes: u64) -> redis::RedisResult<()> {
    let mut conn = pool.get().await.map_err(crate::pool_error)?;
    let _: i64 = redis::cmd("HINCRBY")
        .arg(usage_key(tenant))
        .arg("stored_bytes")
        .arg(-(bytes.min(i64::MAX as u64) as i64))
        .query_async(&mut conn)
        .await?;
    Ok(())
}

/// One tenant's queue as metrics report it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueGauge {
    pub tenant: String,
    pub jobs: JobCounts,
    /// Age of the oldest entry of its convert stream, ms (`None`: empty).
    pub oldest_entry_ms: Option<u64>,
}

/// Every listed tenant's job counts and oldest convert-stream entry, pipelined in
/// batches of 500 tenants.
pub async fn queue_gauges(pool: &Pool, tenants: &[String]) -> redis::RedisResult<Vec<QueueGauge>> {
    let mut out = Vec::with_capacity(tenants.len());
    let now = now_ms();
    for batch in tenants.chunks(500) {
        let mut conn = pool.get().await.map_err(crate::pool_error)?;
        let mut pipe = redis::pipe();
        for t in batch {
            pipe.cmd("HMGET").arg(usage_key(t)).arg(&TOTALS[..]);
            pipe.cmd("ZCOUNT").arg(running_key(t)).arg(now).arg("+inf");
            pipe.cmd("XRANGE")
                .arg(crate::keys::convert_stream(t))
                .arg("-")
                .arg("+")
                .arg("COUNT")
                .arg(1);
        }
        let values: Vec<redis::Value> = pipe.query_async(&mut conn).await?;
        for (t, three) in batch.iter().zip(values.chunks(3)) {
            let value = |v: &redis::Value| v.clone();
            let h =
                totals(redis::from_redis_value(value(&three[0])).map_err(redis::RedisError::from)?);
            let running: u64 =
                redis::from_redis_value(value(&three[1])).map_err(redis::RedisError::from)?;
            let first: redis::streams::StreamRangeReply =
                redis::from_redis_value(value(&three[2])).map_err(redis::RedisError::from)?;
            let oldest_entry_ms = first.ids.first().and_then(|e| {
                let ms: u64 = e.id.split('-').next()?.parse().ok()?;
                Some(now.saturating_sub(ms))
            });
            out.push(QueueGauge {
                tenant: t.clone(),
                jobs: job_counts(&h, running),
                oldest_entry_ms,
            });
        }
    }
    Ok(out)
}
