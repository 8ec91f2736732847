//! Cost of one token verification through the auth component, without HTTP:
//! `cargo run --release -p tapedeck-bench --example auth_verify [N]`.

use std::sync::Arc;
use std::time::Instant;

use tapedeck::components::DEFAULT_AUTH;
use tapedeck::runtime::{AuthContext, MemoryDirectory, auth_wit as wit};

fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5000);
    // A fixed cache directory: the second run measures without compiling.
    let cache = std::env::temp_dir().join("tapedeck-auth-bench");
    let plugin = tapedeck::serve::auth::load_auth(&cache, DEFAULT_AUTH)?;
    let cx = AuthContext {
        users: Arc::new(MemoryDirectory::default()),
        signing_key: vec![7u8; 32].into(),
        token_lifetime_seconds: 3600,
        now_seconds: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs(),
    };
    plugin
        .register(
            &cx,
            "default",
            "a@example.com",
            "correct horse",
            wit::Role::User,
        )?
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let started = Instant::now();
    let session = plugin
        .login(&cx, "default", "a@example.com", "correct horse")?
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    println!(
        "login (argon2id in wasm): {:.1} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
    let started = Instant::now();
    for _ in 0..n {
        plugin
            .verify(&cx, &session.token, None)?
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    }
    let per = started.elapsed().as_secs_f64() / n as f64;
    println!(
        "verify: {:.1} us per call ({n} calls; warm instances after the first)",
        per * 1e6
    );
    Ok(())
}
