//! The Lua scripts of `host/store/lua/` where they are subtle, run against a real
//! redis-server: trims never drop an entry a group still needs; deleting, failing,
//! requeueing and expiring keep the tenant's totals right; a completion delivered twice
//! counts once; a notification's plan and cap admission happen once; usage periods
//! share one hash and old ones are pruned.

use std::collections::HashMap;
use std::time::Duration;

use redis::AsyncCommands;
use tapedeck::model::job::{JobOutput, JobRecord};
use tapedeck::queue::{Delivery, JobQueue, Requeue, convert_stream, trim_stream};
use tapedeck::store::keys::{notify_stream, usage_key};
use tapedeck::store::lua;
use tapedeck_tests::{RedisServer, pipeline_policy, queued_job};

const TENANT: &str = "lua";

fn job(id: &str, bytes: u64) -> JobRecord {
    queued_job(TENANT, id, bytes)
}

fn queue(redis: &RedisServer) -> JobQueue {
    queue_with_visibility(redis, Duration::from_secs(60))
}

fn queue_with_visibility(redis: &RedisServer, visibility: Duration) -> JobQueue {
    JobQueue::new(
        redis.pool(),
        pipeline_policy(visibility, Duration::from_millis(1)),
    )
}

async fn next(queue: &JobQueue) -> Delivery {
    queue
        .next_delivery("host-1-0", Duration::ZERO)
        .await
        .unwrap()
        .expect("an entry is waiting")
}

fn output(id: &str, bytes: u64) -> JobOutput {
    JobOutput {
        key: format!("out/{TENANT}/{id}.mp3"),
        bytes,
        duration_ms: 1000,
        bitrate_kbps: Some(192),
    }
}

/// The tenant's totals as `usage` holds them (missing fields: 0).
async fn totals(redis: &RedisServer) -> HashMap<String, i64> {
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    conn.hgetall(usage_key(TENANT)).await.unwrap()
}

fn of(t: &HashMap<String, i64>, field: &str) -> i64 {
    t.get(field).copied().unwrap_or(0)
}

async fn stream_ids(redis: &RedisServer, stream: &str) -> Vec<String> {
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let reply: redis::streams::StreamRangeReply = conn.xrange_all(stream).await.unwrap();
    reply.ids.into_iter().map(|e| e.id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trims_never_drop_an_entry_the_group_still_needs() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(dir.path());
    let queue = queue(&redis);
    for i in 0..5 {
        queue.enqueue(&job(&format!("j{i}"), 10)).await.unwrap();
    }
    let stream = convert_stream(TENANT);
    let first = next(&queue).await;
    let second = next(&queue).await;
    queue.start_attempt(&second).await.unwrap();
    // The first ack of the stream trims (COMPLETE's `trim`): below the oldest pending
    // entry, which is `first`, still converting.
    assert!(queue.complete(&second, &output("j1", 5)).await.unwrap());
    let left = stream_ids(&redis, &stream).await;
    assert!(
        left.contains(&first.entry_id),
        "the pending entry was trimmed: {left:?}"
    );
    assert_eq!(left.len(), 5, "nothing below the pending entry to drop");
    // The trim from outside (`trim_stream`, SAFE_TRIM): the same floor.
    let mut conn = redis.pool().get().await.unwrap();
    trim_stream(&mut conn, &stream).await.unwrap();
    assert!(stream_ids(&redis, &stream).await.contains(&first.entry_id));
    // Once `first` is acknowledged, only the three never delivered are needed.
    queue.start_attempt(&first).await.unwrap();
    assert!(queue.complete(&first, &output("j0", 5)).await.unwrap());
    trim_stream(&mut conn, &stream).await.unwrap();
    // The floor is then the last delivered entry (`second`'s): it stays, the three never
    // delivered behind it stay, everything below goes.
    let left = stream_ids(&redis, &stream).await;
    assert_eq!(left.len(), 4, "{left:?}");
    assert!(!left.contains(&first.entry_id) && left[0] == second.entry_id);
    // ... and each of them is still delivered.
    let mut jobs = Vec::new();
    for _ in 0..3 {
        jobs.push(next(&queue).await.job_id);
    }
    jobs.sort();
    assert_eq!(jobs, ["j2", "j3", "j4"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_failing_requeueing_and_expiring_keep_the_totals() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(dir.path());
    let queue = queue(&redis);
    for (id, bytes) in [("a", 100), ("b", 20), ("c", 3)] {
        queue.enqueue(&job(id, bytes)).await.unwrap();
    }
    let t = totals(&redis).await;
    assert_eq!((of(&t, "queued"), of(&t, "stored_bytes")), (3, 123));

    let a = next(&queue).await;
    queue.start_attempt(&a).await.unwrap();
    assert!(queue.complete(&a, &output("a", 7)).await.unwrap());
    let b = next(&queue).await;
    queue.start_attempt(&b).await.unwrap();
    queue.fail(&b, "broken", 1).await.unwrap();
    let c = queue.get(TENANT, "c").await.unwrap().unwrap();
    queue.delete(&c).await.unwrap();
    let t = totals(&redis).await;
    assert_eq!(
        [
            "queued",
            "converting",
            "done",
            "failed",
            "expired",
            "stored_bytes"
        ]
        .map(|f| of(&t, f)),
        [0, 0, 1, 1, 0, 127],
        "{t:?}"
    );

    let failed = queue.get(TENANT, "b").await.unwrap().unwrap();
    assert!(matches!(
        queue.requeue_failed(&failed).await.unwrap(),
        Requeue::Queued
    ));
    // A second replay of the same dead letter changes nothing.
    assert!(matches!(
        queue.requeue_failed(&failed).await.unwrap(),
        Requeue::NotFailed(_)
    ));
    let t = totals(&redis).await;
    assert_eq!((of(&t, "queued"), of(&t, "failed")), (1, 0), "{t:?}");

    let done = queue.get(TENANT, "a").await.unwrap().unwrap();
    assert!(queue.expire(&done).await.unwrap());
    assert!(!queue.expire(&done).await.unwrap(), "expired once");
    let t = totals(&redis).await;
    assert_eq!(
        (of(&t, "done"), of(&t, "expired"), of(&t, "stored_bytes")),
        (0, 1, 20),
        "{t:?}"
    );
    // Deleting an expired job: its bytes were given back when it expired.
    let expired = queue.get(TENANT, "a").await.unwrap().unwrap();
    queue.delete(&expired).await.unwrap();
    let t = totals(&redis).await;
    assert_eq!(
        (of(&t, "expired"), of(&t, "stored_bytes")),
        (0, 20),
        "{t:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completion_delivered_twice_counts_once() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(dir.path());
    let queue = queue(&redis);
    queue.enqueue(&job("a", 100)).await.unwrap();
    let a = next(&queue).await;
    queue.start_attempt(&a).await.unwrap();
    assert!(queue.complete(&a, &output("a", 7)).await.unwrap());
    // The same entry completed again (a worker that lost its lease and came back).
    assert!(queue.complete(&a, &output("a", 7)).await.unwrap());
    let t = totals(&redis).await;
    assert_eq!(
        (of(&t, "done"), of(&t, "converting"), of(&t, "stored_bytes")),
        (1, 0, 107),
        "{t:?}"
    );
    assert_eq!(stream_ids(&redis, &notify_stream(TENANT)).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notifications_plan_and_admission_happen_once() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(dir.path());
    let mut conn = redis.pool().get().await.unwrap();
    // `fresh`: read for the first time (no record looked for).
    let plan = |record: &str, json: &str, messages: usize, cap: u32, fresh: bool| {
        let mut call = lua::NOTIFY_PLAN.call();
        call.key("record", record.to_owned())
            .key("rate", "td:{lua}:notify:rate:1")
            .arg("plan", json.to_owned())
            .arg("messages", messages)
            .arg("cap", cap)
            .arg("record_ttl", 60)
            .arg("rate_ttl", 60)
            .arg("fresh", if fresh { "1" } else { "0" });
        call
    };
    let first: (u32, String) = plan("td:{lua}:notify:delivery:1-0", "[1,2]", 2, 3, true)
        .invoke(&mut conn)
        .await
        .unwrap();
    assert_eq!(first, (2, String::new()));
    // A fresh entry's plan and admission are stored together, with the record's TTL.
    let record: std::collections::HashMap<String, String> =
        conn.hgetall("td:{lua}:notify:delivery:1-0").await.unwrap();
    assert_eq!(record.get("plan").map(String::as_str), Some("[1,2]"));
    assert_eq!(record.get("admitted").map(String::as_str), Some("2"));
    let ttl: i64 = conn.ttl("td:{lua}:notify:delivery:1-0").await.unwrap();
    assert!((1..=60).contains(&ttl), "record TTL {ttl}");
    // Again, with another plan (a second consumer composing anew): the first answer and
    // the first plan.
    let again: (u32, String) = plan("td:{lua}:notify:delivery:1-0", "[1,2,3]", 3, 3, false)
        .invoke(&mut conn)
        .await
        .unwrap();
    assert_eq!(again, (2, "[1,2]".to_owned()));
    // The hour's counter took the first two only; the next entry gets what is left.
    let next: (u32, String) = plan("td:{lua}:notify:delivery:2-0", "[1,2]", 2, 3, true)
        .invoke(&mut conn)
        .await
        .unwrap();
    assert_eq!(next, (1, String::new()));
    let used: i64 = conn.get("td:{lua}:notify:rate:1").await.unwrap();
    assert_eq!(used, 3);
    // A plan stored by a consumer that stopped before admitting: admitted as stored.
    let _: () = conn
        .hset("td:{lua}:notify:delivery:3-0", "plan", "[1]")
        .await
        .unwrap();
    let adopted: (u32, String) = plan("td:{lua}:notify:delivery:3-0", "[1,2]", 2, 10, false)
        .invoke(&mut conn)
        .await
        .unwrap();
    assert_eq!(adopted, (1, "[1]".to_owned()));
    // A fresh entry with one message keeps no record (its ack is its record), but is
    // admitted against the cap all the same.
    let single: (u32, String) = plan("td:{lua}:notify:delivery:4-0", "[1]", 1, 10, true)
        .invoke(&mut conn)
        .await
        .unwrap();
    assert_eq!(single, (1, String::new()));
    let kept: bool = conn.exists("td:{lua}:notify:delivery:4-0").await.unwrap();
    assert!(!kept, "a one-message plan left a delivery record");
    let used: i64 = conn.get("td:{lua}:notify:rate:1").await.unwrap();
    assert_eq!(used, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_periods_live_in_one_hash_and_old_ones_are_pruned() {
    use tapedeck::store::usage;
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(dir.path());
    let queue = queue(&redis);
    let pool = redis.pool();
    queue.enqueue(&job("a", 100)).await.unwrap();
    queue.enqueue(&job("b", 50)).await.unwrap();
    let a = next(&queue).await;
    queue.start_attempt(&a).await.unwrap();
    // `a` converts (holds a lease), `b` waits: the report tells them apart although the
    // hash counts both as not finished.
    let now = usage::load(&pool, TENANT).await.unwrap();
    assert_eq!(
        (now.jobs.queued, now.jobs.converting, now.running),
        (1, 1, 1)
    );
    assert!(
        queue
            .complete_counting(&a, &output("a", 7), None, 1500)
            .await
            .unwrap()
            == tapedeck::queue::Completion::Done
    );
    queue.record_cpu(TENANT, 500).await.unwrap();
    let u = usage::load(&pool, TENANT).await.unwrap();
    assert_eq!((u.jobs.queued, u.jobs.converting, u.jobs.done), (1, 0, 1));
    for p in [&u.hours[0], &u.days[0]] {
        assert_eq!(
            (p.jobs, p.done, p.bytes_in, p.bytes_out, p.cpu_seconds),
            (2, 1, 150, 7, 2.0),
            "{p:?}"
        );
    }
    // A hash written before (a `converting` total of its own) still adds up.
    let mut conn = pool.get().await.unwrap();
    let _: () = conn.hset(usage_key(TENANT), "converting", 2).await.unwrap();
    let u = usage::load(&pool, TENANT).await.unwrap();
    assert_eq!((u.jobs.queued, u.jobs.converting), (3, 0));
    // Periods past their keeping time go; the current ones and the totals stay.
    let now_s = tapedeck::queue::now_ms() / 1000;
    let old_hour = (now_s - 9 * 86_400) / 3600 * 3600;
    let old_day = (now_s - 401 * 86_400) / 86_400 * 86_400;
    let kept_day = (now_s - 300 * 86_400) / 86_400 * 86_400;
    let _: () = conn
        .hset_multiple(
            usage_key(TENANT),
            &[
                (usage::hour_field(old_hour, "jobs"), 4),
                (usage::day_field(old_day, "jobs"), 4),
                (usage::day_field(kept_day, "jobs"), 4),
            ],
        )
        .await
        .unwrap();
    assert_eq!(usage::prune(&pool, TENANT, now_s).await.unwrap(), 2);
    let left: HashMap<String, i64> = conn.hgetall(usage_key(TENANT)).await.unwrap();
    assert!(
        left.contains_key(&usage::day_field(kept_day, "jobs")),
        "{left:?}"
    );
    assert_eq!(of(&left, "done"), 1);
    assert_eq!(usage::load(&pool, TENANT).await.unwrap().hours[0].jobs, 2);
}

/// A worker writes a retry entry before the script that requeues its job; a retry due at
/// once (a canary's failure retried on stable) can be promoted in between, while the job
/// is still `converting`. The entry must stay for a second look, or the job waits
/// `queued` forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_promoted_before_its_job_is_requeued_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(dir.path());
    let queue = queue(&redis);
    queue.enqueue(&job("r", 10)).await.unwrap();
    let d = next(&queue).await;
    queue.start_attempt(&d).await.unwrap();
    // The worker's first step, then the promoter, before the requeue script.
    let now = tapedeck::queue::now_ms();
    queue.scheduler().add_retry(TENANT, "r", now).await.unwrap();
    assert_eq!(queue.promote_due_retries().await.unwrap(), 0);
    let mut conn = redis.pool().get().await.unwrap();
    let kept: Option<f64> = conn
        .zscore(tapedeck::store::keys::SCHED_RETRIES, format!("{TENANT} r"))
        .await
        .unwrap();
    assert!(kept.is_some(), "the retry entry was dropped");
    // The requeue script runs; the next look promotes the job, which is delivered again.
    queue.retry_on_stable(&d, "canary failed").await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(queue.promote_due_retries().await.unwrap(), 1);
    assert_eq!(next(&queue).await.job_id, "r");
}

/// ... but not for ever: a job that stays `converting` (its worker died between writing
/// the retry entry and requeueing) is looked at again later each time, and past the
/// visibility timeout its retry entry is dropped (the attempt that claims the entry
/// decides), instead of being polled every half second while the job waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_whose_job_stays_converting_is_dropped_after_the_visibility_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(dir.path());
    let queue = queue_with_visibility(&redis, Duration::from_secs(1));
    queue.enqueue(&job("s", 10)).await.unwrap();
    let d = next(&queue).await;
    queue.start_attempt(&d).await.unwrap();
    let now = tapedeck::queue::now_ms();
    queue.scheduler().add_retry(TENANT, "s", now).await.unwrap();
    let mut conn = redis.pool().get().await.unwrap();
    let start = std::time::Instant::now();
    let mut looks = Vec::new();
    loop {
        queue.promote_due_retries().await.unwrap();
        let due: Option<f64> = conn
            .zscore(tapedeck::store::keys::SCHED_RETRIES, format!("{TENANT} s"))
            .await
            .unwrap();
        match due {
            Some(due) => {
                if looks.last() != Some(&(due as u64)) {
                    looks.push(due as u64);
                }
            }
            None => break,
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the retry entry is still polled after 5 s: {looks:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(looks.len() >= 2, "looked again before giving up: {looks:?}");
    // Each look came later after the one before.
    let gaps: Vec<u64> = looks.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.windows(2).all(|g| g[1] >= g[0]), "{gaps:?}");
    let j = queue.get(TENANT, "s").await.unwrap().unwrap();
    assert_eq!(j.status, tapedeck::queue::JobStatus::Converting);
}
