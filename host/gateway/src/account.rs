//! `POST /v1/auth/register` and `POST /v1/auth/login`.

use std::net::IpAddr;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::extract::ApiJson;
pub use crate::login_guard::ClientAddr;
use tapedeck_model::auth::{AuthError, IssuedToken};
use tapedeck_store::tenants::{DEFAULT_TENANT, load_tenant, valid_tenant_name};

#[derive(Debug, Deserialize, ToSchema)]
pub struct Credentials {
    /// Defaults to the `default` tenant.
    #[schema(nullable = false, pattern = "^[a-z0-9_-]{1,64}$")]
    pub tenant: Option<String>,
    /// Any case; kept trimmed and in lower case. The auth stage and the mailer both
    /// accept every address of the pattern (they take more: 254 characters, 64 before
    /// the `@`, dotted atoms); the spec states a subset a client can rely on.
    #[schema(
        max_length = 254,
        pattern = "^[A-Za-z0-9_%+-]{1,32}(\\.[A-Za-z0-9_%+-]{1,16}){0,1}@[A-Za-z0-9]{1,20}(\\.[A-Za-z0-9]{1,20}){1,3}$"
    )]
    pub email: String,
    /// At least 8 characters, at most 1024 bytes (any 256 characters fit).
    #[schema(min_length = 8, max_length = 256)]
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
        (status = 403, description = "`registration_closed`: no such tenant, or it does not allow self-registration (the same answer, so tenants cannot be enumerated)", body = ErrorBody),
        (status = 409, description = "`email_taken`", body = ErrorBody),
    ),
)]
pub async fn register(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<Credentials>,
) -> Result<(StatusCode, Json<Registered>), ApiError> {
    let tenant_name = body.tenant.as_deref().unwrap_or(DEFAULT_TENANT);
    // An unknown tenant and a closed one get the same answer, in the same time: which
    // tenants exist is not for anonymous callers to learn.
    let tenant = match load_tenant(&state.pool, tenant_name).await? {
        Some(t) if t.self_register => t,
        _ => {
            return Err(ApiError::Forbidden(
                ErrorCode::RegistrationClosed,
                "registration is not open for this tenant".into(),
            ));
        }
    };
    let auth = state.auth.for_tenant(&tenant.name).stage.clone();
    let email = auth.normalize_email(&body.email)?;
    deliverable(&email)?;
    auth.register(&tenant.name, &body.email, &body.password)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(Registered {
            tenant: tenant.name,
            email,
        }),
    ))
}

/// 400 unless the notifier can send mail to `email` (an address lettre accepts: the
/// auth stage's own check is looser, e.g. it takes `a@b.c"d`).
pub fn deliverable(email: &str) -> Result<(), ApiError> {
    match email.parse::<lettre::Address>() {
        Ok(_) => Ok(()),
        Err(_) => Err(ApiError::invalid_input(format!(
            "{email:?} is not an address mail can be delivered to"
        ))),
    }
}

/// Issues a token for an e-mail and password. Failed attempts are throttled.
#[utoipa::path(
    post,
    path = "/v1/auth/login",
    tag = "auth",
    request_body = Credentials,
    responses(
        (status = 200, description = "A token", body = tapedeck_model::auth::IssuedToken),
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
    // An unknown tenant costs the same as a known one (the component pays one hash
    // verification for an unknown user), so the answer's time does not tell them apart.
    let issued_at = state
        .sessions
        .store
        .issue_second(tenant, &email, tapedeck_model::now_ms() / 1000)
        .await?;
    let outcome = match auth.login(tenant, &email, password, issued_at).await {
        Ok(_) if !known_tenant => Err(AuthError::InvalidCredentials),
        other => other,
    };
    match outcome {
        Ok(token) => {
            // The token works only once its session is recorded (for the tenant's
            // current incarnation: a tenant deleted meanwhile gives no session).
            let claims = auth.verify(&token.token).await?;
            if claims.tenant != tenant
                || !state
                    .sessions
                    .store
                    .record(tenant, &claims.user_id, &token.token, claims.exp)
                    .await?
            {
                return Err(AuthError::InvalidCredentials.into());
            }
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

#[cfg(test)]
mod tests {
    use super::deliverable;

    #[test]
    fn only_addresses_mail_can_reach_are_deliverable() {
        for ok in ["ann@example.com", "a.b+c@sub.example.org", "x_y@example.co"] {
            assert!(deliverable(ok).is_ok(), "{ok}");
        }
        // Each passes the auth stage's looser check (no space, one `@`, a dotted domain).
        for bad in [
            "a(b)@example.com",
            "a,b@example.com",
            "a..b@example.com",
            "a\"b@example.com",
        ] {
            assert!(deliverable(bad).is_err(), "{bad}");
        }
    }
}
