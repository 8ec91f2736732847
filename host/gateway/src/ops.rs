//! Operator routes for the running service: the dead-letter streams with replay, the
//! outbox of the embedded mail default, and any tenant's jobs. The contract is
//! `docs/admin-api.md`.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::extract::{ApiJson, ApiPath, ApiQuery, Operator};
use crate::tenants::existing;
use tapedeck_store::queue::{DeadLetter, Requeue};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeadQuery {
    /// Only this tenant's (default: every tenant's).
    tenant: Option<String>,
    /// 1..=1000, default 100 (others are clamped).
    limit: Option<usize>,
}

/// `{"entries": [...]}`
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeadLetters {
    pub entries: Vec<DeadLetter>,
}

/// Dead letters of conversions, newest first.
#[utoipa::path(
    get,
    path = "/v1/admin/dead",
    tag = "operator",
    security(("operator" = [])),
    params(DeadQuery),
    responses((status = 200, description = "The dead letters", body = DeadLetters)),
)]
pub async fn dead_letters(
    State(state): State<AppState>,
    _: Operator,
    ApiQuery(q): ApiQuery<DeadQuery>,
) -> Result<Json<DeadLetters>, ApiError> {
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let tenants = match q.tenant {
        Some(t) => vec![t],
        None => tapedeck_store::tenants::list(&state.pool)
            .await?
            .into_iter()
            .map(|t| t.name)
            .collect(),
    };
    let mut entries = Vec::new();
    for t in tenants {
        entries.extend(state.queue.dead_letters(&t, limit).await?);
    }
    entries.sort_by(|a, b| b.id.cmp(&a.id));
    entries.truncate(limit);
    Ok(Json(DeadLetters { entries }))
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Replay {
    pub tenant: String,
    pub job_id: String,
}

/// `{"replayed": {"tenant", "job_id"}}`
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Replayed {
    pub replayed: Replay,
}

/// The failed job goes back on the queue (attempts start over, its dead letter goes), as
/// a user's retry would.
#[utoipa::path(
    post,
    path = "/v1/admin/dead/replay",
    tag = "operator",
    security(("operator" = [])),
    request_body = Replay,
    responses(
        (status = 202, description = "Queued again", body = Replayed),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`not_failed`", body = ErrorBody),
    ),
)]
pub async fn replay(
    State(state): State<AppState>,
    _: Operator,
    ApiJson(r): ApiJson<Replay>,
) -> Result<(StatusCode, Json<Replayed>), ApiError> {
    let job = state
        .queue
        .get(&r.tenant, &r.job_id)
        .await?
        .ok_or(ApiError::NotFound)?;
    match state.queue.requeue_failed(&job).await? {
        Requeue::Queued => Ok((StatusCode::ACCEPTED, Json(Replayed { replayed: r }))),
        Requeue::Missing => Err(ApiError::NotFound),
        Requeue::NotFailed(status) => Err(ApiError::Conflict(
            ErrorCode::NotFailed,
            format!("only a failed job can be replayed; this one is {status}"),
        )),
    }
}

/// Largest outbox message shown, bytes.
const MAX_EML_BYTES: u64 = 1 << 20;

/// Bytes of a message read for its `To` and `Subject`.
const HEAD_BYTES: u64 = 8192;

fn outbox_of(state: &AppState) -> Result<&tapedeck_blobs::Outbox, ApiError> {
    state.outbox.as_ref().ok_or(ApiError::Conflict(
        ErrorCode::NoOutbox,
        "mail goes to an SMTP server (TAPEDECK_SMTP_URL), not to the outbox".into(),
    ))
}

/// The value of a header in the head of an `.eml` file.
fn header_of(head: &str, name: &str) -> String {
    head.lines()
        .take_while(|l| !l.is_empty())
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
        .unwrap_or_default()
}

/// A message of the outbox.
#[derive(Debug, Serialize, ToSchema)]
pub struct OutboxEntry {
    /// The message's name (`GET /v1/admin/outbox/{name}`).
    pub name: String,
    pub to: String,
    pub subject: String,
    /// When it was written, unix seconds.
    pub at: u64,
}

/// `{"messages": [...]}`
#[derive(Debug, Serialize, ToSchema)]
pub struct Outbox {
    pub messages: Vec<OutboxEntry>,
}

/// The newest 200 messages of the outbox (mail without an SMTP server), whichever
/// process wrote them: the outbox is in the blob store every process shares.
#[utoipa::path(
    get,
    path = "/v1/admin/outbox",
    tag = "operator",
    security(("operator" = [])),
    responses(
        (status = 200, description = "The messages, newest first", body = Outbox),
        (status = 409, description = "`no_outbox`: mail goes to an SMTP server", body = ErrorBody),
    ),
)]
pub async fn outbox(State(state): State<AppState>, _: Operator) -> Result<Json<Outbox>, ApiError> {
    use futures::{StreamExt, TryStreamExt};
    let outbox = outbox_of(&state)?;
    let mut listed = outbox.list().await.map_err(outbox_failed)?;
    listed.truncate(200);
    let messages = futures::stream::iter(listed)
        .map(|message| async move {
            // Pruned since it was listed: left out.
            let head = match outbox.head(&message, HEAD_BYTES).await {
                Ok(head) => head,
                Err(tapedeck_blobs::StorageError::NotFound(_)) => return Ok(None),
                Err(e) => return Err(e),
            };
            let head = String::from_utf8_lossy(&head);
            Ok(Some(OutboxEntry {
                to: header_of(&head, "To"),
                subject: header_of(&head, "Subject"),
                at: u64::try_from(message.at_ms / 1000).unwrap_or(0),
                name: message.name,
            }))
        })
        .buffered(16)
        .try_filter_map(|entry| async move { Ok(entry) })
        .try_collect()
        .await
        .map_err(outbox_failed)?;
    Ok(Json(Outbox { messages }))
}

fn outbox_failed(e: tapedeck_blobs::StorageError) -> ApiError {
    ApiError::internal(format!("reading the outbox: {e}"))
}

/// One message of the outbox, as written (RFC 5322 text, at most 1 MiB).
#[utoipa::path(
    get,
    path = "/v1/admin/outbox/{name}",
    tag = "operator",
    security(("operator" = [])),
    params(("name" = String, Path, description = "The message's name (`*.eml`)")),
    responses(
        (status = 200, description = "The message", content_type = "text/plain", body = String),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`no_outbox`: mail goes to an SMTP server", body = ErrorBody),
    ),
)]
pub async fn outbox_message(
    State(state): State<AppState>,
    _: Operator,
    ApiPath(name): ApiPath<String>,
) -> Result<Response, ApiError> {
    let body = outbox_of(&state)?
        .read(&name, MAX_EML_BYTES)
        .await
        .map_err(outbox_failed)?
        .ok_or(ApiError::NotFound)?;
    let mut res = (StatusCode::OK, body).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_read_from_the_head_only() {
        let eml = "To: ann@example.com\r\nSubject: Your MP3 is ready\r\n\r\nSubject: not this";
        assert_eq!(header_of(eml, "subject"), "Your MP3 is ready");
        assert_eq!(header_of(eml, "to"), "ann@example.com");
        assert_eq!(header_of(eml, "From"), "");
    }
}

/// `GET /v1/admin/jobs`: a tenant's jobs, newest first.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TenantJobsQuery {
    /// The tenant.
    tenant: String,
    /// Page size, 1..=100 (default 20; others are clamped).
    limit: Option<usize>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// A tenant's jobs, newest first (every user's), as `GET /v1/jobs` pages them.
#[utoipa::path(
    get,
    path = "/v1/admin/jobs",
    tag = "operator",
    security(("operator" = [])),
    params(TenantJobsQuery),
    responses(
        (status = 200, description = "A page", body = crate::jobs::JobPage),
        (status = 400, description = "`invalid_cursor`, `invalid_query`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such tenant", body = ErrorBody),
    ),
)]
pub async fn tenant_jobs(
    State(state): State<AppState>,
    _: Operator,
    ApiQuery(q): ApiQuery<TenantJobsQuery>,
) -> Result<Json<crate::jobs::JobPage>, ApiError> {
    existing(&state, &q.tenant).await?;
    let limit = q.limit.unwrap_or(20).clamp(1, 100);
    let after = match q.cursor.as_deref().filter(|c| !c.is_empty()) {
        None => None,
        Some(c) => Some(
            c.parse::<tapedeck_store::queue::ListCursor>()
                .map_err(|()| {
                    ApiError::BadRequest(
                        ErrorCode::InvalidCursor,
                        "cursor must be the next_cursor of a previous page".into(),
                    )
                })?,
        ),
    };
    let (jobs, next) = state
        .queue
        .list(&q.tenant, None, after.as_ref(), limit)
        .await?;
    Ok(Json(crate::jobs::JobPage {
        jobs,
        next_cursor: next.map(|c| c.to_string()),
    }))
}

/// Any tenant's job.
#[utoipa::path(
    get,
    path = "/v1/admin/jobs/{tenant}/{id}",
    tag = "operator",
    security(("operator" = [])),
    params(
        ("tenant" = String, Path, description = "The job's tenant"),
        ("id" = String, Path, description = "The job's id"),
    ),
    responses(
        (status = 200, description = "The job", body = tapedeck_model::job::JobRecord),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ),
)]
pub async fn tenant_job(
    State(state): State<AppState>,
    _: Operator,
    ApiPath((tenant, id)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    let job = state
        .queue
        .get(&tenant, &id)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(Json(job).into_response())
}
