//! A Tapedeck notifier: composes the e-mail and webhook of a finished job. The host
//! sends them after `notify` returns, checks every field against the tenant's settings,
//! and cleans the subject (one line, at most 200 characters) whatever this code does.

wit_bindgen::generate!({
    path: "wit",
    world: "notifier",
});

use exports::tapedeck::plugin::notification::{
    Guest, JobEvent, JobStatus, NotifyError, Settings,
};
use tapedeck::plugin::{logging, mail, webhook};

struct Notifier;

/// `s` without control characters, at most `max` characters: safe in one line.
fn one_line(s: &str, max: usize) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect()
}

/// `s` escaped for HTML text.
fn html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

impl Guest for Notifier {
    fn notify(event: JobEvent, settings: Settings) -> Result<(), NotifyError> {
        let name = one_line(&event.input_name, 80);
        let done = matches!(event.status, JobStatus::Done);
        let (subject, text) = if done {
            let link = event.download_url.clone().ok_or_else(|| {
                NotifyError::IncompleteEvent("a done job without a download link".into())
            })?;
            (
                format!("Your MP3 of {name} is ready"),
                format!("{name} is converted.\n\nDownload it: {link}\n"),
            )
        } else {
            let why = event.failure_reason.clone().unwrap_or_default();
            (
                format!("{name} could not be converted"),
                format!("{name} could not be converted: {}\n", one_line(&why, 500)),
            )
        };
        if settings.email_enabled {
            let message = mail::Message {
                to: event.owner_email.clone(),
                subject,
                html_body: Some(format!("<p>{}</p>", html(&text).replace('\n', "<br>"))),
                text_body: text,
            };
            mail::send(&message).map_err(|e| NotifyError::Refused(format!("{e:?}")))?;
        }
        if let (true, Some(url)) = (settings.webhook_enabled, settings.webhook_url) {
            let body = serde_json::json!({
                "job": event.job_id,
                "tenant": event.tenant,
                "status": if done { "done" } else { "failed" },
                "input_name": event.input_name,
                "output_bytes": event.output_bytes,
                "duration_ms": event.duration_ms,
                "error": event.failure_reason,
                "download_url": event.download_url,
                "finished_at": event.finished_at,
            });
            webhook::post(&webhook::Request {
                url,
                body: body.to_string(),
            })
            .map_err(|e| NotifyError::Refused(format!("{e:?}")))?;
        }
        logging::log(logging::Level::Info, "notification composed");
        Ok(())
    }
}

export!(Notifier);
