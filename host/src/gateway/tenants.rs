//! Tenants as the gateway needs them: existence, self-registration, upload limit.
//! Stored in `td:tenant:{name}`; the default tenant is created at startup. Also the
//! tenant admin's view of its notification settings (`/v1/tenant/notifications`).

use std::collections::HashMap;

use axum::Json;
use axum::extract::State;
use deadpool_redis::Pool;
use redis::AsyncCommands;
use serde_json::{Value, json};

use crate::gateway::error::ApiError;
use crate::gateway::extract::ApiJson;
use crate::gateway::{AppState, Caller};
use crate::notify::{AddressPolicy, NotifyError, SettingsUpdate, settings as notify_settings};

/// The tenant every install has; allows self-registration.
pub const DEFAULT_TENANT: &str = "default";

pub fn tenant_key(name: &str) -> String {
    format!("td:tenant:{name}")
}

/// A tenant's settings, with server defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub name: String,
    /// Anyone may register an account.
    pub self_register: bool,
    /// Largest accepted upload; never above the server's limit.
    pub max_upload_bytes: u64,
}

/// Tenant names are safe in keys and URLs: 1..=64 of `[a-z0-9_-]`.
pub fn valid_tenant_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Creates the default tenant if missing (never overwrites an operator's settings).
pub async fn ensure_default_tenant(pool: &Pool) -> anyhow::Result<()> {
    let mut conn = pool.get().await?;
    let _: bool = conn
        .hset_nx(tenant_key(DEFAULT_TENANT), "self_register", "1")
        .await?;
    Ok(())
}

/// Loads a tenant; `None` if it does not exist. `server_max_upload` caps its limit.
pub async fn load_tenant(
    pool: &Pool,
    name: &str,
    server_max_upload: u64,
) -> Result<Option<Tenant>, ApiError> {
    if !valid_tenant_name(name) {
        return Ok(None);
    }
    let mut conn = pool.get().await?;
    let h: HashMap<String, String> = conn.hgetall(tenant_key(name)).await?;
    if h.is_empty() {
        return Ok(None);
    }
    let max_upload_bytes = h
        .get("max_upload_bytes")
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(server_max_upload, |v| v.min(server_max_upload));
    Ok(Some(Tenant {
        name: name.to_owned(),
        self_register: h.get("self_register").is_some_and(|v| v == "1"),
        max_upload_bytes,
    }))
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

impl From<NotifyError> for ApiError {
    fn from(e: NotifyError) -> Self {
        match e {
            NotifyError::InvalidSettings(why) => ApiError::BadRequest("invalid_settings", why),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

/// `GET /v1/tenant/notifications`: the caller's tenant's settings (admin only; the
/// webhook secret is never shown, only whether one is set).
pub async fn get_notifications(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    require_admin(&caller)?;
    let current = notify_settings::load(&state.pool, &caller.0.tenant).await?;
    Ok(Json(json!({ "settings": current })))
}

/// `PUT /v1/tenant/notifications` with a JSON [`SettingsUpdate`] (absent fields stay):
/// turns e-mail and webhooks on or off, sets the webhook URL, secret and hourly cap.
/// A secret generated because webhooks were turned on without one is returned once.
pub async fn put_notifications(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(change): ApiJson<SettingsUpdate>,
) -> Result<Json<Value>, ApiError> {
    require_admin(&caller)?;
    let (settings, generated) = notify_settings::update(
        &state.pool,
        &caller.0.tenant,
        &change,
        &AddressPolicy::new(state.webhook_allow.to_vec()),
    )
    .await?;
    let mut body = json!({ "settings": settings });
    if let Some(secret) = generated {
        body["webhook_secret"] = Value::String(secret);
    }
    Ok(Json(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_names() {
        assert!(valid_tenant_name("default"));
        assert!(valid_tenant_name("acme-2_x"));
        assert!(!valid_tenant_name(""));
        assert!(!valid_tenant_name("Acme"));
        assert!(!valid_tenant_name("a b"));
        assert!(!valid_tenant_name("a:b"));
    }
}
