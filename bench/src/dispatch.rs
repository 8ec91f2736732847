//! `--dispatch`: what one dispatch through the weighted fair scheduler costs, against a
//! redis-server of its own (from `PATH`, on a free port, no persistence), for 10, 1,000
//! and 10,000 tenants holding queued jobs.
//!
//! A dispatch is one worker's `next_delivery` + `start_attempt` + `complete`, run one
//! after the other by a single task (no conversion in between), through a Redis pool
//! made the way `tapedeck serve` makes it. Two windows:
//! - backlog: 2,000 dispatches while every tenant still has jobs queued (the scheduler's
//!   steady state);
//! - drain: every tenant holds 2 jobs, dispatched until none is left and every tenant
//!   has been parked again (each tenant's last job costs one more pick, the one that
//!   finds its stream empty and parks it); with 10 tenants, 100 such rounds.
//!
//! Per window it reports the wall time and redis-server's CPU time per dispatch (median
//! of `--runs` runs) and, per job: network round trips (counted by a relay between the
//! pool and Redis, in one more identical run, so the relay's hops are not in the times),
//! how many of them were a connection check (`UNWATCH` + `PING`: deadpool-redis sent them
//! each time a connection was taken; the one multiplexed connection of `Pool` sends
//! none, so the column is 0 since issue 21), `EVALSHA`s, and Redis commands executed
//! (`INFO commandstats`, which also counts the commands a script runs).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use tapedeck::model::job::{JobInput, JobOutput, JobRecord};
use tapedeck::queue::{AttemptStart, JobQueue, PipelinePolicy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const TENANTS: [usize; 3] = [10, 1_000, 10_000];
/// Dispatches timed in the backlog window.
const DISPATCHES: usize = 2_000;
/// Jobs of a separate tenant dispatched first (loads the scripts, opens the connection).
const WARMUP: usize = 50;
const CONSUMER: &str = "bench-1-0";

pub fn run(runs: usize) -> Result<()> {
    let redis = RedisChild::start()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(measure(&redis, runs))
}

async fn measure(redis: &RedisChild, runs: usize) -> Result<()> {
    let relay = Relay::start(redis.addr()).await?;
    println!("# Dispatch cost (weighted fair scheduler)");
    println!(
        "redis-server {} on 127.0.0.1:{} (--save '' --appendonly no); one task dispatching; \
         a dispatch = next_delivery + start_attempt + complete; times: median of {runs} runs\n",
        redis.version, redis.port
    );
    for (title, drain) in [
        (
            "backlog: 2,000 dispatches, every tenant still holding jobs",
            false,
        ),
        (
            "drain: 2 jobs per tenant, all dispatched, every tenant parked again \
             (10 tenants: 100 such rounds)",
            true,
        ),
    ] {
        println!("## {title}\n");
        println!(
            "| tenants | jobs queued | dispatches | µs per dispatch | Redis CPU µs per dispatch | \
             round trips per job | of which pool checks | EVALSHA per job | \
             Redis commands per job |"
        );
        println!("|---|---|---|---|---|---|---|---|---|");
        for tenants in TENANTS {
            let per_tenant = if drain {
                2
            } else {
                DISPATCHES.div_ceil(tenants).max(2)
            };
            let mut timed = Vec::new();
            for _ in 0..runs {
                timed.push(run_once(redis, &redis.url(), None, tenants, per_tenant, drain).await?);
            }
            let counted = run_once(
                redis,
                &relay.url(),
                Some(&relay),
                tenants,
                per_tenant,
                drain,
            )
            .await?;
            let jobs = counted.jobs as f64;
            ensure!(
                timed.iter().all(|t| t.jobs == counted.jobs),
                "the runs dispatched different numbers of jobs"
            );
            let median = |f: &dyn Fn(&Sample) -> f64| {
                let mut v: Vec<f64> = timed.iter().map(f).collect();
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            };
            let wall = median(&|t| t.elapsed.as_secs_f64());
            let cpu = median(&|t| t.redis_cpu_s);
            let calls = |name: &str| counted.commands.get(name).copied().unwrap_or(0) as f64;
            let all: u64 = counted.commands.values().sum();
            println!(
                "| {tenants} | {} | {} | {:.0} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} |",
                tenants * per_tenant,
                counted.jobs,
                wall * 1e6 / jobs,
                cpu * 1e6 / jobs,
                counted.round_trips as f64 / jobs,
                calls("ping") / jobs,
                calls("evalsha") / jobs,
                all as f64 / jobs,
            );
            if tenants == *TENANTS.last().expect("tenant counts") {
                let mut by_calls: Vec<_> = counted.commands.iter().collect();
                by_calls.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
                let top: Vec<String> = by_calls
                    .iter()
                    .map(|(name, n)| format!("{name} {:.2}", **n as f64 / jobs))
                    .collect();
                println!(
                    "\nRedis commands per job at {tenants} tenants: {}\n",
                    top.join(", ")
                );
            }
        }
    }
    Ok(())
}

/// What one run's windows measured, added up.
#[derive(Default)]
struct Sample {
    jobs: usize,
    elapsed: Duration,
    /// redis-server's CPU time (user + system), seconds.
    redis_cpu_s: f64,
    /// `INFO commandstats` calls, by command (the bench's own excluded).
    commands: BTreeMap<String, u64>,
    /// Round trips through the relay (0 without it).
    round_trips: u64,
}

/// Counters read before and after a window.
struct Snapshot {
    commands: BTreeMap<String, u64>,
    cpu_s: f64,
    round_trips: u64,
}

impl Snapshot {
    async fn take(
        admin: &mut redis::aio::MultiplexedConnection,
        relay: Option<&Relay>,
    ) -> Result<Self> {
        let round_trips = relay.map_or(0, |r| r.round_trips.load(Ordering::SeqCst));
        Ok(Snapshot {
            commands: commandstats(admin).await?,
            cpu_s: redis_cpu_s(admin).await?,
            round_trips,
        })
    }
}

impl Sample {
    /// Adds the window between `before` and `after`; `own_zcards` were the bench's.
    fn add(&mut self, before: &Snapshot, after: &Snapshot, own_zcards: u64) {
        self.redis_cpu_s += after.cpu_s - before.cpu_s;
        self.round_trips += after.round_trips - before.round_trips;
        for (name, n) in &after.commands {
            let mut n = n - before.commands.get(name).copied().unwrap_or(0);
            match name.as_str() {
                "info" => continue,
                "zcard" => n = n.saturating_sub(own_zcards),
                _ => {}
            }
            if n > 0 {
                *self.commands.entry(name.clone()).or_default() += n;
            }
        }
    }
}

/// Empties Redis, then queues `per_tenant` jobs for each of `tenants` and dispatches
/// them (a window) through a pool on `url`: 2,000 of them, or (`drain`) all, as many
/// rounds as it takes to dispatch 2,000.
async fn run_once(
    redis: &RedisChild,
    url: &str,
    relay: Option<&Relay>,
    tenants: usize,
    per_tenant: usize,
    drain: bool,
) -> Result<Sample> {
    let mut admin = redis.conn().await?;
    let _: () = redis::cmd("FLUSHALL").query_async(&mut admin).await?;
    let queue = JobQueue::new(service_pool(url)?, policy());

    // Warm-up on a tenant of its own, dispatched to the end (and parked) before the
    // measured ones are queued.
    for i in 0..WARMUP {
        queue.enqueue(&job("warmup", i)).await?;
    }
    for _ in 0..WARMUP {
        dispatch(&queue)
            .await?
            .context("the warm-up tenant ran dry")?;
    }
    ensure!(
        dispatch(&queue).await?.is_none(),
        "the warm-up left a job behind"
    );

    let mut sample = Sample::default();
    let batch = tenants * per_tenant;
    let rounds = if drain { DISPATCHES.div_ceil(batch) } else { 1 };
    for round in 0..rounds {
        enqueue_all(&queue, tenants, per_tenant, round).await?;
        let before = Snapshot::take(&mut admin, relay).await?;
        let start = Instant::now();
        let mut jobs = 0;
        let mut own_zcards = 0;
        if drain {
            while jobs < batch {
                if dispatch(&queue).await?.is_some() {
                    jobs += 1;
                }
            }
            // Tenants whose last job went out are still ready; workers park them as
            // they come up (at most 16 per `next_delivery`).
            loop {
                own_zcards += 1;
                let ready: u64 = redis::cmd("ZCARD")
                    .arg(tapedeck::store::keys::SCHED_READY)
                    .query_async(&mut admin)
                    .await?;
                if ready == 0 {
                    break;
                }
                ensure!(
                    dispatch(&queue).await?.is_none(),
                    "a job appeared after the last one"
                );
            }
        } else {
            while jobs < DISPATCHES {
                dispatch(&queue)
                    .await?
                    .context("a tenant ran dry in the backlog window")?;
                jobs += 1;
            }
        }
        sample.elapsed += start.elapsed();
        sample.jobs += jobs;
        let after = Snapshot::take(&mut admin, relay).await?;
        sample.add(&before, &after, own_zcards);
    }
    Ok(sample)
}

/// One dispatch: next delivery, attempt, completion. The job's tenant, if there was one.
async fn dispatch(queue: &JobQueue) -> Result<Option<String>> {
    let Some(d) = queue.next_delivery(CONSUMER, Duration::ZERO).await? else {
        return Ok(None);
    };
    let started = queue.start_attempt(&d).await?;
    ensure!(
        started == AttemptStart::Convert(1),
        "{} started as {started:?}",
        d.job_id
    );
    let output = JobOutput {
        key: format!("out/{}/{}.mp3", d.tenant, d.job_id),
        bytes: 1,
        duration_ms: 1,
        bitrate_kbps: None,
    };
    ensure!(
        queue.complete(&d, &output).await?,
        "{} was not kept",
        d.job_id
    );
    Ok(Some(d.tenant))
}

/// Queues `per_tenant` jobs for each tenant `t00000`.. (ids unique across `round`s),
/// eight enqueues at a time.
async fn enqueue_all(
    queue: &JobQueue,
    tenants: usize,
    per_tenant: usize,
    round: usize,
) -> Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    for lane in 0..8 {
        let queue = queue.clone();
        tasks.spawn(async move {
            for k in (lane..tenants * per_tenant).step_by(8) {
                let tenant = format!("t{:05}", k % tenants);
                let i = round * per_tenant + k / tenants;
                queue.enqueue(&job(&tenant, i)).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}

fn job(tenant: &str, i: usize) -> JobRecord {
    let id = format!("{tenant}j{i}");
    let input = JobInput {
        name: "x.m4a".into(),
        bytes: 1,
        key: format!("in/{tenant}/{id}"),
    };
    JobRecord::queued(
        id,
        tenant,
        ("u1", "u@example.com"),
        input,
        Default::default(),
    )
}

fn policy() -> PipelinePolicy {
    PipelinePolicy {
        max_attempts: 3,
        visibility_timeout: Duration::from_secs(60),
        retry_base: Duration::from_secs(1),
        max_running_per_tenant: 0,
        cpu_seconds_per_hour_per_tenant: 0,
    }
}

/// A pool as `tapedeck serve` makes one (`serve_with_redis`).
fn service_pool(url: &str) -> Result<tapedeck::store::Pool> {
    Ok(tapedeck::store::Pool::open(url)?)
}

/// `INFO commandstats`: calls by command name.
async fn commandstats(
    conn: &mut redis::aio::MultiplexedConnection,
) -> Result<BTreeMap<String, u64>> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await?;
    let mut calls = BTreeMap::new();
    for line in info.lines() {
        let Some((name, stats)) = line
            .strip_prefix("cmdstat_")
            .and_then(|l| l.split_once(':'))
        else {
            continue;
        };
        let n = stats
            .split(',')
            .find_map(|kv| kv.strip_prefix("calls="))
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("no calls in {line}"))?;
        calls.insert(name.to_owned(), n);
    }
    Ok(calls)
}

/// redis-server's CPU time so far (user + system), seconds.
async fn redis_cpu_s(conn: &mut redis::aio::MultiplexedConnection) -> Result<f64> {
    let info: String = redis::cmd("INFO").arg("cpu").query_async(conn).await?;
    let field = |name: &str| -> Result<f64> {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.trim().parse().ok())
            .with_context(|| format!("no {name} in INFO cpu"))
    };
    Ok(field("used_cpu_user")? + field("used_cpu_sys")?)
}

/// A redis-server child of this process; killed on drop.
struct RedisChild {
    port: u16,
    version: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl RedisChild {
    fn start() -> Result<Self> {
        let exe = on_path("redis-server").context("redis-server is not on PATH")?;
        let version = Command::new(&exe).arg("--version").output()?;
        let version = String::from_utf8_lossy(&version.stdout)
            .split_whitespace()
            .find_map(|w| w.strip_prefix("v="))
            .unwrap_or("?")
            .to_owned();
        let dir = tempfile::tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Command::new(&exe)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", exe.display()))?;
        let server = RedisChild {
            port,
            version,
            child,
            _dir: dir,
        };
        let client = redis::Client::open(server.url())?;
        let start = Instant::now();
        while client
            .get_connection()
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
            .is_err()
        {
            if start.elapsed() > Duration::from_secs(10) {
                bail!("redis-server did not answer on port {port}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(server)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    async fn conn(&self) -> Result<redis::aio::MultiplexedConnection> {
        Ok(redis::Client::open(self.url())?
            .get_multiplexed_async_connection()
            .await?)
    }
}

impl Drop for RedisChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|f| f.is_file())
}

/// A TCP relay to Redis that counts round trips: each time a client sends after its
/// connection's last answer (or first), one more.
struct Relay {
    addr: SocketAddr,
    round_trips: Arc<AtomicU64>,
    accept: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(upstream: SocketAddr) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let round_trips = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&round_trips);
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let counter = Arc::clone(&counter);
                tokio::spawn(async move {
                    let _ = relay(client, upstream, counter).await;
                });
            }
        });
        Ok(Relay {
            addr,
            round_trips,
            accept,
        })
    }

    fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn relay(client: TcpStream, upstream: SocketAddr, trips: Arc<AtomicU64>) -> Result<()> {
    let server = TcpStream::connect(upstream).await?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let (mut client_rx, mut client_tx) = client.into_split();
    let (mut server_rx, mut server_tx) = server.into_split();
    // True once Redis has answered since the client last sent.
    let answered = Arc::new(AtomicBool::new(true));
    let answered_up = Arc::clone(&answered);
    let up = async move {
        let mut buf = vec![0; 64 * 1024];
        loop {
            let n = client_rx.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            if answered_up.swap(false, Ordering::SeqCst) {
                trips.fetch_add(1, Ordering::SeqCst);
            }
            server_tx.write_all(&buf[..n]).await?;
        }
        server_tx.shutdown().await
    };
    let down = async move {
        let mut buf = vec![0; 64 * 1024];
        loop {
            let n = server_rx.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            // Before the client can see the answer and send again.
            answered.store(true, Ordering::SeqCst);
            client_tx.write_all(&buf[..n]).await?;
        }
        client_tx.shutdown().await
    };
    tokio::try_join!(up, down)?;
    Ok(())
}
