//! A tenant's notification settings, kept in the hash `td:{T}:notify:settings`.
//!
//! Contact points: the notifier reads them for every event ([`load`]); the gateway can
//! expose [`load`] and [`update`] to tenant admins (e.g. `GET`/`PUT
//! /v1/tenant/notifications`), showing [`TenantNotifySettings`] (which never serializes
//! the secret) and taking a [`SettingsUpdate`].

use std::collections::HashMap;
use std::time::Duration;

use crate::Pool;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

use tapedeck_model::net::AddressPolicy;

use crate::keys::notify_settings_key as settings_key;

/// Why settings could not be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("invalid notification settings: {0}")]
    Invalid(String),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis pool: {0}")]
    Pool(#[from] crate::PoolError),
}

/// What a tenant chose. Without a stored hash: e-mail on, no webhook, the server's cap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TenantNotifySettings {
    /// Job owners get an e-mail.
    pub email: bool,
    /// The webhook gets a request (needs `webhook_url`).
    pub webhook: bool,
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub webhook_url: Option<String>,
    /// Key of the webhooks' HMAC signatures; never shown.
    #[serde(skip)]
    pub webhook_secret: Option<String>,
    /// Whether a secret is set (what an admin may see of it).
    pub webhook_secret_set: bool,
    /// Messages (mail and webhooks) per hour; `None`: the server default.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub max_per_hour: Option<u32>,
}

impl Default for TenantNotifySettings {
    fn default() -> Self {
        Self {
            email: true,
            webhook: false,
            webhook_url: None,
            webhook_secret: None,
            webhook_secret_set: false,
            max_per_hour: None,
        }
    }
}

/// A change to a tenant's settings; absent fields stay as they are, unknown ones are
/// refused (a misspelt setting must not pass for applied).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SettingsUpdate {
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub email: Option<bool>,
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub webhook: Option<bool>,
    /// `Some("")` removes the URL.
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub webhook_url: Option<String>,
    /// At least 16 characters; when webhooks are turned on without one, a random secret is
    /// generated and returned once by [`update`].
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub webhook_secret: Option<String>,
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub max_per_hour: Option<u32>,
}

/// Reads `tenant`'s settings (defaults for a tenant that stored none).
pub async fn load(pool: &Pool, tenant: &str) -> Result<TenantNotifySettings, SettingsError> {
    let mut conn = pool.get().await?;
    let h: HashMap<String, String> = conn.hgetall(settings_key(tenant)).await?;
    Ok(from_hash(&h))
}

/// [`load`] for the notifier's every event: settings this process read less than the
/// pool's read cache time ago (1 s) are not read again ([`Pool::hgetall_cached`]).
pub async fn load_cached(pool: &Pool, tenant: &str) -> Result<TenantNotifySettings, SettingsError> {
    let h = pool.hgetall_cached(&settings_key(tenant)).await?;
    Ok(from_hash(&h))
}

fn from_hash(h: &HashMap<String, String>) -> TenantNotifySettings {
    let defaults = TenantNotifySettings::default();
    let flag = |k: &str, default: bool| h.get(k).map_or(default, |v| v == "1");
    let text = |k: &str| h.get(k).filter(|v| !v.is_empty()).cloned();
    let secret = text("webhook_secret");
    TenantNotifySettings {
        email: flag("email", defaults.email),
        webhook: flag("webhook", defaults.webhook),
        webhook_url: text("webhook_url"),
        webhook_secret_set: secret.is_some(),
        webhook_secret: secret,
        max_per_hour: h.get("max_per_hour").and_then(|v| v.parse().ok()),
    }
}

/// Applies `change` to `tenant`'s settings after checking it. Returns the new settings
/// and, when one was generated, the new webhook secret (to show the admin once).
///
/// A webhook URL must be http(s) and resolve only to addresses `policy` permits (public
/// ones, plus the operator's allow-list): a tenant admin learns at once that a URL to
/// loopback, the private network or a metadata endpoint will never be called. Delivery
/// checks again, since a name may resolve elsewhere later.
pub async fn update(
    pool: &Pool,
    tenant: &str,
    change: &SettingsUpdate,
    policy: &AddressPolicy,
) -> Result<(TenantNotifySettings, Option<String>), SettingsError> {
    let current = load(pool, tenant).await?;
    let mut fields: Vec<(&str, String)> = Vec::new();
    if let Some(url) = &change.webhook_url {
        if !url.is_empty() {
            check_webhook_url(url)?;
            let parsed = url::Url::parse(url).expect("checked just above");
            policy
                .check_url(&parsed, Duration::from_secs(5))
                .await
                .map_err(|e| SettingsError::Invalid(format!("webhook_url: {e}")))?;
        }
        fields.push(("webhook_url", url.clone()));
    }
    if let Some(secret) = &change.webhook_secret {
        if secret.len() < 16 {
            return Err(SettingsError::Invalid(
                "the webhook secret needs at least 16 characters".into(),
            ));
        }
        fields.push(("webhook_secret", secret.clone()));
    }
    let webhook_on = change.webhook.unwrap_or(current.webhook);
    let url_after = change
        .webhook_url
        .clone()
        .or(current.webhook_url.clone())
        .filter(|u| !u.is_empty());
    if webhook_on && url_after.is_none() {
        return Err(SettingsError::Invalid("webhooks need a webhook_url".into()));
    }
    let mut generated = None;
    if webhook_on && change.webhook_secret.is_none() && current.webhook_secret.is_none() {
        let secret = hex::encode(rand::random::<[u8; 32]>());
        fields.push(("webhook_secret", secret.clone()));
        generated = Some(secret);
    }
    if let Some(on) = change.email {
        fields.push(("email", if on { "1" } else { "0" }.into()));
    }
    if let Some(on) = change.webhook {
        fields.push(("webhook", if on { "1" } else { "0" }.into()));
    }
    if let Some(cap) = change.max_per_hour {
        fields.push(("max_per_hour", cap.to_string()));
    }
    if !fields.is_empty() {
        let mut conn = pool.get().await?;
        let _: () = conn.hset_multiple(settings_key(tenant), &fields).await?;
        pool.forget(&settings_key(tenant));
    }
    Ok((load(pool, tenant).await?, generated))
}

/// An absolute http(s) URL with a host. Addresses are checked at delivery, when they
/// are resolved (a name may point elsewhere later).
pub fn check_webhook_url(url: &str) -> Result<(), SettingsError> {
    let parsed =
        url::Url::parse(url).map_err(|e| SettingsError::Invalid(format!("webhook_url: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
        return Err(SettingsError::Invalid(
            "webhook_url must be an http or https URL with a host".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_fields_take_defaults_and_secret_is_never_serialized() {
        assert_eq!(from_hash(&HashMap::new()), TenantNotifySettings::default());
        let h: HashMap<String, String> = [
            ("email", "0"),
            ("webhook", "1"),
            ("webhook_url", "https://h.example/x"),
            ("webhook_secret", "0123456789abcdef"),
            ("max_per_hour", "7"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let s = from_hash(&h);
        assert!(!s.email && s.webhook && s.webhook_secret_set);
        assert_eq!(s.max_per_hour, Some(7));
        let json = serde_json::to_string(&s).unwrap();
        assert!(!json.contains("0123456789abcdef"), "{json}");
    }

    #[test]
    fn webhook_urls_must_be_http() {
        assert!(check_webhook_url("https://h.example/x").is_ok());
        assert!(check_webhook_url("ftp://h.example/x").is_err());
        assert!(check_webhook_url("not a url").is_err());
    }
}
