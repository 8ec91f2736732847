//! The notifier component as the notify consumer's [`Composer`].

use tapedeck_model::notify::{
    Channels, ComposeError, Composed, Composer, FinalStatus, JobEvent, SendPolicy,
};

use crate::notifier::{NotifierPlugin, NotifyRunError, notifier_limits, wit};

fn wit_event(event: &JobEvent) -> wit::JobEvent {
    wit::JobEvent {
        job_id: event.job_id.clone(),
        tenant: event.tenant.clone(),
        owner_email: event.owner_email.clone(),
        status: match event.status {
            FinalStatus::Done => wit::JobStatus::Done,
            FinalStatus::Failed => wit::JobStatus::Failed,
        },
        input_name: event.input_name.clone(),
        output_bytes: event.output_bytes,
        duration_ms: event.duration_ms,
        failure_reason: event.failure_reason.clone(),
        download_url: event.download_url.clone(),
        finished_at: event.finished_at,
    }
}

impl Composer for NotifierPlugin {
    fn compose(
        &self,
        event: &JobEvent,
        channels: &Channels,
        policy: &SendPolicy,
    ) -> Result<Composed, ComposeError> {
        let settings = wit::Settings {
            email_enabled: channels.email_enabled,
            webhook_enabled: channels.webhook_enabled,
            webhook_url: channels.webhook_url.clone(),
        };
        match self.notify(&wit_event(event), &settings, policy, &notifier_limits()) {
            Ok(output) => Ok(Composed {
                messages: output.messages,
                elapsed: output.wasm_time,
            }),
            Err(NotifyRunError::Plugin(e)) => Err(ComposeError::Failed(e.to_string())),
            Err(NotifyRunError::Declined(why)) => Err(ComposeError::Declined(why)),
        }
    }
}
