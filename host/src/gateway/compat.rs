//! Endpoints of the replaced Python service, kept for its clients:
//! `POST /login` (HTTP Basic → token as text), `POST /upload` (multipart `file`, bearer
//! token → job id as text), `GET /download?fid=ID` (the MP3). All use the default tenant.

use std::collections::HashMap;

use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, header};
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;

use crate::gateway::account::{ClientAddr, guarded_login};
use crate::gateway::error::ApiError;
use crate::gateway::jobs::{serve_output, visible_job};
use crate::gateway::tenants::DEFAULT_TENANT;
use crate::gateway::{AppState, Caller, upload};

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))?;
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

pub async fn login(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
) -> Result<String, ApiError> {
    let (email, password) = basic_credentials(&headers).ok_or(ApiError::Unauthorized(
        "invalid_credentials",
        "invalid email or password",
    ))?;
    Ok(
        guarded_login(&state, DEFAULT_TENANT, &email, &password, addr)
            .await?
            .token,
    )
}

pub async fn upload(
    State(state): State<AppState>,
    Caller(caller): Caller,
    request: Request,
) -> Result<String, ApiError> {
    Ok(upload::accept(&state, &caller, HashMap::new(), request)
        .await?
        .id)
}

#[derive(Debug, Deserialize)]
pub struct DownloadQuery {
    fid: String,
}

pub async fn download(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Query(q): Query<DownloadQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let job = visible_job(&state, &caller, &q.fid).await?;
    serve_output(&state, &job, &headers).await
}
