//! Operator routes beyond tenants and publishing: canary rollouts of plugins, the
//! dead-letter streams with replay, and the outbox of the embedded mail default.
//! The contract is `docs/admin-api.md`.

use std::path::PathBuf;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::admin::Operator;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery};
use tapedeck_store::canary::{self, CanarySettings, Sticky};
use tapedeck_store::queue::Requeue;

fn invalid(why: impl Into<String>) -> ApiError {
    ApiError::BadRequest("invalid_input", why.into())
}

/// `POST /v1/admin/plugins/{digest}/canary`: the body names the scope and the share;
/// thresholds not given keep their defaults.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryRequest {
    stage: String,
    tenant: Option<String>,
    percent: f64,
    sticky: Option<Sticky>,
    promote_after: Option<u32>,
    min_jobs: Option<u32>,
    window: Option<u32>,
    max_failure_delta: Option<f64>,
    max_invalid_delta: Option<f64>,
    max_p95_ratio: Option<f64>,
    p95_slack_ms: Option<u64>,
}

/// `POST /v1/admin/plugins/{digest}/canary`: starts (or replaces) the canary of a scope.
pub async fn start_canary(
    State(state): State<AppState>,
    _: Operator,
    Path(digest): Path<String>,
    ApiJson(r): ApiJson<CanaryRequest>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    if r.stage != "converter" {
        return Err(invalid(
            "canaries run on the converter stage (the one whose runs the analysis can judge)",
        ));
    }
    if let Some(t) = &r.tenant {
        tapedeck_store::tenants::load_tenant(&state.pool, t)
            .await?
            .ok_or(ApiError::NotFound)?;
    }
    let plugin = tapedeck_store::plugins::get(&state.pool, &digest)
        .await?
        .ok_or(ApiError::NotFound)?;
    if plugin.stage != r.stage {
        return Err(invalid(format!("{digest} is a {} component", plugin.stage)));
    }
    if let Some(owner) = &plugin.owner
        && r.tenant.as_deref() != Some(owner.as_str())
    {
        return Err(invalid(format!(
            "{digest} belongs to tenant {owner} and runs only for it"
        )));
    }
    let mut s = CanarySettings::new(&r.stage, r.tenant.as_deref(), &digest, r.percent);
    s.sticky = r.sticky.unwrap_or_default();
    s.promote_after = r.promote_after;
    s.min_jobs = r.min_jobs.unwrap_or(s.min_jobs);
    s.window = r.window.unwrap_or(s.window);
    s.max_failure_delta = r.max_failure_delta.unwrap_or(s.max_failure_delta);
    s.max_invalid_delta = r.max_invalid_delta.unwrap_or(s.max_invalid_delta);
    s.max_p95_ratio = r.max_p95_ratio.unwrap_or(s.max_p95_ratio);
    s.p95_slack_ms = r.p95_slack_ms.unwrap_or(s.p95_slack_ms);
    s.validate().map_err(invalid)?;
    let active = tapedeck_store::plugins::active(&state.pool).await?;
    let running = active
        .iter()
        .find(|a| a.stage == s.stage && a.tenant == s.tenant)
        .and_then(|a| a.digest.clone());
    if running.as_deref() == Some(digest.as_str()) {
        return Err(ApiError::Conflict(
            "already_active",
            "this component already runs the stage for that scope".into(),
        ));
    }
    canary::start(&state.pool, &s).await?;
    let status = canary::status(&state.pool, &s).await?;
    Ok((StatusCode::CREATED, Json(json!({ "canary": status }))))
}

/// `GET /v1/admin/plugins/canaries`: every running canary with its analysis so far.
pub async fn list_canaries(
    State(state): State<AppState>,
    _: Operator,
) -> Result<Json<Value>, ApiError> {
    let mut out = Vec::new();
    for s in canary::all(&state.pool).await? {
        out.push(canary::status(&state.pool, &s).await?);
    }
    Ok(Json(json!({ "canaries": out })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scope {
    stage: String,
    tenant: Option<String>,
}

async fn end_canary(state: &AppState, scope: &Scope, action: &str) -> Result<Value, ApiError> {
    let s = canary::get(&state.pool, &scope.stage, scope.tenant.as_deref())
        .await?
        .ok_or(ApiError::NotFound)?;
    let why = match action {
        "canary-promote" => "promoted by the operator",
        _ => "aborted by the operator",
    };
    if !canary::end(&state.pool, &s, action, why).await? {
        // Ended meanwhile (by its analysis): nothing to end.
        return Err(ApiError::NotFound);
    }
    Ok(json!({ "ended": action, "digest": s.digest, "stage": s.stage, "tenant": s.tenant }))
}

/// `POST /v1/admin/plugins/canary/promote`: the canary becomes the active component.
pub async fn promote_canary(
    State(state): State<AppState>,
    _: Operator,
    ApiJson(scope): ApiJson<Scope>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(end_canary(&state, &scope, "canary-promote").await?))
}

/// `POST /v1/admin/plugins/canary/abort`: the canary stops; nothing else changes.
pub async fn abort_canary(
    State(state): State<AppState>,
    _: Operator,
    ApiJson(scope): ApiJson<Scope>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(end_canary(&state, &scope, "canary-abort").await?))
}

#[derive(Debug, Deserialize)]
pub struct DeadQuery {
    tenant: Option<String>,
    limit: Option<usize>,
}

/// `GET /v1/admin/dead[?tenant=T&limit=N]`: dead letters of conversions, newest first
/// (per tenant; every tenant's when none is named).
pub async fn dead_letters(
    State(state): State<AppState>,
    _: Operator,
    ApiQuery(q): ApiQuery<DeadQuery>,
) -> Result<Json<Value>, ApiError> {
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
    Ok(Json(json!({ "entries": entries })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Replay {
    tenant: String,
    job_id: String,
}

/// `POST /v1/admin/dead/replay`: the failed job goes back on the queue (attempts start
/// over, its dead letter goes), as a user's retry would.
pub async fn replay(
    State(state): State<AppState>,
    _: Operator,
    ApiJson(r): ApiJson<Replay>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let job = state
        .queue
        .get(&r.tenant, &r.job_id)
        .await?
        .ok_or(ApiError::NotFound)?;
    match state.queue.requeue_failed(&job).await? {
        Requeue::Queued => Ok((
            StatusCode::ACCEPTED,
            Json(json!({ "replayed": { "tenant": r.tenant, "job_id": r.job_id } })),
        )),
        Requeue::Missing => Err(ApiError::NotFound),
        Requeue::NotFailed(status) => Err(ApiError::Conflict(
            "not_failed",
            format!("only a failed job can be replayed; this one is {status}"),
        )),
    }
}

/// Largest outbox message shown, bytes.
const MAX_EML_BYTES: u64 = 1 << 20;

fn outbox_dir(state: &AppState) -> Result<&PathBuf, ApiError> {
    state.outbox.as_ref().ok_or(ApiError::Conflict(
        "no_outbox",
        "mail goes to an SMTP server (TAPEDECK_SMTP_URL), not to an outbox folder".into(),
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

/// `GET /v1/admin/outbox`: the newest 200 messages of the outbox folder.
pub async fn outbox(State(state): State<AppState>, _: Operator) -> Result<Json<Value>, ApiError> {
    let dir = outbox_dir(&state)?.clone();
    let messages = tokio::task::spawn_blocking(move || {
        let mut found: Vec<(u64, String, PathBuf)> = std::fs::read_dir(&dir)
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| {
                        let name = e.file_name().into_string().ok()?;
                        let meta = e.metadata().ok()?;
                        let at = meta
                            .modified()
                            .ok()?
                            .duration_since(std::time::UNIX_EPOCH)
                            .ok()?
                            .as_secs();
                        (name.ends_with(".eml") && meta.is_file()).then(|| (at, name, e.path()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        found.sort_by(|a, b| b.cmp(a));
        found.truncate(200);
        found
            .into_iter()
            .map(|(at, name, path)| {
                let mut head = vec![0u8; 8192];
                let n = std::fs::File::open(&path)
                    .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
                    .unwrap_or(0);
                let head = String::from_utf8_lossy(&head[..n]).into_owned();
                json!({
                    "name": name,
                    "to": header_of(&head, "To"),
                    "subject": header_of(&head, "Subject"),
                    "at": at,
                })
            })
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|e| ApiError::internal(format!("reading the outbox: {e}")))?;
    Ok(Json(json!({ "messages": messages })))
}

/// `GET /v1/admin/outbox/{name}`: one message, as written (`message/rfc822` text).
pub async fn outbox_message(
    State(state): State<AppState>,
    _: Operator,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let dir = outbox_dir(&state)?;
    let plain = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b));
    if !plain || !name.ends_with(".eml") || name.starts_with('.') {
        return Err(ApiError::NotFound);
    }
    let path = dir.join(&name);
    let meta = tokio::fs::metadata(&path)
        .await
        .map_err(|_| ApiError::NotFound)?;
    if !meta.is_file() || meta.len() > MAX_EML_BYTES {
        return Err(ApiError::NotFound);
    }
    let body = tokio::fs::read(&path)
        .await
        .map_err(|_| ApiError::NotFound)?;
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
