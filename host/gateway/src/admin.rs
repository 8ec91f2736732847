//! The operator API (`/v1/admin/...`, bearer = the operator token) and the tenant
//! admin's users and usage (`/v1/tenant/users`, `/v1/tenant/usage`). The contract is
//! `docs/admin-api.md`; `tapedeck admin` is its CLI.

use axum::Json;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::tenants::require_admin;
use crate::{AppState, Caller, bearer_of};
use tapedeck_model::tenant::{LIMIT_NAMES, TenantLimits};
use tapedeck_store::tenants::{self, Tenant, valid_tenant_name};
use tapedeck_store::usage;
use tapedeck_store::users::{UserStore, is_operator_token};

/// A request made with the operator token (its SHA-256 is in Redis; see
/// `users::ensure_operator_token`).
pub struct Operator;

impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match bearer_of(parts) {
            Some(t) if t.len() <= 256 && is_operator_token(&state.pool, t).await? => Ok(Operator),
            _ => Err(ApiError::Unauthorized(
                "invalid_token",
                "missing or invalid operator token",
            )),
        }
    }
}

fn tenant_json(t: &Tenant, server: &TenantLimits) -> Value {
    json!({
        "name": t.name,
        "self_register": t.self_register,
        "allow_plugins": t.allow_plugins,
        "limits": t.limits,
        "effective": t.effective(server),
        "deleting": t.deleting,
    })
}

async fn existing(state: &AppState, name: &str) -> Result<Tenant, ApiError> {
    tenants::load_tenant(&state.pool, name)
        .await?
        .ok_or(ApiError::NotFound)
}

/// `GET /v1/admin/tenants`
pub async fn list_tenants(
    State(state): State<AppState>,
    _: Operator,
) -> Result<Json<Value>, ApiError> {
    let all = tenants::list(&state.pool).await?;
    let list: Vec<Value> = all
        .iter()
        .map(|t| tenant_json(t, &state.tenant_defaults))
        .collect();
    Ok(Json(json!({ "tenants": list })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTenant {
    name: String,
    #[serde(default)]
    self_register: bool,
    #[serde(default)]
    limits: TenantLimits,
}

/// `POST /v1/admin/tenants`
pub async fn create_tenant(
    State(state): State<AppState>,
    _: Operator,
    ApiJson(body): ApiJson<NewTenant>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    if !valid_tenant_name(&body.name) {
        return Err(ApiError::BadRequest(
            "invalid_input",
            "a tenant name is 1 to 64 of a-z, 0-9, - and _".into(),
        ));
    }
    body.limits
        .validate()
        .map_err(|why| ApiError::BadRequest("invalid_input", why))?;
    if let Some(old) = tenants::load_any(&state.pool, &body.name).await?
        && old.deleting
    {
        return Err(ApiError::Conflict(
            "tenant_deleting",
            format!(
                "tenant {} is still being deleted; try again shortly",
                body.name
            ),
        ));
    }
    if !tenants::create(&state.pool, &body.name, body.self_register, &body.limits).await? {
        return Err(ApiError::Conflict(
            "tenant_exists",
            format!("tenant {} exists", body.name),
        ));
    }
    if let Some(w) = body.limits.weight {
        state
            .queue
            .scheduler()
            .set_weight(&body.name, w as u32)
            .await?;
    }
    let t = existing(&state, &body.name).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "tenant": tenant_json(&t, &state.tenant_defaults) })),
    ))
}

/// `GET /v1/admin/tenants/{t}`
pub async fn show_tenant(
    State(state): State<AppState>,
    _: Operator,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let t = existing(&state, &name).await?;
    Ok(Json(
        json!({ "tenant": tenant_json(&t, &state.tenant_defaults) }),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantChange {
    self_register: Option<bool>,
    allow_plugins: Option<bool>,
}

/// `PATCH /v1/admin/tenants/{t}`
pub async fn update_tenant(
    State(state): State<AppState>,
    _: Operator,
    Path(name): Path<String>,
    ApiJson(change): ApiJson<TenantChange>,
) -> Result<Json<Value>, ApiError> {
    existing(&state, &name).await?;
    if let Some(on) = change.self_register {
        tenants::set_self_register(&state.pool, &name, on).await?;
    }
    if let Some(on) = change.allow_plugins {
        tenants::set_allow_plugins(&state.pool, &name, on).await?;
    }
    let t = existing(&state, &name).await?;
    Ok(Json(
        json!({ "tenant": tenant_json(&t, &state.tenant_defaults) }),
    ))
}

/// `DELETE /v1/admin/tenants/{t}`: marks it (logins, uploads and dispatch stop at once)
/// and its jobs, blobs, users and streams are removed in the background.
pub async fn delete_tenant(
    State(state): State<AppState>,
    _: Operator,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    existing(&state, &name).await?;
    tenants::mark_deleting(&state.pool, &name).await?;
    // Every process's janitor (`tapedeck_worker::janitor`) finishes what is marked.
    Ok((StatusCode::ACCEPTED, Json(json!({ "deleting": name }))))
}

fn limits_json(t: &Tenant, server: &TenantLimits) -> Value {
    json!({
        "limits": t.limits,
        "server": server,
        "effective": t.effective(server),
    })
}

/// `GET /v1/admin/tenants/{t}/limits`
pub async fn get_limits(
    State(state): State<AppState>,
    _: Operator,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let t = existing(&state, &name).await?;
    Ok(Json(limits_json(&t, &state.tenant_defaults)))
}

/// `PATCH /v1/admin/tenants/{t}/limits` with `{"limit": value | null, ...}`.
pub async fn patch_limits(
    State(state): State<AppState>,
    _: Operator,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<Map<String, Value>>,
) -> Result<Json<Value>, ApiError> {
    let t = existing(&state, &name).await?;
    let mut changes: Vec<(&str, Option<u64>)> = Vec::new();
    let mut next = t.limits.clone();
    for (key, value) in &body {
        let Some(name) = LIMIT_NAMES.iter().find(|n| **n == key.as_str()) else {
            return Err(ApiError::BadRequest(
                "invalid_input",
                format!(
                    "`{key}` is not a limit (one of: {})",
                    LIMIT_NAMES.join(", ")
                ),
            ));
        };
        let value = match value {
            Value::Null => None,
            v => Some(v.as_u64().ok_or_else(|| {
                ApiError::BadRequest(
                    "invalid_input",
                    format!("`{key}` must be a whole number or null"),
                )
            })?),
        };
        next.set(name, value);
        changes.push((name, value));
    }
    next.validate()
        .map_err(|why| ApiError::BadRequest("invalid_input", why))?;
    tenants::update_limits(&state.pool, &name, &changes).await?;
    if let Some((_, w)) = changes.iter().find(|(n, _)| *n == "weight") {
        state
            .queue
            .scheduler()
            .set_weight(&name, w.unwrap_or(1) as u32)
            .await?;
    }
    if changes
        .iter()
        .any(|(n, _)| *n == "max_running" || *n == "cpu_seconds_per_hour")
    {
        // A raised cap may let a parked tenant run again.
        state.queue.scheduler().add(&name, true).await?;
    }
    let t = existing(&state, &name).await?;
    Ok(Json(limits_json(&t, &state.tenant_defaults)))
}

/// `GET /v1/admin/usage`
pub async fn all_usage(
    State(state): State<AppState>,
    _: Operator,
) -> Result<Json<Value>, ApiError> {
    let mut out = Vec::new();
    for t in tenants::list(&state.pool).await? {
        out.push(usage::load(&state.pool, &t.name).await?);
    }
    Ok(Json(json!({ "tenants": out })))
}

/// `GET /v1/admin/tenants/{t}/usage`
pub async fn tenant_usage(
    State(state): State<AppState>,
    _: Operator,
    Path(name): Path<String>,
) -> Result<Json<usage::Usage>, ApiError> {
    existing(&state, &name).await?;
    Ok(Json(usage::load(&state.pool, &name).await?))
}

/// `GET /v1/tenant/usage` (tenant admin)
pub async fn own_usage(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<usage::Usage>, ApiError> {
    require_admin(&caller)?;
    Ok(Json(usage::load(&state.pool, &caller.0.tenant).await?))
}

fn user_json(u: &tapedeck_store::users::UserRecord) -> Value {
    json!({"id": u.id, "email": u.email, "role": u.role, "created_at": u.created_at})
}

/// `GET /v1/tenant/users` (tenant admin)
pub async fn list_users(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    require_admin(&caller)?;
    let users = UserStore::new(state.pool.clone())
        .list(&caller.0.tenant)
        .await?;
    let list: Vec<Value> = users.iter().map(user_json).collect();
    Ok(Json(json!({ "users": list })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    email: String,
    password: String,
    #[serde(default = "user_role")]
    role: String,
}

fn user_role() -> String {
    "user".into()
}

fn check_role(role: &str) -> Result<(), ApiError> {
    if role == "user" || role == "admin" {
        Ok(())
    } else {
        Err(ApiError::BadRequest(
            "invalid_input",
            "role is `user` or `admin`".into(),
        ))
    }
}

/// `POST /v1/tenant/users` (tenant admin): creates an account in the admin's tenant
/// (also when self-registration is off).
pub async fn create_user(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<NewUser>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    require_admin(&caller)?;
    add_user(&state, &caller.0.tenant, body).await
}

/// `POST /v1/admin/tenants/{t}/users` (operator): creates an account in a tenant, e.g.
/// its first admin.
pub async fn operator_create_user(
    State(state): State<AppState>,
    _: Operator,
    Path(tenant): Path<String>,
    ApiJson(body): ApiJson<NewUser>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    existing(&state, &tenant).await?;
    add_user(&state, &tenant, body).await
}

async fn add_user(
    state: &AppState,
    tenant: &str,
    body: NewUser,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    check_role(&body.role)?;
    let tenant = tenant.to_owned();
    let auth = state.auth.for_tenant(&tenant).stage.clone();
    auth.register(&tenant, &body.email, &body.password).await?;
    let email = auth.normalize_email(&body.email)?;
    let users = UserStore::new(state.pool.clone());
    if body.role != "user" {
        users.set_role(&tenant, &email, &body.role).await?;
    }
    let user = users
        .get(&tenant, &email)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "user": user_json(&user) })),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleChange {
    role: String,
}

/// `PATCH /v1/tenant/users/{email}` (tenant admin). A changed role applies from the
/// user's next login (tokens carry the role they were issued with).
pub async fn update_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(email): Path<String>,
    ApiJson(body): ApiJson<RoleChange>,
) -> Result<Json<Value>, ApiError> {
    require_admin(&caller)?;
    check_role(&body.role)?;
    let tenant = caller.0.tenant.clone();
    let email = email.trim().to_lowercase();
    let users = UserStore::new(state.pool.clone());
    if !users.set_role(&tenant, &email, &body.role).await? {
        return Err(ApiError::NotFound);
    }
    let user = users
        .get(&tenant, &email)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(Json(json!({ "user": user_json(&user) })))
}

/// `DELETE /v1/tenant/users/{email}` (tenant admin): the account goes (logins fail at
/// once; a token already issued works until it expires); its jobs stay with the tenant.
pub async fn remove_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(email): Path<String>,
) -> Result<StatusCode, ApiError> {
    require_admin(&caller)?;
    let email = email.trim().to_lowercase();
    if email == caller.0.email {
        return Err(ApiError::Conflict(
            "cannot_remove_self",
            "an admin cannot remove their own account".into(),
        ));
    }
    if UserStore::new(state.pool.clone())
        .remove(&caller.0.tenant, &email)
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound)
    }
}

/// Largest component the registry accepts.
pub const MAX_PLUGIN_BYTES: u64 = 64 << 20;

fn plugin_error(why: impl Into<String>) -> ApiError {
    ApiError::BadRequest("invalid_plugin", why.into())
}

fn check_stage(stage: &str) -> Result<(), ApiError> {
    if tapedeck_model::plugins::REGISTRY_STAGES.contains(&stage) {
        Ok(())
    } else {
        Err(ApiError::BadRequest(
            "invalid_input",
            format!(
                "stage must be one of: {}",
                tapedeck_model::plugins::REGISTRY_STAGES.join(", ")
            ),
        ))
    }
}

/// `POST /v1/admin/plugins` (multipart `stage`, `file`): checks a component off the
/// request's thread (compile, world, imports; bounded in time) and stores it by digest.
pub async fn publish_plugin(
    State(state): State<AppState>,
    _: Operator,
    request: axum::extract::Request,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    publish(&state, request, None, "operator".into()).await
}

/// `POST /v1/tenant/plugins` (tenant admin, if the operator allowed it): publishes a
/// component that only the admin's tenant can run (under its limits).
pub async fn tenant_publish_plugin(
    State(state): State<AppState>,
    caller: Caller,
    request: axum::extract::Request,
) -> Result<(StatusCode, Json<Value>), ApiError> {
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
            "plugins_not_allowed",
            "the operator has not allowed this tenant to publish plugins".into(),
        ));
    }
    Ok(tenant.name)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantActivation {
    stage: String,
}

/// `POST /v1/tenant/plugins/{digest}/activate` (tenant admin, if allowed): runs one of
/// the tenant's own components for the tenant.
pub async fn tenant_activate_plugin(
    State(state): State<AppState>,
    caller: Caller,
    Path(digest): Path<String>,
    ApiJson(a): ApiJson<TenantActivation>,
) -> Result<Json<Value>, ApiError> {
    let tenant = plugin_tenant(&state, &caller).await?;
    check_stage(&a.stage)?;
    let plugin = tapedeck_store::plugins::get(&state.pool, &digest)
        .await?
        .filter(|p| p.owner.as_deref() == Some(tenant.as_str()) && p.stage == a.stage)
        .ok_or(ApiError::NotFound)?;
    let active = tapedeck_store::plugins::activate(
        &state.pool,
        &plugin.stage,
        Some(&tenant),
        Some(&plugin.digest),
        "activate",
    )
    .await?;
    Ok(Json(json!({ "active": active })))
}

async fn publish(
    state: &AppState,
    request: axum::extract::Request,
    owner: Option<String>,
    by: String,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    use futures::TryStreamExt;
    use sha2::Digest;
    let content_type = request
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let boundary = multer::parse_boundary(&content_type)
        .map_err(|e| ApiError::BadRequest("bad_multipart", e.to_string()))?;
    let constraints = multer::Constraints::new().size_limit(
        multer::SizeLimit::new()
            .whole_stream(MAX_PLUGIN_BYTES + 64 * 1024)
            .per_field(MAX_PLUGIN_BYTES)
            .for_field("stage", 64),
    );
    let body = request.into_body().into_data_stream();
    let mut form = multer::Multipart::with_constraints(body, boundary, constraints);
    let (mut stage, mut bytes) = (None, None);
    let too_large = |e: multer::Error| match e {
        multer::Error::FieldSizeExceeded { .. } | multer::Error::StreamSizeExceeded { .. } => {
            ApiError::FieldTooLarge {
                what: "the component".into(),
                limit: MAX_PLUGIN_BYTES,
            }
        }
        other => ApiError::BadRequest("bad_multipart", other.to_string()),
    };
    while let Some(field) = form.next_field().await.map_err(too_large)? {
        match field.name() {
            Some("stage") => stage = Some(field.text().await.map_err(too_large)?),
            Some("file") => {
                let chunks: Vec<bytes::Bytes> = field.try_collect().await.map_err(too_large)?;
                bytes = Some(chunks.concat());
            }
            _ => {
                return Err(ApiError::BadRequest(
                    "bad_multipart",
                    "unknown field".into(),
                ));
            }
        }
    }
    let stage = stage.ok_or(ApiError::BadRequest("invalid_input", "no stage".into()))?;
    check_stage(&stage)?;
    let bytes = bytes.ok_or(ApiError::BadRequest("missing_file", "no file".into()))?;
    let digest = hex::encode(sha2::Sha256::digest(&bytes));
    if let Some(known) = tapedeck_store::plugins::get(&state.pool, &digest).await? {
        if known.owner.is_some() && known.owner != owner {
            // Another tenant's component: not visible to this publisher.
            return Err(plugin_error(
                "this component is registered to another tenant; publish a build of your own",
            ));
        }
        if known.stage != stage {
            return Err(plugin_error(format!(
                "this component was published for the {} stage",
                known.stage
            )));
        }
        return Ok((StatusCode::OK, Json(json!({ "plugin": known }))));
    }
    let report = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        state.plugin_check.check(&stage, &bytes),
    )
    .await
    .map_err(|_| plugin_error("checking the component took more than 120 s"))?
    .map_err(plugin_error)?;
    let size = bytes.len() as u64;
    let body = futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from(bytes))]);
    state
        .blobs
        .put_stream(
            &tapedeck_store::plugins::blob_key(&digest),
            body,
            MAX_PLUGIN_BYTES,
        )
        .await
        .map_err(|e| ApiError::internal(format!("storing the component: {e}")))?;
    let plugin = tapedeck_store::plugins::Plugin {
        digest,
        stage,
        bytes: size,
        published_at: tapedeck_store::queue::now_ms() / 1000,
        compile_ms: report.compile_ms,
        by,
        world: report.world,
        smoke: report.smoke,
        smoke_ms: report.smoke_ms,
        owner,
    };
    let created = tapedeck_store::plugins::publish(&state.pool, &plugin).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(json!({ "plugin": plugin }))))
}

#[derive(Debug, Deserialize)]
pub struct StageQuery {
    stage: Option<String>,
}

/// `GET /v1/admin/plugins[?stage=S]`
pub async fn list_plugins(
    State(state): State<AppState>,
    _: Operator,
    crate::extract::ApiQuery(q): crate::extract::ApiQuery<StageQuery>,
) -> Result<Json<Value>, ApiError> {
    let mut out = Vec::new();
    for stage in tapedeck_model::plugins::REGISTRY_STAGES {
        if q.stage.as_deref().is_none_or(|s| s == *stage) {
            out.extend(tapedeck_store::plugins::list(&state.pool, stage).await?);
        }
    }
    out.sort_by_key(|p| std::cmp::Reverse(p.published_at));
    Ok(Json(json!({ "plugins": out })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Activation {
    stage: String,
    tenant: Option<String>,
}

async fn check_activation(state: &AppState, a: &Activation) -> Result<(), ApiError> {
    check_stage(&a.stage)?;
    if let Some(t) = &a.tenant {
        existing(state, t).await?;
    }
    Ok(())
}

/// `POST /v1/admin/plugins/{digest}/activate`
pub async fn activate_plugin(
    State(state): State<AppState>,
    _: Operator,
    Path(digest): Path<String>,
    ApiJson(a): ApiJson<Activation>,
) -> Result<Json<Value>, ApiError> {
    check_activation(&state, &a).await?;
    let plugin = tapedeck_store::plugins::get(&state.pool, &digest)
        .await?
        .ok_or(ApiError::NotFound)?;
    if plugin.stage != a.stage {
        return Err(ApiError::BadRequest(
            "invalid_input",
            format!("{digest} is a {} component", plugin.stage),
        ));
    }
    if let Some(owner) = &plugin.owner
        && a.tenant.as_deref() != Some(owner.as_str())
    {
        return Err(ApiError::BadRequest(
            "invalid_input",
            format!("{digest} belongs to tenant {owner} and runs only for it"),
        ));
    }
    let active = tapedeck_store::plugins::activate(
        &state.pool,
        &a.stage,
        a.tenant.as_deref(),
        Some(&digest),
        "activate",
    )
    .await?;
    Ok(Json(json!({ "active": active })))
}

/// `POST /v1/admin/plugins/rollback`
pub async fn rollback_plugin(
    State(state): State<AppState>,
    _: Operator,
    ApiJson(a): ApiJson<Activation>,
) -> Result<Json<Value>, ApiError> {
    check_activation(&state, &a).await?;
    let previous =
        tapedeck_store::plugins::previous(&state.pool, &a.stage, a.tenant.as_deref()).await?;
    let active = tapedeck_store::plugins::activate(
        &state.pool,
        &a.stage,
        a.tenant.as_deref(),
        previous.as_deref(),
        "rollback",
    )
    .await?;
    Ok(Json(json!({ "active": active })))
}

/// `GET /v1/admin/plugins/active`: the activations, the registry's version, and the
/// version each live worker process has applied.
pub async fn active_plugins(
    State(state): State<AppState>,
    _: Operator,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({
        "active": tapedeck_store::plugins::active(&state.pool).await?,
        "version": tapedeck_store::plugins::version(&state.pool).await?,
        "processes": tapedeck_store::plugins::applied_by(&state.pool, 15_000).await?,
    })))
}

/// `GET /v1/admin/plugins/history[?stage=S]`
pub async fn plugin_history(
    State(state): State<AppState>,
    _: Operator,
    crate::extract::ApiQuery(q): crate::extract::ApiQuery<StageQuery>,
) -> Result<Json<Value>, ApiError> {
    let history = tapedeck_store::plugins::history(&state.pool, q.stage.as_deref(), 1000).await?;
    Ok(Json(json!({ "history": history })))
}
