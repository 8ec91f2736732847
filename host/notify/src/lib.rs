//! Notifications: when a job is done or has failed, its owner hears about it by e-mail
//! and, where the tenant configured one, by a signed webhook.
//!
//! # Layout
//! - `consumer.rs`: [`NotifyConsumer`], the consumer group `notifiers` on each tenant's `td:{T}:notify`:
//!   builds the event, runs the notifier component, delivers what it queued (with
//!   per-tenant caps, retries with backoff, a delivery record against duplicates, dead
//!   letters on `td:{T}:notify:dead`), then acknowledges.
//! - `mail.rs`: [`Mailer`], SMTP through a pooled lettre transport, or `.eml` objects in
//!   the outbox of the blob store (`tapedeck_blobs::outbox`), which every gateway lists.
//! - `webhook.rs`: [`WebhookClient`], signed POSTs pinned to a checked address;
//!   [`verify_signature`] for receivers.
//!
//! Which addresses webhooks may reach is `tapedeck_model::net`; the tenants' settings live
//! in `tapedeck_store::notify_settings`.
//!
//! Composing is a [`Composer`]'s (the notifier component, world `notifier` in
//! `wit/notifier.wit`, through `tapedeck-runtime`): it can queue mail to the job's owner
//! and a webhook to the tenant's URL, and nothing else (`SendPolicy`). All delivery is
//! here; this crate does not link wasmtime.
//!
//! Contact points: `serve` spawns [`run_notifier`] for roles that run workers; the
//! pipeline (`tapedeck_store::queue`) writes the `td:{T}:notify` entries.

mod consumer;
mod mail;
mod webhook;

use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use consumer::{GROUP, NotifierStats, NotifyConsumer, delivery_key, notify_dead_key};
pub use mail::{MailConfigError, Mailer};
pub use tapedeck_model::net::{AddressPolicy, IpNet, is_public};
pub use tapedeck_model::notify::Composer;
pub use tapedeck_store::notify_settings::{self as settings, SettingsUpdate, TenantNotifySettings};
pub use webhook::{
    DELIVERY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, VerifyError, WebhookClient, sign,
    verify_signature,
};

/// Why one delivery attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// Worth retrying: SMTP down, a timeout, a webhook 5xx/408/429, DNS failure.
    #[error("{0}")]
    Transient(String),
    /// Retrying cannot help: refused address, bad recipient, a webhook 4xx.
    #[error("{0}")]
    Permanent(String),
}

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis pool: {0}")]
    Pool(#[from] tapedeck_store::PoolError),
    #[error("invalid notification settings: {0}")]
    InvalidSettings(String),
    #[error("{0}")]
    Settings(#[from] tapedeck_store::notify_settings::SettingsError),
    #[error("mail: {0}")]
    Mail(#[from] MailConfigError),
    /// No `--public-url` and no gateway has published one: links cannot be written yet.
    #[error(
        "no public URL for download links: start a gateway (it publishes its URL in Redis) or set --public-url / TAPEDECK_PUBLIC_URL"
    )]
    NoPublicUrl,
}

/// How the notifier runs. [`NotifierConfig::new`] gives the embedded defaults; `serve`
/// applies the service's settings (`config`).
#[derive(Debug, Clone)]
pub struct NotifierConfig {
    /// `smtp://`, `smtp://...?tls=required` (STARTTLS) or `smtps://` URL with optional
    /// `user:password@`; `None`: mail goes to `outbox` as `.eml` objects.
    pub smtp_url: Option<String>,
    /// Where mail goes without SMTP: the deployment's outbox in the blob store.
    pub outbox: tapedeck_blobs::Outbox,
    /// The `From` of every e-mail.
    pub mail_from: String,
    /// Prefix of download links (`{public_base_url}/v1/jobs/{id}/output?expires=..&sig=..`);
    /// `None`: the URL a gateway published in Redis (`td:public_url`).
    pub public_base_url: Option<String>,
    /// How long download links work.
    pub link_ttl: Duration,
    /// Non-public networks webhooks may reach anyway.
    pub webhook_allow: Vec<IpNet>,
    /// Whole-request limit of a webhook (connect, send, answer).
    pub webhook_timeout: Duration,
    /// Limit of each SMTP command.
    pub smtp_timeout: Duration,
    /// This process's name in the consumer group; unique per process.
    pub consumer: String,
    /// Notifications handled at once.
    pub concurrency: usize,
    /// Delivery attempts per message before it is dead-lettered.
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt (capped at `retry_max`), plus up to 50% jitter.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// An entry whose consumer stopped heart-beating this long is taken over.
    pub visibility_timeout: Duration,
    /// Messages per tenant per hour when the tenant's settings name no cap.
    pub default_max_per_hour: u32,
    /// Pause between reads of an empty stream.
    pub poll_interval: Duration,
}

impl NotifierConfig {
    /// Defaults: mail to `outbox`, links to `public_base_url`, 6 attempts from 2 s.
    pub fn new(outbox: tapedeck_blobs::Outbox, public_base_url: impl Into<String>) -> Self {
        Self {
            smtp_url: None,
            outbox,
            mail_from: "Tapedeck <noreply@tapedeck.localhost>".into(),
            public_base_url: Some(public_base_url.into()),
            link_ttl: Duration::from_secs(7 * 86_400),
            webhook_allow: Vec::new(),
            webhook_timeout: Duration::from_secs(5),
            smtp_timeout: Duration::from_secs(10),
            consumer: format!(
                "notifier-{}-{}",
                tapedeck_store::queue::hostname(),
                std::process::id()
            ),
            concurrency: 16,
            max_attempts: 6,
            retry_base: Duration::from_secs(2),
            retry_max: Duration::from_secs(300),
            visibility_timeout: Duration::from_secs(60),
            default_max_per_hour: 200,
            poll_interval: Duration::from_millis(200),
        }
    }
}

/// Parses a comma-separated allow-list of addresses and networks.
pub fn parse_allow_list(list: &str) -> Result<Vec<IpNet>, NotifyError> {
    tapedeck_model::net::parse_networks(list).map_err(NotifyError::InvalidSettings)
}

/// Consumes the tenants' `td:{T}:notify` streams until `shutdown` is cancelled: the notifier's background task.
/// In-flight deliveries stop at their next retry wait and stay pending (another process,
/// or this one after a restart, takes them over).
pub async fn run_notifier(
    pool: tapedeck_store::Pool,
    composer: impl Into<tapedeck_model::stage::Stage<dyn Composer>>,
    config: NotifierConfig,
    shutdown: CancellationToken,
) -> Result<(), NotifyError> {
    NotifyConsumer::new(pool, composer, config)?
        .run(shutdown)
        .await
}
