//! `tapedeck serve`: wires configuration, Redis (managed or shared), the blob store,
//! the authenticator, the HTTP gateway and the conversion workers into one process, and
//! shuts them down gracefully on SIGTERM / Ctrl-C.
//!
//! Contact points: `cli` calls [`run`]; tests call [`serve`] with their own shutdown.

pub mod managed_redis;
pub mod plugin_converter;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::config::{ServiceConfig, Settings};
use crate::gateway::auth::{
    ComponentAuthenticator, UserStore, load_auth, load_or_create_signing_key,
};
use crate::gateway::login_guard::LoginGuard;
use crate::gateway::tenants::ensure_default_tenant;
use crate::gateway::{AppState, app};
use crate::notify::{self, NotifierConfig};
use crate::queue::{JobQueue, PipelinePolicy};
use crate::storage::BlobStore;
use crate::worker::{Converter, Worker, WorkerSettings};
use managed_redis::ManagedRedis;

/// Arguments of `tapedeck serve` (see `config` for every setting and its env var).
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Optional TOML file with the same settings (flags and env vars win).
    #[arg(long, env = "TAPEDECK_CONFIG")]
    pub config: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub settings: Settings,
}

/// Runs the service until SIGTERM or Ctrl-C, converting with the converter component
/// (`embedded` unless `--converter` names another).
pub fn run(args: ServeArgs, embedded: &'static [u8]) -> anyhow::Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,tower_http=warn".into()),
        )
        .try_init();
    let config = ServiceConfig::resolve(args.settings, args.config.as_deref())?;
    let converter: Option<Arc<dyn Converter>> = if config.role.runs_workers() {
        Some(Arc::new(plugin_converter::PluginConverter::load(
            &config, embedded,
        )?))
    } else {
        None
    };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(serve(config, converter, shutdown_signal()))
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
    converter: Option<Arc<dyn Converter>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating {}", config.data_dir.display()))?;
    let managed = match &config.redis_url {
        Some(_) => None,
        None => Some(ManagedRedis::start(&config.redis_server, &config.data_dir).await?),
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

async fn serve_with_redis(
    config: &ServiceConfig,
    managed_url: Option<&str>,
    converter: Option<Arc<dyn Converter>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let url = managed_url
        .or(config.redis_url.as_deref())
        .expect("either REDIS_URL or the managed instance is set");
    let mut pool_config = deadpool_redis::Config::from_url(url);
    pool_config.pool = Some(deadpool_redis::PoolConfig::new(64));
    let pool = pool_config
        .create_pool(Some(deadpool_redis::Runtime::Tokio1))
        .context("creating the Redis pool")?;
    wait_for_redis(&pool).await?;
    let redis = redis::Client::open(url).context("parsing the Redis URL")?;
    let blobs = BlobStore::open(&config.blob_url).context("opening the blob store")?;
    let queue = JobQueue::new(
        pool.clone(),
        PipelinePolicy {
            max_attempts: config.max_attempts,
            visibility_timeout: config.visibility_timeout,
            retry_base: config.retry_base,
        },
    );

    let stop = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    let components_ready = Arc::new(AtomicBool::new(false));
    let cache_dir = config.data_dir.join("plugin-cache");
    if config.role.runs_workers() {
        let bytes = component_bytes(config.notifier.as_deref(), notify::DEFAULT_NOTIFIER)?;
        let plugin = notify::load_notifier(&cache_dir, &bytes)?;
        let mut notifier = NotifierConfig::new(&config.data_dir, config.public_url.clone());
        notifier.smtp_url = config.smtp_url.clone();
        if let Some(from) = &config.mail_from {
            notifier.mail_from = from.clone();
        }
        if let Some(list) = &config.webhook_allow {
            notifier.webhook_allow = notify::parse_allow_list(list)?;
        }
        let (pool, stopped) = (pool.clone(), stop.clone());
        tasks.spawn(async move {
            if let Err(e) = notify::run_notifier(pool, plugin, notifier, stopped).await {
                tracing::error!(error = %e, "the notifier stopped");
            }
        });
    }
    if config.role.runs_workers() {
        let converter = converter.context("a worker role needs a converter")?;
        let settings = WorkerSettings {
            slots: config.workers,
            consumer_prefix: format!("{}-{}", hostname(), std::process::id()),
            scratch_dir: config.data_dir.join("scratch"),
            idle_poll: Duration::from_millis(200),
        };
        let worker = Arc::new(Worker::new(
            queue.clone(),
            blobs.clone(),
            converter,
            settings,
        ));
        tasks.spawn(worker.run(stop.clone()));
    }
    components_ready.store(true, Ordering::Release);

    if config.role != crate::config::Role::Worker {
        ensure_default_tenant(&pool).await?;
        let key = load_or_create_signing_key(&pool).await?;
        let bytes = component_bytes(config.auth_plugin.as_deref(), crate::plugins::DEFAULT_AUTH)?;
        let auth_plugin = load_auth(&cache_dir, &bytes)?;
        let state = AppState {
            pool: pool.clone(),
            redis,
            queue,
            blobs,
            auth: ComponentAuthenticator::new(
                auth_plugin,
                UserStore::new(pool.clone()),
                key,
                config.token_ttl,
            )?,
            guard: LoginGuard::new(pool.clone()),
            max_upload_bytes: config.max_upload_bytes,
            components_ready,
            bench_routes: config.bench_routes,
        };
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        tracing::info!(addr = %listener.local_addr()?, role = ?config.role, "serving");
        let stopped = stop.clone();
        tasks.spawn(async move {
            let service = app(state).into_make_service_with_connect_info::<SocketAddr>();
            if let Err(e) = axum::serve(listener, service)
                .with_graceful_shutdown(stopped.cancelled_owned())
                .await
            {
                tracing::error!(error = %e, "HTTP server failed");
            }
        });
    } else {
        tracing::info!(workers = config.workers, "worker running");
    }

    shutdown.await;
    stop.cancel();
    let drained = tokio::time::timeout(config.shutdown_timeout, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            "shutdown timed out; unfinished conversions will be claimed by other workers"
        );
        tasks.abort_all();
    }
    Ok(())
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

async fn wait_for_redis(pool: &deadpool_redis::Pool) -> anyhow::Result<()> {
    let mut last = None;
    for _ in 0..50 {
        match pool.get().await {
            Ok(mut conn) => match redis::cmd("PING").query_async::<String>(&mut conn).await {
                Ok(_) => return Ok(()),
                Err(e) => last = Some(e.to_string()),
            },
            Err(e) => last = Some(e.to_string()),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anyhow::bail!("Redis is not reachable: {}", last.unwrap_or_default())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "host".into())
}
