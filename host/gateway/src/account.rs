//! `POST /v1/auth/register` and `POST /v1/auth/login`.

use std::net::IpAddr;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::ApiError;
use crate::extract::ApiJson;
pub use crate::login_guard::ClientAddr;
use tapedeck_model::auth::{AuthError, IssuedToken};
use tapedeck_store::tenants::{DEFAULT_TENANT, load_tenant, valid_tenant_name};

#[derive(Debug, Deserialize)]
pub struct Credentials {
    /// Defaults to the `default` tenant.
    pub tenant: Option<String>,
    pub email: String,
    pub password: String,
}

pub async fn register(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<Credentials>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let tenant_name = body.tenant.as_deref().unwrap_or(DEFAULT_TENANT);
    let tenant = load_tenant(&state.pool, tenant_name)
        .await?
        .ok_or(ApiError::NotFound)?;
    if !tenant.self_register {
        return Err(ApiError::Forbidden(
            "registration_closed",
            "this tenant does not allow self-registration".into(),
        ));
    }
    let auth = state.auth.for_tenant(&tenant.name).stage.clone();
    auth.register(&tenant.name, &body.email, &body.password)
        .await?;
    let email = auth.normalize_email(&body.email)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"tenant": tenant.name, "email": email})),
    ))
}

pub async fn login(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    ApiJson(body): ApiJson<Credentials>,
) -> Result<Json<IssuedToken>, ApiError> {
    let tenant = body.tenant.as_deref().unwrap_or(DEFAULT_TENANT);
    Ok(Json(
        guarded_login(&state, tenant, &body.email, &body.password, addr).await?,
    ))
}

/// Login through the failed-attempt guard (shared with the compat `/login`).
pub async fn guarded_login(
    state: &AppState,
    tenant: &str,
    email: &str,
    password: &str,
    addr: Option<IpAddr>,
) -> Result<IssuedToken, ApiError> {
    if !valid_tenant_name(tenant) {
        return Err(AuthError::InvalidCredentials.into());
    }
    let auth = state.auth.for_tenant(tenant).stage.clone();
    let email = auth
        .normalize_email(email)
        .map_err(|_| AuthError::InvalidCredentials)?;
    state.guard.check(tenant, &email, addr).await?;
    let known_tenant = load_tenant(&state.pool, tenant).await?.is_some();
    let outcome = if known_tenant {
        auth.login(tenant, &email, password).await
    } else {
        Err(AuthError::InvalidCredentials)
    };
    match outcome {
        Ok(token) => {
            state.guard.record_success(tenant, &email, addr).await?;
            Ok(token)
        }
        Err(AuthError::InvalidCredentials) => {
            state.guard.record_failure(tenant, &email, addr).await?;
            Err(AuthError::InvalidCredentials.into())
        }
        Err(other) => Err(other.into()),
    }
}
