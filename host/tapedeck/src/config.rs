//! Service configuration, in one place: every setting is a flag, an environment
//! variable and a key of the optional TOML file (`--config` / `TAPEDECK_CONFIG`), in
//! that order of precedence, over the embedded defaults below. One struct, [`Settings`],
//! declares all three: clap reads the flags and env vars, serde the file, and clap lays
//! what it was given over the file's values ([`ServiceConfig::resolve`]).
//!
//! | flag / TOML key            | env var                          | default            |
//! |----------------------------|----------------------------------|--------------------|
//! | `listen`                   | `TAPEDECK_LISTEN`                | `127.0.0.1:8080`   |
//! | `metrics_listen`           | `TAPEDECK_METRICS_LISTEN`        | `127.0.0.1:9464` (Prometheus `/metrics`, apart from the API; `off`: none) |
//! | `data_dir`                 | `TAPEDECK_DATA_DIR`              | `./data`           |
//! | `role`                     | `TAPEDECK_ROLE`                  | `all`              |
//! | `redis_url`                | `REDIS_URL`                      | managed redis-server |
//! | `redis_cluster_nodes`      | `TAPEDECK_REDIS_CLUSTER_NODES`   | none: `redis://h1:p1,redis://h2:p2,...`, a Redis Cluster through any reachable subset of its nodes (instead of `redis_url`) |
//! | `blob_url`                 | `TAPEDECK_BLOB_URL`              | `{data_dir}/blobs` (`s3://bucket/prefix` for S3) |
//! | `workers`                  | `TAPEDECK_WORKERS`               | 2 conversions at once |
//! | `max_upload_bytes`         | `TAPEDECK_MAX_UPLOAD_BYTES`      | 1 GiB              |
//! | `max_event_streams_per_user` | `TAPEDECK_MAX_EVENT_STREAMS_PER_USER` | 8 (SSE streams one user may hold open on one gateway) |
//! | `max_attempts`             | `TAPEDECK_MAX_ATTEMPTS`          | 4                  |
//! | `max_concurrent_checks`    | `TAPEDECK_MAX_CONCURRENT_CHECKS` | 1 (conformance checks of published components running at once in this process) |
//! | `max_check_wait_secs`      | `TAPEDECK_MAX_CHECK_WAIT_SECS`   | 30 (how long a publish waits for a check slot before a 503 `checks_busy`) |
//! | `visibility_timeout_secs`  | `TAPEDECK_VISIBILITY_TIMEOUT_SECS` | 60 (a conversion or notification whose process stopped heart-beating is taken over after this) |
//! | `retry_base_ms`            | `TAPEDECK_RETRY_BASE_MS`         | 2000               |
//! | `token_ttl_secs`           | `TAPEDECK_TOKEN_TTL_SECS`        | 86400              |
//! | `session_cache_ms`         | `TAPEDECK_SESSION_CACHE_MS`      | 1000 (how long a gateway trusts a checked session: a revocation reaches every gateway within it; 0..=2000) |
//! | `redis_server`             | `TAPEDECK_REDIS_SERVER`          | `redis-server` on `PATH` |
//! | `converter`                | `TAPEDECK_CONVERTER`             | the embedded converter component |
//! | `shutdown_timeout_secs`    | `TAPEDECK_SHUTDOWN_TIMEOUT_SECS` | 20                 |
//! | `auth_plugin`              | `TAPEDECK_AUTH_PLUGIN`           | the embedded auth component |
//! | `notifier`                 | `TAPEDECK_NOTIFIER`              | the embedded notifier component |
//! | `watch`                    | `TAPEDECK_WATCH`                 | none: reload `converter.wasm`/`notifier.wasm` from this folder when they change (plugin development) |
//! | `public_url`               | `TAPEDECK_PUBLIC_URL`            | gateways: `http://{listen}`; workers: what a gateway published in Redis |
//! | `download_link_ttl_secs`   | `TAPEDECK_DOWNLOAD_LINK_TTL_SECS` | 604800 (7 days: signed download links in notifications) |
//! | `run_cpu_base_secs`        | `TAPEDECK_RUN_CPU_BASE_SECS`     | 30 (CPU time of a conversion: base ...) |
//! | `run_cpu_secs_per_minute`  | `TAPEDECK_RUN_CPU_SECS_PER_MINUTE` | 5 (... plus this per minute of input audio ...) |
//! | `run_cpu_max_secs`         | `TAPEDECK_RUN_CPU_MAX_SECS`      | 3600 (... at most this; also for inputs of unknown length) |
//! | `run_wall_max_secs`        | `TAPEDECK_RUN_WALL_MAX_SECS`     | 1800 (real time any run may take: 2 × its CPU time + 10 s, at most this) |
//! | `run_max_memory_mib`       | `TAPEDECK_RUN_MAX_MEMORY_MIB`    | 64 (linear memory of a converter run) |
//! | `run_max_output_mib`       | `TAPEDECK_RUN_MAX_OUTPUT_MIB`    | 512 (MP3 bytes one conversion may write) |
//! | `trusted_proxies`          | `TAPEDECK_TRUSTED_PROXIES`       | none: the peer address is the client (login throttling) |
//! | `smtp_url`                 | `TAPEDECK_SMTP_URL`              | none: mail goes to the outbox, `outbox/*.eml` in the blob store (every gateway lists it) |
//! | `mail_from`                | `TAPEDECK_MAIL_FROM`             | `Tapedeck <noreply@tapedeck.localhost>` |
//! | `webhook_allow`            | `TAPEDECK_WEBHOOK_ALLOW`         | none: webhooks reach public addresses only |
//! | `tenant_defaults`          | `TAPEDECK_TENANT_DEFAULTS`       | none: `name=value,...` server defaults of the tenant limits (`jobs_per_minute=60,max_running=4`; names as `tapedeck admin tenant limits`) |
//! | `admin_token`              | `TAPEDECK_ADMIN_TOKEN`           | generated on first start, stored hashed in Redis, printed once |
//! | `bench_routes`             | `TAPEDECK_BENCH_ROUTES`          | false (benchmarks only: an unauthenticated job lookup) |

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::FromArgMatches;
use serde::Deserialize;
use tapedeck_model::net::IpNet;

use tapedeck_model::run_limits::LimitPolicy;
use tapedeck_model::tenant::TenantLimits;

/// Which parts of the service a process runs. Any number of either role may share one
/// Redis and one blob store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// HTTP API and conversion workers.
    All,
    /// HTTP API only.
    Gateway,
    /// Conversion workers only; serves `/healthz` and `/readyz` on `listen`.
    Worker,
}

impl Role {
    pub fn runs_workers(self) -> bool {
        matches!(self, Role::All | Role::Worker)
    }
}

/// Settings as given (flags and env through clap, or the TOML file); unset is `None`.
/// [`Given`] carries the flags and env vars of `tapedeck serve`; [`ServiceConfig::resolve`]
/// reads the file into this struct and lets clap set over it what was given.
#[derive(Debug, Clone, Default, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Address of the HTTP API [default: 127.0.0.1:8080].
    #[arg(long, env = "TAPEDECK_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Address of Prometheus `/metrics`, never served on the API's `listen`; `off` for
    /// none [default: 127.0.0.1:9464].
    #[arg(long, env = "TAPEDECK_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// Directory for the managed Redis, local blobs and temp files [default: ./data].
    #[arg(long, env = "TAPEDECK_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// all | gateway | worker [default: all].
    #[arg(long, env = "TAPEDECK_ROLE", value_enum)]
    pub role: Option<Role>,
    /// Shared Redis; when unset a managed redis-server runs under the data dir.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,
    /// A Redis Cluster instead: `redis://h1:p1,redis://h2:p2,...`, any reachable subset
    /// of its nodes (the client discovers the rest). Not with `redis_url`.
    #[arg(long, env = "TAPEDECK_REDIS_CLUSTER_NODES")]
    pub redis_cluster_nodes: Option<String>,
    /// Blob store: a directory or `s3://bucket[/prefix]` [default: DATA_DIR/blobs].
    #[arg(long, env = "TAPEDECK_BLOB_URL")]
    pub blob_url: Option<String>,
    /// Conversions this process runs at once [default: 2].
    #[arg(long, env = "TAPEDECK_WORKERS")]
    pub workers: Option<usize>,
    /// Server-wide upload limit; tenants may set a lower one [default: 1 GiB].
    #[arg(long, env = "TAPEDECK_MAX_UPLOAD_BYTES")]
    pub max_upload_bytes: Option<u64>,
    /// Job event streams (SSE) one user may hold open on this gateway; more are a 429
    /// [default: 8].
    #[arg(long, env = "TAPEDECK_MAX_EVENT_STREAMS_PER_USER")]
    pub max_event_streams_per_user: Option<usize>,
    /// Conversion attempts before a job is dead-lettered [default: 4].
    #[arg(long, env = "TAPEDECK_MAX_ATTEMPTS")]
    pub max_attempts: Option<u32>,
    /// Conformance checks of published components run at once by this process; more
    /// wait in line [default: 1].
    #[arg(long, env = "TAPEDECK_MAX_CONCURRENT_CHECKS")]
    pub max_concurrent_checks: Option<usize>,
    /// How long a publish waits for a check slot before it is answered 503
    /// `checks_busy` [default: 30].
    #[arg(long, env = "TAPEDECK_MAX_CHECK_WAIT_SECS")]
    pub max_check_wait_secs: Option<u64>,
    /// Idle time after which another worker (or notifier) claims an entry [default: 60].
    #[arg(long, env = "TAPEDECK_VISIBILITY_TIMEOUT_SECS")]
    pub visibility_timeout_secs: Option<u64>,
    /// First retry delay; doubles per attempt, plus jitter [default: 2000].
    #[arg(long, env = "TAPEDECK_RETRY_BASE_MS")]
    pub retry_base_ms: Option<u64>,
    /// Lifetime of login tokens [default: 86400].
    #[arg(long, env = "TAPEDECK_TOKEN_TTL_SECS")]
    pub token_ttl_secs: Option<u64>,
    /// How long a gateway trusts a checked session, in ms (0..=2000) [default: 1000].
    #[arg(long, env = "TAPEDECK_SESSION_CACHE_MS")]
    pub session_cache_ms: Option<u64>,
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
    /// Local plugin development: reload `converter.wasm` / `notifier.wasm` from this folder
    /// whenever they change, through the same swap path as the registry (no restart).
    #[arg(long, env = "TAPEDECK_WATCH")]
    pub watch: Option<PathBuf>,
    /// Base URL clients reach the API at, for links in notifications. Gateways publish
    /// theirs in Redis, and workers without one use it [default: gateways http://{listen}].
    #[arg(long, env = "TAPEDECK_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// How long the signed download links of notifications work [default: 604800 (7 days)].
    #[arg(long, env = "TAPEDECK_DOWNLOAD_LINK_TTL_SECS")]
    pub download_link_ttl_secs: Option<u64>,
    /// CPU seconds every conversion may use, plus `run_cpu_secs_per_minute` for each
    /// minute of input audio [default: 30].
    #[arg(long, env = "TAPEDECK_RUN_CPU_BASE_SECS")]
    pub run_cpu_base_secs: Option<f64>,
    /// CPU seconds a conversion may use per minute of input audio [default: 5].
    #[arg(long, env = "TAPEDECK_RUN_CPU_SECS_PER_MINUTE")]
    pub run_cpu_secs_per_minute: Option<f64>,
    /// Most CPU seconds any conversion may use, also for inputs of unknown length
    /// [default: 3600].
    #[arg(long, env = "TAPEDECK_RUN_CPU_MAX_SECS")]
    pub run_cpu_max_secs: Option<f64>,
    /// Most real (wall-clock) seconds any conversion may take, whatever its CPU time: a
    /// converter that sleeps or waits is killed at 2 × its CPU time + 10 s, at most this
    /// [default: 1800].
    #[arg(long, env = "TAPEDECK_RUN_WALL_MAX_SECS")]
    pub run_wall_max_secs: Option<f64>,
    /// Linear memory a converter run may use, in MiB [default: 64].
    #[arg(long, env = "TAPEDECK_RUN_MAX_MEMORY_MIB")]
    pub run_max_memory_mib: Option<u64>,
    /// MP3 bytes one conversion may write, in MiB [default: 512].
    #[arg(long, env = "TAPEDECK_RUN_MAX_OUTPUT_MIB")]
    pub run_max_output_mib: Option<u64>,
    /// Comma-separated addresses or networks of reverse proxies whose
    /// `X-Forwarded-For` names the client (e.g. `10.0.0.0/8,127.0.0.1`).
    #[arg(long, env = "TAPEDECK_TRUSTED_PROXIES")]
    pub trusted_proxies: Option<String>,
    /// SMTP server for notification mail: `smtp://host:25`, `smtp://user:pass@host:587?tls=required`
    /// (STARTTLS) or `smtps://host:465`. Unset: mail is written to the blob store's `outbox/`.
    #[arg(long, env = "TAPEDECK_SMTP_URL")]
    pub smtp_url: Option<String>,
    /// `From` of notification mail.
    #[arg(long, env = "TAPEDECK_MAIL_FROM")]
    pub mail_from: Option<String>,
    /// Comma-separated non-public addresses/networks webhooks may reach anyway
    /// (e.g. `10.0.0.0/8,127.0.0.1`).
    #[arg(long, env = "TAPEDECK_WEBHOOK_ALLOW")]
    pub webhook_allow: Option<String>,
    /// Server defaults of the tenant limits, `name=value,...` (e.g.
    /// `jobs_per_minute=60,max_running=4`); a tenant's own limits can only be lower.
    #[arg(long, env = "TAPEDECK_TENANT_DEFAULTS")]
    pub tenant_defaults: Option<String>,
    /// The operator credential for `/v1/admin/...` (at least 16 characters). Unset: one
    /// is generated on first start, stored hashed in Redis and printed once.
    #[arg(long, env = "TAPEDECK_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Benchmarks only: also serve `GET /bench/unauthenticated/jobs/{id}`, the job lookup
    /// without a token, to measure what authentication costs. Never in production.
    #[arg(long, env = "TAPEDECK_BENCH_ROUTES", num_args = 0..=1, default_missing_value = "true")]
    pub bench_routes: Option<bool>,
}

/// The settings given as flags or environment variables, as clap matched them. Laid over
/// the file's by clap itself ([`clap::FromArgMatches::update_from_arg_matches`] sets
/// exactly the settings it was given), so no setting is merged by hand.
#[derive(Debug, Clone, Default)]
pub struct Given(clap::ArgMatches);

impl clap::Args for Given {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        <Settings as clap::Args>::augment_args(cmd)
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        <Settings as clap::Args>::augment_args_for_update(cmd)
    }
}

impl clap::FromArgMatches for Given {
    fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
        Ok(Given(matches.clone()))
    }

    fn update_from_arg_matches(&mut self, matches: &clap::ArgMatches) -> Result<(), clap::Error> {
        self.0 = matches.clone();
        Ok(())
    }
}

/// Where a process serves Prometheus `/metrics`: on a listener of its own, never on the
/// API's, because the series name every tenant and count their jobs, logins and plugins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsListen {
    /// Not served.
    Off,
    /// Served on `addr`. `configured`: given by the operator, so failing to bind it is an
    /// error; the default (loopback 9464) taken by another process on the same machine
    /// is only a warning.
    At { addr: SocketAddr, configured: bool },
}

impl MetricsListen {
    /// The default address: loopback only.
    pub const DEFAULT: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9464);

    /// `off`, an address, or `None` for the default.
    fn parse(given: Option<&str>) -> anyhow::Result<Self> {
        match given.map(str::trim) {
            None | Some("") => Ok(MetricsListen::At {
                addr: Self::DEFAULT,
                configured: false,
            }),
            Some(off) if off.eq_ignore_ascii_case("off") => Ok(MetricsListen::Off),
            Some(addr) => addr
                .parse()
                .map(|addr| MetricsListen::At {
                    addr,
                    configured: true,
                })
                .map_err(|_| {
                    anyhow::anyhow!(
                        "metrics_listen must be an address such as 127.0.0.1:9464, or off \
                         (got {addr:?})"
                    )
                }),
        }
    }
}

/// The resolved configuration of one `tapedeck serve` process.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub listen: SocketAddr,
    /// Where `/metrics` is served.
    pub metrics_listen: MetricsListen,
    pub data_dir: PathBuf,
    pub role: Role,
    /// `None` (and no cluster nodes): start a managed redis-server.
    pub redis_url: Option<String>,
    /// The nodes of a Redis Cluster to reach it through (empty: not a cluster).
    pub redis_cluster_nodes: Vec<String>,
    pub blob_url: String,
    pub workers: usize,
    pub max_upload_bytes: u64,
    /// SSE streams one user may hold open on this gateway.
    pub max_event_streams_per_user: usize,
    pub max_attempts: u32,
    /// Conformance checks run at once by this process.
    pub max_concurrent_checks: usize,
    /// How long a publish waits for a check slot.
    pub max_check_wait: Duration,
    pub visibility_timeout: Duration,
    pub retry_base: Duration,
    pub token_ttl: Duration,
    /// How long a checked session is trusted without asking Redis (at most 2 s).
    pub session_cache: Duration,
    pub redis_server: PathBuf,
    /// `None`: the embedded converter.
    pub converter: Option<PathBuf>,
    pub shutdown_timeout: Duration,
    /// `None`: the embedded auth component.
    pub auth_plugin: Option<PathBuf>,
    /// `None`: the embedded notifier component.
    pub notifier: Option<PathBuf>,
    /// Folder whose `converter.wasm` / `notifier.wasm` are reloaded when they change.
    pub watch: Option<PathBuf>,
    /// Prefix of the links notifications carry, without a trailing `/`, as configured;
    /// unset: a gateway uses `http://{the address it bound}`, a worker what a gateway
    /// published.
    pub public_url: Option<String>,
    /// Validity of signed download links.
    pub download_link_ttl: Duration,
    /// How each conversion is limited.
    pub limits: LimitPolicy,
    /// Proxies trusted to name the client in `X-Forwarded-For`.
    pub trusted_proxies: Vec<IpNet>,
    pub smtp_url: Option<String>,
    pub mail_from: Option<String>,
    /// Non-public networks webhooks may reach anyway.
    pub webhook_allow: Vec<IpNet>,
    /// Server defaults of the tenant limits.
    pub tenant_defaults: TenantLimits,
    /// The operator credential, if configured.
    pub admin_token: Option<String>,
    pub bench_routes: bool,
}

/// The conversion limits the settings give, over [`LimitPolicy::default`].
fn limit_policy(s: &Settings) -> anyhow::Result<LimitPolicy> {
    let defaults = LimitPolicy::default();
    let seconds = |v: Option<f64>, name: &str, default: Duration| match v {
        None => Ok(default),
        Some(v) => Duration::try_from_secs_f64(v)
            .map_err(|_| anyhow::anyhow!("{name} must be a number of seconds, 0 or more")),
    };
    let mib = |v: Option<u64>, name: &str, default: u64| match v {
        None => Ok(default),
        Some(0) => anyhow::bail!("{name} must be at least 1"),
        Some(v) => v
            .checked_mul(1 << 20)
            .ok_or_else(|| anyhow::anyhow!("{name} is too large")),
    };
    let policy = LimitPolicy {
        max_input: None,
        set_by_tenant: Default::default(),
        cpu_base: seconds(s.run_cpu_base_secs, "run_cpu_base_secs", defaults.cpu_base)?,
        cpu_per_audio_minute: seconds(
            s.run_cpu_secs_per_minute,
            "run_cpu_secs_per_minute",
            defaults.cpu_per_audio_minute,
        )?,
        cpu_max: seconds(s.run_cpu_max_secs, "run_cpu_max_secs", defaults.cpu_max)?,
        wall_max: seconds(s.run_wall_max_secs, "run_wall_max_secs", defaults.wall_max)?,
        max_memory_bytes: mib(
            s.run_max_memory_mib,
            "run_max_memory_mib",
            defaults.max_memory_bytes,
        )?,
        max_output_bytes: mib(
            s.run_max_output_mib,
            "run_max_output_mib",
            defaults.max_output_bytes,
        )?,
    };
    if policy.cpu_max.is_zero() || policy.cpu_base > policy.cpu_max {
        anyhow::bail!("run_cpu_max_secs must be above 0 and at least run_cpu_base_secs");
    }
    if policy.wall_max.is_zero() {
        anyhow::bail!("run_wall_max_secs must be above 0");
    }
    Ok(policy)
}

/// `redis_cluster_nodes` as a list; refused with `redis_url`, or with a node that is
/// not a `redis://` / `rediss://` URL.
fn cluster_nodes(s: &Settings) -> anyhow::Result<Vec<String>> {
    let nodes: Vec<String> = s
        .redis_cluster_nodes
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .collect();
    if nodes.is_empty() {
        return Ok(nodes);
    }
    if s.redis_url.as_deref().is_some_and(|u| !u.is_empty()) {
        anyhow::bail!(
            "redis_url and redis_cluster_nodes are exclusive: set one (REDIS_URL or \
             TAPEDECK_REDIS_CLUSTER_NODES)"
        );
    }
    for node in &nodes {
        if !(node.starts_with("redis://") || node.starts_with("rediss://")) {
            anyhow::bail!("redis_cluster_nodes: {node:?} is not a redis:// or rediss:// URL");
        }
    }
    Ok(nodes)
}

impl ServiceConfig {
    /// Resolves `given` (flags/env) over the TOML file at `file`, if any, over defaults.
    pub fn resolve(given: &Given, file: Option<&Path>) -> anyhow::Result<Self> {
        let mut s: Settings = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?
            }
            None => Settings::default(),
        };
        s.update_from_arg_matches(&given.0)?;
        let limits = limit_policy(&s)?;
        let redis_cluster_nodes = cluster_nodes(&s)?;
        let data_dir = s.data_dir.unwrap_or_else(|| PathBuf::from("data"));
        let blob_url = s
            .blob_url
            .unwrap_or_else(|| data_dir.join("blobs").display().to_string());
        let listen = s
            .listen
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
        let config = ServiceConfig {
            listen,
            metrics_listen: MetricsListen::parse(s.metrics_listen.as_deref())?,
            role: s.role.unwrap_or(Role::All),
            redis_url: s.redis_url.filter(|u| !u.is_empty()),
            redis_cluster_nodes,
            blob_url,
            workers: s.workers.unwrap_or(2).max(1),
            max_upload_bytes: s.max_upload_bytes.unwrap_or(1 << 30),
            max_event_streams_per_user: s.max_event_streams_per_user.unwrap_or(8).max(1),
            max_attempts: s.max_attempts.unwrap_or(4).max(1),
            max_concurrent_checks: s.max_concurrent_checks.unwrap_or(1).max(1),
            max_check_wait: Duration::from_secs(s.max_check_wait_secs.unwrap_or(30)),
            visibility_timeout: Duration::from_secs(s.visibility_timeout_secs.unwrap_or(60).max(1)),
            retry_base: Duration::from_millis(s.retry_base_ms.unwrap_or(2000)),
            token_ttl: Duration::from_secs(s.token_ttl_secs.unwrap_or(86_400)),
            session_cache: Duration::from_millis(s.session_cache_ms.unwrap_or(1000).min(2000)),
            redis_server: s
                .redis_server
                .unwrap_or_else(|| PathBuf::from("redis-server")),
            converter: s.converter,
            shutdown_timeout: Duration::from_secs(s.shutdown_timeout_secs.unwrap_or(20)),
            auth_plugin: s.auth_plugin,
            notifier: s.notifier,
            watch: s.watch,
            public_url: s
                .public_url
                .filter(|u| !u.is_empty())
                .map(|u| u.trim_end_matches('/').to_owned()),
            download_link_ttl: Duration::from_secs(
                s.download_link_ttl_secs.unwrap_or(7 * 86_400).max(1),
            ),
            limits,
            trusted_proxies: match &s.trusted_proxies {
                Some(list) => tapedeck_model::net::parse_networks(list)
                    .map_err(anyhow::Error::msg)
                    .context("parsing trusted_proxies")?,
                None => Vec::new(),
            },
            smtp_url: s.smtp_url.filter(|u| !u.is_empty()),
            mail_from: s.mail_from.filter(|u| !u.is_empty()),
            webhook_allow: match &s.webhook_allow {
                Some(list) => tapedeck_model::net::parse_networks(list)
                    .map_err(anyhow::Error::msg)
                    .context("parsing webhook_allow")?,
                None => Vec::new(),
            },
            tenant_defaults: TenantLimits::parse_defaults(
                s.tenant_defaults.as_deref().unwrap_or(""),
            )
            .map_err(|e| anyhow::anyhow!("tenant_defaults: {e}"))?,
            admin_token: match s.admin_token.filter(|t| !t.is_empty()) {
                Some(t) if t.len() < 16 => {
                    anyhow::bail!("admin_token must be at least 16 characters")
                }
                other => other,
            },
            bench_routes: s.bench_routes.unwrap_or(false),
            data_dir,
        };
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Args;

    /// `tapedeck serve ARGS` as clap matches it, without the environment (the
    /// environment layer is clap's own `env` support, tested end to end in e2e `config`).
    fn given(args: &[&str]) -> Given {
        let cmd = Given::augment_args(clap::Command::new("serve"))
            .mut_args(|arg| arg.env(None::<&'static str>));
        let argv = std::iter::once("serve").chain(args.iter().copied());
        Given(cmd.try_get_matches_from(argv).expect("valid flags"))
    }

    fn none() -> Given {
        given(&[])
    }

    #[test]
    fn cluster_nodes_are_a_list_exclusive_with_the_url() {
        let nodes = ["--redis-cluster-nodes", "redis://a:7001, redis://b:7002,"];
        let c = ServiceConfig::resolve(&given(&nodes), None).unwrap();
        assert_eq!(c.redis_cluster_nodes, ["redis://a:7001", "redis://b:7002"]);
        assert!(c.redis_url.is_none());
        let both = given(&[&nodes[..], &["--redis-url", "redis://a:6379"]].concat());
        let e = ServiceConfig::resolve(&both, None).unwrap_err().to_string();
        assert!(e.contains("exclusive"), "{e}");
        let bad = given(&["--redis-cluster-nodes", "a:7001"]);
        assert!(ServiceConfig::resolve(&bad, None).is_err());
    }

    #[test]
    fn flags_beat_file_beat_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tapedeck.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9000\"\nworkers = 7\nrole = \"worker\"\n",
        )
        .unwrap();
        let c = ServiceConfig::resolve(&given(&["--workers", "3"]), Some(&file)).unwrap();
        assert_eq!(c.listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(c.workers, 3);
        assert_eq!(c.role, Role::Worker);
        assert_eq!(c.data_dir, PathBuf::from("data"));
        assert_eq!(c.blob_url, "data/blobs");
        assert!(c.redis_url.is_none());
        assert_eq!(c.limits, LimitPolicy::default());
    }

    #[test]
    fn run_limits_are_settings() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tapedeck.toml");
        std::fs::write(
            &file,
            "run_cpu_base_secs = 1.5\nrun_cpu_secs_per_minute = 0.5\nrun_max_memory_mib = 16\n",
        )
        .unwrap();
        let c = ServiceConfig::resolve(&given(&["--run-cpu-max-secs", "20"]), Some(&file)).unwrap();
        assert_eq!(c.limits.cpu_base, Duration::from_millis(1500));
        assert_eq!(c.limits.cpu_per_audio_minute, Duration::from_millis(500));
        assert_eq!(c.limits.cpu_max, Duration::from_secs(20));
        assert_eq!(c.limits.max_memory_bytes, 16 << 20);
        let bad = given(&["--run-cpu-base-secs=-1"]);
        assert!(ServiceConfig::resolve(&bad, None).is_err());
        let bad = given(&["--run-cpu-base-secs", "10", "--run-cpu-max-secs", "5"]);
        assert!(ServiceConfig::resolve(&bad, None).is_err());
        assert_eq!(c.limits.wall_max, Duration::from_secs(1800));
        let c = ServiceConfig::resolve(&given(&["--run-wall-max-secs", "3"]), None).unwrap();
        assert_eq!(
            c.limits.limits_for(None).wall_clock(),
            Duration::from_secs(3)
        );
        let bad = given(&["--run-wall-max-secs", "0"]);
        assert!(ServiceConfig::resolve(&bad, None).is_err());
    }

    #[test]
    fn metrics_listen_defaults_to_loopback_and_can_be_off() {
        let c = ServiceConfig::resolve(&none(), None).unwrap();
        assert_eq!(
            c.metrics_listen,
            MetricsListen::At {
                addr: "127.0.0.1:9464".parse().unwrap(),
                configured: false
            }
        );
        let at = |v: &str| given(&["--metrics-listen", v]);
        let c = ServiceConfig::resolve(&at("OFF"), None).unwrap();
        assert_eq!(c.metrics_listen, MetricsListen::Off);
        let c = ServiceConfig::resolve(&at("0.0.0.0:9100"), None).unwrap();
        assert_eq!(
            c.metrics_listen,
            MetricsListen::At {
                addr: "0.0.0.0:9100".parse().unwrap(),
                configured: true
            }
        );
        assert!(ServiceConfig::resolve(&at("9100"), None).is_err());
    }

    #[test]
    fn unknown_file_keys_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tapedeck.toml");
        std::fs::write(&file, "listne = \"x\"\n").unwrap();
        assert!(ServiceConfig::resolve(&none(), Some(&file)).is_err());
    }
}
