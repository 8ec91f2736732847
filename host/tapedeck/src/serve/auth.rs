//! Who is calling: register, log in, verify a token.
//!
//! The gateway sees only the narrow [`Authenticator`] trait. [`ComponentAuthenticator`]
//! implements it with the auth WebAssembly component (`components/auth`, world `auth` in
//! `wit/auth.wit`: argon2id hashes, HS256 JWTs via jsonwebtoken), backed by the Redis
//! [`UserStore`] and the signing key shared through Redis. Operators may replace the
//! component (`--auth-plugin`); the gateway does not change.
//!
//! Unknown user and wrong password are indistinguishable: the component answers the same
//! error, and an unknown user still pays for one hash verification.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use tapedeck_model::auth::{AuthError, Authenticator, Claims, IssuedToken};
use tapedeck_model::now_ms;
use tapedeck_runtime::{
    AuthContext, AuthPlugin, Isolation, NoDirectory, PluginRuntime, RuntimeConfig, UserDirectory,
    auth_wit as wit,
};
use tapedeck_store::users::{UserRecord, UserStore};

/// Compiles (or loads from `cache_dir`) an auth component in its own in-process runtime;
/// `bytes` is usually [`crate::components::DEFAULT_AUTH`].
pub fn load_auth(cache_dir: &Path, bytes: &[u8]) -> anyhow::Result<Arc<AuthPlugin>> {
    let mut config = RuntimeConfig::new(cache_dir)?;
    config.isolation = Isolation::InProcess;
    Ok(PluginRuntime::new(config)?.load_auth(bytes)?)
}

/// The [`Authenticator`] of the service: every call is one call of the auth component.
pub struct ComponentAuthenticator {
    plugin: Arc<AuthPlugin>,
    users: UserStore,
    key: Arc<[u8]>,
    token_lifetime_seconds: u32,
    /// What `verify` gets as its user store: nothing.
    no_directory: Arc<dyn UserDirectory>,
}

/// Longest token lifetime the auth world accepts (30 days).
const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);

impl ComponentAuthenticator {
    /// `key`: the shared HS256 key (32..=1024 bytes); `token_ttl`: 1 s ..= 30 days.
    pub fn new(
        plugin: Arc<AuthPlugin>,
        users: UserStore,
        key: Vec<u8>,
        token_ttl: Duration,
    ) -> anyhow::Result<Arc<Self>> {
        anyhow::ensure!(
            (32..=1024).contains(&key.len()),
            "the token signing key must be 32 to 1024 bytes, not {}",
            key.len()
        );
        anyhow::ensure!(
            (Duration::from_secs(1)..=MAX_TOKEN_LIFETIME).contains(&token_ttl),
            "the token lifetime must be 1 s to 30 days"
        );
        Ok(Arc::new(Self {
            plugin,
            users,
            key: key.into(),
            token_lifetime_seconds: u32::try_from(token_ttl.as_secs()).unwrap_or(u32::MAX),
            no_directory: Arc::new(NoDirectory),
        }))
    }

    fn context(&self, users: Arc<dyn UserDirectory>) -> AuthContext {
        AuthContext {
            users,
            signing_key: self.key.clone(),
            token_lifetime_seconds: self.token_lifetime_seconds,
            now_seconds: now_ms() / 1000,
        }
    }

    /// Runs `call` on a blocking thread with a directory over Redis: the component may
    /// hash for tens of milliseconds, and a hostile one may spin until its deadline.
    async fn blocking<T: Send + 'static>(
        &self,
        call: impl FnOnce(&AuthPlugin, &AuthContext) -> tapedeck_runtime::AuthOutcome<T>
        + Send
        + 'static,
    ) -> Result<T, AuthError> {
        let cx = self.context(Arc::new(RedisDirectory {
            users: self.users.clone(),
            runtime: tokio::runtime::Handle::current(),
        }));
        let plugin = self.plugin.clone();
        tokio::task::spawn_blocking(move || call(&plugin, &cx))
            .await
            .map_err(|e| AuthError::Backend(e.to_string()))?
            .map_err(|e| AuthError::Backend(format!("auth component: {e}")))?
            .map_err(from_wit)
    }
}

/// The user store as the component's `user-store` import sees it (blocking).
struct RedisDirectory {
    users: UserStore,
    runtime: tokio::runtime::Handle,
}

impl UserDirectory for RedisDirectory {
    fn get(&self, tenant: &str, email: &str) -> Result<Option<wit::UserRecord>, String> {
        let found = self
            .runtime
            .block_on(self.users.get(tenant, email))
            .map_err(|e| e.to_string())?;
        Ok(found.map(|u| wit::UserRecord {
            user_id: u.id,
            tenant: u.tenant,
            email: u.email,
            password_hash: u.password_hash,
            role: if u.role == "admin" {
                wit::Role::Admin
            } else {
                wit::Role::User
            },
            created_at: u.created_at,
        }))
    }

    fn insert(&self, user: &wit::UserRecord) -> Result<bool, String> {
        let record = UserRecord {
            id: user.user_id.clone(),
            tenant: user.tenant.clone(),
            email: user.email.clone(),
            role: role_name(user.role).into(),
            password_hash: user.password_hash.clone(),
            created_at: user.created_at,
        };
        self.runtime
            .block_on(self.users.insert(&record))
            .map_err(|e| e.to_string())
    }
}

/// What `change_password` gives the component as its user store: the user looks absent,
/// so `register` hashes the new password (under the component's own policy and
/// parameters), and the record it would insert is captured instead of stored.
struct CaptureDirectory {
    captured: std::sync::Mutex<Option<wit::UserRecord>>,
}

impl UserDirectory for CaptureDirectory {
    fn get(&self, _tenant: &str, _email: &str) -> Result<Option<wit::UserRecord>, String> {
        Ok(None)
    }

    fn insert(&self, user: &wit::UserRecord) -> Result<bool, String> {
        *self.captured.lock().map_err(|e| e.to_string())? = Some(user.clone());
        Ok(true)
    }
}

fn role_name(role: wit::Role) -> &'static str {
    match role {
        wit::Role::Admin => "admin",
        wit::Role::User => "user",
    }
}

fn claims_from_wit(c: wit::Claims) -> Claims {
    Claims {
        user_id: c.user_id,
        tenant: c.tenant,
        email: c.email,
        role: role_name(c.role).into(),
        exp: c.expires_at,
    }
}

fn from_wit(e: wit::AuthError) -> AuthError {
    match e {
        wit::AuthError::InvalidEmail => {
            AuthError::InvalidInput("email is not a valid address".into())
        }
        wit::AuthError::WeakPassword(why) => AuthError::InvalidInput(why),
        wit::AuthError::AlreadyRegistered => AuthError::EmailTaken,
        wit::AuthError::InvalidCredentials => AuthError::InvalidCredentials,
        wit::AuthError::InvalidToken(why) => {
            tracing::debug!(%why, "token refused");
            AuthError::InvalidToken
        }
        wit::AuthError::ExpiredToken => AuthError::InvalidToken,
        wit::AuthError::Store(why) => AuthError::Backend(format!("user store: {why}")),
        wit::AuthError::Misconfigured(why) => AuthError::Backend(format!("auth: {why}")),
    }
}

impl Authenticator for ComponentAuthenticator {
    fn register<'a>(
        &'a self,
        tenant: &'a str,
        email: &'a str,
        password: &'a str,
    ) -> BoxFuture<'a, Result<(), AuthError>> {
        let (tenant, email, password) = (tenant.to_owned(), email.to_owned(), password.to_owned());
        Box::pin(async move {
            self.blocking(move |plugin, cx| {
                plugin.register(cx, &tenant, &email, &password, wit::Role::User)
            })
            .await
            .map(drop)
        })
    }

    fn login<'a>(
        &'a self,
        tenant: &'a str,
        email: &'a str,
        password: &'a str,
        issued_at: u64,
    ) -> BoxFuture<'a, Result<IssuedToken, AuthError>> {
        let (tenant, email, password) = (tenant.to_owned(), email.to_owned(), password.to_owned());
        Box::pin(async move {
            let (who, digest) = (tenant.clone(), self.plugin.digest().to_owned());
            let session = self
                .blocking(move |plugin, cx| {
                    // The clock the component issues by: the second the caller reserved.
                    let cx = AuthContext {
                        now_seconds: issued_at,
                        ..cx.clone()
                    };
                    plugin.login(&cx, &tenant, &email, &password)
                })
                .await;
            let outcome = if session.is_ok() { "ok" } else { "refused" };
            // Logins only: verify runs on every request and is counted nowhere.
            metrics::counter!(
                "tapedeck_plugin_runs_total",
                "stage" => "auth",
                "tenant" => who,
                "digest" => digest,
                "outcome" => outcome
            )
            .increment(1);
            let session = session?;
            Ok(IssuedToken {
                token: session.token,
                expires_at: session.claims.expires_at,
            })
        })
    }

    /// Runs on the request's own thread: a warm verify takes ~10 µs, less than handing
    /// it to a blocking thread would, and the plugin's verify deadline
    /// ([`tapedeck_runtime::VERIFY_CPU_TIME`]) bounds what a misbehaving one can hold it.
    fn verify<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Claims, AuthError>> {
        Box::pin(async move {
            let cx = self.context(self.no_directory.clone());
            self.plugin
                .verify(&cx, token, None)
                .map_err(|e| AuthError::Backend(format!("auth component: {e}")))?
                .map(claims_from_wit)
                .map_err(from_wit)
        })
    }

    fn change_password<'a>(
        &'a self,
        tenant: &'a str,
        email: &'a str,
        new_password: &'a str,
    ) -> BoxFuture<'a, Result<(), AuthError>> {
        let (tenant, email, password) =
            (tenant.to_owned(), email.to_owned(), new_password.to_owned());
        Box::pin(async move {
            let email = self.normalize_email(&email)?;
            let capture = Arc::new(CaptureDirectory {
                captured: std::sync::Mutex::new(None),
            });
            let cx = self.context(capture.clone());
            let plugin = self.plugin.clone();
            let (t, e) = (tenant.clone(), email.clone());
            tokio::task::spawn_blocking(move || {
                plugin.register(&cx, &t, &e, &password, wit::Role::User)
            })
            .await
            .map_err(|e| AuthError::Backend(e.to_string()))?
            .map_err(|e| AuthError::Backend(format!("auth component: {e}")))?
            .map_err(from_wit)?;
            let record = capture
                .captured
                .lock()
                .map_err(|e| AuthError::Backend(e.to_string()))?
                .take()
                .ok_or_else(|| AuthError::Backend("the auth component stored no hash".into()))?;
            // Never trust the guest: it must have hashed for this account.
            if record.tenant != tenant || record.email != email || record.password_hash.is_empty() {
                return Err(AuthError::Backend(
                    "the auth component hashed for another account".into(),
                ));
            }
            if self
                .users
                .set_password_hash(&tenant, &email, &record.password_hash)
                .await?
            {
                Ok(())
            } else {
                Err(AuthError::InvalidCredentials)
            }
        })
    }

    fn normalize_email(&self, email: &str) -> Result<String, AuthError> {
        let cx = self.context(self.no_directory.clone());
        self.plugin
            .normalize_email(&cx, email)
            .map_err(|e| AuthError::Backend(format!("auth component: {e}")))?
            .map_err(from_wit)
    }
}
