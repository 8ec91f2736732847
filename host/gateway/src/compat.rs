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
use utoipa::{IntoParams, ToSchema};

use crate::account::{ClientAddr, guarded_login};
use crate::error::{ApiError, ErrorBody, ErrorCode};
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
#[utoipa::path(
    post,
    path = "/login",
    tag = "compat",
    security(("basic" = [])),
    responses(
        (status = 200, description = "The token (a user's, of the default tenant)",
         content_type = "text/plain", body = String),
        (status = 401, description = "`invalid_credentials` (`WWW-Authenticate: Basic`)",
         body = ErrorBody),
        (status = 429, description = "`too_many_attempts` (`Retry-After`)", body = ErrorBody,
         headers(("Retry-After" = u64, description = "Seconds"))),
    ),
)]
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
            ErrorCode::InvalidCredentials,
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

/// A multipart upload of the compat `/upload`: the file alone.
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct CompatUploadForm {
    /// An MP4/M4A/MOV file.
    #[schema(value_type = crate::openapi::Binary)]
    pub file: Vec<u8>,
}

/// Uploads a file (multipart `file`) and queues its conversion: the job id as text.
#[utoipa::path(
    post,
    path = "/upload",
    tag = "compat",
    security(("bearer" = [])),
    request_body(content = CompatUploadForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "The job's id", content_type = "text/plain", body = String),
        (status = 400, description = "`bad_multipart`, `missing_file`, `too_many_fields`, \
                                      `invalid_options`, `bad_body`", body = ErrorBody),
        (status = 403, description = "`limit_exceeded`: the quota", body = ErrorBody),
        (status = 413, description = "`limit_exceeded` (`max_upload_bytes`), \
                                      `field_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: not an MP4/M4A/MOV file",
         body = ErrorBody),
        (status = 429, description = "`limit_exceeded`: rate or backlog (`Retry-After`)",
         body = ErrorBody, headers(("Retry-After" = u64, description = "Seconds"))),
    ),
)]
pub async fn upload(
    State(state): State<AppState>,
    Caller(caller): Caller,
    request: Request,
) -> Result<String, ApiError> {
    Ok(upload::accept(&state, &caller, HashMap::new(), request)
        .await?
        .id)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DownloadQuery {
    /// The job's id.
    fid: String,
}

/// The MP3 of a done job (`Range` supported).
#[utoipa::path(
    get,
    path = "/download",
    tag = "compat",
    security(("bearer" = [])),
    params(
        DownloadQuery,
        ("Range" = Option<String>, Header, description = "One `bytes=` range"),
    ),
    responses(
        (status = 200, description = "The MP3", content_type = "audio/mpeg",
         body = crate::openapi::Binary),
        (status = 206, description = "A range of the MP3", content_type = "audio/mpeg",
         body = crate::openapi::Binary),
        (status = 400, description = "`invalid_query`: no `fid`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`not_ready`: the job is not done", body = ErrorBody),
        (status = 416, description = "`range_not_satisfiable`", body = ErrorBody),
    ),
)]
pub async fn download(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiQuery(q): ApiQuery<DownloadQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let job = visible_job(&state, &caller, &q.fid).await?;
    serve_output(&state, &job, &headers).await
}
