//! How processes behave when Redis goes away — a dropped
//! subscription or a restarted Redis costs no busy loop and no log flood; an outcome
//! recorded during an outage is not converted again; a restarted notifier takes over a
//! dead one's notifications at once and does not send one again; SIGTERM ends event
//! streams with a `reconnect` event; a process started before Redis waits for it, says
//! so on `/readyz`, and every 503 carries `Retry-After`.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

const OPERATOR: &str = "op-token-failure-0123456789abcdef01234";
const SMALL: &str = "aac-lc_8k_stereo_short__musicmetadata_pr-544.m4a";
const LONG: &str = "aac-lc_44k_stereo_music_long__lofty_TempleOS_Hymn.m4a";

/// Commands Redis ran per second over `window` (the process's own `INFO` calls are two).
async fn commands_per_second(redis: &RedisServer, window: Duration) -> f64 {
    let before = redis.commands_total();
    tokio::time::sleep(window).await;
    (redis.commands_total() - before) as f64 / window.as_secs_f64()
}

/// Subscribers of `channel` (`PUBSUB NUMSUB`).
fn subscribers(redis: &RedisServer, channel: &str) -> i64 {
    let (_, n): (String, i64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(channel)
        .query(&mut redis.conn())
        .unwrap();
    n
}

/// Pattern subscriptions (`PUBSUB NUMPAT`).
fn pattern_subscriptions(redis: &RedisServer) -> i64 {
    redis::cmd("PUBSUB")
        .arg("NUMPAT")
        .query(&mut redis.conn())
        .unwrap()
}

/// The job once it is done or failed, polling through the 503s of a gateway whose Redis
/// just came back.
async fn final_job(api: &Api, id: &str, limit: Duration) -> Value {
    let mut job = Value::Null;
    wait_for(limit, "the job to finish", async || {
        let r = api.get(&format!("/v1/jobs/{id}")).send().await.unwrap();
        if r.status() != 200 {
            assert_eq!(r.status(), 503, "GET /v1/jobs/{id}");
            return false;
        }
        job = r.json().await.unwrap();
        job["status"] == "done" || job["status"] == "failed"
    })
    .await;
    job
}

fn lines_in(log: &Path) -> usize {
    std::fs::read_to_string(log).map_or(0, |t| t.lines().count())
}

/// Waits until every subscription of a `--role all` process is there: the registry's
/// changes, the workers' cancel channel, the gateway's job events.
async fn all_subscribed(redis: &RedisServer, limit: Duration) {
    use tapedeck::store::keys::{JOB_CANCEL_CHANNEL, PLUGIN_CHANNEL};
    wait_for(limit, "the subscriptions", async || {
        subscribers(redis, PLUGIN_CHANNEL) >= 1
            && subscribers(redis, JOB_CANCEL_CHANNEL) >= 1
            && pattern_subscriptions(redis) >= 1
    })
    .await;
}

/// Defect 1: after `CLIENT KILL TYPE pubsub`, and after Redis is SIGKILLed and started
/// again, a process sends about as many commands as before (it used to spin at 13,000+
/// a second for good), logs a bounded number of lines while Redis is down (it used to
/// log thousands a second), subscribes again, and still applies registry changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_busy_loop_after_a_dropped_subscription_or_a_redis_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut redis = RedisServer::start(&dir.path().join("redis"));
    let log = dir.path().join("serve.log");
    let service = Service::spawn(
        ServiceOptions {
            role: Role::All,
            redis_url: &redis.url(),
            data_dir: &dir.path().join("data"),
            extra: vec![("admin-token", OPERATOR.to_string())],
        },
        Some(&log),
    );
    service.wait_ready(Duration::from_secs(30));
    let op = Api::new(&service.base).with_token(OPERATOR);
    wait_all_applied(&op, Duration::from_secs(30)).await;
    all_subscribed(&redis, Duration::from_secs(10)).await;
    let idle = commands_per_second(&redis, Duration::from_secs(3)).await;
    // Well above what an idle process sends, far below a loop that does not wait.
    let bound = 2.0 * idle + 50.0;

    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query(&mut redis.conn())
        .unwrap();
    assert!(killed >= 3, "the process's subscriptions: {killed}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after_kill = commands_per_second(&redis, Duration::from_secs(3)).await;
    eprintln!("idle: {idle:.1} commands/s; after CLIENT KILL TYPE pubsub: {after_kill:.1}");
    assert!(
        after_kill < bound,
        "{after_kill:.0} commands/s after the subscriptions dropped (idle: {idle:.0})"
    );
    all_subscribed(&redis, Duration::from_secs(15)).await;

    let before = lines_in(&log);
    redis.kill();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let logged = lines_in(&log) - before;
    redis.start_again();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let excerpt: Vec<&str> = text.lines().skip(before).take(40).collect();
    eprintln!(
        "{logged} lines logged in 3 s without Redis:\n{}",
        excerpt.join("\n")
    );
    assert!(
        logged < 30,
        "{logged} lines in 3 s without Redis:\n{}",
        excerpt.join("\n")
    );
    service.wait_ready(Duration::from_secs(30));
    all_subscribed(&redis, Duration::from_secs(15)).await;
    let after_restart = commands_per_second(&redis, Duration::from_secs(3)).await;
    eprintln!("after Redis restarted: {after_restart:.1} commands/s");
    assert!(
        after_restart < bound,
        "{after_restart:.0} commands/s after Redis restarted (idle: {idle:.0})"
    );

    // The registry watch still works: a new version is applied by the process.
    let version: u64 = redis::cmd("INCR")
        .arg(tapedeck::store::keys::PLUGIN_VERSION)
        .query(&mut redis.conn())
        .unwrap();
    let _: i64 = redis::cmd("PUBLISH")
        .arg(tapedeck::store::keys::PLUGIN_CHANNEL)
        .arg(version)
        .query(&mut redis.conn())
        .unwrap();
    wait_all_applied(&op, Duration::from_secs(10)).await;
    let active = op.get_json("/v1/admin/plugins/active").await;
    assert_eq!(active["version"], version, "{active}");
}

/// Defect 2: Redis goes down while a job converts and comes back after its MP3 is
/// stored: the job is marked done as soon as Redis is back, on its first attempt, by
/// the one run (it used to stay `converting` for the visibility timeout, then convert
/// again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outcome_waits_for_redis_instead_of_converting_again() {
    let dir = tempfile::tempdir().unwrap();
    let mut redis = RedisServer::start(&dir.path().join("redis"));
    let data = dir.path().join("data");
    let service = Service::role(
        Role::All,
        &redis.url(),
        &data,
        vec![("workers", "1".into())],
    );
    let me = Api::new(&service.base)
        .signed_up("default", "outage@example.com")
        .await;
    let id = me.upload_id(&media(LONG), &[]).await;
    me.wait_converting(&id, true).await;
    redis.kill();
    // The run goes on without Redis and stores its MP3; recording it then fails.
    let mp3 = data.join("blobs/out/default").join(format!("{id}.mp3"));
    wait_until(SLOW, || mp3.exists());
    tokio::time::sleep(Duration::from_secs(2)).await;
    redis.start_again();
    // Well within the 60 s visibility timeout.
    let job = final_job(&me, &id, Duration::from_secs(30)).await;
    assert_eq!(job["status"], "done", "{job}");
    assert_eq!(job["attempts"], 1, "{job}");
    let metrics = service.metrics_text().await;
    let runs: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("tapedeck_plugin_runs_total{") && l.contains("converter"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(runs, 1.0, "one converter run:\n{metrics}");
}

/// Defect 3: a process SIGKILLed while its notifications wait (SMTP refuses) leaves
/// them pending; its restart on the same host takes them over at once — each job's
/// mail arrives within seconds, not after the 60 s visibility timeout — and once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_notifier_takes_over_a_dead_ones_notifications_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(&dir.path().join("redis"));
    let data = dir.path().join("data");
    // Ports reserved, nothing listening yet: every delivery fails and is retried.
    let mut maildev = Maildev::new(dir.path());
    let (redis_url, smtp_url) = (redis.url(), maildev.smtp_url());
    let opts = || ServiceOptions {
        role: Role::All,
        redis_url: &redis_url,
        data_dir: &data,
        extra: vec![("smtp-url", smtp_url.clone())],
    };
    let mut first = Service::start(opts());
    let me = Api::new(&first.base)
        .signed_up("default", "crash@example.com")
        .await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let id = me.upload_id(&media(SMALL), &[]).await;
        assert_eq!(me.wait_final(&id, SLOW).await["status"], "done");
        ids.push(id);
    }
    let stream = tapedeck::store::keys::notify_stream("default");
    wait_until(Duration::from_secs(30), || {
        let pending: (u64, redis::Value, redis::Value, redis::Value) = redis::cmd("XPENDING")
            .arg(&stream)
            .arg("notifiers")
            .query(&mut redis.conn())
            .unwrap();
        pending.0 == 3
    });
    signal(first.pid(), libc::SIGKILL);
    let _ = first.child.wait();

    maildev.start();
    let _second = Service::start(opts());
    let since = Instant::now();
    wait_for(
        Duration::from_secs(20),
        "the mails of the killed process",
        async || maildev.emails().await.len() >= 3,
    )
    .await;
    eprintln!("mails delivered {:?} after the restart", since.elapsed());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mails = maildev.emails().await;
    assert_eq!(mails.len(), 3, "one mail per job: {mails:#?}");
    let mut message_ids: Vec<&str> = mails
        .iter()
        .map(|m| m["headers"]["message-id"].as_str().unwrap_or_default())
        .collect();
    message_ids.sort();
    message_ids.dedup();
    assert!(message_ids.iter().all(|id| !id.is_empty()), "{mails:#?}");
    assert_eq!(message_ids.len(), 3, "{message_ids:?}");
    for id in &ids {
        let of_job = mails
            .iter()
            .filter(|m| m.to_string().contains(id.as_str()))
            .count();
        assert_eq!(of_job, 1, "job {id}: {mails:#?}");
    }
}

/// A webhook endpoint that holds each request until the test lets it go, counting the
/// requests that arrive.
struct HeldHook {
    port: u16,
    arrived: Arc<AtomicUsize>,
    release: Arc<tokio::sync::Semaphore>,
}

impl HeldHook {
    async fn start() -> Self {
        let arrived = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(tokio::sync::Semaphore::new(0));
        let (a, r) = (arrived.clone(), release.clone());
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move || {
                let (a, r) = (a.clone(), r.clone());
                async move {
                    a.fetch_add(1, Ordering::SeqCst);
                    r.acquire().await.unwrap().forget();
                    axum::http::StatusCode::NO_CONTENT
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            port,
            arrived,
            release,
        }
    }
}

/// Defect 3, the other half: Redis goes down right after a webhook was delivered and
/// before it was recorded as sent; the record waits for Redis, so the webhook is not
/// sent again once the entry could be taken over (it used to be, a visibility timeout
/// later, with the same delivery id).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_delivered_during_an_outage_is_not_sent_again() {
    let dir = tempfile::tempdir().unwrap();
    let mut redis = RedisServer::start(&dir.path().join("redis"));
    let hook = HeldHook::start().await;
    let service = Service::role(
        Role::All,
        &redis.url(),
        &dir.path().join("data"),
        vec![
            ("webhook-allow", "127.0.0.1/32".into()),
            ("visibility-timeout-secs", "6".into()),
        ],
    );
    let admin = Api::new(&service.base)
        .signed_up_admin(&redis, "default", "hooks@example.com")
        .await;
    let url = format!("http://127.0.0.1:{}/hook", hook.port);
    let r = admin
        .put("/v1/tenant/notifications")
        .json(&json!({"email": false, "webhook": true, "webhook_url": url}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let id = admin.upload_id(&media(SMALL), &[]).await;
    assert_eq!(admin.wait_final(&id, SLOW).await["status"], "done");
    wait_until(Duration::from_secs(30), || {
        hook.arrived.load(Ordering::SeqCst) == 1
    });
    // Delivered, not yet recorded: Redis goes, then the answer comes.
    redis.kill();
    hook.release.add_permits(100);
    tokio::time::sleep(Duration::from_secs(2)).await;
    redis.start_again();
    // Twice the visibility timeout: an entry left pending would have been taken over.
    tokio::time::sleep(Duration::from_secs(14)).await;
    assert_eq!(
        hook.arrived.load(Ordering::SeqCst),
        1,
        "the webhook was sent again"
    );
    let pending: (u64, redis::Value, redis::Value, redis::Value) = redis::cmd("XPENDING")
        .arg(tapedeck::store::keys::notify_stream("default"))
        .arg("notifiers")
        .query(&mut redis.conn())
        .unwrap();
    assert_eq!(pending.0, 0, "the notification was acknowledged");
}

/// Defect 4: SIGTERM ends an open event stream at once with a last `reconnect` event
/// (with `retry:`), and the gateway exits within a couple of seconds (it used to hold
/// the stream for the 20 s shutdown timeout, then cut it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_event_streams_with_a_reconnect_event() {
    use futures::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(&dir.path().join("redis"));
    // A gateway alone: the job stays queued and its stream open.
    let mut gateway = Service::role(
        Role::Gateway,
        &redis.url(),
        &dir.path().join("data"),
        vec![],
    );
    let me = Api::new(&gateway.base)
        .signed_up("default", "sse@example.com")
        .await;
    let id = me.upload_id(&media(SMALL), &[]).await;
    let r = me
        .get(&format!("/v1/jobs/{id}/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut body = r.bytes_stream();
    let mut text = String::new();
    while !text.contains("\n\n") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), body.next())
            .await
            .expect("the first event")
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(text.starts_with("event: status"), "{text}");

    let sent = Instant::now();
    signal(gateway.pid(), libc::SIGTERM);
    let rest = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(chunk) = body.next().await {
            text.push_str(&String::from_utf8_lossy(
                &chunk.expect("the stream ends cleanly"),
            ));
        }
    })
    .await;
    assert!(rest.is_ok(), "the stream stayed open: {text}");
    let ended = sent.elapsed();
    let last = text.trim_end().rsplit("\n\n").next().unwrap();
    assert!(last.contains("event: reconnect"), "{text}");
    assert!(
        last.lines().any(|l| l.starts_with("retry:")),
        "a retry interval: {last}"
    );
    wait_until(Duration::from_secs(5), || {
        gateway.child.try_wait().unwrap().is_some()
    });
    let exited = sent.elapsed();
    eprintln!("stream ended after {ended:?}, gateway exited after {exited:?}");
    let status = gateway.child.wait().unwrap();
    assert!(status.success(), "{status}");
}

/// Defects 5 and 6: a process started while Redis is unreachable stays up, answers
/// `/healthz`, answers `/readyz` with a 503 naming the failed check (JSON, with
/// `Retry-After`), and starts once Redis appears (it used to exit after 10 s); in an
/// outage later, API 503s carry `Retry-After` and `/readyz` names Redis again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_started_before_redis_waits_for_it_and_says_what_it_waits_for() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut service = Service::spawn(
        ServiceOptions {
            role: Role::All,
            redis_url: &format!("redis://127.0.0.1:{port}"),
            data_dir: &dir.path().join("data"),
            extra: vec![],
        },
        None,
    );
    let started = Instant::now();
    let http = reqwest::Client::new();
    let health = http
        .get(format!("{}/healthz", service.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let not_ready = |service: &Service| {
        let (http, url) = (http.clone(), format!("{}/readyz", service.base));
        async move {
            let r = http.get(url).send().await.unwrap();
            assert_eq!(r.status(), 503);
            assert!(r.headers().contains_key("retry-after"), "{:?}", r.headers());
            let v: Value = r.json().await.unwrap();
            assert_eq!(v["error"]["code"], "unavailable", "{v}");
            let redis = v["error"]["checks"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["name"] == "redis")
                .cloned()
                .unwrap_or_else(|| panic!("a redis check: {v}"));
            assert_eq!(redis["ok"], false, "{v}");
            assert!(
                redis["error"].as_str().is_some_and(|e| !e.is_empty()),
                "{v}"
            );
            assert!(
                v["error"]["message"].as_str().unwrap().contains("redis"),
                "{v}"
            );
            v
        }
    };
    not_ready(&service).await;
    let api = http
        .get(format!("{}/v1/jobs", service.base))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 503);
    assert!(api.headers().contains_key("retry-after"));
    // Past the 10 s after which it used to give up.
    tokio::time::sleep(Duration::from_secs(12).saturating_sub(started.elapsed())).await;
    assert!(
        service.child.try_wait().unwrap().is_none(),
        "the process exited without Redis"
    );
    not_ready(&service).await;

    let mut redis = RedisServer::start_on(&dir.path().join("redis"), port);
    service.wait_ready(Duration::from_secs(30));
    let me = Api::new(&service.base)
        .signed_up("default", "early@example.com")
        .await;
    let job = me.upload_and_wait(&media(SMALL), &[]).await;
    assert_eq!(job["status"], "done", "{job}");

    // An outage: answers that need Redis are 503s with Retry-After.
    redis.kill();
    // Past the session cache: the token is checked against Redis again.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let r = me
        .get(&format!("/v1/jobs/{}", job["id"].as_str().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"), "{:?}", r.headers());
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "unavailable", "{v}");
    let v = not_ready(&service).await;
    for check in v["error"]["checks"].as_array().unwrap() {
        if check["name"] != "redis" {
            assert_eq!(check["ok"], true, "{v}");
        }
    }
}
