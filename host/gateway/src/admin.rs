//! The operator API (`/v1/admin/...`, bearer = the operator token) and the tenant
//! admin's users and usage (`/v1/tenant/users`, `/v1/tenant/usage`). The contract is
//! `docs/admin-api.md`; `tapedeck admin` is its CLI.

use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::extract::{ApiJson, ApiPath};
use crate::openapi::Binary;
use crate::tenants::require_admin;
use crate::{AppState, Caller, bearer_of};
use tapedeck_model::api::{
    Deleting, LimitsView, NewTenant, Role, TenantChange, TenantEnvelope, TenantList, TenantView,
    UserEnvelope, UserView,
};
use tapedeck_model::tenant::{LIMIT_NAMES, LimitsPatch, TenantLimits};
use tapedeck_store::plugins::{Active, Applied, Change, Plugin};
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
                ErrorCode::InvalidToken,
                "missing or invalid operator token",
            )),
        }
    }
}

/// A tenant as the operator sees it.
pub(crate) fn tenant_view(t: &Tenant, server: &TenantLimits) -> TenantView {
    TenantView {
        name: t.name.clone(),
        self_register: t.self_register,
        allow_plugins: t.allow_plugins,
        limits: t.limits.clone(),
        effective: t.effective(server),
        deleting: t.deleting,
    }
}

fn tenant_json(t: &Tenant, server: &TenantLimits) -> Json<TenantEnvelope> {
    Json(TenantEnvelope {
        tenant: tenant_view(t, server),
    })
}

async fn existing(state: &AppState, name: &str) -> Result<Tenant, ApiError> {
    tenants::load_tenant(&state.pool, name)
        .await?
        .ok_or(ApiError::NotFound)
}

/// Every tenant, by name.
#[utoipa::path(
    get,
    path = "/v1/admin/tenants",
    tag = "operator",
    security(("operator" = [])),
    responses((status = 200, description = "The tenants", body = TenantList)),
)]
pub async fn list_tenants(
    State(state): State<AppState>,
    _: Operator,
) -> Result<Json<TenantList>, ApiError> {
    let all = tenants::list(&state.pool).await?;
    let tenants = all
        .iter()
        .map(|t| tenant_view(t, &state.tenant_defaults))
        .collect();
    Ok(Json(TenantList { tenants }))
}

/// Creates a tenant.
#[utoipa::path(
    post,
    path = "/v1/admin/tenants",
    tag = "operator",
    security(("operator" = [])),
    request_body = NewTenant,
    responses(
        (status = 201, description = "Created", body = TenantEnvelope),
        (status = 400, description = "`invalid_input`: a bad name or limit", body = ErrorBody),
        (status = 409, description = "`tenant_exists`, `tenant_deleting`", body = ErrorBody),
    ),
)]
pub async fn create_tenant(
    State(state): State<AppState>,
    _: Operator,
    ApiJson(body): ApiJson<NewTenant>,
) -> Result<(StatusCode, Json<TenantEnvelope>), ApiError> {
    if !valid_tenant_name(&body.name) {
        return Err(ApiError::BadRequest(
            ErrorCode::InvalidInput,
            "a tenant name is 1 to 64 of a-z, 0-9, - and _".into(),
        ));
    }
    body.limits
        .validate()
        .map_err(|why| ApiError::BadRequest(ErrorCode::InvalidInput, why))?;
    if let Some(old) = tenants::load_any(&state.pool, &body.name).await?
        && old.deleting
    {
        return Err(ApiError::Conflict(
            ErrorCode::TenantDeleting,
            format!(
                "tenant {} is still being deleted; try again shortly",
                body.name
            ),
        ));
    }
    if !tenants::create(&state.pool, &body.name, body.self_register, &body.limits).await? {
        return Err(ApiError::Conflict(
            ErrorCode::TenantExists,
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
    Ok((StatusCode::CREATED, tenant_json(&t, &state.tenant_defaults)))
}

/// One tenant.
#[utoipa::path(
    get,
    path = "/v1/admin/tenants/{tenant}",
    tag = "operator",
    security(("operator" = [])),
    params(("tenant" = String, Path, description = "The tenant's name")),
    responses(
        (status = 200, description = "The tenant", body = TenantEnvelope),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ),
)]
pub async fn show_tenant(
    State(state): State<AppState>,
    _: Operator,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<TenantEnvelope>, ApiError> {
    let t = existing(&state, &name).await?;
    Ok(tenant_json(&t, &state.tenant_defaults))
}

/// Changes a tenant's switches.
#[utoipa::path(
    patch,
    path = "/v1/admin/tenants/{tenant}",
    tag = "operator",
    security(("operator" = [])),
    params(("tenant" = String, Path, description = "The tenant's name")),
    request_body = TenantChange,
    responses(
        (status = 200, description = "The tenant now", body = TenantEnvelope),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ),
)]
pub async fn update_tenant(
    State(state): State<AppState>,
    _: Operator,
    ApiPath(name): ApiPath<String>,
    ApiJson(change): ApiJson<TenantChange>,
) -> Result<Json<TenantEnvelope>, ApiError> {
    existing(&state, &name).await?;
    if let Some(on) = change.self_register {
        tenants::set_self_register(&state.pool, &name, on).await?;
    }
    if let Some(on) = change.allow_plugins {
        tenants::set_allow_plugins(&state.pool, &name, on).await?;
        if !on {
            // The operator keeps the last word: the tenant's own choices stop running
            // (its scope goes back to what the operator chose, or the built-in one).
            tapedeck_store::plugins::revoke_tenant(&state.pool, &name).await?;
        }
    }
    let t = existing(&state, &name).await?;
    Ok(tenant_json(&t, &state.tenant_defaults))
}

/// Deletes a tenant: marks it (logins, uploads and dispatch stop at once); its jobs,
/// blobs, users and streams are removed in the background.
#[utoipa::path(
    delete,
    path = "/v1/admin/tenants/{tenant}",
    tag = "operator",
    security(("operator" = [])),
    params(("tenant" = String, Path, description = "The tenant's name")),
    responses(
        (status = 202, description = "Being deleted", body = Deleting),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ),
)]
pub async fn delete_tenant(
    State(state): State<AppState>,
    _: Operator,
    ApiPath(name): ApiPath<String>,
) -> Result<(StatusCode, Json<Deleting>), ApiError> {
    existing(&state, &name).await?;
    tenants::mark_deleting(&state.pool, &name).await?;
    // Every process's janitor (`tapedeck_worker::janitor`) finishes what is marked.
    Ok((StatusCode::ACCEPTED, Json(Deleting { deleting: name })))
}

fn limits_json(t: &Tenant, server: &TenantLimits) -> Json<LimitsView> {
    Json(LimitsView {
        limits: t.limits.clone(),
        server: server.clone(),
        effective: t.effective(server),
    })
}

/// A tenant's limits.
#[utoipa::path(
    get,
    path = "/v1/admin/tenants/{tenant}/limits",
    tag = "operator",
    security(("operator" = [])),
    params(("tenant" = String, Path, description = "The tenant's name")),
    responses(
        (status = 200, description = "The limits", body = LimitsView),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ),
)]
pub async fn get_limits(
    State(state): State<AppState>,
    _: Operator,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<LimitsView>, ApiError> {
    let t = existing(&state, &name).await?;
    Ok(limits_json(&t, &state.tenant_defaults))
}

/// Sets some of a tenant's limits (`{"jobs_per_minute": 60, "max_queued": null}`: `null`
/// clears one).
#[utoipa::path(
    patch,
    path = "/v1/admin/tenants/{tenant}/limits",
    tag = "operator",
    security(("operator" = [])),
    params(("tenant" = String, Path, description = "The tenant's name")),
    request_body = LimitsPatch,
    responses(
        (status = 200, description = "The limits now", body = LimitsView),
        (status = 400, description = "`invalid_input`: not a limit, not a whole number, 0",
         body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ),
)]
pub async fn patch_limits(
    State(state): State<AppState>,
    _: Operator,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<Map<String, Value>>,
) -> Result<Json<LimitsView>, ApiError> {
    let t = existing(&state, &name).await?;
    let mut changes: Vec<(&str, Option<u64>)> = Vec::new();
    let mut next = t.limits.clone();
    for (key, value) in &body {
        let Some(name) = LIMIT_NAMES.iter().find(|n| **n == key.as_str()) else {
            return Err(ApiError::BadRequest(
                ErrorCode::InvalidInput,
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
                    ErrorCode::InvalidInput,
                    format!("`{key}` must be a whole number or null"),
                )
            })?),
        };
        next.set(name, value);
        changes.push((name, value));
    }
    next.validate()
        .map_err(|why| ApiError::BadRequest(ErrorCode::InvalidInput, why))?;
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
    Ok(limits_json(&t, &state.tenant_defaults))
}

/// `{"tenants": [usage]}`
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageList {
    pub tenants: Vec<usage::Usage>,
}

/// Every tenant's usage.
#[utoipa::path(
    get,
    path = "/v1/admin/usage",
    tag = "operator",
    security(("operator" = [])),
    responses((status = 200, description = "The usage of every tenant", body = UsageList)),
)]
pub async fn all_usage(
    State(state): State<AppState>,
    _: Operator,
) -> Result<Json<UsageList>, ApiError> {
    let mut out = Vec::new();
    for t in tenants::list(&state.pool).await? {
        out.push(usage::load(&state.pool, &t.name).await?);
    }
    Ok(Json(UsageList { tenants: out }))
}

/// One tenant's usage.
#[utoipa::path(
    get,
    path = "/v1/admin/tenants/{tenant}/usage",
    tag = "operator",
    security(("operator" = [])),
    params(("tenant" = String, Path, description = "The tenant's name")),
    responses(
        (status = 200, description = "The usage", body = usage::Usage),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ),
)]
pub async fn tenant_usage(
    State(state): State<AppState>,
    _: Operator,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<usage::Usage>, ApiError> {
    existing(&state, &name).await?;
    Ok(Json(usage::load(&state.pool, &name).await?))
}

/// The tenant's usage (tenant admin).
#[utoipa::path(
    get,
    path = "/v1/tenant/usage",
    tag = "tenant",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The usage", body = usage::Usage),
        (status = 403, description = "`admin_only`", body = ErrorBody),
    ),
)]
pub async fn own_usage(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<usage::Usage>, ApiError> {
    require_admin(&caller)?;
    Ok(Json(usage::load(&state.pool, &caller.0.tenant).await?))
}

fn user_json(u: &tapedeck_store::users::UserRecord) -> UserView {
    UserView {
        id: u.id.clone(),
        email: u.email.clone(),
        role: u.role.clone(),
        created_at: u.created_at,
    }
}

/// `{"users": [...]}`
#[derive(Debug, Serialize, ToSchema)]
pub struct UserList {
    pub users: Vec<UserView>,
}

/// The tenant's accounts (tenant admin).
#[utoipa::path(
    get,
    path = "/v1/tenant/users",
    tag = "tenant",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The accounts", body = UserList),
        (status = 403, description = "`admin_only`", body = ErrorBody),
    ),
)]
pub async fn list_users(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<UserList>, ApiError> {
    require_admin(&caller)?;
    let users = UserStore::new(state.pool.clone())
        .list(&caller.0.tenant)
        .await?;
    Ok(Json(UserList {
        users: users.iter().map(user_json).collect(),
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// As `Credentials`' (`POST /v1/auth/register`).
    #[schema(
        max_length = 254,
        pattern = "^[A-Za-z0-9_%+-]{1,32}(\\.[A-Za-z0-9_%+-]{1,16}){0,1}@[A-Za-z0-9]{1,20}(\\.[A-Za-z0-9]{1,20}){1,3}$"
    )]
    email: String,
    /// At least 8 characters, at most 1024 bytes (any 256 characters fit).
    #[schema(min_length = 8, max_length = 256)]
    password: String,
    /// Default `user`.
    #[serde(default = "user_role")]
    #[schema(value_type = Role)]
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
            ErrorCode::InvalidInput,
            "role is `user` or `admin`".into(),
        ))
    }
}

/// Creates an account in the admin's tenant (tenant admin; also when self-registration
/// is off).
#[utoipa::path(
    post,
    path = "/v1/tenant/users",
    tag = "tenant",
    security(("bearer" = [])),
    request_body = NewUser,
    responses(
        (status = 201, description = "Created", body = UserEnvelope,
         links(
             ("role" = (operation_id = "update_user",
                        parameters(("email" = "$response.body#/user/email")))),
             ("remove" = (operation_id = "remove_user",
                          parameters(("email" = "$response.body#/user/email")))),
         )),
        (status = 400, description = "`invalid_input`", body = ErrorBody),
        (status = 403, description = "`admin_only`", body = ErrorBody),
        (status = 409, description = "`email_taken`", body = ErrorBody),
    ),
)]
pub async fn create_user(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<NewUser>,
) -> Result<(StatusCode, Json<UserEnvelope>), ApiError> {
    require_admin(&caller)?;
    add_user(&state, &caller.0.tenant, body).await
}

/// Creates an account in a tenant, e.g. its first admin.
#[utoipa::path(
    post,
    path = "/v1/admin/tenants/{tenant}/users",
    tag = "operator",
    security(("operator" = [])),
    params(("tenant" = String, Path, description = "The tenant's name")),
    request_body = NewUser,
    responses(
        (status = 201, description = "Created", body = UserEnvelope),
        (status = 400, description = "`invalid_input`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such tenant", body = ErrorBody),
        (status = 409, description = "`email_taken`", body = ErrorBody),
    ),
)]
pub async fn operator_create_user(
    State(state): State<AppState>,
    _: Operator,
    ApiPath(tenant): ApiPath<String>,
    ApiJson(body): ApiJson<NewUser>,
) -> Result<(StatusCode, Json<UserEnvelope>), ApiError> {
    existing(&state, &tenant).await?;
    add_user(&state, &tenant, body).await
}

async fn add_user(
    state: &AppState,
    tenant: &str,
    body: NewUser,
) -> Result<(StatusCode, Json<UserEnvelope>), ApiError> {
    check_role(&body.role)?;
    let tenant = tenant.to_owned();
    let auth = state.auth.for_tenant(&tenant).stage.clone();
    let email = auth.normalize_email(&body.email)?;
    crate::account::deliverable(&email)?;
    auth.register(&tenant, &body.email, &body.password).await?;
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
        Json(UserEnvelope {
            user: user_json(&user),
        }),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleChange {
    #[schema(value_type = Role)]
    role: String,
}

/// Changes an account's role (tenant admin).
///
/// Every session of the account ends (its tokens carry the role they were issued with):
/// the user logs in again with the new role. The tenant's last admin cannot be demoted.
#[utoipa::path(
    patch,
    path = "/v1/tenant/users/{email}",
    tag = "tenant",
    security(("bearer" = [])),
    params(("email" = String, Path, description = "The account's e-mail address")),
    request_body = RoleChange,
    responses(
        (status = 200, description = "The account now", body = UserEnvelope),
        (status = 400, description = "`invalid_input`: not a role", body = ErrorBody),
        (status = 403, description = "`admin_only`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`last_admin`: the tenant would have no admin", body = ErrorBody),
    ),
)]
pub async fn update_user(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(email): ApiPath<String>,
    ApiJson(body): ApiJson<RoleChange>,
) -> Result<Json<UserEnvelope>, ApiError> {
    require_admin(&caller)?;
    check_role(&body.role)?;
    let tenant = caller.0.tenant.clone();
    let email = email.trim().to_lowercase();
    let users = UserStore::new(state.pool.clone());
    let before = users
        .get(&tenant, &email)
        .await?
        .ok_or(ApiError::NotFound)?;
    if before.role == body.role {
        return Ok(Json(UserEnvelope {
            user: user_json(&before),
        }));
    }
    if before.role == "admin" {
        refuse_last_admin(&users, &tenant).await?;
    }
    if !users.set_role(&tenant, &email, &body.role).await? {
        return Err(ApiError::NotFound);
    }
    state.sessions.end_all(&tenant, &before.id).await?;
    let user = users
        .get(&tenant, &email)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(Json(UserEnvelope {
        user: user_json(&user),
    }))
}

/// Removes an account (tenant admin).
///
/// Its logins fail and its tokens stop working at once; its jobs stay with the tenant.
#[utoipa::path(
    delete,
    path = "/v1/tenant/users/{email}",
    tag = "tenant",
    security(("bearer" = [])),
    params(("email" = String, Path, description = "The account's e-mail address")),
    responses(
        (status = 204, description = "Removed"),
        (status = 403, description = "`admin_only`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`cannot_remove_self`", body = ErrorBody),
    ),
)]
pub async fn remove_user(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(email): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    require_admin(&caller)?;
    let email = email.trim().to_lowercase();
    if email == caller.0.email {
        return Err(ApiError::Conflict(
            ErrorCode::CannotRemoveSelf,
            "an admin cannot remove their own account".into(),
        ));
    }
    let users = UserStore::new(state.pool.clone());
    let tenant = &caller.0.tenant;
    let user = users.get(tenant, &email).await?.ok_or(ApiError::NotFound)?;
    if user.role == "admin" {
        refuse_last_admin(&users, tenant).await?;
    }
    if !users.remove(tenant, &email).await? {
        return Err(ApiError::NotFound);
    }
    state.sessions.end_all(tenant, &user.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// 409 if `tenant` has one admin or none: taking one away would leave nobody to manage
/// it but the operator.
async fn refuse_last_admin(users: &UserStore, tenant: &str) -> Result<(), ApiError> {
    let admins = users
        .list(tenant)
        .await?
        .iter()
        .filter(|u| u.role == "admin")
        .count();
    if admins <= 1 {
        return Err(ApiError::Conflict(
            ErrorCode::LastAdmin,
            "this is the tenant's last admin: make another user admin first".into(),
        ));
    }
    Ok(())
}

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
            tapedeck_model::plugins::REGISTRY_STAGES.iter().copied(),
        ))
        .description(Some("The stage the component implements"))
        .build()
}

fn check_stage(stage: &str) -> Result<(), ApiError> {
    if tapedeck_model::plugins::REGISTRY_STAGES.contains(&stage) {
        Ok(())
    } else {
        Err(ApiError::BadRequest(
            ErrorCode::InvalidInput,
            format!(
                "stage must be one of: {}",
                tapedeck_model::plugins::REGISTRY_STAGES.join(", ")
            ),
        ))
    }
}

/// The form of a publish: the stage and the component.
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct PublishForm {
    #[schema(schema_with = stage_schema)]
    stage: String,
    /// A WebAssembly component (at most 64 MiB).
    #[schema(value_type = Binary)]
    file: Vec<u8>,
}

/// `{"plugin": ...}`
#[derive(Debug, Serialize, ToSchema)]
pub struct PluginEnvelope {
    pub plugin: Plugin,
}

/// Publishes a component (multipart `stage`, `file`).
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
        (status = 400, description = "`bad_multipart`, `invalid_input` (stage), `missing_file`, \
                                      `invalid_plugin` (the check's verdict)", body = ErrorBody),
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
        (status = 400, description = "`bad_multipart`, `invalid_input` (stage), `missing_file`, \
                                      `invalid_plugin`", body = ErrorBody),
        (status = 403, description = "`admin_only`, `plugins_not_allowed`", body = ErrorBody),
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
#[derive(Debug, Serialize, ToSchema)]
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
    let plugin = tapedeck_store::plugins::get(&state.pool, Some(&tenant), &digest)
        .await?
        .filter(|p| p.stage == a.stage)
        .ok_or(ApiError::NotFound)?;
    let active = tapedeck_store::plugins::activate(
        &state.pool,
        &plugin.stage,
        Some(&tenant),
        &plugin.digest,
        tapedeck_store::plugins::ChosenBy::Tenant,
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
        other => ApiError::BadRequest(ErrorCode::BadMultipart, other.to_string()),
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
                    ErrorCode::BadMultipart,
                    "unknown field".into(),
                ));
            }
        }
    }
    let stage = stage.ok_or(ApiError::BadRequest(
        ErrorCode::InvalidInput,
        "no stage".into(),
    ))?;
    check_stage(&stage)?;
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
        tapedeck_store::plugins::get(&state.pool, owner.as_deref(), &digest).await?
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
    let request = tapedeck_model::plugins::CheckRequest {
        stage: &stage,
        bytes: &bytes,
        tenant: owner.as_deref(),
    };
    let report = state
        .plugin_check
        .check(request)
        .await
        .map_err(|e| match e {
            tapedeck_model::plugins::CheckError::Refused(why) => plugin_error(why),
            tapedeck_model::plugins::CheckError::Busy(why) => {
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
            &tapedeck_store::plugins::blob_key(&digest),
            body,
            MAX_PLUGIN_BYTES,
        )
        .await;
    if let Err(e) = put {
        refund_quota(state, owner.as_deref(), size).await;
        return Err(ApiError::internal(format!("storing the component: {e}")));
    }
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
    let created = tapedeck_store::plugins::publish(&state.pool, &plugin).await;
    if !matches!(created, Ok(true)) {
        // Not registered by this request (an error, or a concurrent publish won).
        refund_quota(state, plugin.owner.as_deref(), size).await;
    }
    let status = if created? {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(PluginEnvelope { plugin })))
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
#[derive(Debug, Serialize, ToSchema)]
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
    crate::extract::ApiQuery(q): crate::extract::ApiQuery<StageQuery>,
) -> Result<Json<PluginList>, ApiError> {
    let mut out = Vec::new();
    for stage in tapedeck_model::plugins::REGISTRY_STAGES {
        if q.stage.as_deref().is_none_or(|s| s == *stage) {
            out.extend(tapedeck_store::plugins::list(&state.pool, stage).await?);
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
    if let Some(p) = tapedeck_store::plugins::runnable_in(&state.pool, digest, tenant).await? {
        return Ok(p);
    }
    let key = tapedeck_store::plugins::blob_key(digest);
    if is_sha256_hex(digest) && state.blobs.size(&key).await.is_ok() {
        return Err(ApiError::BadRequest(
            ErrorCode::InvalidInput,
            format!(
                "{digest} is a tenant's own component and runs only for it; publish it \
                 yourself to run it for {}",
                tenant.unwrap_or("everyone")
            ),
        ));
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
        return Err(ApiError::BadRequest(
            ErrorCode::InvalidInput,
            format!("{digest} is a {} component", plugin.stage),
        ));
    }
    let active = tapedeck_store::plugins::activate(
        &state.pool,
        &a.stage,
        a.tenant.as_deref(),
        &digest,
        tapedeck_store::plugins::ChosenBy::Operator,
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
    let active = tapedeck_store::plugins::rollback(&state.pool, &a.stage, a.tenant.as_deref())
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
#[derive(Debug, Serialize, ToSchema)]
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
        active: tapedeck_store::plugins::active(&state.pool).await?,
        version: tapedeck_store::plugins::version(&state.pool).await?,
        processes: tapedeck_store::plugins::applied_by(&state.pool, 15_000).await?,
    }))
}

/// `{"history": [...]}`
#[derive(Debug, Serialize, ToSchema)]
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
    crate::extract::ApiQuery(q): crate::extract::ApiQuery<StageQuery>,
) -> Result<Json<History>, ApiError> {
    let history = tapedeck_store::plugins::history(&state.pool, q.stage.as_deref(), 1000).await?;
    Ok(Json(History { history }))
}
