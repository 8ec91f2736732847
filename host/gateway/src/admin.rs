//! The operator API (`/v1/admin/...`, bearer = the operator token) and the tenant
//! admin's users and usage (`/v1/tenant/users`, `/v1/tenant/usage`). The contract is
//! `docs/admin-api.md`; `tapedeck admin` is its CLI.

use axum::Json;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::{AppState, Caller, bearer_token};
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
        let token = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token);
        match token {
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

fn require_admin(caller: &Caller) -> Result<(), ApiError> {
    if caller.0.is_admin() {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            "admin_only",
            "only a tenant admin may do this".into(),
        ))
    }
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
