//! What a tenant has used: jobs by state, stored bytes, running conversions, and its
//! activity per hour (last 24) and per day (last 30). Written by the pipeline scripts
//! (`queue::scripts`) and the worker (CPU time); read here for `/v1/tenant/usage` and
//! the operator's usage.

use std::collections::HashMap;

use crate::Pool;
use serde::Serialize;

use crate::keys::{running_key, usage_day_key, usage_hour_key, usage_key};
use crate::queue::{now_ms, periods};

/// Jobs of a tenant by state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobCounts {
    pub queued: u64,
    pub converting: u64,
    pub done: u64,
    pub failed: u64,
    pub expired: u64,
}

/// A tenant's activity in one hour or day.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
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
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
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

fn period(start: u64, h: &HashMap<String, String>) -> Option<Period> {
    (!h.is_empty()).then(|| Period {
        start,
        jobs: number(h, "jobs"),
        done: number(h, "done"),
        failed: number(h, "failed"),
        cpu_seconds: number(h, "cpu_ms") as f64 / 1000.0,
        bytes_in: number(h, "bytes_in"),
        bytes_out: number(h, "bytes_out"),
    })
}

/// A tenant's usage now (one pipelined round trip).
pub async fn load(pool: &Pool, tenant: &str) -> redis::RedisResult<Usage> {
    let mut conn = pool.get().await.map_err(crate::pool_error)?;
    let now = now_ms();
    let (hour, day) = periods(now / 1000);
    let hours: Vec<u64> = (0..24).map(|i| hour - i * 3600).collect();
    let days: Vec<u64> = (0..30).map(|i| day - i * 86_400).collect();
    let mut pipe = redis::pipe();
    pipe.hgetall(usage_key(tenant));
    pipe.cmd("ZCOUNT")
        .arg(running_key(tenant))
        .arg(now)
        .arg("+inf");
    for h in &hours {
        pipe.hgetall(usage_hour_key(tenant, *h));
    }
    for d in &days {
        pipe.hgetall(usage_day_key(tenant, *d));
    }
    let (totals, running, periods): (HashMap<String, String>, u64, Vec<HashMap<String, String>>) = {
        let mut values: Vec<redis::Value> = pipe.query_async(&mut conn).await?;
        let rest = values.split_off(2);
        let mut it = values.into_iter();
        let totals = redis::from_redis_value(it.next().expect("two values"))
            .map_err(redis::RedisError::from)?;
        let running = redis::from_redis_value(it.next().expect("two values"))
            .map_err(redis::RedisError::from)?;
        let periods = rest
            .into_iter()
            .map(|v| redis::from_redis_value(v).map_err(redis::RedisError::from))
            .collect::<redis::RedisResult<_>>()?;
        (totals, running, periods)
    };
    let (hour_maps, day_maps) = periods.split_at(hours.len());
    Ok(Usage {
        tenant: tenant.to_owned(),
        jobs: JobCounts {
            queued: number(&totals, "queued"),
            converting: number(&totals, "converting"),
            done: number(&totals, "done"),
            failed: number(&totals, "failed"),
            expired: number(&totals, "expired"),
        },
        running,
        stored_bytes: number(&totals, "stored_bytes"),
        hours: hours
            .iter()
            .zip(hour_maps)
            .filter_map(|(s, h)| period(*s, h))
            .collect(),
        days: days
            .iter()
            .zip(day_maps)
            .filter_map(|(s, h)| period(*s, h))
            .collect(),
    })
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
            pipe.hgetall(usage_key(t));
            pipe.cmd("XRANGE")
                .arg(crate::keys::convert_stream(t))
                .arg("-")
                .arg("+")
                .arg("COUNT")
                .arg(1);
        }
        let values: Vec<redis::Value> = pipe.query_async(&mut conn).await?;
        for (t, pair) in batch.iter().zip(values.chunks(2)) {
            let h: HashMap<String, String> =
                redis::from_redis_value(pair[0].clone()).map_err(redis::RedisError::from)?;
            let first: redis::streams::StreamRangeReply =
                redis::from_redis_value(pair[1].clone()).map_err(redis::RedisError::from)?;
            let oldest_entry_ms = first.ids.first().and_then(|e| {
                let ms: u64 = e.id.split('-').next()?.parse().ok()?;
                Some(now.saturating_sub(ms))
            });
            out.push(QueueGauge {
                tenant: t.clone(),
                jobs: JobCounts {
                    queued: number(&h, "queued"),
                    converting: number(&h, "converting"),
                    done: number(&h, "done"),
                    failed: number(&h, "failed"),
                    expired: number(&h, "expired"),
                },
                oldest_entry_ms,
            });
        }
    }
    Ok(out)
}
