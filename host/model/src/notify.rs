//! The notifier seam: for a finished job the notify consumer asks a [`Composer`] (the
//! notifier component, through `tapedeck-runtime`) for the messages to send, within a
//! [`SendPolicy`], and delivers what comes back itself.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Longest subject a mail keeps.
pub const MAX_SUBJECT_CHARS: usize = 200;

/// What one run may queue: decided by the host from the tenant's settings and the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendPolicy {
    /// The only address mail may go to (the job's owner); `None`: e-mail is off.
    pub mail_to: Option<String>,
    /// The only URL a webhook may go to (the tenant's); `None`: webhooks are off.
    pub webhook_url: Option<String>,
}

/// An e-mail the guest queued, checked and cleaned by the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutgoingMail {
    pub to: String,
    /// One line, at most 200 characters, no control characters.
    pub subject: String,
    pub text_body: String,
    pub html_body: Option<String>,
}

/// A webhook the guest queued, checked by the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutgoingWebhook {
    pub url: String,
    /// A JSON document.
    pub body: String,
}

/// One message a notifier run asked the host to deliver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Outgoing {
    Mail(OutgoingMail),
    Webhook(OutgoingWebhook),
}

/// `s` on one line of at most [`MAX_SUBJECT_CHARS`]: control characters become spaces.
/// This is what keeps a hostile file name out of the mail headers, whatever the guest did.
pub fn clean_subject(s: &str) -> String {
    let line: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    line.trim().chars().take(MAX_SUBJECT_CHARS).collect()
}

/// How a job ended, for its notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinalStatus {
    Done,
    Failed,
}

/// A finished job as its notification sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobEvent {
    pub job_id: String,
    pub tenant: String,
    pub owner_email: String,
    pub status: FinalStatus,
    /// As the client named the upload: untrusted, any character.
    pub input_name: String,
    pub output_bytes: Option<u64>,
    pub duration_ms: Option<u64>,
    pub failure_reason: Option<String>,
    /// The signed download link (done jobs).
    pub download_url: Option<String>,
    /// Unix seconds.
    pub finished_at: u64,
}

/// Which channels the tenant has on for this event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channels {
    pub email_enabled: bool,
    pub webhook_enabled: bool,
    pub webhook_url: Option<String>,
}

/// What composing produced, and how long the composer took.
#[derive(Debug, Clone)]
pub struct Composed {
    pub messages: Vec<Outgoing>,
    pub elapsed: Duration,
}

/// Why composing produced no messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ComposeError {
    /// The composer failed (trapped, hit a limit, could not start).
    #[error("notifier component failed: {0}")]
    Failed(String),
    /// The composer declined the event.
    #[error("notifier component declined: {0}")]
    Declined(String),
}

/// Composes the messages of a finished job. Blocking and short; called on a blocking
/// thread.
pub trait Composer: Send + Sync + 'static {
    fn compose(
        &self,
        event: &JobEvent,
        channels: &Channels,
        policy: &SendPolicy,
    ) -> Result<Composed, ComposeError>;
}
