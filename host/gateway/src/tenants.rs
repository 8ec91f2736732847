//! Tenants as the operator manages them (`/v1/admin/tenants...`: create, change, delete,
//! limits, usage) and a tenant's own usage (`/v1/tenant/usage`). The contract is
//! `docs/admin-api.md`; `tapedeck admin` is its CLI. The records are
//! `tapedeck_store::tenants`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::extract::{ApiJson, ApiPath, Operator, require_admin};
use crate::{AppState, Caller};
use tapedeck_model::api::{
    Deleting, LimitsView, NewTenant, TenantChange, TenantEnvelope, TenantList, TenantView,
};
use tapedeck_model::tenant::{LIMIT_NAMES, LimitsPatch, TenantLimits};
use tapedeck_store::tenants::{self, Tenant, valid_tenant_name};
use tapedeck_store::usage;

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

/// The tenant `name`, or 404.
pub(crate) async fn existing(state: &AppState, name: &str) -> Result<Tenant, ApiError> {
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
        return Err(ApiError::invalid_input(
            "a tenant name is 1 to 64 of a-z, 0-9, - and _",
        ));
    }
    body.limits.validate().map_err(ApiError::invalid_input)?;
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
            tapedeck_store::registry::revoke_tenant(&state.pool, &name).await?;
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
            return Err(ApiError::invalid_input(format!(
                "`{key}` is not a limit (one of: {})",
                LIMIT_NAMES.join(", ")
            )));
        };
        let value = match value {
            Value::Null => None,
            v => Some(v.as_u64().ok_or_else(|| {
                ApiError::invalid_input(format!("`{key}` must be a whole number or null"))
            })?),
        };
        next.set(name, value);
        changes.push((name, value));
    }
    next.validate().map_err(ApiError::invalid_input)?;
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
#[derive(Debug, Serialize, Deserialize, ToSchema)]
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
