//! [`Authenticator`]: register, login and verify over the host's store and clock.
//!
//! Contact points: [`UserStore`] and [`Clock`] are what the host lends (WIT `user-store`
//! and `clock`); the component glue implements them over its imports, tests over memory.

use crate::account::new_user_id;
use crate::email::normalize_email;
use crate::password::{self, PasswordHasher};
use crate::token::SessionTokens;
use crate::{Account, AuthError, Claims, TokenSettings, UserRecord};

/// Why the user store could not answer (WIT `store-error`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// `insert` only: (tenant, email) exists already.
    #[error("a user with this tenant and e-mail exists already")]
    Conflict,
    /// The store failed; the text says how.
    #[error("{0}")]
    Failed(String),
}

/// Where users live (Redis, behind the host).
pub trait UserStore {
    /// The user with this normalised `email` in `tenant`, if any.
    fn get(&self, tenant: &str, email: &str) -> Result<Option<UserRecord>, StoreError>;
    /// Stores a new user; atomically `Conflict` when (tenant, email) exists.
    fn insert(&self, record: &UserRecord) -> Result<(), StoreError>;
}

/// The time every token is issued and checked against.
pub trait Clock {
    /// Seconds since the Unix epoch.
    fn now_seconds(&self) -> u64;
}

/// What a successful login hands the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// HS256 JWT for `Authorization: Bearer`.
    pub token: String,
    /// What `token` says.
    pub claims: Claims,
}

/// Accounts and sessions for every tenant, over one store, clock and signing key.
pub struct Authenticator<S, C> {
    /// Users, keyed by tenant and normalised e-mail.
    store: S,
    /// Time of token issue and expiry.
    clock: C,
    /// argon2id with the current parameters.
    passwords: PasswordHasher,
    /// The host's key and lifetime, prepared.
    tokens: SessionTokens,
}

impl<S: UserStore, C: Clock> Authenticator<S, C> {
    /// `Misconfigured` if `settings` is unusable (short key, zero lifetime).
    pub fn new(store: S, clock: C, settings: &TokenSettings) -> Result<Self, AuthError> {
        Ok(Authenticator {
            store,
            clock,
            passwords: PasswordHasher::default(),
            tokens: SessionTokens::new(settings)?,
        })
    }

    /// Creates a user of `tenant` with `role` (the caller decides it: sign-up is `User`).
    pub fn register(
        &self,
        tenant: &str,
        email: &str,
        password: &str,
        role: crate::Role,
    ) -> Result<Account, AuthError> {
        let email = normalize_email(email)?;
        password::check_policy(password)?;
        // Saves an argon2 hash on the common duplicate; `insert` still decides a race.
        if self
            .store
            .get(tenant, &email)
            .map_err(store_error)?
            .is_some()
        {
            return Err(AuthError::AlreadyRegistered);
        }
        let record = UserRecord {
            user_id: new_user_id(),
            tenant: tenant.to_owned(),
            email,
            password_hash: self.passwords.hash(password),
            role,
            created_at: self.clock.now_seconds(),
        };
        self.store.insert(&record).map_err(store_error)?;
        Ok(Account::from(&record))
    }

    /// Checks the password of a user of `tenant` and issues a token. Unknown user and wrong
    /// password are both `InvalidCredentials`, after the same argon2id work.
    pub fn login(&self, tenant: &str, email: &str, password: &str) -> Result<Session, AuthError> {
        let email = normalize_email(email)?;
        // No account has a longer password; refusing at once tells nothing about accounts.
        if password.len() > password::MAX_BYTES {
            return Err(AuthError::InvalidCredentials);
        }
        let user = self.store.get(tenant, &email).map_err(store_error)?;
        // The token's tenant comes from the record: a store answering with another
        // tenant's user would hand out that tenant's sessions.
        if user
            .as_ref()
            .is_some_and(|u| u.tenant != tenant || u.email != email)
        {
            return Err(AuthError::Store(
                "the store answered with another user's record".into(),
            ));
        }
        let matched = match &user {
            Some(user) => self.passwords.verify(password, &user.password_hash)?,
            None => {
                self.passwords.verify_unknown_user(password);
                false
            }
        };
        let user = match user {
            Some(user) if matched => user,
            _ => return Err(AuthError::InvalidCredentials),
        };
        let (token, claims) = self
            .tokens
            .issue(&Account::from(&user), self.clock.now_seconds());
        Ok(Session { token, claims })
    }

    /// What `token` says if it is genuine, unexpired and, given `tenant`, of that tenant.
    /// No store access: a deleted user's token stays valid until it expires.
    pub fn verify(&self, token: &str, tenant: Option<&str>) -> Result<Claims, AuthError> {
        self.tokens.verify(token, tenant, self.clock.now_seconds())
    }
}

fn store_error(e: StoreError) -> AuthError {
    match e {
        StoreError::Conflict => AuthError::AlreadyRegistered,
        StoreError::Failed(why) => AuthError::Store(why),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::cell::{Cell, RefCell};
    use std::collections::HashMap;
    use std::rc::Rc;

    use super::*;
    use crate::Role;

    /// Users in a map, keyed like the host's Redis keys.
    #[derive(Default)]
    pub(crate) struct MemoryStore {
        users: RefCell<HashMap<(String, String), UserRecord>>,
        /// When set, every call fails with this text.
        pub(crate) failure: RefCell<Option<String>>,
    }

    impl UserStore for &MemoryStore {
        fn get(&self, tenant: &str, email: &str) -> Result<Option<UserRecord>, StoreError> {
            if let Some(why) = self.failure.borrow().clone() {
                return Err(StoreError::Failed(why));
            }
            Ok(self
                .users
                .borrow()
                .get(&(tenant.to_owned(), email.to_owned()))
                .cloned())
        }

        fn insert(&self, record: &UserRecord) -> Result<(), StoreError> {
            if let Some(why) = self.failure.borrow().clone() {
                return Err(StoreError::Failed(why));
            }
            let key = (record.tenant.clone(), record.email.clone());
            let mut users = self.users.borrow_mut();
            if users.contains_key(&key) {
                return Err(StoreError::Conflict);
            }
            users.insert(key, record.clone());
            Ok(())
        }
    }

    /// A clock tests move by hand.
    #[derive(Clone)]
    pub(crate) struct TestClock(pub(crate) Rc<Cell<u64>>);

    impl Clock for TestClock {
        fn now_seconds(&self) -> u64 {
            self.0.get()
        }
    }

    pub(crate) const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";
    const T0: u64 = 1_800_000_000;
    const PASSWORD: &str = "correct horse battery staple";

    fn settings() -> TokenSettings {
        TokenSettings {
            signing_key: KEY.to_vec(),
            token_lifetime_seconds: 3600,
        }
    }

    fn authenticator(
        store: &MemoryStore,
    ) -> (Authenticator<&MemoryStore, TestClock>, Rc<Cell<u64>>) {
        let now = Rc::new(Cell::new(T0));
        (
            Authenticator::new(store, TestClock(now.clone()), &settings()).unwrap(),
            now,
        )
    }

    #[test]
    fn register_login_verify_round_trip() {
        let store = MemoryStore::default();
        let (auth, now) = authenticator(&store);
        let account = auth
            .register("acme", " Ann@Example.org ", PASSWORD, Role::Admin)
            .unwrap();
        assert_eq!(
            (account.tenant.as_str(), account.email.as_str()),
            ("acme", "ann@example.org")
        );
        assert_eq!(account.role, Role::Admin);

        let stored = (&store).get("acme", "ann@example.org").unwrap().unwrap();
        assert!(
            stored
                .password_hash
                .starts_with("$argon2id$v=19$m=19456,t=2,p=1$")
        );
        assert!(!stored.password_hash.contains(PASSWORD));
        assert_eq!(stored.created_at, T0);

        now.set(T0 + 10);
        let session = auth.login("acme", "ANN@example.org", PASSWORD).unwrap();
        let expected = Claims {
            user_id: account.user_id.clone(),
            tenant: "acme".into(),
            email: "ann@example.org".into(),
            role: Role::Admin,
            issued_at: T0 + 10,
            expires_at: T0 + 10 + 3600,
        };
        assert_eq!(session.claims, expected);
        assert_eq!(auth.verify(&session.token, Some("acme")).unwrap(), expected);
        assert_eq!(auth.verify(&session.token, None).unwrap(), expected);
    }

    #[test]
    fn duplicate_registration_is_refused_even_with_other_case() {
        let store = MemoryStore::default();
        let (auth, _) = authenticator(&store);
        auth.register("acme", "ann@example.org", PASSWORD, Role::User)
            .unwrap();
        assert_eq!(
            auth.register("acme", "ANN@example.org", "another password", Role::User),
            Err(AuthError::AlreadyRegistered)
        );
        // Tenants are separate namespaces.
        auth.register("globex", "ann@example.org", PASSWORD, Role::User)
            .unwrap();
    }

    #[test]
    fn a_lost_insert_race_is_already_registered() {
        /// A store whose `get` misses a user that `insert` then finds.
        struct RacingStore;
        impl UserStore for RacingStore {
            fn get(&self, _: &str, _: &str) -> Result<Option<UserRecord>, StoreError> {
                Ok(None)
            }
            fn insert(&self, _: &UserRecord) -> Result<(), StoreError> {
                Err(StoreError::Conflict)
            }
        }
        let clock = TestClock(Rc::new(Cell::new(T0)));
        let auth = Authenticator::new(RacingStore, clock, &settings()).unwrap();
        assert_eq!(
            auth.register("acme", "ann@example.org", PASSWORD, Role::User),
            Err(AuthError::AlreadyRegistered)
        );
    }

    #[test]
    fn wrong_password_and_unknown_user_are_the_same_error_and_cost() {
        let store = MemoryStore::default();
        let (auth, _) = authenticator(&store);
        auth.register("acme", "ann@example.org", PASSWORD, Role::User)
            .unwrap();

        let time = |email: &str, password: &str| {
            let start = std::time::Instant::now();
            let result = auth.login("acme", email, password);
            (result, start.elapsed())
        };
        // Warm up caches and the allocator before measuring.
        let _ = time("ann@example.org", "wrong password");
        let mut wrong = Vec::new();
        let mut unknown = Vec::new();
        for _ in 0..5 {
            let (result, elapsed) = time("ann@example.org", "wrong password");
            assert_eq!(result, Err(AuthError::InvalidCredentials));
            wrong.push(elapsed);
            let (result, elapsed) = time("bob@example.org", "wrong password");
            assert_eq!(result, Err(AuthError::InvalidCredentials));
            unknown.push(elapsed);
        }
        // The user of another tenant is unknown too.
        assert_eq!(
            auth.login("globex", "ann@example.org", PASSWORD),
            Err(AuthError::InvalidCredentials)
        );
        wrong.sort();
        unknown.sort();
        let (wrong, unknown) = (wrong[2].as_secs_f64(), unknown[2].as_secs_f64());
        // Both are one argon2id verification with the same parameters; a store lookup
        // in memory is noise. Loose bound: this runs on busy CI machines.
        let ratio = wrong.max(unknown) / wrong.min(unknown);
        assert!(
            ratio < 1.5,
            "median wrong password {wrong:.4} s, unknown user {unknown:.4} s"
        );
    }

    #[test]
    fn over_long_password_at_login_is_refused_without_hashing() {
        let store = MemoryStore::default();
        let (auth, _) = authenticator(&store);
        let huge = "a".repeat(1024 * 1024);
        let start = std::time::Instant::now();
        assert_eq!(
            auth.login("acme", "ann@example.org", &huge),
            Err(AuthError::InvalidCredentials)
        );
        assert!(start.elapsed() < std::time::Duration::from_millis(5));
    }

    #[test]
    fn weak_password_and_bad_email_are_refused_before_storing() {
        let store = MemoryStore::default();
        let (auth, _) = authenticator(&store);
        assert!(matches!(
            auth.register("acme", "ann@example.org", "short", Role::User),
            Err(AuthError::WeakPassword(_))
        ));
        assert!(matches!(
            auth.register("acme", "ann@example.org", &"a".repeat(1025), Role::User),
            Err(AuthError::WeakPassword(_))
        ));
        assert_eq!(
            auth.register("acme", "ann", PASSWORD, Role::User),
            Err(AuthError::InvalidEmail)
        );
        assert_eq!(
            auth.login("acme", "ann", PASSWORD),
            Err(AuthError::InvalidEmail)
        );
        assert!(store.users.borrow().is_empty());
    }

    #[test]
    fn expired_token_is_refused_from_its_expiry_second() {
        let store = MemoryStore::default();
        let (auth, now) = authenticator(&store);
        auth.register("acme", "ann@example.org", PASSWORD, Role::User)
            .unwrap();
        let session = auth.login("acme", "ann@example.org", PASSWORD).unwrap();
        now.set(session.claims.expires_at - 1);
        assert!(auth.verify(&session.token, Some("acme")).is_ok());
        now.set(session.claims.expires_at);
        assert_eq!(
            auth.verify(&session.token, Some("acme")),
            Err(AuthError::ExpiredToken)
        );
    }

    #[test]
    fn token_of_another_tenant_is_refused() {
        let store = MemoryStore::default();
        let (auth, _) = authenticator(&store);
        auth.register("acme", "ann@example.org", PASSWORD, Role::User)
            .unwrap();
        let session = auth.login("acme", "ann@example.org", PASSWORD).unwrap();
        assert!(matches!(
            auth.verify(&session.token, Some("globex")),
            Err(AuthError::InvalidToken(_))
        ));
    }

    #[test]
    fn a_record_of_another_tenant_is_refused() {
        /// A store that ignores the tenant it is asked about.
        struct LeakyStore(UserRecord);
        impl UserStore for LeakyStore {
            fn get(&self, _: &str, _: &str) -> Result<Option<UserRecord>, StoreError> {
                Ok(Some(self.0.clone()))
            }
            fn insert(&self, _: &UserRecord) -> Result<(), StoreError> {
                Ok(())
            }
        }
        let store = MemoryStore::default();
        let (auth, _) = authenticator(&store);
        auth.register("globex", "ann@example.org", PASSWORD, Role::Admin)
            .unwrap();
        let record = (&store).get("globex", "ann@example.org").unwrap().unwrap();
        let clock = TestClock(Rc::new(Cell::new(T0)));
        let leaky = Authenticator::new(LeakyStore(record), clock, &settings()).unwrap();
        assert!(matches!(
            leaky.login("acme", "ann@example.org", PASSWORD),
            Err(AuthError::Store(_))
        ));
    }

    #[test]
    fn store_failures_are_reported_as_such() {
        let store = MemoryStore::default();
        let (auth, _) = authenticator(&store);
        *store.failure.borrow_mut() = Some("redis unreachable".into());
        assert_eq!(
            auth.register("acme", "ann@example.org", PASSWORD, Role::User),
            Err(AuthError::Store("redis unreachable".into()))
        );
        assert_eq!(
            auth.login("acme", "ann@example.org", PASSWORD),
            Err(AuthError::Store("redis unreachable".into()))
        );
    }

    #[test]
    #[ignore = "a measurement, not a test: `cargo test --release -p tapedeck-auth -- --ignored timings --nocapture`"]
    fn timings() {
        let store = MemoryStore::default();
        let (auth, _) = authenticator(&store);
        let median = |f: &mut dyn FnMut()| {
            let mut runs: Vec<_> = (0..9)
                .map(|_| {
                    let start = std::time::Instant::now();
                    f();
                    start.elapsed()
                })
                .collect();
            runs.sort();
            runs[4]
        };
        let register = median(&mut || {
            let email = format!("{}@example.org", new_user_id());
            auth.register("acme", &email, PASSWORD, Role::User).unwrap();
        });
        auth.register("acme", "ann@example.org", PASSWORD, Role::User)
            .unwrap();
        let login = median(&mut || {
            auth.login("acme", "ann@example.org", PASSWORD).unwrap();
        });
        let unknown = median(&mut || {
            auth.login("acme", "bob@example.org", PASSWORD).unwrap_err();
        });
        let token = auth
            .login("acme", "ann@example.org", PASSWORD)
            .unwrap()
            .token;
        let calls = 10_000;
        let start = std::time::Instant::now();
        for _ in 0..calls {
            auth.verify(&token, Some("acme")).unwrap();
        }
        let verify = start.elapsed() / calls;
        println!(
            "register {register:?}, login {login:?}, login of unknown user {unknown:?}, verify {verify:?}"
        );
    }

    #[test]
    fn unusable_settings_are_misconfigured() {
        let store = MemoryStore::default();
        let clock = TestClock(Rc::new(Cell::new(T0)));
        let short = TokenSettings {
            signing_key: vec![7; 31],
            token_lifetime_seconds: 3600,
        };
        assert!(matches!(
            Authenticator::new(&store, clock.clone(), &short),
            Err(AuthError::Misconfigured(_))
        ));
        let zero = TokenSettings {
            signing_key: KEY.to_vec(),
            token_lifetime_seconds: 0,
        };
        assert!(matches!(
            Authenticator::new(&store, clock, &zero),
            Err(AuthError::Misconfigured(_))
        ));
    }
}
