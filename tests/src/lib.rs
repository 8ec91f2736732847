//! Helpers shared by the end-to-end tests: a real redis-server on a free port, real
//! `tapedeck serve` processes, an HTTP client, SSE reading, and MP3 checks with ffprobe.

pub mod chaos;
pub mod cluster;
pub mod probe;

pub use cluster::{ClusterNode, RedisCluster};

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding an ephemeral loopback port")
        .port()
}

/// Waits (10 s at most) until the redis-server `child` answers at `url`: `Some(child)`
/// once the answer comes from it, `None` (child ended) if it exited or another test's
/// server holds the port.
pub(crate) fn own_redis_up(mut child: Child, url: &str) -> Option<Child> {
    let pid = child.id();
    let client = redis::Client::open(url).unwrap();
    let since = Instant::now();
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return None;
        }
        let ours = client
            .get_connection()
            .and_then(|mut c| redis::cmd("INFO").arg("server").query::<String>(&mut c));
        if let Ok(info) = ours {
            if info.contains(&format!("process_id:{pid}\r\n")) {
                return Some(child);
            }
            // Another test's server holds the port: ours will exit.
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        assert!(
            since.elapsed() < Duration::from_secs(10),
            "redis-server did not answer within 10 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A job of `tenant` as an upload makes it (owner `u1`, `bytes` of input under
/// `in/{tenant}/{id}`), for tests that drive the queue directly.
pub fn queued_job(tenant: &str, id: &str, bytes: u64) -> tapedeck::queue::JobRecord {
    let input = tapedeck::queue::JobInput {
        name: "x.m4a".into(),
        bytes,
        key: format!("in/{tenant}/{id}"),
    };
    tapedeck::queue::JobRecord::queued(
        id,
        tenant,
        ("u1", "u@example.com"),
        input,
        Default::default(),
    )
}

/// The queue's policy for tests that drive it directly: 3 attempts, no server caps.
pub fn pipeline_policy(
    visibility_timeout: Duration,
    retry_base: Duration,
) -> tapedeck::queue::PipelinePolicy {
    tapedeck::queue::PipelinePolicy {
        max_attempts: 3,
        visibility_timeout,
        retry_base,
        max_running_per_tenant: 0,
        cpu_seconds_per_hour_per_tenant: 0,
    }
}

/// `../shared/media`, the shared test corpus (referenced in place, never copied). A
/// missing corpus fails the test that needs it: `make test` never passes by skipping.
pub fn media_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/media");
    assert!(
        dir.is_dir(),
        "the test media are missing: {} (the shared corpus, checked out next to the \
         repository)",
        dir.display()
    );
    dir
}

/// `../shared/media/NAME` (test media are referenced in place, never copied).
pub fn media(name: &str) -> PathBuf {
    let path = media_dir().join(name);
    assert!(path.exists(), "missing test medium {}", path.display());
    path
}

/// Fails the test, saying so, unless ffmpeg and ffprobe run (`make setup` installs
/// them): tests that generate or check media never pass by skipping.
pub fn require_ffmpeg() {
    for tool in ["ffmpeg", "ffprobe"] {
        let runs = Command::new(tool)
            .arg("-version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            runs,
            "{tool} is missing: run `make setup` (it installs ffmpeg)"
        );
    }
}

/// The example plugins `make test` builds (`examples/plugins/build.sh DIR`, the folder in
/// `TAPEDECK_PLUGIN_EXAMPLES`; `target/plugins` when unset), with `names` in it. Missing
/// ones fail the test with how to build them, never skip it.
pub fn plugin_examples(names: &[&str]) -> PathBuf {
    let dir = std::env::var_os("TAPEDECK_PLUGIN_EXAMPLES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugins"));
    for name in names {
        assert!(
            dir.join(name).is_file(),
            "{} is missing: build the example plugins with `examples/plugins/build.sh {}` \
             (make test does) or point TAPEDECK_PLUGIN_EXAMPLES at them",
            dir.join(name).display(),
            dir.display()
        );
    }
    dir
}

/// A redis-server child with AOF under its own dir; killed on drop.
pub struct RedisServer {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts redis-server on a free port. Redis cannot bind port 0 and report it, so
    /// a port taken between the probe and the bind (another test's server) is detected
    /// — the server answering must be our child, by pid — and another port is tried.
    pub fn start(dir: &Path) -> Self {
        let mut server = RedisServer {
            port: free_port(),
            dir: dir.to_path_buf(),
            child: None,
        };
        for _ in 0..10 {
            if server.launch() {
                return server;
            }
            server.port = free_port();
        }
        panic!("redis-server did not start on any of 10 ports");
    }

    /// Starts redis-server on `port` (which must be free: a service may already point
    /// there, waiting for it).
    pub fn start_on(dir: &Path, port: u16) -> Self {
        let mut server = RedisServer {
            port,
            dir: dir.to_path_buf(),
            child: None,
        };
        assert!(server.launch(), "redis-server did not start on port {port}");
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILLs redis-server (a crash; with `appendfsync always` nothing acknowledged is
    /// lost). [`RedisServer::start_again`] brings it back on the same port.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts redis-server again on its port, from its AOF (after [`RedisServer::kill`]).
    pub fn start_again(&mut self) {
        let since = Instant::now();
        while !self.launch() {
            assert!(
                since.elapsed() < Duration::from_secs(10),
                "port {} stayed taken",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every command Redis has run since it started (`INFO commandstats`, the sum of
    /// `calls`), this query's own `INFO` included.
    pub fn commands_total(&self) -> u64 {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query(&mut self.conn())
            .unwrap();
        info.lines()
            .filter_map(|l| l.split("calls=").nth(1))
            .filter_map(|rest| rest.split(',').next()?.parse::<u64>().ok())
            .sum()
    }

    /// Starts the child on `self.port`; false (child gone) if the port was taken.
    fn launch(&mut self) -> bool {
        std::fs::create_dir_all(&self.dir).unwrap();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        self.child = own_redis_up(child, &self.url());
        self.child.is_some()
    }

    /// Stops Redis (SIGTERM: it flushes the AOF) and starts it again on the same port.
    pub fn restart(&mut self) {
        self.terminate();
        let since = Instant::now();
        while !self.launch() {
            assert!(
                since.elapsed() < Duration::from_secs(10),
                "port {} stayed taken",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), libc::SIGTERM);
            let _ = child.wait();
        }
    }

    /// A connection pool on this server, as the service's crates take one.
    pub fn pool(&self) -> tapedeck_store::Pool {
        tapedeck_store::Pool::open(&self.url()).unwrap()
    }

    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection()
            .unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a child we spawned.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// Polls `check` until it holds, panicking after `limit`.
pub fn wait_until(limit: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < limit,
            "condition not met within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The `tapedeck-test-serve` binary of this package: cargo builds it next to the
/// `deps/` folder that holds the integration-test executables, and next to the package's
/// other binaries (`chaos`).
pub fn serve_exe() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable has a path");
    let beside = exe.with_file_name("tapedeck-test-serve");
    if beside.exists() {
        return beside;
    }
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executables live in <target>/<profile>/deps");
    let exe = profile_dir.join("tapedeck-test-serve");
    assert!(
        exe.exists(),
        "{} is missing: build the tapedeck-tests bins",
        exe.display()
    );
    exe
}

/// Gives a data dir that has no compile cache yet the built-in components compiled (what
/// a service finds after its first start): the converter, notifier and auth components
/// take ~3 CPU-seconds to compile, paid otherwise by each of the suite's ~200 process
/// starts. Components the tests publish are never shared, so every compile a test is
/// about still happens. The artifacts are made once per build of the components
/// (`<target>/<profile>/test-compile-cache/<their digest>`, one process compiling under a
/// file lock while the others wait) by the same runtimes the service loads them with;
/// wasmtime checks each one against the loading engine, and a mismatch just compiles.
pub fn seed_compile_cache(data_dir: &Path) {
    use std::os::unix::fs::DirBuilderExt;
    let target = data_dir.join("plugin-cache");
    if target.exists() {
        return;
    }
    let shared = built_in_artifacts();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&target)
        .expect("creating the service's compile cache");
    for entry in std::fs::read_dir(shared).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|x| x == "cwasm") {
            std::fs::copy(&path, target.join(path.file_name().unwrap()))
                .expect("copying a compiled built-in component");
        }
    }
}

/// The folder of the built-in components' compiled artifacts, made on first use by
/// `tapedeck-test-serve testkit-compile-built-ins` (this binary does not link the
/// plugin runtime).
fn built_in_artifacts() -> &'static Path {
    use sha2::Digest;
    use tapedeck::components::{DEFAULT_AUTH, DEFAULT_CONVERTER, DEFAULT_NOTIFIER};
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let mut digest = sha2::Sha256::new();
        for bytes in [DEFAULT_AUTH, DEFAULT_CONVERTER, DEFAULT_NOTIFIER] {
            digest.update(sha2::Sha256::digest(bytes));
        }
        let root = serve_exe().with_file_name("test-compile-cache");
        let dir = root.join(&hex::encode(digest.finalize())[..16]);
        std::fs::create_dir_all(&root).unwrap();
        let lock = std::fs::File::create(root.join(".lock")).unwrap();
        // SAFETY: flock(2) on a descriptor we own; released when `lock` is closed.
        let locked = unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) };
        assert_eq!(locked, 0, "locking {}", root.display());
        if !dir.join("complete").exists() {
            let status = Command::new(serve_exe())
                .arg("testkit-compile-built-ins")
                .arg(&dir)
                .status()
                .expect("running tapedeck-test-serve");
            assert!(status.success(), "compiling the built-in components failed");
            std::fs::write(dir.join("complete"), b"").unwrap();
        }
        dir
    })
}

/// Role of a `tapedeck serve` process.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Role {
    All,
    Gateway,
    Worker,
}

/// The mails in the outbox (the service's embedded mail default: `outbox/` of the blob
/// store, `{data_dir}/blobs` unless the test set another), waiting up to `limit` for at
/// least `n`; then `settle` more, so duplicates would show.
pub fn outbox_mails(data_dir: &Path, n: usize, limit: Duration, settle: Duration) -> Vec<String> {
    let read = || -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(data_dir.join("blobs/outbox")) else {
            return Vec::new();
        };
        let mut mails: Vec<(PathBuf, String)> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "eml"))
            .filter_map(|p| std::fs::read_to_string(&p).ok().map(|m| (p, unfold_qp(&m))))
            .collect();
        mails.sort();
        mails.into_iter().map(|(_, m)| m).collect()
    };
    wait_until(limit, || read().len() >= n);
    std::thread::sleep(settle);
    read()
}

/// One request the webhook receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: axum::http::HeaderMap,
    pub body: String,
}

/// An HTTP server on 127.0.0.1 that records the POSTs to `/hook` (answers 204); answers
/// 500 to the first `fail_first` requests.
pub struct Receiver {
    pub port: u16,
    got: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
    /// Requests still to fail with 500.
    pub fail_first: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Receiver {
    pub async fn start() -> Self {
        use std::sync::atomic::Ordering;
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let fail_first = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (g, f) = (got.clone(), fail_first.clone());
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
                let (g, f) = (g.clone(), f.clone());
                async move {
                    if f.load(Ordering::SeqCst) > 0 {
                        f.fetch_sub(1, Ordering::SeqCst);
                        return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    g.lock().unwrap().push(Received { headers, body });
                    axum::http::StatusCode::NO_CONTENT
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            port,
            got,
            fail_first,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    pub fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }
}

/// Undoes quoted-printable's soft line breaks and `=3D`, so tests can search a mail's
/// text (non-ASCII bytes stay encoded).
pub fn unfold_qp(mail: &str) -> String {
    mail.replace("=\r\n", "")
        .replace("=\n", "")
        .replace("=3D", "=")
}

/// Waits until every live process reports the plugin registry's latest version
/// (`GET /v1/admin/plugins/active` with the operator's `op`).
pub async fn wait_all_applied(op: &Api, limit: Duration) {
    wait_for(
        limit,
        "every process on the registry's version",
        async || {
            let active = op.get_json("/v1/admin/plugins/active").await;
            let procs = active["processes"].as_array().unwrap();
            !procs.is_empty() && procs.iter().all(|p| p["version"] == active["version"])
        },
    )
    .await;
}

/// Polls an async `check` until it holds, panicking after `limit`.
pub async fn wait_for(limit: Duration, what: &str, mut check: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A child process killed on drop.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until something listens on 127.0.0.1:`port`.
pub fn wait_port(port: u16, limit: Duration, what: &str) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < limit,
            "{what} did not start listening on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn maildev_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("TAPEDECK_MAILDEV") {
        return path.into();
    }
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tools/node_modules/.bin/maildev");
    assert!(
        path.exists(),
        "maildev is missing: run `make setup` (or set TAPEDECK_MAILDEV)"
    );
    path
}

/// A maildev SMTP server (+ its JSON API), started on demand.
pub struct Maildev {
    pub smtp: u16,
    pub web: u16,
    dir: PathBuf,
    child: Option<ChildGuard>,
}

impl Maildev {
    /// Ports reserved, server not started.
    pub fn new(dir: &Path) -> Self {
        Self {
            smtp: free_port(),
            web: free_port(),
            dir: dir.join("maildev"),
            child: None,
        }
    }

    pub fn started(dir: &Path) -> Self {
        let mut m = Self::new(dir);
        m.start();
        m
    }

    pub fn start(&mut self) {
        std::fs::create_dir_all(&self.dir).unwrap();
        let child = Command::new(maildev_bin())
            .args([
                "--smtp",
                &self.smtp.to_string(),
                "--web",
                &self.web.to_string(),
                "--ip",
                "127.0.0.1",
            ])
            .arg("--mail-directory")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting maildev");
        self.child = Some(ChildGuard(child));
        wait_port(self.smtp, Duration::from_secs(60), "maildev SMTP");
        wait_port(self.web, Duration::from_secs(60), "maildev web");
    }

    pub fn smtp_url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.smtp)
    }

    pub async fn emails(&self) -> Vec<Value> {
        let url = format!("http://127.0.0.1:{}/api/email", self.web);
        match reqwest::get(url).await {
            Ok(r) => r
                .bytes()
                .await
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    }
}

/// Sends `head` (request line and headers, without the blank line), then a chunked body:
/// `prefix`, `filler` bytes of `fill`, `suffix`; reads the answer concurrently and stops
/// sending once it arrives. Returns the status and the body bytes written.
pub fn chunked_post(
    base: &str,
    head: &str,
    prefix: &[u8],
    fill: u8,
    filler: u64,
    suffix: &[u8],
) -> (u16, u64) {
    let addr = base.strip_prefix("http://").unwrap();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let answered = Arc::new(AtomicBool::new(false));
    let reader = {
        let mut s = s.try_clone().unwrap();
        let answered = answered.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1024];
            let n = s.read(&mut buf).unwrap_or(0);
            answered.store(true, Ordering::Release);
            String::from_utf8_lossy(&buf[..n]).into_owned()
        })
    };
    let sent = AtomicU64::new(0);
    let mut w = s.try_clone().unwrap();
    let mut chunk = |bytes: &[u8]| -> bool {
        if answered.load(Ordering::Acquire) {
            return false;
        }
        let ok = w
            .write_all(format!("{:x}\r\n", bytes.len()).as_bytes())
            .and_then(|_| w.write_all(bytes))
            .and_then(|_| w.write_all(b"\r\n"))
            .is_ok();
        if ok {
            sent.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        }
        ok
    };
    let go = s
        .write_all(
            format!("{head}\r\nHost: {addr}\r\nTransfer-Encoding: chunked\r\n\r\n").as_bytes(),
        )
        .is_ok()
        && chunk(prefix);
    if go {
        let block = vec![fill; 1 << 20];
        let mut left = filler;
        while left > 0 {
            let n = left.min(block.len() as u64) as usize;
            if !chunk(&block[..n]) {
                break;
            }
            left -= n as u64;
        }
        if left == 0 && chunk(suffix) {
            let _ = s.write_all(b"0\r\n\r\n");
        }
    }
    let text = reader.join().unwrap();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, sent.load(Ordering::Relaxed))
}

/// One `tapedeck serve` process; killed on drop.
pub struct Service {
    pub child: Child,
    /// `http://127.0.0.1:PORT`: the API, or a worker's health routes.
    pub base: String,
}

/// The `/metrics` listener of each running service started by [`Service::start`], by
/// pid (kept beside `Service` so tests that build one from a child they spawned
/// themselves need not name it).
static METRICS_BASES: std::sync::Mutex<std::collections::BTreeMap<u32, String>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// Options for starting a service process.
pub struct ServiceOptions<'a> {
    pub role: Role,
    /// Empty: `extra` names the Redis, e.g. [`RedisCluster::service_flag`].
    pub redis_url: &'a str,
    pub data_dir: &'a Path,
    /// Extra `--flag value` pairs; `("env:NAME", value)` sets an environment variable.
    pub extra: Vec<(&'a str, String)>,
}

impl Service {
    /// Starts `role` on the Redis at `redis_url` with its data in `data_dir` and `extra`
    /// flags (see [`ServiceOptions`]), as [`Service::start`] does.
    pub fn role(role: Role, redis_url: &str, data_dir: &Path, extra: Vec<(&str, String)>) -> Self {
        Self::start(ServiceOptions {
            role,
            redis_url,
            data_dir,
            extra,
        })
    }

    /// Starts the process on port 0 (no free-port race: the kernel picks, the service
    /// prints `listening on http://ADDR` on stdout) and waits until it is ready. Its
    /// metrics listener is on port 0 too (`metrics on http://ADDR`, the second line),
    /// unless `extra` sets `metrics-listen`.
    pub fn start(opts: ServiceOptions<'_>) -> Self {
        let service = Self::spawn(opts, None);
        service.wait_ready(Duration::from_secs(30));
        service
    }

    /// Waits until `/readyz` answers 200.
    pub fn wait_ready(&self, limit: Duration) {
        let url = format!("{}/readyz", self.base);
        wait_until(limit, || reqwest_blocking_ok(&url));
    }

    /// Starts the process as [`Service::start`] does, its stderr (the log) written to
    /// `log` if given, and returns once it listens, without waiting until it is ready.
    pub fn spawn(opts: ServiceOptions<'_>, log: Option<&Path>) -> Self {
        let role = match opts.role {
            Role::All => "all",
            Role::Gateway => "gateway",
            Role::Worker => "worker",
        };
        let blobs = opts.data_dir.join("blobs");
        seed_compile_cache(opts.data_dir);
        let mut cmd = Command::new(serve_exe());
        cmd.arg("serve")
            .args(["--role", role, "--listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(opts.data_dir)
            .env("RUST_LOG", "warn")
            .env_remove("TAPEDECK_CONFIG")
            .stdout(Stdio::piped());
        if !opts.redis_url.is_empty() {
            cmd.args(["--redis-url", opts.redis_url]);
        }
        if !opts.extra.iter().any(|(flag, _)| *flag == "blob-url") {
            cmd.arg("--blob-url").arg(&blobs);
        }
        let metrics = match opts
            .extra
            .iter()
            .find(|(flag, _)| *flag == "metrics-listen")
        {
            Some((_, value)) => value != "off",
            None => {
                cmd.args(["--metrics-listen", "127.0.0.1:0"]);
                true
            }
        };
        for (flag, value) in &opts.extra {
            match flag.strip_prefix("env:") {
                Some(var) => cmd.env(var, value),
                None => cmd.arg(format!("--{flag}")).arg(value),
            };
        }
        if let Some(log) = log {
            cmd.stderr(std::fs::File::create(log).expect("creating the service's log"));
        }
        let mut child = cmd.spawn().expect("spawning tapedeck-test-serve");
        let mut lines = stdout_lines(&mut child, if metrics { 2 } else { 1 }).into_iter();
        let base = address_in(lines.next(), "listening on ");
        if let Some(line) = lines.next() {
            let metrics = address_in(Some(line), "metrics on ");
            METRICS_BASES.lock().unwrap().insert(child.id(), metrics);
        }
        Service { child, base }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `http://127.0.0.1:PORT` of the service's `/metrics` listener.
    pub fn metrics_base(&self) -> String {
        METRICS_BASES
            .lock()
            .unwrap()
            .get(&self.pid())
            .cloned()
            .expect("a service started with its metrics listener")
    }

    /// Its metrics, as Prometheus text.
    pub async fn metrics_text(&self) -> String {
        let r = reqwest::get(format!("{}/metrics", self.metrics_base()))
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "GET /metrics");
        r.text().await.unwrap()
    }

    /// Resident memory of the process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    /// Peak resident memory of the process so far (`VmHWM`), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmHWM:")
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `kB` field of `/proc/{pid}/status`.
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// The pids of `pid`'s child processes.
pub fn children_of(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            found.push(child);
        }
    }
    found
}

/// Whether a process exists and is not a zombie.
pub fn process_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next().map(|st| st != "Z"))
        })
        .unwrap_or(false)
}

impl Drop for Service {
    fn drop(&mut self) {
        METRICS_BASES.lock().unwrap().remove(&self.child.id());
        if let Ok(Some(_)) = self.child.try_wait() {
            // Exited and reaped already: its pid may be another process's by now.
            return;
        }
        signal(self.child.id(), libc::SIGTERM);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
    }
}

/// Reads the child's `listening on http://ADDR` line (its first on stdout); the rest of
/// its stdout is drained in the background.
pub fn listening_on(child: &mut Child) -> String {
    address_in(stdout_lines(child, 1).into_iter().next(), "listening on ")
}

/// The first `n` lines of the child's stdout (waiting up to a minute); the rest is
/// drained in the background.
pub fn stdout_lines(child: &mut Child, n: usize) -> Vec<String> {
    use std::io::BufRead;
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = std::io::BufReader::new(stdout).lines();
        for _ in 0..n {
            match lines.next() {
                Some(Ok(line)) => {
                    let _ = tx.send(line);
                }
                _ => return,
            }
        }
        for _ in lines {}
    });
    (0..n)
        .map(|_| {
            rx.recv_timeout(Duration::from_secs(60))
                .expect("tapedeck serve printed its addresses")
        })
        .collect()
}

/// The URL after `prefix` in a line the service printed.
fn address_in(line: Option<String>, prefix: &str) -> String {
    let line = line.expect("a line on stdout");
    line.strip_prefix(prefix)
        .unwrap_or_else(|| panic!("expected `{prefix}...`, got: {line}"))
        .to_owned()
}

/// A plain `GET` over a raw socket (no async runtime needed): true on a 200.
fn reqwest_blocking_ok(url: &str) -> bool {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let Ok(mut s) = std::net::TcpStream::connect(host) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if write!(
        s,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .is_err()
    {
        return false;
    }
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.starts_with("HTTP/1.1 200")
}

/// An API client bound to one service and (after login) one token.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
    pub token: Option<String>,
}

impl Api {
    pub fn new(base: &str) -> Self {
        Api {
            base: base.to_owned(),
            http: reqwest::Client::new(),
            token: None,
        }
    }

    /// The same client with another bearer token (e.g. the operator's).
    pub fn with_token(&self, token: &str) -> Api {
        Api {
            token: Some(token.to_owned()),
            ..self.clone()
        }
    }

    /// The same client (and token) against another service, e.g. after a restart.
    pub fn rebased(&self, base: &str) -> Api {
        Api {
            base: base.to_owned(),
            ..self.clone()
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.authed(self.http.get(self.url(path)))
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.authed(self.http.post(self.url(path)))
    }

    pub fn put(&self, path: &str) -> reqwest::RequestBuilder {
        self.authed(self.http.put(self.url(path)))
    }

    pub fn patch(&self, path: &str) -> reqwest::RequestBuilder {
        self.authed(self.http.patch(self.url(path)))
    }

    pub fn delete(&self, path: &str) -> reqwest::RequestBuilder {
        self.authed(self.http.delete(self.url(path)))
    }

    fn authed(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    /// Registers `email` in `tenant` and logs in; returns a client holding the token.
    pub async fn signed_up(&self, tenant: &str, email: &str) -> Api {
        let body = json!({"tenant": tenant, "email": email, "password": "correct horse battery"});
        let r = self
            .http
            .post(self.url("/v1/auth/register"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "register: {}", r.text().await.unwrap());
        self.clone().login(tenant, email).await
    }

    /// Signs up `email` in `tenant`, makes the account a tenant admin in Redis directly
    /// (the API way is the operator's `POST /v1/admin/tenants/{tenant}/users`, which needs
    /// the operator token these stacks may not have), and logs it in.
    pub async fn signed_up_admin(&self, redis: &RedisServer, tenant: &str, email: &str) -> Api {
        let _ = self.signed_up(tenant, email).await;
        let _: () = redis::cmd("HSET")
            .arg(tapedeck::store::keys::user_key(tenant, email))
            .arg("role")
            .arg("admin")
            .query(&mut redis.conn())
            .unwrap();
        self.clone().login(tenant, email).await
    }

    /// Logs in an existing account (password as [`Api::signed_up`] sets it).
    pub async fn login(self, tenant: &str, email: &str) -> Api {
        let body = json!({"tenant": tenant, "email": email, "password": "correct horse battery"});
        let v: Value = self
            .http
            .post(self.url("/v1/auth/login"))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        Api {
            token: Some(
                v["token"]
                    .as_str()
                    .expect("login answers a token")
                    .to_owned(),
            ),
            ..self
        }
    }

    /// Uploads a file with multipart; returns the 202 body.
    pub async fn upload(&self, path: &Path, fields: &[(&str, &str)]) -> Value {
        let r = self.upload_raw(path, fields).await;
        assert_eq!(r.status(), 202, "upload {}", path.display());
        r.json().await.unwrap()
    }

    pub async fn upload_raw(&self, path: &Path, fields: &[(&str, &str)]) -> reqwest::Response {
        let bytes = std::fs::read(path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let mut form = reqwest::multipart::Form::new();
        for (k, v) in fields {
            form = form.text(k.to_string(), v.to_string());
        }
        form = form.part(
            "file",
            reqwest::multipart::Part::bytes(bytes).file_name(name),
        );
        self.post("/v1/jobs").multipart(form).send().await.unwrap()
    }

    /// `GET path`, which must answer 200, as JSON.
    pub async fn get_json(&self, path: &str) -> Value {
        let r = self.get(path).send().await.unwrap();
        assert_eq!(r.status(), 200, "GET {path}");
        r.json().await.unwrap()
    }

    /// Uploads a file (multipart) and waits until its job is done or failed; returns the
    /// final job.
    pub async fn upload_and_wait(&self, path: &Path, fields: &[(&str, &str)]) -> Value {
        let id = self.upload_id(path, fields).await;
        self.wait_final(&id, Duration::from_secs(180)).await
    }

    /// Uploads a file (multipart) and returns the new job's id.
    pub async fn upload_id(&self, path: &Path, fields: &[(&str, &str)]) -> String {
        self.upload(path, fields).await["id"]
            .as_str()
            .expect("a job id")
            .to_owned()
    }

    /// Polls the job until a worker is converting it (with `progress` above 0 when
    /// `started` is set).
    pub async fn wait_converting(&self, id: &str, started: bool) -> Value {
        let since = Instant::now();
        loop {
            let job = self.job(id).await;
            let progress = job["progress"].as_f64().unwrap_or(0.0);
            if job["status"] == "converting" && (!started || progress > 0.0) {
                return job;
            }
            assert!(
                since.elapsed() < Duration::from_secs(180),
                "never started: {job}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn job(&self, id: &str) -> Value {
        self.get_json(&format!("/v1/jobs/{id}")).await
    }

    /// Polls the job until it is done or failed.
    pub async fn wait_final(&self, id: &str, limit: Duration) -> Value {
        let start = Instant::now();
        loop {
            let job = self.job(id).await;
            if job["status"] == "done" || job["status"] == "failed" {
                return job;
            }
            assert!(
                start.elapsed() < limit,
                "job {id} not finished in {limit:?}: {job}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Follows `/v1/jobs/{id}/events` to the end; returns `(event, data)` pairs.
    pub async fn follow_events(&self, id: &str) -> Vec<(String, Value)> {
        use futures::StreamExt;
        let r = self
            .get(&format!("/v1/jobs/{id}/events"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "text/event-stream");
        let mut body = r.bytes_stream();
        let mut buf = String::new();
        let mut events = Vec::new();
        while let Some(chunk) = tokio::time::timeout(Duration::from_secs(120), body.next())
            .await
            .expect("SSE stalled")
        {
            buf.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            while let Some(end) = buf.find("\n\n") {
                let block: String = buf.drain(..end + 2).collect();
                let mut event = String::from("message");
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(e) = line.strip_prefix("event:") {
                        event = e.trim().to_owned();
                    } else if let Some(d) = line.strip_prefix("data:") {
                        data.push_str(d.trim_start());
                    }
                }
                if !data.is_empty() {
                    events.push((event, serde_json::from_str(&data).unwrap_or(Value::Null)));
                }
            }
        }
        events
    }
}

/// Writes `bytes` to a temp file and checks it is a real, non-silent MP3; returns its
/// duration in seconds.
pub fn check_mp3(bytes: &[u8]) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.mp3");
    std::fs::write(&path, bytes).unwrap();
    let (duration, codec) = probe::probe_audio(&path).expect("ffprobe reads the MP3");
    assert_eq!(codec, "mp3");
    let out = Command::new("ffmpeg")
        .args(["-v", "info", "-nostdin", "-i"])
        .arg(&path)
        .args(["-af", "volumedetect", "-f", "null", "-"])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    let max_volume: f64 = log
        .lines()
        .find_map(|l| l.split("max_volume:").nth(1))
        .and_then(|v| v.trim().trim_end_matches("dB").trim().parse().ok())
        .expect("volumedetect prints max_volume");
    assert!(
        max_volume > -60.0,
        "MP3 is silent (max volume {max_volume} dB)"
    );
    duration
}

/// An S3-compatible server (moto, installed by `make setup` into target/tools/py) on a
/// free loopback port, with one bucket; killed on drop.
pub struct S3Server {
    child: Child,
    pub endpoint: String,
}

impl S3Server {
    pub fn start(bucket: &str) -> Self {
        let tools = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tools/py");
        assert!(
            tools.join("moto").is_dir(),
            "moto is not installed in {} (run `make setup`)",
            tools.display()
        );
        let port = free_port();
        let child = Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .env("PYTHONPATH", &tools)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting moto's S3 server");
        let endpoint = format!("http://127.0.0.1:{port}");
        wait_until(Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        let status = Command::new("curl")
            .args(["-sf", "-X", "PUT", &format!("{endpoint}/{bucket}")])
            .status()
            .expect("curl creates the bucket");
        assert!(status.success(), "creating bucket {bucket} failed");
        Self { child, endpoint }
    }

    /// The keys in `bucket` (from a ListObjectsV2 answer).
    pub fn keys(&self, bucket: &str) -> Vec<String> {
        let out = Command::new("curl")
            .args(["-sf", &format!("{}/{bucket}?list-type=2", self.endpoint)])
            .output()
            .expect("curl lists the bucket");
        let xml = String::from_utf8_lossy(&out.stdout);
        xml.split("<Key>")
            .skip(1)
            .filter_map(|rest| rest.split_once("</Key>").map(|(k, _)| k.to_owned()))
            .collect()
    }

    /// What `tapedeck serve` needs to use this server (`extra` entries of
    /// [`ServiceOptions`]).
    pub fn service_env(&self, bucket: &str) -> Vec<(&'static str, String)> {
        vec![
            ("blob-url", format!("s3://{bucket}/blobs")),
            ("env:AWS_ENDPOINT", self.endpoint.clone()),
            ("env:AWS_ALLOW_HTTP", "true".into()),
            ("env:AWS_REGION", "us-east-1".into()),
            ("env:AWS_ACCESS_KEY_ID", "testing".into()),
            ("env:AWS_SECRET_ACCESS_KEY", "testing".into()),
        ]
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The multipart form that publishes a component: `stage`, and the bytes as `file`.
pub fn plugin_form(stage: &str, bytes: Vec<u8>) -> reqwest::multipart::Form {
    reqwest::multipart::Form::new()
        .text("stage", stage.to_owned())
        .part(
            "file",
            reqwest::multipart::Part::bytes(bytes).file_name("plugin.wasm"),
        )
}

/// `bytes` (a component) with a custom section named `name` appended: the same code under
/// another digest.
pub fn variant(bytes: &[u8], name: &str) -> Vec<u8> {
    let mut section = vec![u8::try_from(name.len()).expect("a short name")];
    section.extend_from_slice(name.as_bytes());
    section.extend_from_slice(b"test variant");
    let mut out = bytes.to_vec();
    out.push(0); // custom section id
    out.push(u8::try_from(section.len()).expect("a one-byte LEB128 size (< 128)"));
    out.extend_from_slice(&section);
    out
}

/// `haystack` with every `from` replaced by `to`, of the same length (patching a
/// component's data segment).
pub fn replace_all(haystack: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len(), "a patch keeps the length");
    let mut out = haystack.to_vec();
    let mut i = 0;
    while i + from.len() <= out.len() {
        if &out[i..i + from.len()] == from {
            out[i..i + from.len()].copy_from_slice(to);
            i += from.len();
        } else {
            i += 1;
        }
    }
    out
}

/// A file the hostile test converter turns into an "MP3", and the built-in one refuses
/// (it is no audio at all): tells the two apart from the outside.
pub fn not_audio(dir: &Path) -> PathBuf {
    let mut fine = b"\0\0\0\x20ftypisom".to_vec();
    fine.resize(4096, 7);
    let path = dir.join("fine.mp4");
    std::fs::write(&path, &fine).unwrap();
    path
}

/// `tapedeck admin` (this package's build of the command line) against one server, with
/// neither of its environment variables set.
pub struct AdminCli<'a> {
    pub base: &'a str,
    pub token: &'a str,
}

impl AdminCli<'_> {
    /// Runs `tapedeck admin --server BASE --token TOKEN ARGS...`.
    pub fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new(serve_exe())
            .arg("admin")
            .args(["--server", self.base, "--token", self.token])
            .args(args)
            .env_remove("TAPEDECK_SERVER")
            .env_remove("TAPEDECK_ADMIN_TOKEN")
            .output()
            .expect("running tapedeck admin")
    }

    /// Runs a command that must succeed; returns what it printed.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "tapedeck admin {args:?}: {}",
            lossy(&out.stderr)
        );
        lossy(&out.stdout)
    }

    /// Runs a command with `--json` that must succeed; returns the JSON it printed.
    pub fn ok_json(&self, args: &[&str]) -> Value {
        let stdout = self.ok(&[args, &["--json"]].concat());
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {stdout}"))
    }

    /// Runs a command that must fail with exit code 1 and print nothing on stdout;
    /// returns its stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(1),
            "tapedeck admin {args:?}: stdout {} stderr {}",
            lossy(&out.stdout),
            lossy(&out.stderr)
        );
        assert!(out.stdout.is_empty(), "{}", lossy(&out.stdout));
        lossy(&out.stderr)
    }
}

/// Bytes a process printed, as text.
pub fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
