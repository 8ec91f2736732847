//! The auth stage: accounts and session tokens for every tenant, as a WASI component.
//!
//! Passwords are hashed with argon2id (OWASP parameters: 19 MiB, 2 passes, 1 lane) into
//! PHC strings; sessions are HS256 JWTs carrying user id, tenant, e-mail and role. The
//! component keeps no state: users live in the host's store (Redis), the signing key and
//! the token lifetime come from the host, and so does the time.
//!
//! # Layout
//! - [`account`]: [`Role`], [`UserRecord`] (what the store keeps), [`Account`].
//! - [`email`]: normalising and minimally validating addresses.
//! - [`password`]: the password policy and argon2id hashing, with the dummy hash that makes
//!   an unknown user cost as much as a wrong password.
//! - [`token`]: issuing and verifying JWTs.
//! - [`service`]: [`Authenticator`], joining the above over the [`UserStore`] and [`Clock`]
//!   traits; target-independent, so it is tested natively.
//! - [`error`]: [`AuthError`], one case per WIT `auth-error` case.
//! - `component` (wasm32 only): the `auth` world of `wit/auth.wit`, mapping its imports onto
//!   the traits and its exports onto [`Authenticator`].
//!
//! Randomness (salts, user ids) comes from `getrandom`, which on wasm32-wasip2 is
//! `wasi:random/random`; the host must link it (wasmtime-wasi does).

pub mod account;
pub mod email;
pub mod error;
pub mod password;
mod random;
pub mod service;
pub mod token;

#[cfg(target_arch = "wasm32")]
mod component;

pub use account::{Account, Role, UserRecord};
pub use error::AuthError;
pub use service::{Authenticator, Clock, Session, StoreError, UserStore};
pub use token::{Claims, TokenSettings};
