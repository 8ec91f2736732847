//! The plugin registry's routes: publishing components (operator and tenant), activating
//! and rolling back a stage's component, its history, and canary rollouts
//! (`/v1/admin/plugins...`, `/v1/tenant/plugins...`). The contract is
//! `docs/admin-api.md`; the records are `tapedeck_store::registry`.

use std::collections::HashMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::extract::{ApiJson, ApiPath, ApiQuery, Operator, require_admin};
use crate::openapi::Binary;
use crate::tenants::existing;
use crate::{AppState, Caller};
use tapedeck_model::api::CanaryRequest;
use tapedeck_store::canary::{self, CanarySettings, CanaryStatus};
use tapedeck_store::registry::{Active, Applied, Change, Plugin};
use tapedeck_store::usage;

/// Largest component the registry accepts.
pub const MAX_PLUGIN_BYTES: u64 = 64 << 20;

fn plugin_error(why: impl Into<String>) -> ApiError {
    ApiError::BadRequest(ErrorCode::InvalidPlugin, why.into())
}

/// A stage of the registry (`REGISTRY_STAGES`), as the spec lists them.
fn stage_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .enum_values(Some(
            tapedeck_model::registry::REGISTRY_STAGES.iter().copied(),
        ))
        .description(Some("The stage the component implements"))
        .build()
}

fn check_stage(stage: &str) -> Result<(), ApiError> {
    if tapedeck_model::registry::REGISTRY_STAGES.contains(&stage) {
        Ok(())
    } else {
        Err(ApiError::invalid_input(format!(
            "stage must be one of: {}",
            tapedeck_model::registry::REGISTRY_STAGES.join(", ")
        )))
    }
}

/// The form of a publish: the stage and the component.
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct PublishForm {
    #[schema(schema_with = stage_schema)]
    stage: String,
    /// The release's name (with `version`): lowercase letters, digits and `-`, starting
    /// with a letter, at most 64.
    #[schema(pattern = "^[a-z][a-z0-9-]{0,63}$")]
    name: Option<String>,
    /// The release's version (with `name`): semver, e.g. `1.4.0`.
    #[schema(max_length = 64)]
    version: Option<String>,
    /// A WebAssembly component (at most 64 MiB).
    #[schema(value_type = Binary)]
    file: Vec<u8>,
}

/// `{"plugin": ...}`
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PluginEnvelope {
    pub plugin: Plugin,
}

/// Publishes a component (multipart `stage`, `file`, and optionally `name` and `version`).
///
/// The component is checked off the request's thread (compile, world, imports, a smoke
/// run; bounded in time) and stored by digest. Publishing a known component again
/// answers 200 with it.
#[utoipa::path(
    post,
    path = "/v1/admin/plugins",
    tag = "operator",
    security(("operator" = [])),
    request_body(content = PublishForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "Already published", body = PluginEnvelope,
         links(
             ("activate" = (operation_id = "activate_plugin",
                            parameters(("digest" = "$response.body#/plugin/digest")),
                            request_body = json!({"stage": "$response.body#/plugin/stage"}))),
             ("canary" = (operation_id = "start_canary",
                          parameters(("digest" = "$response.body#/plugin/digest")),
                          request_body = json!({"stage": "$response.body#/plugin/stage", "percent": 10}))),
         )),
        (status = 201, description = "Published", body = PluginEnvelope,
         links(
             ("activate" = (operation_id = "activate_plugin",
                            parameters(("digest" = "$response.body#/plugin/digest")),
                            request_body = json!({"stage": "$response.body#/plugin/stage"}))),
             ("canary" = (operation_id = "start_canary",
                          parameters(("digest" = "$response.body#/plugin/digest")),
                          request_body = json!({"stage": "$response.body#/plugin/stage", "percent": 10}))),
         )),
        (status = 400, description = "`bad_multipart`, `invalid_input` (stage, name, \
                                      version), `missing_file`, `invalid_plugin` (the \
                                      check's verdict)", body = ErrorBody),
        (status = 409, description = "`release_taken`: that name@version is another \
                                      component", body = ErrorBody),
        (status = 413, description = "`field_too_large`: over 64 MiB", body = ErrorBody),
        (status = 503, description = "`checks_busy`: no check slot came free in time; \
                                      `unavailable` (`Retry-After`)",
         body = ErrorBody, headers(("Retry-After" = u64, description = "Seconds"))),
    ),
)]
pub async fn publish_plugin(
    State(state): State<AppState>,
    _: Operator,
    request: axum::extract::Request,
) -> Result<(StatusCode, Json<PluginEnvelope>), ApiError> {
    publish(&state, request, None, "operator".into()).await
}

/// Publishes a component only the admin's tenant can run (tenant admin, if the operator
/// allowed it; multipart `stage`, `file`).
#[utoipa::path(
    post,
    path = "/v1/tenant/plugins",
    tag = "tenant",
    security(("bearer" = [])),
    request_body(content = PublishForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "Already published", body = PluginEnvelope,
         links(
             ("activate" = (operation_id = "tenant_activate_plugin",
                            parameters(("digest" = "$response.body#/plugin/digest")),
                            request_body = json!({"stage": "$response.body#/plugin/stage"}))),
         )),
        (status = 201, description = "Published", body = PluginEnvelope,
         links(
             ("activate" = (operation_id = "tenant_activate_plugin",
                            parameters(("digest" = "$response.body#/plugin/digest")),
                            request_body = json!({"stage": "$response.body#/plugin/stage"}))),
         )),
        (status = 400, description = "`bad_multipart`, `invalid_input` (stage, name, \
                                      version), `missing_file`, `invalid_plugin`",
         body = ErrorBody),
        (status = 403, description = "`admin_only`, `plugins_not_allowed`", body = ErrorBody),
        (status = 409, description = "`release_taken`: that name@version is another \
                                      component", body = ErrorBody),
        (status = 413, description = "`field_too_large`", body = ErrorBody),
        (status = 429, description = "`limit_exceeded`: the tenant used its \
                                      `cpu_seconds_per_hour`", body = ErrorBody),
        (status = 503, description = "`checks_busy`: no check slot came free in time; \
                                      `unavailable` (`Retry-After`)",
         body = ErrorBody, headers(("Retry-After" = u64, description = "Seconds"))),
    ),
)]
pub async fn tenant_publish_plugin(
    State(state): State<AppState>,
    caller: Caller,
    request: axum::extract::Request,
) -> Result<(StatusCode, Json<PluginEnvelope>), ApiError> {
    let tenant = plugin_tenant(&state, &caller).await?;
    let by = format!("{tenant}/{}", caller.0.email);
    publish(&state, request, Some(tenant), by).await
}

/// The caller's tenant, if they are its admin and the operator lets it publish.
async fn plugin_tenant(state: &AppState, caller: &Caller) -> Result<String, ApiError> {
    require_admin(caller)?;
    let tenant = existing(state, &caller.0.tenant).await?;
    if !tenant.allow_plugins {
        return Err(ApiError::Forbidden(
            ErrorCode::PluginsNotAllowed,
            "the operator has not allowed this tenant to publish plugins".into(),
        ));
    }
    Ok(tenant.name)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantActivation {
    #[schema(schema_with = stage_schema)]
    stage: String,
}

/// `{"active": ...}`
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ActiveEnvelope {
    pub active: Active,
}

/// Runs one of the tenant's own components for the tenant (tenant admin, if allowed).
#[utoipa::path(
    post,
    path = "/v1/tenant/plugins/{digest}/activate",
    tag = "tenant",
    security(("bearer" = [])),
    params(("digest" = String, Path, description = "The component's SHA-256, hex")),
    request_body = TenantActivation,
    responses(
        (status = 200, description = "Active", body = ActiveEnvelope),
        (status = 400, description = "`invalid_input`: not a stage", body = ErrorBody),
        (status = 403, description = "`admin_only`, `plugins_not_allowed`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such component of the tenant's",
         body = ErrorBody),
    ),
)]
pub async fn tenant_activate_plugin(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(digest): ApiPath<String>,
    ApiJson(a): ApiJson<TenantActivation>,
) -> Result<Json<ActiveEnvelope>, ApiError> {
    let tenant = plugin_tenant(&state, &caller).await?;
    check_stage(&a.stage)?;
    let plugin = tapedeck_store::registry::get(&state.pool, Some(&tenant), &digest)
        .await?
        .filter(|p| p.stage == a.stage)
        .ok_or(ApiError::NotFound)?;
    let active = tapedeck_store::registry::activate(
        &state.pool,
        &plugin.stage,
        Some(&tenant),
        &plugin.digest,
        tapedeck_store::registry::ChosenBy::Tenant,
        "activate",
    )
    .await?;
    Ok(Json(ActiveEnvelope { active }))
}

/// 429 `limit_exceeded` when `tenant` has used its CPU seconds of this hour
/// (`cpu_seconds_per_hour`): a check is work like a conversion, paid from the same
/// budget, so a tenant whose conversions wait for the next hour cannot keep the check
/// slots busy instead.
async fn refuse_over_cpu_budget(state: &AppState, tenant: &str) -> Result<(), ApiError> {
    let t = existing(state, tenant).await?;
    let Some(limit) = t
        .limits
        .over(&state.tenant_defaults)
        .cpu_seconds_per_hour
        .filter(|l| *l > 0)
    else {
        return Ok(());
    };
    let now = tapedeck_store::queue::now_ms() / 1000;
    let (hour, _) = tapedeck_store::queue::periods(now);
    let used = usage::load(&state.pool, tenant)
        .await?
        .hours
        .iter()
        .find(|p| p.start == hour)
        .map_or(0.0, |p| p.cpu_seconds);
    if used < limit as f64 {
        return Ok(());
    }
    Err(ApiError::LimitExceeded {
        status: StatusCode::TOO_MANY_REQUESTS,
        limit: "cpu_seconds_per_hour".into(),
        value: limit,
        layer: t
            .limits
            .layer_of("cpu_seconds_per_hour", &state.tenant_defaults),
        message: format!(
            "{used:.1} CPU seconds used this hour, the limit is {limit} (cpu_seconds_per_hour, \
             {{layer}}); checking a component counts like a conversion: publish again next \
             hour"
        ),
        retry_after: Some(3600 - now % 3600),
    })
}

async fn publish(
    state: &AppState,
    request: axum::extract::Request,
    owner: Option<String>,
    by: String,
) -> Result<(StatusCode, Json<PluginEnvelope>), ApiError> {
    use futures::TryStreamExt;
    use sha2::Digest;
    let content_type = request
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let boundary = multer::parse_boundary(&content_type)
        .map_err(|e| ApiError::BadRequest(ErrorCode::BadMultipart, e.to_string()))?;
    let constraints = multer::Constraints::new().size_limit(
        multer::SizeLimit::new()
            .whole_stream(MAX_PLUGIN_BYTES + 64 * 1024)
            .per_field(MAX_PLUGIN_BYTES)
            .for_field("stage", 64)
            .for_field("name", 64)
            .for_field("version", 64),
    );
    let body = request.into_body().into_data_stream();
    let mut form = multer::Multipart::with_constraints(body, boundary, constraints);
    let (mut stage, mut bytes, mut name, mut version) = (None, None, None, None);
    let too_large = |e: multer::Error| match e {
        multer::Error::FieldSizeExceeded { .. } | multer::Error::StreamSizeExceeded { .. } => {
            ApiError::FieldTooLarge {
                what: "the component".into(),
                limit: MAX_PLUGIN_BYTES,
            }
        }
        other => ApiError::BadRequest(ErrorCode::BadMultipart, other.to_string()),
    };
    while let Some(field) = form.next_field().await.map_err(too_large)? {
        match field.name() {
            Some("stage") => stage = Some(field.text().await.map_err(too_large)?),
            Some("name") => name = Some(field.text().await.map_err(too_large)?),
            Some("version") => version = Some(field.text().await.map_err(too_large)?),
            Some("file") => {
                let chunks: Vec<bytes::Bytes> = field.try_collect().await.map_err(too_large)?;
                bytes = Some(chunks.concat());
            }
            _ => {
                return Err(ApiError::BadRequest(
                    ErrorCode::BadMultipart,
                    "unknown field".into(),
                ));
            }
        }
    }
    let stage = stage.ok_or(ApiError::invalid_input("no stage"))?;
    check_stage(&stage)?;
    let release = release(name, version)?;
    if owner.is_some() && stage == "auth" {
        return Err(ApiError::Forbidden(
            ErrorCode::PluginsNotAllowed,
            "only the operator publishes auth components".into(),
        ));
    }
    let bytes = bytes.ok_or(ApiError::BadRequest(
        ErrorCode::MissingFile,
        "no file".into(),
    ))?;
    let digest = hex::encode(sha2::Sha256::digest(&bytes));
    // Each owner has its own registration of a digest: a tenant's is private to it, and
    // publishing bytes somebody else published is checked and registered afresh.
    if let Some(known) =
        tapedeck_store::registry::get(&state.pool, owner.as_deref(), &digest).await?
    {
        if known.stage != stage {
            return Err(plugin_error(format!(
                "this component was published for the {} stage",
                known.stage
            )));
        }
        return Ok((StatusCode::OK, Json(PluginEnvelope { plugin: known })));
    }
    // Bounded work (see `PluginCheck`): a few at a time, limited like a conversion,
    // stopped if this request is dropped, and paid for from the tenant's CPU budget.
    if let Some(tenant) = &owner {
        refuse_over_cpu_budget(state, tenant).await?;
    }
    let request = tapedeck_model::registry::CheckRequest {
        stage: &stage,
        bytes: &bytes,
        tenant: owner.as_deref(),
    };
    let report = state
        .plugin_check
        .check(request)
        .await
        .map_err(|e| match e {
            tapedeck_model::registry::CheckError::Refused(why) => plugin_error(why),
            tapedeck_model::registry::CheckError::Busy(why) => {
                ApiError::Rejected(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::ChecksBusy, why)
            }
        })?;
    let size = bytes.len() as u64;
    // A tenant's component is stored for it: it counts against its quota, like its files.
    if let Some(tenant) = &owner {
        charge_quota(state, tenant, size).await?;
    }
    let body = futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from(bytes))]);
    let put = state
        .blobs
        .put_stream(
            &tapedeck_store::registry::blob_key(&digest),
            body,
            MAX_PLUGIN_BYTES,
        )
        .await;
    if let Err(e) = put {
        refund_quota(state, owner.as_deref(), size).await;
        return Err(ApiError::internal(format!("storing the component: {e}")));
    }
    let plugin = tapedeck_store::registry::Plugin {
        digest,
        stage,
        bytes: size,
        published_at: tapedeck_store::queue::now_ms() / 1000,
        compile_ms: report.compile_ms,
        by,
        world: report.world,
        smoke: report.smoke,
        smoke_ms: report.smoke_ms,
        failures: report.failures,
        name: release.as_ref().map(|(n, _)| n.clone()),
        version: release.map(|(_, v)| v),
        owner,
    };
    let created = tapedeck_store::registry::publish(&state.pool, &plugin).await;
    if !matches!(created, Ok(true)) {
        // Not registered by this request (an error, a taken release, or a concurrent
        // publish won).
        refund_quota(state, plugin.owner.as_deref(), size).await;
    }
    let created = created.map_err(|e| match e {
        tapedeck_store::registry::PublishError::ReleaseTaken(holder) => ApiError::Conflict(
            ErrorCode::ReleaseTaken,
            format!(
                "{}@{} is published already, as component {holder}: a release names one \
                 component; publish this one as another version",
                plugin.name.as_deref().unwrap_or_default(),
                plugin.version.as_deref().unwrap_or_default()
            ),
        ),
        tapedeck_store::registry::PublishError::Redis(e) => e.into(),
    })?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(PluginEnvelope { plugin })))
}

/// A publish's release: both of `name` (a plugin name) and `version` (semver), or none.
fn release(
    name: Option<String>,
    version: Option<String>,
) -> Result<Option<(String, String)>, ApiError> {
    match (name, version) {
        (None, None) => Ok(None),
        (Some(name), Some(version)) => {
            let mut chars = name.chars();
            let valid = chars.next().is_some_and(|c| c.is_ascii_lowercase())
                && name.len() <= 64
                && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
            if !valid {
                return Err(ApiError::invalid_input(format!(
                    "{name:?} is not a plugin name: lowercase letters, digits and -, starting \
                     with a letter, at most 64"
                )));
            }
            let parsed = semver::Version::parse(&version).map_err(|e| {
                ApiError::invalid_input(format!("version {version:?} is not semver: {e}"))
            })?;
            Ok(Some((name, parsed.to_string())))
        }
        _ => Err(ApiError::invalid_input(
            "a release needs both name and version",
        )),
    }
}

/// Adds `bytes` of a tenant's own component to what the tenant stores, if its quota
/// (`quota_bytes`) holds them; else the quota's `limit_exceeded` refusal.
async fn charge_quota(state: &AppState, tenant: &str, bytes: u64) -> Result<(), ApiError> {
    let t = existing(state, tenant).await?;
    let quota = t.effective(&state.tenant_defaults).quota_bytes;
    if usage::charge_stored(&state.pool, tenant, bytes, quota).await? {
        return Ok(());
    }
    let current = usage::stored_bytes(&state.pool, tenant).await?;
    Err(ApiError::limit(
        "quota_bytes",
        quota.unwrap_or(0),
        t.limits.layer_of("quota_bytes", &state.tenant_defaults),
        current,
    ))
}

/// Gives back what [`charge_quota`] charged for a component that was not registered.
async fn refund_quota(state: &AppState, tenant: Option<&str>, bytes: u64) {
    if let Some(tenant) = tenant
        && let Err(e) = usage::release_stored(&state.pool, tenant, bytes).await
    {
        tracing::warn!(tenant, error = %e, "could not give back a component's quota");
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StageQuery {
    /// Only this stage's (`converter`, `notifier`).
    stage: Option<String>,
}

/// `{"plugins": [...]}`
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PluginList {
    pub plugins: Vec<Plugin>,
}

/// The published components, newest first.
#[utoipa::path(
    get,
    path = "/v1/admin/plugins",
    tag = "operator",
    security(("operator" = [])),
    params(StageQuery),
    responses((status = 200, description = "The components", body = PluginList)),
)]
pub async fn list_plugins(
    State(state): State<AppState>,
    _: Operator,
    ApiQuery(q): ApiQuery<StageQuery>,
) -> Result<Json<PluginList>, ApiError> {
    let mut out = Vec::new();
    for stage in tapedeck_model::registry::REGISTRY_STAGES {
        if q.stage.as_deref().is_none_or(|s| s == *stage) {
            out.extend(tapedeck_store::registry::list(&state.pool, stage).await?);
        }
    }
    out.sort_by_key(|p| std::cmp::Reverse(p.published_at));
    Ok(Json(PluginList { plugins: out }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Activation {
    #[schema(schema_with = stage_schema)]
    stage: String,
    /// For this tenant only (absent or `null`: everyone).
    #[schema(pattern = "^[a-z0-9_-]{1,64}$")]
    tenant: Option<String>,
}

async fn check_activation(state: &AppState, a: &Activation) -> Result<(), ApiError> {
    check_stage(&a.stage)?;
    if let Some(t) = &a.tenant {
        existing(state, t).await?;
    }
    Ok(())
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The registration of `digest` the operator may run for `tenant`'s scope (none:
/// everyone): the operator's own, or that tenant's. 400 when only other tenants
/// published it (their registrations are private to them), 404 when nobody did.
pub(crate) async fn runnable(
    state: &AppState,
    digest: &str,
    tenant: Option<&str>,
) -> Result<Plugin, ApiError> {
    if let Some(p) = tapedeck_store::registry::runnable_in(&state.pool, digest, tenant).await? {
        return Ok(p);
    }
    let key = tapedeck_store::registry::blob_key(digest);
    if is_sha256_hex(digest) && state.blobs.size(&key).await.is_ok() {
        return Err(ApiError::invalid_input(format!(
            "{digest} is a tenant's own component and runs only for it; publish it \
                 yourself to run it for {}",
            tenant.unwrap_or("everyone")
        )));
    }
    Err(ApiError::NotFound)
}

/// Makes a published component run a stage (for everyone or one tenant).
#[utoipa::path(
    post,
    path = "/v1/admin/plugins/{digest}/activate",
    tag = "operator",
    security(("operator" = [])),
    params(("digest" = String, Path, description = "The component's SHA-256, hex")),
    request_body = Activation,
    responses(
        (status = 200, description = "Active", body = ActiveEnvelope),
        (status = 400, description = "`invalid_input`: not a stage, another stage's component, \
                                      another tenant's", body = ErrorBody),
        (status = 404, description = "`not_found`: no such component or tenant",
         body = ErrorBody),
    ),
)]
pub async fn activate_plugin(
    State(state): State<AppState>,
    _: Operator,
    ApiPath(digest): ApiPath<String>,
    ApiJson(a): ApiJson<Activation>,
) -> Result<Json<ActiveEnvelope>, ApiError> {
    check_activation(&state, &a).await?;
    let plugin = runnable(&state, &digest, a.tenant.as_deref()).await?;
    if plugin.stage != a.stage {
        return Err(ApiError::invalid_input(format!(
            "{digest} is a {} component",
            plugin.stage
        )));
    }
    let active = tapedeck_store::registry::activate(
        &state.pool,
        &a.stage,
        a.tenant.as_deref(),
        &digest,
        tapedeck_store::registry::ChosenBy::Operator,
        "activate",
    )
    .await?;
    Ok(Json(ActiveEnvelope { active }))
}

/// Activates the component that ran the scope before the current one: each rollback
/// steps back one activation, down to the built-in component.
#[utoipa::path(
    post,
    path = "/v1/admin/plugins/rollback",
    tag = "operator",
    security(("operator" = [])),
    request_body = Activation,
    responses(
        (status = 200, description = "Active now (`digest` null: the built-in component)",
         body = ActiveEnvelope),
        (status = 400, description = "`invalid_input`: not a stage", body = ErrorBody),
        (status = 404, description = "`not_found`: no such tenant", body = ErrorBody),
        (status = 409, description = "`nothing_to_roll_back`: the scope runs the built-in \
                                      component", body = ErrorBody),
    ),
)]
pub async fn rollback_plugin(
    State(state): State<AppState>,
    _: Operator,
    ApiJson(a): ApiJson<Activation>,
) -> Result<Json<ActiveEnvelope>, ApiError> {
    check_activation(&state, &a).await?;
    let active = tapedeck_store::registry::rollback(&state.pool, &a.stage, a.tenant.as_deref())
        .await?
        .ok_or_else(|| {
            ApiError::Conflict(
                ErrorCode::NothingToRollBack,
                format!(
                    "the {} stage runs the built-in component for {} already",
                    a.stage,
                    a.tenant.as_deref().unwrap_or("everyone")
                ),
            )
        })?;
    Ok(Json(ActiveEnvelope { active }))
}

/// The activations, the registry's version, and what each live process applied.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ActivePlugins {
    pub active: Vec<Active>,
    /// Bumped at every change of the registry.
    pub version: u64,
    /// Processes that reported in the last 15 s.
    pub processes: Vec<Applied>,
}

/// The activations, the registry's version, and the version each live worker process
/// has applied.
#[utoipa::path(
    get,
    path = "/v1/admin/plugins/active",
    tag = "operator",
    security(("operator" = [])),
    responses((status = 200, description = "The activations", body = ActivePlugins)),
)]
pub async fn active_plugins(
    State(state): State<AppState>,
    _: Operator,
) -> Result<Json<ActivePlugins>, ApiError> {
    Ok(Json(ActivePlugins {
        active: tapedeck_store::registry::active(&state.pool).await?,
        version: tapedeck_store::registry::version(&state.pool).await?,
        processes: tapedeck_store::registry::applied_by(&state.pool, 15_000).await?,
    }))
}

/// `{"history": [...]}`
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct History {
    /// Newest first, at most 1000.
    pub history: Vec<Change>,
}

/// The registry's changes, newest first.
#[utoipa::path(
    get,
    path = "/v1/admin/plugins/history",
    tag = "operator",
    security(("operator" = [])),
    params(StageQuery),
    responses((status = 200, description = "The changes", body = History)),
)]
pub async fn plugin_history(
    State(state): State<AppState>,
    _: Operator,
    ApiQuery(q): ApiQuery<StageQuery>,
) -> Result<Json<History>, ApiError> {
    let mut history =
        tapedeck_store::registry::history(&state.pool, q.stage.as_deref(), 1000).await?;
    // Each digest's release, looked up once.
    let mut releases: HashMap<(String, Option<String>), Option<String>> = HashMap::new();
    for change in &mut history {
        let Some(digest) = change.digest.clone() else {
            continue;
        };
        let key = (digest, change.tenant.clone());
        if !releases.contains_key(&key) {
            let plugin =
                tapedeck_store::registry::runnable_in(&state.pool, &key.0, key.1.as_deref())
                    .await?;
            let release = plugin.and_then(|p| Some(format!("{}@{}", p.name?, p.version?)));
            releases.insert(key.clone(), release);
        }
        change.release = releases[&key].clone();
    }
    Ok(Json(History { history }))
}

/// `{"canary": ...}`
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CanaryEnvelope {
    pub canary: CanaryStatus,
}

/// Starts (or replaces) the canary of a scope; thresholds not given keep their defaults.
#[utoipa::path(
    post,
    path = "/v1/admin/plugins/{digest}/canary",
    tag = "operator",
    security(("operator" = [])),
    params(("digest" = String, Path, description = "The component's SHA-256, hex")),
    request_body = CanaryRequest,
    responses(
        (status = 201, description = "Started", body = CanaryEnvelope),
        (status = 400, description = "`invalid_input`: not the converter or notifier \
                                      stage, a bad threshold, another stage's or tenant's \
                                      component",
         body = ErrorBody),
        (status = 404, description = "`not_found`: no such component or tenant",
         body = ErrorBody),
        (status = 409, description = "`already_active`: it already runs the scope",
         body = ErrorBody),
    ),
)]
pub async fn start_canary(
    State(state): State<AppState>,
    _: Operator,
    ApiPath(digest): ApiPath<String>,
    ApiJson(r): ApiJson<CanaryRequest>,
) -> Result<(StatusCode, Json<CanaryEnvelope>), ApiError> {
    if r.stage != "converter" && r.stage != "notifier" {
        return Err(ApiError::invalid_input(
            "canaries run on the converter and notifier stages (whose runs the analysis can \
             judge; a notifier canary composes in shadow, stable's messages are sent)",
        ));
    }
    if let Some(t) = &r.tenant {
        existing(&state, t).await?;
    }
    let plugin = runnable(&state, &digest, r.tenant.as_deref()).await?;
    if plugin.stage != r.stage {
        return Err(ApiError::invalid_input(format!(
            "{digest} is a {} component",
            plugin.stage
        )));
    }
    let mut s = CanarySettings::new(&r.stage, r.tenant.as_deref(), &digest, r.percent);
    s.sticky = r.sticky.unwrap_or_default();
    s.promote_after = r.promote_after;
    s.min_jobs = r.min_jobs.unwrap_or(s.min_jobs);
    s.window = r.window.unwrap_or(s.window);
    s.max_failure_delta = r.max_failure_delta.unwrap_or(s.max_failure_delta);
    s.max_invalid_delta = r.max_invalid_delta.unwrap_or(s.max_invalid_delta);
    s.max_p95_ratio = r.max_p95_ratio.unwrap_or(s.max_p95_ratio);
    s.p95_slack_ms = r.p95_slack_ms.unwrap_or(s.p95_slack_ms);
    s.deadline_factor = r.deadline_factor.unwrap_or(s.deadline_factor);
    s.deadline_floor_ms = r.deadline_floor_ms.unwrap_or(s.deadline_floor_ms);
    s.validate().map_err(ApiError::invalid_input)?;
    let active = tapedeck_store::registry::active(&state.pool).await?;
    let running = active
        .iter()
        .find(|a| a.stage == s.stage && a.tenant == s.tenant)
        .and_then(|a| a.digest.clone());
    if running.as_deref() == Some(digest.as_str()) {
        return Err(ApiError::Conflict(
            ErrorCode::AlreadyActive,
            "this component already runs the stage for that scope".into(),
        ));
    }
    canary::start(&state.pool, &s).await?;
    let status = canary::status(&state.pool, &s).await?;
    Ok((StatusCode::CREATED, Json(CanaryEnvelope { canary: status })))
}

/// `{"canaries": [...]}`
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CanaryList {
    pub canaries: Vec<CanaryStatus>,
}

/// Every running canary with its analysis so far.
#[utoipa::path(
    get,
    path = "/v1/admin/plugins/canaries",
    tag = "operator",
    security(("operator" = [])),
    responses((status = 200, description = "The canaries", body = CanaryList)),
)]
pub async fn list_canaries(
    State(state): State<AppState>,
    _: Operator,
) -> Result<Json<CanaryList>, ApiError> {
    let mut out = Vec::new();
    for s in canary::all(&state.pool).await? {
        out.push(canary::status(&state.pool, &s).await?);
    }
    Ok(Json(CanaryList { canaries: out }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Scope {
    stage: String,
    /// Absent or `null`: the canary for everyone.
    tenant: Option<String>,
}

/// How a canary ended.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(as = CanaryEnded)]
pub struct Ended {
    /// `canary-promote` or `canary-abort`.
    pub ended: String,
    pub digest: String,
    pub stage: String,
    #[schema(required = true)]
    pub tenant: Option<String>,
    /// The conformance failures recorded when the promoted component was published
    /// (promoting by hand is how such a component becomes active).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<String>,
}

async fn end_canary(state: &AppState, scope: &Scope, action: &str) -> Result<Ended, ApiError> {
    let s = canary::get(&state.pool, &scope.stage, scope.tenant.as_deref())
        .await?
        .ok_or(ApiError::NotFound)?;
    let failures = match action {
        "canary-promote" => canary::recorded_failures(&state.pool, &s).await?,
        _ => Vec::new(),
    };
    let why = match action {
        "canary-promote" if failures.is_empty() => "promoted by the operator".to_owned(),
        "canary-promote" => format!(
            "promoted by the operator, with the conformance failures recorded at publish: {}",
            failures.join("; ")
        ),
        _ => "aborted by the operator".to_owned(),
    };
    if !canary::end(&state.pool, &s, action, &why).await? {
        // Ended meanwhile (by its analysis): nothing to end.
        return Err(ApiError::NotFound);
    }
    Ok(Ended {
        ended: action.to_owned(),
        digest: s.digest,
        stage: s.stage,
        tenant: s.tenant,
        failures,
    })
}

/// Ends the scope's canary: it becomes the active component.
#[utoipa::path(
    post,
    path = "/v1/admin/plugins/canary/promote",
    tag = "operator",
    security(("operator" = [])),
    request_body = Scope,
    responses(
        (status = 200, description = "Promoted", body = Ended),
        (status = 404, description = "`not_found`: no canary runs the scope", body = ErrorBody),
    ),
)]
pub async fn promote_canary(
    State(state): State<AppState>,
    _: Operator,
    ApiJson(scope): ApiJson<Scope>,
) -> Result<Json<Ended>, ApiError> {
    Ok(Json(end_canary(&state, &scope, "canary-promote").await?))
}

/// Ends the scope's canary: it stops; nothing else changes.
#[utoipa::path(
    post,
    path = "/v1/admin/plugins/canary/abort",
    tag = "operator",
    security(("operator" = [])),
    request_body = Scope,
    responses(
        (status = 200, description = "Aborted", body = Ended),
        (status = 404, description = "`not_found`: no canary runs the scope", body = ErrorBody),
    ),
)]
pub async fn abort_canary(
    State(state): State<AppState>,
    _: Operator,
    ApiJson(scope): ApiJson<Scope>,
) -> Result<Json<Ended>, ApiError> {
    Ok(Json(end_canary(&state, &scope, "canary-abort").await?))
}
