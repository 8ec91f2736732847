//! Weighted fair dispatch across tenants, through the real `JobQueue` on a real
//! redis-server: a backlog does not starve a newcomer, weights share the workers,
//! a tenant's running cap holds without blocking the others, a dead worker's lease
//! comes back, and picking among 10,000 ready tenants follows stride order.
//!
//! "Workers" are tokio tasks looping `next_delivery` -> `start_attempt` -> a fixed
//! sleep (the conversion) -> `complete`. Every assertion is on order and counts, never on
//! durations: a loaded 2-core CI machine stretches the timing, not the outcome.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tapedeck::model::job::{JobOutput, JobRecord, JobStatus};
use tapedeck::queue::{
    AttemptStart, Delivery, GROUP, JobQueue, PipelinePolicy, convert_stream, tenant_key,
};
use tapedeck::store::keys::SCHED_LEASES;
use tapedeck::store::sched::{STRIDE_ONE, Scheduler};
use tapedeck_tests::{RedisServer, pipeline_policy, queued_job, wait_for};
use tokio::sync::RwLock;
use tokio::task::JoinHandle;

/// What one simulated conversion takes.
const JOB_TIME: Duration = Duration::from_millis(20);
/// How long an idle worker waits for a wake-up token (below the client's 500 ms).
const IDLE_BLOCK: Duration = Duration::from_millis(100);
/// Generous: only a broken dispatcher (or a wedged machine) gets near it.
const LIMIT: Duration = Duration::from_secs(60);

fn job(tenant: &str, id: &str) -> JobRecord {
    queued_job(tenant, id, 1)
}

fn output(d: &Delivery) -> JobOutput {
    JobOutput {
        key: format!("out/{}/{}.mp3", d.tenant, d.job_id),
        bytes: 1,
        duration_ms: 1,
        bitrate_kbps: None,
    }
}

fn policy(visibility_timeout: Duration) -> PipelinePolicy {
    pipeline_policy(visibility_timeout, Duration::from_secs(1))
}

/// A redis-server for one test (the scheduler's keys are global to a server, and the
/// tests of this binary run in parallel). Durability is not under test here: the
/// testkit's fsync on every write would only load CI's disk.
async fn redis_server(dir: &std::path::Path) -> RedisServer {
    let redis = RedisServer::start(dir);
    let mut conn = redis.pool().get().await.unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("appendonly")
        .arg("no")
        .query_async(&mut conn)
        .await
        .unwrap();
    redis
}

async fn set_max_running(redis: &RedisServer, tenant: &str, cap: u64) {
    let mut conn = redis.pool().get().await.unwrap();
    let _: () = redis::cmd("HSET")
        .arg(tenant_key(tenant))
        .arg("max_running")
        .arg(cap)
        .query_async(&mut conn)
        .await
        .unwrap();
}

/// Enqueues `n` jobs of `tenant` (`{tenant}{i}`), a few at a time.
async fn enqueue_many(queue: &JobQueue, tenant: &str, n: usize) {
    futures::stream::iter(0..n)
        .for_each_concurrent(8, |i| async move {
            queue
                .enqueue(&job(tenant, &format!("{tenant}{i}")))
                .await
                .unwrap();
        })
        .await;
}

/// The shared state of a test's workers and what they record.
struct Floor {
    queue: JobQueue,
    /// Held for reading by a worker from its pick — in `next_delivery`, or in the
    /// `complete` before it, which picks the slot's next tenant — until it has recorded
    /// the dispatch; the test holds it for writing to enqueue between two dispatches.
    gate: RwLock<()>,
    stop: AtomicBool,
    /// Every dispatch as recorded: (tenant, job).
    dispatched: Mutex<Vec<(String, String)>>,
    /// Every completion: (tenant, job).
    completed: Mutex<Vec<(String, String)>>,
    /// Per tenant: conversions in flight now, and the most ever seen at once.
    in_flight: Mutex<HashMap<String, (u32, u32)>>,
}

impl Floor {
    fn new(redis: &RedisServer, policy: PipelinePolicy) -> Arc<Self> {
        Arc::new(Floor {
            queue: JobQueue::new(redis.pool(), policy),
            gate: RwLock::new(()),
            stop: AtomicBool::new(false),
            dispatched: Mutex::default(),
            completed: Mutex::default(),
            in_flight: Mutex::default(),
        })
    }

    fn spawn(self: &Arc<Self>, n: usize) -> Vec<JoinHandle<()>> {
        (0..n)
            .map(|slot| tokio::spawn(Arc::clone(self).work(format!("fair-1-{slot}"))))
            .collect()
    }

    async fn work(self: Arc<Self>, consumer: String) {
        // The gate, held from a `complete` (whose script picks the slot's next tenant)
        // to the dispatch it leads to being recorded.
        let mut held = None;
        while !self.stop.load(Ordering::SeqCst) {
            let delivery = {
                let _gate = match held.take() {
                    Some(gate) => gate,
                    None => self.gate.read().await,
                };
                let d = self
                    .queue
                    .next_delivery(&consumer, IDLE_BLOCK)
                    .await
                    .unwrap();
                if let Some(d) = &d {
                    // The lease is held from the `TAKE` that returned `d` until
                    // `complete`, which covers this count's window.
                    let mut in_flight = self.in_flight.lock().unwrap();
                    let (now, max) = in_flight.entry(d.tenant.clone()).or_default();
                    *now += 1;
                    *max = (*max).max(*now);
                    drop(in_flight);
                    self.dispatched
                        .lock()
                        .unwrap()
                        .push((d.tenant.clone(), d.job_id.clone()));
                }
                d
            };
            let Some(d) = delivery else { continue };
            assert_eq!(
                self.queue.start_attempt(&d).await.unwrap(),
                AttemptStart::Convert(1),
                "{d:?} is dispatched once"
            );
            tokio::time::sleep(JOB_TIME).await;
            self.in_flight
                .lock()
                .unwrap()
                .get_mut(&d.tenant)
                .expect("counted at dispatch")
                .0 -= 1;
            let gate = self.gate.read().await;
            assert!(self.queue.complete(&d, &output(&d)).await.unwrap());
            held = Some(gate);
            self.completed
                .lock()
                .unwrap()
                .push((d.tenant.clone(), d.job_id.clone()));
        }
    }

    /// Panics if a worker has stopped (it panicked: its assertion is in the join).
    fn check(&self, workers: &[JoinHandle<()>]) {
        assert!(
            !self.stop.load(Ordering::SeqCst) && workers.iter().all(|w| !w.is_finished()),
            "a worker stopped early (see its panic above)"
        );
    }

    async fn stop(&self, workers: Vec<JoinHandle<()>>) {
        self.stop.store(true, Ordering::SeqCst);
        for w in workers {
            w.await.expect("a worker panicked");
        }
    }

    fn dispatched(&self) -> Vec<(String, String)> {
        self.dispatched.lock().unwrap().clone()
    }

    fn completed(&self) -> Vec<(String, String)> {
        self.completed.lock().unwrap().clone()
    }

    fn completed_of(&self, tenant: &str) -> usize {
        count(&self.completed(), tenant)
    }

    fn max_in_flight(&self, tenant: &str) -> u32 {
        self.in_flight
            .lock()
            .unwrap()
            .get(tenant)
            .map_or(0, |&(_, max)| max)
    }
}

fn count(log: &[(String, String)], tenant: &str) -> usize {
    log.iter().filter(|(t, _)| t == tenant).count()
}

/// Tenant `a` has 500 jobs queued and two workers busy on them; `b` uploads one job
/// (three times, going idle in between): each is dispatched within the next two
/// dispatches, i.e. by the first worker slot that frees up, whatever `a` holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_does_not_starve_a_newcomer() {
    let dir = tempfile::tempdir().unwrap();
    let redis = redis_server(dir.path()).await;
    let floor = Floor::new(&redis, policy(Duration::from_secs(60)));
    enqueue_many(&floor.queue, "a", 500).await;
    let workers = floor.spawn(2);

    for round in 1..=3 {
        let b = format!("b{round}");
        let a_done = floor.completed_of("a");
        wait_for(LIMIT, "a few more of a's jobs to complete", async || {
            floor.check(&workers);
            floor.completed_of("a") >= a_done + 5
        })
        .await;
        // No worker is between picking a tenant and recording its dispatch while `b`
        // enqueues, so `at` is exactly the number of dispatches before b's job existed.
        let at = {
            let _paused = floor.gate.write().await;
            let at = floor.dispatched.lock().unwrap().len();
            floor.queue.enqueue(&job("b", &b)).await.unwrap();
            at
        };
        wait_for(LIMIT, "b's job to be dispatched", async || {
            floor.check(&workers);
            floor.dispatched().iter().any(|(_, j)| *j == b)
        })
        .await;
        let log = floor.dispatched();
        let pos = log.iter().position(|(_, j)| *j == b).unwrap();
        assert!(
            pos >= at,
            "{b} dispatched before it was enqueued: {:?}",
            &log[at.saturating_sub(3)..]
        );
        // Two workers may record their dispatches in either order; the scheduler's very
        // next pick is b, so b is the first or second dispatch recorded after `at`.
        assert!(
            pos - at < 2,
            "{b} waited {} dispatches behind a's backlog: {:?}",
            pos - at,
            &log[at..=pos]
        );
        let a_before = count(&log[..at], "a");
        assert!(
            a_before <= 100,
            "a still had {} of 500 jobs queued when {b} came",
            500 - a_before
        );
        wait_for(LIMIT, "b's job to complete", async || {
            floor.check(&workers);
            floor.completed().iter().any(|(_, j)| *j == b)
        })
        .await;
    }
    floor.stop(workers).await;
    let log = floor.dispatched();
    assert_eq!(count(&log, "b"), 3, "{log:?}");
}

/// Both tenants saturate two workers with 200 jobs each; of the first 120 completions,
/// `a` (weight `wa`) and `b` (weight 1) share them within 20% of `wa`:1.
async fn share_of_120_completions(wa: u32) -> (usize, usize) {
    let dir = tempfile::tempdir().unwrap();
    let redis = redis_server(dir.path()).await;
    let floor = Floor::new(&redis, policy(Duration::from_secs(60)));
    floor.queue.scheduler().set_weight("a", wa).await.unwrap();
    floor.queue.scheduler().set_weight("b", 1).await.unwrap();
    enqueue_many(&floor.queue, "a", 200).await;
    enqueue_many(&floor.queue, "b", 200).await;
    let workers = floor.spawn(2);
    wait_for(LIMIT, "120 completions", async || {
        floor.check(&workers);
        floor.completed().len() >= 120
    })
    .await;
    floor.stop(workers).await;
    let first = &floor.completed()[..120];
    let (a, b) = (count(first, "a"), count(first, "b"));
    assert_eq!(a + b, 120);
    let want = f64::from(wa);
    let ratio = a as f64 / b.max(1) as f64;
    assert!(
        (want * 0.8..=want * 1.2).contains(&ratio),
        "weights {wa}:1 gave {a}:{b} of the first 120 completions (ratio {ratio:.2})"
    );
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_3_to_1_share_the_workers_3_to_1() {
    share_of_120_completions(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equal_weights_share_the_workers_equally() {
    share_of_120_completions(1).await;
}

/// `capped` may run one conversion at a time (its tenant hash says so); with three
/// workers it never runs two, and `free` gets the other workers meanwhile: it finishes
/// its 50 jobs long before `capped` does, and takes most of the early completions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_cap_holds_without_blocking_other_tenants() {
    let dir = tempfile::tempdir().unwrap();
    let redis = redis_server(dir.path()).await;
    set_max_running(&redis, "capped", 1).await;
    let floor = Floor::new(&redis, policy(Duration::from_secs(60)));
    enqueue_many(&floor.queue, "capped", 50).await;
    enqueue_many(&floor.queue, "free", 50).await;
    let workers = floor.spawn(3);
    wait_for(LIMIT, "all 100 jobs to complete", async || {
        floor.check(&workers);
        floor.completed().len() >= 100
    })
    .await;
    floor.stop(workers).await;

    assert_eq!(
        floor.max_in_flight("capped"),
        1,
        "capped ran more than max_running = 1 conversions at once"
    );
    assert!(
        floor.max_in_flight("free") >= 2,
        "free never ran alongside anything"
    );
    let done = floor.completed();
    let last = |tenant: &str| done.iter().rposition(|(t, _)| t == tenant).unwrap();
    assert!(
        last("free") < last("capped"),
        "free's last job finished after capped's: the cap held free back"
    );
    // In steady state free gets two workers and capped one (2:1); a cap that blocked
    // the workers it turns away would bring free down to 1:1 or worse.
    let first = &done[..60];
    let (free, capped) = (count(first, "free"), count(first, "capped"));
    assert!(
        free * 2 >= capped * 3,
        "free completed {free} and capped {capped} of the first 60"
    );
}

/// The pending entry's idle time in the group, as `XAUTOCLAIM` sees it.
async fn idle_ms(redis: &RedisServer, tenant: &str, entry: &str) -> u64 {
    let mut conn = redis.pool().get().await.unwrap();
    let pending: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
        .arg(convert_stream(tenant))
        .arg(GROUP)
        .arg(entry)
        .arg(entry)
        .arg(1)
        .query_async(&mut conn)
        .await
        .unwrap();
    pending.first().map_or(0, |p| p.2)
}

/// A worker takes a job of a tenant capped at one conversion and dies (no heartbeat,
/// no completion): its lease holds the slot until the visibility timeout; then
/// `sweep_leases` hands the same entry to another worker, whose completion frees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_workers_lease_is_freed_after_the_visibility_timeout() {
    const T: &str = "solo";
    // Long enough that the steps before it expires cannot outlast it on a loaded machine.
    let visibility = Duration::from_secs(2);
    let dir = tempfile::tempdir().unwrap();
    let redis = redis_server(dir.path()).await;
    set_max_running(&redis, T, 1).await;
    let queue = JobQueue::new(redis.pool(), policy(visibility));
    queue.enqueue(&job(T, "j1")).await.unwrap();
    queue.enqueue(&job(T, "j2")).await.unwrap();

    let dead = queue
        .next_delivery("gone-1-0", Duration::ZERO)
        .await
        .unwrap()
        .expect("j1 is queued");
    assert_eq!(dead.job_id, "j1");
    assert_eq!(
        queue.start_attempt(&dead).await.unwrap(),
        AttemptStart::Convert(1)
    );
    // SIGKILL: no heartbeat, no completion, nothing released.
    assert_eq!(queue.running(T).await.unwrap(), 1);
    assert!(
        queue
            .next_delivery("live-1-0", Duration::ZERO)
            .await
            .unwrap()
            .is_none(),
        "j2 must wait: the dead worker's lease holds the tenant's only slot"
    );
    assert_eq!(
        queue.sweep_leases().await.unwrap(),
        0,
        "nothing expired yet"
    );

    wait_for(
        Duration::from_secs(30),
        "j1's entry to be idle past the visibility timeout",
        async || idle_ms(&redis, T, &dead.entry_id).await >= visibility.as_millis() as u64,
    )
    .await;
    assert_eq!(
        queue.running(T).await.unwrap(),
        0,
        "an expired lease no longer counts"
    );
    assert_eq!(queue.sweep_leases().await.unwrap(), 1);
    let again = queue
        .next_delivery("live-1-0", Duration::ZERO)
        .await
        .unwrap()
        .expect("the swept tenant is ready again");
    assert_eq!(
        (again.job_id.as_str(), again.entry_id.as_str()),
        ("j1", dead.entry_id.as_str()),
        "the abandoned entry comes back before the queued one"
    );
    assert_eq!(
        queue.start_attempt(&again).await.unwrap(),
        AttemptStart::Convert(2)
    );
    assert_eq!(queue.running(T).await.unwrap(), 1);
    assert!(queue.complete(&again, &output(&again)).await.unwrap());
    assert_eq!(queue.running(T).await.unwrap(), 0);
    let mut conn = redis.pool().get().await.unwrap();
    let leases: u64 = redis::cmd("ZCARD")
        .arg(SCHED_LEASES)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(leases, 0, "the completed entry's lease is gone");

    // The freed slot goes to j2.
    let next = queue
        .next_delivery("live-1-0", Duration::ZERO)
        .await
        .unwrap()
        .expect("j2 is queued and the slot is free");
    assert_eq!(next.job_id, "j2");
    assert_eq!(
        queue.start_attempt(&next).await.unwrap(),
        AttemptStart::Convert(1)
    );
    assert!(queue.complete(&next, &output(&next)).await.unwrap());
    assert_eq!(queue.running(T).await.unwrap(), 0);
    let j1 = queue.get(T, "j1").await.unwrap().unwrap();
    assert_eq!((j1.status, j1.attempts), (JobStatus::Done, 2));
}

/// `crate::sched`'s rules, in memory: the order `pick` must follow.
#[derive(Default)]
struct StrideModel {
    ready: BTreeSet<(u64, String)>,
    pass_of_ready: HashMap<String, u64>,
    parked: HashMap<String, u64>,
    stride: HashMap<String, u64>,
}

impl StrideModel {
    fn add(&mut self, t: &str) {
        if self.pass_of_ready.contains_key(t) {
            return;
        }
        // At its own pass or the smallest ready one, whichever is later; into an empty
        // set at 0, every remembered pass forgotten.
        let pass = match self.ready.first() {
            Some((min, _)) => self.parked.get(t).copied().unwrap_or(0).max(*min),
            None => {
                self.parked.clear();
                0
            }
        };
        self.ready.insert((pass, t.to_owned()));
        self.pass_of_ready.insert(t.to_owned(), pass);
    }

    fn pick(&mut self) -> Option<String> {
        let (pass, t) = self.ready.pop_first()?;
        let next = pass + self.stride.get(&t).copied().unwrap_or(STRIDE_ONE);
        self.ready.insert((next, t.clone()));
        self.pass_of_ready.insert(t.clone(), next);
        Some(t)
    }

    fn park(&mut self, t: &str) {
        if let Some(pass) = self.pass_of_ready.remove(t) {
            self.ready.remove(&(pass, t.to_owned()));
            self.parked.insert(t.to_owned(), pass);
        }
    }
}

/// 10,000 ready tenants with weights 1, 2 and 4: `pick` returns them in stride order
/// (smallest pass first, ties by name), a latecomer joins at the virtual time, and a
/// parked tenant comes back where it left off. Correctness only: no timing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn picking_among_10_000_ready_tenants_follows_stride_order() {
    let dir = tempfile::tempdir().unwrap();
    let redis = redis_server(dir.path()).await;
    let sched = Scheduler::new(redis.pool());
    let mut model = StrideModel::default();
    let tenants: Vec<String> = (0..10_000).map(|i| format!("t{i:05}")).collect();
    for (i, t) in tenants.iter().enumerate() {
        let weight = match i % 10 {
            0 => 4,
            5 => 2,
            _ => 1,
        };
        if weight > 1 {
            sched.set_weight(t, weight).await.unwrap();
            model
                .stride
                .insert(t.clone(), STRIDE_ONE / u64::from(weight));
        }
    }
    futures::stream::iter(&tenants)
        .for_each_concurrent(16, |t| {
            let sched = sched.clone();
            async move {
                assert!(sched.add(t, false).await.unwrap(), "{t} was not ready");
            }
        })
        .await;
    for t in &tenants {
        model.add(t);
    }
    let mut conn = redis.pool().get().await.unwrap();
    let ready: u64 = redis::cmd("ZCARD")
        .arg(tapedeck::store::keys::SCHED_READY)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(ready, 10_000);

    let mut picked = 0;
    let mut check_picks = async |model: &mut StrideModel, n: usize| {
        for _ in 0..n {
            let got = sched.pick().await.unwrap();
            let want = model.pick();
            assert_eq!(got, want, "pick #{picked}");
            picked += 1;
        }
    };
    // The first round takes every tenant once, by name; weight 4 and 2 come back
    // sooner. 12,345 picks end among the passes of STRIDE_ONE / 2.
    check_picks(&mut model, 12_345).await;
    // A latecomer joins at the virtual time (not at 0, not behind everyone) and, its
    // name sorting first among the tenants due at that pass, is the very next pick.
    assert!(sched.add("late", false).await.unwrap());
    model.add("late");
    assert_eq!(model.pick().as_deref(), Some("late"));
    assert_eq!(sched.pick().await.unwrap().as_deref(), Some("late"));
    // Parked tenants are skipped, and come back at their own pass or the virtual time,
    // whichever is later.
    for t in ["t00003", "t00010", "t09999"] {
        sched.park(t).await.unwrap();
        model.park(t);
    }
    check_picks(&mut model, 5_000).await;
    for t in ["t00003", "t09999"] {
        assert!(sched.add(t, false).await.unwrap());
        model.add(t);
    }
    check_picks(&mut model, 15_000).await;
    assert!(sched.add("t00010", false).await.unwrap());
    model.add("t00010");
    check_picks(&mut model, 2_000).await;
}

/// With nobody ready, nobody is owed anything: a tenant that ran alone for a long time,
/// then idled, shares equally with one that arrived while the set was empty (a pass
/// remembered from long ago would put it behind for as long as it had run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_everyone_idled_a_long_runner_is_not_put_behind() {
    let dir = tempfile::tempdir().unwrap();
    let redis = redis_server(dir.path()).await;
    let sched = Scheduler::new(redis.pool());
    let mut model = StrideModel::default();
    assert!(sched.add("long", false).await.unwrap());
    model.add("long");
    for _ in 0..50 {
        assert_eq!(sched.pick().await.unwrap(), model.pick());
    }
    sched.park("long").await.unwrap();
    model.park("long");
    // The set is empty: `fresh` comes in at 0, and `long`'s 50 rounds are forgotten.
    assert!(sched.add("fresh", false).await.unwrap());
    model.add("fresh");
    assert!(sched.add("long", false).await.unwrap());
    model.add("long");
    let mut picks = Vec::new();
    for _ in 0..10 {
        let got = sched.pick().await.unwrap();
        assert_eq!(got, model.pick());
        picks.push(got.unwrap());
    }
    let long = picks.iter().filter(|t| *t == "long").count();
    assert_eq!(long, 5, "{picks:?}");
}
