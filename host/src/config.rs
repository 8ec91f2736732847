//! Service configuration, in one place: every setting is a flag, an environment
//! variable and a key of the optional TOML file (`--config` / `TAPEDECK_CONFIG`), in
//! that order of precedence, over the embedded defaults below.
//!
//! | flag / TOML key            | env var                          | default            |
//! |----------------------------|----------------------------------|--------------------|
//! | `listen`                   | `TAPEDECK_LISTEN`                | `127.0.0.1:8080`   |
//! | `data_dir`                 | `TAPEDECK_DATA_DIR`              | `./data`           |
//! | `role`                     | `TAPEDECK_ROLE`                  | `all`              |
//! | `redis_url`                | `REDIS_URL`                      | managed redis-server |
//! | `blob_url`                 | `TAPEDECK_BLOB_URL`              | `{data_dir}/blobs` (`s3://bucket/prefix` for S3) |
//! | `workers`                  | `TAPEDECK_WORKERS`               | 2 conversions at once |
//! | `max_upload_bytes`         | `TAPEDECK_MAX_UPLOAD_BYTES`      | 1 GiB              |
//! | `max_attempts`             | `TAPEDECK_MAX_ATTEMPTS`          | 4                  |
//! | `visibility_timeout_secs`  | `TAPEDECK_VISIBILITY_TIMEOUT_SECS` | 60               |
//! | `retry_base_ms`            | `TAPEDECK_RETRY_BASE_MS`         | 2000               |
//! | `token_ttl_secs`           | `TAPEDECK_TOKEN_TTL_SECS`        | 86400              |
//! | `redis_server`             | `TAPEDECK_REDIS_SERVER`          | `redis-server` on `PATH` |
//! | `converter`                | `TAPEDECK_CONVERTER`             | the embedded converter component |
//! | `shutdown_timeout_secs`    | `TAPEDECK_SHUTDOWN_TIMEOUT_SECS` | 20                 |
//! | `auth_plugin`              | `TAPEDECK_AUTH_PLUGIN`           | the embedded auth component |
//! | `notifier`                 | `TAPEDECK_NOTIFIER`              | the embedded notifier component |
//! | `public_url`               | `TAPEDECK_PUBLIC_URL`            | `http://{listen}` (download links in notifications) |
//! | `smtp_url`                 | `TAPEDECK_SMTP_URL`              | none: mail goes to `{data_dir}/outbox` as .eml files |
//! | `mail_from`                | `TAPEDECK_MAIL_FROM`             | `Tapedeck <noreply@tapedeck.localhost>` |
//! | `webhook_allow`            | `TAPEDECK_WEBHOOK_ALLOW`         | none: webhooks reach public addresses only |
//! | `bench_routes`             | `TAPEDECK_BENCH_ROUTES`          | false (benchmarks only: an unauthenticated job lookup) |

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;

/// Which parts of the service a process runs. Any number of either role may share one
/// Redis and one blob store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// HTTP API and conversion workers.
    All,
    /// HTTP API only.
    Gateway,
    /// Conversion workers only (still answers `/healthz` and `/readyz`).
    Worker,
}

impl Role {
    pub fn runs_workers(self) -> bool {
        matches!(self, Role::All | Role::Worker)
    }
}

/// Settings as given (flags and env through clap, or the TOML file); unset is `None`.
#[derive(Debug, Clone, Default, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Address of the HTTP API [default: 127.0.0.1:8080].
    #[arg(long, env = "TAPEDECK_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Directory for the managed Redis, local blobs and temp files [default: ./data].
    #[arg(long, env = "TAPEDECK_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// all | gateway | worker [default: all].
    #[arg(long, env = "TAPEDECK_ROLE", value_enum)]
    pub role: Option<Role>,
    /// Shared Redis; when unset a managed redis-server runs under the data dir.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,
    /// Blob store: a directory or `s3://bucket[/prefix]` [default: DATA_DIR/blobs].
    #[arg(long, env = "TAPEDECK_BLOB_URL")]
    pub blob_url: Option<String>,
    /// Conversions this process runs at once [default: 2].
    #[arg(long, env = "TAPEDECK_WORKERS")]
    pub workers: Option<usize>,
    /// Server-wide upload limit; tenants may set a lower one [default: 1 GiB].
    #[arg(long, env = "TAPEDECK_MAX_UPLOAD_BYTES")]
    pub max_upload_bytes: Option<u64>,
    /// Conversion attempts before a job is dead-lettered [default: 4].
    #[arg(long, env = "TAPEDECK_MAX_ATTEMPTS")]
    pub max_attempts: Option<u32>,
    /// Idle time after which another worker claims an entry [default: 60].
    #[arg(long, env = "TAPEDECK_VISIBILITY_TIMEOUT_SECS")]
    pub visibility_timeout_secs: Option<u64>,
    /// First retry delay; doubles per attempt, plus jitter [default: 2000].
    #[arg(long, env = "TAPEDECK_RETRY_BASE_MS")]
    pub retry_base_ms: Option<u64>,
    /// Lifetime of login tokens [default: 86400].
    #[arg(long, env = "TAPEDECK_TOKEN_TTL_SECS")]
    pub token_ttl_secs: Option<u64>,
    /// redis-server binary for the managed Redis [default: redis-server].
    #[arg(long, env = "TAPEDECK_REDIS_SERVER")]
    pub redis_server: Option<PathBuf>,
    /// Converter component (.wasm) instead of the embedded one.
    #[arg(long, env = "TAPEDECK_CONVERTER")]
    pub converter: Option<PathBuf>,
    /// How long shutdown waits for requests and conversions [default: 20].
    #[arg(long, env = "TAPEDECK_SHUTDOWN_TIMEOUT_SECS")]
    pub shutdown_timeout_secs: Option<u64>,
    /// Auth component (.wasm) instead of the embedded one.
    #[arg(long, env = "TAPEDECK_AUTH_PLUGIN")]
    pub auth_plugin: Option<PathBuf>,
    /// Notifier component (.wasm) instead of the embedded one.
    #[arg(long, env = "TAPEDECK_NOTIFIER")]
    pub notifier: Option<PathBuf>,
    /// Base URL clients reach this service at, for links in notifications
    /// [default: http://{listen}].
    #[arg(long, env = "TAPEDECK_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// SMTP server for notification mail: `smtp://host:25`, `smtp://user:pass@host:587?tls=required`
    /// (STARTTLS) or `smtps://host:465`. Unset: mail is written to `{data_dir}/outbox`.
    #[arg(long, env = "TAPEDECK_SMTP_URL")]
    pub smtp_url: Option<String>,
    /// `From` of notification mail.
    #[arg(long, env = "TAPEDECK_MAIL_FROM")]
    pub mail_from: Option<String>,
    /// Comma-separated non-public addresses/networks webhooks may reach anyway
    /// (e.g. `10.0.0.0/8,127.0.0.1`).
    #[arg(long, env = "TAPEDECK_WEBHOOK_ALLOW")]
    pub webhook_allow: Option<String>,
    /// Benchmarks only: also serve `GET /bench/unauthenticated/jobs/{id}`, the job lookup
    /// without a token, to measure what authentication costs. Never in production.
    #[arg(long, env = "TAPEDECK_BENCH_ROUTES", num_args = 0..=1, default_missing_value = "true")]
    pub bench_routes: Option<bool>,
}

impl Settings {
    /// `self` where set, else `fallback`.
    fn or(self, fallback: Settings) -> Settings {
        Settings {
            listen: self.listen.or(fallback.listen),
            data_dir: self.data_dir.or(fallback.data_dir),
            role: self.role.or(fallback.role),
            redis_url: self.redis_url.or(fallback.redis_url),
            blob_url: self.blob_url.or(fallback.blob_url),
            workers: self.workers.or(fallback.workers),
            max_upload_bytes: self.max_upload_bytes.or(fallback.max_upload_bytes),
            max_attempts: self.max_attempts.or(fallback.max_attempts),
            visibility_timeout_secs: self
                .visibility_timeout_secs
                .or(fallback.visibility_timeout_secs),
            retry_base_ms: self.retry_base_ms.or(fallback.retry_base_ms),
            token_ttl_secs: self.token_ttl_secs.or(fallback.token_ttl_secs),
            redis_server: self.redis_server.or(fallback.redis_server),
            converter: self.converter.or(fallback.converter),
            shutdown_timeout_secs: self
                .shutdown_timeout_secs
                .or(fallback.shutdown_timeout_secs),
            auth_plugin: self.auth_plugin.or(fallback.auth_plugin),
            notifier: self.notifier.or(fallback.notifier),
            public_url: self.public_url.or(fallback.public_url),
            smtp_url: self.smtp_url.or(fallback.smtp_url),
            mail_from: self.mail_from.or(fallback.mail_from),
            webhook_allow: self.webhook_allow.or(fallback.webhook_allow),
            bench_routes: self.bench_routes.or(fallback.bench_routes),
        }
    }
}

/// The resolved configuration of one `tapedeck serve` process.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub role: Role,
    /// `None`: start a managed redis-server.
    pub redis_url: Option<String>,
    pub blob_url: String,
    pub workers: usize,
    pub max_upload_bytes: u64,
    pub max_attempts: u32,
    pub visibility_timeout: Duration,
    pub retry_base: Duration,
    pub token_ttl: Duration,
    pub redis_server: PathBuf,
    /// `None`: the embedded converter.
    pub converter: Option<PathBuf>,
    pub shutdown_timeout: Duration,
    /// `None`: the embedded auth component.
    pub auth_plugin: Option<PathBuf>,
    /// `None`: the embedded notifier component.
    pub notifier: Option<PathBuf>,
    /// Prefix of the links notifications carry, without a trailing `/`.
    pub public_url: String,
    pub smtp_url: Option<String>,
    pub mail_from: Option<String>,
    pub webhook_allow: Option<String>,
    pub bench_routes: bool,
}

impl ServiceConfig {
    /// Resolves `given` (flags/env) over the TOML file at `file`, if any, over defaults.
    pub fn resolve(given: Settings, file: Option<&Path>) -> anyhow::Result<Self> {
        let from_file = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?
            }
            None => Settings::default(),
        };
        let s = given.or(from_file);
        let data_dir = s.data_dir.unwrap_or_else(|| PathBuf::from("data"));
        let blob_url = s
            .blob_url
            .unwrap_or_else(|| data_dir.join("blobs").display().to_string());
        let listen = s
            .listen
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
        let config = ServiceConfig {
            listen,
            role: s.role.unwrap_or(Role::All),
            redis_url: s.redis_url.filter(|u| !u.is_empty()),
            blob_url,
            workers: s.workers.unwrap_or(2).max(1),
            max_upload_bytes: s.max_upload_bytes.unwrap_or(1 << 30),
            max_attempts: s.max_attempts.unwrap_or(4).max(1),
            visibility_timeout: Duration::from_secs(s.visibility_timeout_secs.unwrap_or(60).max(1)),
            retry_base: Duration::from_millis(s.retry_base_ms.unwrap_or(2000)),
            token_ttl: Duration::from_secs(s.token_ttl_secs.unwrap_or(86_400)),
            redis_server: s
                .redis_server
                .unwrap_or_else(|| PathBuf::from("redis-server")),
            converter: s.converter,
            shutdown_timeout: Duration::from_secs(s.shutdown_timeout_secs.unwrap_or(20)),
            auth_plugin: s.auth_plugin,
            notifier: s.notifier,
            public_url: s
                .public_url
                .filter(|u| !u.is_empty())
                .unwrap_or_else(|| format!("http://{listen}"))
                .trim_end_matches('/')
                .to_owned(),
            smtp_url: s.smtp_url.filter(|u| !u.is_empty()),
            mail_from: s.mail_from.filter(|u| !u.is_empty()),
            webhook_allow: s.webhook_allow,
            bench_routes: s.bench_routes.unwrap_or(false),
            data_dir,
        };
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_file_beat_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tapedeck.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9000\"\nworkers = 7\nrole = \"worker\"\n",
        )
        .unwrap();
        let given = Settings {
            workers: Some(3),
            ..Settings::default()
        };
        let c = ServiceConfig::resolve(given, Some(&file)).unwrap();
        assert_eq!(c.listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(c.workers, 3);
        assert_eq!(c.role, Role::Worker);
        assert_eq!(c.data_dir, PathBuf::from("data"));
        assert_eq!(c.blob_url, "data/blobs");
        assert!(c.redis_url.is_none());
    }

    #[test]
    fn unknown_file_keys_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tapedeck.toml");
        std::fs::write(&file, "listne = \"x\"\n").unwrap();
        assert!(ServiceConfig::resolve(Settings::default(), Some(&file)).is_err());
    }
}
