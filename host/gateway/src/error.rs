//! The one error type of the HTTP API: `{"error": {"code": "...", "message": "..."}}`.
//!
//! Client mistakes carry a precise code and message; internal failures answer a generic
//! 500 and log their cause.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use tapedeck_blobs::StorageError;
use tapedeck_model::auth::AuthError;
use tapedeck_store::queue::QueueError;

/// The body of every error answer: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong. A `limit_exceeded` error also names the limit, its effective value
/// and the layer that set it; `/readyz`'s `unavailable` lists its checks.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    /// For people.
    pub message: String,
    /// `limit_exceeded`: the limit's name (`max_upload_bytes`, `jobs_per_minute`,
    /// `max_queued`, `quota_bytes`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub limit: Option<String>,
    /// `limit_exceeded`: the limit's effective value.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub value: Option<u64>,
    /// `limit_exceeded`: where the effective value was set.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub layer: Option<LimitLayer>,
    /// `/readyz`: every check, whether it passed, and why not.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub checks: Option<Vec<crate::health::ReadyCheck>>,
}

/// The `code` of an error body: what went wrong, for programs (`message` says it for
/// people). Serialised in snake_case (`InvalidJson` is `"invalid_json"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    // 400
    BadBody,
    BadMultipart,
    InvalidBody,
    InvalidCursor,
    InvalidInput,
    InvalidJson,
    InvalidOptions,
    InvalidPlugin,
    InvalidQuery,
    InvalidSettings,
    MissingFile,
    TooManyFields,
    // 401
    InvalidCredentials,
    InvalidToken,
    // 403
    AdminOnly,
    InvalidLink,
    PluginsNotAllowed,
    RegistrationClosed,
    // 404, 405
    NotFound,
    MethodNotAllowed,
    // 409
    AlreadyActive,
    CannotRemoveSelf,
    EmailTaken,
    LastAdmin,
    NoOutbox,
    NotFailed,
    NothingToRollBack,
    NotReady,
    ReleaseTaken,
    TenantDeleting,
    TenantExists,
    // 413
    PayloadTooLarge,
    FieldTooLarge,
    // 403, 413, 429
    LimitExceeded,
    // 414, 431 (hyper's own answers, given this shape by `listener`)
    UriTooLong,
    HeadersTooLarge,
    // 415, 416, 429
    UnsupportedMediaType,
    RangeNotSatisfiable,
    TooManyAttempts,
    // 500, 503
    Internal,
    Unavailable,
    ChecksBusy,
}

pub use tapedeck_model::tenant::LimitLayer;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{1}")]
    BadRequest(ErrorCode, String),
    /// Missing, malformed, forged or expired token, or wrong credentials.
    #[error("{1}")]
    Unauthorized(ErrorCode, &'static str),
    #[error("{1}")]
    Forbidden(ErrorCode, String),
    /// Not found, or not visible to the caller: both look the same.
    #[error("not found")]
    NotFound,
    #[error("{1}")]
    Conflict(ErrorCode, String),
    #[error("upload exceeds the limit of {0} bytes")]
    PayloadTooLarge(u64),
    /// A tenant or server limit refused the request: `{"error": {"code":
    /// "limit_exceeded", "limit", "value", "layer", "message"}}`, with the status the
    /// limit calls for (413 sizes, 429 rates and backlog with `Retry-After`, 403 quota).
    /// `message` says which layer set the limit through [`LAYER`], replaced when shown
    /// by the words for `layer`: a refusal whose layer is settled later (the enqueue
    /// script knows the value, the gateway which layer set it) cannot say the wrong one.
    #[error("{}", .message.replace(LAYER, layer_words(.layer)))]
    LimitExceeded {
        status: StatusCode,
        limit: String,
        value: u64,
        layer: LimitLayer,
        message: String,
        retry_after: Option<u64>,
    },
    /// A part of a request body over its own limit (a form field, a JSON body).
    #[error("{what} exceeds the limit of {limit} bytes")]
    FieldTooLarge { what: String, limit: u64 },
    /// A request the framework refused before a handler ran (malformed JSON or query,
    /// wrong content type, unknown route, wrong method): its status, a code, a message.
    #[error("{2}")]
    Rejected(StatusCode, ErrorCode, String),
    #[error("not an MP4/M4A/MOV file (no ISO-BMFF box at offset 4)")]
    UnsupportedMediaType,
    #[error("requested range not satisfiable")]
    RangeNotSatisfiable(u64),
    #[error("too many failed attempts; retry in {0} s")]
    TooManyRequests(u64),
    #[error("service unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn internal(e: impl std::fmt::Display) -> Self {
        ApiError::Internal(e.to_string())
    }

    /// 400 `invalid_input`, saying why.
    pub fn invalid_input(why: impl Into<String>) -> Self {
        ApiError::BadRequest(ErrorCode::InvalidInput, why.into())
    }

    /// The JSON body of a client error without limit details, for answers written
    /// outside axum (hyper's own 414 and 431, see `listener`).
    pub(crate) fn body_bytes(&self) -> Vec<u8> {
        let (_, code) = self.status_and_code();
        let body = ErrorBody {
            error: ErrorDetail {
                code,
                message: self.to_string(),
                limit: None,
                value: None,
                layer: None,
                checks: None,
            },
        };
        serde_json::to_vec(&body).expect("error bodies serialize")
    }

    fn status_and_code(&self) -> (StatusCode, ErrorCode) {
        match self {
            ApiError::BadRequest(code, _) => (StatusCode::BAD_REQUEST, *code),
            ApiError::Unauthorized(code, _) => (StatusCode::UNAUTHORIZED, *code),
            ApiError::Forbidden(code, _) => (StatusCode::FORBIDDEN, *code),
            ApiError::NotFound => (StatusCode::NOT_FOUND, ErrorCode::NotFound),
            ApiError::Conflict(code, _) => (StatusCode::CONFLICT, *code),
            ApiError::PayloadTooLarge(_) => {
                (StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::PayloadTooLarge)
            }
            ApiError::LimitExceeded { status, .. } => (*status, ErrorCode::LimitExceeded),
            ApiError::FieldTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::FieldTooLarge)
            }
            ApiError::Rejected(status, code, _) => (*status, *code),
            ApiError::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ErrorCode::UnsupportedMediaType,
            ),
            ApiError::RangeNotSatisfiable(_) => (
                StatusCode::RANGE_NOT_SATISFIABLE,
                ErrorCode::RangeNotSatisfiable,
            ),
            ApiError::TooManyRequests(_) => {
                (StatusCode::TOO_MANY_REQUESTS, ErrorCode::TooManyAttempts)
            }
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let message = match &self {
            ApiError::Internal(cause) => {
                tracing::error!(%cause, "internal error");
                "internal error".to_string()
            }
            ApiError::Unavailable(cause) => {
                tracing::warn!(%cause, "unavailable");
                "service unavailable".to_string()
            }
            other => other.to_string(),
        };
        let mut detail = ErrorDetail {
            code,
            message,
            limit: None,
            value: None,
            layer: None,
            checks: None,
        };
        if let ApiError::LimitExceeded {
            limit,
            value,
            layer,
            ..
        } = &self
        {
            detail.limit = Some(limit.clone());
            detail.value = Some(*value);
            detail.layer = Some(*layer);
        }
        let body = ErrorBody { error: detail };
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        match self {
            ApiError::Unauthorized(..) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::TooManyRequests(secs)
            | ApiError::LimitExceeded {
                retry_after: Some(secs),
                ..
            } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            ApiError::RangeNotSatisfiable(total) => {
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{total}")) {
                    headers.insert(header::CONTENT_RANGE, v);
                }
            }
            ApiError::PayloadTooLarge(_)
            | ApiError::FieldTooLarge { .. }
            | ApiError::LimitExceeded {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                ..
            } => {
                // The rest of the body is never read: the connection cannot be reused.
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        // An outage (Redis restarting) or a busy check queue: worth a retry soon.
        if status == StatusCode::SERVICE_UNAVAILABLE && !headers.contains_key(header::RETRY_AFTER) {
            headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from(UNAVAILABLE_RETRY_AFTER),
            );
        }
        response
    }
}

/// The `Retry-After` (seconds) of every 503: about how long Redis takes to restart.
pub const UNAVAILABLE_RETRY_AFTER: u64 = 5;

/// Stands for the layer's words in a `LimitExceeded` message.
const LAYER: &str = "{layer}";

/// How a refusal names the layer that set the limit.
fn layer_words(layer: &LimitLayer) -> &'static str {
    match layer {
        LimitLayer::Tenant => "the tenant's limit (the operator can raise it)",
        LimitLayer::Server => "the server's default (the operator can raise it)",
    }
}

impl ApiError {
    /// The refusal of `limit` (effective `value`, set at `layer`), with the status and
    /// message it calls for. `current` is what was in use.
    pub fn limit(limit: &str, value: u64, layer: LimitLayer, current: u64) -> Self {
        let who = LAYER;
        let (status, message, retry_after) = match limit {
            "max_upload_bytes" => (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("upload exceeds the limit of {value} bytes (max_upload_bytes, {who})"),
                None,
            ),
            "jobs_per_minute" => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    format!(
                        "{current} jobs created this minute, the limit is {value} per minute \
                         (jobs_per_minute, {who})"
                    ),
                    Some(60 - now % 60),
                )
            }
            "max_queued" => (
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "{current} jobs are not finished yet, the limit is {value} (max_queued, \
                     {who}); retry when some are done"
                ),
                Some(10),
            ),
            "max_event_streams_per_user" => (
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "{current} event streams of this user are open, the limit is {value} \
                     (max_event_streams_per_user, {who}); close one first"
                ),
                Some(5),
            ),
            "quota_bytes" => (
                StatusCode::FORBIDDEN,
                format!(
                    "{current} bytes stored, the quota is {value} bytes (quota_bytes, {who}); \
                     delete jobs to make room"
                ),
                None,
            ),
            other => (
                StatusCode::FORBIDDEN,
                format!("limit {other} of {value} reached ({who})"),
                None,
            ),
        };
        ApiError::LimitExceeded {
            status,
            limit: limit.to_owned(),
            value,
            layer,
            message,
            retry_after,
        }
    }
}

impl From<QueueError> for ApiError {
    fn from(e: QueueError) -> Self {
        ApiError::Unavailable(e.to_string())
    }
}

impl From<redis::RedisError> for ApiError {
    fn from(e: redis::RedisError) -> Self {
        ApiError::Unavailable(e.to_string())
    }
}

impl From<tapedeck_store::PoolError> for ApiError {
    fn from(e: tapedeck_store::PoolError) -> Self {
        ApiError::Unavailable(e.to_string())
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::NotFound(_) => ApiError::NotFound,
            other => ApiError::internal(other),
        }
    }
}

impl From<tapedeck_store::notify_settings::SettingsError> for ApiError {
    fn from(e: tapedeck_store::notify_settings::SettingsError) -> Self {
        use tapedeck_store::notify_settings::SettingsError;
        match e {
            SettingsError::Invalid(why) => ApiError::BadRequest(ErrorCode::InvalidSettings, why),
            other => ApiError::Unavailable(other.to_string()),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::InvalidCredentials => {
                ApiError::Unauthorized(ErrorCode::InvalidCredentials, "invalid email or password")
            }
            AuthError::InvalidToken => {
                ApiError::Unauthorized(ErrorCode::InvalidToken, "missing, invalid or expired token")
            }
            AuthError::EmailTaken => ApiError::Conflict(
                ErrorCode::EmailTaken,
                "that email is already registered".into(),
            ),
            AuthError::InvalidInput(msg) => ApiError::invalid_input(msg),
            AuthError::Backend(msg) => ApiError::Unavailable(msg),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_names_the_layer_it_reports() {
        let server = ApiError::limit("quota_bytes", 10, LimitLayer::Server, 12);
        assert!(
            server.to_string().contains("the server's default"),
            "{server}"
        );
        // The layer settled afterwards (as `upload::accept` does): the words follow.
        let ApiError::LimitExceeded {
            status,
            limit,
            value,
            message,
            retry_after,
            ..
        } = server
        else {
            unreachable!("a limit refusal")
        };
        let tenant = ApiError::LimitExceeded {
            status,
            limit,
            value,
            layer: LimitLayer::Tenant,
            message,
            retry_after,
        };
        let text = tenant.to_string();
        assert!(text.contains("(quota_bytes, the tenant's limit"), "{text}");
        assert!(!text.contains("server"), "{text}");
    }
}
