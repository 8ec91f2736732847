//! The auth world: its bindings, the host side of its imports (`user-store`, `clock`,
//! `token-config`), and one call of the auth stage in a fresh `Store`.
//!
//! Every request that carries a token is verified here, so calls are in-process with an
//! epoch deadline (a subprocess per request would cost more than the request). The stage
//! keeps nothing between calls: users live in the host's [`UserDirectory`], the signing
//! key and the clock come from the host per call.
//!
//! Contact points: `gateway::auth` calls [`PluginRuntime::load_auth`] and the
//! [`AuthPlugin`] methods (register and login on a blocking thread: they hash, and the
//! directory blocks on Redis).

use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{Component, HasSelf, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::engine::epoch_ticks;
use super::error::{LoadError, RunError};
use super::limits::{RunLimiter, RunLimits};
use super::sandbox::{self, StderrCapture, StoreParts};
use super::{Isolation, PluginRuntime};

use crate::bindings::auth::*;

/// The WIT types of the auth world, under short names.
pub mod wit {
    pub use super::exports::tapedeck::plugin::authentication::{
        Account, AuthError, Claims, Session,
    };
    pub use super::tapedeck::plugin::accounts::{Role, UserRecord};
}

use tapedeck::plugin::{accounts, clock, token_config, user_store};

/// Longest e-mail address (RFC 5321 path limit) the store accepts from the guest.
const MAX_EMAIL: usize = 254;
/// Longest tenant name, user id or password hash the store accepts from the guest.
const MAX_FIELD: usize = 512;
/// Longest token the host accepts from the guest (or from a client, see `verify`).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// CPU time of one `verify` (callers run it on their own thread): far more than the
/// ~10 µs it takes, far less than register and login get.
pub const VERIFY_CPU_TIME: Duration = Duration::from_millis(200);

/// Host-side resources (WASI streams) a guest may hold at once.
const MAX_RESOURCES: usize = 64;

/// Limits of one auth call: argon2id (m = 19 MiB) needs ~20 MiB of linear memory.
pub fn auth_limits() -> RunLimits {
    RunLimits {
        max_memory_bytes: 64 << 20,
        cpu_time: Duration::from_secs(5),
        max_output_bytes: 0,
        max_table_elements: 10_000,
        max_instances: 16,
        max_tables: 16,
        max_memories: 4,
        ..RunLimits::default()
    }
}

/// The host's user store as the auth stage sees it. Calls block: auth calls that reach
/// the store (register, login) run on a blocking thread.
pub trait UserDirectory: Send + Sync {
    /// The user keyed by (`tenant`, normalised `email`), if any.
    fn get(&self, tenant: &str, email: &str) -> Result<Option<wit::UserRecord>, String>;
    /// Stores `user` unless (tenant, email) exists; `Ok(false)` if it does.
    fn insert(&self, user: &wit::UserRecord) -> Result<bool, String>;
}

/// A directory for calls that must not touch the store (`verify`, `normalize-email`).
pub struct NoDirectory;

impl UserDirectory for NoDirectory {
    fn get(&self, _: &str, _: &str) -> Result<Option<wit::UserRecord>, String> {
        Err("this call has no user store".into())
    }
    fn insert(&self, _: &wit::UserRecord) -> Result<bool, String> {
        Err("this call has no user store".into())
    }
}

/// Users in a map: a directory for tests, benchmarks and trying an auth component
/// without Redis (the service uses the Redis one in `gateway::auth`).
#[derive(Default)]
pub struct MemoryDirectory(
    std::sync::Mutex<std::collections::HashMap<(String, String), wit::UserRecord>>,
);

impl UserDirectory for MemoryDirectory {
    fn get(&self, tenant: &str, email: &str) -> Result<Option<wit::UserRecord>, String> {
        let users = self.0.lock().unwrap_or_else(|p| p.into_inner());
        Ok(users.get(&(tenant.to_owned(), email.to_owned())).cloned())
    }

    fn insert(&self, user: &wit::UserRecord) -> Result<bool, String> {
        let mut users = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let key = (user.tenant.clone(), user.email.clone());
        if users.contains_key(&key) {
            return Ok(false);
        }
        users.insert(key, user.clone());
        Ok(true)
    }
}

/// What the host hands one auth call.
#[derive(Clone)]
pub struct AuthContext {
    pub users: Arc<dyn UserDirectory>,
    /// The HS256 key, 32..=1024 bytes.
    pub signing_key: Arc<[u8]>,
    pub token_lifetime_seconds: u32,
    /// The time the call runs at, seconds since the Unix epoch.
    pub now_seconds: u64,
}

impl PluginRuntime {
    /// Compiles (or loads from the cache) and type-checks an auth component. Needs an
    /// in-process runtime: auth calls are bounded by an epoch deadline.
    pub fn load_auth(&self, bytes: &[u8]) -> Result<Arc<AuthPlugin>, LoadError> {
        if self.config.isolation != Isolation::InProcess {
            return Err(LoadError::Runtime(
                "auth stages run in-process: load them with an in-process runtime".into(),
            ));
        }
        let compiled = self.cache.load(bytes)?;
        let pre = prepare(&self.cache.engine, &compiled.component)?;
        Ok(Arc::new(AuthPlugin {
            digest: compiled.digest,
            pre,
            limits: auth_limits(),
            idle: std::sync::Mutex::new(Vec::new()),
        }))
    }
}

fn prepare(engine: &Engine, component: &Component) -> Result<AuthPre<AuthState>, LoadError> {
    let pre = sandbox::instantiate_pre(engine, component, "auth", |linker| {
        Auth::add_to_linker::<_, HasSelf<_>>(linker, |state| state)
    })?;
    AuthPre::new(pre).map_err(|e| LoadError::wrong_world("auth", e))
}

/// An auth component, compiled and type-checked, ready for any number of calls.
pub struct AuthPlugin {
    digest: String,
    pre: AuthPre<AuthState>,
    limits: RunLimits,
    /// Instances whose last `verify` returned normally, ready for the next one.
    idle: std::sync::Mutex<Vec<(Store<AuthState>, Auth)>>,
}

/// Longest e-mail address accepted or returned (RFC 5321's path limit).
pub const MAX_EMAIL_BYTES: usize = 254;

/// Most idle warm instances kept (one per concurrently verifying thread is enough).
const MAX_WARM_INSTANCES: usize = 64;

/// The outcome of one auth call: the plugin's answer, or why it gave none.
pub type AuthOutcome<T> = Result<Result<T, wit::AuthError>, RunError>;

impl AuthPlugin {
    /// The component's content address: sha256 of its bytes, hex.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// Creates a user. Blocks (argon2id, the directory): call on a blocking thread.
    pub fn register(
        &self,
        cx: &AuthContext,
        tenant: &str,
        email: &str,
        password: &str,
        role: wit::Role,
    ) -> AuthOutcome<wit::Account> {
        let outcome = self.call(cx, false, |auth, store| {
            auth.tapedeck_plugin_authentication()
                .call_register(store, tenant, email, password, role)
        })?;
        Ok(outcome.and_then(|account| {
            check_account(&account)?;
            Ok(account)
        }))
    }

    /// Checks a password and issues a session. Blocks: call on a blocking thread.
    pub fn login(
        &self,
        cx: &AuthContext,
        tenant: &str,
        email: &str,
        password: &str,
    ) -> AuthOutcome<wit::Session> {
        let outcome = self.call(cx, false, |auth, store| {
            auth.tapedeck_plugin_authentication()
                .call_login(store, tenant, email, password)
        })?;
        Ok(outcome.and_then(|session| {
            if session.token.len() > MAX_TOKEN_BYTES {
                return Err(wit::AuthError::Misconfigured(
                    "the auth stage issued an over-long token".into(),
                ));
            }
            check_claims(&session.claims)?;
            Ok(session)
        }))
    }

    /// Checks a token. Cheap (no store access, no hashing), and hot: every request runs
    /// it. So it runs in a warm instance when one is idle: verify is a pure function of
    /// the token, the key and the time, and a fresh instance per call cost ~170 µs of
    /// mapping and initialising memory (bench/RESULTS.md).
    pub fn verify(
        &self,
        cx: &AuthContext,
        token: &str,
        tenant: Option<&str>,
    ) -> AuthOutcome<wit::Claims> {
        if token.len() > MAX_TOKEN_BYTES {
            return Ok(Err(wit::AuthError::InvalidToken("token too long".into())));
        }
        let outcome = self.call(cx, true, |auth, store| {
            auth.tapedeck_plugin_authentication()
                .call_verify(store, token, tenant)
        })?;
        Ok(outcome.and_then(|claims| {
            check_claims(&claims)?;
            Ok(claims)
        }))
    }

    /// The stage's own rule for an e-mail address (trim, case, validity): the host keys
    /// login throttling and answers with it, so there is one rule, the plugin's. Cheap
    /// and pure: runs in a warm instance like `verify`.
    pub fn normalize_email(&self, cx: &AuthContext, email: &str) -> AuthOutcome<String> {
        if email.len() > MAX_EMAIL_BYTES {
            return Ok(Err(wit::AuthError::InvalidEmail));
        }
        let outcome = self.call(cx, true, |auth, store| {
            auth.tapedeck_plugin_authentication()
                .call_normalize_email(store, email)
        })?;
        Ok(outcome.and_then(|normal| {
            if normal.len() > MAX_EMAIL_BYTES || normal.chars().any(char::is_control) {
                return Err(wit::AuthError::Misconfigured(
                    "the auth stage normalized an address to something unusable".into(),
                ));
            }
            Ok(normal)
        }))
    }

    /// One call within this plugin's limits: in a fresh store, or (`reuse`) in a warm
    /// instance kept from an earlier call with the same key and lifetime.
    fn call<T>(
        &self,
        cx: &AuthContext,
        reuse: bool,
        f: impl FnOnce(&Auth, &mut Store<AuthState>) -> wasmtime::Result<T>,
    ) -> Result<T, RunError> {
        let mut limits = self.limits.clone();
        if reuse {
            limits.cpu_time = VERIFY_CPU_TIME;
        }
        let limits = &limits;
        let ticks = epoch_ticks(limits.cpu_time);
        let warm = if reuse { self.take_warm(cx) } else { None };
        let (mut store, instance) = match warm {
            Some((mut store, auth)) => {
                store.data_mut().cx = cx.clone();
                store.set_epoch_deadline(ticks);
                (store, Ok(auth))
            }
            None => {
                let mut store = self.new_store(cx);
                // The deadline covers instantiation (start functions) and the call.
                store.set_epoch_deadline(ticks);
                store.epoch_deadline_trap();
                let auth = self.pre.instantiate(&mut store);
                (store, auth)
            }
        };

        let result = instance
            .map_err(|e| (e, true))
            .and_then(|auth| match f(&auth, &mut store) {
                Ok(value) => Ok((value, auth)),
                Err(e) => Err((e, false)),
            });
        let said = store.data().stderr.take();
        super::guest_log::emit_stderr(&self.digest, &said);
        if store.data().limiter.memory_denied {
            return Err(RunError::MemoryLimit {
                limit: limits.max_memory_bytes,
            });
        }
        match result {
            Ok((value, auth)) => {
                // Only an instance whose call returned normally is kept: after a trap or a
                // limit its state is unknown.
                if reuse {
                    self.keep_warm(store, auth);
                }
                Ok(value)
            }
            Err((error, instantiating)) => {
                Err(super::error::classify_failure(error, instantiating, limits).with_stderr(&said))
            }
        }
    }

    fn new_store(&self, cx: &AuthContext) -> Store<AuthState> {
        let parts = StoreParts::new(&self.limits, MAX_RESOURCES);
        let state = AuthState {
            wasi: parts.wasi,
            table: parts.table,
            limiter: parts.limiter,
            cx: cx.clone(),
            stderr: parts.stderr,
        };
        // The epoch deadline is set per call (`call`): warm instances are reused.
        sandbox::limited_store(self.pre.engine(), state, |s| &mut s.limiter, None)
    }

    /// A warm instance made with the same key and lifetime as `cx` (the guest reads them
    /// once per instance), if one is idle. Instances of an older key are dropped.
    fn take_warm(&self, cx: &AuthContext) -> Option<(Store<AuthState>, Auth)> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some((store, auth)) = idle.pop() {
            let old = &store.data().cx;
            if old.signing_key == cx.signing_key
                && old.token_lifetime_seconds == cx.token_lifetime_seconds
            {
                return Some((store, auth));
            }
        }
        None
    }

    fn keep_warm(&self, store: Store<AuthState>, auth: Auth) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_WARM_INSTANCES {
            idle.push((store, auth));
        }
    }
}

fn field_ok(s: &str, max: usize) -> bool {
    s.len() <= max && !s.chars().any(char::is_control)
}

/// What the gateway will put in headers, logs and Redis keys must be sane whatever the
/// guest returned.
fn check_claims(c: &wit::Claims) -> Result<(), wit::AuthError> {
    if field_ok(&c.user_id, MAX_FIELD)
        && field_ok(&c.tenant, MAX_FIELD)
        && field_ok(&c.email, MAX_EMAIL)
    {
        Ok(())
    } else {
        Err(wit::AuthError::Misconfigured(
            "the auth stage returned malformed claims".into(),
        ))
    }
}

fn check_account(a: &wit::Account) -> Result<(), wit::AuthError> {
    if field_ok(&a.user_id, MAX_FIELD)
        && field_ok(&a.tenant, MAX_FIELD)
        && field_ok(&a.email, MAX_EMAIL)
    {
        Ok(())
    } else {
        Err(wit::AuthError::Misconfigured(
            "the auth stage returned a malformed account".into(),
        ))
    }
}

/// Everything one auth call's `Store` holds.
pub(crate) struct AuthState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: RunLimiter,
    cx: AuthContext,
    /// The guest's stderr, drained after every call.
    stderr: StderrCapture,
}

impl WasiView for AuthState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl accounts::Host for AuthState {}

impl user_store::Host for AuthState {
    fn get(
        &mut self,
        tenant: String,
        email: String,
    ) -> wasmtime::Result<Result<Option<wit::UserRecord>, user_store::StoreError>> {
        if !field_ok(&tenant, MAX_FIELD) || !field_ok(&email, MAX_EMAIL) {
            return Ok(Ok(None));
        }
        Ok(self
            .cx
            .users
            .get(&tenant, &email)
            .map_err(user_store::StoreError::Failed))
    }

    fn insert(
        &mut self,
        user: wit::UserRecord,
    ) -> wasmtime::Result<Result<(), user_store::StoreError>> {
        let sane = field_ok(&user.user_id, MAX_FIELD)
            && field_ok(&user.tenant, MAX_FIELD)
            && field_ok(&user.email, MAX_EMAIL)
            && !user.email.is_empty()
            && field_ok(&user.password_hash, MAX_FIELD)
            && user.password_hash.starts_with("$argon2");
        if !sane {
            return Ok(Err(user_store::StoreError::Failed(
                "refused a malformed user record".into(),
            )));
        }
        Ok(match self.cx.users.insert(&user) {
            Ok(true) => Ok(()),
            Ok(false) => Err(user_store::StoreError::Conflict),
            Err(e) => Err(user_store::StoreError::Failed(e)),
        })
    }
}

impl clock::Host for AuthState {
    fn now_seconds(&mut self) -> wasmtime::Result<u64> {
        Ok(self.cx.now_seconds)
    }
}

impl token_config::Host for AuthState {
    fn settings(&mut self) -> wasmtime::Result<token_config::TokenSettings> {
        Ok(token_config::TokenSettings {
            signing_key: self.cx.signing_key.to_vec(),
            token_lifetime_seconds: self.cx.token_lifetime_seconds,
        })
    }
}
