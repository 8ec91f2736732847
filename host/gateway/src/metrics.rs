//! `/metrics` (Prometheus text; `serve` mounts it on the metrics listener of its own,
//! never on the API's) and the HTTP metrics every request records:
//! `tapedeck_http_requests_total{method,route,status}` and
//! `tapedeck_http_request_duration_seconds{method,route}`, by the route's pattern
//! (`/v1/jobs/{id}`), never the raw path, so ids do not become labels.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::future::BoxFuture;

/// Renders the metrics text on demand (refreshing gauges read from Redis first).
pub type MetricsRender = Arc<dyn Fn() -> BoxFuture<'static, String> + Send + Sync>;

/// `GET /metrics`.
pub fn routes<S: Clone + Send + Sync + 'static>(render: MetricsRender) -> Router<S> {
    Router::new().route(
        "/metrics",
        get(move || {
            let render = render.clone();
            async move {
                let mut res = render().await.into_response();
                res.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                res
            }
        }),
    )
}

/// Middleware: counts and times every request by method, route pattern and status.
pub async fn track(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let start = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!(
        "tapedeck_http_requests_total",
        "method" => method.clone(),
        "route" => route.clone(),
        "status" => status
    )
    .increment(1);
    metrics::histogram!(
        "tapedeck_http_request_duration_seconds",
        "method" => method,
        "route" => route
    )
    .record(start.elapsed().as_secs_f64());
    response
}
