//! `/healthz` (the process answers) and `/readyz` (Redis answers, the blob store takes a
//! write, the components this process needs are loaded): served by every role, workers
//! included, on `--listen`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use tapedeck_store::Pool;

use crate::error::ApiError;
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

/// The two routes, for any router state.
pub fn routes<S: Clone + Send + Sync + 'static>(health: Health) -> Router<S> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(health)
}

/// What a worker serves: health only; anything else is a JSON 404 (405 for a wrong method).
pub fn worker_app(health: Health) -> Router {
    routes(health)
        .fallback(extract::no_route)
        .method_not_allowed_fallback(extract::wrong_method)
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

/// Redis answers, the blob store takes a write, the components are loaded.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "meta",
    responses(
        (status = 200, description = "`ready`", content_type = "text/plain", body = String),
        (status = 503, description = "`unavailable`", body = crate::error::ErrorBody),
    ),
)]
pub async fn readyz(State(health): State<Health>) -> Result<&'static str, ApiError> {
    let mut conn = health.pool.get().await?;
    let _: String = redis::cmd("PING").query_async(&mut conn).await?;
    health
        .blobs
        .probe()
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    if !health.components_ready.load(Ordering::Acquire) {
        return Err(ApiError::Unavailable(
            "components are not loaded yet".into(),
        ));
    }
    Ok("ready")
}
