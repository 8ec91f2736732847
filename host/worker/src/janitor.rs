//! Background housekeeping every `tapedeck serve` process runs: deleting tenants marked
//! for deletion (blobs, then every key with the tenant's hash tag, then the scheduler's
//! entries), expiring jobs past their tenant's retention (blobs first, then the job
//! is marked `expired` and its bytes leave the quota), and pruning usage periods past
//! their keeping time. Work is idempotent, so two
//! processes doing the same pass is harmless; a lock keeps them from doing it at once.

use std::time::Duration;

use tapedeck_store::Pool;
use tokio_util::sync::CancellationToken;

use tapedeck_blobs::BlobStore;
use tapedeck_model::tenant::TenantLimits;
use tapedeck_store::queue::{JobQueue, now_ms};
use tapedeck_store::tenants;

/// How the janitor runs.
#[derive(Debug, Clone)]
pub struct JanitorSettings {
    /// Time between passes.
    pub every: Duration,
    /// Server defaults of the tenant limits (`retention_days`).
    pub tenant_defaults: TenantLimits,
    /// Added to the clock when judging retention (tests; 0 in production).
    pub clock_skew: Duration,
    /// Time between retention scans (they read every tenant); deletions are looked for
    /// every pass.
    pub retention_every: Duration,
}

/// Runs passes until `shutdown`.
pub async fn run(
    queue: JobQueue,
    blobs: BlobStore,
    settings: JanitorSettings,
    shutdown: CancellationToken,
) {
    let mut last_retention: Option<std::time::Instant> = None;
    // A pass every `every` whatever happens (no spinning); while Redis is down each fails
    // the same way, logged once in a while.
    let warnings = tapedeck_model::logs::Throttled::default();
    loop {
        let retention = last_retention.is_none_or(|t| t.elapsed() >= settings.retention_every);
        match pass(&queue, &blobs, &settings, retention).await {
            Ok(true) if retention => last_retention = Some(std::time::Instant::now()),
            Ok(_) => {}
            Err(e) => tapedeck_model::warn_throttled!(warnings, "janitor pass failed", e),
        }
        tokio::select! {
            _ = tokio::time::sleep(settings.every) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// One pass, under a short lock shared by every process: deletions, and the retention
/// scan if `retention`. Ok(false) when another process holds the lock.
pub async fn pass(
    queue: &JobQueue,
    blobs: &BlobStore,
    settings: &JanitorSettings,
    retention: bool,
) -> anyhow::Result<bool> {
    let pool = queue.pool();
    // Most passes have nothing to do: one read of the deletion set, no lock.
    let deleting = tenants::deleting(pool).await?;
    if deleting.is_empty() && !retention {
        return Ok(true);
    }
    let lock_ttl = (settings.every * 5).max(Duration::from_secs(5));
    let token = format!("{}-{}", std::process::id(), now_ms());
    {
        let mut conn = pool.get().await?;
        let locked: bool = redis::cmd("SET")
            .arg(tapedeck_store::keys::JANITOR_LOCK)
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(lock_ttl.as_millis() as u64)
            .query_async::<Option<String>>(&mut conn)
            .await?
            .is_some();
        if !locked {
            return Ok(false);
        }
    }
    let result = async {
        for tenant in deleting {
            purge(pool, blobs, queue, &tenant).await?;
        }
        if retention {
            expire(queue, blobs, settings).await?;
            // A tenant an enqueue could not put in the ready set (Redis failed between
            // its two steps) is put back here, at the latest a scan later.
            queue.seed_ready().await?;
        }
        Ok::<_, anyhow::Error>(true)
    }
    .await;
    // Release only our own lock (it may have expired and been taken meanwhile): compare
    // and delete in one script.
    let mut conn = pool.get().await?;
    let _: i64 = tapedeck_store::lua::RELEASE_LOCK
        .call()
        .key("lock", tapedeck_store::keys::JANITOR_LOCK)
        .arg("token", &token)
        .invoke(&mut conn)
        .await?;
    result
}

/// Removes everything of a tenant marked as being deleted.
pub async fn purge(
    pool: &Pool,
    blobs: &BlobStore,
    queue: &JobQueue,
    tenant: &str,
) -> anyhow::Result<()> {
    blobs.delete_prefix(&format!("in/{tenant}")).await?;
    blobs.delete_prefix(&format!("out/{tenant}")).await?;
    tapedeck_blobs::Outbox::new(blobs.clone())
        .delete_tenant(tenant)
        .await?;
    queue.scheduler().forget_tenant(tenant).await?;
    let keys = tenants::purge_keys(pool, tenant).await?;
    tracing::info!(tenant, keys, "tenant deleted");
    Ok(())
}

/// The hour (unix ms / 3,600,000) of this process's last prune of usage periods.
static PRUNED_HOUR: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Expires finished jobs older than their tenant's retention, and, once an hour, prunes
/// the tenants' old usage periods.
async fn expire(
    queue: &JobQueue,
    blobs: &BlobStore,
    settings: &JanitorSettings,
) -> anyhow::Result<()> {
    let now_ms = now_ms() + settings.clock_skew.as_millis() as u64;
    // Usage periods past their keeping time go once an hour (a scan of each tenant's
    // usage hash's field names).
    let hour = now_ms / 3_600_000;
    let prune = PRUNED_HOUR.swap(hour, std::sync::atomic::Ordering::Relaxed) != hour;
    for tenant in tenants::list(queue.pool()).await? {
        if prune {
            let n = tapedeck_store::usage::prune(queue.pool(), &tenant.name, now_ms / 1000).await?;
            if n > 0 {
                tracing::info!(tenant = %tenant.name, fields = n, "usage periods past their keeping time pruned");
            }
        }
        let Some(days) = tenant.effective(&settings.tenant_defaults).retention_days else {
            continue;
        };
        let cutoff = now_ms.saturating_sub(days.saturating_mul(86_400_000));
        // Oldest first, a bounded batch per pass: a big backlog drains over passes.
        for job in queue.created_before(&tenant.name, cutoff, 500).await? {
            if !matches!(
                job.status,
                tapedeck_store::queue::JobStatus::Done | tapedeck_store::queue::JobStatus::Failed
            ) {
                continue;
            }
            blobs.delete(&job.input.key).await?;
            if let Some(out) = &job.output {
                blobs.delete(&out.key).await?;
            }
            if queue.expire(&job).await? {
                tracing::info!(tenant = %tenant.name, job = %job.id, "job expired (retention)");
            }
        }
    }
    Ok(())
}
