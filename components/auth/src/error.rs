//! Why an auth call was refused: the native twin of the WIT `auth-error` variant.

/// One case per WIT `auth-error` case; see `wit/auth.wit` for when each is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("not an e-mail address")]
    InvalidEmail,
    #[error("weak password: {0}")]
    WeakPassword(String),
    #[error("this e-mail is registered already")]
    AlreadyRegistered,
    #[error("unknown e-mail or wrong password")]
    InvalidCredentials,
    #[error("invalid token: {0}")]
    InvalidToken(String),
    #[error("token expired")]
    ExpiredToken,
    #[error("user store: {0}")]
    Store(String),
    #[error("auth misconfigured: {0}")]
    Misconfigured(String),
}
