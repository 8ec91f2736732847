//! Endpoints of the replaced Python service, kept for its clients:
//! `POST /login` (HTTP Basic → token as text), `POST /upload` (multipart `file`, bearer
//! token → job id as text), `GET /download?fid=ID` (the MP3). All use the default tenant.

use std::collections::HashMap;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;

use crate::account::{ClientAddr, guarded_login};
use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::jobs::{serve_output, visible_job};
use crate::{AppState, Caller, upload};
use tapedeck_store::tenants::DEFAULT_TENANT;

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim_start().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// `POST /login` with HTTP Basic credentials: the token as text. A refusal asks for Basic
/// credentials (`WWW-Authenticate: Basic`), as the Python service did.
pub async fn login(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
) -> Response {
    let outcome = match basic_credentials(&headers) {
        Some((email, password)) => guarded_login(&state, DEFAULT_TENANT, &email, &password, addr)
            .await
            .map(|issued| issued.token),
        None => Err(ApiError::Unauthorized(
            "invalid_credentials",
            "invalid email or password",
        )),
    };
    match outcome {
        Ok(token) => token.into_response(),
        Err(error) => {
            let mut response = error.into_response();
            if response.status() == StatusCode::UNAUTHORIZED {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"tapedeck\", charset=\"UTF-8\""),
                );
            }
            response
        }
    }
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
    ApiQuery(q): ApiQuery<DownloadQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let job = visible_job(&state, &caller, &q.fid).await?;
    serve_output(&state, &job, &headers).await
}
