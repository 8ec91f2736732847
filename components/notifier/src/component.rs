//! The `notifier` world's export over the native core.
//!
//! Contact points: the WIT in `../../wit` (world `notifier`); [`crate::compose`].

wit_bindgen::generate!({
    // Only our files: the shared wit/ dir holds other worlds whose edits must not break
    // this build. Symlinks keep one copy of the contract.
    path: "wit",
    world: "notifier",
});

use exports::tapedeck::plugin::notification::{self as wit, Guest};
use tapedeck::plugin::logging::{self, Level};
use tapedeck::plugin::{mail, webhook};

struct Notifier;

export!(Notifier);

impl Guest for Notifier {
    fn notify(event: wit::JobEvent, settings: wit::Settings) -> Result<(), wit::NotifyError> {
        let event = crate::JobEvent {
            job_id: event.job_id,
            tenant: event.tenant,
            owner_email: event.owner_email,
            status: match event.status {
                wit::JobStatus::Done => crate::Status::Done,
                wit::JobStatus::Failed => crate::Status::Failed,
            },
            input_name: event.input_name,
            output_bytes: event.output_bytes,
            duration_ms: event.duration_ms,
            failure_reason: event.failure_reason,
            download_url: event.download_url,
            finished_at: event.finished_at,
        };
        let settings = crate::Settings {
            email_enabled: settings.email_enabled,
            webhook_enabled: settings.webhook_enabled,
            webhook_url: settings.webhook_url,
        };
        let messages =
            crate::compose(&event, &settings).map_err(wit::NotifyError::IncompleteEvent)?;
        if let Some(m) = messages.mail {
            mail::send(&mail::Message {
                to: m.to,
                subject: m.subject,
                text_body: m.text_body,
                html_body: Some(m.html_body),
            })
            .map_err(|e| {
                let why = match e {
                    mail::MailError::NotAllowed(why) | mail::MailError::Invalid(why) => why,
                };
                wit::NotifyError::Refused(format!("e-mail: {why}"))
            })?;
        }
        if let Some(w) = messages.webhook {
            // A refused webhook does not cost the owner their e-mail: log it, go on.
            if let Err(e) = webhook::post(&webhook::Request {
                url: w.url,
                body: w.body,
            }) {
                let why = match e {
                    webhook::WebhookError::NotAllowed(why)
                    | webhook::WebhookError::Invalid(why) => why,
                };
                logging::log(Level::Warn, &format!("webhook refused: {why}"));
            }
        }
        Ok(())
    }
}
