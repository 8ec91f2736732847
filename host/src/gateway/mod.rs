//! The HTTP API: axum routes, token verification, uploads streamed to the blob store,
//! job status, SSE progress, ranged MP3 downloads, and the endpoints of the replaced
//! Python service.
//!
//! Layout: `error` (the `ApiError` every handler returns), `auth` (the `Authenticator`
//! seam and its in-process implementation), `login_guard` (failed-login throttling),
//! `tenants`, `account` (register/login), `jobs` (the `/v1/jobs` resource), `upload`
//! (streaming and sniffing), `compat` (`/login`, `/upload`, `/download`).
//!
//! Contact points: `serve` builds an [`AppState`] and serves [`app`]; the queue and the
//! blob store are reached only through `crate::queue` and `crate::storage`.

pub mod account;
pub mod auth;
pub mod compat;
pub mod error;
pub mod jobs;
pub mod login_guard;
pub mod tenants;
pub mod upload;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequestParts, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::routing::{get, post};
use deadpool_redis::Pool;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

use crate::queue::JobQueue;
use crate::storage::BlobStore;
use auth::{Authenticator, Claims};
use error::ApiError;
use login_guard::LoginGuard;

/// Everything a request handler may use; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// Pooled Redis connections for commands.
    pub pool: Pool,
    /// Opens the dedicated connections SSE subscriptions need.
    pub redis: redis::Client,
    /// Job records and streams.
    pub queue: JobQueue,
    /// Uploads and MP3s.
    pub blobs: BlobStore,
    /// Register, login, verify.
    pub auth: Arc<dyn Authenticator>,
    /// Failed-login throttling.
    pub guard: LoginGuard,
    /// Server-wide upload limit (a tenant's may only be lower).
    pub max_upload_bytes: u64,
    /// Set once the components this process needs are loaded (`/readyz`).
    pub components_ready: Arc<AtomicBool>,
    /// Mount `GET /bench/unauthenticated/jobs/{id}` (benchmarks only, see `config`).
    pub bench_routes: bool,
}

/// The authenticated caller of a request (`Authorization: Bearer <token>`).
pub struct Caller(pub Claims);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .ok_or(ApiError::Unauthorized(
                "invalid_token",
                "missing, invalid or expired token",
            ))?;
        Ok(Caller(state.auth.verify(token).await?))
    }
}

/// The whole HTTP API.
pub fn app(state: AppState) -> Router {
    let v1 = Router::new()
        .route("/auth/register", post(account::register))
        .route("/auth/login", post(account::login))
        .route("/jobs", post(jobs::create).get(jobs::list))
        .route("/jobs/{id}", get(jobs::show).delete(jobs::remove))
        .route("/jobs/{id}/retry", post(jobs::retry))
        .route("/jobs/{id}/events", get(jobs::events))
        .route("/jobs/{id}/output", get(jobs::output))
        .route(
            "/tenant/notifications",
            get(tenants::get_notifications).put(tenants::put_notifications),
        );
    let mut root = Router::new();
    if state.bench_routes {
        // The same lookup as `GET /v1/jobs/{id}` without the token check: what the bench
        // measures authentication against. Never on unless configured.
        root = root.route(
            "/bench/unauthenticated/jobs/{id}",
            get(jobs::show_unauthenticated),
        );
    }
    root.nest("/v1", v1)
        .route("/login", post(compat::login))
        .route("/upload", post(compat::upload))
        .route("/download", get(compat::download))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        // Uploads are limited per tenant while they stream (see `upload`).
        .layer(DefaultBodyLimit::disable())
        .layer(CatchPanicLayer::new())
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Ready when Redis answers, the blob store accepts a write and components are loaded.
async fn readyz(State(state): State<AppState>) -> Result<&'static str, ApiError> {
    let mut conn = state.pool.get().await?;
    let _: String = redis::cmd("PING").query_async(&mut conn).await?;
    state
        .blobs
        .probe()
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    if !state.components_ready.load(Ordering::Acquire) {
        return Err(ApiError::Unavailable(
            "components are not loaded yet".into(),
        ));
    }
    Ok("ready")
}
