//! `tapedeck serve`: wires configuration, Redis (managed or shared), the blob store,
//! the authenticator, the HTTP gateway and the conversion workers into one process, and
//! shuts them down gracefully on SIGTERM / Ctrl-C.
//!
//! Contact points: `cli` calls [`run`]; tests call [`serve`] with their own shutdown.

pub mod auth;
pub mod managed_redis;
pub mod metrics;
pub mod registry;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::config::{Given, Role, ServiceConfig};
use auth::ComponentAuthenticator;
use axum::serve::ListenerExt;
use managed_redis::ManagedRedis;
use tapedeck_blobs::BlobStore;
use tapedeck_gateway::health::Health;
use tapedeck_gateway::listener::ApiListener;
use tapedeck_gateway::login_guard::LoginGuard;
use tapedeck_gateway::{AppState, app};
use tapedeck_model::notify::Composer;
use tapedeck_model::stage::Stage;
use tapedeck_notify::{self as notify, NotifierConfig};
use tapedeck_runtime::adapters::ComponentConverter;
use tapedeck_runtime::{Isolation, PluginRuntime, RuntimeConfig};
use tapedeck_store::links::LinkSigner;
use tapedeck_store::queue::{JobQueue, PipelinePolicy};
use tapedeck_store::tenants::ensure_default_tenant;
use tapedeck_store::users::{UserStore, load_or_create_signing_key};
use tapedeck_worker::{Converter, Worker, WorkerSettings};

/// Arguments of `tapedeck serve` (see `config` for every setting and its env var).
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Optional TOML file with the same settings (flags and env vars win).
    #[arg(long, env = "TAPEDECK_CONFIG")]
    pub config: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub settings: Given,
}

/// Runs the service until SIGTERM or Ctrl-C, converting with the converter component
/// (`embedded` unless `--converter` names another). Logging is set up by the caller
/// (`cli::run`).
pub fn run(args: ServeArgs, embedded: &'static [u8]) -> anyhow::Result<()> {
    // Opened before anything could replace the binary on disk (an upgrade): plugin
    // runners are always this very binary.
    tapedeck_runtime::running_executable()
        .context("opening this executable to run plugins with")?;
    let config = ServiceConfig::resolve(&args.settings, args.config.as_deref())?;
    log_start(&config);
    prepare_data_dir(&config.data_dir)?;
    let converter: Option<Stage<dyn Converter>> = if config.role.runs_workers() {
        Some(load_converter(&config, embedded)?)
    } else {
        None
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(serve(config, converter, shutdown_signal()));
    // `serve` has cancelled every conversion; whatever blocking work is still on its way
    // out (a runner being reaped, a publish check) gets a moment, then the process exits
    // regardless, its plugin runners with it (they die with their parent).
    runtime.shutdown_timeout(Duration::from_secs(2));
    result
}

/// Makes the data dir private to this process's user and checks that it can write in
/// it, naming it if not. From here on every file and directory the process (and its
/// children: the managed redis-server, plugin runners) creates is 0600 / 0700 whatever
/// umask it was started with: uploads, MP3s, the AOF, keys, compiled components, mail.
pub fn prepare_data_dir(dir: &Path) -> anyhow::Result<()> {
    // SAFETY: umask(2) cannot fail; it only changes this process's file creation mask.
    unsafe {
        libc::umask(0o077);
    }
    let fail = |e: std::io::Error| {
        anyhow::anyhow!(
            "the data dir {} is not usable ({e}); set --data-dir / TAPEDECK_DATA_DIR to a \
             writable directory",
            dir.display()
        )
    };
    private_dir(dir).map_err(fail)?;
    tempfile::Builder::new()
        .prefix(".write-check-")
        .tempfile_in(dir)
        .map_err(fail)?;
    Ok(())
}

/// Creates `dir` (and missing parents) with mode 0700, or makes an existing one 0700, so
/// no other local user can list or enter it (files of a data dir written by an older
/// version or under a wider umask become unreachable with it). A directory this user
/// does not own (a volume mounted by the orchestrator) keeps its mode, with a warning.
pub(crate) fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let mode = std::fs::metadata(dir)?.permissions().mode();
    if mode & 0o077 != 0 {
        match std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)) {
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => tracing::warn!(
                dir = %dir.display(),
                mode = format!("{:o}", mode & 0o7777),
                "not the owner of this directory: could not make it private (0700)"
            ),
            other => other?,
        }
    }
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler only fails outside a runtime");
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}

/// Runs the service described by `config` until `shutdown` resolves.
/// `converter` is needed when the role runs workers.
pub async fn serve(
    config: ServiceConfig,
    converter: Option<Stage<dyn Converter>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    prepare_data_dir(&config.data_dir)?;
    let managed = match (&config.redis_url, config.redis_cluster_nodes.is_empty()) {
        (None, true) => Some(ManagedRedis::start(&config.redis_server, &config.data_dir).await?),
        _ => None,
    };
    let result = serve_with_redis(
        &config,
        managed.as_ref().map(|m| m.url()),
        converter,
        shutdown,
    )
    .await;
    if let Some(managed) = managed {
        managed.stop().await;
    }
    result
}

/// The first line an operator reads: where everything is.
fn log_start(config: &ServiceConfig) {
    let redis = match &config.redis_url {
        Some(url) => redacted(url),
        None if !config.redis_cluster_nodes.is_empty() => format!(
            "cluster via {}",
            config
                .redis_cluster_nodes
                .iter()
                .map(|n| redacted(n))
                .collect::<Vec<_>>()
                .join(",")
        ),
        None => format!(
            "managed redis-server in {}",
            config.data_dir.join("redis").display()
        ),
    };
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        listen = %config.listen,
        role = ?config.role,
        redis = %redis,
        blobs = %config.blob_url,
        data_dir = %config.data_dir.display(),
        "tapedeck serve starting"
    );
}

/// A Redis URL without its password.
fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

async fn serve_with_redis(
    config: &ServiceConfig,
    managed_url: Option<&str>,
    converter: Option<Stage<dyn Converter>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let pool = match managed_url.or(config.redis_url.as_deref()) {
        Some(url) => tapedeck_store::Pool::open(url).context("parsing the Redis URL")?,
        None => tapedeck_store::Pool::cluster(&config.redis_cluster_nodes)
            .context("parsing redis_cluster_nodes")?,
    };
    let blobs = BlobStore::open(&config.blob_url).context("opening the blob store")?;
    // Mail without SMTP: in the blob store, so every gateway shows every worker's.
    let outbox = tapedeck_blobs::Outbox::new(blobs.clone());
    let queue = JobQueue::new(
        pool.clone(),
        PipelinePolicy {
            max_attempts: config.max_attempts,
            visibility_timeout: config.visibility_timeout,
            retry_base: config.retry_base,
            max_running_per_tenant: config.tenant_defaults.max_running.unwrap_or(0),
            cpu_seconds_per_hour_per_tenant: config
                .tenant_defaults
                .cpu_seconds_per_hour
                .unwrap_or(0),
        },
    );
    let health = Health {
        pool: pool.clone(),
        blobs: blobs.clone(),
        components_ready: Arc::new(AtomicBool::new(false)),
    };

    // Bound first: with `--listen …:0` the port is the kernel's choice, and links need it.
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let bound = listener.local_addr()?;
    // One line on stdout, for whoever started us (tests bind port 0 and read it).
    println!("listening on http://{bound}");
    let metrics_listener = metrics::bind(config.metrics_listen).await?;
    if let Some(listener) = &metrics_listener {
        // The second line, when metrics are served.
        println!("metrics on http://{}", listener.local_addr()?);
    }
    let public_url = config
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{bound}"));
    // Redis may not be up yet (a compose `depends_on` race, a restart): wait for it,
    // answering the probes meanwhile.
    let mut shutdown = std::pin::pin!(shutdown);
    let Some(listener) = wait_for_redis(&pool, listener, health.clone(), shutdown.as_mut()).await?
    else {
        return Ok(());
    };
    // The plugin registry's keys of an earlier release take their one-slot names (not
    // done, every process would run the built-in components: stop instead).
    let renamed = tapedeck_store::registry::rename_untagged_keys(&pool)
        .await
        .context("renaming the plugin registry's keys of an earlier release")?;
    if renamed > 0 {
        tracing::info!(
            keys = renamed,
            "plugin registry keys renamed to td:{{~plugins}}:…"
        );
    }

    let stop = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    let cache_dir = config.data_dir.join("plugin-cache");
    // One in-process runtime (one engine, one epoch ticker, one compile cache) for the
    // stages that run in this process: auth and the notifier. The converter runs in
    // child processes, compiled for them by its own runtime (`load_converter`).
    let mut in_process =
        RuntimeConfig::new(&cache_dir).context("finding this executable to run plugins with")?;
    in_process.isolation = Isolation::InProcess;
    let in_process = PluginRuntime::new(in_process)?;
    let mut watched = registry::Watched {
        converter: None,
        composer: None,
        auth: None,
    };
    let mut running_worker: Option<Arc<Worker>> = None;
    // A gateway's SSE streams, ended first at shutdown.
    let mut sse: Option<tapedeck_gateway::events::JobEvents> = None;
    let (registry_gate, registry_progress) = registry::Gate::new(pool.clone());
    if config.role.runs_workers() {
        let bytes = component_bytes(
            config.notifier.as_deref(),
            crate::components::DEFAULT_NOTIFIER,
        )?;
        let plugin = in_process.load_notifier(&bytes)?;
        tracing::info!(digest = plugin.digest(), "notifier loaded");
        let composer: Stage<dyn Composer> = Stage::new(plugin.digest().to_owned(), plugin);
        watched.composer = Some(composer.clone());
        let mut notifier = NotifierConfig::new(outbox.clone(), String::new());
        notifier.public_base_url = config.public_url.clone().or_else(|| {
            // In one process the gateway is right here; split, a gateway publishes its URL.
            (config.role == Role::All).then(|| public_url.clone())
        });
        notifier.link_ttl = config.download_link_ttl;
        notifier.visibility_timeout = config.visibility_timeout;
        notifier.smtp_url = config.smtp_url.clone();
        if let Some(from) = &config.mail_from {
            notifier.mail_from = from.clone();
        }
        notifier.webhook_allow = config.webhook_allow.clone();
        if let Some(n) = config.tenant_defaults.notifications_per_hour {
            notifier.default_max_per_hour = u32::try_from(n)
                .map_or(notifier.default_max_per_hour, |n| {
                    n.min(notifier.default_max_per_hour)
                });
        }
        let (pool, stopped) = (pool.clone(), stop.clone());
        tasks.spawn(async move {
            if let Err(e) = notify::run_notifier(pool, composer, notifier, stopped).await {
                tracing::error!(error = %e, "the notifier stopped");
            }
        });
    }
    if config.role.runs_workers() {
        let converter = converter.context("a worker role needs a converter")?;
        watched.converter = Some(converter.clone());
        let scratch_root = config.data_dir.join("scratch");
        tapedeck_worker::clean_stale_scratch(&scratch_root);
        let settings = WorkerSettings {
            slots: config.workers,
            host: tapedeck_store::queue::hostname(),
            scratch_dir: scratch_root.join(std::process::id().to_string()),
            // New work wakes an idle slot at once; this bounds a lost wake-up.
            idle_poll: Duration::from_secs(5),
            limits: config.limits.clone(),
            tenant_defaults: config.tenant_defaults.clone(),
            redis: Some(pool.clone()),
        };
        // Jobs wait until the registry's version is applied for their scope: a worker
        // converts with the active component from its first job.
        let worker = Arc::new(
            Worker::new(queue.clone(), blobs.clone(), converter, settings)
                .with_registry_gate(registry_gate.clone()),
        );
        tasks.spawn(worker.clone().run(stop.clone()));
        running_worker = Some(worker);
    }
    health.components_ready.store(true, Ordering::Release);
    if let (true, Some(dir)) = (config.role.runs_workers(), config.watch.clone()) {
        tasks.spawn(registry::watch_folder(
            dir,
            cache_dir.clone(),
            registry::Watched {
                converter: watched.converter.clone(),
                composer: watched.composer.clone(),
                auth: None,
            },
            stop.clone(),
        ));
    }
    // Every process deletes tenants marked for deletion and expires jobs past retention
    // (one at a time: the passes take a lock in Redis).
    tasks.spawn(tapedeck_worker::janitor::run(
        queue.clone(),
        blobs.clone(),
        tapedeck_worker::janitor::JanitorSettings {
            every: Duration::from_secs(2),
            tenant_defaults: config.tenant_defaults.clone(),
            // Tests only: judge retention as if this much later.
            clock_skew: Duration::from_secs(env_secs("TAPEDECK_TEST_CLOCK_SKEW_SECS").unwrap_or(0)),
            // Retention reads every tenant: once a minute unless tests ask for more.
            retention_every: Duration::from_secs(
                env_secs("TAPEDECK_TEST_RETENTION_SCAN_SECS").unwrap_or(60),
            ),
        },
        stop.clone(),
    ));

    let router = if config.role != Role::Worker {
        ensure_default_tenant(&pool).await?;
        if let Some(token) =
            tapedeck_store::users::ensure_operator_token(&pool, config.admin_token.as_deref())
                .await?
        {
            // Shown once: only its hash is stored.
            eprintln!(
                "operator token (shown once; set TAPEDECK_ADMIN_TOKEN to choose your own): {token}"
            );
        }
        tapedeck_store::links::publish_public_url(&pool, &public_url).await?;
        let key = load_or_create_signing_key(&pool).await?;
        let bytes = component_bytes(
            config.auth_plugin.as_deref(),
            crate::components::DEFAULT_AUTH,
        )?;
        let auth_plugin = in_process.load_auth(&bytes)?;
        tracing::info!(digest = auth_plugin.digest(), "auth stage loaded");
        let auth_digest = auth_plugin.digest().to_owned();
        let auth_stage: Stage<dyn tapedeck_model::auth::Authenticator> = Stage::new(
            auth_digest,
            ComponentAuthenticator::new(
                auth_plugin,
                UserStore::new(pool.clone()),
                key.clone(),
                config.token_ttl,
            )?,
        );
        // Hot swap of the auth stage: a published auth component becomes an
        // authenticator over the same users, key and token lifetime.
        let (users, token_ttl) = (UserStore::new(pool.clone()), config.token_ttl);
        watched.auth = Some(registry::AuthSwap {
            stage: auth_stage.clone(),
            make: Arc::new(move |plugin| {
                Ok(
                    ComponentAuthenticator::new(plugin, users.clone(), key.clone(), token_ttl)?
                        as Arc<dyn tapedeck_model::auth::Authenticator>,
                )
            }),
        });
        // Publishing's checks: a few at a time, limited like jobs, billed to the tenant.
        let plugin_check = Arc::new(crate::plugin_kit::bounded::BoundedCheck::new(
            cache_dir.clone(),
            config.limits.clone(),
            config.tenant_defaults.clone(),
            config.max_concurrent_checks,
            config.max_check_wait,
            queue.clone(),
        ));
        let events = tapedeck_gateway::events::JobEvents::start(pool.clone());
        sse = Some(events.clone());
        let state = AppState {
            pool: pool.clone(),
            events,
            stream_cap: tapedeck_gateway::events::StreamCap::new(config.max_event_streams_per_user),
            queue,
            blobs: blobs.clone(),
            auth: auth_stage,
            guard: LoginGuard::new(pool.clone()),
            sessions: tapedeck_gateway::sessions::SessionGate::new(
                tapedeck_store::sessions::Sessions::new(pool.clone()),
                config.session_cache,
            ),
            max_upload_bytes: config.max_upload_bytes,
            tenant_defaults: Arc::new(config.tenant_defaults.clone()),
            plugin_check,
            health,
            bench_routes: config.bench_routes,
            links: LinkSigner::load_or_create(&mut pool.get().await?).await?,
            trusted_proxies: Arc::new(config.trusted_proxies.clone()),
            webhook_allow: Arc::new(config.webhook_allow.clone()),
            outbox: config.smtp_url.is_none().then(|| outbox.clone()),
        };
        tracing::info!(addr = %listener.local_addr()?, %public_url, "serving the API");
        app(state)
    } else {
        tracing::info!(
            addr = %listener.local_addr()?,
            workers = config.workers,
            "worker running; serving /healthz and /readyz"
        );
        tapedeck_gateway::health::worker_app(health)
    };
    if let (Some(listener), Some(render)) = (metrics_listener, metrics::render(pool.clone())) {
        tasks.spawn(metrics::serve(listener, render, stop.clone()));
    }
    // Hot swap: this process's stages (auth in gateways, converter and notifier in
    // workers) follow what the operator activates.
    tasks.spawn(registry::watch(
        pool.clone(),
        blobs.clone(),
        cache_dir.clone(),
        watched,
        registry_progress,
        stop.clone(),
    ));
    let stopped = stop.clone();
    tasks.spawn(async move {
        let service = router.into_make_service_with_connect_info::<SocketAddr>();
        // hyper's own 414/431 answers in the API's JSON shape; `tap_io` keeps the peer
        // address for `ConnectInfo`.
        let listener = ApiListener(listener).tap_io(|_| ());
        if let Err(e) = axum::serve(listener, service)
            .with_graceful_shutdown(stopped.cancelled_owned())
            .await
        {
            tracing::error!(error = %e, "HTTP server failed");
        }
    });

    shutdown.await;
    // Open event streams end now, each telling its client to reconnect: they would hold
    // the HTTP server's graceful shutdown until the timeout.
    if let Some(events) = &sse {
        events.close();
    }
    stop.cancel();
    let drained = tokio::time::timeout(config.shutdown_timeout, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            "shutdown timed out; handing unfinished conversions back to the queue and \
             stopping their runs"
        );
        if let Some(worker) = &running_worker {
            worker.hand_back().await;
        }
        tasks.abort_all();
    }
    Ok(())
}

/// Compiles (or loads from `{data_dir}/plugin-cache`) the configured converter, or the
/// one built into the binary, as the worker's converter (subprocess isolation).
/// Blocking: compiling can take seconds.
pub fn load_converter(
    config: &ServiceConfig,
    embedded: &'static [u8],
) -> anyhow::Result<Stage<dyn Converter>> {
    let bytes = component_bytes(config.converter.as_deref(), embedded)?;
    let runtime_config = RuntimeConfig::new(config.data_dir.join("plugin-cache"))
        .context("finding this executable to run plugins with")?;
    let plugin = PluginRuntime::new(runtime_config)?.load_converter(&bytes)?;
    tracing::info!(digest = plugin.digest(), "converter loaded");
    let digest = plugin.digest().to_owned();
    Ok(Stage::new(
        digest,
        Arc::new(ComponentConverter::new(plugin)),
    ))
}

/// Compiles (or loads from `cache_dir`) a notifier component in an in-process runtime
/// (its runs are bounded by an epoch deadline).
pub fn load_notifier(cache_dir: &Path, bytes: &[u8]) -> anyhow::Result<Arc<dyn Composer>> {
    let mut config =
        RuntimeConfig::new(cache_dir).context("finding this executable to run plugins with")?;
    config.isolation = Isolation::InProcess;
    let plugin = PluginRuntime::new(config)?.load_notifier(bytes)?;
    tracing::info!(digest = plugin.digest(), "notifier loaded");
    Ok(plugin)
}

/// A whole number of seconds from an environment variable (test knobs).
fn env_secs(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// The component at `path`, or the embedded one.
fn component_bytes(
    path: Option<&std::path::Path>,
    embedded: &'static [u8],
) -> anyhow::Result<std::borrow::Cow<'static, [u8]>> {
    Ok(match path {
        Some(path) => std::fs::read(path)
            .with_context(|| format!("reading the component {}", path.display()))?
            .into(),
        None => embedded.into(),
    })
}

/// Waits until Redis answers, as long as it takes (backoff, a warning once in a while),
/// or until `shutdown` (then `None`). Meanwhile `listener` serves `/healthz` and a
/// `/readyz` that names Redis as the failed check (anything else: 503 with
/// `Retry-After`); once Redis answers, the listener is handed back for the service.
async fn wait_for_redis(
    pool: &tapedeck_store::Pool,
    listener: tokio::net::TcpListener,
    health: Health,
    mut shutdown: std::pin::Pin<&mut (impl Future<Output = ()> + Send)>,
) -> anyhow::Result<Option<tokio::net::TcpListener>> {
    let Err(first) = ping(pool).await else {
        return Ok(Some(listener));
    };
    tracing::warn!(
        error = %first,
        "Redis is not reachable; waiting for it (/readyz answers 503 until then)"
    );
    // Two handles on the one socket: the probes' server stops accepting on its own, and
    // connections arriving meanwhile wait in the backlog for the service.
    let socket = listener.into_std()?;
    let probes = tokio::net::TcpListener::from_std(socket.try_clone()?)?;
    let listener = tokio::net::TcpListener::from_std(socket)?;
    let stop_probes = CancellationToken::new();
    let probes_stop = stop_probes.clone().cancelled_owned();
    let server = tokio::spawn(async move {
        let app = tapedeck_gateway::health::starting_app(health);
        axum::serve(probes, app.into_make_service())
            .with_graceful_shutdown(probes_stop)
            .await
    });
    let mut backoff = tapedeck_model::backoff::Backoff::redis();
    let warnings = tapedeck_model::logs::Throttled::default();
    let reached = loop {
        tokio::select! {
            _ = shutdown.as_mut() => break false,
            _ = tokio::time::sleep(backoff.failed()) => {}
        }
        match ping(pool).await {
            Ok(()) => break true,
            Err(e) => tapedeck_model::warn_throttled!(warnings, "Redis is still not reachable", e),
        }
    };
    stop_probes.cancel();
    // A probe in flight gets a moment to finish; the service takes over the socket.
    let _ = tokio::time::timeout(Duration::from_secs(3), server).await;
    if reached {
        tracing::info!("Redis answers; starting");
    }
    Ok(reached.then_some(listener))
}

/// One `PING`, bounded in time (a Redis that accepts connections but does not answer).
async fn ping(pool: &tapedeck_store::Pool) -> anyhow::Result<()> {
    let answer = tokio::time::timeout(Duration::from_secs(2), async {
        let mut conn = pool.get().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await?;
        Ok::<_, anyhow::Error>(())
    })
    .await;
    answer.unwrap_or_else(|_| Err(anyhow::anyhow!("no answer to PING within 2 s")))
}
