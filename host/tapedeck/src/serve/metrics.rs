//! The Prometheus recorder and what `/metrics` reads from Redis when it is scraped.
//!
//! Counters and histograms are recorded where things happen (HTTP requests in the
//! gateway, conversions and plugin runs in the worker, deliveries in the notifier) and
//! are this process's own; gauges of shared state (jobs by state, queue backlog and its
//! oldest entry per tenant, canaries, Redis round trip) are read from Redis at scrape
//! time, so every process reports the same values — sum counters across processes, take
//! `max by (tenant)` of the gauges.
//!
//! The series name tenants, count their jobs, logins and plugin runs: they are served on
//! a listener of their own (`--metrics-listen`, loopback by default), never on the API's.
//! A deleted tenant's series are left out of every scrape from the moment it is marked
//! for deletion: the recorder cannot forget a series, so the rendered text is filtered
//! by the tenants that exist and are not being deleted ([`live_tenants_only`]).

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use anyhow::Context;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tapedeck_gateway::metrics::MetricsRender;
use tapedeck_store::Pool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::MetricsListen;

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

/// Binds the listener `listen` asks for: `None` when metrics are off, or when the default
/// address is taken (by another `tapedeck serve` on this machine: a warning says how to
/// choose another). An address the operator configured must bind.
pub async fn bind(listen: MetricsListen) -> anyhow::Result<Option<TcpListener>> {
    let MetricsListen::At { addr, configured } = listen else {
        return Ok(None);
    };
    match TcpListener::bind(addr).await {
        Ok(listener) => Ok(Some(listener)),
        Err(e) if !configured => {
            tracing::warn!(
                %addr, error = %e,
                "metrics are not served: the default address is taken; set --metrics-listen"
            );
            Ok(None)
        }
        Err(e) => Err(e).with_context(|| format!("binding --metrics-listen {addr}")),
    }
}

/// Serves `GET /metrics` (and JSON 404s for anything else) on `listener` until `stop`.
pub async fn serve(listener: TcpListener, render: MetricsRender, stop: CancellationToken) {
    let router =
        tapedeck_gateway::metrics::routes(render).fallback(tapedeck_gateway::extract::no_route);
    if let Err(e) = axum::serve(listener, router)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
    {
        tracing::error!(error = %e, "the metrics listener failed");
    }
}

/// What serves `/metrics` for this process; `None` if no recorder could be installed.
pub fn render(pool: Pool) -> Option<MetricsRender> {
    let handle = handle()?;
    // The tenants of the last scrape that could read them: a scrape while Redis is
    // unreachable still leaves deleted tenants out.
    let known: Arc<Mutex<Option<HashSet<String>>>> = Arc::default();
    Some(Arc::new(move || {
        let (pool, handle, known) = (pool.clone(), handle.clone(), known.clone());
        Box::pin(async move {
            match refresh(&pool).await {
                Ok(tenants) => *known.lock().expect("never poisoned") = Some(tenants),
                Err(e) => tracing::warn!(error = %e, "metrics: could not read Redis"),
            }
            let tenants = known.lock().expect("never poisoned").clone();
            live_tenants_only(&handle.render(), tenants.as_ref())
        })
    }))
}

/// `text` (Prometheus exposition) without the samples whose `tenant` label names no
/// tenant in `tenants` (`*`, a canary for every tenant, stays); with `tenants` unknown,
/// without any sample that has a `tenant` label. Comments and other samples are kept.
pub fn live_tenants_only(text: &str, tenants: Option<&HashSet<String>>) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let keep = line.starts_with('#')
            || match tenant_label(line) {
                None => true,
                Some(t) => t == "*" || tenants.is_some_and(|set| set.contains(t)),
            };
        if keep {
            out.push_str(line);
        }
    }
    out
}

/// The raw (still escaped) value of a sample line's `tenant` label, walking its labels
/// (`name{a="x",tenant="y"} 1`) so a value cannot pose as a label.
fn tenant_label(line: &str) -> Option<&str> {
    let open = line.find('{')?;
    let mut rest = &line[open + 1..];
    loop {
        let (key, after) = rest.split_once("=\"")?;
        let key = key.trim_start_matches(',').trim();
        // The value ends at the first quote that is not escaped.
        let mut end = None;
        let mut escaped = false;
        for (i, c) in after.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => {
                    end = Some(i);
                    break;
                }
                _ => {}
            }
        }
        let end = end?;
        if key == "tenant" {
            return Some(&after[..end]);
        }
        rest = &after[end + 1..];
        if !rest.starts_with(',') {
            return None;
        }
    }
}

/// Sets the gauges read from Redis; returns the tenants that exist.
async fn refresh(pool: &Pool) -> anyhow::Result<HashSet<String>> {
    let start = Instant::now();
    {
        let mut conn = pool.get().await?;
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
    }
    metrics::gauge!("tapedeck_redis_roundtrip_seconds").set(start.elapsed().as_secs_f64());
    // A tenant marked for deletion is gone for metrics already (it refuses logins and
    // uploads); the janitor removing its data changes nothing here.
    let tenants: Vec<String> = tapedeck_store::tenants::list(pool)
        .await?
        .into_iter()
        .filter(|t| !t.deleting)
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
    Ok(tenants.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_of_tenants_that_are_gone_are_left_out() {
        let text = "# TYPE tapedeck_jobs gauge\n\
                    tapedeck_jobs{tenant=\"acme\",state=\"done\"} 3\n\
                    tapedeck_jobs{tenant=\"gone\",state=\"done\"} 1\n\
                    tapedeck_canary_percent{stage=\"converter\",tenant=\"*\",digest=\"d\"} 5\n\
                    tapedeck_plugin_runs_total{stage=\"auth\",tenant=\"x\\\",tenant=\\\"acme\",outcome=\"ok\"} 1\n\
                    tapedeck_http_requests_total{route=\"/v1/jobs\",status=\"200\"} 9\n\
                    tapedeck_redis_roundtrip_seconds 0.001\n";
        let live: HashSet<String> = ["acme".to_owned()].into();
        let kept = live_tenants_only(text, Some(&live));
        assert!(kept.contains("tenant=\"acme\",state"), "{kept}");
        assert!(!kept.contains("\"gone\""), "{kept}");
        assert!(kept.contains("tenant=\"*\""), "{kept}");
        assert!(
            !kept.contains("plugin_runs"),
            "an escaped quote is no label: {kept}"
        );
        assert!(kept.contains("tapedeck_http_requests_total"), "{kept}");
        assert!(kept.contains("# TYPE tapedeck_jobs gauge"), "{kept}");
        assert!(
            kept.ends_with("tapedeck_redis_roundtrip_seconds 0.001\n"),
            "{kept}"
        );
        let blind = live_tenants_only(text, None);
        assert!(!blind.contains("tapedeck_jobs{"), "{blind}");
        assert!(blind.contains("tapedeck_http_requests_total"), "{blind}");
    }
}
