//! `/healthz` (the process answers) and `/readyz` (Redis answers, the blob store takes a
//! write, the components this process needs are loaded): served by every role, workers
//! included, on `--listen`, and from the moment the listener is bound — also while the
//! process still waits for Redis at start ([`starting_app`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{FromRef, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tapedeck_store::Pool;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ErrorBody, ErrorCode, ErrorDetail, UNAVAILABLE_RETRY_AFTER};
use crate::extract;
use tapedeck_blobs::BlobStore;

/// What readiness depends on; cheap to clone.
#[derive(Clone)]
pub struct Health {
    pub pool: Pool,
    pub blobs: BlobStore,
    /// Set once the components this process needs are loaded.
    pub components_ready: Arc<AtomicBool>,
}

/// The two routes, for any router state that holds a [`Health`].
pub fn routes<S>() -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
    Health: FromRef<S>,
{
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
}

impl FromRef<crate::AppState> for Health {
    fn from_ref(state: &crate::AppState) -> Self {
        state.health.clone()
    }
}

/// What a worker serves: health only; anything else is a JSON 404 (405 for a wrong method).
pub fn worker_app(health: Health) -> Router {
    Router::from(routes())
        .fallback(extract::no_route)
        .method_not_allowed_fallback(extract::wrong_method)
        .with_state(health)
}

/// What a process serves while it waits for Redis at start: the health routes (`/readyz`
/// names what is missing), and a 503 `unavailable` with `Retry-After` for anything else.
pub fn starting_app(health: Health) -> Router {
    Router::from(routes())
        .fallback(|| async {
            ApiError::Rejected(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Unavailable,
                "the service is starting: Redis is not reachable yet".into(),
            )
        })
        .with_state(health)
}

/// The process answers.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "meta",
    responses((status = 200, description = "`ok`", content_type = "text/plain", body = String)),
)]
pub async fn healthz() -> &'static str {
    "ok"
}

/// One check of `/readyz`, listed in its 503 (`error.checks`).
#[derive(Debug, Serialize, ToSchema)]
pub struct ReadyCheck {
    /// `redis` (answers `PING`), `blobs` (the blob store takes a write) or `components`
    /// (the components this process runs are loaded).
    pub name: &'static str,
    pub ok: bool,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub error: Option<String>,
}

/// How long each check may take: a Redis that accepts connections but does not answer
/// (stopped, overloaded) must not hang the probe.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Redis answers, the blob store takes a write, the components are loaded.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "meta",
    responses(
        (status = 200, description = "`ready`", content_type = "text/plain", body = String),
        (status = 503, description = "`unavailable`: the message names the checks that \
                                      failed, `checks` has each one and why (`Retry-After`)",
         body = ErrorBody, headers(("Retry-After" = u64, description = "Seconds"))),
    ),
)]
pub async fn readyz(State(health): State<Health>) -> Response {
    let redis = async {
        let mut conn = health.pool.get().await.map_err(|e| e.to_string())?;
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map_err(|e| e.to_string())
    };
    let blobs = async { health.blobs.probe().await.map_err(|e| e.to_string()) };
    let (redis, blobs) = tokio::join!(within(redis), within(blobs));
    let components = match health.components_ready.load(Ordering::Acquire) {
        true => Ok(()),
        false => Err("not loaded yet".to_owned()),
    };
    let checks = vec![
        check("redis", redis.map(drop)),
        check("blobs", blobs),
        check("components", components),
    ];
    let failed: Vec<&str> = checks.iter().filter(|c| !c.ok).map(|c| c.name).collect();
    if failed.is_empty() {
        return "ready".into_response();
    }
    let body = ErrorBody {
        error: ErrorDetail {
            code: ErrorCode::Unavailable,
            message: format!("not ready: {}", failed.join(", ")),
            limit: None,
            value: None,
            layer: None,
            checks: Some(checks),
        },
    };
    let mut response = (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    response.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from(UNAVAILABLE_RETRY_AFTER),
    );
    response
}

/// `work`'s outcome, or a timeout after [`CHECK_TIMEOUT`].
async fn within<T>(work: impl Future<Output = Result<T, String>>) -> Result<T, String> {
    tokio::time::timeout(CHECK_TIMEOUT, work)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {CHECK_TIMEOUT:?}")))
}

fn check(name: &'static str, outcome: Result<(), String>) -> ReadyCheck {
    ReadyCheck {
        name,
        ok: outcome.is_ok(),
        error: outcome.err(),
    }
}
