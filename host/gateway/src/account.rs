//! `POST /v1/auth/register` and `POST /v1/auth/login`.

use std::net::IpAddr;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::extract::ApiJson;
pub use crate::login_guard::ClientAddr;
use tapedeck_model::auth::{AuthError, IssuedToken};
use tapedeck_store::tenants::{DEFAULT_TENANT, load_tenant, valid_tenant_name};

#[derive(Debug, Deserialize, ToSchema)]
pub struct Credentials {
    /// Defaults to the `default` tenant.
    #[schema(nullable = false)]
    pub tenant: Option<String>,
    pub email: String,
    pub password: String,
}

/// The account `POST /v1/auth/register` created.
#[derive(Debug, Serialize, ToSchema)]
pub struct Registered {
    pub tenant: String,
    /// Normalised (trimmed, lower case).
    pub email: String,
}

/// Creates an account (in a tenant that allows self-registration).
#[utoipa::path(
    post,
    path = "/v1/auth/register",
    tag = "auth",
    request_body = Credentials,
    responses(
        (status = 201, description = "Created", body = Registered),
        (status = 400, description = "`invalid_input`: not an e-mail address, a weak password",
         body = ErrorBody),
        (status = 403, description = "`registration_closed`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such tenant", body = ErrorBody),
        (status = 409, description = "`email_taken`", body = ErrorBody),
    ),
)]
pub async fn register(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<Credentials>,
) -> Result<(StatusCode, Json<Registered>), ApiError> {
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
        Json(Registered {
            tenant: tenant.name,
            email,
        }),
    ))
}

/// Issues a token for an e-mail and password. Failed attempts are throttled.
#[utoipa::path(
    post,
    path = "/v1/auth/login",
    tag = "auth",
    request_body = Credentials,
    responses(
        (status = 200, description = "A token", body = crate::openapi::IssuedToken),
        (status = 401, description = "`invalid_credentials`", body = ErrorBody),
        (status = 429, description = "`too_many_attempts` (`Retry-After`)", body = ErrorBody,
         headers(("Retry-After" = u64, description = "Seconds"))),
    ),
)]
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
