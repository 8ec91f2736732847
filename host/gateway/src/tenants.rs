//! The tenant admin's view of its notification settings (`/v1/tenant/notifications`).
//! Tenants themselves are `tapedeck_store::tenants`.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::{AppState, Caller};
use tapedeck_model::net::AddressPolicy;
use tapedeck_store::notify_settings::{self as notify_settings, SettingsUpdate};

/// Refuses a caller who is not an admin of their tenant (403 `admin_only`).
pub(crate) fn require_admin(caller: &Caller) -> Result<(), ApiError> {
    if caller.0.is_admin() {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            "admin_only",
            "only a tenant admin may do this".into(),
        ))
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
