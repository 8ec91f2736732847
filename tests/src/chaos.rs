//! The chaos suite: a deployment of real processes — Redis, gateways and
//! workers (each with a data dir of its own, all sharing one blob store), an SMTP sink —
//! taken through hundreds of jobs over several tenants while faults hit it, then checked.
//!
//! Faults come one every [`Plan::fault_every`], in the plan's order: a worker SIGKILLed and
//! restarted, Redis SIGKILLed and restarted on its AOF, a gateway SIGTERMed (with an SSE
//! stream open on it) and restarted, a converter activated and later rolled back, every
//! pub/sub connection dropped (`CLIENT KILL TYPE pubsub`). With
//! [`Plan::kill_until_done`], workers keep being killed until every job is notified.
//!
//! Clients retry an upload that fails (connection refused or cut, 5xx, 429) on the next
//! gateway until it is accepted: a job is an upload that got its 202.
//!
//! Then [`Report`] checks: every accepted job done or failed (none lost, none stuck),
//! every MP3 valid and of its input's length, exactly one stored output per done job,
//! one notification per job (a missing one fails, duplicates are counted), no job run on
//! a converter that was not active during its life, the time each fault took to recover
//! from, Redis commands per job (`INFO commandstats`, summed over restarts) and commands
//! per second per process once idle (a busy loop fails).
//!
//! [`scale`] is the same deployment without faults, timing how many jobs per second 1, 2,
//! 3 ... workers convert.
//!
//! `tests/src/bin/chaos.rs` runs them (`make chaos`); the e2e test `scale::chaos_short`
//! runs [`Plan::short`] in `make test`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use serde_json::{Value, json};
use sha2::Digest;

use crate::{Maildev, RedisCluster, RedisServer, Role, Service, ServiceOptions, media, probe};

/// The operator token every process of the deployment is given.
pub const OPERATOR: &str = "chaos-operator-token-0123456789abcdef";
/// Longest a gateway may take to exit on SIGTERM, an SSE stream open on it.
const MAX_GATEWAY_EXIT_SECS: f64 = 5.0;
/// Password of every client account.
const PASSWORD: &str = "correct horse battery";
/// Short clips, audio only or with video (and one of 20 s): conversions of a second or
/// less.
const INPUTS: &[&str] = &[
    "alac_44k_stereo_itunes__musicmetadata_BethHart.m4a",
    "aac-lc_48k_stereo__lofty_m4a_codec_aac.m4a",
    "aac-lc_44k_stereo_gapless__alfg_audio_aac.m4a",
    "aac-lc_32k_mono__taglib_nonprintable-atom-type.m4a",
    "pcm-sowt_44k_stereo_varsize__androidx_sowt_pcm_variable_sample_size.mp4",
    "aac-lc_22k_mono_video_moovend__bento4_video-h264-001.mp4",
    "aac-lc_48k_stereo_20s__mp4parser_output_audio-2ch-20s.mp4",
];
/// A 213 s song (seconds to convert): the job an SSE stream follows while its gateway
/// is stopped.
const LONG_INPUT: &str = "aac-lc_44k_stereo_music_long__lofty_TempleOS_Hymn.m4a";

/// One fault the suite injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL the next worker (round robin), then start it again on its data dir.
    KillWorker,
    /// SIGKILL Redis, keep it down [`Plan::redis_down`], start it again on its AOF.
    KillRedis,
    /// SIGTERM the next gateway with an SSE stream open on it, then start it again.
    TermGateway,
    /// Activate the published converter for everyone.
    Activate,
    /// Roll the converter back (to the built-in one).
    Rollback,
    /// `CLIENT KILL TYPE pubsub`: every subscription connection dropped at once.
    DropPubsub,
}

impl Fault {
    fn label(self) -> &'static str {
        match self {
            Fault::KillWorker => "SIGKILL worker",
            Fault::KillRedis => "SIGKILL redis",
            Fault::TermGateway => "SIGTERM gateway",
            Fault::Activate => "activate converter",
            Fault::Rollback => "roll back converter",
            Fault::DropPubsub => "CLIENT KILL TYPE pubsub",
        }
    }
}

/// What a run does.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Uploads accepted before the run stops uploading.
    pub jobs: usize,
    /// Tenants, each with its own user and upload client.
    pub tenants: usize,
    pub gateways: usize,
    pub workers: usize,
    /// Conversions at once per worker (`--workers`).
    pub slots: usize,
    /// In order, one every `fault_every` from the first upload.
    pub faults: Vec<Fault>,
    pub fault_every: Duration,
    /// How long Redis stays down when killed.
    pub redis_down: Duration,
    /// Uploads are spread evenly over this.
    pub upload_over: Duration,
    /// After the faults and uploads end, how long every job may take to be notified.
    pub settle_limit: Duration,
    /// After the scripted faults, a worker is killed every `2 × fault_every` until every
    /// job is notified.
    pub kill_until_done: bool,
    /// Window over which idle commands per second are measured.
    pub idle_window: Duration,
    /// Idle Redis commands per second per process above which the run fails (a busy loop).
    pub max_idle_commands_per_process: f64,
    /// A 3-node Redis Cluster instead of one Redis (a Redis kill takes one node down).
    pub cluster: bool,
}

impl Plan {
    /// `make chaos`: 400 jobs over 3 tenants through 2 gateways and 3 workers, uploaded
    /// over the 42 s of faults (about what the workers convert: they stay busy); a worker
    /// killed every 5 s, the other faults in between.
    pub fn full() -> Self {
        use Fault::*;
        Self {
            jobs: 400,
            tenants: 3,
            gateways: 2,
            workers: 3,
            slots: 1,
            faults: vec![
                KillWorker,
                KillRedis,
                KillWorker,
                TermGateway,
                KillWorker,
                Activate,
                KillWorker,
                DropPubsub,
                KillWorker,
                TermGateway,
                KillWorker,
                Rollback,
                KillWorker,
                KillRedis,
                KillWorker,
                DropPubsub,
                KillWorker,
            ],
            fault_every: Duration::from_millis(2500),
            redis_down: Duration::from_secs(2),
            upload_over: Duration::from_secs(42),
            settle_limit: Duration::from_secs(300),
            kill_until_done: true,
            idle_window: Duration::from_secs(10),
            max_idle_commands_per_process: 200.0,
            cluster: false,
        }
    }

    /// The version `make test` runs: 50 jobs, 2 tenants, 1 gateway, 2 workers, each kind
    /// of fault once or twice.
    pub fn short() -> Self {
        use Fault::*;
        Self {
            jobs: 50,
            tenants: 2,
            gateways: 1,
            workers: 2,
            slots: 1,
            faults: vec![
                KillWorker,
                KillRedis,
                Activate,
                DropPubsub,
                TermGateway,
                KillWorker,
                Rollback,
            ],
            fault_every: Duration::from_millis(2500),
            redis_down: Duration::from_millis(1500),
            upload_over: Duration::from_secs(20),
            settle_limit: Duration::from_secs(150),
            kill_until_done: false,
            idle_window: Duration::from_secs(5),
            max_idle_commands_per_process: 200.0,
            cluster: false,
        }
    }
}

/// Unix time in seconds.
fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// One `tapedeck serve` process of the deployment, running or not.
struct Proc {
    /// `gateway-1`, `worker-2`, ...
    name: String,
    role: Role,
    /// Its own data dir: as on a machine of its own.
    data_dir: PathBuf,
    service: Option<Service>,
    /// Starts so far (log files are numbered by it).
    starts: usize,
}

/// The Redis the deployment runs on.
enum Backend {
    Single(RedisServer),
    Cluster(RedisCluster),
}

impl Backend {
    fn start(dir: &Path, cluster: bool) -> Self {
        if cluster {
            Backend::Cluster(RedisCluster::start(dir))
        } else {
            Backend::Single(RedisServer::start(dir))
        }
    }

    fn node_urls(&self) -> Vec<String> {
        match self {
            Backend::Single(redis) => vec![redis.url()],
            Backend::Cluster(cluster) => cluster.nodes.iter().map(|n| n.url()).collect(),
        }
    }

    /// What services are given: `--redis-url` (empty for the cluster) and a flag more.
    fn service_flags(&self) -> (String, Option<(&'static str, String)>) {
        match self {
            Backend::Single(redis) => (redis.url(), None),
            Backend::Cluster(cluster) => (String::new(), Some(cluster.service_flag())),
        }
    }

    /// SIGKILLs node `i` (modulo the nodes); returns its name.
    fn kill(&mut self, i: usize) -> String {
        match self {
            Backend::Single(redis) => {
                redis.kill();
                "redis".into()
            }
            Backend::Cluster(cluster) => {
                let n = i % cluster.nodes.len();
                cluster.nodes[n].kill();
                format!("redis node {}", n + 1)
            }
        }
    }

    /// Starts node `i` again on its AOF.
    fn start_again(&mut self, i: usize) {
        match self {
            Backend::Single(redis) => redis.start_again(),
            Backend::Cluster(cluster) => {
                let n = i % cluster.nodes.len();
                cluster.nodes[n].start_again();
            }
        }
    }
}

/// The processes and what they share.
struct Deployment {
    root: PathBuf,
    /// The blob store every process shares (`--blob-url`).
    blob_dir: PathBuf,
    redis: Mutex<Backend>,
    /// Every Redis node, for `INFO` and `CLIENT KILL`.
    node_urls: Vec<String>,
    /// The services' `--redis-url` (empty for a cluster) and extra flag.
    redis_url: String,
    redis_flag: Option<(&'static str, String)>,
    smtp_url: String,
    slots: usize,
    /// Gateways first, then workers.
    procs: Vec<Mutex<Proc>>,
    gateways: usize,
    /// The API (or health) address of each running process, by index in `procs`.
    bases: RwLock<Vec<Option<String>>>,
    /// Next gateway a client tries (round robin).
    next_gateway: AtomicUsize,
}

impl Deployment {
    /// Starts process `i`, retrying twice; returns how long it took to be ready.
    /// Blocking.
    fn start(&self, i: usize) -> Result<f64, String> {
        let started = Instant::now();
        let mut proc = self.procs[i].lock().unwrap();
        let mut last = String::new();
        for _ in 0..3 {
            proc.starts += 1;
            let log = self
                .root
                .join("logs")
                .join(format!("{}.{}.log", proc.name, proc.starts));
            let mut extra = vec![
                ("blob-url", self.blob_dir.display().to_string()),
                ("admin-token", OPERATOR.to_string()),
                ("smtp-url", self.smtp_url.clone()),
                ("metrics-listen", "off".to_string()),
            ];
            if proc.role == Role::Worker {
                extra.push(("workers", self.slots.to_string()));
            }
            extra.extend(self.redis_flag.clone());
            let (role, data_dir) = (proc.role, proc.data_dir.clone());
            let redis_url = self.redis_url.clone();
            let attempt = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let service = Service::spawn(
                    ServiceOptions {
                        role,
                        redis_url: &redis_url,
                        data_dir: &data_dir,
                        extra,
                    },
                    Some(&log),
                );
                service.wait_ready(Duration::from_secs(60));
                service
            }));
            match attempt {
                Ok(service) => {
                    self.bases.write().unwrap()[i] = Some(service.base.clone());
                    proc.service = Some(service);
                    return Ok(started.elapsed().as_secs_f64());
                }
                Err(panic) => {
                    last = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                }
            }
        }
        Err(format!("{} did not start: {last}", proc.name))
    }

    /// The addresses of the running gateways.
    fn live_gateways(&self) -> Vec<String> {
        self.bases.read().unwrap()[..self.gateways]
            .iter()
            .flatten()
            .cloned()
            .collect()
    }

    /// The next running gateway to try, round robin.
    fn gateway(&self) -> Option<String> {
        let live = self.live_gateways();
        (!live.is_empty())
            .then(|| live[self.next_gateway.fetch_add(1, Ordering::Relaxed) % live.len()].clone())
    }

    fn live(&self) -> usize {
        self.bases.read().unwrap().iter().flatten().count()
    }

    /// Stops every process (SIGTERM, as their drop does).
    fn stop_all(&self) {
        for proc in &self.procs {
            proc.lock().unwrap().service.take();
        }
    }
}

/// A tenant's client.
#[derive(Clone)]
struct Client {
    tenant: String,
    email: String,
    token: Arc<RwLock<String>>,
}

/// An input file and the length of its audio.
struct Input {
    name: String,
    bytes: Vec<u8>,
    seconds: f64,
}

/// An upload that got its 202.
#[derive(Debug, Clone)]
struct Accepted {
    tenant: String,
    id: String,
    input: usize,
}

/// What the upload clients went through.
#[derive(Debug, Default)]
struct UploadStats {
    /// Attempts that failed and were retried (connection errors, 5xx, 429).
    retried: AtomicUsize,
    /// 401s that a new login fixed.
    relogins: AtomicUsize,
    /// Uploads refused for good (a 4xx other than 401/429), with the answer.
    refused: Mutex<Vec<String>>,
    /// Uploads never accepted within two minutes of retrying.
    abandoned: AtomicUsize,
}

/// When each converter was active, unix seconds: `(digest, from, until)`.
type Timeline = Arc<Mutex<Vec<(String, f64, f64)>>>;

/// One injected fault and how the deployment came back.
#[derive(Debug, Clone)]
pub struct FaultRecord {
    /// Seconds from the first upload.
    pub at: f64,
    pub fault: Fault,
    /// Which process, or what it did.
    pub target: String,
    /// Unix seconds when the fault hit (for Redis: when it was started again; for a
    /// converter change: when the API answered).
    pub back_at: f64,
    /// A killed or terminated process: seconds until it was ready again (restart
    /// included). Redis, pub/sub: seconds from `back_at` until every process answered
    /// `/readyz` 200. A converter change: until every process applied it.
    pub recovered_after: Option<f64>,
    /// Seconds from the fault's end until the next job finished (whole seconds: jobs
    /// record `finished_at` in seconds).
    pub next_done_after: Option<f64>,
    pub note: String,
    /// What went wrong: not back within its limit, a refused change, a slow shutdown.
    pub problem: Option<String>,
}

/// Redis commands run on every node, summed over restarts (which reset
/// `INFO commandstats`).
struct CommandCount {
    /// Per node: its URL, the totals of its earlier incarnations, the last total read
    /// from the running one.
    nodes: Vec<(String, u64, u64)>,
}

impl CommandCount {
    fn new(urls: &[String]) -> Self {
        Self {
            nodes: urls.iter().map(|u| (u.clone(), 0, 0)).collect(),
        }
    }

    /// Reads `INFO commandstats` of every node (leaving out this suite's own `INFO` and
    /// `CLIENT KILL`) and folds it in; a node that does not answer keeps its last total.
    async fn sample(&mut self) {
        for (url, base, last) in &mut self.nodes {
            let read = async {
                let client = redis::Client::open(url.as_str()).ok()?;
                let mut conn = client.get_multiplexed_async_connection().await.ok()?;
                redis::cmd("INFO")
                    .arg("commandstats")
                    .query_async::<String>(&mut conn)
                    .await
                    .ok()
            };
            let Ok(Some(info)) = tokio::time::timeout(Duration::from_secs(2), read).await else {
                continue;
            };
            let total = commands_in(&info);
            if total < *last {
                *base += *last;
            }
            *last = total;
        }
    }

    fn total(&self) -> u64 {
        self.nodes.iter().map(|(_, base, last)| base + last).sum()
    }
}

/// The calls in an `INFO commandstats` answer, but for the suite's own commands.
fn commands_in(info: &str) -> u64 {
    info.lines()
        .filter(|l| !l.starts_with("cmdstat_info:") && !l.starts_with("cmdstat_client|kill:"))
        .filter_map(|l| l.split("calls=").nth(1))
        .filter_map(|rest| rest.split(',').next()?.parse::<u64>().ok())
        .sum()
}

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail,
    /// A figure, judged by no threshold.
    Info,
}

/// One line of the report's table.
#[derive(Debug, Clone)]
pub struct Row {
    pub check: String,
    pub value: String,
    pub verdict: Verdict,
}

/// What a run found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub title: String,
    pub rows: Vec<Row>,
    pub faults: Vec<FaultRecord>,
    /// What failed, job by job.
    pub details: Vec<String>,
}

impl Report {
    fn row(&mut self, check: &str, value: impl std::fmt::Display, verdict: Verdict) {
        self.rows.push(Row {
            check: check.to_owned(),
            value: value.to_string(),
            verdict,
        });
    }

    fn judged(&mut self, check: &str, value: impl std::fmt::Display, ok: bool) {
        self.row(check, value, if ok { Verdict::Pass } else { Verdict::Fail });
    }

    /// True when no check failed.
    pub fn passed(&self) -> bool {
        self.rows.iter().all(|r| r.verdict != Verdict::Fail)
    }

    /// The report as Markdown tables (checks, then faults), then the failures' details.
    pub fn table(&self) -> String {
        let mut out = format!("{}\n\n| check | value | |\n|---|---|---|\n", self.title);
        for r in &self.rows {
            let verdict = match r.verdict {
                Verdict::Pass => "ok",
                Verdict::Fail => "**FAIL**",
                Verdict::Info => "",
            };
            let _ = writeln!(out, "| {} | {} | {verdict} |", r.check, r.value);
        }
        if !self.faults.is_empty() {
            out.push_str(
                "\n| t (s) | fault | target | recovered after (s) | next job done after (s) | note |\n|---|---|---|---|---|---|\n",
            );
            let secs = |v: Option<f64>| v.map_or("—".to_string(), |v| format!("{v:.2}"));
            for f in &self.faults {
                let _ = writeln!(
                    out,
                    "| {:.1} | {} | {} | {} | {} | {} |",
                    f.at,
                    f.fault.label(),
                    f.target,
                    secs(f.recovered_after),
                    f.next_done_after
                        .map_or("—".to_string(), |v| format!("{v:.0}")),
                    match &f.problem {
                        Some(p) if f.note.is_empty() => format!("**FAIL**: {p}"),
                        Some(p) => format!("{}; **FAIL**: {p}", f.note),
                        None => f.note.clone(),
                    }
                );
            }
        }
        for d in &self.details {
            let _ = writeln!(out, "- {d}");
        }
        out
    }
}

/// Length of the first audio stream of `path`, seconds (ffprobe).
fn audio_seconds(path: &Path) -> f64 {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "a:0", "-show_entries"])
        .args(["stream=duration", "-of", "default=nw=1:nk=1"])
        .arg(path)
        .output()
        .expect("ffprobe runs");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("ffprobe gives the audio length of {}", path.display()))
}

/// The built-in converter with a custom section appended: the same code under another
/// digest, which every worker must compile when it is activated.
fn converter_variant() -> Vec<u8> {
    let mut bytes = tapedeck::components::DEFAULT_CONVERTER.to_vec();
    let name = b"chaos";
    let mut section = vec![name.len() as u8];
    section.extend_from_slice(name);
    section.extend_from_slice(b"a converter to activate and roll back");
    bytes.push(0); // custom section id
    bytes.push(section.len() as u8); // one-byte LEB128 size (< 128)
    bytes.extend_from_slice(&section);
    bytes
}

/// The first 12 characters of a digest.
fn short(digest: &str) -> &str {
    digest.get(..12).unwrap_or(digest)
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The HTTP client of the suite: short connect timeout, so a dead gateway is noticed.
fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(60))
        .build()
        .expect("building an HTTP client")
}

/// Sends `make(base)` to running gateways in turn until one answers `want`, for up to
/// `limit`; returns that answer's body.
async fn with_retries(
    dep: &Deployment,
    limit: Duration,
    want: u16,
    make: impl Fn(&str) -> reqwest::RequestBuilder,
) -> Result<Value, String> {
    let since = Instant::now();
    let mut last = String::from("no gateway running");
    while since.elapsed() < limit {
        if let Some(base) = dep.gateway() {
            match make(&base).send().await {
                Ok(r) if r.status().as_u16() == want => {
                    return Ok(r.json().await.unwrap_or(Value::Null));
                }
                Ok(r) => last = format!("{}: {}", r.status(), r.text().await.unwrap_or_default()),
                Err(e) => last = e.to_string(),
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(last)
}

/// Sets the deployment up: Redis, the SMTP sink, gateways, tenants and their users, the
/// converter to activate later, workers.
async fn deploy(plan: &Plan, root: &Path) -> (Arc<Deployment>, Maildev, Vec<Client>, String) {
    std::fs::create_dir_all(root.join("logs")).unwrap();
    let redis = {
        let (dir, cluster) = (root.join("redis"), plan.cluster);
        tokio::task::spawn_blocking(move || Backend::start(&dir, cluster))
            .await
            .unwrap()
    };
    let (redis_url, redis_flag) = redis.service_flags();
    let node_urls = redis.node_urls();
    let maildev = tokio::task::spawn_blocking({
        let root = root.to_path_buf();
        move || Maildev::started(&root)
    })
    .await
    .unwrap();
    let mut procs = Vec::new();
    for (role, n, name) in [
        (Role::Gateway, plan.gateways, "gateway"),
        (Role::Worker, plan.workers, "worker"),
    ] {
        for i in 1..=n {
            let name = format!("{name}-{i}");
            procs.push(Mutex::new(Proc {
                data_dir: root.join(&name),
                name,
                role,
                service: None,
                starts: 0,
            }));
        }
    }
    let dep = Arc::new(Deployment {
        root: root.to_path_buf(),
        blob_dir: root.join("blobs"),
        redis: Mutex::new(redis),
        node_urls,
        redis_url,
        redis_flag,
        smtp_url: maildev.smtp_url(),
        slots: plan.slots,
        bases: RwLock::new(vec![None; procs.len()]),
        procs,
        gateways: plan.gateways,
        next_gateway: AtomicUsize::new(0),
    });
    // Gateways first (each ready before the next starts): workers write links with the
    // URL a gateway published.
    for i in 0..dep.procs.len() {
        let d = dep.clone();
        tokio::task::spawn_blocking(move || d.start(i))
            .await
            .unwrap()
            .expect("the deployment starts");
    }
    let http = http();
    let mut clients = Vec::new();
    for t in 0..plan.tenants {
        let tenant = format!("chaos-{t}");
        let email = format!("user@{tenant}.test");
        with_retries(&dep, Duration::from_secs(30), 201, |base| {
            http.post(format!("{base}/v1/admin/tenants"))
                .bearer_auth(OPERATOR)
                .json(&json!({"name": tenant, "self_register": true}))
        })
        .await
        .expect("creating a tenant");
        with_retries(&dep, Duration::from_secs(30), 201, |base| {
            http.post(format!("{base}/v1/auth/register"))
                .json(&json!({"tenant": tenant, "email": email, "password": PASSWORD}))
        })
        .await
        .expect("registering a user");
        let client = Client {
            tenant,
            email,
            token: Arc::default(),
        };
        login(&dep, &http, &client).await;
        clients.push(client);
    }
    let variant = converter_variant();
    let digest = sha256(&variant);
    let published = with_retries(&dep, Duration::from_secs(120), 201, |base| {
        let form = reqwest::multipart::Form::new()
            .text("stage", "converter")
            .part(
                "file",
                reqwest::multipart::Part::bytes(variant.clone()).file_name("chaos.wasm"),
            );
        http.post(format!("{base}/v1/admin/plugins"))
            .bearer_auth(OPERATOR)
            .multipart(form)
    })
    .await
    .expect("publishing the converter to activate");
    assert_eq!(published["plugin"]["digest"], digest.as_str());
    (dep, maildev, clients, digest)
}

/// Logs `client` in (again), on any gateway.
async fn login(dep: &Deployment, http: &reqwest::Client, client: &Client) {
    let v = with_retries(dep, Duration::from_secs(60), 200, |base| {
        http.post(format!("{base}/v1/auth/login"))
            .json(&json!({"tenant": client.tenant, "email": client.email, "password": PASSWORD}))
    })
    .await
    .expect("logging in");
    *client.token.write().unwrap() = v["token"].as_str().expect("a token").to_owned();
}

/// Uploads job `k` until a gateway accepts it (or two minutes pass).
async fn upload(
    dep: &Deployment,
    http: &reqwest::Client,
    client: &Client,
    input: &Input,
    k: usize,
    stats: &UploadStats,
) -> Option<String> {
    let since = Instant::now();
    while since.elapsed() < Duration::from_secs(120) {
        let Some(base) = dep.gateway() else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let form = reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::bytes(input.bytes.clone())
                .file_name(format!("chaos-{k}-{}", input.name)),
        );
        let token = client.token.read().unwrap().clone();
        let sent = http
            .post(format!("{base}/v1/jobs"))
            .bearer_auth(token)
            .multipart(form)
            .send()
            .await;
        match sent {
            Ok(r) if r.status() == 202 => {
                let v: Value = r.json().await.unwrap_or(Value::Null);
                if let Some(id) = v["id"].as_str() {
                    return Some(id.to_owned());
                }
                // Accepted but the answer was cut: the job exists, unknown to the client.
                stats.retried.fetch_add(1, Ordering::Relaxed);
            }
            Ok(r) if r.status() == 401 => {
                stats.relogins.fetch_add(1, Ordering::Relaxed);
                login(dep, http, client).await;
            }
            Ok(r) if r.status() == 429 || r.status().is_server_error() => {
                stats.retried.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Ok(r) => {
                let status = r.status();
                let body = r.text().await.unwrap_or_default();
                stats
                    .refused
                    .lock()
                    .unwrap()
                    .push(format!("job {k} ({}): {status} {body}", input.name));
                return None;
            }
            Err(_) => {
                stats.retried.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    stats.abandoned.fetch_add(1, Ordering::Relaxed);
    None
}

/// Seconds until every running process answers `/readyz` 200 (`None` after a minute).
async fn all_ready(dep: &Deployment, from: Instant) -> Option<f64> {
    let http = http();
    while from.elapsed() < Duration::from_secs(60) {
        let bases: Vec<String> = dep
            .bases
            .read()
            .unwrap()
            .iter()
            .flatten()
            .cloned()
            .collect();
        let mut ready = !bases.is_empty();
        for base in &bases {
            let ok = http
                .get(format!("{base}/readyz"))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            ready &= ok;
        }
        if ready {
            return Some(from.elapsed().as_secs_f64());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// Seconds until every process reports the registry's current version (`None` after a
/// minute).
async fn all_applied(dep: &Deployment, from: Instant) -> Option<f64> {
    let http = http();
    while from.elapsed() < Duration::from_secs(60) {
        if let Some(base) = dep.gateway() {
            let active: Option<Value> = match http
                .get(format!("{base}/v1/admin/plugins/active"))
                .bearer_auth(OPERATOR)
                .send()
                .await
            {
                Ok(r) if r.status() == 200 => r.json().await.ok(),
                _ => None,
            };
            if let Some(active) = active {
                let on_it = active["processes"].as_array().map_or(0, |p| {
                    p.iter()
                        .filter(|p| p["version"] == active["version"])
                        .count()
                });
                if on_it >= dep.live() {
                    return Some(from.elapsed().as_secs_f64());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// What the fault tasks share.
struct FaultContext {
    dep: Arc<Deployment>,
    plan: Plan,
    t0: f64,
    commands: Arc<tokio::sync::Mutex<CommandCount>>,
    timeline: Timeline,
    variant: String,
    builtin: String,
    accepted: Arc<Mutex<Vec<Accepted>>>,
    clients: Vec<Client>,
    /// The short inputs, then the long one (for SSE streams that stay open).
    inputs: Arc<Vec<Input>>,
    next_worker: AtomicUsize,
    next_gateway: AtomicUsize,
    /// The next Redis node to kill (a cluster's, in turn).
    next_node: AtomicUsize,
}

/// When an SSE stream ended, and the name of its last event.
type SseWatch = Arc<Mutex<(Option<Instant>, String)>>;

/// Uploads the long input through the gateway at `base` (a job of tenant 0, counted as
/// accepted) and opens an SSE stream on it there; `None` if either fails.
async fn open_sse(ctx: &FaultContext, base: &str) -> Option<SseWatch> {
    let client = ctx.clients.first()?.clone();
    let input = ctx.inputs.len() - 1;
    let token = client.token.read().unwrap().clone();
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(ctx.inputs[input].bytes.clone())
            .file_name(ctx.inputs[input].name.clone()),
    );
    let r = http()
        .post(format!("{base}/v1/jobs"))
        .bearer_auth(&token)
        .multipart(form)
        .send()
        .await
        .ok()?;
    if r.status() != 202 {
        return None;
    }
    let id = r.json::<Value>().await.ok()?["id"].as_str()?.to_owned();
    ctx.accepted.lock().unwrap().push(Accepted {
        tenant: client.tenant.clone(),
        id: id.clone(),
        input,
    });
    let r = http()
        .get(format!("{base}/v1/jobs/{id}/events"))
        .bearer_auth(&token)
        .timeout(Duration::from_secs(600))
        .send()
        .await
        .ok()?;
    if r.status() != 200 {
        return None;
    }
    let watch: SseWatch = Arc::default();
    let w = watch.clone();
    tokio::spawn(async move {
        let mut body = r.bytes_stream();
        let mut last = String::new();
        while let Some(Ok(chunk)) = body.next().await {
            let text = String::from_utf8_lossy(&chunk);
            if let Some(event) = text
                .lines()
                .filter_map(|l| l.strip_prefix("event:"))
                .next_back()
            {
                last = event.trim().to_owned();
            }
        }
        *w.lock().unwrap() = (Some(Instant::now()), last);
    });
    // The first event (the job's status) is on its way.
    tokio::time::sleep(Duration::from_millis(200)).await;
    Some(watch)
}

/// Injects `fault` and waits until the deployment is back; returns what happened.
async fn inject(ctx: Arc<FaultContext>, fault: Fault) -> FaultRecord {
    let dep = ctx.dep.clone();
    let at = now_s() - ctx.t0;
    let mut record = FaultRecord {
        at,
        fault,
        target: String::new(),
        back_at: now_s(),
        recovered_after: None,
        next_done_after: None,
        note: String::new(),
        problem: None,
    };
    match fault {
        Fault::KillWorker => {
            let n = ctx.plan.workers;
            let i = ctx.plan.gateways + ctx.next_worker.fetch_add(1, Ordering::Relaxed) % n;
            let d = dep.clone();
            let killed = Instant::now();
            let started = tokio::task::spawn_blocking(move || {
                let name = {
                    let mut proc = d.procs[i].lock().unwrap();
                    d.bases.write().unwrap()[i] = None;
                    if let Some(mut service) = proc.service.take() {
                        service.kill();
                    }
                    proc.name.clone()
                };
                (name, d.start(i))
            })
            .await
            .unwrap();
            record.target = started.0;
            match started.1 {
                Ok(_) => {
                    record.recovered_after = Some(killed.elapsed().as_secs_f64());
                    record.note = "restarted on its data dir".into();
                }
                Err(e) => record.problem = Some(e),
            }
        }
        Fault::KillRedis => {
            ctx.commands.lock().await.sample().await;
            let node = ctx.next_node.fetch_add(1, Ordering::Relaxed);
            let d = dep.clone();
            record.target = tokio::task::spawn_blocking(move || d.redis.lock().unwrap().kill(node))
                .await
                .unwrap();
            tokio::time::sleep(ctx.plan.redis_down).await;
            let d = dep.clone();
            tokio::task::spawn_blocking(move || d.redis.lock().unwrap().start_again(node))
                .await
                .unwrap();
            record.back_at = now_s();
            record.note = format!(
                "down {:.1} s, restarted on its AOF",
                ctx.plan.redis_down.as_secs_f64()
            );
            record.recovered_after = all_ready(&dep, Instant::now()).await;
            if record.recovered_after.is_none() {
                record.problem = Some("not every process ready within a minute".into());
            }
        }
        Fault::TermGateway => {
            let i = ctx.next_gateway.fetch_add(1, Ordering::Relaxed) % ctx.plan.gateways;
            // An SSE stream open on it, on a long job uploaded there (a short one would
            // be done before the signal): shutdown must end the stream at once.
            let base = dep.bases.read().unwrap()[i].clone();
            let sse = match base {
                Some(base) => open_sse(&ctx, &base).await,
                None => None,
            };
            let d = dep.clone();
            let termed = Instant::now();
            let (name, exit, started) = tokio::task::spawn_blocking(move || {
                let (name, exit) = {
                    let mut proc = d.procs[i].lock().unwrap();
                    let since = Instant::now();
                    let mut exit = None;
                    if let Some(service) = proc.service.as_mut() {
                        crate::signal(service.pid(), libc::SIGTERM);
                        while since.elapsed() < Duration::from_secs(30) {
                            if let Ok(Some(_)) = service.child.try_wait() {
                                exit = Some(since.elapsed().as_secs_f64());
                                break;
                            }
                            std::thread::sleep(Duration::from_millis(20));
                        }
                    }
                    d.bases.write().unwrap()[i] = None;
                    proc.service.take();
                    (proc.name.clone(), exit)
                };
                (name, exit, d.start(i))
            })
            .await
            .unwrap();
            record.target = name;
            let mut note = exit.map_or("did not exit within 30 s".to_string(), |s| {
                format!("exited {s:.2} s after SIGTERM")
            });
            if exit.is_none_or(|s| s > MAX_GATEWAY_EXIT_SECS) {
                record.problem = Some(format!(
                    "a gateway must exit within {MAX_GATEWAY_EXIT_SECS} s of SIGTERM"
                ));
            }
            match sse {
                Some(sse) => {
                    let (ended, last) = sse.lock().unwrap().clone();
                    match ended {
                        Some(at) if at >= termed => {
                            let _ = write!(
                                note,
                                ", its SSE stream ended {:.2} s after it (last event: {})",
                                (at - termed).as_secs_f64(),
                                last
                            );
                        }
                        Some(_) => note.push_str(", its SSE stream had ended before"),
                        None => {
                            note.push_str(", its SSE stream did not end");
                            record.problem = Some("the SSE stream outlived its gateway".into());
                        }
                    }
                }
                None => note.push_str(", no SSE stream could be opened"),
            }
            record.note = match started {
                Ok(_) => {
                    record.recovered_after = Some(termed.elapsed().as_secs_f64());
                    format!("{note}; restarted")
                }
                Err(e) => {
                    record.problem = Some(e);
                    note
                }
            };
        }
        Fault::Activate | Fault::Rollback => {
            let http = http();
            let sent = now_s();
            let answer = if fault == Fault::Activate {
                record.target = format!("{}…", short(&ctx.variant));
                with_retries(&dep, Duration::from_secs(60), 200, |base| {
                    http.post(format!("{base}/v1/admin/plugins/{}/activate", ctx.variant))
                        .bearer_auth(OPERATOR)
                        .json(&json!({"stage": "converter"}))
                })
                .await
            } else {
                record.target = "converter".into();
                with_retries(&dep, Duration::from_secs(60), 200, |base| {
                    http.post(format!("{base}/v1/admin/plugins/rollback"))
                        .bearer_auth(OPERATOR)
                        .json(&json!({"stage": "converter"}))
                })
                .await
            };
            let answered = now_s();
            record.back_at = answered;
            match answer {
                Ok(v) => {
                    let active = if fault == Fault::Activate {
                        ctx.variant.clone()
                    } else {
                        // `null`: the built-in component.
                        v["active"]["digest"]
                            .as_str()
                            .map_or(ctx.builtin.clone(), str::to_owned)
                    };
                    let mut timeline = ctx.timeline.lock().unwrap();
                    if let Some(current) = timeline.last_mut() {
                        current.2 = answered;
                    }
                    timeline.push((active.clone(), sent, f64::INFINITY));
                    record.note = if active == ctx.builtin {
                        "back to the built-in converter".into()
                    } else {
                        format!("now {}…", short(&active))
                    };
                }
                Err(e) => record.problem = Some(format!("refused for a minute: {e}")),
            }
            record.recovered_after = all_applied(&dep, Instant::now()).await;
            if record.recovered_after.is_none() {
                record.problem = Some("not every process applied it within a minute".into());
            }
        }
        Fault::DropPubsub => {
            record.target = "every Redis node".into();
            let mut killed = Some(0);
            for url in &dep.node_urls {
                let on_node = async {
                    let client = redis::Client::open(url.as_str()).ok()?;
                    let mut conn = client.get_multiplexed_async_connection().await.ok()?;
                    redis::cmd("CLIENT")
                        .arg("KILL")
                        .arg("TYPE")
                        .arg("pubsub")
                        .query_async::<u64>(&mut conn)
                        .await
                        .ok()
                }
                .await;
                killed = killed.zip(on_node).map(|(a, b)| a + b);
            }
            record.back_at = now_s();
            match killed {
                Some(n) => record.note = format!("{n} subscriptions dropped"),
                None => record.problem = Some("CLIENT KILL failed".into()),
            }
            record.recovered_after = all_ready(&dep, Instant::now()).await;
            if record.recovered_after.is_none() {
                record.problem = Some("not every process ready within a minute".into());
            }
        }
    }
    record
}

/// The job id in a notification mail (its footer: `Job {id} · tenant {tenant}`).
fn job_of_mail(mail: &Value) -> Option<String> {
    let text = mail["text"].as_str()?;
    let rest = text.split("Job ").last()?;
    let id = rest.split_whitespace().next()?;
    Some(id.to_owned())
}

/// Notifications per job id, from the SMTP sink.
async fn notified(maildev: &Maildev) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for mail in maildev.emails().await {
        if let Some(id) = job_of_mail(&mail) {
            *counts.entry(id).or_insert(0) += 1;
        }
    }
    counts
}

/// Mails the SMTP sink has received: files in its mail folder (cheaper to poll than its
/// API, which sends every mail).
fn mails_received(root: &Path) -> usize {
    std::fs::read_dir(root.join("maildev"))
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".eml"))
                .count()
        })
        .unwrap_or(0)
}

/// Every job of `tenant`, by id (the operator's paged listing).
async fn tenant_jobs(dep: &Deployment, tenant: &str) -> Result<HashMap<String, Value>, String> {
    let http = http();
    let mut jobs = HashMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = with_retries(dep, Duration::from_secs(60), 200, |base| {
            let mut url = format!("{base}/v1/admin/jobs?tenant={tenant}&limit=100");
            if let Some(c) = &cursor {
                url.push_str(&format!("&cursor={c}"));
            }
            http.get(url).bearer_auth(OPERATOR)
        })
        .await?;
        for job in page["jobs"].as_array().cloned().unwrap_or_default() {
            if let Some(id) = job["id"].as_str() {
                jobs.insert(id.to_owned(), job.clone());
            }
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return Ok(jobs),
        }
    }
}

/// Runs `plan` in `root` (a fresh directory); the processes are stopped before it returns.
pub async fn run(plan: Plan, root: &Path) -> Report {
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut report = Report {
        title: format!(
            "chaos: {}, {} gateway(s), {} worker(s) × {} slot(s), {} tenants, {} jobs, {} faults, nproc {nproc}",
            if plan.cluster {
                "3-node Redis Cluster"
            } else {
                "single Redis"
            },
            plan.gateways,
            plan.workers,
            plan.slots,
            plan.tenants,
            plan.jobs,
            plan.faults.len()
        ),
        ..Report::default()
    };
    let inputs: Arc<Vec<Input>> = Arc::new(
        INPUTS
            .iter()
            .chain([&LONG_INPUT])
            .map(|name| {
                let path = media(name);
                Input {
                    name: (*name).to_owned(),
                    bytes: std::fs::read(&path).unwrap(),
                    seconds: audio_seconds(&path),
                }
            })
            .collect(),
    );
    let (dep, maildev, clients, variant) = deploy(&plan, root).await;
    let builtin = sha256(tapedeck::components::DEFAULT_CONVERTER);
    let commands = Arc::new(tokio::sync::Mutex::new(CommandCount::new(&dep.node_urls)));
    commands.lock().await.sample().await;
    let load_start = commands.lock().await.total();
    let t0 = now_s();
    let timeline: Timeline = Arc::new(Mutex::new(vec![(builtin.clone(), 0.0, f64::INFINITY)]));
    let accepted: Arc<Mutex<Vec<Accepted>>> = Arc::default();
    let stats = Arc::new(UploadStats::default());

    // Commands are sampled every second, so a Redis restart loses at most a second's.
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = tokio::spawn({
        let (commands, on) = (commands.clone(), sampling.clone());
        async move {
            while on.load(Ordering::Relaxed) {
                commands.lock().await.sample().await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    });

    // Upload clients: one per tenant, job k at t0 + k × spacing.
    let spacing = plan.upload_over.as_secs_f64() / plan.jobs as f64;
    let start = Instant::now();
    let mut uploaders = Vec::new();
    for (t, client) in clients.iter().enumerate() {
        let (dep, client, inputs, accepted, stats) = (
            dep.clone(),
            client.clone(),
            inputs.clone(),
            accepted.clone(),
            stats.clone(),
        );
        let (tenants, jobs) = (plan.tenants, plan.jobs);
        uploaders.push(tokio::spawn(async move {
            let http = http();
            for k in (t..jobs).step_by(tenants) {
                tokio::time::sleep_until(
                    (start + Duration::from_secs_f64(k as f64 * spacing)).into(),
                )
                .await;
                let input = k % INPUTS.len();
                if let Some(id) = upload(&dep, &http, &client, &inputs[input], k, &stats).await {
                    accepted.lock().unwrap().push(Accepted {
                        tenant: client.tenant.clone(),
                        id,
                        input,
                    });
                }
            }
        }));
    }

    // Faults, one every `fault_every`.
    let ctx = Arc::new(FaultContext {
        dep: dep.clone(),
        plan: plan.clone(),
        t0,
        commands: commands.clone(),
        timeline: timeline.clone(),
        variant: variant.clone(),
        builtin: builtin.clone(),
        accepted: accepted.clone(),
        clients: clients.clone(),
        inputs: inputs.clone(),
        next_worker: AtomicUsize::new(0),
        next_gateway: AtomicUsize::new(0),
        next_node: AtomicUsize::new(0),
    });
    let mut injected = Vec::new();
    for (n, fault) in plan.faults.iter().enumerate() {
        tokio::time::sleep_until((start + plan.fault_every * (n as u32 + 1)).into()).await;
        injected.push(tokio::spawn(inject(ctx.clone(), *fault)));
    }
    for u in uploaders {
        u.await.unwrap();
    }
    // The scripted faults are over (a gateway's restart adds a job: its SSE stream's).
    let mut records = Vec::new();
    for task in injected {
        records.push(task.await.unwrap());
    }
    let mut injected = Vec::new();
    let uploads_done = Instant::now();
    report.row(
        "uploads accepted (202)",
        accepted.lock().unwrap().len(),
        Verdict::Info,
    );

    // Until every accepted job is notified (or the limit): workers still being killed.
    let accepted_ids: Vec<Accepted> = accepted.lock().unwrap().clone();
    let mut last_kill = Instant::now();
    let counts = loop {
        if mails_received(root) >= accepted_ids.len() {
            let counts = notified(&maildev).await;
            if accepted_ids.iter().all(|a| counts.contains_key(&a.id)) {
                break counts;
            }
        }
        if uploads_done.elapsed() > plan.settle_limit {
            break notified(&maildev).await;
        }
        if plan.kill_until_done && last_kill.elapsed() >= plan.fault_every * 2 {
            last_kill = Instant::now();
            injected.push(tokio::spawn(inject(ctx.clone(), Fault::KillWorker)));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    for task in injected {
        records.push(task.await.unwrap());
    }
    let load_secs = now_s() - t0;
    sampling.store(false, Ordering::Relaxed);
    sampler.await.unwrap();
    commands.lock().await.sample().await;
    let load_commands = commands.lock().await.total() - load_start;

    // Idle: every job finished, no fault for a while.
    tokio::time::sleep(Duration::from_secs(3)).await;
    commands.lock().await.sample().await;
    let idle_from = commands.lock().await.total();
    tokio::time::sleep(plan.idle_window).await;
    commands.lock().await.sample().await;
    let idle = (commands.lock().await.total() - idle_from) as f64
        / plan.idle_window.as_secs_f64()
        / dep.live().max(1) as f64;

    let timeline = timeline.lock().unwrap().clone();
    check(
        &mut report,
        &dep,
        &inputs,
        &accepted_ids,
        &counts,
        &timeline,
        &stats,
    )
    .await;
    let jobs = accepted_ids.len().max(1) as f64;
    report.row(
        "Redis commands per job (load, faults included)",
        format!(
            "{:.1} ({load_commands} in {load_secs:.0} s)",
            load_commands as f64 / jobs
        ),
        Verdict::Info,
    );
    report.judged(
        &format!(
            "idle Redis commands/s per process (busy loop above {})",
            plan.max_idle_commands_per_process
        ),
        format!("{idle:.1}"),
        idle <= plan.max_idle_commands_per_process,
    );
    report.row(
        "log lines (warn and above), all processes",
        log_lines(&dep.root.join("logs")),
        Verdict::Info,
    );

    // When the next job finished after each fault (jobs' `finished_at` are whole seconds).
    let mut finished: Vec<f64> = Vec::new();
    for tenant in clients.iter().map(|c| &c.tenant) {
        if let Ok(jobs) = tenant_jobs(&dep, tenant).await {
            finished.extend(jobs.values().filter_map(|j| j["finished_at"].as_f64()));
        }
    }
    finished.sort_by(f64::total_cmp);
    for r in &mut records {
        r.next_done_after = finished
            .iter()
            .find(|&&f| f + 1.0 > r.back_at)
            .map(|f| (f - r.back_at).max(0.0));
    }
    let troubled: Vec<String> = records
        .iter()
        .filter_map(|r| {
            let p = r.problem.as_ref()?;
            Some(format!(
                "{:.1} s {} {}: {p}",
                r.at,
                r.fault.label(),
                r.target
            ))
        })
        .collect();
    report.judged(
        "faults the deployment did not come back from as it should",
        troubled.len(),
        troubled.is_empty(),
    );
    report.details.extend(troubled);
    report.faults = records;
    dep.stop_all();
    report
}

/// Lines of every process's log (they log at `warn`).
fn log_lines(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .map(|text| text.lines().count())
                .sum()
        })
        .unwrap_or(0)
}

/// The checks of a finished run.
async fn check(
    report: &mut Report,
    dep: &Deployment,
    inputs: &[Input],
    accepted: &[Accepted],
    notifications: &HashMap<String, usize>,
    timeline: &[(String, f64, f64)],
    stats: &UploadStats,
) {
    report.row(
        "upload attempts retried after an error",
        stats.retried.load(Ordering::Relaxed),
        Verdict::Info,
    );
    report.row(
        "401s fixed by logging in again",
        stats.relogins.load(Ordering::Relaxed),
        Verdict::Info,
    );
    let refused = stats.refused.lock().unwrap().clone();
    report.judged(
        "uploads refused for good",
        refused.len(),
        refused.is_empty(),
    );
    report
        .details
        .extend(refused.into_iter().map(|r| format!("refused: {r}")));
    let abandoned = stats.abandoned.load(Ordering::Relaxed);
    report.judged(
        "uploads never accepted (2 min of retries)",
        abandoned,
        abandoned == 0,
    );

    let tenants: HashSet<&str> = accepted.iter().map(|a| a.tenant.as_str()).collect();
    let mut server: HashMap<String, Value> = HashMap::new();
    for tenant in &tenants {
        match tenant_jobs(dep, tenant).await {
            Ok(jobs) => server.extend(jobs),
            Err(e) => report
                .details
                .push(format!("listing {tenant}'s jobs failed: {e}")),
        }
    }
    let (mut done, mut failed, mut lost, mut stuck) = (0, 0, 0, 0);
    for a in accepted {
        match server.get(&a.id).and_then(|j| j["status"].as_str()) {
            Some("done") => done += 1,
            Some("failed") => {
                failed += 1;
                let job = &server[&a.id];
                report.details.push(format!(
                    "failed: {} ({}): {}",
                    a.id, inputs[a.input].name, job["error"]
                ));
            }
            Some(status) => {
                stuck += 1;
                report
                    .details
                    .push(format!("stuck: {} is still {status}", a.id));
            }
            None => {
                lost += 1;
                report.details.push(format!("lost: {} has no record", a.id));
            }
        }
    }
    report.judged(
        "jobs done / failed",
        format!("{done} / {failed}"),
        done + failed == accepted.len() && failed == 0,
    );
    report.judged("jobs lost (accepted, no record)", lost, lost == 0);
    report.judged("jobs stuck (not finished in time)", stuck, stuck == 0);
    let known: HashSet<&str> = accepted.iter().map(|a| a.id.as_str()).collect();
    let unheard = server
        .keys()
        .filter(|id| !known.contains(id.as_str()))
        .count();
    report.row(
        "jobs whose 202 never reached the client",
        unheard,
        Verdict::Info,
    );
    let retried = server
        .values()
        .filter(|j| j["attempts"].as_u64().unwrap_or(0) > 1)
        .count();
    report.row(
        "jobs that took more than one attempt",
        retried,
        Verdict::Info,
    );

    // Outputs: `out/{tenant}/{id}.mp3`, one per done job, valid and of the input's length.
    let mut files: HashMap<String, Vec<String>> = HashMap::new();
    let mut stray = Vec::new();
    for tenant in &tenants {
        let dir = dep.blob_dir.join("out").join(tenant);
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            match name.strip_suffix(".mp3") {
                Some(id) if !id.contains('.') => {
                    files.entry(id.to_owned()).or_default().push(name);
                }
                _ => stray.push(format!("{tenant}/{name}")),
            }
        }
    }
    let mut one_output = 0;
    let mut probes = Vec::new();
    for a in accepted {
        let is_done = server.get(&a.id).is_some_and(|j| j["status"] == "done");
        let n = files.get(&a.id).map_or(0, Vec::len);
        match (is_done, n) {
            (true, 1) => {
                one_output += 1;
                probes.push((
                    a.id.clone(),
                    dep.blob_dir
                        .join("out")
                        .join(&a.tenant)
                        .join(format!("{}.mp3", a.id)),
                    inputs[a.input].seconds,
                ));
            }
            (false, 0) => {}
            (is_done, n) => report.details.push(format!(
                "outputs: {} ({}) has {n} stored",
                a.id,
                if is_done { "done" } else { "not done" }
            )),
        }
    }
    report.judged(
        "done jobs with exactly one stored output",
        format!("{one_output} / {done}"),
        one_output == done,
    );
    report.row(
        "other objects under out/ (partial uploads)",
        stray.len(),
        Verdict::Info,
    );
    report
        .details
        .extend(stray.iter().take(10).map(|s| format!("stray object: {s}")));
    let checked: Vec<(String, Result<f64, String>, f64)> = futures::stream::iter(probes)
        .map(|(id, path, want)| async move {
            let got = tokio::task::spawn_blocking(move || match probe::probe_audio(&path) {
                Some((secs, codec)) if codec == "mp3" => Ok(secs),
                Some((_, codec)) => Err(format!("codec {codec}")),
                None => Err("ffprobe cannot read it".into()),
            })
            .await
            .unwrap();
            (id, got, want)
        })
        .buffer_unordered(2)
        .collect()
        .await;
    let mut valid = 0;
    for (id, got, want) in &checked {
        match got {
            Ok(secs) if (secs - want).abs() <= (0.02 * want).max(0.25) => valid += 1,
            Ok(secs) => report.details.push(format!(
                "length: {id} is {secs:.2} s, its input {want:.2} s"
            )),
            Err(e) => report.details.push(format!("mp3: {id}: {e}")),
        }
    }
    report.judged(
        "MP3s valid (ffprobe) and of the input's length",
        format!("{valid} / {}", checked.len()),
        valid == checked.len() && valid == done,
    );

    // Notifications.
    let missing: Vec<&Accepted> = accepted
        .iter()
        .filter(|a| !notifications.contains_key(&a.id))
        .collect();
    let duplicates: usize = accepted
        .iter()
        .filter_map(|a| notifications.get(&a.id))
        .map(|n| n - 1)
        .sum();
    let twice = accepted
        .iter()
        .filter(|a| notifications.get(&a.id).is_some_and(|&n| n > 1))
        .count();
    report.judged(
        "jobs without a notification",
        missing.len(),
        missing.is_empty(),
    );
    report.details.extend(
        missing
            .iter()
            .take(10)
            .map(|a| format!("no notification: {}", a.id)),
    );
    report.row(
        "duplicate notifications",
        format!("{duplicates} (for {twice} jobs)"),
        Verdict::Info,
    );

    // Converters: each one a job ran on was active at some moment of its life.
    let mut wrong = 0;
    for a in accepted {
        let Some(job) = server.get(&a.id) else {
            continue;
        };
        let created = job["created_at"].as_f64().unwrap_or(0.0) - 1.0;
        let finished = job["finished_at"].as_f64().unwrap_or(f64::INFINITY) + 1.0;
        for digest in job["converters"].as_array().into_iter().flatten() {
            let digest = digest.as_str().unwrap_or_default();
            let active = timeline
                .iter()
                .any(|(d, from, until)| d == digest && *from <= finished && *until >= created);
            if !active {
                wrong += 1;
                report.details.push(format!(
                    "converter: {} ran on {digest}, not active between {created} and {finished}",
                    a.id
                ));
            }
        }
    }
    report.judged(
        "jobs run on a converter not active at the time",
        wrong,
        wrong == 0,
    );
    let mut used: BTreeMap<String, usize> = BTreeMap::new();
    for job in server.values() {
        for d in job["converters"].as_array().into_iter().flatten() {
            let d = d.as_str().unwrap_or_default();
            *used.entry(d.get(..12).unwrap_or(d).to_owned()).or_default() += 1;
        }
    }
    report.row(
        "runs per converter",
        used.iter()
            .map(|(d, n)| format!("{d}…: {n}"))
            .collect::<Vec<_>>()
            .join(", "),
        Verdict::Info,
    );
}

/// One line of the scale-out figures.
#[derive(Debug, Clone)]
pub struct ScalePoint {
    pub workers: usize,
    pub jobs: usize,
    pub seconds: f64,
    pub commands_per_job: f64,
}

/// Jobs per second with `workers` worker processes (one slot each) on the same short
/// jobs, no faults: `jobs` uploads queued while the workers are stopped, then timed from
/// the workers' start (their converter compiled already) until every job is done and
/// notified. Redis commands per job cover the uploads, conversions and notifications.
pub async fn scale(workers: usize, jobs: usize, root: &Path) -> Result<ScalePoint, String> {
    let plan = Plan {
        jobs,
        tenants: 2,
        gateways: 1,
        workers,
        faults: Vec::new(),
        ..Plan::short()
    };
    let inputs: Vec<Input> = INPUTS
        .iter()
        .map(|name| {
            let path = media(name);
            Input {
                name: (*name).to_owned(),
                bytes: std::fs::read(&path).unwrap(),
                seconds: audio_seconds(&path),
            }
        })
        .collect();
    let (dep, _maildev, clients, _) = deploy(&plan, root).await;
    // The workers compiled the converter into their caches; stopped now, they start
    // again at once on a full queue, so uploading is not what is timed.
    for i in plan.gateways..dep.procs.len() {
        dep.bases.write().unwrap()[i] = None;
        let d = dep.clone();
        tokio::task::spawn_blocking(move || d.procs[i].lock().unwrap().service.take())
            .await
            .unwrap();
    }
    let commands = Arc::new(tokio::sync::Mutex::new(CommandCount::new(&dep.node_urls)));
    commands.lock().await.sample().await;
    let before = commands.lock().await.total();
    let stats = UploadStats::default();
    let http = http();
    for k in 0..jobs {
        let client = &clients[k % clients.len()];
        let input = &inputs[k % inputs.len()];
        if upload(&dep, &http, client, input, k, &stats)
            .await
            .is_none()
        {
            return Err(format!("upload {k} refused"));
        }
    }
    let start = Instant::now();
    for i in plan.gateways..dep.procs.len() {
        let d = dep.clone();
        tokio::task::spawn_blocking(move || d.start(i))
            .await
            .unwrap()?;
    }
    // Done when every job is notified: the SMTP sink is watched, not Redis, so the
    // commands counted are the jobs' own.
    let seconds = loop {
        if mails_received(root) >= jobs {
            break start.elapsed().as_secs_f64();
        }
        if start.elapsed() > Duration::from_secs(600) {
            return Err("not every job notified after 10 minutes".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    commands.lock().await.sample().await;
    let after = commands.lock().await.total();
    for tenant in clients.iter().map(|c| &c.tenant) {
        let listed = tenant_jobs(&dep, tenant).await?;
        if let Some(job) = listed.values().find(|j| j["status"] != "done") {
            return Err(format!("a job is not done: {job}"));
        }
    }
    dep.stop_all();
    Ok(ScalePoint {
        workers,
        jobs,
        seconds,
        commands_per_job: (after - before) as f64 / jobs as f64,
    })
}
