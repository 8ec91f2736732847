//! The wasmtime `Engine` of a runtime, its epoch ticker, and the on-disk compile cache.
//!
//! Contact points: `PluginRuntime` (mod.rs) owns one `CompiledCache` per configuration;
//! the subprocess runner (`subprocess.rs`) rebuilds the same engine with
//! [`engine_for`] so it can load the artifacts written here.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Config, Engine, OptLevel};

use super::Isolation;
use super::error::LoadError;

/// How often the in-process ticker advances the epoch: the granularity of CPU limits in
/// [`Isolation::InProcess`] mode.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// The deepest wasm call stack a guest may use before it traps with a stack overflow.
const MAX_WASM_STACK: usize = 512 * 1024;

/// Builds the engine for an isolation mode, with Cranelift's per-function cache in
/// `functions` if given (it does not change what is compiled, nor the compatibility hash).
///
/// The subprocess runner calls this too, and must get the same compatibility hash as the
/// parent that compiled the artifact: keep every setting a pure function of `isolation`.
pub(crate) fn engine_for(
    isolation: Isolation,
    functions: Option<std::sync::Arc<FunctionCache>>,
) -> wasmtime::Result<Engine> {
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .cranelift_opt_level(OptLevel::Speed)
        .max_wasm_stack(MAX_WASM_STACK)
        // Only in-process runs need interruption checks in the generated code (~35% of
        // the converter's run time, see shared/notes/wasm-build-facts.md); a subprocess is
        // stopped by RLIMIT_CPU instead.
        .epoch_interruption(isolation == Isolation::InProcess);
    // `TAPEDECK_WASM_PROFILE=perfmap` writes /tmp/perf-<pid>.map so `perf report` names
    // guest functions (a diagnostic; it does not change the generated code).
    if std::env::var("TAPEDECK_WASM_PROFILE").as_deref() == Ok("perfmap") {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    if let Some(functions) = functions {
        config.enable_incremental_compilation(functions)?;
    }
    Engine::new(&config)
}

/// Cranelift's incremental cache on disk: one file per compiled function, named by the
/// sha256 of Cranelift's key (which hashes the function's IR and the compiler's
/// settings), in 256 subfolders. An entry is the sha256 of its value, then the value:
/// written without an fsync each (a Python component has ~14,000 functions), so a file
/// a crash left torn is recognised and compiled again. Only ever used in a directory
/// private to this user: an entry is machine code.
#[derive(Debug)]
pub(crate) struct FunctionCache {
    dir: PathBuf,
    /// Functions found in the cache, and compiled, since this cache was opened.
    hits: std::sync::atomic::AtomicU64,
    misses: std::sync::atomic::AtomicU64,
}

impl FunctionCache {
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            hits: Default::default(),
            misses: Default::default(),
        }
    }

    /// Functions reused from the cache, of all functions compiled, since it was opened.
    pub fn reused(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let hits = self.hits.load(Relaxed);
        (hits, hits + self.misses.load(Relaxed))
    }

    fn path(&self, key: &[u8]) -> PathBuf {
        let name = hex::encode(Sha256::digest(key));
        self.dir.join(&name[..2]).join(format!("{name}.fn"))
    }
}

impl wasmtime::CacheStore for FunctionCache {
    fn get(&self, key: &[u8]) -> Option<std::borrow::Cow<'_, [u8]>> {
        use std::sync::atomic::Ordering::Relaxed;
        let path = self.path(key);
        let found = fs::read(&path)
            .ok()
            .filter(|b| b.len() >= 32 && Sha256::digest(&b[32..]).as_slice() == &b[..32]);
        let Some(mut bytes) = found else {
            self.misses.fetch_add(1, Relaxed);
            return None;
        };
        self.hits.fetch_add(1, Relaxed);
        touch(&path);
        bytes.drain(..32);
        Some(bytes.into())
    }

    fn insert(&self, key: &[u8], value: Vec<u8>) -> bool {
        let path = self.path(key);
        let dir = path.parent().expect("entries live in a subfolder");
        let written = (|| {
            fs::create_dir_all(dir)?;
            let mut temp = tempfile::NamedTempFile::new_in(dir)?;
            temp.write_all(&Sha256::digest(&value))?;
            temp.write_all(&value)?;
            temp.persist(&path).map_err(|e| e.error)?;
            std::io::Result::Ok(())
        })();
        written.is_ok()
    }
}

/// The epoch deadline (in ticks from now) that enforces `cpu_time`: at least one tick.
pub(crate) fn epoch_ticks(cpu_time: Duration) -> u64 {
    let ticks = cpu_time.as_nanos().div_ceil(EPOCH_TICK.as_nanos()).max(1);
    u64::try_from(ticks).unwrap_or(u64::MAX)
}

/// Advances an engine's epoch every [`EPOCH_TICK`] until the engine is dropped.
pub(crate) fn spawn_epoch_ticker(engine: &Engine) -> std::io::Result<()> {
    let weak = engine.weak();
    thread::Builder::new()
        .name("tapedeck-epoch".into())
        .spawn(move || {
            // Holding only a weak reference lets the engine (and so this thread) end.
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                thread::sleep(EPOCH_TICK);
            }
        })
        .map(drop)
}

/// Whether a load found its artifact on disk or had to compile it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// `<cache_dir>/<key>.cwasm` existed and was loaded without compiling.
    Hit,
    /// The component was compiled and its artifact written to the cache.
    Compiled,
}

/// A compiled component and where it came from.
pub(crate) struct CompiledComponent {
    pub component: Component,
    /// sha256 of the component's bytes, hex: its content address.
    pub digest: String,
    /// The `.cwasm` file this component was loaded from.
    pub artifact: PathBuf,
    pub outcome: CacheOutcome,
}

/// Compiles components once per engine configuration and keeps the artifacts on disk.
pub(crate) struct CompileCache {
    /// The engine every artifact in this cache is compiled for.
    pub engine: Engine,
    /// Directory of `<key>.cwasm` files; created on first use.
    dir: PathBuf,
}

impl CompileCache {
    pub fn new(engine: Engine, dir: PathBuf) -> Self {
        Self { engine, dir }
    }

    /// Loads `bytes` as a component, from the cache if it has been compiled before.
    pub fn load(&self, bytes: &[u8]) -> Result<CompiledComponent, LoadError> {
        let digest = hex::encode(Sha256::digest(bytes));
        let artifact = self.artifact_of(&digest);
        if artifact.exists() {
            match deserialize(&self.engine, &artifact) {
                Ok(component) => {
                    // Recently used artifacts are the last that pruning removes.
                    touch(&artifact);
                    return Ok(CompiledComponent {
                        component,
                        digest,
                        artifact,
                        outcome: CacheOutcome::Hit,
                    });
                }
                // A truncated or foreign file: recompile and replace it.
                Err(error) => tracing::warn!(
                    artifact = %artifact.display(),
                    "ignoring unreadable compiled artifact: {error:#}"
                ),
            }
        }
        let compiled = self
            .engine
            .precompile_component(bytes)
            .map_err(|e| LoadError::Compile(format!("{e:#}")))?;
        write_atomically(&self.dir, &artifact, &compiled).map_err(|source| LoadError::Cache {
            path: artifact.clone(),
            source,
        })?;
        let component = deserialize(&self.engine, &artifact)
            .map_err(|e| LoadError::Compile(format!("{e:#}")))?;
        Ok(CompiledComponent {
            component,
            digest,
            artifact,
            outcome: CacheOutcome::Compiled,
        })
    }

    /// Where the artifact of the component with this digest is (or would be).
    pub fn artifact_of(&self, digest: &str) -> PathBuf {
        self.dir.join(format!("{}.cwasm", self.key(digest)))
    }

    /// The cache key: sha256 of the component digest and the engine's compatibility hash,
    /// so an upgraded wasmtime or a changed `Config` never picks up a stale artifact.
    fn key(&self, digest: &str) -> String {
        let mut hasher = Sha256Hasher(Sha256::new());
        digest.hash(&mut hasher);
        self.engine
            .precompile_compatibility_hash()
            .hash(&mut hasher);
        hex::encode(hasher.0.finalize())
    }
}

/// Loads an artifact that this process (or its parent) wrote into its own cache directory.
pub(crate) fn deserialize(engine: &Engine, artifact: &Path) -> wasmtime::Result<Component> {
    // SAFETY: `deserialize_file` trusts the file to be an artifact wasmtime produced, as
    // it maps its machine code as executable. We only ever pass paths inside our cache
    // directory whose files we wrote ourselves with `precompile_component`, atomically
    // (temp file + rename), so a file is either complete or absent; wasmtime still checks
    // its header and the engine's compatibility before using it. The cache directory must
    // be private to the service's user (as `~/.cache` is).
    unsafe { Component::deserialize_file(engine, artifact) }
}

/// Marks an artifact as just used (best effort: a read-only cache still serves).
fn touch(artifact: &Path) {
    if let Ok(file) = fs::File::options().write(true).open(artifact) {
        let _ = file.set_modified(std::time::SystemTime::now());
    }
}

/// Removes the least recently used artifacts of a cache directory (components, `.cwasm`,
/// and Cranelift's per-function entries, `functions/*/*.fn`) until the rest take at most
/// `keep_bytes`; returns the bytes removed. Nothing else in the directory is touched. A
/// removed artifact is only compiled again when next used, and a run that has one mapped
/// keeps its pages.
pub fn prune(dir: &Path, keep_bytes: u64) -> std::io::Result<u64> {
    let mut artifacts = Vec::new();
    let mut collect = |dir: &Path, extension: &str| -> std::io::Result<()> {
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let path = entry.path();
            if path.extension().is_some_and(|e| e == extension) {
                let meta = entry.metadata()?;
                if meta.is_file() {
                    artifacts.push((meta.modified()?, meta.len(), path));
                }
            }
        }
        Ok(())
    };
    collect(dir, "cwasm")?;
    if let Ok(shards) = fs::read_dir(dir.join("functions")) {
        for shard in shards {
            let shard = shard?.path();
            if shard.is_dir() {
                collect(&shard, "fn")?;
            }
        }
    }
    // Newest first: keep from the front, remove what no longer fits.
    artifacts.sort_by_key(|a| std::cmp::Reverse(a.0));
    let (mut kept, mut removed) = (0u64, 0u64);
    for (_, len, path) in artifacts {
        if kept.saturating_add(len) <= keep_bytes {
            kept += len;
        } else {
            match fs::remove_file(&path) {
                Ok(()) => removed += len,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(removed)
}

/// Writes `bytes` to `path` so that readers see either no file or the whole file.
fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    fs::create_dir_all(dir)?;
    let mut temp = tempfile::NamedTempFile::new_in(dir)?;
    temp.write_all(bytes)?;
    temp.as_file().sync_all()?;
    temp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Feeds `Hash` implementations into sha256, which unlike `DefaultHasher` is stable.
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        unreachable!("only the full sha256 digest is used")
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_key_depends_on_the_engine_configuration() {
        let dir = PathBuf::from("/nonexistent");
        let sub = CompileCache::new(
            engine_for(Isolation::Subprocess, None).unwrap(),
            dir.clone(),
        );
        let inp = CompileCache::new(engine_for(Isolation::InProcess, None).unwrap(), dir);
        assert_eq!(sub.key("ab"), sub.key("ab"));
        assert_ne!(sub.key("ab"), sub.key("cd"));
        assert_ne!(sub.key("ab"), inp.key("ab"));
    }

    #[test]
    fn the_function_cache_returns_what_it_kept_and_ignores_a_torn_entry() {
        use wasmtime::CacheStore;
        let dir = tempfile::tempdir().unwrap();
        let cache = FunctionCache::new(dir.path().join("functions"));
        assert!(cache.get(b"key").is_none());
        assert!(cache.insert(b"key", b"machine code".to_vec()));
        assert_eq!(cache.get(b"key").as_deref(), Some(&b"machine code"[..]));
        assert_eq!(cache.reused(), (1, 2));
        // A crash left the entry half written: not used, compiled again.
        let path = cache.path(b"key");
        let bytes = fs::read(&path).unwrap();
        fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        assert!(cache.get(b"key").is_none());
        fs::write(&path, b"short").unwrap();
        assert!(cache.get(b"key").is_none());
        assert_eq!(cache.reused(), (1, 4));
        // Pruning counts the entries.
        assert!(cache.insert(b"key", vec![0; 100]));
        assert_eq!(prune(dir.path(), 0).unwrap(), 132);
    }

    #[test]
    fn pruning_removes_the_least_recently_used_artifacts_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let now = std::time::SystemTime::now();
        for (name, age_s) in [("old.cwasm", 300), ("mid.cwasm", 200), ("new.cwasm", 100)] {
            let path = dir.path().join(name);
            fs::write(&path, vec![0u8; 1000]).unwrap();
            let file = fs::File::options().write(true).open(&path).unwrap();
            file.set_modified(now - Duration::from_secs(age_s)).unwrap();
        }
        fs::write(dir.path().join("notes.txt"), vec![0u8; 5000]).unwrap();
        // The old one was just used: it stays, the middle one goes.
        touch(&dir.path().join("old.cwasm"));
        assert_eq!(prune(dir.path(), 2500).unwrap(), 1000);
        let mut left: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["new.cwasm", "notes.txt", "old.cwasm"]);
        assert_eq!(prune(dir.path(), 0).unwrap(), 2000);
        assert_eq!(prune(dir.path(), 0).unwrap(), 0);
    }
}
