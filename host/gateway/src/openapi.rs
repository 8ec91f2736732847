//! The OpenAPI 3.1 description of the HTTP API, generated from the code with utoipa:
//! `GET /openapi.json`, and a docs page that renders it offline, `GET /docs`.
//!
//! Each handler carries its `#[utoipa::path]` (path, parameters, bodies, statuses); the
//! statuses every operation of a kind shares are added here by [`CommonErrors`] (401 for
//! a token, 400/413/415/422 for a JSON body, 400 for a query, 500/503 for what reaches
//! Redis). Types of other crates (`JobRecord`, `TenantLimits`, plugins, canaries, ...)
//! are described by the mirrors below; the tests serialise real values of each and check
//! them against the generated schema, field by field, so a mirror cannot drift silently.
//! The tests also check that the spec lists exactly the routes `app()` serves.

use std::collections::HashMap;
use std::sync::LazyLock;

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use serde::Serialize;
use sha2::Digest;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{
    ContentBuilder, KnownFormat, ObjectBuilder, RefOr, ResponseBuilder, Schema, SchemaFormat, Type,
};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};

use crate::error::{ErrorBody, ErrorDetail};

/// Every `code` of an error body (`{"error": {"code", "message", ...}}`). The tests check
/// the crate's sources use no other.
pub const ERROR_CODES: &[&str] = &[
    // 400
    "bad_body",
    "bad_multipart",
    "invalid_body",
    "invalid_cursor",
    "invalid_input",
    "invalid_json",
    "invalid_options",
    "invalid_plugin",
    "invalid_query",
    "invalid_settings",
    "missing_file",
    "too_many_fields",
    // 401
    "invalid_credentials",
    "invalid_token",
    // 403
    "admin_only",
    "invalid_link",
    "plugins_not_allowed",
    "registration_closed",
    // 404, 405
    "not_found",
    "method_not_allowed",
    // 409
    "already_active",
    "cannot_remove_self",
    "email_taken",
    "last_admin",
    "no_outbox",
    "not_failed",
    "nothing_to_roll_back",
    "not_ready",
    "tenant_deleting",
    "tenant_exists",
    // 413
    "payload_too_large",
    "field_too_large",
    // 403, 413, 429
    "limit_exceeded",
    // 414, 431 (hyper's own answers, given this shape by `listener`)
    "uri_too_long",
    "headers_too_large",
    // 415, 416, 429
    "unsupported_media_type",
    "range_not_satisfiable",
    "too_many_attempts",
    // 500, 503
    "internal",
    "unavailable",
    "checks_busy",
];

/// The `code` of an error body: one of [`ERROR_CODES`].
pub struct ErrorCode;

impl PartialSchema for ErrorCode {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(ERROR_CODES.iter().copied()))
            .description(Some(
                "What went wrong, for programs; `message` says it for people.",
            ))
            .into()
    }
}

impl ToSchema for ErrorCode {}

/// The body of a file (an MP3, a WebAssembly component, a media upload).
pub struct Binary;

impl PartialSchema for Binary {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
            .into()
    }
}

impl ToSchema for Binary {}

// ---- Mirrors of other crates' types (schema only; see the module's comment). ----------

/// Where a job is in the pipeline (`expired`: finished, then its files were removed by
/// the tenant's retention).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Queued,
    Converting,
    Done,
    Failed,
    Expired,
}

/// The uploaded file.
#[derive(Serialize, ToSchema)]
pub struct JobInput {
    /// File name the client gave.
    pub name: String,
    /// Size in bytes.
    pub bytes: u64,
}

/// The MP3, once stored.
#[derive(Serialize, ToSchema)]
pub struct JobOutput {
    pub bytes: u64,
    pub duration_ms: u64,
    /// The bitrate produced, kbit/s (absent on records from before it was kept).
    #[schema(nullable = false)]
    pub bitrate_kbps: Option<u16>,
}

/// MP3 encoding options chosen at upload.
#[derive(Serialize, ToSchema)]
pub struct JobOptions {
    /// Constant bitrate, kbit/s.
    #[schema(nullable = false)]
    pub bitrate: Option<u16>,
    /// LAME VBR quality 0 (best) ..= 9.
    #[schema(nullable = false)]
    pub vbr: Option<u8>,
    /// Output sample rate, Hz.
    #[schema(nullable = false)]
    pub sample_rate: Option<u32>,
    pub mono: bool,
}

/// One conversion job.
#[derive(Serialize, ToSchema)]
pub struct JobRecord {
    pub id: String,
    pub status: JobStatus,
    /// 0..=1.
    pub progress: f32,
    /// Why the job failed (or why the last attempt failed while it is retried).
    #[schema(required = true)]
    pub error: Option<String>,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds, once finished.
    #[schema(required = true)]
    pub finished_at: Option<u64>,
    pub input: JobInput,
    #[schema(required = true)]
    pub output: Option<JobOutput>,
    pub options: JobOptions,
    /// Conversion attempts started so far.
    pub attempts: u32,
    /// Digests of the converter components that ran its attempts (absent when none did).
    #[schema(required = false)]
    pub converters: Vec<String>,
}

/// A freshly issued token.
#[derive(Serialize, ToSchema)]
pub struct IssuedToken {
    /// A JWT: `Authorization: Bearer <token>`.
    pub token: String,
    /// Unix seconds.
    pub expires_at: u64,
}

/// Caps of a tenant (or the server's defaults); an absent limit is not limited at this
/// layer. See the README's "Tenants and limits".
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantLimits {
    #[schema(nullable = false, minimum = 1)]
    pub max_upload_bytes: Option<u64>,
    #[schema(nullable = false, minimum = 1)]
    pub jobs_per_minute: Option<u64>,
    #[schema(nullable = false, minimum = 1)]
    pub max_queued: Option<u64>,
    #[schema(nullable = false, minimum = 1)]
    pub max_running: Option<u64>,
    #[schema(nullable = false, minimum = 1)]
    pub quota_bytes: Option<u64>,
    #[schema(nullable = false, minimum = 1)]
    pub retention_days: Option<u64>,
    #[schema(nullable = false, minimum = 1)]
    pub max_memory_mib: Option<u64>,
    #[schema(nullable = false, minimum = 1)]
    pub cpu_per_audio_minute: Option<u64>,
    #[schema(nullable = false, minimum = 1)]
    pub max_output_mib: Option<u64>,
    #[schema(nullable = false, minimum = 1)]
    pub max_input_minutes: Option<u64>,
    #[schema(nullable = false, minimum = 1)]
    pub cpu_seconds_per_hour: Option<u64>,
    #[schema(nullable = false, minimum = 1)]
    pub notifications_per_hour: Option<u64>,
    /// 1..=1000; per tenant only.
    #[schema(nullable = false, minimum = 1, maximum = 1000)]
    pub weight: Option<u64>,
}

/// `PATCH /v1/admin/tenants/{t}/limits`: the limits to set; `null` clears one.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsPatch {
    #[schema(minimum = 1)]
    pub max_upload_bytes: Option<u64>,
    #[schema(minimum = 1)]
    pub jobs_per_minute: Option<u64>,
    #[schema(minimum = 1)]
    pub max_queued: Option<u64>,
    #[schema(minimum = 1)]
    pub max_running: Option<u64>,
    #[schema(minimum = 1)]
    pub quota_bytes: Option<u64>,
    #[schema(minimum = 1)]
    pub retention_days: Option<u64>,
    #[schema(minimum = 1)]
    pub max_memory_mib: Option<u64>,
    #[schema(minimum = 1)]
    pub cpu_per_audio_minute: Option<u64>,
    #[schema(minimum = 1)]
    pub max_output_mib: Option<u64>,
    #[schema(minimum = 1)]
    pub max_input_minutes: Option<u64>,
    #[schema(minimum = 1)]
    pub cpu_seconds_per_hour: Option<u64>,
    #[schema(minimum = 1)]
    pub notifications_per_hour: Option<u64>,
    #[schema(minimum = 1, maximum = 1000)]
    pub weight: Option<u64>,
}

/// A tenant's notification settings (the webhook secret is never shown).
#[derive(Serialize, ToSchema)]
pub struct TenantNotifySettings {
    /// Job owners get an e-mail.
    pub email: bool,
    /// The webhook gets a request.
    pub webhook: bool,
    #[schema(required = true)]
    pub webhook_url: Option<String>,
    pub webhook_secret_set: bool,
    /// Messages per hour; `null`: the server default.
    #[schema(required = true)]
    pub max_per_hour: Option<u32>,
}

/// A change of notification settings; absent fields stay as they are, unknown ones are
/// refused (400 `invalid_settings`).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsUpdate {
    #[schema(nullable = false)]
    pub email: Option<bool>,
    #[schema(nullable = false)]
    pub webhook: Option<bool>,
    /// `""` removes the URL.
    #[schema(nullable = false)]
    pub webhook_url: Option<String>,
    /// At least 16 characters.
    #[schema(nullable = false)]
    pub webhook_secret: Option<String>,
    #[schema(nullable = false)]
    pub max_per_hour: Option<u32>,
}

/// Jobs of a tenant by state.
#[derive(Serialize, ToSchema)]
pub struct JobCounts {
    pub queued: u64,
    pub converting: u64,
    pub done: u64,
    pub failed: u64,
    pub expired: u64,
}

/// A tenant's activity in one hour or day.
#[derive(Serialize, ToSchema)]
pub struct Period {
    /// Its start, unix seconds.
    pub start: u64,
    pub jobs: u64,
    pub done: u64,
    pub failed: u64,
    pub cpu_seconds: f64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// A tenant's usage.
#[derive(Serialize, ToSchema)]
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

/// A published component.
#[derive(Serialize, ToSchema)]
pub struct Plugin {
    /// SHA-256 of the component, hex.
    pub digest: String,
    pub stage: String,
    pub bytes: u64,
    /// Unix seconds.
    pub published_at: u64,
    pub compile_ms: u64,
    /// The tenant that may run it (absent: the operator's).
    #[schema(nullable = false)]
    pub owner: Option<String>,
    /// `operator`, or the tenant admin's `{tenant}/{email}`.
    pub by: String,
    /// The WIT world version it implements.
    pub world: String,
    /// The smoke run at publish.
    pub smoke: String,
    pub smoke_ms: u64,
}

/// Which digest runs a stage for everyone (`tenant` null) or one tenant; `digest` null:
/// the component the process started with.
#[derive(Serialize, ToSchema)]
pub struct Active {
    pub stage: String,
    #[schema(required = true)]
    pub tenant: Option<String>,
    #[schema(required = true)]
    pub digest: Option<String>,
}

/// One change in the plugin registry.
#[derive(Serialize, ToSchema)]
pub struct Change {
    /// Unix seconds.
    pub at: u64,
    pub action: String,
    pub stage: String,
    #[schema(required = true)]
    pub tenant: Option<String>,
    #[schema(required = true)]
    pub digest: Option<String>,
    #[schema(nullable = false)]
    pub reason: Option<String>,
}

/// A process's applied registry version.
#[derive(Serialize, ToSchema)]
pub struct Applied {
    pub process: String,
    /// The version it runs: every component of it compiled and installed.
    pub version: u64,
    /// The version it has heard of (jobs of scopes whose components still compile wait).
    pub heard: u64,
    /// Milliseconds compiling the components new in the last version took.
    pub compile_ms: u64,
    /// When it last reported, unix ms.
    pub seen_ms: u64,
}

/// What keeps a job on the same side of a canary.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Sticky {
    Tenant,
    User,
    Job,
}

/// Where a canary's analysis is.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CanaryState {
    Collecting,
    Analysing,
}

/// One arm of a canary over its window.
#[derive(Serialize, ToSchema)]
pub struct ArmStats {
    pub jobs: u32,
    pub failures: u32,
    pub invalid: u32,
    /// p95 run time of the successful runs, ms.
    pub p95_ms: u64,
}

/// A running canary: its settings and its analysis so far.
#[derive(Serialize, ToSchema)]
pub struct CanaryStatus {
    pub stage: String,
    #[schema(required = true)]
    pub tenant: Option<String>,
    pub digest: String,
    pub percent: f64,
    pub sticky: Sticky,
    /// Unix seconds.
    pub started_at: u64,
    pub min_jobs: u32,
    pub window: u32,
    pub max_failure_delta: f64,
    pub max_invalid_delta: f64,
    pub max_p95_ratio: f64,
    pub p95_slack_ms: u64,
    #[schema(required = true)]
    pub promote_after: Option<u32>,
    pub state: CanaryState,
    pub canary: ArmStats,
    pub stable: ArmStats,
    /// Outcomes since the start, by `{arm}:{result}`.
    pub totals: HashMap<String, u64>,
}

/// A conversion that failed for good.
#[derive(Serialize, ToSchema)]
pub struct DeadLetter {
    /// The stream entry's id.
    pub id: String,
    pub tenant: String,
    pub job_id: String,
    pub reason: String,
    pub attempts: u32,
    /// Unix seconds.
    pub at: u64,
}

// ---- The document. ---------------------------------------------------------------------

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tapedeck",
        description = "Converts MP4/M4A/MOV audio to MP3. User routes take a user's token \
                       (`bearer`, from `POST /v1/auth/login`); `/v1/tenant/...` routes a \
                       tenant admin's; `/v1/admin/...` routes the operator token \
                       (`operator`). Every error is `{\"error\": {\"code\", \"message\"}}`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        crate::account::register,
        crate::account::login,
        crate::sessions::logout,
        crate::sessions::logout_all,
        crate::sessions::change_password,
        crate::jobs::create,
        crate::jobs::list,
        crate::jobs::show,
        crate::jobs::remove,
        crate::jobs::retry,
        crate::jobs::events,
        crate::jobs::output,
        crate::tenants::get_notifications,
        crate::tenants::put_notifications,
        crate::admin::own_usage,
        crate::admin::tenant_publish_plugin,
        crate::admin::tenant_activate_plugin,
        crate::admin::list_users,
        crate::admin::create_user,
        crate::admin::update_user,
        crate::admin::remove_user,
        crate::admin::list_tenants,
        crate::admin::create_tenant,
        crate::admin::show_tenant,
        crate::admin::update_tenant,
        crate::admin::delete_tenant,
        crate::admin::get_limits,
        crate::admin::patch_limits,
        crate::admin::tenant_usage,
        crate::admin::operator_create_user,
        crate::admin::all_usage,
        crate::admin::list_plugins,
        crate::admin::publish_plugin,
        crate::admin::active_plugins,
        crate::admin::plugin_history,
        crate::admin::rollback_plugin,
        crate::admin::activate_plugin,
        crate::ops::list_canaries,
        crate::ops::promote_canary,
        crate::ops::abort_canary,
        crate::ops::start_canary,
        crate::ops::tenant_jobs,
        crate::ops::tenant_job,
        crate::ops::dead_letters,
        crate::ops::replay,
        crate::ops::outbox,
        crate::ops::outbox_message,
        crate::compat::login,
        crate::compat::upload,
        crate::compat::download,
        crate::health::healthz,
        crate::health::readyz,
        spec,
        docs,
        web_page,
        web_asset,
    ),
    components(schemas(ErrorBody, ErrorDetail, ErrorCode, crate::health::ReadyCheck)),
    modifiers(&SecuritySchemes, &CommonErrors),
    tags(
        (name = "auth", description = "Accounts and tokens"),
        (name = "jobs", description = "Conversions"),
        (name = "tenant", description = "A tenant admin's settings, users, usage, plugins"),
        (name = "operator", description = "The operator API (docs/admin-api.md)"),
        (name = "compat", description = "Routes of the replaced Python service"),
        (name = "meta", description = "Health, this description, the web page"),
    ),
)]
pub struct ApiDoc;

/// `bearer` (a user's JWT), `operator` (the operator token), `basic` (compat `/login`).
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut bearer = Http::new(HttpAuthScheme::Bearer);
        bearer.bearer_format = Some("JWT".into());
        bearer.description = Some("A user's token, from `POST /v1/auth/login`.".into());
        components.add_security_scheme("bearer", SecurityScheme::Http(bearer));
        let mut operator = Http::new(HttpAuthScheme::Bearer);
        operator.description = Some(
            "The operator token (`--admin-token`, or the `tdop_...` printed on the first \
             start)."
                .into(),
        );
        components.add_security_scheme("operator", SecurityScheme::Http(operator));
        let mut basic = Http::new(HttpAuthScheme::Basic);
        basic.description = Some("E-mail and password (compat `POST /login`).".into());
        components.add_security_scheme("basic", SecurityScheme::Http(basic));
    }
}

/// Adds the error answers operations share, from what each operation is: 401 when it
/// takes a token, 400/413/415/422 for a JSON body, 400 for query parameters, 500/503
/// when it reaches Redis (every `/v1` and compat route). An operation's own answer for a
/// status wins.
struct CommonErrors;

fn error_response(description: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                    "ErrorBody",
                ))))
                .build(),
        )
        .build()
}

impl Modify for CommonErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            let reaches_redis = path.starts_with("/v1/")
                || matches!(path.as_str(), "/login" | "/upload" | "/download");
            for op in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                add_common_errors(op, reaches_redis);
            }
        }
    }
}

fn add_common_errors(op: &mut Operation, reaches_redis: bool) {
    let mut add = |status: &str, description: &str| {
        op.responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| RefOr::T(error_response(description)));
    };
    let takes_token = op.security.as_ref().is_some_and(|s| {
        s.iter().any(|r| {
            serde_json::to_value(r).is_ok_and(|v| v.as_object().is_some_and(|o| !o.is_empty()))
        })
    });
    if takes_token {
        add(
            "401",
            "`invalid_token`: missing, invalid or expired token (`WWW-Authenticate: Bearer`)",
        );
    }
    let json_body = op
        .request_body
        .as_ref()
        .is_some_and(|b| b.content.contains_key("application/json"));
    let query = op.parameters.as_ref().is_some_and(|ps| {
        ps.iter()
            .any(|p| matches!(p.parameter_in, ParameterIn::Query))
    });
    if json_body {
        add(
            "400",
            "`invalid_json` (not JSON), `invalid_input` and others (see `code`)",
        );
        add("413", "`field_too_large`: a JSON body over 16 KiB");
        add(
            "415",
            "`unsupported_media_type`: not `Content-Type: application/json`",
        );
        add(
            "422",
            "`invalid_body`: JSON of the wrong shape (a missing or unknown field, a wrong type)",
        );
    }
    if query {
        add(
            "400",
            "`invalid_query`: a query parameter of the wrong type",
        );
    }
    if reaches_redis {
        add("500", "`internal`: a bug; the cause is logged");
        op.responses
            .responses
            .entry("503".to_owned())
            .or_insert_with(|| {
                let mut response = error_response(
                    "`unavailable`: Redis or the blob store did not answer (`Retry-After`)",
                );
                response.headers.insert("Retry-After".into(), retry_after());
                RefOr::T(response)
            });
    }
}

/// The `Retry-After` header of a 503 (every 503 carries one).
fn retry_after() -> utoipa::openapi::Header {
    utoipa::openapi::HeaderBuilder::new()
        .schema(u64::schema())
        .description(Some("Seconds"))
        .build()
}

/// The description, serialised once.
pub static SPEC_JSON: LazyLock<String> = LazyLock::new(|| {
    ApiDoc::openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serialises")
});

/// This description.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 description of this API",
               content_type = "application/json", body = Object)),
)]
pub async fn spec() -> Response {
    let mut res = (StatusCode::OK, SPEC_JSON.as_str()).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

const DOCS_SCRIPT: &str = r#"'use strict';
(async () => {
  const main = document.getElementById('docs');
  const el = (tag, props, ...kids) => {
    const e = document.createElement(tag);
    Object.assign(e, props || {});
    for (const k of kids) e.append(k);
    return e;
  };
  const code = (t) => el('code', { textContent: t });
  let spec;
  try {
    const res = await fetch('/openapi.json');
    spec = await res.json();
  } catch (e) {
    main.replaceChildren(el('h1', { textContent: 'Tapedeck API' }),
      el('p', { textContent: 'Could not load /openapi.json: ' + e }));
    return;
  }
  const refName = (r) => r.split('/').pop();
  const schemaText = (s) => {
    if (!s) return '';
    if (s.$ref) return refName(s.$ref);
    if (s.type === 'array' && s.items) return schemaText(s.items) + '[]';
    if (s.oneOf) return s.oneOf.map(schemaText).join(' | ');
    if (Array.isArray(s.type)) return s.type.join(' | ');
    return (s.type || 'object') + (s.format ? ' (' + s.format + ')' : '');
  };
  const table = (head, rows) => {
    const t = el('table', {}, el('tr', {}, ...head.map((h) => el('th', { textContent: h }))));
    for (const r of rows) t.append(el('tr', {}, ...r.map((c) => el('td', {}, c))));
    return t;
  };
  const info = spec.info || {};
  const out = [el('h1', { textContent: (info.title || 'API') + ' ' + (info.version || '') }),
    el('p', { textContent: info.description || '' }),
    el('p', {}, 'OpenAPI ' + spec.openapi + ': ', el('a', { href: '/openapi.json', textContent: '/openapi.json' }))];
  const byTag = new Map();
  for (const [path, item] of Object.entries(spec.paths || {})) {
    for (const method of ['get', 'put', 'post', 'patch', 'delete']) {
      const op = item[method];
      if (!op) continue;
      const tag = (op.tags && op.tags[0]) || 'other';
      if (!byTag.has(tag)) byTag.set(tag, []);
      byTag.get(tag).push([method, path, op]);
    }
  }
  const tagDesc = new Map((spec.tags || []).map((t) => [t.name, t.description || '']));
  for (const [tag, ops] of byTag) {
    out.push(el('h2', { textContent: tag }), el('p', { className: 's', textContent: tagDesc.get(tag) || '' }));
    for (const [method, path, op] of ops) {
      const sec = (op.security || []).map((r) => Object.keys(r)[0] || 'none').join(' or ');
      const summary = el('summary', {}, el('span', { className: 'm ' + method, textContent: method.toUpperCase() }),
        path + ' ', el('span', { className: 's', textContent: op.summary || '' }),
        sec ? el('span', { className: 'lock', textContent: ' [' + sec + ']' }) : '');
      const body = el('div', { className: 'b' });
      if (op.description) body.append(el('p', { textContent: op.description }));
      if (op.parameters && op.parameters.length) {
        body.append(el('h4', { textContent: 'Parameters' }), table(['name', 'in', 'type', 'required', 'description'],
          op.parameters.map((p) => [code(p.name), p.in, schemaText(p.schema), p.required ? 'yes' : '', p.description || ''])));
      }
      if (op.requestBody) {
        body.append(el('h4', { textContent: 'Request body' }), table(['content type', 'schema'],
          Object.entries(op.requestBody.content || {}).map(([ct, c]) => [code(ct), schemaText(c.schema)])));
      }
      body.append(el('h4', { textContent: 'Responses' }), table(['status', 'description', 'content'],
        Object.entries(op.responses || {}).map(([st, r]) => [code(st), r.description || '',
          Object.entries(r.content || {}).map(([ct, c]) => ct + ': ' + schemaText(c.schema)).join('; ')])));
      out.push(el('details', {}, summary, body));
    }
  }
  const schemas = (spec.components && spec.components.schemas) || {};
  out.push(el('h2', { textContent: 'Schemas' }));
  for (const [name, s] of Object.entries(schemas)) {
    out.push(el('details', {}, el('summary', { textContent: name }),
      el('div', { className: 'b' }, el('pre', { textContent: JSON.stringify(s, null, 2) }))));
  }
  main.replaceChildren(...out);
})();
"#;

static DOCS_HTML: LazyLock<String> = LazyLock::new(|| {
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>Tapedeck API</title>\n<style>{}</style>\n</head>\n<body>\n\
         <main id=\"docs\"><h1>Tapedeck API</h1><p>Loading <a href=\"/openapi.json\">\
         /openapi.json</a>…</p></main>\n<script>{}</script>\n</body>\n</html>\n",
        DOCS_STYLE, DOCS_SCRIPT
    )
});

const DOCS_STYLE: &str = "body{font:15px/1.45 system-ui,sans-serif;margin:0;color:#1b1b1b;\
background:#fafafa}main{max-width:62rem;margin:0 auto;padding:1rem 1.5rem 4rem}\
h1{margin:.5rem 0}h2{margin-top:2rem;border-bottom:1px solid #ccc}\
details{background:#fff;border:1px solid #ddd;border-radius:4px;margin:.4rem 0}\
summary{cursor:pointer;padding:.45rem .6rem;font-family:ui-monospace,monospace}\
.m{display:inline-block;min-width:4.2rem;font-weight:700}.get{color:#0a5}.post{color:#05a}\
.put{color:#a60}.patch{color:#960}.delete{color:#b22}.s{color:#555;font-family:system-ui,sans-serif}\
.b{padding:0 .8rem .6rem}table{border-collapse:collapse;margin:.3rem 0}\
td,th{border:1px solid #ddd;padding:.2rem .45rem;text-align:left;vertical-align:top}\
code,pre{font-family:ui-monospace,monospace;font-size:13px}pre{background:#f3f3f3;\
padding:.5rem;overflow:auto;max-height:24rem}.lock{color:#a60}";

/// The Content-Security-Policy of `/docs`: only its own inline script (by hash) and style,
/// and fetches of this origin.
static DOCS_CSP: LazyLock<String> = LazyLock::new(|| {
    let hash = |s: &str| base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(s));
    format!(
        "default-src 'none'; script-src 'sha256-{}'; style-src 'sha256-{}'; \
         connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        hash(DOCS_SCRIPT),
        hash(DOCS_STYLE)
    )
});

/// A page listing the operations of `/openapi.json` (self-contained: no CDN).
#[utoipa::path(
    get,
    path = "/docs",
    tag = "meta",
    responses((status = 200, description = "The API's operations, readable",
               content_type = "text/html", body = String)),
)]
pub async fn docs() -> Response {
    let mut res = (StatusCode::OK, DOCS_HTML.as_str()).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    if let Ok(csp) = HeaderValue::from_str(&DOCS_CSP) {
        h.insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    res
}

/// The web page (`web.rs`).
#[utoipa::path(
    get,
    path = "/",
    tag = "meta",
    responses((status = 200, description = "The web page", content_type = "text/html",
               body = String)),
)]
#[allow(dead_code)]
fn web_page() {}

/// The web page's script and style (`app.js`, `app.css`).
#[utoipa::path(
    get,
    path = "/assets/{file}",
    tag = "meta",
    params(("file" = String, Path, description = "`app.js` or `app.css`")),
    responses(
        (status = 200, description = "The file", content((String = "text/javascript"),
                                                         (String = "text/css"))),
        (status = 404, description = "`not_found`: no such file", body = ErrorBody),
    ),
)]
#[allow(dead_code)]
fn web_asset() {}

/// `GET /openapi.json` and `GET /docs`.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/openapi.json", get(spec))
        .route("/docs", get(docs))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::{Value, json};

    use super::*;

    fn spec() -> Value {
        serde_json::from_str(&SPEC_JSON).expect("the spec is JSON")
    }

    // ---- A strict validator for the schemas utoipa writes. ------------------------------

    /// Checks `value` against `schema` (resolving `$ref`s in `spec`). Strict: an object
    /// property the schema does not name is an error (unless `additionalProperties` gives
    /// a schema). With `complete`, every property the schema names must be present too:
    /// for values with every optional field set, so a mirror missing or adding a field
    /// both show.
    fn check(spec: &Value, schema: &Value, value: &Value, at: &str, complete: bool) -> Vec<String> {
        let mut errors = Vec::new();
        if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
            let name = r.rsplit('/').next().unwrap_or("");
            let target = &spec["components"]["schemas"][name];
            if target.is_null() {
                return vec![format!("{at}: unresolved {r}")];
            }
            return check(spec, target, value, at, complete);
        }
        if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
            for s in all {
                errors.extend(check(spec, s, value, at, complete));
            }
        }
        for key in ["oneOf", "anyOf"] {
            if let Some(any) = schema.get(key).and_then(Value::as_array) {
                let passing = any
                    .iter()
                    .filter(|s| check(spec, s, value, at, complete).is_empty())
                    .count();
                if passing == 0 || (key == "oneOf" && passing > 1) {
                    errors.push(format!(
                        "{at}: {passing} of the {key} schemas match {value}"
                    ));
                }
            }
        }
        if let Some(t) = schema.get("type") {
            let types: Vec<&str> = match t {
                Value::String(s) => vec![s.as_str()],
                Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
                _ => vec![],
            };
            let ok = types.iter().any(|t| match *t {
                "null" => value.is_null(),
                "boolean" => value.is_boolean(),
                "string" => value.is_string(),
                "integer" => value.is_u64() || value.is_i64(),
                "number" => value.is_number(),
                "array" => value.is_array(),
                "object" => value.is_object(),
                _ => false,
            });
            if !ok {
                errors.push(format!("{at}: {value} is not of type {t}"));
                return errors;
            }
        }
        if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
            && !allowed.contains(value)
        {
            errors.push(format!("{at}: {value} is not one of {allowed:?}"));
        }
        if let (Some(min), Some(v)) = (
            schema.get("minimum").and_then(Value::as_f64),
            value.as_f64(),
        ) && v < min
        {
            errors.push(format!("{at}: {v} < minimum {min}"));
        }
        if let (Some(max), Some(v)) = (
            schema.get("maximum").and_then(Value::as_f64),
            value.as_f64(),
        ) && v > max
        {
            errors.push(format!("{at}: {v} > maximum {max}"));
        }
        if let Some(object) = value.as_object() {
            let empty = serde_json::Map::new();
            let props = schema
                .get("properties")
                .and_then(Value::as_object)
                .unwrap_or(&empty);
            for name in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if !object.contains_key(name) {
                    errors.push(format!("{at}: required `{name}` is missing"));
                }
            }
            if complete
                && schema
                    .get("additionalProperties")
                    .is_none_or(|a| !a.is_object())
            {
                for name in props.keys() {
                    if !object.contains_key(name) {
                        errors.push(format!("{at}: `{name}` of the schema is not in the value"));
                    }
                }
            }
            for (name, v) in object {
                let here = format!("{at}.{name}");
                match (props.get(name), schema.get("additionalProperties")) {
                    (Some(s), _) => errors.extend(check(spec, s, v, &here, complete)),
                    (None, Some(extra)) if extra.is_object() => {
                        errors.extend(check(spec, extra, v, &here, complete))
                    }
                    (None, _) if schema.get("allOf").is_none() && schema.get("oneOf").is_none() => {
                        errors.push(format!("{here}: not in the schema"))
                    }
                    _ => {}
                }
            }
        }
        if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
            for (i, v) in array.iter().enumerate() {
                errors.extend(check(spec, items, v, &format!("{at}[{i}]"), complete));
            }
        }
        errors
    }

    /// Checks a serialised value against the named component schema.
    fn conforms(name: &str, value: &impl Serialize, complete: bool) {
        let spec = spec();
        let schema = json!({ "$ref": format!("#/components/schemas/{name}") });
        let value = serde_json::to_value(value).expect("serialises");
        let errors = check(&spec, &schema, &value, name, complete);
        assert!(
            errors.is_empty(),
            "{name} does not match its schema:\n{}\nvalue: {value:#}",
            errors.join("\n")
        );
    }

    #[test]
    fn the_validator_catches_drift() {
        let spec = spec();
        let schema = json!({"$ref": "#/components/schemas/Applied"});
        let good = json!({"process": "p", "version": 1, "heard": 1, "compile_ms": 0, "seen_ms": 2});
        assert!(check(&spec, &schema, &good, "", true).is_empty());
        let extra = json!({"process": "p", "version": 1, "heard": 1, "compile_ms": 0,
                           "seen_ms": 2, "new": 1});
        assert!(!check(&spec, &schema, &extra, "", false).is_empty());
        let missing = json!({"process": "p", "version": 1, "heard": 1, "compile_ms": 0});
        assert!(!check(&spec, &schema, &missing, "", false).is_empty());
        let wrong =
            json!({"process": "p", "version": "1", "heard": 1, "compile_ms": 0, "seen_ms": 2});
        assert!(!check(&spec, &schema, &wrong, "", false).is_empty());
    }

    // ---- Mirrors against real values. ---------------------------------------------------

    fn full_limits() -> tapedeck_model::tenant::TenantLimits {
        let mut limits = tapedeck_model::tenant::TenantLimits::default();
        for name in tapedeck_model::tenant::LIMIT_NAMES {
            assert!(limits.set(name, Some(7)));
        }
        limits
    }

    fn full_job() -> tapedeck_model::job::JobRecord {
        use tapedeck_model::job::{JobInput, JobOptions, JobOutput, JobRecord, JobStatus};
        let mut job = JobRecord::queued(
            "abc",
            "default",
            ("u1", "ann@example.com"),
            JobInput {
                name: "a.m4a".into(),
                bytes: 10,
                key: "in/default/abc".into(),
            },
            JobOptions {
                bitrate: Some(128),
                vbr: Some(2),
                sample_rate: Some(44100),
                mono: true,
            },
        );
        job.status = JobStatus::Done;
        job.error = Some("an earlier attempt failed".into());
        job.finished_at = Some(2);
        job.output = Some(JobOutput {
            bytes: 5,
            duration_ms: 1000,
            bitrate_kbps: Some(128),
            key: "out/default/abc".into(),
        });
        job.converters = vec!["d1".into()];
        job
    }

    #[test]
    fn job_mirrors_match_real_jobs() {
        use tapedeck_model::job::{JobInput, JobOptions, JobRecord, JobStatus};
        conforms("JobRecord", &full_job(), true);
        let fresh = JobRecord::queued(
            "abc",
            "default",
            ("u1", "ann@example.com"),
            JobInput {
                name: "a.m4a".into(),
                bytes: 10,
                key: "k".into(),
            },
            JobOptions::default(),
        );
        conforms("JobRecord", &fresh, false);
        for status in [
            JobStatus::Queued,
            JobStatus::Converting,
            JobStatus::Done,
            JobStatus::Failed,
            JobStatus::Expired,
        ] {
            conforms("JobStatus", &status, true);
        }
        conforms(
            "JobPage",
            &crate::jobs::JobPage {
                jobs: vec![full_job()],
                next_cursor: Some("c".into()),
            },
            true,
        );
        conforms(
            "JobPage",
            &crate::jobs::JobPage {
                jobs: vec![fresh],
                next_cursor: None,
            },
            false,
        );
    }

    #[test]
    fn tenant_mirrors_match_real_values() {
        let limits = full_limits();
        conforms("TenantLimits", &limits, true);
        conforms(
            "TenantLimits",
            &tapedeck_model::tenant::TenantLimits::default(),
            false,
        );
        // The mirror's fields are the limits (the patch too), and the real type takes them.
        let spec = spec();
        let names: BTreeSet<&str> = tapedeck_model::tenant::LIMIT_NAMES
            .iter()
            .copied()
            .collect();
        for schema in ["TenantLimits", "LimitsPatch"] {
            let props: BTreeSet<&str> = spec["components"]["schemas"][schema]["properties"]
                .as_object()
                .expect("properties")
                .keys()
                .map(String::as_str)
                .collect();
            assert_eq!(props, names, "{schema}");
        }
        let tenant = tapedeck_store::tenants::Tenant {
            name: "acme".into(),
            self_register: true,
            allow_plugins: false,
            limits: limits.clone(),
            deleting: true,
        };
        conforms(
            "TenantEnvelope",
            &crate::admin::TenantEnvelope {
                tenant: crate::admin::TenantView::of(&tenant, &limits),
            },
            true,
        );
        let settings = tapedeck_store::notify_settings::TenantNotifySettings {
            email: true,
            webhook: true,
            webhook_url: Some("https://example.com/hook".into()),
            webhook_secret: Some("secret".into()),
            webhook_secret_set: true,
            max_per_hour: Some(10),
        };
        conforms("TenantNotifySettings", &settings, true);
        conforms(
            "TenantNotifySettings",
            &tapedeck_store::notify_settings::TenantNotifySettings::default(),
            false,
        );
        conforms(
            "Notifications",
            &crate::tenants::Notifications {
                settings,
                webhook_secret: Some("generated".into()),
            },
            true,
        );
        // Every field of the request mirror is one the real update takes.
        let update: tapedeck_store::notify_settings::SettingsUpdate = serde_json::from_value(
            json!({"email": true, "webhook": true, "webhook_url": "https://example.com",
                   "webhook_secret": "0123456789abcdef", "max_per_hour": 3}),
        )
        .expect("a full update parses");
        assert_eq!(update.max_per_hour, Some(3));
        let mirror = spec["components"]["schemas"]["SettingsUpdate"]["properties"]
            .as_object()
            .expect("properties")
            .len();
        assert_eq!(mirror, 5);
        conforms(
            "IssuedToken",
            &tapedeck_model::auth::IssuedToken {
                token: "t".into(),
                expires_at: 1,
            },
            true,
        );
    }

    #[test]
    fn usage_mirror_matches_real_usage() {
        use tapedeck_store::usage::{JobCounts, Period, Usage};
        let period = Period {
            start: 1,
            jobs: 2,
            done: 1,
            failed: 1,
            cpu_seconds: 0.5,
            bytes_in: 10,
            bytes_out: 5,
        };
        let usage = Usage {
            tenant: "acme".into(),
            jobs: JobCounts {
                queued: 1,
                converting: 1,
                done: 1,
                failed: 1,
                expired: 1,
            },
            running: 1,
            stored_bytes: 15,
            hours: vec![period.clone()],
            days: vec![period],
        };
        conforms("Usage", &usage, true);
        conforms(
            "UsageList",
            &crate::admin::UsageList {
                tenants: vec![usage],
            },
            true,
        );
    }

    #[test]
    fn plugin_mirrors_match_real_values() {
        use tapedeck_store::plugins::{Active, Applied, Change, Plugin};
        let plugin = Plugin {
            digest: "d".into(),
            stage: "converter".into(),
            bytes: 1,
            published_at: 2,
            compile_ms: 3,
            owner: Some("acme".into()),
            by: "acme/ann@example.com".into(),
            world: "tapedeck:converter@1.0.0".into(),
            smoke: "converted 1 s".into(),
            smoke_ms: 4,
        };
        conforms("Plugin", &plugin, true);
        conforms(
            "PluginList",
            &crate::admin::PluginList {
                plugins: vec![plugin],
            },
            true,
        );
        let active = Active {
            stage: "converter".into(),
            tenant: Some("acme".into()),
            digest: None,
        };
        conforms("Active", &active, true);
        conforms(
            "ActivePlugins",
            &crate::admin::ActivePlugins {
                active: vec![active],
                version: 3,
                processes: vec![Applied {
                    process: "p".into(),
                    version: 3,
                    heard: 3,
                    compile_ms: 5,
                    seen_ms: 4,
                }],
            },
            true,
        );
        let change = Change {
            at: 1,
            action: "activate".into(),
            stage: "converter".into(),
            tenant: None,
            digest: Some("d".into()),
            reason: Some("why".into()),
        };
        conforms("Change", &change, true);
        conforms(
            "History",
            &crate::admin::History {
                history: vec![change],
            },
            true,
        );
    }

    #[test]
    fn canary_and_dead_letter_mirrors_match_real_values() {
        use tapedeck_store::canary::{ArmStats, CanarySettings, CanaryStatus};
        let mut settings = CanarySettings::new("converter", Some("acme"), "d", 10.0);
        settings.promote_after = Some(20);
        let status = CanaryStatus {
            settings,
            state: "collecting",
            canary: ArmStats::default(),
            stable: ArmStats::default(),
            totals: [("canary:ok".to_owned(), 3)].into_iter().collect(),
        };
        conforms("CanaryStatus", &status, true);
        conforms(
            "CanaryList",
            &crate::ops::CanaryList {
                canaries: vec![status],
            },
            true,
        );
        for sticky in [
            tapedeck_store::canary::Sticky::Tenant,
            tapedeck_store::canary::Sticky::User,
            tapedeck_store::canary::Sticky::Job,
        ] {
            conforms("Sticky", &sticky, true);
        }
        let dead = tapedeck_store::queue::DeadLetter {
            id: "1-0".into(),
            tenant: "acme".into(),
            job_id: "j".into(),
            reason: "r".into(),
            attempts: 3,
            at: 1,
        };
        conforms("DeadLetter", &dead, true);
    }

    #[test]
    fn error_bodies_match_the_error_schema() {
        for error in [
            ApiError::NotFound,
            ApiError::limit("max_queued", 3, "tenant", 3),
            ApiError::limit("quota_bytes", 3, "server", 4),
            ApiError::Rejected(StatusCode::BAD_REQUEST, "invalid_json", "x".into()),
        ] {
            let limited = matches!(error, ApiError::LimitExceeded { .. });
            let body = error_body(error);
            conforms("ErrorBody", &body, false);
            if limited {
                for field in ["limit", "value", "layer"] {
                    assert!(body["error"].get(field).is_some(), "{field}: {body}");
                }
            }
        }
        // `/readyz`'s 503 lists its checks.
        let not_ready = crate::error::ErrorBody {
            error: crate::error::ErrorDetail {
                code: "unavailable",
                message: "not ready: redis".into(),
                limit: None,
                value: None,
                layer: None,
                checks: Some(vec![
                    crate::health::ReadyCheck {
                        name: "redis",
                        ok: false,
                        error: Some("connection refused".into()),
                    },
                    crate::health::ReadyCheck {
                        name: "blobs",
                        ok: true,
                        error: None,
                    },
                ]),
            },
        };
        conforms("ErrorBody", &not_ready, false);
    }

    fn error_body(error: ApiError) -> Value {
        let response = error.into_response();
        let bytes =
            futures::executor::block_on(axum::body::to_bytes(response.into_body(), 1 << 16))
                .expect("the body");
        serde_json::from_slice(&bytes).expect("JSON")
    }

    use crate::error::ApiError;

    /// The `code`s the crate's sources give `ApiError` variants.
    fn codes_in(source: &str) -> Vec<String> {
        let mut out = Vec::new();
        for variant in [
            "BadRequest(",
            "Unauthorized(",
            "Forbidden(",
            "Conflict(",
            "Rejected(",
        ] {
            for (i, _) in source.match_indices(variant) {
                let rest = source[i + variant.len()..].trim_start();
                // `Rejected(status, "code", ...)`: skip the status.
                let rest = match rest.find(',') {
                    Some(comma) if !rest.starts_with('"') => rest[comma + 1..].trim_start(),
                    _ => rest,
                };
                if let Some(lit) = rest.strip_prefix('"')
                    && let Some(end) = lit.find('"')
                {
                    out.push(lit[..end].to_owned());
                }
            }
        }
        out
    }

    const SOURCES: &[(&str, &str)] = &[
        ("account.rs", include_str!("account.rs")),
        ("admin.rs", include_str!("admin.rs")),
        ("compat.rs", include_str!("compat.rs")),
        ("error.rs", include_str!("error.rs")),
        ("extract.rs", include_str!("extract.rs")),
        ("health.rs", include_str!("health.rs")),
        ("jobs.rs", include_str!("jobs.rs")),
        ("lib.rs", include_str!("lib.rs")),
        ("listener.rs", include_str!("listener.rs")),
        ("login_guard.rs", include_str!("login_guard.rs")),
        ("ops.rs", include_str!("ops.rs")),
        ("tenants.rs", include_str!("tenants.rs")),
        ("upload.rs", include_str!("upload.rs")),
        ("web.rs", include_str!("web.rs")),
    ];

    #[test]
    fn every_error_code_is_in_the_schema() {
        let mut found = 0;
        for (file, source) in SOURCES {
            for code in codes_in(source) {
                found += 1;
                assert!(
                    ERROR_CODES.contains(&code.as_str()),
                    "{file} answers code `{code}`, which ERROR_CODES (openapi.rs) lacks"
                );
            }
        }
        assert!(found > 20, "the scan found only {found} codes");
        // And the fixed ones of `status_and_code`.
        for code in [
            "not_found",
            "payload_too_large",
            "limit_exceeded",
            "field_too_large",
            "unsupported_media_type",
            "range_not_satisfiable",
            "too_many_attempts",
            "unavailable",
            "internal",
        ] {
            assert!(ERROR_CODES.contains(&code), "{code}");
            assert!(
                include_str!("error.rs").contains(&format!("\"{code}\"")),
                "{code}"
            );
        }
    }

    // ---- The routes of `app()` against the spec's operations. ----------------------------

    const METHODS: &[&str] = &["get", "post", "put", "patch", "delete"];

    /// The end of the parenthesised expression whose `(` is at `open`.
    fn closing(text: &str, open: usize) -> usize {
        let mut depth = 0;
        let mut in_str = false;
        let bytes = text.as_bytes();
        let mut i = open;
        while i < bytes.len() {
            match bytes[i] {
                b'\\' if in_str => i += 1,
                b'"' => in_str = !in_str,
                b'(' if !in_str => depth += 1,
                b')' if !in_str => {
                    depth -= 1;
                    if depth == 0 {
                        return i;
                    }
                }
                _ => {}
            }
            i += 1;
        }
        panic!("unbalanced parentheses");
    }

    /// `(METHOD, path)` of every `.route("path", get(..).post(..))` in `text`.
    fn routes_in(text: &str, prefix: &str) -> BTreeSet<(String, String)> {
        let mut out = BTreeSet::new();
        for (i, _) in text.match_indices(".route(") {
            let open = i + ".route".len();
            let end = closing(text, open);
            let call = &text[open + 1..end];
            let path = call
                .trim_start()
                .strip_prefix('"')
                .and_then(|p| p.split('"').next())
                .expect("a route's path is a string literal");
            let router = &call[call.find(',').expect("a method router") + 1..];
            let mut methods = 0;
            for method in METHODS {
                let pattern = format!("{method}(");
                for (j, _) in router.match_indices(&pattern) {
                    let before = router[..j].chars().next_back();
                    if before.is_none_or(|c| !(c.is_alphanumeric() || c == '_')) {
                        out.insert((method.to_uppercase(), format!("{prefix}{path}")));
                        methods += 1;
                    }
                }
            }
            assert!(methods > 0, "no method found for route {path}");
        }
        out
    }

    /// The routes `app()` mounts, read from its source: the `/v1` router, the root's own,
    /// and those of the routers it merges. The optional bench route counts: the test
    /// says why the spec leaves it out. (`/metrics` is served on its own listener, not
    /// by `app()`, and is not part of the API.)
    fn app_routes() -> BTreeSet<(String, String)> {
        let lib = include_str!("lib.rs");
        let start = lib.find("pub fn app(").expect("app() in lib.rs");
        let body = &lib[start..start + lib[start..].find("\n}\n").expect("app()'s end")];
        let v1_start = body.find("let v1 = Router::new()").expect("the /v1 router");
        let v1_end = v1_start + body[v1_start..].find(";\n").expect("its end");
        let mut routes = routes_in(&body[v1_start..v1_end], "/v1");
        assert!(body.contains(".nest(\"/v1\", v1)"), "app() nests v1 at /v1");
        routes.extend(routes_in(&body[v1_end..], ""));
        let merged: &[(&str, &str)] = &[
            ("health::routes(", include_str!("health.rs")),
            ("web::routes(", include_str!("web.rs")),
            ("openapi::routes(", include_str!("openapi.rs")),
        ];
        for (i, _) in body.match_indices(".merge(") {
            let call = &body[i + ".merge(".len()..];
            let (_, source) = merged
                .iter()
                .find(|(name, _)| call.starts_with(name))
                .unwrap_or_else(|| {
                    panic!(
                        "app() merges a router this test does not know: {}",
                        &call[..call.find(')').unwrap_or(call.len())]
                    )
                });
            let f = source.find("pub fn routes").expect("a routes fn");
            let f_end = f + source[f..].find("\n}\n").expect("its end");
            routes.extend(routes_in(&source[f..f_end], ""));
        }
        routes
    }

    #[test]
    fn the_spec_lists_exactly_the_routes_of_app() {
        let spec = spec();
        let mut documented = BTreeSet::new();
        for (path, item) in spec["paths"].as_object().expect("paths") {
            for method in METHODS {
                if item.get(*method).is_some() {
                    documented.insert((method.to_uppercase(), path.clone()));
                }
            }
        }
        let mut served = app_routes();
        // Benchmarks only, never on unless configured (`bench_routes`): not the API.
        assert!(served.remove(&("GET".into(), "/bench/unauthenticated/jobs/{id}".into())));
        let undocumented: Vec<_> = served.difference(&documented).collect();
        let unserved: Vec<_> = documented.difference(&served).collect();
        assert!(
            undocumented.is_empty() && unserved.is_empty(),
            "served but not in the spec: {undocumented:?}\nin the spec but not served: {unserved:?}"
        );
        assert!(served.len() > 50, "only {} routes found", served.len());
    }

    #[test]
    fn operations_state_their_security() {
        let spec = spec();
        let schemes = spec["components"]["securitySchemes"]
            .as_object()
            .expect("security schemes");
        for name in ["bearer", "operator", "basic"] {
            assert!(schemes.contains_key(name), "{name}");
        }
        for (path, item) in spec["paths"].as_object().expect("paths") {
            for method in METHODS {
                let Some(op) = item.get(*method) else {
                    continue;
                };
                let names: BTreeSet<String> = op["security"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_object)
                    .flat_map(|r| r.keys().cloned())
                    .collect();
                let expected: &[&str] = if path.starts_with("/v1/admin/") {
                    &["operator"]
                } else if path.starts_with("/v1/auth/") || !path.starts_with("/v1/") {
                    match path.as_str() {
                        "/login" => &["basic"],
                        "/upload" | "/download" => &["bearer"],
                        // The caller's own sessions and password.
                        "/v1/auth/logout" | "/v1/auth/logout-all" | "/v1/auth/password" => {
                            &["bearer"]
                        }
                        _ => &[],
                    }
                } else {
                    &["bearer"]
                };
                let expected: BTreeSet<String> = expected.iter().map(|s| s.to_string()).collect();
                assert_eq!(names, expected, "{method} {path}");
                // Every operation that takes a token documents the 401.
                if !names.is_empty() {
                    assert!(op["responses"].get("401").is_some(), "{method} {path}: 401");
                }
            }
        }
    }

    #[test]
    fn the_spec_is_openapi_3_1() {
        let spec = spec();
        assert!(
            spec["openapi"]
                .as_str()
                .is_some_and(|v| v.starts_with("3.1."))
        );
        // Every error response refers to the one error shape.
        let error = &spec["components"]["schemas"]["ErrorDetail"];
        for field in ["code", "message", "limit", "value", "layer"] {
            assert!(error["properties"].get(field).is_some(), "{field}");
        }
        for (path, item) in spec["paths"].as_object().expect("paths") {
            for method in METHODS {
                let Some(op) = item.get(*method) else {
                    continue;
                };
                for (status, response) in op["responses"].as_object().expect("responses") {
                    if status.starts_with('4') || status.starts_with('5') {
                        assert_eq!(
                            response["content"]["application/json"]["schema"]["$ref"],
                            "#/components/schemas/ErrorBody",
                            "{method} {path} {status}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn the_docs_page_allows_its_own_script_only() {
        let csp = DOCS_CSP.as_str();
        assert!(csp.contains("script-src 'sha256-"));
        assert!(!csp.contains("unsafe-inline"));
        assert!(DOCS_HTML.contains(DOCS_SCRIPT));
        assert!(!DOCS_HTML.contains("http://") && !DOCS_HTML.contains("https://"));
    }
}
