//! The `auth` world of `wit/auth.wit`: imports mapped onto [`UserStore`] and [`Clock`],
//! exports onto [`Authenticator`].

use std::sync::OnceLock;

use crate::{Authenticator, Clock, StoreError, TokenSettings, UserRecord, UserStore};

wit_bindgen::generate!({ path: "../../wit", world: "auth" });

use exports::tapedeck::plugin::authentication as wit;
use tapedeck::plugin::{accounts, clock, token_config, user_store};

/// The host's `user-store` import.
struct HostStore;

impl UserStore for HostStore {
    fn get(&self, tenant: &str, email: &str) -> Result<Option<UserRecord>, StoreError> {
        user_store::get(tenant, email)
            .map(|found| found.map(user_record_from_wit))
            .map_err(store_error_from_wit)
    }

    fn insert(&self, record: &UserRecord) -> Result<(), StoreError> {
        user_store::insert(&accounts::UserRecord {
            user_id: record.user_id.clone(),
            tenant: record.tenant.clone(),
            email: record.email.clone(),
            password_hash: record.password_hash.clone(),
            role: role_to_wit(record.role),
            created_at: record.created_at,
        })
        .map_err(store_error_from_wit)
    }
}

/// The host's `clock` import.
struct HostClock;

impl Clock for HostClock {
    fn now_seconds(&self) -> u64 {
        clock::now_seconds()
    }
}

/// Built on the first call from the host's `token-config`, then kept for the life of the
/// instance, which the host makes per request: the key crosses the boundary once.
static AUTHENTICATOR: OnceLock<Result<Authenticator<HostStore, HostClock>, crate::AuthError>> =
    OnceLock::new();

fn authenticator() -> Result<&'static Authenticator<HostStore, HostClock>, wit::AuthError> {
    AUTHENTICATOR
        .get_or_init(|| {
            let settings = token_config::settings();
            Authenticator::new(
                HostStore,
                HostClock,
                &TokenSettings {
                    signing_key: settings.signing_key,
                    token_lifetime_seconds: settings.token_lifetime_seconds,
                },
            )
        })
        .as_ref()
        .map_err(|e| error_to_wit(e.clone()))
}

struct Component;

impl wit::Guest for Component {
    fn normalize_email(email: String) -> Result<String, wit::AuthError> {
        crate::email::normalize_email(&email).map_err(error_to_wit)
    }

    fn register(
        tenant: String,
        email: String,
        password: String,
        role: accounts::Role,
    ) -> Result<wit::Account, wit::AuthError> {
        let account = authenticator()?
            .register(&tenant, &email, &password, role_from_wit(role))
            .map_err(error_to_wit)?;
        Ok(wit::Account {
            user_id: account.user_id,
            tenant: account.tenant,
            email: account.email,
            role: role_to_wit(account.role),
        })
    }

    fn login(
        tenant: String,
        email: String,
        password: String,
    ) -> Result<wit::Session, wit::AuthError> {
        let session = authenticator()?
            .login(&tenant, &email, &password)
            .map_err(error_to_wit)?;
        Ok(wit::Session {
            token: session.token,
            claims: claims_to_wit(session.claims),
        })
    }

    fn verify(token: String, tenant: Option<String>) -> Result<wit::Claims, wit::AuthError> {
        authenticator()?
            .verify(&token, tenant.as_deref())
            .map(claims_to_wit)
            .map_err(error_to_wit)
    }
}

export!(Component);

fn role_to_wit(role: crate::Role) -> accounts::Role {
    match role {
        crate::Role::User => accounts::Role::User,
        crate::Role::Admin => accounts::Role::Admin,
    }
}

fn role_from_wit(role: accounts::Role) -> crate::Role {
    match role {
        accounts::Role::User => crate::Role::User,
        accounts::Role::Admin => crate::Role::Admin,
    }
}

fn user_record_from_wit(r: accounts::UserRecord) -> UserRecord {
    UserRecord {
        user_id: r.user_id,
        tenant: r.tenant,
        email: r.email,
        password_hash: r.password_hash,
        role: role_from_wit(r.role),
        created_at: r.created_at,
    }
}

fn store_error_from_wit(e: user_store::StoreError) -> StoreError {
    match e {
        user_store::StoreError::Conflict => StoreError::Conflict,
        user_store::StoreError::Failed(why) => StoreError::Failed(why),
    }
}

fn claims_to_wit(c: crate::Claims) -> wit::Claims {
    wit::Claims {
        user_id: c.user_id,
        tenant: c.tenant,
        email: c.email,
        role: role_to_wit(c.role),
        issued_at: c.issued_at,
        expires_at: c.expires_at,
    }
}

fn error_to_wit(e: crate::AuthError) -> wit::AuthError {
    use crate::AuthError as E;
    match e {
        E::InvalidEmail => wit::AuthError::InvalidEmail,
        E::WeakPassword(why) => wit::AuthError::WeakPassword(why),
        E::AlreadyRegistered => wit::AuthError::AlreadyRegistered,
        E::InvalidCredentials => wit::AuthError::InvalidCredentials,
        E::InvalidToken(why) => wit::AuthError::InvalidToken(why),
        E::ExpiredToken => wit::AuthError::ExpiredToken,
        E::Store(why) => wit::AuthError::Store(why),
        E::Misconfigured(why) => wit::AuthError::Misconfigured(why),
    }
}
