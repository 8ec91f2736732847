//! `tapedeck plugin run`: one call of a component, locally, with what it did printed — a
//! notifier composes one event (its messages as JSON, nothing sent), a converter converts
//! one file (as `tapedeck convert --plugin`). The author's quickest look at a change.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use serde::Deserialize;
use tapedeck_model::notify::{Channels, Composer, FinalStatus, JobEvent, SendPolicy};
use tapedeck_runtime::{Isolation, PluginRuntime, RuntimeConfig};

/// An event file: any field of the WIT `job-event` (snake_case); the rest from a sample
/// finished job of `talk.mp4` (a failed one when `status` is `failed`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventFile {
    job_id: Option<String>,
    tenant: Option<String>,
    owner_email: Option<String>,
    status: Option<Status>,
    input_name: Option<String>,
    output_bytes: Option<u64>,
    duration_ms: Option<u64>,
    failure_reason: Option<String>,
    download_url: Option<String>,
    finished_at: Option<u64>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Status {
    Done,
    Failed,
}

impl EventFile {
    fn event(self) -> JobEvent {
        let status = match self.status {
            Some(Status::Failed) => FinalStatus::Failed,
            _ => FinalStatus::Done,
        };
        let sample = super::check::event(status, "talk.mp4");
        JobEvent {
            job_id: self.job_id.unwrap_or(sample.job_id),
            tenant: self.tenant.unwrap_or(sample.tenant),
            owner_email: self.owner_email.unwrap_or(sample.owner_email),
            status,
            input_name: self.input_name.unwrap_or(sample.input_name),
            output_bytes: self.output_bytes.or(sample.output_bytes),
            duration_ms: self.duration_ms.or(sample.duration_ms),
            failure_reason: self.failure_reason.or(sample.failure_reason),
            download_url: self.download_url.or(sample.download_url),
            finished_at: self.finished_at.unwrap_or(sample.finished_at),
        }
    }
}

/// An event file (`plugin run --event`, `plugin check --cases`) as the event it means.
pub(crate) fn event_file(path: &Path) -> anyhow::Result<JobEvent> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let file = serde_json::from_str::<EventFile>(&text)
        .with_context(|| format!("{} is not an event", path.display()))?;
    Ok(file.event())
}

/// Composes one event with the notifier in `file` and prints its messages as JSON
/// (`{"messages": [...], "ms": N}`); nothing is sent. E-mail goes to the event's owner
/// unless `no_email`; webhooks are on with a `webhook_url`.
pub fn notifier(
    file: &Path,
    event: Option<&Path>,
    webhook_url: Option<String>,
    no_email: bool,
    cache_dir: Option<PathBuf>,
) -> anyhow::Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let event = match event {
        Some(path) => event_file(path)?,
        None => EventFile::default().event(),
    };
    let mut config = RuntimeConfig::new(super::user_cache_dir(cache_dir)?)?;
    config.isolation = Isolation::InProcess;
    config.incremental = true;
    let plugin = PluginRuntime::new(config)?.load_notifier(&bytes)?;
    let channels = Channels {
        email_enabled: !no_email,
        webhook_enabled: webhook_url.is_some(),
        webhook_url: webhook_url.clone(),
    };
    let policy = SendPolicy {
        mail_to: (!no_email).then(|| event.owner_email.clone()),
        webhook_url,
    };
    let started = Instant::now();
    let composed = plugin.compose(&event, &channels, &policy)?;
    let answer = serde_json::json!({
        "messages": composed.messages,
        "ms": started.elapsed().as_millis() as u64,
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&answer).expect("messages serialize")
    );
    Ok(())
}
