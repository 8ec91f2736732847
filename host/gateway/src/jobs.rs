//! The `/v1/jobs` resource: create, list, show, delete, retry, SSE events, MP3 output.
//!
//! Visibility: a job is visible to its owner, and to an admin of its tenant; any other
//! id answers 404, exactly like an id that does not exist.

use std::collections::HashMap;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use object_store::GetRange;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, ErrorBody, ErrorCode, LimitLayer};
use crate::events::JobSignal;
use crate::extract::{ApiPath, ApiQuery};
use crate::openapi::Binary;
use crate::{AppState, Caller, upload};
use tapedeck_model::auth::Claims;
use tapedeck_store::queue::{JobChange, JobRecord, JobStatus, ListCursor, Requeue};

/// Loads job `id` if the caller may see it.
pub async fn visible_job(
    state: &AppState,
    caller: &Claims,
    id: &str,
) -> Result<JobRecord, ApiError> {
    if id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(ApiError::NotFound);
    }
    let job = state
        .queue
        .get(&caller.tenant, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let visible =
        job.tenant == caller.tenant && (job.user_id == caller.user_id || caller.is_admin());
    if visible {
        Ok(job)
    } else {
        Err(ApiError::NotFound)
    }
}

/// The encoding options of an upload: query parameters of a raw upload, or form fields
/// of a multipart one (the README's table gives the valid combinations).
#[derive(Debug, Deserialize, IntoParams, ToSchema)]
#[into_params(parameter_in = Query)]
pub struct UploadOptions {
    /// Constant bitrate, kbit/s (MPEG-1/2 layer III rates); not with `vbr`.
    #[param(schema_with = bitrate_schema)]
    #[schema(schema_with = bitrate_schema)]
    pub bitrate: Option<u16>,
    /// LAME VBR quality 0 (best) ..= 9; not with `bitrate`.
    #[param(minimum = 0, maximum = 9)]
    #[schema(minimum = 0, maximum = 9)]
    pub vbr: Option<u8>,
    /// Output sample rate, Hz (8000 ..= 48000, the MP3 rates); default: the source's.
    #[param(schema_with = sample_rate_schema)]
    #[schema(schema_with = sample_rate_schema)]
    pub sample_rate: Option<u32>,
    /// Downmix to one channel (`true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`).
    pub mono: Option<bool>,
    /// Raw uploads: the file's name (for the MP3's `Content-Disposition`).
    pub name: Option<String>,
    /// Raw uploads: same as `name`.
    pub filename: Option<String>,
}

/// A multipart upload: the file and, optionally, the encoding options.
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct UploadForm {
    /// An MP4/M4A/MOV file.
    #[schema(value_type = Binary)]
    pub file: Vec<u8>,
    #[schema(schema_with = bitrate_schema)]
    pub bitrate: Option<u16>,
    #[schema(nullable = false, minimum = 0, maximum = 9)]
    pub vbr: Option<u8>,
    #[schema(schema_with = sample_rate_schema)]
    pub sample_rate: Option<u32>,
    #[schema(nullable = false)]
    pub mono: Option<bool>,
}

/// `bitrate`: a Layer III bitrate (which ones a sample rate takes: `tapedeck-mp3-rules`).
fn bitrate_schema() -> utoipa::openapi::Object {
    use tapedeck_mp3_rules::{MPEG1_BITRATES, MPEG2_BITRATES, MPEG25_BITRATES};
    let mut all: Vec<u16> = [&MPEG1_BITRATES[..], &MPEG2_BITRATES, &MPEG25_BITRATES].concat();
    all.sort_unstable();
    all.dedup();
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::Integer)
        .enum_values(Some(all))
        .description(Some("Constant bitrate, kbit/s; not with `vbr`"))
        .build()
}

/// `sample_rate`: one MP3 can carry.
fn sample_rate_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::Integer)
        .enum_values(Some(tapedeck_mp3_rules::MP3_SAMPLE_RATES))
        .description(Some("Output sample rate, Hz; default: the source's"))
        .build()
}

/// Uploads a file and queues its conversion.
///
/// The body is a `multipart/form-data` form with a `file` field (and the options as
/// fields), or the file itself (any other content type) with the options as query
/// parameters.
#[utoipa::path(
    post,
    path = "/v1/jobs",
    tag = "jobs",
    security(("bearer" = [])),
    params(UploadOptions),
    request_body(content(
        (UploadForm = "multipart/form-data"),
        (Binary = "application/octet-stream"),
    )),
    responses(
        (status = 202, description = "Queued", body = JobRecord,
         headers(("Location" = String, description = "`/v1/jobs/{id}`")),
         links(
             ("status" = (operation_id = "show", parameters(("id" = "$response.body#/id")))),
             ("events" = (operation_id = "events", parameters(("id" = "$response.body#/id")))),
             ("output" = (operation_id = "output", parameters(("id" = "$response.body#/id")))),
             ("retry" = (operation_id = "retry", parameters(("id" = "$response.body#/id")))),
             ("delete" = (operation_id = "remove", parameters(("id" = "$response.body#/id")))),
         )),
        (status = 400, description = "`invalid_options`, `bad_multipart`, `missing_file`, \
                                      `too_many_fields`, `bad_body`", body = ErrorBody),
        (status = 403, description = "`limit_exceeded`: the quota (`quota_bytes`)",
         body = ErrorBody),
        (status = 413, description = "`limit_exceeded` (`max_upload_bytes`), \
                                      `field_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: not an MP4/M4A/MOV file",
         body = ErrorBody),
        (status = 429, description = "`limit_exceeded`: `jobs_per_minute` or `max_queued` \
                                      (`Retry-After`)", body = ErrorBody,
         headers(("Retry-After" = u64, description = "Seconds"))),
    ),
)]
pub async fn create(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiQuery(query): ApiQuery<HashMap<String, String>>,
    request: Request,
) -> Result<Response, ApiError> {
    let job = upload::accept(&state, &caller, query, request).await?;
    let location =
        HeaderValue::from_str(&format!("/v1/jobs/{}", job.id)).map_err(ApiError::internal)?;
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(job),
    )
        .into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Page size, 1..=100 (default 20; others are clamped).
    limit: Option<usize>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// A page of jobs.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JobPage {
    pub jobs: Vec<JobRecord>,
    /// The `cursor` of the next page; `null` on the last.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// The caller's jobs (a tenant admin's: the tenant's), newest first.
#[utoipa::path(
    get,
    path = "/v1/jobs",
    tag = "jobs",
    security(("bearer" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "A page", body = JobPage),
        (status = 400, description = "`invalid_cursor`, `invalid_query`", body = ErrorBody),
    ),
)]
pub async fn list(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<JobPage>, ApiError> {
    let limit = q.limit.unwrap_or(20).clamp(1, 100);
    let owner = (!caller.is_admin()).then_some(caller.user_id.as_str());
    let after = match q.cursor.as_deref().filter(|c| !c.is_empty()) {
        None => None,
        Some(c) => Some(c.parse::<ListCursor>().map_err(|()| {
            ApiError::BadRequest(
                ErrorCode::InvalidCursor,
                "cursor must be the next_cursor of a previous page".into(),
            )
        })?),
    };
    let (jobs, next) = state
        .queue
        .list(&caller.tenant, owner, after.as_ref(), limit)
        .await?;
    let next = next.map(|c| c.to_string());
    Ok(Json(JobPage {
        jobs,
        next_cursor: next,
    }))
}

/// One job.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}",
    tag = "jobs",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The job's id")),
    responses(
        (status = 200, description = "The job", body = JobRecord),
        (status = 404, description = "`not_found` (also another user's job)", body = ErrorBody),
    ),
)]
pub async fn show(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<JobRecord>, ApiError> {
    Ok(Json(visible_job(&state, &caller, &id).await?))
}

/// `GET /v1/jobs/{id}` (of the default tenant) without authentication, for the benchmark
/// only (`bench_routes`).
pub async fn show_unauthenticated(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<JobRecord>, ApiError> {
    let tenant = tapedeck_store::tenants::DEFAULT_TENANT;
    Ok(Json(
        state
            .queue
            .get(tenant, &id)
            .await?
            .ok_or(ApiError::NotFound)?,
    ))
}

/// Deletes a job and its files.
#[utoipa::path(
    delete,
    path = "/v1/jobs/{id}",
    tag = "jobs",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The job's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ),
)]
pub async fn remove(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let job = visible_job(&state, &caller, &id).await?;
    state.queue.delete(&job).await?;
    state.blobs.delete(&job.input.key).await?;
    if let Some(output) = &job.output {
        state.blobs.delete(&output.key).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/jobs/{id}/retry`: a failed job goes back on the queue with its attempts
/// starting over (after the operator fixed the cause, a swapped plugin for instance);
/// its dead letter is dropped. 409 for a job that is not `failed`.
#[utoipa::path(
    post,
    path = "/v1/jobs/{id}/retry",
    tag = "jobs",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The job's id")),
    responses(
        (status = 202, description = "Queued again", body = JobRecord),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`not_failed`", body = ErrorBody),
    ),
)]
pub async fn retry(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let job = visible_job(&state, &caller, &id).await?;
    match state.queue.requeue_failed(&job).await? {
        Requeue::Queued => {}
        Requeue::Missing => return Err(ApiError::NotFound),
        Requeue::NotFailed(status) => {
            return Err(ApiError::Conflict(
                ErrorCode::NotFailed,
                format!("only a failed job can be retried; this one is {status}"),
            ));
        }
    }
    // The job as the retry left it (the script reset these). Not read back: an idle
    // worker may already have started it.
    let job = JobRecord {
        status: JobStatus::Queued,
        attempts: 0,
        progress: 0.0,
        error: None,
        finished_at: None,
        ..job
    };
    Ok((StatusCode::ACCEPTED, Json(job)).into_response())
}

/// One Server-Sent Event of `GET /v1/jobs/{id}/events`.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct JobEvent {
    pub event: JobEventName,
    /// JSON: the job (`status`), `{"progress": p}` (`progress`),
    /// `{"id", "status": "deleted"}` (`deleted`), or `{"reason"}` (`reconnect`).
    #[schema(content_media_type = "application/json")]
    pub data: String,
}

/// The kinds of [`JobEvent`].
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobEventName {
    Status,
    Progress,
    Deleted,
    Reconnect,
}

/// Server-Sent Events: a `status` event with the whole job first, then `progress`
/// (`{"progress": p}`) and `status` events as they happen; the stream ends after the
/// job is done or failed, or after a final `deleted` event (`{"id", "status": "deleted"}`)
/// when the job is deleted, or — the gateway shutting down — after a final `reconnect`
/// event (`{"reason"}`, with `retry:` 1000 ms): open the stream again (another gateway
/// answers), it starts with the job as it is then.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}/events",
    tag = "jobs",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The job's id")),
    responses(
        (status = 200, description = "`event: status` (data: the job), `event: progress` \
                                      (data: `{\"progress\": p}`), `event: deleted`, \
                                      `event: reconnect` (the gateway shuts down)",
         content_type = "text/event-stream", body = JobEvent),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 429, description = "`limit_exceeded`: the caller has \
                                      `max_event_streams_per_user` streams open already",
         body = ErrorBody),
    ),
)]
pub async fn events(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, std::convert::Infallible>>>, ApiError> {
    let slot = state
        .stream_cap
        .open(&caller.tenant, &caller.user_id)
        .ok_or_else(|| {
            let cap = state.stream_cap.per_user as u64;
            ApiError::limit("max_event_streams_per_user", cap, LimitLayer::Server, cap)
        })?;
    // Only a caller who may see the job marks it. Then watch before the snapshot, so no
    // change between the two is missed: here, then in Redis (a job nobody watches
    // changes without a `PUBLISH`; from the mark on, each change is published).
    visible_job(&state, &caller, &id).await?;
    let mut watch = state.events.watch(&id);
    if !state.queue.watch(&caller.tenant, &id).await? {
        return Err(ApiError::NotFound);
    }
    let job = visible_job(&state, &caller, &id).await?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Event>(16);
    tokio::spawn(async move {
        // Counted against the caller's cap until the stream ends.
        let _slot = slot;
        let mut snapshot = Some(job);
        loop {
            if let Some(job) = snapshot.take() {
                let done = job.status.is_final();
                if tx.send(status_event(&job)).await.is_err() || done {
                    return;
                }
            }
            // Quiet for a while, a status change or a resync: fall through and re-read.
            let signal = tokio::select! {
                // The client went away: free the slot now, not at the next event.
                _ = tx.closed() => return,
                // Shutting down: the client is told to come back (to another gateway),
                // and the stream ends now rather than at the shutdown timeout.
                _ = state.events.closed() => {
                    let _ = tx.send(reconnect_event()).await;
                    return;
                }
                signal = tokio::time::timeout(Duration::from_secs(10), watch.next()) => signal.ok(),
            };
            if let Some(JobSignal::Change(payload)) = signal {
                let progress = serde_json::from_str::<JobChange>(&payload)
                    .ok()
                    .as_ref()
                    .and_then(JobChange::converting_progress)
                    .unwrap_or(0.0);
                if progress > 0.0 {
                    let event = Event::default()
                        .event("progress")
                        .data(json!({ "progress": progress }).to_string());
                    if tx.send(event).await.is_err() {
                        return;
                    }
                    continue;
                }
            }
            match state.queue.get(&caller.tenant, &id).await {
                Ok(Some(job)) => snapshot = Some(job),
                Ok(None) => {
                    // Deleted: one last event, so the client knows why the stream ends.
                    let gone = Event::default()
                        .event("deleted")
                        .data(json!({"id": id, "status": "deleted"}).to_string());
                    let _ = tx.send(gone).await;
                    return;
                }
                Err(e) => {
                    tracing::warn!(job = %id, error = %e, "SSE could not re-read the job");
                    return;
                }
            }
        }
    });
    let events = futures::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|e| e.map(Ok)));
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// The last event of a stream the gateway ends because it shuts down.
fn reconnect_event() -> Event {
    Event::default()
        .event("reconnect")
        .retry(RECONNECT_AFTER)
        .data(json!({"reason": "the gateway is shutting down; reconnect"}).to_string())
}

/// The `retry:` of the `reconnect` event: how soon a client opens the stream again.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

fn status_event(job: &JobRecord) -> Event {
    Event::default()
        .event("status")
        .data(serde_json::to_string(job).expect("job records serialize"))
}

/// `?expires=..&sig=..` of a signed download link (see `tapedeck_store::links`).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LinkQuery {
    /// Signed links: the job's tenant.
    tenant: Option<String>,
    /// Signed links: expiry, unix seconds.
    expires: Option<u64>,
    /// Signed links: the signature.
    sig: Option<String>,
}

/// The MP3, with `Range` support and the original file name: for the owner (or a tenant
/// admin) with a bearer token, or for anyone with a signed link from a notification,
/// which needs no token but only works for that job's output and until it expires.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}/output",
    tag = "jobs",
    security(("bearer" = []), ()),
    params(
        ("id" = String, Path, description = "The job's id"),
        LinkQuery,
        ("Range" = Option<String>, Header, description = "One `bytes=` range"),
    ),
    responses(
        (status = 200, description = "The MP3", content_type = "audio/mpeg", body = Binary,
         headers(("Content-Disposition" = String), ("Accept-Ranges" = String))),
        (status = 206, description = "A range of the MP3", content_type = "audio/mpeg",
         body = Binary, headers(("Content-Range" = String))),
        (status = 403, description = "`invalid_link`: a signed link that is invalid or expired",
         body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`not_ready`: the job is not done", body = ErrorBody),
        (status = 416, description = "`range_not_satisfiable`", body = ErrorBody,
         headers(("Content-Range" = String))),
    ),
)]
pub async fn output(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(link): ApiQuery<LinkQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let job = match (link.expires, link.sig) {
        (None, None) => visible_job(&state, &caller?.0, &id).await?,
        (Some(expires), Some(sig)) => {
            let tenant = link.tenant.unwrap_or_default();
            linked_job(&state, &tenant, &id, expires, &sig).await?
        }
        _ => return Err(invalid_link()),
    };
    serve_output(&state, &job, &headers).await
}

fn invalid_link() -> ApiError {
    ApiError::Forbidden(
        ErrorCode::InvalidLink,
        "this download link is invalid or has expired".into(),
    )
}

/// The job a signed link names, if the link is genuine, unexpired, and the job still has
/// that output. Every failure looks the same (403).
async fn linked_job(
    state: &AppState,
    tenant: &str,
    id: &str,
    expires: u64,
    sig: &str,
) -> Result<JobRecord, ApiError> {
    if id.len() > 64
        || !id.bytes().all(|b| b.is_ascii_alphanumeric())
        || !tapedeck_store::tenants::valid_tenant_name(tenant)
    {
        return Err(invalid_link());
    }
    let job = state
        .queue
        .get(tenant, id)
        .await?
        .ok_or_else(invalid_link)?;
    let output = job.output.as_ref().ok_or_else(invalid_link)?;
    let now = tapedeck_store::queue::now_ms() / 1000;
    if state.links.verify(id, &output.key, expires, sig, now) {
        Ok(job)
    } else {
        Err(invalid_link())
    }
}

/// Streams a done job's MP3, honouring a single `Range: bytes=...`.
pub async fn serve_output(
    state: &AppState,
    job: &JobRecord,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let output = match (&job.status, &job.output) {
        (JobStatus::Done, Some(output)) => output,
        _ => {
            return Err(ApiError::Conflict(
                ErrorCode::NotReady,
                format!("the job is {}, not done", job.status.as_str()),
            ));
        }
    };
    let total = state.blobs.size(&output.key).await?;
    let asked = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map_or(RangeAsked::Whole, |spec| parse_range(spec, total));
    let range = match asked {
        RangeAsked::Whole => None,
        RangeAsked::Part(range) => Some(range),
        RangeAsked::Unsatisfiable => return Err(ApiError::RangeNotSatisfiable(total)),
    };
    let blob = state.blobs.get_range(&output.key, range.clone()).await?;
    let mut response = Response::new(Body::from_stream(blob.stream));
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("audio/mpeg"));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::CONTENT_LENGTH,
        HeaderValue::from(blob.range.end - blob.range.start),
    );
    if let Ok(v) = HeaderValue::from_str(&content_disposition(&job.input.name)) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    if range.is_some() {
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        let cr = format!(
            "bytes {}-{}/{}",
            blob.range.start,
            blob.range.end - 1,
            blob.total
        );
        response.headers_mut().insert(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&cr).map_err(ApiError::internal)?,
        );
    }
    Ok(response)
}

/// What a `Range` header asks of a blob, per RFC 9110 14.2: a header the server does not
/// understand (another unit, bad syntax) or several ranges may be ignored, which serves
/// the whole blob (200); one range that fits gives 206; one that starts past the end, 416.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeAsked {
    Whole,
    Part(GetRange),
    Unsatisfiable,
}

/// Interprets a `Range` header value against a blob of `total` bytes.
pub fn parse_range(spec: &str, total: u64) -> RangeAsked {
    let Some((unit, set)) = spec.trim().split_once('=') else {
        return RangeAsked::Whole;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") || set.contains(',') {
        return RangeAsked::Whole;
    }
    let Some((start, end)) = set.split_once('-') else {
        return RangeAsked::Whole;
    };
    let (start, end) = (start.trim(), end.trim());
    let number = |s: &str| {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u64>().unwrap_or(u64::MAX))
    };
    if start.is_empty() {
        // A suffix: the last `n` bytes.
        return match number(end) {
            None => RangeAsked::Whole,
            Some(0) => RangeAsked::Unsatisfiable,
            Some(_) if total == 0 => RangeAsked::Unsatisfiable,
            Some(n) => RangeAsked::Part(GetRange::Bounded(total - n.min(total)..total)),
        };
    }
    let Some(first) = number(start) else {
        return RangeAsked::Whole;
    };
    let last = if end.is_empty() {
        None
    } else {
        match number(end) {
            Some(last) if last >= first => Some(last),
            // Not a valid range-spec (RFC 9110 14.1.1): the header is ignored.
            _ => return RangeAsked::Whole,
        }
    };
    if first >= total {
        return RangeAsked::Unsatisfiable;
    }
    let last = last.unwrap_or(total - 1).min(total - 1);
    RangeAsked::Part(GetRange::Bounded(first..last + 1))
}

/// `attachment` with the upload's name, `.mp3` instead of its extension; an ASCII
/// fallback plus the exact name in RFC 5987 form.
pub fn content_disposition(input_name: &str) -> String {
    let stem = match input_name.rsplit_once('.') {
        Some((stem, _)) if !stem.is_empty() => stem,
        _ => input_name,
    };
    let name = format!("{stem}.mp3");
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let encoded: String = name
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        use RangeAsked::*;
        let part = |r: std::ops::Range<u64>| Part(GetRange::Bounded(r));
        assert_eq!(parse_range("bytes=0-9", 100), part(0..10));
        assert_eq!(parse_range("Bytes = 90-", 100), part(90..100));
        assert_eq!(parse_range("bytes=-10", 100), part(90..100));
        assert_eq!(parse_range("bytes=-500", 100), part(0..100));
        assert_eq!(parse_range("bytes=50-500", 100), part(50..100));
        assert_eq!(parse_range("bytes=100-", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), Unsatisfiable);
        // Ignored: invalid specs, other units, several ranges.
        assert_eq!(parse_range("bytes=5-1", 100), Whole);
        assert_eq!(parse_range("bytes=0-1,3-4", 100), Whole);
        assert_eq!(parse_range("items=0-1", 100), Whole);
        assert_eq!(parse_range("bytes=abc", 100), Whole);
        assert_eq!(parse_range("bytes=+1-2", 100), Whole);
        assert_eq!(parse_range("garbage", 100), Whole);
    }

    #[test]
    fn dispositions() {
        assert_eq!(
            content_disposition("My Song.m4a"),
            "attachment; filename=\"My Song.mp3\"; filename*=UTF-8''My%20Song.mp3"
        );
        assert_eq!(
            content_disposition("café\".mp4"),
            "attachment; filename=\"caf__.mp3\"; filename*=UTF-8''caf%C3%A9%22.mp3"
        );
    }
}
