//! A tenant admin's notification settings (`/v1/tenant/notifications`); the records are
//! `tapedeck_store::notify_settings`.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::extract::{ApiJson, require_admin};
use crate::{AppState, Caller};
use tapedeck_model::net::AddressPolicy;
use tapedeck_store::notify_settings::{
    self as notify_settings, SettingsUpdate, TenantNotifySettings,
};

/// A tenant's notification settings; `webhook_secret` only once, when one was generated.
#[derive(Debug, Serialize, ToSchema)]
pub struct Notifications {
    pub settings: TenantNotifySettings,
    /// The secret generated because webhooks were turned on without one (shown once).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub webhook_secret: Option<String>,
}

/// The tenant's notification settings (tenant admin).
///
/// The webhook secret is never shown, only whether one is set.
#[utoipa::path(
    get,
    path = "/v1/tenant/notifications",
    tag = "tenant",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The settings", body = Notifications),
        (status = 403, description = "`admin_only`", body = ErrorBody),
    ),
)]
pub async fn get_notifications(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Notifications>, ApiError> {
    require_admin(&caller)?;
    let current = notify_settings::load(&state.pool, &caller.0.tenant).await?;
    Ok(Json(Notifications {
        settings: current,
        webhook_secret: None,
    }))
}

/// `PUT /v1/tenant/notifications` with a JSON [`SettingsUpdate`] (absent fields stay):
/// turns e-mail and webhooks on or off, sets the webhook URL, secret and hourly cap.
/// A secret generated because webhooks were turned on without one is returned once.
#[utoipa::path(
    put,
    path = "/v1/tenant/notifications",
    tag = "tenant",
    security(("bearer" = [])),
    request_body = tapedeck_store::notify_settings::SettingsUpdate,
    responses(
        (status = 200, description = "The settings now", body = Notifications),
        (status = 400, description = "`invalid_settings`: e.g. a webhook URL that is not \
                                      public, a short secret, a field that is not a setting \
                                      (named)", body = ErrorBody),
        (status = 403, description = "`admin_only`", body = ErrorBody),
    ),
)]
pub async fn put_notifications(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(change): ApiJson<serde_json::Value>,
) -> Result<Json<Notifications>, ApiError> {
    require_admin(&caller)?;
    let change = settings_update(change)?;
    let (settings, generated) = notify_settings::update(
        &state.pool,
        &caller.0.tenant,
        &change,
        &AddressPolicy::new(state.webhook_allow.to_vec()),
    )
    .await?;
    Ok(Json(Notifications {
        settings,
        webhook_secret: generated,
    }))
}

/// The change a `PUT` body asks for. A field that is not a setting is a 400 naming it
/// (`unknown field `colour`, expected one of ...`), so a misspelt one never passes for
/// applied; a body of the wrong shape is a 422, as for every other JSON body.
fn settings_update(body: serde_json::Value) -> Result<SettingsUpdate, ApiError> {
    serde_json::from_value(body).map_err(|e| {
        let why = e.to_string();
        if why.starts_with("unknown field") {
            ApiError::BadRequest(ErrorCode::InvalidSettings, why)
        } else {
            ApiError::Rejected(
                axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::InvalidBody,
                why,
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_setting_is_named() {
        let e = settings_update(serde_json::json!({"email": true, "colour": "red"}))
            .expect_err("refused");
        assert!(
            matches!(&e, ApiError::BadRequest(ErrorCode::InvalidSettings, why) if why.contains("`colour`")),
            "{e:?}"
        );
        let ok = settings_update(serde_json::json!({"max_per_hour": 5})).unwrap();
        assert_eq!(ok.max_per_hour, Some(5));
    }
}
