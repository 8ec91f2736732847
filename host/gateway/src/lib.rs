//! The HTTP API: axum routes, token verification, uploads streamed to the blob store,
//! job status, SSE progress, ranged MP3 downloads, and the endpoints of the replaced
//! Python service.
//!
//! Layout: [`routes`] (every route with its handler and `#[utoipa::path]`: what is
//! served and what `/openapi.json` describes), `openapi` (the description, `/docs`),
//! `error` (the `ApiError` every handler returns, its `ErrorCode`s), `extract` (JSON, query and
//! fallback answers in that shape; the operator and tenant-admin checks), `health`,
//! `login_guard` (failed-login throttling), `account` (register/login), `sessions`
//! (logout, password change), `jobs` (the `/v1/jobs` resource), `upload` (streaming and
//! sniffing), `compat` (`/login`, `/upload`, `/download`), `events` (one job-events
//! subscription per process for every SSE stream, the per-user stream cap), `listener`
//! (the API's listener: hyper's own 414/431 in the JSON error shape), `tenants`
//! (tenants, their limits and usage), `users` (a tenant's users), `notifications` (a
//! tenant's notification settings), `registry` (publish, activate, roll back, canaries),
//! `ops` (dead letters, outbox, any tenant's jobs), `web`, `metrics`.
//!
//! Contact points: `serve` builds an [`AppState`] and serves [`app`] on a
//! [`listener::ApiListener`]. Redis is reached only through `tapedeck_store` (but for the
//! job-events subscription of `events`, on channels `tapedeck_store::keys` names), blobs
//! through `tapedeck_blobs`, the auth stage through the `Authenticator` seam of
//! `tapedeck_model`; this crate does not link wasmtime.

pub mod account;
pub mod compat;
pub mod error;
pub mod events;
pub mod extract;
pub mod health;
pub mod jobs;
pub mod listener;
pub mod login_guard;
pub mod metrics;
pub mod notifications;
pub mod openapi;
pub mod ops;
pub mod registry;
pub mod sessions;
pub mod tenants;
pub mod upload;
pub mod users;
pub mod web;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::routing::get;
use tapedeck_store::Pool;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

use error::{ApiError, ErrorCode};
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
    pub plugin_check: Arc<dyn tapedeck_model::registry::PluginCheck>,
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
            ErrorCode::InvalidToken,
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
                        ErrorCode::InvalidToken,
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

/// The routes of the API, each handler registered with its `#[utoipa::path]`: the one
/// list both [`app`] and the served description (`openapi`) are built from, so a route
/// cannot be served undocumented or documented unserved. Handlers carry their full path.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .documented(routes!(account::register))
        .documented(routes!(account::login))
        .documented(routes!(sessions::logout))
        .documented(routes!(sessions::logout_all))
        .documented(routes!(sessions::change_password))
        .documented(routes!(jobs::create, jobs::list))
        .documented(routes!(jobs::show, jobs::remove))
        .documented(routes!(jobs::retry))
        .documented(routes!(jobs::events))
        .documented(routes!(jobs::output))
        .documented(routes!(
            notifications::get_notifications,
            notifications::put_notifications
        ))
        .documented(routes!(tenants::own_usage))
        .documented(routes!(registry::tenant_publish_plugin))
        .documented(routes!(registry::tenant_activate_plugin))
        .documented(routes!(users::list_users, users::create_user))
        .documented(routes!(users::update_user, users::remove_user))
        .documented(routes!(tenants::list_tenants, tenants::create_tenant))
        .documented(routes!(
            tenants::show_tenant,
            tenants::update_tenant,
            tenants::delete_tenant
        ))
        .documented(routes!(tenants::get_limits, tenants::patch_limits))
        .documented(routes!(tenants::tenant_usage))
        .documented(routes!(users::operator_create_user))
        .documented(routes!(tenants::all_usage))
        .documented(
            routes!(registry::list_plugins, registry::publish_plugin)
                .layer(DefaultBodyLimit::disable()),
        )
        .documented(routes!(registry::active_plugins))
        .documented(routes!(registry::plugin_history))
        .documented(routes!(registry::rollback_plugin))
        .documented(routes!(registry::list_canaries))
        .documented(routes!(registry::promote_canary))
        .documented(routes!(registry::abort_canary))
        .documented(routes!(registry::start_canary))
        .documented(routes!(ops::tenant_jobs))
        .documented(routes!(ops::tenant_job))
        .documented(routes!(ops::dead_letters))
        .documented(routes!(ops::replay))
        .documented(routes!(ops::outbox))
        .documented(routes!(ops::outbox_message))
        .documented(routes!(registry::activate_plugin))
        .documented(routes!(compat::login))
        .documented(routes!(compat::upload))
        .documented(routes!(compat::download))
        .merge(health::routes())
        .merge(web::routes())
        .merge(openapi::routes())
}

/// [`OpenApiRouter::routes`] refusing a schema name that two different types claim:
/// utoipa-axum keeps the last one silently (two `Ended` types once gave
/// `POST /v1/auth/logout-all` the canary's). The set of types is fixed at compile time, so
/// the unit tests, which build the description, meet any clash first.
trait Documented {
    fn documented(self, routes: UtoipaMethodRouter<AppState>) -> Self;
}

impl Documented for OpenApiRouter<AppState> {
    fn documented(self, routes: UtoipaMethodRouter<AppState>) -> Self {
        if let Some(known) = &self.get_openapi().components {
            for (name, schema) in &routes.0 {
                assert!(
                    known.schemas.get(name).is_none_or(|s| s == schema),
                    "two different types are named {name} in the API description"
                );
            }
        }
        self.routes(routes)
    }
}

/// The whole HTTP API.
pub fn app(state: AppState) -> Router {
    let mut api = routes();
    if state.bench_routes {
        // The same lookup as `GET /v1/jobs/{id}` without the token check: what the bench
        // measures authentication against. Never on unless configured, never documented.
        api = api.route(
            "/bench/unauthenticated/jobs/{id}",
            get(jobs::show_unauthenticated),
        );
    }
    let (router, _) = api.split_for_parts();
    router
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
