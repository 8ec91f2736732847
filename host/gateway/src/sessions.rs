//! Revocable sessions in the gateway: every authenticated request checks that its token's
//! session still exists (`tapedeck_store::sessions`), and `POST /v1/auth/logout`,
//! `POST /v1/auth/logout-all` and `POST /v1/auth/password` end sessions.
//!
//! Cost: a token seen in the last [`SessionGate::ttl`] (1 s by default) is answered from
//! a small in-process cache — no auth-component call, no Redis round trip; otherwise one
//! component verify and one Redis round trip. So a revocation reaches every gateway within
//! `ttl`, and at once in the gateway that made it (it drops its own cache entries).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::extract::ApiJson;
use crate::login_guard::ClientAddr;
use crate::{AppState, Caller};
use tapedeck_model::auth::{AuthError, Claims};
use tapedeck_model::now_ms;
use tapedeck_store::sessions::Sessions;

/// Most tokens the cache holds; past it, expired entries go, then all.
const CACHE_CAPACITY: usize = 50_000;

/// Checks and ends sessions; cheap to clone.
#[derive(Clone)]
pub struct SessionGate {
    pub store: Sessions,
    /// How long a positive check is trusted without asking Redis again.
    pub ttl: Duration,
    cache: Arc<Mutex<HashMap<String, (Claims, Instant)>>>,
}

impl SessionGate {
    pub fn new(store: Sessions, ttl: Duration) -> Self {
        Self {
            store,
            ttl,
            cache: Arc::default(),
        }
    }

    /// The claims of `token` if it was checked less than `ttl` ago.
    pub fn cached(&self, token: &str) -> Option<Claims> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let (claims, until) = cache.get(token)?;
        (Instant::now() < *until && claims.exp > now_ms() / 1000).then(|| claims.clone())
    }

    /// Remembers a token whose session was just found live.
    pub fn remember(&self, token: &str, claims: &Claims) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if cache.len() >= CACHE_CAPACITY {
            cache.retain(|_, (_, until)| *until > now);
            if cache.len() >= CACHE_CAPACITY {
                cache.clear();
            }
        }
        cache.insert(token.to_owned(), (claims.clone(), now + self.ttl));
    }

    /// Forgets what this process cached for a user (its sessions just ended).
    fn forget_user(&self, tenant: &str, user_id: &str) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.retain(|_, (c, _)| !(c.tenant == tenant && c.user_id == user_id));
    }

    /// Checks a token's session in Redis (after its signature was verified).
    pub async fn check(&self, token: &str, claims: &Claims) -> Result<(), ApiError> {
        if self
            .store
            .is_live(&claims.tenant, &claims.user_id, token)
            .await?
        {
            self.remember(token, claims);
            Ok(())
        } else {
            Err(session_ended())
        }
    }

    /// Ends every session of a user, here and (within `ttl`) everywhere.
    pub async fn end_all(&self, tenant: &str, user_id: &str) -> Result<u64, ApiError> {
        let n = self.store.end_all(tenant, user_id).await?;
        self.forget_user(tenant, user_id);
        Ok(n)
    }

    /// Ends one session.
    pub async fn end(&self, token: &str, claims: &Claims) -> Result<(), ApiError> {
        self.store
            .end(&claims.tenant, &claims.user_id, token)
            .await?;
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.remove(token);
        Ok(())
    }
}

fn session_ended() -> ApiError {
    ApiError::Unauthorized(ErrorCode::InvalidToken, "missing, invalid or expired token")
}

/// Ends the session of the token that makes this request.
#[utoipa::path(
    post,
    path = "/v1/auth/logout",
    tag = "auth",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "This token no longer works"),
        (status = 401, description = "`invalid_token`", body = ErrorBody),
    ),
)]
pub async fn logout(
    State(state): State<AppState>,
    Caller(caller): Caller,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let token = token_of(&headers)?;
    state.sessions.end(token, &caller).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// How many sessions ended.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = SessionsEnded)]
pub struct Ended {
    pub ended: u64,
}

/// Ends every session of the caller (every token issued to them so far).
#[utoipa::path(
    post,
    path = "/v1/auth/logout-all",
    tag = "auth",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every token of the caller ended", body = Ended),
        (status = 401, description = "`invalid_token`", body = ErrorBody),
    ),
)]
pub async fn logout_all(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Json<Ended>, ApiError> {
    let ended = state
        .sessions
        .end_all(&caller.tenant, &caller.user_id)
        .await?;
    Ok(Json(Ended { ended }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    pub current_password: String,
    pub new_password: String,
}

/// Changes the caller's password. Every token of the caller ends, this one too: log in
/// again with the new password. A wrong current password counts as a failed login.
#[utoipa::path(
    post,
    path = "/v1/auth/password",
    tag = "auth",
    security(("bearer" = [])),
    request_body = PasswordChange,
    responses(
        (status = 204, description = "Changed; every session of the caller ended"),
        (status = 400, description = "`invalid_input`: a weak new password", body = ErrorBody),
        (status = 401, description = "`invalid_credentials`: wrong current password, or `invalid_token`", body = ErrorBody),
        (status = 429, description = "`too_many_attempts`", body = ErrorBody),
    ),
)]
pub async fn change_password(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    Caller(caller): Caller,
    ApiJson(body): ApiJson<PasswordChange>,
) -> Result<StatusCode, ApiError> {
    // The current password, through the failed-login guard like any login.
    crate::account::guarded_login(
        &state,
        &caller.tenant,
        &caller.email,
        &body.current_password,
        addr,
    )
    .await?;
    let auth = state.auth.for_tenant(&caller.tenant).stage.clone();
    auth.change_password(&caller.tenant, &caller.email, &body.new_password)
        .await
        .map_err(|e| match e {
            AuthError::InvalidCredentials => session_ended(),
            other => other.into(),
        })?;
    state
        .sessions
        .end_all(&caller.tenant, &caller.user_id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

fn token_of(headers: &HeaderMap) -> Result<&str, ApiError> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::bearer_token)
        .ok_or_else(session_ended)
}
