//! The Prometheus recorder and what `/metrics` reads from Redis when it is scraped.
//!
//! Counters and histograms are recorded where things happen (HTTP requests in the
//! gateway, conversions and plugin runs in the worker, deliveries in the notifier) and
//! are this process's own; gauges of shared state (jobs by state, queue backlog and its
//! oldest entry per tenant, canaries, Redis round trip) are read from Redis at scrape
//! time, so every process reports the same values — sum counters across processes, take
//! `max by (tenant)` of the gauges.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use deadpool_redis::Pool;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tapedeck_gateway::metrics::MetricsRender;

/// The process's recorder, installed once (tests run several services in one process).
fn handle() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
                900.0,
            ];
            let recorder = PrometheusBuilder::new()
                .set_buckets(&buckets)
                .ok()?
                .install_recorder();
            match recorder {
                Ok(handle) => {
                    describe();
                    Some(handle)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "no metrics recorder; /metrics is off");
                    None
                }
            }
        })
        .clone()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "tapedeck_http_requests_total",
        "HTTP requests by route and status"
    );
    describe_histogram!(
        "tapedeck_http_request_duration_seconds",
        "HTTP request time by route"
    );
    describe_gauge!("tapedeck_jobs", "Jobs by tenant and state (from Redis)");
    describe_gauge!(
        "tapedeck_queue_backlog",
        "Jobs waiting to start, per tenant (from Redis)"
    );
    describe_gauge!(
        "tapedeck_queue_oldest_entry_age_seconds",
        "Age of the oldest entry of a tenant's convert stream"
    );
    describe_histogram!(
        "tapedeck_conversion_seconds",
        "Wall time of a conversion run, by outcome"
    );
    describe_histogram!(
        "tapedeck_job_latency_seconds",
        "Upload to done (or failed), end to end"
    );
    describe_histogram!(
        "tapedeck_conversion_cpu_seconds",
        "CPU time of each conversion, per tenant (its _sum: CPU seconds per tenant)"
    );
    describe_counter!(
        "tapedeck_plugin_runs_total",
        "Plugin runs by stage, tenant, component digest and outcome (ok, refused, limit, trap)"
    );
    describe_gauge!(
        "tapedeck_canary_percent",
        "Share of new jobs a running canary takes"
    );
    describe_gauge!(
        "tapedeck_canary_runs",
        "A running canary's runs so far, by arm and result"
    );
    describe_counter!(
        "tapedeck_notifications_total",
        "Notification deliveries by channel and outcome"
    );
    describe_gauge!(
        "tapedeck_redis_roundtrip_seconds",
        "Time of a PING to Redis, measured at scrape time"
    );
}

/// What serves `/metrics` for this process; `None` if no recorder could be installed.
pub fn render(pool: Pool) -> Option<MetricsRender> {
    let handle = handle()?;
    Some(Arc::new(move || {
        let (pool, handle) = (pool.clone(), handle.clone());
        Box::pin(async move {
            if let Err(e) = refresh(&pool).await {
                tracing::warn!(error = %e, "metrics: could not read Redis");
            }
            handle.render()
        })
    }))
}

async fn refresh(pool: &Pool) -> anyhow::Result<()> {
    let start = Instant::now();
    {
        let mut conn = pool.get().await?;
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
    }
    metrics::gauge!("tapedeck_redis_roundtrip_seconds").set(start.elapsed().as_secs_f64());
    let tenants: Vec<String> = tapedeck_store::tenants::list(pool)
        .await?
        .into_iter()
        .map(|t| t.name)
        .collect();
    for g in tapedeck_store::usage::queue_gauges(pool, &tenants).await? {
        let j = &g.jobs;
        for (state, n) in [
            ("queued", j.queued),
            ("converting", j.converting),
            ("done", j.done),
            ("failed", j.failed),
            ("expired", j.expired),
        ] {
            metrics::gauge!("tapedeck_jobs", "tenant" => g.tenant.clone(), "state" => state)
                .set(n as f64);
        }
        metrics::gauge!("tapedeck_queue_backlog", "tenant" => g.tenant.clone())
            .set(j.queued as f64);
        metrics::gauge!("tapedeck_queue_oldest_entry_age_seconds", "tenant" => g.tenant.clone())
            .set(g.oldest_entry_ms.unwrap_or(0) as f64 / 1000.0);
    }
    for c in tapedeck_store::canary::all(pool).await? {
        let status = tapedeck_store::canary::status(pool, &c).await?;
        let scope = c.tenant.clone().unwrap_or_else(|| "*".into());
        metrics::gauge!(
            "tapedeck_canary_percent",
            "stage" => c.stage.clone(), "tenant" => scope.clone(), "digest" => c.digest.clone()
        )
        .set(c.percent);
        for (key, n) in &status.totals {
            let (arm, result) = key.split_once(':').unwrap_or((key, ""));
            metrics::gauge!(
                "tapedeck_canary_runs",
                "stage" => c.stage.clone(), "tenant" => scope.clone(),
                "digest" => c.digest.clone(), "arm" => arm.to_owned(), "result" => result.to_owned()
            )
            .set(*n as f64);
        }
    }
    Ok(())
}
