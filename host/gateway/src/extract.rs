//! Extractors whose rejections answer in the API's error shape (`ApiError`), not the
//! framework's plain text: JSON bodies, query strings and path segments; who may call
//! (the operator token: [`Operator`]; a tenant admin: [`require_admin`]). Also the
//! fallbacks for an unknown route (404) and a wrong method (405).

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, ErrorCode};
use crate::{AppState, Caller, bearer_of};
use tapedeck_store::users::is_operator_token;

/// Largest JSON body the API reads (credentials, settings): a few KiB is plenty.
pub const MAX_JSON_BYTES: usize = 16 * 1024;

/// `axum::Json`, rejecting with an [`ApiError`].
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    let status = rejection.status();
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::FieldTooLarge {
            what: "the JSON body".into(),
            limit: MAX_JSON_BYTES as u64,
        },
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::Rejected(
            status,
            ErrorCode::UnsupportedMediaType,
            "expected a JSON body with `Content-Type: application/json`".into(),
        ),
        StatusCode::UNPROCESSABLE_ENTITY => {
            ApiError::Rejected(status, ErrorCode::InvalidBody, rejection.body_text())
        }
        _ => ApiError::Rejected(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidJson,
            rejection.body_text(),
        ),
    }
}

/// `axum::extract::Query`, rejecting with an [`ApiError`].
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(ApiQuery(value)),
            Err(rejection) => Err(query_rejection(rejection)),
        }
    }
}

fn query_rejection(rejection: QueryRejection) -> ApiError {
    ApiError::Rejected(
        StatusCode::BAD_REQUEST,
        ErrorCode::InvalidQuery,
        rejection.body_text(),
    )
}

/// `axum::extract::Path`, rejecting with an [`ApiError`]: a segment that is not UTF-8
/// once percent-decoded names nothing, so it is a 404 like any unknown id.
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(ApiPath(value)),
            Err(rejection) => Err(path_rejection(rejection)),
        }
    }
}

fn path_rejection(rejection: PathRejection) -> ApiError {
    match rejection {
        PathRejection::FailedToDeserializePathParams(_) => ApiError::NotFound,
        other => ApiError::internal(other.body_text()),
    }
}

/// The answer for a path no route matches.
pub async fn no_route() -> ApiError {
    ApiError::NotFound
}

/// The answer for a route that exists with other methods (axum adds `Allow`).
pub async fn wrong_method() -> ApiError {
    ApiError::Rejected(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::MethodNotAllowed,
        "this resource does not support that method".into(),
    )
}

/// A request made with the operator token (its SHA-256 is in Redis; see
/// `users::ensure_operator_token`).
pub struct Operator;

impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match bearer_of(parts) {
            Some(t) if t.len() <= 256 && is_operator_token(&state.pool, t).await? => Ok(Operator),
            _ => Err(ApiError::Unauthorized(
                ErrorCode::InvalidToken,
                "missing or invalid operator token",
            )),
        }
    }
}

/// Refuses a caller who is not an admin of their tenant (403 `admin_only`).
pub(crate) fn require_admin(caller: &Caller) -> Result<(), ApiError> {
    if caller.0.is_admin() {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            ErrorCode::AdminOnly,
            "only a tenant admin may do this".into(),
        ))
    }
}
