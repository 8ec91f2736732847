//! The notifier world: its bindings, the host side of its imports (`mail`, `webhook`,
//! `logging`), and one run of a notifier in a fresh `Store`.
//!
//! The imports only *queue*: a run returns the messages the guest asked for, checked
//! against a [`SendPolicy`], and sends nothing itself. Delivery (SMTP, HTTP, retries,
//! rate caps) is `crate::notify`'s job, after the guest has returned successfully. So a
//! guest can neither send to anyone the policy does not name nor block on the network,
//! and the time spent in wasm is measured apart from the time spent delivering.
//!
//! Notifier runs are short and hot, so they are always in-process with an epoch deadline.
//!
//! Contact points: `crate::notify` calls [`PluginRuntime::load_notifier`] and
//! [`NotifierPlugin::notify`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::Engine;
use wasmtime::component::{Component, HasSelf, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::error::{LoadError, RunError};
use super::guest_log::{GuestLog, LogPolicy};
use super::limits::{RunLimiter, RunLimits};
use super::sandbox::{self, StoreParts};
use super::{Isolation, PluginRuntime};
use tapedeck_model::notify::{Outgoing, OutgoingMail, OutgoingWebhook, SendPolicy, clean_subject};

use crate::bindings::notifier::*;

/// The WIT types of the notifier world, under short names.
pub mod wit {
    pub use super::exports::tapedeck::plugin::notification::{
        JobEvent, JobStatus, NotifyError, Settings,
    };
}

use tapedeck::plugin::{logging, mail, webhook};

/// Most messages (mail and webhooks together) one run may queue.
pub const MAX_MESSAGES_PER_RUN: usize = 4;
/// Largest body (text + HTML of a mail, or a webhook's JSON) a guest may queue, in bytes.
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// A notifier run may log 20 lines of at most 1 KiB; the rest are dropped.
const NOTIFIER_LOG: LogPolicy = LogPolicy {
    burst: 20.0,
    per_second: 0.0,
    max_line: 1024,
};
/// Host-side resources (WASI streams) a guest may hold at once.
const MAX_RESOURCES: usize = 64;

/// Limits of one notifier run: far below a converter's, as composing a message is tiny.
/// Sized for notifiers in interpreted languages too: a componentize-py notifier starts
/// with 12.4 MiB of linear memory and 14 core instances, a componentize-js one with
/// 9.1 MiB and 7,691 table elements (examples/plugins; bench/RESULTS.md).
pub fn notifier_limits() -> RunLimits {
    RunLimits {
        max_memory_bytes: 32 << 20,
        cpu_time: Duration::from_millis(500),
        max_output_bytes: 0,
        max_table_elements: 20_000,
        max_instances: 32,
        max_tables: 16,
        max_memories: 4,
        ..RunLimits::default()
    }
}

/// Why a notifier run produced no messages.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NotifyRunError {
    /// The guest trapped, hit a limit or could not start.
    #[error(transparent)]
    Plugin(RunError),
    /// The guest returned its `notify-error`.
    #[error("notifier declined: {0}")]
    Declined(String),
}

/// A notifier run's messages and how long the guest took.
#[derive(Debug, Clone)]
pub struct NotifierOutput {
    pub messages: Vec<Outgoing>,
    /// Instantiation and the `notify` call, wall-clock.
    pub wasm_time: Duration,
}

impl PluginRuntime {
    /// Compiles (or loads from the cache) and type-checks a notifier component. Needs an
    /// in-process runtime: notifier runs are bounded by an epoch deadline.
    pub fn load_notifier(&self, bytes: &[u8]) -> Result<Arc<NotifierPlugin>, LoadError> {
        if self.config.isolation != Isolation::InProcess {
            return Err(LoadError::Runtime(
                "notifiers run in-process: load them with an in-process runtime".into(),
            ));
        }
        let compiled = self.cache.load(bytes)?;
        let pre = prepare(&self.cache.engine, &compiled.component)?;
        Ok(Arc::new(NotifierPlugin {
            digest: compiled.digest,
            pre,
        }))
    }
}

fn prepare(
    engine: &Engine,
    component: &Component,
) -> Result<NotifierPre<NotifierState>, LoadError> {
    let pre = sandbox::instantiate_pre(engine, component, "notifier", |linker| {
        Notifier::add_to_linker::<_, HasSelf<_>>(linker, |state| state)
    })?;
    NotifierPre::new(pre).map_err(|e| LoadError::wrong_world("notifier", e))
}

/// A notifier component, compiled and type-checked, ready for any number of runs.
pub struct NotifierPlugin {
    /// sha256 of the component bytes, hex.
    digest: String,
    /// Instantiates the component in a fresh store.
    pre: NotifierPre<NotifierState>,
}

impl NotifierPlugin {
    /// The component's content address: sha256 of its bytes, hex.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// Runs `notify` once in a fresh store within `limits`; returns what the guest queued.
    /// Blocks for at most the CPU limit; async callers should use a blocking thread.
    pub fn notify(
        &self,
        event: &wit::JobEvent,
        settings: &wit::Settings,
        policy: &SendPolicy,
        limits: &RunLimits,
    ) -> Result<NotifierOutput, NotifyRunError> {
        let started = Instant::now();
        let parts = StoreParts::new(limits, MAX_RESOURCES);
        let stderr = parts.stderr;
        let state = NotifierState {
            wasi: parts.wasi,
            table: parts.table,
            limiter: parts.limiter,
            policy: policy.clone(),
            queued: Vec::new(),
            log: GuestLog::new(NOTIFIER_LOG),
            digest: self.digest.clone(),
        };
        let mut store = sandbox::limited_store(
            self.pre.engine(),
            state,
            |s| &mut s.limiter,
            Some(limits.cpu_time),
        );

        let result = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| (e, true))
            .and_then(|notifier| {
                notifier
                    .tapedeck_plugin_notification()
                    .call_notify(&mut store, event, settings)
                    .map_err(|e| (e, false))
            });
        let wasm_time = started.elapsed();
        let said = stderr.contents();
        super::guest_log::emit_stderr(&self.digest, &said);
        let state = store.into_data();
        if state.limiter.memory_denied {
            return Err(NotifyRunError::Plugin(RunError::MemoryLimit {
                limit: limits.max_memory_bytes,
            }));
        }
        match result {
            Ok(Ok(())) => Ok(NotifierOutput {
                messages: state.queued,
                wasm_time,
            }),
            Ok(Err(wit::NotifyError::IncompleteEvent(why) | wit::NotifyError::Refused(why))) => {
                Err(NotifyRunError::Declined(why))
            }
            Err((error, instantiating)) => Err(NotifyRunError::Plugin(
                super::error::classify_failure(error, instantiating, limits).with_stderr(&said),
            )),
        }
    }
}

/// Everything one notifier run's `Store` holds.
pub(crate) struct NotifierState {
    /// The (empty) WASI world std-based guests expect; see `sandbox.rs`.
    wasi: WasiCtx,
    /// WASI streams handed to the guest.
    table: ResourceTable,
    /// Memory and table limits, with a record of any refusal.
    limiter: RunLimiter,
    /// Whom the guest may write to.
    policy: SendPolicy,
    /// What the guest asked to send, in order.
    queued: Vec<Outgoing>,
    /// Log lines received so far.
    log: GuestLog,
    /// The plugin's digest, for log lines.
    digest: String,
}

impl WasiView for NotifierState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl mail::Host for NotifierState {
    fn send(&mut self, message: mail::Message) -> wasmtime::Result<Result<(), mail::MailError>> {
        let Some(owner) = &self.policy.mail_to else {
            return Ok(Err(mail::MailError::NotAllowed(
                "e-mail is turned off for this tenant".into(),
            )));
        };
        if self.queued.len() >= MAX_MESSAGES_PER_RUN {
            return Ok(Err(mail::MailError::NotAllowed(format!(
                "at most {MAX_MESSAGES_PER_RUN} messages per notification"
            ))));
        }
        if !message.to.trim().eq_ignore_ascii_case(owner) {
            return Ok(Err(mail::MailError::Invalid(
                "mail may only go to the job's owner".into(),
            )));
        }
        let size = message.text_body.len() + message.html_body.as_ref().map_or(0, String::len);
        if size > MAX_BODY_BYTES {
            return Ok(Err(mail::MailError::Invalid(format!(
                "body of {size} bytes; the limit is {MAX_BODY_BYTES}"
            ))));
        }
        self.queued.push(Outgoing::Mail(OutgoingMail {
            to: owner.clone(),
            subject: clean_subject(&message.subject),
            text_body: message.text_body,
            html_body: message.html_body,
        }));
        Ok(Ok(()))
    }
}

impl webhook::Host for NotifierState {
    fn post(
        &mut self,
        request: webhook::Request,
    ) -> wasmtime::Result<Result<(), webhook::WebhookError>> {
        let Some(url) = &self.policy.webhook_url else {
            return Ok(Err(webhook::WebhookError::NotAllowed(
                "webhooks are turned off for this tenant".into(),
            )));
        };
        if self.queued.len() >= MAX_MESSAGES_PER_RUN {
            return Ok(Err(webhook::WebhookError::NotAllowed(format!(
                "at most {MAX_MESSAGES_PER_RUN} messages per notification"
            ))));
        }
        if request.url != *url {
            return Ok(Err(webhook::WebhookError::Invalid(
                "webhooks may only go to the tenant's webhook URL".into(),
            )));
        }
        if request.body.len() > MAX_BODY_BYTES {
            return Ok(Err(webhook::WebhookError::Invalid(format!(
                "body of {} bytes; the limit is {MAX_BODY_BYTES}",
                request.body.len()
            ))));
        }
        if serde_json::from_str::<serde::de::IgnoredAny>(&request.body).is_err() {
            return Ok(Err(webhook::WebhookError::Invalid(
                "the body is not JSON".into(),
            )));
        }
        self.queued.push(Outgoing::Webhook(OutgoingWebhook {
            url: url.clone(),
            body: request.body,
        }));
        Ok(Ok(()))
    }
}

impl logging::Host for NotifierState {
    fn log(&mut self, level: logging::Level, message: String) -> wasmtime::Result<()> {
        if let Some(message) = self.log.admit(message) {
            super::guest_log::emit(&self.digest, level, &message);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tapedeck_model::notify::MAX_SUBJECT_CHARS;

    #[test]
    fn subjects_lose_line_breaks_and_length() {
        assert_eq!(clean_subject("a\r\nBcc: x@y\r\n"), "a  Bcc: x@y");
        assert_eq!(clean_subject(&"x".repeat(500)).len(), MAX_SUBJECT_CHARS);
    }
}
