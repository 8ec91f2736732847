//! Accepting an upload: size limit before and while reading, container sniffing on the
//! first bytes, streaming into the blob store, then the job record and queue entry.
//!
//! The body is never held whole: it flows chunk by chunk into a multipart put. A
//! declared `Content-Length` over the limit is refused before any of the body is read;
//! an undeclared one is refused as soon as the count passes the limit.

use std::collections::HashMap;

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};

use axum::body::{Body, BodyDataStream};
use axum::http::{Request, header};
use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt, TryStreamExt, stream};

use crate::AppState;
use crate::error::{ApiError, ErrorCode, LimitLayer};
use tapedeck_blobs::BlobStore;
use tapedeck_blobs::PutStreamError;
use tapedeck_model::auth::Claims;
use tapedeck_model::iso_bmff::{Probe, ReadAt};
use tapedeck_store::queue::{JobInput, JobOptions, JobRecord};

/// Multipart framing and option fields allowed on top of the file itself.
pub const MULTIPART_SLACK: u64 = 64 * 1024;
/// Longest value of a form field other than `file` (the encoding options), in bytes.
pub const MAX_FIELD_BYTES: u64 = 4 * 1024;
/// Most fields a form may have, the file included.
pub const MAX_FIELDS: usize = 16;
/// Most body bytes the multipart parser may hold that no field has yielded yet.
pub const MAX_BUFFERED_BYTES: u64 = 4 << 20;
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
                ApiError::BadRequest(ErrorCode::InvalidOptions, format!("{k} must be a number"))
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
                    ErrorCode::InvalidOptions,
                    "mono must be a boolean".into(),
                ));
            }
        },
    };
    if bitrate.is_some() && vbr.is_some() {
        return Err(ApiError::BadRequest(
            ErrorCode::InvalidOptions,
            "give bitrate or vbr, not both".into(),
        ));
    }
    // The converter's own rules (tapedeck-mp3-rules): what it would refuse is a 400 now.
    let invalid = |why: String| ApiError::BadRequest(ErrorCode::InvalidOptions, why);
    if let Some(rate) = sample_rate {
        tapedeck_mp3_rules::check_sample_rate(rate).map_err(invalid)?;
    }
    if let Some(kbps) = bitrate {
        tapedeck_mp3_rules::check_bitrate(kbps, sample_rate).map_err(invalid)?;
    }
    if let Some(quality) = vbr {
        tapedeck_mp3_rules::check_vbr_quality(quality).map_err(invalid)?;
    }
    Ok(JobOptions {
        bitrate,
        vbr,
        sample_rate,
        mono,
    })
}

/// A quoted-string's quoted-pairs (a backslash before `"` or another backslash) undone:
/// what clients that escape, rather than percent-encode as browsers do, send for those.
fn unquote(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('\\', Some('\\' | '"')) => out.push(chars.next().expect("peeked")),
            _ => out.push(c),
        }
    }
    out
}

/// `C:\\...` or `\\\\server\\...`.
fn is_windows_path(name: &str) -> bool {
    let b = name.as_bytes();
    name.starts_with("\\\\")
        || (b.len() > 2 && b[0].is_ascii_alphabetic() && b[1] == b':' && b[2] == b'\\')
}

/// Keeps the file's own name, printable and bounded: the last component of a path
/// (`/`-separated; `\\` too, but only in a Windows path such as `C:\\a\\b.mov` or
/// `\\\\server\\share\\b.mov`, since `\\` is an ordinary character in other names). Browsers and
/// curl send a `"` in a name as `%22` (and CR/LF as `%0D`/`%0A`): those are decoded.
fn clean_name(name: Option<&str>) -> String {
    let unquoted = unquote(name.unwrap_or(""));
    let raw = unquoted.as_str();
    let mut decoded = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(i) = rest.find('%') {
        decoded.push_str(&rest[..i]);
        let escape = rest.get(i + 1..i + 3).map(str::to_ascii_uppercase);
        match escape.as_deref() {
            Some("22") => decoded.push('"'),
            Some("0D") => decoded.push('\r'),
            Some("0A") => decoded.push('\n'),
            _ => {
                decoded.push('%');
                rest = &rest[i + 1..];
                continue;
            }
        }
        rest = &rest[i + 3..];
    }
    decoded.push_str(rest);
    // A UNC name sent raw (two backslashes, then the server) loses one to `unquote`:
    // look at both forms.
    let windows = is_windows_path(name.unwrap_or("")) || is_windows_path(&decoded);
    let separators: &[char] = if windows { &['/', '\\'] } else { &['/'] };
    let base = decoded
        .rsplit(separators)
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
async fn sniffed<S, E>(
    mut body: S,
    source_error: impl FnOnce(E) -> ApiError,
) -> Result<impl Stream<Item = Result<Bytes, E>>, ApiError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    let mut head = BytesMut::new();
    while head.len() < 8 {
        match body.next().await {
            Some(Ok(chunk)) => head.extend_from_slice(&chunk),
            Some(Err(e)) => return Err(source_error(e)),
            None => break,
        }
    }
    if !is_iso_bmff(&head) {
        return Err(ApiError::UnsupportedMediaType);
    }
    Ok(stream::iter([Ok(head.freeze())]).chain(body))
}

/// Accepts `POST /v1/jobs` (and the compat `/upload`): stores the file and queues the job.
///
/// Every byte of the body is bounded, whatever its encoding: a declared `Content-Length`
/// over the tenant's limit is refused before reading; a multipart body as a whole is
/// limited to the tenant's limit plus [`MULTIPART_SLACK`], its `file` field to the limit,
/// every other field to [`MAX_FIELD_BYTES`], the number of fields to [`MAX_FIELDS`], and
/// what the multipart parser may hold at once (part headers, framing) to
/// [`MAX_BUFFERED_BYTES`]. A request that fails after its file was stored leaves no blob.
pub async fn accept(
    state: &AppState,
    caller: &Claims,
    query: HashMap<String, String>,
    request: Request<Body>,
) -> Result<JobRecord, ApiError> {
    // Through the second-long read cache, as the caller's session was: a deletion is seen
    // here at once when this process made it, elsewhere within the second (and the
    // session check refuses the tenant's tokens from then on).
    let tenant = tapedeck_store::tenants::load_cached(&state.pool, &caller.tenant)
        .await?
        .filter(|t| !t.deleting)
        .ok_or(ApiError::Unauthorized(
            ErrorCode::InvalidToken,
            "missing, invalid or expired token",
        ))?;
    let limits = tenant.effective(&state.tenant_defaults);
    let layer = |name: &str| tenant.limits.layer_of(name, &state.tenant_defaults);
    // The upload limit: the server's setting, tightened by the tenant layers.
    let (limit, upload_layer) = match limits.max_upload_bytes {
        Some(t) if t < state.max_upload_bytes => (t, layer("max_upload_bytes")),
        _ => (state.max_upload_bytes, LimitLayer::Server),
    };
    let too_large = |e: ApiError| match e {
        ApiError::PayloadTooLarge(v) => ApiError::limit("max_upload_bytes", v, upload_layer, 0),
        other => other,
    };
    // Rate, backlog and quota refuse before a byte of the body is read.
    if let Some(r) = state.queue.admission(&tenant.name, &limits, 0).await? {
        return Err(ApiError::limit(
            &r.limit,
            r.value,
            layer(&r.limit),
            r.current,
        ));
    }
    accept_within(state, caller, query, request, &tenant.name, &limits, limit)
        .await
        .map_err(too_large)
        .map_err(|e| match e {
            ApiError::LimitExceeded {
                limit: name,
                value,
                message,
                status,
                retry_after,
                ..
            } if name != "max_upload_bytes" => ApiError::LimitExceeded {
                layer: layer(&name),
                limit: name,
                value,
                message,
                status,
                retry_after,
            },
            other => other,
        })
}

async fn accept_within(
    state: &AppState,
    caller: &Claims,
    query: HashMap<String, String>,
    request: Request<Body>,
    tenant_name: &str,
    limits: &tapedeck_model::tenant::TenantLimits,
    limit: u64,
) -> Result<JobRecord, ApiError> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let is_multipart = content_type
        .to_ascii_lowercase()
        .starts_with("multipart/form-data");
    // Set by the request-id layer: the job's log lines carry it too.
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() <= 128)
        .map(str::to_owned);
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
    let key = format!("in/{tenant_name}/{id}");
    let mut fields = query;
    // Options in the query are checked before any of the body is read.
    parse_options(&fields)?;
    let body = request.into_body().into_data_stream();
    let mut stored: Option<(String, u64)> = None;
    let read = if is_multipart {
        read_form(
            state,
            &content_type,
            body,
            &key,
            limit,
            &mut fields,
            &mut stored,
        )
        .await
    } else {
        let name = clean_name(
            fields
                .get("name")
                .or(fields.get("filename"))
                .map(String::as_str),
        );
        match sniffed(body, |e| body_error(&e)).await {
            Ok(body) => store(state, &key, body, limit, |e| body_error(&e))
                .await
                .map(|size| stored = Some((name, size))),
            Err(e) => Err(e),
        }
    };
    let checked = read.and_then(|()| {
        let stored = stored.clone().ok_or(ApiError::BadRequest(
            ErrorCode::MissingFile,
            "the form has no file field".into(),
        ))?;
        Ok((stored, parse_options(&fields)?))
    });
    let checked = match checked {
        // An explicit bitrate without a sample rate must suit the output rate the
        // converter takes from the source: check it against the file's own rate.
        Ok(((name, bytes), options)) => match (options.bitrate, options.sample_rate) {
            (Some(kbps), None) => match source_sample_rate(&state.blobs, &key, bytes).await {
                Some(source) => {
                    let rate = tapedeck_mp3_rules::default_output_rate(source);
                    tapedeck_mp3_rules::check_bitrate_at_source_rate(kbps, rate)
                        .map(|()| ((name, bytes), options))
                        .map_err(|why| ApiError::BadRequest(ErrorCode::InvalidOptions, why))
                }
                None => Ok(((name, bytes), options)),
            },
            _ => Ok(((name, bytes), options)),
        },
        Err(e) => Err(e),
    };
    let ((name, bytes), options) = match checked {
        Ok(ok) => ok,
        Err(e) => {
            if stored.is_some() {
                state.blobs.delete(&key).await?;
            }
            return Err(e);
        }
    };

    let mut job = JobRecord::queued(
        id,
        tenant_name,
        (&caller.user_id, &caller.email),
        JobInput {
            name,
            bytes,
            key: key.clone(),
        },
        options,
    );
    job.request_id = request_id;
    match state.queue.enqueue_within(&job, limits).await {
        Ok(None) => {}
        Ok(Some(r)) => {
            state.blobs.delete(&key).await?;
            // The layer is filled in by `accept`.
            return Err(ApiError::limit(
                &r.limit,
                r.value,
                LimitLayer::Server,
                r.current,
            ));
        }
        Err(e) => {
            state.blobs.delete(&key).await?;
            return Err(e.into());
        }
    }
    tracing::info!(job = %job.id, tenant = %job.tenant, bytes, "job queued");
    Ok(job)
}

/// The sample rate of the first audio track of the ISO-BMFF blob `key` (`size` bytes),
/// from its sample description, read with a few bounded ranged reads (at most
/// [`MAX_PROBE_BOXES`] box headers); `None` when the file does not say (the converter
/// then decides).
async fn source_sample_rate(blobs: &BlobStore, key: &str, size: u64) -> Option<u32> {
    Probe::new(&StoredBlob { blobs, key }, size, MAX_PROBE_BOXES)
        .audio_sample_rate()
        .await
}

/// A stored blob, read by ranges.
struct StoredBlob<'a> {
    blobs: &'a BlobStore,
    key: &'a str,
}

impl ReadAt for StoredBlob<'_> {
    async fn read_at(&self, offset: u64, len: usize) -> Option<Vec<u8>> {
        let bytes = self
            .blobs
            .read_at(self.key, offset, len as u64)
            .await
            .ok()?;
        (bytes.len() == len).then(|| bytes.to_vec())
    }
}

/// Box headers read at most when probing an upload's sample rate.
const MAX_PROBE_BOXES: usize = 256;

/// Reads a `multipart/form-data` body: the `file` field streams into blob `key` (noted in
/// `stored` as soon as it is there, so the caller can remove it on a later error), every
/// other field lands in `fields`.
async fn read_form(
    state: &AppState,
    content_type: &str,
    body: BodyDataStream,
    key: &str,
    limit: u64,
    fields: &mut HashMap<String, String>,
    stored: &mut Option<(String, u64)>,
) -> Result<(), ApiError> {
    let boundary = multer::parse_boundary(content_type)
        .map_err(|e| ApiError::BadRequest(ErrorCode::BadMultipart, e.to_string()))?;
    let meter = Meter::default();
    let constraints = multer::Constraints::new().size_limit(
        multer::SizeLimit::new()
            .whole_stream(limit.saturating_add(MULTIPART_SLACK))
            .per_field(MAX_FIELD_BYTES)
            .for_field("file", limit),
    );
    let mut form = multer::Multipart::with_constraints(
        Metered {
            inner: body,
            meter: meter.clone(),
        },
        boundary,
        constraints,
    );
    let mut count = 0usize;
    while let Some(mut field) = form.next_field().await.map_err(|e| form_error(&meter, e))? {
        count += 1;
        if count > MAX_FIELDS {
            return Err(ApiError::BadRequest(
                ErrorCode::TooManyFields,
                format!("a form may have at most {MAX_FIELDS} fields"),
            ));
        }
        let field_name = field.name().unwrap_or("").to_owned();
        if field_name == "file" {
            if stored.is_some() {
                return Err(ApiError::BadRequest(
                    ErrorCode::BadMultipart,
                    "more than one file field".into(),
                ));
            }
            let name = clean_name(field.file_name());
            let counted = meter.clone();
            let data = Box::pin(field.inspect_ok(move |chunk| counted.consumed(chunk.len())));
            let body = sniffed(data, |e| form_error(&meter, e)).await?;
            let size = store(state, key, body, limit, |e| form_error(&meter, e)).await?;
            *stored = Some((name, size));
        } else {
            let mut value = Vec::new();
            while let Some(chunk) = field.chunk().await.map_err(|e| form_error(&meter, e))? {
                meter.consumed(chunk.len());
                value.extend_from_slice(&chunk);
            }
            let value = String::from_utf8(value).map_err(|_| {
                ApiError::BadRequest(
                    ErrorCode::InvalidOptions,
                    format!("form field `{field_name}` is not UTF-8 text"),
                )
            })?;
            fields.insert(field_name, value);
        }
    }
    Ok(())
}

/// How many body bytes went into the multipart parser and how many came out as field
/// data; the difference is what the parser holds (part headers, framing, read-ahead).
#[derive(Clone, Default)]
struct Meter(Arc<MeterCounts>);

#[derive(Default)]
struct MeterCounts {
    fed: AtomicU64,
    consumed: AtomicU64,
    overflowed: AtomicBool,
}

impl Meter {
    fn consumed(&self, n: usize) {
        self.0.consumed.fetch_add(n as u64, Ordering::Relaxed);
    }

    fn overflowed(&self) -> bool {
        self.0.overflowed.load(Ordering::Relaxed)
    }
}

/// The request body as the multipart parser reads it: refuses to give the parser more
/// once it holds over [`MAX_BUFFERED_BYTES`] that no field has yielded (multer buffers a
/// part's headers, and the preamble, until it finds their end).
struct Metered<S> {
    inner: S,
    meter: Meter,
}

impl<S> Stream for Metered<S>
where
    S: Stream<Item = Result<Bytes, axum::Error>> + Unpin,
{
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let counts = &self.meter.0;
        let fed = counts.fed.load(Ordering::Relaxed);
        let held = fed.saturating_sub(counts.consumed.load(Ordering::Relaxed));
        if held > MAX_BUFFERED_BYTES {
            counts.overflowed.store(true, Ordering::Relaxed);
            return Poll::Ready(Some(Err(std::io::Error::other(
                "multipart part headers or framing too large",
            ))));
        }
        match self.inner.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                self.meter
                    .0
                    .fed
                    .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(std::io::Error::other(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The API's answer to a multipart parser error.
fn form_error(meter: &Meter, error: multer::Error) -> ApiError {
    match error {
        _ if meter.overflowed() => ApiError::FieldTooLarge {
            what: "part headers and framing of the form".into(),
            limit: MAX_BUFFERED_BYTES,
        },
        multer::Error::StreamSizeExceeded { limit } => {
            ApiError::PayloadTooLarge(limit.saturating_sub(MULTIPART_SLACK))
        }
        multer::Error::FieldSizeExceeded { limit, field_name } => match field_name.as_deref() {
            Some("file") => ApiError::PayloadTooLarge(limit),
            name => ApiError::FieldTooLarge {
                what: format!("form field `{}`", name.unwrap_or("")),
                limit,
            },
        },
        other => body_error(&other),
    }
}

fn body_error(e: &dyn std::fmt::Display) -> ApiError {
    ApiError::BadRequest(ErrorCode::BadBody, format!("reading the upload: {e}"))
}

async fn store<S, E>(
    state: &AppState,
    key: &str,
    body: S,
    limit: u64,
    source_error: impl FnOnce(E) -> ApiError,
) -> Result<u64, ApiError>
where
    S: Stream<Item = Result<Bytes, E>>,
{
    match state.blobs.put_stream(key, body, limit).await {
        Ok(size) => Ok(size),
        Err(PutStreamError::TooLarge(limit)) => Err(ApiError::PayloadTooLarge(limit)),
        Err(PutStreamError::Source(e)) => Err(source_error(e)),
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
        // The converter's rules: 144 exists only at MPEG-2 rates, 8..24 only below 32 kHz.
        assert!(parse_options(&f(&[("bitrate", "144")])).is_ok());
        assert!(parse_options(&f(&[("bitrate", "144"), ("sample_rate", "44100")])).is_err());
        assert!(parse_options(&f(&[("bitrate", "16"), ("sample_rate", "44100")])).is_err());
        assert!(parse_options(&f(&[("bitrate", "16"), ("sample_rate", "8000")])).is_ok());
        assert!(parse_options(&f(&[("bitrate", "320"), ("sample_rate", "22050")])).is_err());
        let why = match parse_options(&f(&[("bitrate", "100")])) {
            Err(ApiError::BadRequest(_, why)) => why,
            other => panic!("{other:?}"),
        };
        assert!(why.contains("valid: 32, 40"), "{why}");
    }

    #[test]
    fn names_are_cleaned() {
        assert_eq!(clean_name(Some("../../etc/x.mp4")), "x.mp4");
        assert_eq!(clean_name(Some("C:\\a\\b.mov")), "b.mov");
        assert_eq!(clean_name(None), "upload");
        assert_eq!(clean_name(Some("\\\\srv\\share\\c.m4a")), "c.m4a");
        assert_eq!(clean_name(Some("a\\b.mp4")), "a\\b.mp4");
        assert_eq!(clean_name(Some("say %22hi%22.mp4")), "say \"hi\".mp4");
        assert_eq!(clean_name(Some("100% sure%0a.mp4")), "100% sure.mp4");
        assert_eq!(clean_name(Some("a\\\\b \\\"q\\\".mp4")), "a\\b \"q\".mp4");
    }
}
