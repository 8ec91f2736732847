//! The plugin registry's host side: checking a published component
//! ([`RuntimeCheck`], the gateway's `PluginCheck`), and keeping this process's stages in
//! step with what the operator activated ([`watch`]): Redis pub/sub for speed, and the
//! version counter polled every second so a missed message heals itself.
//!
//! A swap is `Stage::replace` / `Stage::set_tenant`: a conversion in flight keeps the
//! component it started with (the worker pins it per attempt and records its digest on
//! the job); the next one gets the new component. A component no stage holds any more
//! is dropped from the cache here and unloaded when its last run ends (it is an `Arc`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use tapedeck_blobs::BlobStore;
use tapedeck_model::convert::Converter;
use tapedeck_model::notify::Composer;
use tapedeck_model::plugins::{CheckReport, PluginCheck};
use tapedeck_model::stage::Stage;
use tapedeck_plugins::adapters::ComponentConverter;
use tapedeck_plugins::{Isolation, PluginRuntime, RuntimeConfig};
use tapedeck_store::keys::PLUGIN_CHANNEL;
use tapedeck_store::plugins;

/// Checks components with a fresh runtime of the stage's kind, on a blocking thread.
pub struct RuntimeCheck {
    pub cache_dir: PathBuf,
}

impl PluginCheck for RuntimeCheck {
    fn check<'a>(
        &'a self,
        stage: &'a str,
        bytes: &'a [u8],
    ) -> BoxFuture<'a, Result<CheckReport, String>> {
        let (stage, bytes, cache_dir) = (stage.to_owned(), bytes.to_vec(), self.cache_dir.clone());
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let start = Instant::now();
                let mut config = RuntimeConfig::new(&cache_dir).map_err(|e| e.to_string())?;
                if stage == "notifier" {
                    config.isolation = Isolation::InProcess;
                }
                let runtime = PluginRuntime::new(config).map_err(|e| e.to_string())?;
                match stage.as_str() {
                    "converter" => runtime.load_converter(&bytes).map(|_| ()),
                    "notifier" => runtime.load_notifier(&bytes).map(|_| ()),
                    other => return Err(format!("no registry for the {other} stage")),
                }
                .map_err(|e| e.to_string())?;
                Ok(CheckReport {
                    compile_ms: start.elapsed().as_millis() as u64,
                })
            })
            .await
            .map_err(|e| format!("the check panicked: {e}"))?
        })
    }
}

/// One stage this process runs, and what it started with.
struct Swappable<T: ?Sized> {
    stage: Stage<T>,
    starting: (String, Arc<T>),
    /// Loaded registry components by digest.
    loaded: HashMap<String, Arc<T>>,
}

impl<T: ?Sized> Swappable<T> {
    fn new(stage: Stage<T>) -> Self {
        let now = stage.current();
        Self {
            starting: (now.digest.clone(), now.stage.clone()),
            stage,
            loaded: HashMap::new(),
        }
    }
}

/// What `watch` keeps in step.
pub struct Watched {
    pub converter: Option<Stage<dyn Converter>>,
    pub composer: Option<Stage<dyn Composer>>,
}

/// Local plugin development (`serve --watch DIR`): reloads `DIR/converter.wasm` and
/// `DIR/notifier.wasm` when their size or modification time changes, and swaps them in
/// through the same path as the registry. A file that does not load is reported and the
/// running component stays.
pub async fn watch_folder(
    dir: PathBuf,
    cache_dir: PathBuf,
    stages: Watched,
    stop: CancellationToken,
) {
    let runtimes = match Runtimes::new(&cache_dir) {
        Ok(r) => Arc::new(r),
        Err(e) => {
            tracing::error!(error = %e, "no plugin runtime for --watch");
            return;
        }
    };
    let stamp = |path: &std::path::Path| {
        std::fs::metadata(path)
            .ok()
            .map(|m| (m.len(), m.modified().ok()))
    };
    let (converter_path, notifier_path) = (dir.join("converter.wasm"), dir.join("notifier.wasm"));
    let (mut converter_seen, mut notifier_seen) = (None, None);
    tracing::info!(dir = %dir.display(), "watching for converter.wasm and notifier.wasm");
    loop {
        if let Some(stage) = &stages.converter {
            let now = stamp(&converter_path);
            if now.is_some() && now != converter_seen {
                converter_seen = now;
                let (path, runtimes, stage) =
                    (converter_path.clone(), runtimes.clone(), stage.clone());
                let loaded = tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
                    let bytes = std::fs::read(&path)?;
                    let plugin = runtimes.converter.load_converter(&bytes)?;
                    let digest = plugin.digest().to_owned();
                    stage.replace(digest.clone(), Arc::new(ComponentConverter::new(plugin)));
                    Ok(digest)
                })
                .await;
                match loaded {
                    Ok(Ok(digest)) => tracing::info!(%digest, "converter reloaded from --watch"),
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "converter.wasm did not load; the running one stays")
                    }
                    Err(e) => tracing::warn!(error = %e, "reloading converter.wasm panicked"),
                }
            }
        }
        if let Some(stage) = &stages.composer {
            let now = stamp(&notifier_path);
            if now.is_some() && now != notifier_seen {
                notifier_seen = now;
                let (path, runtimes, stage) =
                    (notifier_path.clone(), runtimes.clone(), stage.clone());
                let loaded = tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
                    let bytes = std::fs::read(&path)?;
                    let plugin = runtimes.notifier.load_notifier(&bytes)?;
                    let digest = plugin.digest().to_owned();
                    stage.replace(digest.clone(), plugin);
                    Ok(digest)
                })
                .await;
                match loaded {
                    Ok(Ok(digest)) => tracing::info!(%digest, "notifier reloaded from --watch"),
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "notifier.wasm did not load; the running one stays")
                    }
                    Err(e) => tracing::warn!(error = %e, "reloading notifier.wasm panicked"),
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(300)) => {}
        }
    }
}

/// Keeps the stages in step with the registry until `stop`.
pub async fn watch(
    pool: deadpool_redis::Pool,
    redis: redis::Client,
    blobs: BlobStore,
    cache_dir: PathBuf,
    stages: Watched,
    stop: CancellationToken,
) {
    let mut converter = stages.converter.map(Swappable::new);
    let mut composer = stages.composer.map(Swappable::new);
    // One runtime per kind for everything the registry loads in this process.
    let runtimes = match Runtimes::new(&cache_dir) {
        Ok(r) => Arc::new(r),
        Err(e) => {
            tracing::error!(error = %e, "no plugin runtime for the registry; hot swap is off");
            return;
        }
    };
    let mut seen = u64::MAX;
    let me = format!(
        "{}-{}",
        tapedeck_store::queue::hostname(),
        std::process::id()
    );
    let mut reported = Instant::now() - Duration::from_secs(60);
    let mut messages = match redis.get_async_pubsub().await {
        Ok(mut pubsub) => match pubsub.subscribe(PLUGIN_CHANNEL).await {
            Ok(()) => Some(pubsub.into_on_message()),
            Err(_) => None,
        },
        Err(_) => None,
    };
    loop {
        match plugins::version(&pool).await {
            Ok(v) if v != seen => {
                match reconcile(&pool, &blobs, &runtimes, &mut converter, &mut composer).await {
                    Ok(()) => {
                        seen = v;
                        reported = Instant::now() - Duration::from_secs(60);
                    }
                    Err(e) => tracing::warn!(error = %e, "could not apply the plugin registry"),
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not read the plugin registry"),
        }
        // Tell operators which version this process runs (and that it is alive).
        if seen != u64::MAX && reported.elapsed() >= Duration::from_secs(5) {
            match plugins::applied(&pool, &me, seen).await {
                Ok(()) => reported = Instant::now(),
                Err(e) => tracing::debug!(error = %e, "could not report the applied version"),
            }
        }
        let tick = tokio::time::sleep(Duration::from_secs(1));
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick => {}
            _ = async {
                match messages.as_mut() {
                    Some(m) => { m.next().await; }
                    None => std::future::pending::<()>().await,
                }
            } => {}
        }
    }
}

async fn fetch(blobs: &BlobStore, digest: &str) -> anyhow::Result<Vec<u8>> {
    let key = plugins::blob_key(digest);
    let size = blobs.size(&key).await?;
    Ok(blobs.read_at(&key, 0, size).await?.to_vec())
}

/// The runtimes registry components load into: converters run in child processes (no
/// epoch checks in their code), notifiers in-process with an epoch deadline.
struct Runtimes {
    converter: PluginRuntime,
    notifier: PluginRuntime,
}

impl Runtimes {
    fn new(cache_dir: &std::path::Path) -> anyhow::Result<Self> {
        let mut in_process = RuntimeConfig::new(cache_dir)?;
        in_process.isolation = Isolation::InProcess;
        Ok(Self {
            converter: PluginRuntime::new(RuntimeConfig::new(cache_dir)?)?,
            notifier: PluginRuntime::new(in_process)?,
        })
    }
}

async fn reconcile(
    pool: &deadpool_redis::Pool,
    blobs: &BlobStore,
    runtimes: &Arc<Runtimes>,
    converter: &mut Option<Swappable<dyn Converter>>,
    composer: &mut Option<Swappable<dyn Composer>>,
) -> anyhow::Result<()> {
    let active = plugins::active(pool).await?;
    if let Some(s) = converter {
        let runtimes = runtimes.clone();
        apply(s, "converter", &active, blobs, move |bytes: Vec<u8>| {
            let plugin = runtimes.converter.load_converter(&bytes)?;
            Ok(Arc::new(ComponentConverter::new(plugin)) as Arc<dyn Converter>)
        })
        .await?;
    }
    if let Some(s) = composer {
        let runtimes = runtimes.clone();
        apply(s, "notifier", &active, blobs, move |bytes: Vec<u8>| {
            let plugin = runtimes.notifier.load_notifier(&bytes)?;
            Ok(plugin as Arc<dyn Composer>)
        })
        .await?;
    }
    Ok(())
}

/// Makes `s` match the activations of `stage_name`: everyone's, then each tenant's.
async fn apply<T: ?Sized + Send + Sync + 'static>(
    s: &mut Swappable<T>,
    stage_name: &str,
    active: &[plugins::Active],
    blobs: &BlobStore,
    load: impl Fn(Vec<u8>) -> anyhow::Result<Arc<T>> + Send + Sync + Clone + 'static,
) -> anyhow::Result<()> {
    let mine: Vec<&plugins::Active> = active.iter().filter(|a| a.stage == stage_name).collect();
    let mut wanted: Vec<String> = mine.iter().filter_map(|a| a.digest.clone()).collect();
    wanted.sort();
    wanted.dedup();
    for digest in &wanted {
        if !s.loaded.contains_key(digest) {
            let bytes = fetch(blobs, digest).await?;
            let load = load.clone();
            let component = tokio::task::spawn_blocking(move || load(bytes)).await??;
            s.loaded.insert(digest.clone(), component);
        }
    }
    let everyone = mine
        .iter()
        .find(|a| a.tenant.is_none())
        .and_then(|a| a.digest.clone());
    let target = match &everyone {
        Some(d) => (d.clone(), s.loaded[d].clone()),
        None => s.starting.clone(),
    };
    if s.stage.current().digest != target.0 {
        tracing::info!(stage = stage_name, digest = %target.0, "component swapped for everyone");
        s.stage.replace(target.0, target.1);
    }
    let per_tenant: HashMap<&str, &str> = mine
        .iter()
        .filter_map(|a| Some((a.tenant.as_deref()?, a.digest.as_deref()?)))
        .collect();
    for (tenant, digest) in &per_tenant {
        let has = s.stage.tenant_digests();
        if !has.iter().any(|(t, d)| t == tenant && d == digest) {
            tracing::info!(
                stage = stage_name,
                tenant,
                digest,
                "component swapped for a tenant"
            );
            s.stage.set_tenant(
                tenant,
                Some((digest.to_string(), s.loaded[*digest].clone())),
            );
        }
    }
    for (tenant, _) in s.stage.tenant_digests() {
        if !per_tenant.contains_key(tenant.as_str()) {
            tracing::info!(
                stage = stage_name,
                tenant,
                "tenant back on everyone's component"
            );
            s.stage.set_tenant(&tenant, None);
        }
    }
    // Unload what no activation names (runs in flight still hold their own `Arc`).
    s.loaded.retain(|d, _| wanted.contains(d));
    Ok(())
}
