//! The auth component (`components/auth`) through the host's plugin runtime: register,
//! login and verify against an in-memory user directory, with the key and clock the host
//! hands each call. Verify reuses warm instances, so these tests also prove that a warm
//! instance sees a new clock and never verifies with an old key.

use std::sync::Arc;

use tapedeck::components::DEFAULT_AUTH;
use tapedeck::runtime::{AuthContext, AuthPlugin, MemoryDirectory, UserDirectory, auth_wit as wit};

/// A directory whose store is down.
struct Broken;

impl UserDirectory for Broken {
    fn get(&self, _: &str, _: &str) -> Result<Option<wit::UserRecord>, String> {
        Err("connection refused".into())
    }
    fn insert(&self, _: &wit::UserRecord) -> Result<bool, String> {
        Err("connection refused".into())
    }
}

const NOW: u64 = 1_800_000_000;

fn plugin() -> (tempfile::TempDir, Arc<AuthPlugin>) {
    let dir = tempfile::tempdir().unwrap();
    let plugin = tapedeck::serve::auth::load_auth(dir.path(), DEFAULT_AUTH).unwrap();
    (dir, plugin)
}

fn context(users: Arc<dyn UserDirectory>, key: u8, now: u64) -> AuthContext {
    AuthContext {
        users,
        signing_key: vec![key; 32].into(),
        token_lifetime_seconds: 3600,
        now_seconds: now,
    }
}

#[test]
fn register_login_verify_through_the_component() {
    let (_dir, plugin) = plugin();
    let users = Arc::new(MemoryDirectory::default());
    let cx = context(users.clone(), 1, NOW);
    let account = plugin
        .register(
            &cx,
            "acme",
            " Ann@Example.COM ",
            "correct horse",
            wit::Role::User,
        )
        .unwrap()
        .unwrap();
    assert_eq!(account.email, "ann@example.com");
    // The stored record holds an argon2id hash, never the password.
    let stored = users.get("acme", "ann@example.com").unwrap().unwrap();
    assert!(
        stored.password_hash.starts_with("$argon2id$"),
        "{}",
        stored.password_hash
    );
    assert!(!stored.password_hash.contains("correct horse"));
    assert!(matches!(
        plugin.register(
            &cx,
            "acme",
            "ann@example.com",
            "another one",
            wit::Role::User
        ),
        Ok(Err(wit::AuthError::AlreadyRegistered))
    ));

    let session = plugin
        .login(&cx, "acme", "ann@example.com", "correct horse")
        .unwrap()
        .unwrap();
    assert_eq!(session.claims.expires_at, NOW + 3600);
    // Wrong password and unknown user: the same answer.
    for (email, password) in [
        ("ann@example.com", "wrong horse!"),
        ("bob@example.com", "correct horse"),
    ] {
        assert!(matches!(
            plugin.login(&cx, "acme", email, password),
            Ok(Err(wit::AuthError::InvalidCredentials))
        ));
    }

    // Many verifies: the first warms an instance, the rest reuse it.
    for _ in 0..50 {
        let claims = plugin.verify(&cx, &session.token, None).unwrap().unwrap();
        assert_eq!(claims.user_id, account.user_id);
        assert_eq!(claims.tenant, "acme");
    }
    assert!(matches!(
        plugin.verify(&cx, &session.token, Some("other")),
        Ok(Err(wit::AuthError::InvalidToken(_)))
    ));
    // A warm instance reads the clock of each call: the token expires on time.
    let later = context(users.clone(), 1, NOW + 3600);
    assert!(matches!(
        plugin.verify(&later, &session.token, None),
        Ok(Err(wit::AuthError::ExpiredToken))
    ));
    // A new key is never answered by an instance that read the old one.
    let rekeyed = context(users.clone(), 2, NOW);
    assert!(matches!(
        plugin.verify(&rekeyed, &session.token, None),
        Ok(Err(wit::AuthError::InvalidToken(_)))
    ));
    assert!(plugin.verify(&cx, &session.token, None).unwrap().is_ok());
    // Tampering and oversized tokens.
    // One character of the signature changed (not the last, whose low bits are padding).
    let (signed, signature) = session.token.rsplit_once('.').unwrap();
    let first = if signature.starts_with('A') { 'B' } else { 'A' };
    let forged = format!("{signed}.{first}{}", &signature[1..]);
    assert!(matches!(
        plugin.verify(&cx, &forged, None),
        Ok(Err(wit::AuthError::InvalidToken(_)))
    ));
    assert!(matches!(
        plugin.verify(&cx, &"x".repeat(100_000), None),
        Ok(Err(wit::AuthError::InvalidToken(_)))
    ));
}

#[test]
fn store_failures_and_bad_keys_are_errors_not_crashes() {
    let (_dir, plugin) = plugin();
    let down = context(Arc::new(Broken), 1, NOW);
    assert!(matches!(
        plugin.login(&down, "acme", "ann@example.com", "correct horse"),
        Ok(Err(wit::AuthError::Store(_)))
    ));
    let mut short_key = context(Arc::new(MemoryDirectory::default()), 1, NOW);
    short_key.signing_key = vec![1u8; 8].into();
    assert!(matches!(
        plugin.register(
            &short_key,
            "acme",
            "ann@example.com",
            "correct horse",
            wit::Role::User
        ),
        Ok(Err(wit::AuthError::Misconfigured(_)))
    ));
}
