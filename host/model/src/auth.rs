//! Who is calling: the claims of a verified token, and the [`Authenticator`] seam the
//! gateway calls (implemented with the auth component in the `tapedeck` binary).

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

/// What a valid token says about its bearer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Stable user id (`sub`).
    #[serde(rename = "sub")]
    pub user_id: String,
    pub tenant: String,
    pub email: String,
    /// `user`, or `admin` (sees every job of the tenant).
    pub role: String,
    /// Expiry, unix seconds.
    pub exp: u64,
}

impl Claims {
    pub fn is_admin(&self) -> bool {
        self.role == "admin"
    }
}

/// A freshly issued token.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IssuedToken {
    /// A JWT: `Authorization: Bearer <token>`.
    pub token: String,
    /// Unix seconds.
    pub expires_at: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Unknown user or wrong password (deliberately the same).
    #[error("invalid credentials")]
    InvalidCredentials,
    #[error("invalid token")]
    InvalidToken,
    #[error("email already registered")]
    EmailTaken,
    #[error("{0}")]
    InvalidInput(String),
    #[error("auth backend: {0}")]
    Backend(String),
}

/// Registration, login and token verification. Tenant existence and self-registration
/// policy are checked by the gateway before `register` is called.
pub trait Authenticator: Send + Sync + 'static {
    fn register<'a>(
        &'a self,
        tenant: &'a str,
        email: &'a str,
        password: &'a str,
    ) -> BoxFuture<'a, Result<(), AuthError>>;
    /// Issues a token stamped `issued_at` (unix s; the caller makes it unique per account,
    /// so that no two logins share a token).
    fn login<'a>(
        &'a self,
        tenant: &'a str,
        email: &'a str,
        password: &'a str,
        issued_at: u64,
    ) -> BoxFuture<'a, Result<IssuedToken, AuthError>>;
    fn verify<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Claims, AuthError>>;
    /// Replaces the password of an existing user (the caller checked the current one);
    /// `InvalidInput` if the new one breaks the policy, `InvalidCredentials` if there is
    /// no such user.
    fn change_password<'a>(
        &'a self,
        tenant: &'a str,
        email: &'a str,
        new_password: &'a str,
    ) -> BoxFuture<'a, Result<(), AuthError>>;
    /// The address as the auth stage stores it (one rule for the whole service), or
    /// `InvalidInput` if it is not an address.
    fn normalize_email(&self, email: &str) -> Result<String, AuthError>;
}
