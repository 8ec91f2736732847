//! Hostile notifier: a notifier component for the notifier canary tests. For a finished
//! job it queues what the built-in notifier would (a mail to the owner, a webhook to the
//! tenant's URL, each where the channel is on) with texts of its own; on a failed job it
//! panics (Rust prints the message to stderr, then traps).
//!
//! Only a wasm32 component: compiled natively (`cargo build --workspace`) it is empty.
#![cfg(target_arch = "wasm32")]

wit_bindgen::generate!({
    path: "../../../wit",
    world: "notifier",
});

use crate::exports::tapedeck::plugin::notification::{
    Guest, JobEvent, JobStatus, NotifyError, Settings,
};
use crate::tapedeck::plugin::{mail, webhook};

struct HostileNotifier;

impl Guest for HostileNotifier {
    fn notify(event: JobEvent, settings: Settings) -> Result<(), NotifyError> {
        if event.status == JobStatus::Failed {
            panic!(
                "the hostile notifier panics on failed jobs ({})",
                event.job_id
            );
        }
        if settings.email_enabled {
            mail::send(&mail::Message {
                to: event.owner_email.clone(),
                subject: "converted (hostile notifier)".into(),
                text_body: format!("job {} is done", event.job_id),
                html_body: None,
            })
            .map_err(|e| NotifyError::Refused(format!("{e:?}")))?;
        }
        if let (true, Some(url)) = (settings.webhook_enabled, settings.webhook_url) {
            webhook::post(&webhook::Request {
                url,
                body: format!("{{\"job\":\"{}\"}}", event.job_id),
            })
            .map_err(|e| NotifyError::Refused(format!("{e:?}")))?;
        }
        Ok(())
    }
}

export!(HostileNotifier);
