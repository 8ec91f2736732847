//! Accepting an upload: size limit before and while reading, container sniffing on the
//! first bytes, streaming into the blob store, then the job record and queue entry.
//!
//! The body is never held whole: it flows chunk by chunk into a multipart put. A
//! declared `Content-Length` over the limit is refused before any of the body is read;
//! an undeclared one is refused as soon as the count passes the limit.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{FromRequest, Multipart};
use axum::http::{Request, header};
use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt, TryStreamExt, stream};

use crate::gateway::AppState;
use crate::gateway::auth::Claims;
use crate::gateway::error::ApiError;
use crate::gateway::tenants::load_tenant;
use crate::queue::{JobInput, JobOptions, JobRecord, JobStatus, now_ms};
use crate::storage::PutStreamError;

/// Multipart framing allowed on top of the file itself when checking `Content-Length`.
const MULTIPART_SLACK: u64 = 64 * 1024;
/// Longest file name kept.
const MAX_NAME: usize = 200;

/// ISO-BMFF top-level box types a supported file may start with.
const LEADING_BOXES: &[&[u8; 4]] = &[
    b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"uuid", b"styp", b"sidx",
    b"moof", b"pdin", b"meta",
];

/// Whether the first bytes look like MP4/M4A/MOV: a box type at offset 4.
pub fn is_iso_bmff(head: &[u8]) -> bool {
    head.len() >= 8 && LEADING_BOXES.iter().any(|b| &head[4..8] == b.as_slice())
}

/// Parses and validates the encoding options (query parameters or form fields).
pub fn parse_options(fields: &HashMap<String, String>) -> Result<JobOptions, ApiError> {
    fn num<T: std::str::FromStr>(
        f: &HashMap<String, String>,
        k: &str,
    ) -> Result<Option<T>, ApiError> {
        match f.get(k).map(|v| v.trim()).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| {
                ApiError::BadRequest("invalid_options", format!("{k} must be a number"))
            }),
        }
    }
    let bitrate: Option<u16> = num(fields, "bitrate")?;
    let vbr: Option<u8> = num(fields, "vbr")?;
    let sample_rate: Option<u32> = num(fields, "sample_rate")?;
    let mono = match fields.get("mono").map(|v| v.trim().to_ascii_lowercase()) {
        None => false,
        Some(v) => match v.as_str() {
            "" | "0" | "false" | "no" | "off" => false,
            "1" | "true" | "yes" | "on" => true,
            _ => {
                return Err(ApiError::BadRequest(
                    "invalid_options",
                    "mono must be a boolean".into(),
                ));
            }
        },
    };
    const BITRATES: &[u16] = &[
        8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160, 192, 224, 256, 320,
    ];
    const RATES: &[u32] = &[8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000];
    if bitrate.is_some() && vbr.is_some() {
        return Err(ApiError::BadRequest(
            "invalid_options",
            "give bitrate or vbr, not both".into(),
        ));
    }
    if let Some(b) = bitrate
        && !BITRATES.contains(&b)
    {
        return Err(ApiError::BadRequest(
            "invalid_options",
            format!("bitrate {b} is not an MP3 bitrate"),
        ));
    }
    if let Some(q) = vbr
        && q > 9
    {
        return Err(ApiError::BadRequest(
            "invalid_options",
            "vbr is a quality from 0 to 9".into(),
        ));
    }
    if let Some(r) = sample_rate
        && !RATES.contains(&r)
    {
        return Err(ApiError::BadRequest(
            "invalid_options",
            format!("sample_rate {r} is not an MP3 rate"),
        ));
    }
    Ok(JobOptions {
        bitrate,
        vbr,
        sample_rate,
        mono,
    })
}

/// Keeps the last path component of a client-given name, printable and bounded.
fn clean_name(name: Option<&str>) -> String {
    let base = name
        .unwrap_or("")
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_NAME)
        .collect::<String>();
    if base.trim().is_empty() {
        "upload".into()
    } else {
        base
    }
}

/// Reads until 8 bytes are known, checks them, and gives back the whole stream.
async fn sniffed<S, E>(mut body: S) -> Result<impl Stream<Item = Result<Bytes, E>>, ApiError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut head = BytesMut::new();
    while head.len() < 8 {
        match body.next().await {
            Some(Ok(chunk)) => head.extend_from_slice(&chunk),
            Some(Err(e)) => {
                return Err(ApiError::BadRequest(
                    "bad_body",
                    format!("reading the upload: {e}"),
                ));
            }
            None => break,
        }
    }
    if !is_iso_bmff(&head) {
        return Err(ApiError::UnsupportedMediaType);
    }
    Ok(stream::iter([Ok(head.freeze())]).chain(body))
}

/// Accepts `POST /v1/jobs` (and the compat `/upload`): stores the file and queues the job.
pub async fn accept(
    state: &AppState,
    caller: &Claims,
    query: HashMap<String, String>,
    request: Request<Body>,
) -> Result<JobRecord, ApiError> {
    let tenant = load_tenant(&state.pool, &caller.tenant, state.max_upload_bytes)
        .await?
        .ok_or(ApiError::Unauthorized(
            "invalid_token",
            "missing, invalid or expired token",
        ))?;
    let limit = tenant.max_upload_bytes;
    let is_multipart = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("multipart/form-data"));
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let slack = if is_multipart { MULTIPART_SLACK } else { 0 };
    if declared.is_some_and(|n| n > limit.saturating_add(slack)) {
        return Err(ApiError::PayloadTooLarge(limit));
    }

    let id = uuid::Uuid::new_v4().simple().to_string();
    let key = format!("in/{}/{id}", tenant.name);
    let mut fields = query;
    // Options in the query are checked before any of the body is read.
    parse_options(&fields)?;
    let (name, bytes) = if is_multipart {
        let mut form = Multipart::from_request(request, state)
            .await
            .map_err(|e| ApiError::BadRequest("bad_multipart", e.body_text()))?;
        let mut stored: Option<(String, u64)> = None;
        while let Some(field) = form
            .next_field()
            .await
            .map_err(|e| ApiError::BadRequest("bad_multipart", e.body_text()))?
        {
            let field_name = field.name().unwrap_or("").to_owned();
            if field_name == "file" {
                if stored.is_some() {
                    state.blobs.delete(&key).await?;
                    return Err(ApiError::BadRequest(
                        "bad_multipart",
                        "more than one file field".into(),
                    ));
                }
                let name = clean_name(field.file_name());
                let body = sniffed(field).await?;
                let size = store(state, &key, body, limit).await?;
                stored = Some((name, size));
            } else {
                let value = field
                    .text()
                    .await
                    .map_err(|e| ApiError::BadRequest("bad_multipart", e.body_text()))?;
                fields.insert(field_name, value);
            }
        }
        stored.ok_or(ApiError::BadRequest(
            "missing_file",
            "the form has no file field".into(),
        ))?
    } else {
        let name = clean_name(
            fields
                .get("name")
                .or(fields.get("filename"))
                .map(String::as_str),
        );
        let body = sniffed(request.into_body().into_data_stream()).await?;
        (name, store(state, &key, body, limit).await?)
    };
    let options = match parse_options(&fields) {
        Ok(o) => o,
        Err(e) => {
            state.blobs.delete(&key).await?;
            return Err(e);
        }
    };

    let job = JobRecord {
        id,
        tenant: tenant.name,
        user_id: caller.user_id.clone(),
        owner_email: caller.email.clone(),
        status: JobStatus::Queued,
        progress: 0.0,
        error: None,
        created_at: now_ms() / 1000,
        finished_at: None,
        input: JobInput {
            name,
            bytes,
            key: key.clone(),
        },
        output: None,
        options,
        attempts: 0,
    };
    if let Err(e) = state.queue.enqueue(&job).await {
        state.blobs.delete(&key).await?;
        return Err(e.into());
    }
    tracing::info!(job = %job.id, tenant = %job.tenant, bytes, "job queued");
    Ok(job)
}

async fn store<S, E>(state: &AppState, key: &str, body: S, limit: u64) -> Result<u64, ApiError>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: std::fmt::Display,
{
    let body = body.map_err(|e| e.to_string());
    match state.blobs.put_stream(key, body, limit).await {
        Ok(size) => Ok(size),
        Err(PutStreamError::TooLarge(limit)) => Err(ApiError::PayloadTooLarge(limit)),
        Err(PutStreamError::Source(e)) => Err(ApiError::BadRequest(
            "bad_body",
            format!("reading the upload: {e}"),
        )),
        Err(PutStreamError::Storage(e)) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_iso_bmff() {
        assert!(is_iso_bmff(b"\0\0\0\x20ftypisom"));
        assert!(is_iso_bmff(b"\0\0\0\x08moov"));
        assert!(!is_iso_bmff(b"\x89PNG\r\n\x1a\n"));
        assert!(!is_iso_bmff(b"\0\0"));
    }

    #[test]
    fn options_are_validated() {
        let f = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<HashMap<_, _>>()
        };
        assert_eq!(parse_options(&f(&[])).unwrap(), JobOptions::default());
        let o = parse_options(&f(&[
            ("bitrate", "128"),
            ("mono", "true"),
            ("sample_rate", "44100"),
        ]))
        .unwrap();
        assert_eq!(
            (o.bitrate, o.mono, o.sample_rate),
            (Some(128), true, Some(44100))
        );
        assert!(parse_options(&f(&[("bitrate", "100")])).is_err());
        assert!(parse_options(&f(&[("bitrate", "128"), ("vbr", "2")])).is_err());
        assert!(parse_options(&f(&[("vbr", "10")])).is_err());
        assert!(parse_options(&f(&[("sample_rate", "96000")])).is_err());
        assert!(parse_options(&f(&[("mono", "maybe")])).is_err());
    }

    #[test]
    fn names_are_cleaned() {
        assert_eq!(clean_name(Some("../../etc/x.mp4")), "x.mp4");
        assert_eq!(clean_name(Some("C:\\a\\b.mov")), "b.mov");
        assert_eq!(clean_name(None), "upload");
    }
}
