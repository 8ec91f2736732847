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
//!
//! A done job's download link is signed by the host and works without signing in until
//! its `expires` query parameter (unix seconds); the mail says so, and until when.
//! A failed job's mail pairs the host's reason with advice matched on its wording
//! (see [`advice`]).

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
            let mut paragraphs = vec![
                Paragraph::Text(what),
                Paragraph::Text("Download it here:".into()),
            ];
            // An unsigned link (no `expires`) may need a session: then say nothing about it.
            let until = link_expires(&url).map(utc_minute);
            paragraphs.push(Paragraph::Link(url));
            if let Some(until) = until {
                paragraphs.push(Paragraph::Text(format!(
                    "The link works without signing in: anyone who has it can download this \
                     MP3, until {until}."
                )));
            }
            (format!("Your MP3 is ready: {short}"), paragraphs)
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
///
/// The reasons are the host's: "input has no audio track", "unsupported audio codec:
/// NAME", "input is DRM-protected (SCHEME)", "input is corrupt: WHY", "invalid options:
/// WHY", and for a run that needed more than the service allows per conversion
/// "KIND limit of N exceeded; the operator can raise it with ..." (CPU time, wall-clock,
/// memory, output) or "output would exceed the limit of N bytes". Limits are the
/// service's, the same for everyone: there are no per-account limits to point at.
fn advice(reason: &str) -> &'static str {
    let reason = reason.to_ascii_lowercase();
    if reason.contains("no audio track") {
        "the file contains no audio. Check that you uploaded the right file."
    } else if reason.contains("unsupported audio codec") {
        if is_he_aac(&reason) {
            "HE-AAC (also called AAC+, or AAC with SBR) is a kind of AAC this service cannot \
             decode. Export the audio as AAC-LC (\"plain\" AAC, usually the default AAC \
             profile) or in another supported format (ALAC, FLAC, MP3 or PCM), and upload \
             it again."
        } else if reason.contains("channel") {
            "the audio's channel layout is one this service cannot decode. Export the audio \
             as stereo (or with at most 6 channels, as in 5.1) and upload it again."
        } else {
            "the audio is in a format this service cannot decode. It reads AAC-LC \
             (\"plain\" AAC), ALAC, FLAC, MP3 and PCM audio in MP4, M4A, MOV or 3GP files: \
             export the audio in one of these formats and upload it again."
        }
    } else if reason.contains("drm") {
        "the file is copy-protected and cannot be converted. Upload an unprotected copy."
    } else if reason.contains("corrupt") || reason.contains("damaged") {
        "the file seems damaged or incomplete. Upload it again from the original source."
    } else if reason.contains("invalid options") {
        "the conversion options cannot be used with this file. Upload it again with other options."
    } else if is_limit(&reason) {
        "the file needs more than this service allows for one conversion. Try a shorter \
         file or lower settings (bitrate, sample rate, mono), or ask the service's operator \
         to raise the limit named above."
    } else {
        "upload the file again. If it fails again, contact support and quote the job id below."
    }
}

/// An unsupported codec reason (lowercased) that names HE-AAC or HE-AACv2: AAC, but
/// with spectral band replication, which an "export as AAC" advice would not avoid.
fn is_he_aac(reason: &str) -> bool {
    reason.contains("he-aac") || reason.contains("sbr")
}

/// A reason (lowercased) saying a run needed more than a limit of the service allows.
fn is_limit(reason: &str) -> bool {
    reason.contains("limit of") && reason.contains("exceed")
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

/// The `expires` query parameter of a signed download link, in unix seconds: `None`
/// when the link has none, has it twice, or it is not a plain number up to year 9999.
fn link_expires(url: &str) -> Option<u64> {
    /// 9999-12-31 23:59:59 UTC.
    const LAST: u64 = 253_402_300_799;
    let without_fragment = url.split('#').next().unwrap_or_default();
    let query = without_fragment.split_once('?')?.1;
    let mut expires = None;
    for pair in query.split('&') {
        if let Some(value) = pair.strip_prefix("expires=") {
            if expires.is_some() || value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            expires = Some(value.parse::<u64>().ok()?);
        }
    }
    expires.filter(|&t| t <= LAST)
}

/// Unix time `secs` as "2026-12-06 17:00 UTC". Seconds are dropped, so the time shown is
/// never later than `secs`.
fn utc_minute(secs: u64) -> String {
    let (year, month, day) = civil_from_days(secs / 86_400);
    let time = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        time / 3600,
        time / 60 % 60
    )
}

/// The Gregorian date `days` days after 1970-01-01, as (year, month, day): Howard
/// Hinnant's `civil_from_days`, for days ≥ 0. It counts years from March, so that the
/// leap day is the last day of its year.
fn civil_from_days(days: u64) -> (u64, u32, u32) {
    let z = days + 719_468; // days since 0000-03-01
    let era = z / 146_097; // 400-year cycles
    let doe = z % 146_097; // day of the era, 0..=146_096
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365; // 0..=399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of the March year, 0..=365
    let mp = (5 * doy + 2) / 153; // month from March, 0..=11
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (era * 400 + yoe + u64::from(month <= 2), month, day)
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

    /// A link as the host signs it: `expires` in unix seconds, then the signature.
    const SIGNED: &str = "https://td.example/v1/jobs/j1/output?expires=1796576459&sig=\
                          0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn done_mail_says_the_signed_link_needs_no_sign_in_and_until_when() {
        let event = JobEvent {
            download_url: Some(SIGNED.into()),
            ..done()
        };
        let mail = compose(&event, &all_on()).unwrap().mail.unwrap();
        let sentence = "The link works without signing in: anyone who has it can download \
                        this MP3, until 2026-12-06 17:00 UTC.";
        assert!(mail.text_body.contains(SIGNED), "{}", mail.text_body);
        assert!(
            mail.text_body
                .contains(&format!("{SIGNED}\n\n{sentence}\n\n")),
            "{}",
            mail.text_body
        );
        assert!(
            mail.html_body.contains(&format!("<p>{sentence}</p>")),
            "{}",
            mail.html_body
        );
        assert!(mail.html_body.contains("?expires=1796576459&amp;sig=0123"));
        for body in [&mail.text_body, &mail.html_body] {
            assert!(!body.contains("account"), "{body}");
        }
    }

    #[test]
    fn done_mail_without_a_readable_expiry_says_nothing_about_the_link() {
        for url in [
            "https://td.example/v1/jobs/j1/output",
            "https://td.example/v1/jobs/j1/output?sig=ab",
            "https://td.example/v1/jobs/j1/output?expires=soon&sig=ab",
            "https://td.example/v1/jobs/j1/output?expires=1&expires=2",
        ] {
            let event = JobEvent {
                download_url: Some(url.into()),
                ..done()
            };
            let mail = compose(&event, &all_on()).unwrap().mail.unwrap();
            for body in [&mail.text_body, &mail.html_body] {
                let prose = body.replace(url, "").replace(&escape_html(url), "");
                for word in ["sign", "until", "expire", "account", "anyone"] {
                    assert!(
                        !prose.to_lowercase().contains(word),
                        "{url}: {word} in {body}"
                    );
                }
            }
            assert!(mail.text_body.contains(url));
        }
    }

    #[test]
    fn expires_is_read_from_the_query_only_when_plain() {
        assert_eq!(link_expires(SIGNED), Some(1_796_576_459));
        assert_eq!(
            link_expires("https://h/v1/jobs/j/output?sig=00&expires=1767225600#x"),
            Some(1_767_225_600)
        );
        for url in [
            "https://h/v1/jobs/j/output",
            "https://h/v1/jobs/j/output?expires=",
            "https://h/v1/jobs/j/output?expires=-1",
            "https://h/v1/jobs/j/output?expires=1e9",
            "https://h/v1/jobs/j/output?expires=+5",
            "https://h/v1/jobs/j/output?notexpires=5",
            "https://h/v1/jobs/j/output?expires=99999999999999999999999",
            "https://h/v1/jobs/j/output?expires=253402300800",
            "https://h/v1/jobs/j/output#expires=5",
            "https://h/v1/jobs/j/output#x?expires=5",
            "https://h/v1/jobs/j/output?expires=5&expires=5",
        ] {
            assert_eq!(link_expires(url), None, "{url}");
        }
    }

    #[test]
    fn unix_times_print_as_utc_dates() {
        assert_eq!(utc_minute(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc_minute(1_767_225_600), "2026-01-01 00:00 UTC");
        assert_eq!(utc_minute(1_796_576_400), "2026-12-06 17:00 UTC");
        assert_eq!(utc_minute(1_709_251_199), "2024-02-29 23:59 UTC");
        assert_eq!(utc_minute(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(utc_minute(4_107_542_400), "2100-03-01 00:00 UTC");
        assert_eq!(utc_minute(253_402_300_799), "9999-12-31 23:59 UTC");
        // Day by day through 1970..=2400: each date follows the one before.
        let month_days = |y: u64, m: u32| match m {
            2 if y.is_multiple_of(4) && (!y.is_multiple_of(100) || y.is_multiple_of(400)) => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        let mut prev = civil_from_days(0);
        for days in 1..=157_000 {
            let (y, m, d) = civil_from_days(days);
            let (py, pm, pd) = prev;
            let next = if pd < month_days(py, pm) {
                (py, pm, pd + 1)
            } else if pm < 12 {
                (py, pm + 1, 1)
            } else {
                (py + 1, 1, 1)
            };
            assert_eq!((y, m, d), next, "day {days}");
            prev = (y, m, d);
        }
    }

    #[test]
    fn advice_fits_each_kind_of_failure() {
        let cases = [
            ("input has no audio track", "contains no audio"),
            (
                "unsupported audio codec: HE-AAC (AAC with SBR)",
                "Export the audio as AAC-LC (\"plain\" AAC",
            ),
            (
                "unsupported audio codec: HE-AACv2 (AAC with SBR and parametric stereo)",
                "HE-AAC (also called AAC+, or AAC with SBR) is a kind of AAC",
            ),
            (
                "unsupported audio codec: ac-3",
                "It reads AAC-LC (\"plain\" AAC), ALAC, FLAC, MP3 and PCM audio in MP4, M4A, \
                 MOV or 3GP files",
            ),
            (
                "unsupported audio codec: AAC Main profile",
                "It reads AAC-LC (\"plain\" AAC), ALAC, FLAC, MP3 and PCM",
            ),
            (
                "unsupported audio codec: AAC with 8 channels (at most 6, as in 5.1, are \
                 supported)",
                "Export the audio as stereo",
            ),
            (
                "unsupported audio codec: a custom AAC channel layout (program config element)",
                "channel layout is one this service cannot decode",
            ),
            ("input is DRM-protected (fairplay)", "copy-protected"),
            (
                "input is corrupt: the AAC audio is damaged or uses AAC Main-profile \
                 prediction, which is not supported",
                "seems damaged or incomplete",
            ),
            (
                "invalid options: trim end 5 ms is not after its start 9 ms",
                "other options",
            ),
            ("plugin crashed: wasm trap: unreachable", "contact support"),
        ];
        for (reason, want) in cases {
            let got = advice(reason);
            assert!(got.contains(want), "{reason}: {got}");
        }
        // Only HE-AAC is told that AAC-LC would do; no other codec is told "export as AAC".
        assert!(!advice("unsupported audio codec: HE-AAC (AAC with SBR)").contains("MOV"));
        assert!(!advice("unsupported audio codec: opus").contains("HE-AAC"));
    }

    #[test]
    fn limit_advice_points_at_the_service_never_an_account() {
        let limits = [
            "CPU time limit of 95 s exceeded (30 s + 5 s per minute of audio, at most 3600 s); \
             the operator can raise it with --run-cpu-base-secs / --run-cpu-secs-per-minute",
            "memory limit of 64 MiB exceeded; the operator can raise it with \
             --run-max-memory-mib",
            "output limit of 512 MiB exceeded; the operator can raise it with \
             --run-max-output-mib",
            "wall-clock limit of 200 s exceeded; the operator can raise it with \
             --run-cpu-base-secs",
            "output would exceed the limit of 536870912 bytes",
        ];
        let want = "the file needs more than this service allows for one conversion. Try a \
                    shorter file or lower settings (bitrate, sample rate, mono), or ask the \
                    service's operator to raise the limit named above.";
        for reason in limits {
            assert_eq!(advice(reason), want, "{reason}");
            let event = JobEvent {
                status: Status::Failed,
                failure_reason: Some(reason.into()),
                download_url: None,
                ..done()
            };
            let mail = compose(&event, &all_on()).unwrap().mail.unwrap();
            assert!(mail.text_body.contains(&format!("Why: {reason}.")));
            assert!(mail.text_body.contains(&format!("What to do: {want}")));
            assert!(!mail.text_body.contains("account"), "{}", mail.text_body);
        }
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
