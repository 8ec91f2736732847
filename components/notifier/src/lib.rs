//! The default notifier: turns a finished or failed job into a plain, useful e-mail for
//! its owner and a JSON webhook for the tenant.
//!
//! # Layout
//! - this file: the native core, [`compose`], testable without wasm.
//! - `component.rs` (wasm32 only): the `notifier` world's export over the core, queueing
//!   the composed messages through the host's `mail` and `webhook` imports.
//!
//! File names come from uploaders and are untrusted: every place they appear is cleaned
//! for its context (one-line text for subjects, HTML escaping, JSON encoding). The host
//! cleans subjects again; neither side relies on the other.

#[cfg(target_arch = "wasm32")]
mod component;

/// Longest file name shown in a subject, in characters.
const SUBJECT_NAME_CHARS: usize = 80;

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Done,
    Failed,
}

/// A finished job (the WIT `job-event`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobEvent {
    pub job_id: String,
    pub tenant: String,
    pub owner_email: String,
    pub status: Status,
    /// The uploaded file's name, untrusted.
    pub input_name: String,
    pub output_bytes: Option<u64>,
    pub duration_ms: Option<u64>,
    pub failure_reason: Option<String>,
    pub download_url: Option<String>,
    /// Unix seconds.
    pub finished_at: u64,
}

/// The tenant's choices (the WIT `settings`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub email_enabled: bool,
    pub webhook_enabled: bool,
    pub webhook_url: Option<String>,
}

/// An e-mail to queue (the WIT `mail.message`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    pub to: String,
    pub subject: String,
    pub text_body: String,
    pub html_body: String,
}

/// A webhook to queue (the WIT `webhook.request`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    pub url: String,
    /// JSON.
    pub body: String,
}

/// What the notifier sends for one event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Messages {
    pub mail: Option<Mail>,
    pub webhook: Option<Webhook>,
}

/// Composes the messages `settings` ask for. Errs (with what is missing) when the event
/// cannot make a useful message: a done job without a download link, a failed job
/// without a reason, an e-mail without a recipient.
pub fn compose(event: &JobEvent, settings: &Settings) -> Result<Messages, String> {
    match event.status {
        Status::Done if event.download_url.is_none() => {
            return Err("a done job without a download URL".into());
        }
        Status::Failed if event.failure_reason.is_none() => {
            return Err("a failed job without a failure reason".into());
        }
        _ => {}
    }
    let mail = if settings.email_enabled {
        if event.owner_email.trim().is_empty() {
            return Err("no owner e-mail address".into());
        }
        Some(compose_mail(event))
    } else {
        None
    };
    let webhook = match (&settings.webhook_url, settings.webhook_enabled) {
        (Some(url), true) => Some(Webhook {
            url: url.clone(),
            body: webhook_body(event),
        }),
        _ => None,
    };
    Ok(Messages { mail, webhook })
}

fn compose_mail(event: &JobEvent) -> Mail {
    let name = one_line(&event.input_name);
    let short = truncate_chars(&name, SUBJECT_NAME_CHARS);
    let (subject, paragraphs) = match event.status {
        Status::Done => {
            let url = event.download_url.clone().unwrap_or_default();
            let mut what = format!("Your file \"{name}\" has been converted to MP3");
            let facts: Vec<String> = [
                event.duration_ms.map(human_duration),
                event.output_bytes.map(human_bytes),
            ]
            .into_iter()
            .flatten()
            .collect();
            if !facts.is_empty() {
                what.push_str(&format!(" ({})", facts.join(", ")));
            }
            what.push('.');
            (
                format!("Your MP3 is ready: {short}"),
                vec![
                    Paragraph::Text(what),
                    Paragraph::Text("Download it here:".into()),
                    Paragraph::Link(url),
                    Paragraph::Text(
                        "The link needs you to be signed in to your Tapedeck account.".into(),
                    ),
                ],
            )
        }
        Status::Failed => {
            let reason = one_line(event.failure_reason.as_deref().unwrap_or_default());
            (
                format!("Conversion failed: {short}"),
                vec![
                    Paragraph::Text(format!("We could not convert your file \"{name}\" to MP3.")),
                    Paragraph::Text(format!("Why: {reason}.")),
                    Paragraph::Text(format!("What to do: {}", advice(&reason))),
                ],
            )
        }
    };
    let footer = format!("Job {} · tenant {}", event.job_id, event.tenant);
    let mut text = String::from("Hello,\n\n");
    let mut html =
        String::from("<!DOCTYPE html><html><body style=\"font-family:sans-serif\"><p>Hello,</p>");
    for p in &paragraphs {
        match p {
            Paragraph::Text(t) => {
                text.push_str(t);
                html.push_str(&format!("<p>{}</p>", escape_html(t)));
            }
            Paragraph::Link(url) => {
                text.push_str(url);
                let url = escape_html(url);
                html.push_str(&format!("<p><a href=\"{url}\">{url}</a></p>"));
            }
        }
        text.push_str("\n\n");
    }
    text.push_str(&format!("-- \n{footer}\n"));
    html.push_str(&format!(
        "<p style=\"color:#666;font-size:small\">{}</p></body></html>",
        escape_html(&footer)
    ));
    Mail {
        to: event.owner_email.trim().to_string(),
        subject,
        text_body: text,
        html_body: html,
    }
}

/// A block of the message body.
enum Paragraph {
    Text(String),
    Link(String),
}

/// What the owner can do about a failure, from the pipeline's reason text.
fn advice(reason: &str) -> &'static str {
    let reason = reason.to_ascii_lowercase();
    if reason.contains("no audio track") {
        "the file contains no audio. Check that you uploaded the right file."
    } else if reason.contains("unsupported audio codec") {
        "the audio is in a format we cannot read. Export the video with AAC audio and upload it again."
    } else if reason.contains("drm") {
        "the file is copy-protected and cannot be converted. Upload an unprotected copy."
    } else if reason.contains("corrupt") || reason.contains("damaged") {
        "the file seems damaged or incomplete. Upload it again from the original source."
    } else if reason.contains("invalid options") {
        "the conversion options cannot be used with this file. Upload it again with other options."
    } else if reason.contains("limit") || reason.contains("too large") {
        "the file exceeds a limit of your account. Try a shorter file, or ask your administrator."
    } else {
        "upload the file again. If it fails again, contact support and quote the job id below."
    }
}

/// The webhook's JSON document.
fn webhook_body(event: &JobEvent) -> String {
    let status = match event.status {
        Status::Done => "done",
        Status::Failed => "failed",
    };
    serde_json::json!({
        "type": format!("job.{status}"),
        "job_id": event.job_id,
        "tenant": event.tenant,
        "owner_email": event.owner_email,
        "status": status,
        "input_name": event.input_name,
        "output_bytes": event.output_bytes,
        "duration_ms": event.duration_ms,
        "download_url": event.download_url,
        "failure_reason": event.failure_reason,
        "finished_at": event.finished_at,
    })
    .to_string()
}

/// `s` on one line: every control character (CR, LF, TAB, ...) and every run of
/// whitespace becomes one space.
pub fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut space = false;
    for c in s.trim().chars() {
        if c.is_control() || c.is_whitespace() {
            space = true;
            continue;
        }
        if space && !out.is_empty() {
            out.push(' ');
        }
        space = false;
        out.push(c);
    }
    out
}

fn truncate_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_string(),
    }
}

fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn human_bytes(bytes: u64) -> String {
    const MB: f64 = 1024.0 * 1024.0;
    if bytes as f64 >= MB {
        format!("{:.1} MB", bytes as f64 / MB)
    } else {
        format!("{} KB", bytes.div_ceil(1024))
    }
}

fn human_duration(ms: u64) -> String {
    let s = ms / 1000;
    match (s / 3600, s / 60 % 60, s % 60) {
        (0, m, s) => format!("{m}:{s:02}"),
        (h, m, s) => format!("{h}:{m:02}:{s:02}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done() -> JobEvent {
        JobEvent {
            job_id: "j1".into(),
            tenant: "acme".into(),
            owner_email: "ann@example.com".into(),
            status: Status::Done,
            input_name: "talk.mp4".into(),
            output_bytes: Some(3 << 20),
            duration_ms: Some(185_000),
            failure_reason: None,
            download_url: Some("https://td.example/v1/jobs/j1/output".into()),
            finished_at: 1_700_000_000,
        }
    }

    fn all_on() -> Settings {
        Settings {
            email_enabled: true,
            webhook_enabled: true,
            webhook_url: Some("https://hooks.example/td".into()),
        }
    }

    #[test]
    fn done_mail_has_link_and_facts() {
        let m = compose(&done(), &all_on()).unwrap();
        let mail = m.mail.unwrap();
        assert_eq!(mail.to, "ann@example.com");
        assert_eq!(mail.subject, "Your MP3 is ready: talk.mp4");
        assert!(
            mail.text_body
                .contains("https://td.example/v1/jobs/j1/output")
        );
        assert!(
            mail.text_body.contains("3:05, 3.0 MB"),
            "{}",
            mail.text_body
        );
        let hook: serde_json::Value = serde_json::from_str(&m.webhook.unwrap().body).unwrap();
        assert_eq!(hook["type"], "job.done");
        assert_eq!(hook["output_bytes"], 3 << 20);
    }

    #[test]
    fn failed_mail_says_why_and_what_to_do() {
        let event = JobEvent {
            status: Status::Failed,
            failure_reason: Some("input has no audio track".into()),
            download_url: None,
            output_bytes: None,
            duration_ms: None,
            ..done()
        };
        let mail = compose(&event, &all_on()).unwrap().mail.unwrap();
        assert_eq!(mail.subject, "Conversion failed: talk.mp4");
        assert!(mail.text_body.contains("Why: input has no audio track."));
        assert!(mail.text_body.contains("contains no audio"));
    }

    #[test]
    fn hostile_file_names_stay_on_one_line_and_escaped() {
        let event = JobEvent {
            input_name: "a.mp4\r\nBcc: evil@example.com\r\n\r\n<script>".into(),
            ..done()
        };
        let mail = compose(&event, &all_on()).unwrap().mail.unwrap();
        assert!(!mail.subject.contains(['\r', '\n']));
        assert_eq!(
            mail.subject,
            "Your MP3 is ready: a.mp4 Bcc: evil@example.com <script>"
        );
        assert!(!mail.html_body.contains("<script>"));
        let long = JobEvent {
            input_name: "é".repeat(500),
            ..done()
        };
        let subject = compose(&long, &all_on()).unwrap().mail.unwrap().subject;
        assert!(subject.chars().count() < 120);
    }

    #[test]
    fn settings_choose_the_channels() {
        let none = Settings {
            email_enabled: false,
            webhook_enabled: true,
            webhook_url: None,
        };
        assert_eq!(compose(&done(), &none).unwrap(), Messages::default());
        let incomplete = JobEvent {
            download_url: None,
            ..done()
        };
        assert!(compose(&incomplete, &all_on()).is_err());
    }
}
