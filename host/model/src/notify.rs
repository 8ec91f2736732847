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

/// How a notifier canary's composition (run in shadow: composed, never sent) compares
/// with the stable notifier's for the same event: `Fail` when it crashed or hit a limit;
/// `Invalid` when it declined an event stable composed, or addressed other recipients
/// (a mail or webhook dropped, added or sent elsewhere); `Ok` otherwise (its texts may
/// differ: that is what a new notifier is for).
pub fn shadow_result(
    stable: &Result<Composed, ComposeError>,
    canary: &Result<Composed, ComposeError>,
) -> crate::canary::RunResult {
    use crate::canary::RunResult;
    fn addressed(messages: &[Outgoing]) -> Vec<(&'static str, &str)> {
        let mut to: Vec<(&'static str, &str)> = messages
            .iter()
            .map(|m| match m {
                Outgoing::Mail(mail) => ("mail", mail.to.as_str()),
                Outgoing::Webhook(hook) => ("webhook", hook.url.as_str()),
            })
            .collect();
        to.sort_unstable();
        to
    }
    match (stable, canary) {
        (_, Err(ComposeError::Failed(_))) => RunResult::Fail,
        (Err(ComposeError::Declined(_)), Err(ComposeError::Declined(_))) => RunResult::Ok,
        (Ok(_), Err(ComposeError::Declined(_))) => RunResult::Invalid,
        (Ok(s), Ok(c)) if addressed(&s.messages) != addressed(&c.messages) => RunResult::Invalid,
        // Stable failed or declined and the canary composed: nothing to hold it against.
        _ => RunResult::Ok,
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canary::RunResult;

    fn mail(to: &str, subject: &str) -> Outgoing {
        Outgoing::Mail(OutgoingMail {
            to: to.into(),
            subject: subject.into(),
            text_body: String::new(),
            html_body: None,
        })
    }

    fn composed(messages: Vec<Outgoing>) -> Result<Composed, ComposeError> {
        Ok(Composed {
            messages,
            elapsed: Duration::ZERO,
        })
    }

    #[test]
    fn a_shadow_composition_is_judged_by_whom_it_addresses() {
        let stable = composed(vec![mail("a@example.com", "done")]);
        let other_text = composed(vec![mail("a@example.com", "finished!")]);
        assert_eq!(shadow_result(&stable, &other_text), RunResult::Ok);
        let elsewhere = composed(vec![mail("b@example.com", "done")]);
        assert_eq!(shadow_result(&stable, &elsewhere), RunResult::Invalid);
        assert_eq!(
            shadow_result(&stable, &composed(vec![])),
            RunResult::Invalid
        );
        let crashed = Err(ComposeError::Failed("trap".into()));
        assert_eq!(shadow_result(&stable, &crashed), RunResult::Fail);
        let declined = Err(ComposeError::Declined("no".into()));
        assert_eq!(shadow_result(&stable, &declined), RunResult::Invalid);
        assert_eq!(shadow_result(&declined, &declined), RunResult::Ok);
        assert_eq!(shadow_result(&crashed, &other_text), RunResult::Ok);
    }
}
