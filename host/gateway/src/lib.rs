//! The HTTP API: axum routes, token verification, uploads streamed to the blob store,
//! job status, SSE progress, ranged MP3 downloads, and the endpoints of the replaced
//! Python service.
//!
//! Layout: `error` (the `ApiError` every handler returns), `extract` (JSON, query and
//! fallback answers in that shape), `health`, `login_guard` (failed-login throttling),
//! `tenants`, `account` (register/login), `jobs` (the `/v1/jobs` resource), `upload`
//! (streaming and sniffing), `compat` (`/login`, `/upload`, `/download`), `events` (one
//! job-events subscription per process for every SSE stream, the per-user stream cap),
//! `listener` (the API's listener: hyper's own 414/431 in the JSON error shape).
//!
//! Contact points: `serve` builds an [`AppState`] and serves [`app`] on a
//! [`listener::ApiListener`]. Redis is reached only through `tapedeck_store` (but for the
//! job-events subscription of `events`, on channels `tapedeck_store::keys` names), blobs
//! through `tapedeck_blobs`, the auth stage through the `Authenticator` seam of
//! `tapedeck_model`; this crate does not link wasmtime.

pub mod account;
pub mod admin;
pub mod compat;
pub mod error;
pub mod events;
pub mod extract;
pub mod health;
pub mod jobs;
pub mod listener;
pub mod login_guard;
pub mod metrics;
pub mod openapi;
pub mod ops;
pub mod sessions;
pub mod tenants;
pub mod upload;
pub mod web;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::routing::{get, patch, post};
use tapedeck_store::Pool;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use error::ApiError;
use health::Health;
use login_guard::LoginGuard;
use tapedeck_blobs::BlobStore;
use tapedeck_model::auth::{Authenticator, Claims};
use tapedeck_model::net::IpNet;
use tapedeck_model::stage::Stage;
use tapedeck_store::links::LinkSigner;
use tapedeck_store::queue::JobQueue;

/// Everything a request handler may use; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// Pooled Redis connections for commands.
    pub pool: Pool,
    /// The process's one subscription to job events, fanned out to SSE streams.
    pub events: events::JobEvents,
    /// The per-user cap on open SSE streams.
    pub stream_cap: events::StreamCap,
    /// Job records and streams.
    pub queue: JobQueue,
    /// Uploads and MP3s.
    pub blobs: BlobStore,
    /// Register, login, verify.
    pub auth: Stage<dyn Authenticator>,
    /// Failed-login throttling.
    pub guard: LoginGuard,
    /// Which tokens still have a session.
    pub sessions: sessions::SessionGate,
    /// Server-wide upload limit (a tenant's may only be lower).
    pub max_upload_bytes: u64,
    /// The server defaults of the tenant limits (settings).
    pub tenant_defaults: Arc<tapedeck_model::tenant::TenantLimits>,
    /// What `/healthz` and `/readyz` check.
    pub health: Health,
    /// Mount `GET /bench/unauthenticated/jobs/{id}` (benchmarks only, see `config`).
    pub bench_routes: bool,
    /// Checks the signed download links of notifications.
    pub links: LinkSigner,
    /// Checks components published to the registry.
    pub plugin_check: Arc<dyn tapedeck_model::plugins::PluginCheck>,
    /// Proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Arc<Vec<IpNet>>,
    /// Non-public webhook destinations the operator allows.
    pub webhook_allow: Arc<Vec<IpNet>>,
    /// The outbox mail is written to when no SMTP server is set (`None`: SMTP).
    pub outbox: Option<tapedeck_blobs::Outbox>,
}

/// The authenticated caller of a request (`Authorization: Bearer <token>`).
pub struct Caller(pub Claims);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer_of(parts).ok_or(ApiError::Unauthorized(
            "invalid_token",
            "missing, invalid or expired token",
        ))?;
        if let Some(claims) = state.sessions.cached(token) {
            return Ok(Caller(claims));
        }
        // A tenant may run its own auth component: the token names its tenant, which
        // picks the component that checks it; the verified claims must agree.
        let claims = match claimed_tenant(token) {
            None => state.auth.current().stage.clone().verify(token).await?,
            Some(tenant) => {
                let auth = state.auth.for_tenant(&tenant).stage.clone();
                let claims = auth.verify(token).await?;
                if claims.tenant != tenant {
                    return Err(ApiError::Unauthorized(
                        "invalid_token",
                        "missing, invalid or expired token",
                    ));
                }
                claims
            }
        };
        // A genuine token is not enough: its session must still exist (not logged out,
        // not ended by a role or password change, a removal, or its tenant's deletion).
        state.sessions.check(token, &claims).await?;
        Ok(Caller(claims))
    }
}

/// The `tenant` a JWT's payload names, unverified: only to choose which auth component
/// verifies it. `None` for anything that is not a small JWT with a string `tenant`.
fn claimed_tenant(token: &str) -> Option<String> {
    use base64::Engine;
    let payload = token.split('.').nth(1).filter(|p| p.len() <= 4096)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    value.get("tenant")?.as_str().map(str::to_owned)
}

/// The bearer token of a request, if it has one.
pub(crate) fn bearer_of(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
}

/// The token of an `Authorization: Bearer <token>` value; the scheme is
/// case-insensitive (RFC 9110, 11.1).
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The whole HTTP API.
pub fn app(state: AppState) -> Router {
    let v1 = Router::new()
        .route("/auth/register", post(account::register))
        .route("/auth/login", post(account::login))
        .route("/auth/logout", post(sessions::logout))
        .route("/auth/logout-all", post(sessions::logout_all))
        .route("/auth/password", post(sessions::change_password))
        .route("/jobs", post(jobs::create).get(jobs::list))
        .route("/jobs/{id}", get(jobs::show).delete(jobs::remove))
        .route("/jobs/{id}/retry", post(jobs::retry))
        .route("/jobs/{id}/events", get(jobs::events))
        .route("/jobs/{id}/output", get(jobs::output))
        .route(
            "/tenant/notifications",
            get(tenants::get_notifications).put(tenants::put_notifications),
        )
        .route("/tenant/usage", get(admin::own_usage))
        .route("/tenant/plugins", post(admin::tenant_publish_plugin))
        .route(
            "/tenant/plugins/{digest}/activate",
            post(admin::tenant_activate_plugin),
        )
        .route(
            "/tenant/users",
            get(admin::list_users).post(admin::create_user),
        )
        .route(
            "/tenant/users/{email}",
            patch(admin::update_user).delete(admin::remove_user),
        )
        .route(
            "/admin/tenants",
            get(admin::list_tenants).post(admin::create_tenant),
        )
        .route(
            "/admin/tenants/{tenant}",
            get(admin::show_tenant)
                .patch(admin::update_tenant)
                .delete(admin::delete_tenant),
        )
        .route(
            "/admin/tenants/{tenant}/limits",
            get(admin::get_limits).patch(admin::patch_limits),
        )
        .route("/admin/tenants/{tenant}/usage", get(admin::tenant_usage))
        .route(
            "/admin/tenants/{tenant}/users",
            post(admin::operator_create_user),
        )
        .route("/admin/usage", get(admin::all_usage))
        .route(
            "/admin/plugins",
            get(admin::list_plugins)
                .post(admin::publish_plugin)
                .layer(DefaultBodyLimit::disable()),
        )
        .route("/admin/plugins/active", get(admin::active_plugins))
        .route("/admin/plugins/history", get(admin::plugin_history))
        .route("/admin/plugins/rollback", post(admin::rollback_plugin))
        .route("/admin/plugins/canaries", get(ops::list_canaries))
        .route("/admin/plugins/canary/promote", post(ops::promote_canary))
        .route("/admin/plugins/canary/abort", post(ops::abort_canary))
        .route("/admin/plugins/{digest}/canary", post(ops::start_canary))
        .route("/admin/jobs", get(ops::tenant_jobs))
        .route("/admin/jobs/{tenant}/{id}", get(ops::tenant_job))
        .route("/admin/dead", get(ops::dead_letters))
        .route("/admin/dead/replay", post(ops::replay))
        .route("/admin/outbox", get(ops::outbox))
        .route("/admin/outbox/{name}", get(ops::outbox_message))
        .route(
            "/admin/plugins/{digest}/activate",
            post(admin::activate_plugin),
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
        .merge(health::routes(state.health.clone()))
        .merge(web::routes())
        .merge(openapi::routes())
        .route_layer(axum::middleware::from_fn(metrics::track))
        .fallback(extract::no_route)
        .method_not_allowed_fallback(extract::wrong_method)
        // JSON bodies (credentials, settings) are small. Uploads read the raw body, which
        // this does not limit: `upload` bounds it per tenant while it streams.
        .layer(DefaultBodyLimit::max(extract::MAX_JSON_BYTES))
        .layer(CatchPanicLayer::new())
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        // A request id on every response and in every log line of the request: the
        // client's `x-request-id` if it sent one, else a new UUID.
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .with_state(state)
}

/// The span of one request: method, path and request id, in every line it logs.
fn request_span(request: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    let id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        request_id = %id,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bEaReR  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("Bearerabc"), None);
    }
}
