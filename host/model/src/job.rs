//! The job record kept in `td:{T}:job:{id}` (`T`: its tenant) and how it reads and writes as a Redis hash.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Where a job is in the pipeline (`expired`: finished, then its files were removed by
/// the tenant's retention).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Queued,
    Converting,
    Done,
    Failed,
    /// Finished, then its input and output were removed by the tenant's retention.
    Expired,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Converting => "converting",
            JobStatus::Done => "done",
            JobStatus::Failed => "failed",
            JobStatus::Expired => "expired",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => JobStatus::Queued,
            "converting" => JobStatus::Converting,
            "done" => JobStatus::Done,
            "failed" => JobStatus::Failed,
            "expired" => JobStatus::Expired,
            _ => return None,
        })
    }

    /// Done and failed never change again.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobStatus::Done | JobStatus::Failed | JobStatus::Expired
        )
    }
}

/// What a job's events channel (`td:events:{id}`) carries at each change, as JSON: written
/// by the pipeline's Lua scripts and by the delete, read by the SSE endpoint. One type
/// for both ends (`tests/tests/host/events.rs` parses what the real scripts publish).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobChange {
    pub status: ChangeStatus,
    /// 0..=1 where the change has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<f32>,
    /// Why the last attempt failed (`failed`, or `queued` again for a retry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A job's status in a [`JobChange`]: its [`JobStatus`], or gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeStatus {
    Queued,
    Converting,
    Done,
    Failed,
    Deleted,
}

impl JobChange {
    /// The change a delete publishes.
    pub fn deleted() -> Self {
        Self {
            status: ChangeStatus::Deleted,
            progress: None,
            error: None,
        }
    }

    /// Progress of a running conversion, if this is one.
    pub fn converting_progress(&self) -> Option<f32> {
        (self.status == ChangeStatus::Converting)
            .then_some(self.progress)
            .flatten()
    }
}

/// MP3 encoding options chosen at upload (validated by the gateway).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobOptions {
    /// Constant bitrate in kbit/s (MPEG-1/2 layer III rates); default 192 when no `vbr`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub bitrate: Option<u16>,
    /// LAME VBR quality 0 (best) ..= 9; excludes `bitrate`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub vbr: Option<u8>,
    /// Output sample rate in Hz; default: the source's.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub sample_rate: Option<u32>,
    /// Downmix to one channel.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub mono: bool,
}

/// The uploaded file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobInput {
    /// File name the client gave (used for the MP3's `Content-Disposition`).
    pub name: String,
    /// Size in bytes.
    pub bytes: u64,
    /// Blob key of the upload.
    #[serde(skip)]
    pub key: String,
}

/// The MP3, once stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobOutput {
    /// Size in bytes.
    pub bytes: u64,
    /// Decoded length of the MP3.
    pub duration_ms: u64,
    /// The bitrate produced, kbit/s (CBR: as asked or the default for the output rate;
    /// VBR: the average). Absent on records from before it was kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub bitrate_kbps: Option<u16>,
    /// Blob key of the MP3.
    #[serde(skip)]
    pub key: String,
}

/// One conversion job, as stored and as served by `GET /v1/jobs/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobRecord {
    pub id: String,
    #[serde(skip)]
    pub tenant: String,
    #[serde(skip)]
    pub user_id: String,
    /// The uploader's e-mail address, for the notifier (empty for jobs from before it was
    /// recorded).
    #[serde(skip)]
    pub owner_email: String,
    pub status: JobStatus,
    /// 0..=1.
    pub progress: f32,
    /// Why the job failed (or why the last attempt failed while it is retried).
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub error: Option<String>,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds, once done or failed.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub finished_at: Option<u64>,
    pub input: JobInput,
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub output: Option<JobOutput>,
    pub options: JobOptions,
    /// Conversion attempts started so far.
    pub attempts: u32,
    /// Digests of the converter components that ran its attempts, in order (one entry
    /// per change: a retry after a hot swap adds the new one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "openapi", schema(required = false))]
    pub converters: Vec<String>,
    /// The id of the request that created it (`x-request-id`), for its log lines.
    #[serde(skip)]
    pub request_id: Option<String>,
}

impl JobRecord {
    /// A new job, queued now: `owner` is `(user id, e-mail)`, `input` the stored upload.
    pub fn queued(
        id: impl Into<String>,
        tenant: impl Into<String>,
        owner: (&str, &str),
        input: JobInput,
        options: JobOptions,
    ) -> Self {
        JobRecord {
            id: id.into(),
            tenant: tenant.into(),
            user_id: owner.0.to_owned(),
            owner_email: owner.1.to_owned(),
            status: JobStatus::Queued,
            progress: 0.0,
            error: None,
            created_at: now_ms() / 1000,
            finished_at: None,
            input,
            output: None,
            options,
            attempts: 0,
            converters: Vec::new(),
            request_id: None,
        }
    }

    /// Parses a `td:{T}:job:{id}` hash; `None` for an empty (missing) or malformed one.
    pub fn from_hash(h: &HashMap<String, String>) -> Option<Self> {
        let get = |k: &str| h.get(k).filter(|v| !v.is_empty()).cloned();
        let num = |k: &str| get(k).and_then(|v| v.parse::<u64>().ok());
        let output = get("output_key").map(|key| JobOutput {
            key,
            bytes: num("output_bytes").unwrap_or(0),
            duration_ms: num("duration_ms").unwrap_or(0),
            bitrate_kbps: get("output_bitrate_kbps").and_then(|v| v.parse().ok()),
        });
        Some(JobRecord {
            id: get("id")?,
            tenant: get("tenant")?,
            user_id: get("user_id")?,
            owner_email: get("owner_email").unwrap_or_default(),
            status: JobStatus::parse(&get("status")?)?,
            progress: get("progress").and_then(|p| p.parse().ok()).unwrap_or(0.0),
            error: get("error"),
            created_at: num("created_at")?,
            finished_at: num("finished_at"),
            input: JobInput {
                name: get("input_name").unwrap_or_default(),
                bytes: num("input_bytes").unwrap_or(0),
                key: get("input_key")?,
            },
            output,
            options: get("options")
                .and_then(|o| serde_json::from_str(&o).ok())
                .unwrap_or_default(),
            attempts: num("attempts").unwrap_or(0) as u32,
            converters: get("converters")
                .map(|c| c.split(',').map(str::to_owned).collect())
                .unwrap_or_default(),
            request_id: get("request_id"),
        })
    }

    /// The fields written when the job is created.
    pub fn to_fields(&self) -> Vec<(&'static str, String)> {
        let mut fields = vec![
            ("id", self.id.clone()),
            ("tenant", self.tenant.clone()),
            ("user_id", self.user_id.clone()),
            ("owner_email", self.owner_email.clone()),
            ("status", self.status.as_str().into()),
            ("progress", self.progress.to_string()),
            ("created_at", self.created_at.to_string()),
            ("input_name", self.input.name.clone()),
            ("input_bytes", self.input.bytes.to_string()),
            ("input_key", self.input.key.clone()),
            (
                "options",
                serde_json::to_string(&self.options).expect("options serialize to JSON"),
            ),
            ("attempts", self.attempts.to_string()),
        ];
        if let Some(id) = &self.request_id {
            fields.push(("request_id", id.clone()));
        }
        fields
    }
}

/// Unix time in milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_round_trip() {
        let job = JobRecord {
            id: "j1".into(),
            tenant: "t".into(),
            user_id: "u".into(),
            owner_email: "u@example.com".into(),
            status: JobStatus::Queued,
            progress: 0.0,
            error: None,
            created_at: 17,
            finished_at: None,
            input: JobInput {
                name: "a.mp4".into(),
                bytes: 10,
                key: "in/t/j1".into(),
            },
            output: None,
            options: JobOptions {
                bitrate: Some(128),
                mono: true,
                ..Default::default()
            },
            attempts: 0,
            request_id: Some("req-1".into()),
            converters: Vec::new(),
        };
        let h: HashMap<String, String> = job
            .to_fields()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        assert_eq!(JobRecord::from_hash(&h), Some(job));
        assert_eq!(JobRecord::from_hash(&HashMap::new()), None);
    }
}
