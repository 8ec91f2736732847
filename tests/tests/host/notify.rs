//! Notifications end to end: the real pipeline scripts write entries to each tenant's
//! notify stream (`td:{T}:notify`) of a real redis-server, the notifier consumer runs the
//! real notifier component, mail goes to a real SMTP server (maildev, installed by
//! `scripts/setup.sh`) and webhooks to a real HTTP receiver on 127.0.0.1.
//!
//! `bench_notifications_per_second` (ignored) measures throughput and splits the time
//! into wasm and SMTP: `cargo test --release -p tapedeck-tests --test host --
//! notify::bench_notifications_per_second --ignored --nocapture`.
//!
//! Servers (redis-server, maildev, the webhook receiver) come from the testkit
//! (`tests/src/lib.rs`).

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;
use tapedeck::model::notify::Composer;
use tapedeck::notify::{
    self, NotifierConfig, NotifyConsumer, SIGNATURE_HEADER, SettingsUpdate, TIMESTAMP_HEADER,
};
use tapedeck::queue::{JobInput, JobOutput, JobQueue, JobRecord, now_ms};
use tapedeck_tests::{Maildev, Receiver, RedisServer, free_port, pipeline_policy, wait_for};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

/// The default component, compiled once per test binary.
fn plugin() -> Arc<dyn Composer> {
    static CACHE: OnceLock<(TempDir, Arc<dyn Composer>)> = OnceLock::new();
    CACHE
        .get_or_init(|| {
            let dir = TempDir::new().unwrap();
            let plugin =
                tapedeck::serve::load_notifier(dir.path(), tapedeck::components::DEFAULT_NOTIFIER)
                    .unwrap();
            (dir, plugin)
        })
        .1
        .clone()
}

fn config(dir: &Path, smtp: Option<String>) -> NotifierConfig {
    let blobs = tapedeck::storage::BlobStore::open(dir.join("blobs").to_str().unwrap()).unwrap();
    let mut c = NotifierConfig::new(
        tapedeck::storage::Outbox::new(blobs),
        "https://tapedeck.test",
    );
    c.smtp_url = smtp;
    c.smtp_timeout = Duration::from_secs(2);
    c.webhook_timeout = Duration::from_secs(2);
    c.retry_base = Duration::from_millis(200);
    c.retry_max = Duration::from_secs(1);
    c.max_attempts = 30;
    c.poll_interval = Duration::from_millis(50);
    c.consumer = format!("test-{}", free_port());
    c
}

/// A running consumer, stopped on drop.
struct Running {
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// The default component and test config, delivering to `maildev`.
    fn with_defaults(pool: &tapedeck_store::Pool, dir: &Path, maildev: &Maildev) -> Self {
        let config = config(dir, Some(maildev.smtp_url()));
        Self::start(NotifyConsumer::new(pool.clone(), plugin(), config).unwrap())
    }

    fn start(consumer: NotifyConsumer) -> Self {
        let stop = CancellationToken::new();
        let s = stop.clone();
        let task = tokio::spawn(async move { consumer.run(s).await.unwrap() });
        Self {
            stop,
            task: Some(task),
        }
    }

    async fn stop(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Runs a job through the real pipeline scripts: enqueue, take, then done or failed.
async fn finish_job(
    queue: &JobQueue,
    tenant: &str,
    owner: &str,
    name: &str,
    failure: Option<&str>,
) -> String {
    let id = format!("job{}", rand::random::<u32>());
    let input = JobInput {
        name: name.into(),
        bytes: 1000,
        key: format!("in/{tenant}/{id}"),
    };
    let user = format!("u-{owner}");
    let job = JobRecord::queued(&id, tenant, (&user, owner), input, Default::default());
    queue.enqueue(&job).await.unwrap();
    let delivery = loop {
        let d = queue
            .next_delivery("w1", Duration::ZERO)
            .await
            .unwrap()
            .unwrap();
        if d.job_id == id {
            break d;
        }
    };
    queue.start_attempt(&delivery).await.unwrap();
    match failure {
        None => {
            let output = JobOutput {
                bytes: 3 << 20,
                duration_ms: 185_000,
                bitrate_kbps: Some(192),
                key: format!("out/{tenant}/{id}"),
            };
            assert!(queue.complete(&delivery, &output).await.unwrap());
        }
        Some(reason) => queue.fail(&delivery, reason, 1).await.unwrap(),
    }
    id
}

fn queue(pool: &tapedeck_store::Pool) -> JobQueue {
    JobQueue::new(
        pool.clone(),
        pipeline_policy(Duration::from_secs(30), Duration::from_millis(100)),
    )
}

async fn enable_webhook(pool: &tapedeck_store::Pool, tenant: &str, url: &str) -> String {
    let (_, secret) = notify::settings::update(
        pool,
        tenant,
        &SettingsUpdate {
            webhook: Some(true),
            webhook_url: Some(url.into()),
            ..Default::default()
        },
        // Set-time checks are the gateway's (tested end to end); here the URLs must get
        // through so that delivery's own check is what is tested.
        &notify::AddressPolicy::new(vec![
            "127.0.0.1".parse().unwrap(),
            "169.254.0.0/16".parse().unwrap(),
        ]),
    )
    .await
    .unwrap();
    secret.expect("a secret is generated when webhooks are turned on")
}

/// Every tenant that has (had) a stream.
async fn tenants(conn: &mut tapedeck_store::Connection) -> Vec<String> {
    redis::cmd("SMEMBERS")
        .arg(tapedeck::store::keys::TENANTS)
        .query_async(conn)
        .await
        .unwrap()
}

/// The notification dead letters of every tenant.
async fn dead_letters(
    pool: &tapedeck_store::Pool,
) -> Vec<std::collections::HashMap<String, String>> {
    let mut conn = pool.get().await.unwrap();
    let mut all = Vec::new();
    for tenant in tenants(&mut conn).await {
        let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(notify::notify_dead_key(&tenant))
            .arg("-")
            .arg("+")
            .query_async(&mut conn)
            .await
            .unwrap();
        all.extend(reply.ids.into_iter().map(|e| {
            e.map
                .into_iter()
                .map(|(k, v)| (k, redis::from_redis_value::<String>(v).unwrap()))
                .collect()
        }));
    }
    all
}

/// Notify entries delivered to a notifier and not yet acknowledged, over all tenants.
async fn pending(pool: &tapedeck_store::Pool) -> i64 {
    let mut conn = pool.get().await.unwrap();
    let mut total = 0;
    for tenant in tenants(&mut conn).await {
        let summary: redis::RedisResult<Vec<redis::Value>> = redis::cmd("XPENDING")
            .arg(tapedeck::store::keys::notify_stream(&tenant))
            .arg(notify::GROUP)
            .query_async(&mut conn)
            .await;
        if let Ok(summary) = summary {
            total += redis::from_redis_value::<i64>(summary[0].clone()).unwrap();
        }
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn finished_job_sends_one_mail_with_link_and_one_signed_webhook() {
    let dir = TempDir::new().unwrap();
    let redis = RedisServer::start(&dir.path().join("redis"));
    let maildev = Maildev::started(dir.path());
    let receiver = Receiver::start().await;
    let pool = redis.pool();
    let secret = enable_webhook(&pool, "acme", &receiver.url()).await;
    let mut cfg = config(dir.path(), Some(maildev.smtp_url()));
    cfg.webhook_allow = notify::parse_allow_list("127.0.0.1").unwrap();
    let running = Running::start(NotifyConsumer::new(pool.clone(), plugin(), cfg).unwrap());

    let id = finish_job(&queue(&pool), "acme", "ann@example.com", "talk.mp4", None).await;
    wait_for(
        Duration::from_secs(30),
        "the mail and the webhook",
        async || maildev.emails().await.len() == 1 && receiver.received().len() == 1,
    )
    .await;
    wait_for(Duration::from_secs(10), "the ack", async || {
        pending(&pool).await == 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    running.stop().await;

    let mails = maildev.emails().await;
    assert_eq!(mails.len(), 1, "exactly one e-mail");
    let mail = &mails[0];
    assert_eq!(mail["to"][0]["address"], "ann@example.com");
    assert_eq!(mail["envelope"]["to"].as_array().unwrap().len(), 1);
    assert_eq!(mail["subject"], "Your MP3 is ready: talk.mp4");
    let link = format!("https://tapedeck.test/v1/jobs/{id}/output");
    assert!(mail["text"].as_str().unwrap().contains(&link), "{mail}");

    let hooks = receiver.received();
    assert_eq!(hooks.len(), 1, "exactly one webhook");
    let hook = &hooks[0];
    let ts = hook.headers[TIMESTAMP_HEADER].to_str().unwrap();
    let sig = hook.headers[SIGNATURE_HEADER].to_str().unwrap();
    notify::verify_signature(
        secret.as_bytes(),
        ts,
        hook.body.as_bytes(),
        sig,
        now_ms() / 1000,
        Duration::from_secs(300),
    )
    .expect("the signature verifies");
    assert!(
        notify::verify_signature(
            b"wrong",
            ts,
            hook.body.as_bytes(),
            sig,
            now_ms() / 1000,
            Duration::from_secs(300)
        )
        .is_err()
    );
    let body: Value = serde_json::from_str(&hook.body).unwrap();
    assert_eq!(body["job_id"], id.as_str());
    assert_eq!(body["status"], "done");
    let signed = body["download_url"].as_str().unwrap();
    assert!(
        signed.starts_with(&format!("{link}?tenant=acme&expires=")),
        "{signed}"
    );
    assert_eq!(body["output_bytes"], 3 << 20);
    assert!(dead_letters(&pool).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failed_job_mail_says_why_and_what_to_do() {
    let dir = TempDir::new().unwrap();
    let redis = RedisServer::start(&dir.path().join("redis"));
    let maildev = Maildev::started(dir.path());
    let pool = redis.pool();
    let running = Running::with_defaults(&pool, dir.path(), &maildev);
    finish_job(
        &queue(&pool),
        "default",
        "bob@example.com",
        "silent.mov",
        Some("input has no audio track"),
    )
    .await;
    wait_for(Duration::from_secs(30), "the mail", async || {
        maildev.emails().await.len() == 1
    })
    .await;
    running.stop().await;
    let mail = &maildev.emails().await[0];
    assert_eq!(mail["to"][0]["address"], "bob@example.com");
    assert_eq!(mail["subject"], "Conversion failed: silent.mov");
    let text = mail["text"].as_str().unwrap();
    assert!(text.contains("Why: input has no audio track."), "{text}");
    assert!(text.contains("What to do:"), "{text}");
    assert!(
        !text.contains("/output"),
        "a failed job has no download link: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn smtp_down_then_back_delivers_every_mail_once() {
    let dir = TempDir::new().unwrap();
    let redis = RedisServer::start(&dir.path().join("redis"));
    let mut maildev = Maildev::new(dir.path());
    let pool = redis.pool();
    let consumer = NotifyConsumer::new(
        pool.clone(),
        plugin(),
        config(dir.path(), Some(maildev.smtp_url())),
    )
    .unwrap();
    let stats = consumer.stats();
    let running = Running::start(consumer);
    let q = queue(&pool);
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            finish_job(
                &q,
                "default",
                &format!("user{i}@example.com"),
                &format!("f{i}.mp4"),
                None,
            )
            .await,
        );
    }
    wait_for(
        Duration::from_secs(20),
        "failed attempts while SMTP is down",
        async || stats.retries.load(Ordering::Relaxed) >= 5,
    )
    .await;
    assert_eq!(
        pending(&pool).await,
        5,
        "nothing is acknowledged while SMTP is down"
    );
    maildev.start();
    wait_for(Duration::from_secs(60), "every mail", async || {
        maildev.emails().await.len() >= 5
    })
    .await;
    wait_for(Duration::from_secs(10), "every ack", async || {
        pending(&pool).await == 0
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    running.stop().await;
    let mails = maildev.emails().await;
    let mut to: Vec<String> = mails
        .iter()
        .map(|m| m["to"][0]["address"].as_str().unwrap().to_string())
        .collect();
    to.sort();
    let expected: Vec<String> = (0..5).map(|i| format!("user{i}@example.com")).collect();
    assert_eq!(to, expected, "each mail exactly once");
    assert!(dead_letters(&pool).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn webhooks_to_loopback_and_metadata_are_refused_unless_allow_listed() {
    let dir = TempDir::new().unwrap();
    let redis = RedisServer::start(&dir.path().join("redis"));
    let receiver = Receiver::start().await;
    let pool = redis.pool();
    enable_webhook(&pool, "loop", &receiver.url()).await;
    enable_webhook(&pool, "meta", "http://169.254.169.254/latest/meta-data/").await;
    // No SMTP: mail goes to the outbox, so the test sees the e-mail still goes out.
    let cfg = config(dir.path(), None);
    let outbox = dir.path().join("blobs/outbox");
    let running = Running::start(NotifyConsumer::new(pool.clone(), plugin(), cfg).unwrap());
    let q = queue(&pool);
    finish_job(&q, "loop", "a@example.com", "a.mp4", None).await;
    finish_job(&q, "meta", "b@example.com", "b.mp4", None).await;
    wait_for(Duration::from_secs(30), "two dead letters", async || {
        dead_letters(&pool).await.len() == 2
    })
    .await;
    wait_for(Duration::from_secs(10), "the acks", async || {
        pending(&pool).await == 0
    })
    .await;
    running.stop().await;
    assert!(receiver.received().is_empty(), "nothing reached 127.0.0.1");
    let reasons: Vec<String> = dead_letters(&pool)
        .await
        .into_iter()
        .map(|d| d["reason"].clone())
        .collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("127.0.0.1") && r.contains("refused")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("169.254.169.254") && r.contains("refused")),
        "{reasons:?}"
    );
    assert_eq!(
        std::fs::read_dir(&outbox).unwrap().count(),
        2,
        "the e-mails still went out"
    );

    // The same loopback receiver, allow-listed by the operator: delivered.
    let mut cfg = config(dir.path(), None);
    cfg.webhook_allow = notify::parse_allow_list("127.0.0.0/8").unwrap();
    let running = Running::start(NotifyConsumer::new(pool.clone(), plugin(), cfg).unwrap());
    finish_job(&q, "loop", "a@example.com", "c.mp4", None).await;
    wait_for(
        Duration::from_secs(30),
        "the allow-listed webhook",
        async || receiver.received().len() == 1,
    )
    .await;
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crlf_and_header_text_in_a_file_name_inject_no_header() {
    let dir = TempDir::new().unwrap();
    let redis = RedisServer::start(&dir.path().join("redis"));
    let maildev = Maildev::started(dir.path());
    let pool = redis.pool();
    let running = Running::with_defaults(&pool, dir.path(), &maildev);
    let name = "song.mp4\r\nBcc: evil@example.com\r\nX-Injected: yes\r\n\r\n<b>body</b>";
    finish_job(&queue(&pool), "default", "carol@example.com", name, None).await;
    wait_for(Duration::from_secs(30), "the mail", async || {
        maildev.emails().await.len() == 1
    })
    .await;
    running.stop().await;
    let mail = &maildev.emails().await[0];
    let headers = mail["headers"].as_object().unwrap();
    assert!(!headers.contains_key("x-injected"), "{headers:?}");
    assert!(!headers.contains_key("bcc"), "{headers:?}");
    assert_eq!(
        mail["envelope"]["to"].as_array().unwrap().len(),
        1,
        "{mail}"
    );
    assert_eq!(mail["envelope"]["to"][0]["address"], "carol@example.com");
    assert_eq!(mail["calculatedBcc"].as_array().map_or(0, Vec::len), 0);
    let subject = mail["subject"].as_str().unwrap();
    assert!(!subject.contains(['\r', '\n']), "{subject:?}");
    assert!(
        subject.starts_with("Your MP3 is ready: song.mp4 Bcc: evil@example.com X-Injected: yes"),
        "{subject:?}"
    );
    assert!(
        !mail["html"]
            .as_str()
            .unwrap_or_default()
            .contains("<b>body</b>")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_taken_over_notification_sends_nothing_twice() {
    let dir = TempDir::new().unwrap();
    let redis = RedisServer::start(&dir.path().join("redis"));
    let maildev = Maildev::started(dir.path());
    let receiver = Receiver::start().await;
    receiver.fail_first.store(usize::MAX / 2, Ordering::SeqCst);
    let pool = redis.pool();
    enable_webhook(&pool, "acme", &receiver.url()).await;
    let mut cfg = config(dir.path(), Some(maildev.smtp_url()));
    cfg.webhook_allow = notify::parse_allow_list("127.0.0.1").unwrap();
    cfg.visibility_timeout = Duration::from_secs(1);
    cfg.consumer = "first".into();
    let first = NotifyConsumer::new(pool.clone(), plugin(), cfg.clone()).unwrap();
    let stats = first.stats();
    let running = Running::start(first);
    finish_job(&queue(&pool), "acme", "dan@example.com", "d.mp4", None).await;
    // The mail goes out, the webhook keeps failing: the first consumer "dies" mid-retry.
    wait_for(
        Duration::from_secs(30),
        "the mail and a failing webhook",
        async || maildev.emails().await.len() == 1 && stats.retries.load(Ordering::Relaxed) >= 2,
    )
    .await;
    running.stop().await;
    assert_eq!(pending(&pool).await, 1, "the entry stays pending");

    receiver.fail_first.store(0, Ordering::SeqCst);
    cfg.consumer = "second".into();
    let running = Running::start(NotifyConsumer::new(pool.clone(), plugin(), cfg).unwrap());
    wait_for(Duration::from_secs(30), "the webhook", async || {
        receiver.received().len() == 1
    })
    .await;
    wait_for(Duration::from_secs(10), "the ack", async || {
        pending(&pool).await == 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    running.stop().await;
    assert_eq!(
        maildev.emails().await.len(),
        1,
        "the mail was not sent again"
    );
    assert_eq!(receiver.received().len(), 1);
}

/// Notifications per second through the component and the host to maildev, with the
/// time in wasm and in SMTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "benchmark; run with --ignored --nocapture"]
async fn bench_notifications_per_second() {
    let n: usize = std::env::var("NOTIFY_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let dir = TempDir::new().unwrap();
    let redis = RedisServer::start(&dir.path().join("redis"));
    let maildev = Maildev::started(dir.path());
    let pool = redis.pool();
    let q = queue(&pool);
    for i in 0..n {
        finish_job(
            &q,
            "default",
            &format!("u{i}@example.com"),
            &format!("file {i}.mp4"),
            None,
        )
        .await;
    }
    let mut cfg = config(dir.path(), Some(maildev.smtp_url()));
    cfg.default_max_per_hour = u32::MAX;
    let consumer = NotifyConsumer::new(pool.clone(), plugin(), cfg).unwrap();
    let stats = consumer.stats();
    // Warm the component (first instantiation) outside the measurement.
    let started = Instant::now();
    let running = Running::start(consumer);
    wait_for(Duration::from_secs(600), "every notification", async || {
        stats.notifications.load(Ordering::Relaxed) as usize >= n
    })
    .await;
    let elapsed = started.elapsed();
    running.stop().await;
    let wasm = Duration::from_nanos(stats.wasm_nanos.load(Ordering::Relaxed));
    let smtp = Duration::from_nanos(stats.delivery_nanos.load(Ordering::Relaxed));
    println!(
        "notify bench: {n} notifications in {:.2} s = {:.0}/s (16 in flight); per notification: wasm {:.3} ms, SMTP {:.3} ms (sums over tasks: wasm {:.2} s, SMTP {:.2} s)",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64(),
        wasm.as_secs_f64() * 1000.0 / n as f64,
        smtp.as_secs_f64() * 1000.0 / n as f64,
        wasm.as_secs_f64(),
        smtp.as_secs_f64(),
    );
    assert_eq!(stats.sent.load(Ordering::Relaxed) as usize, n);
}

/// A tenant's hourly cap: messages past it are dead-lettered with the reason, never sent
/// and never silently dropped; another tenant is not affected.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_hourly_cap_dead_letters_the_excess() {
    let dir = TempDir::new().unwrap();
    let redis = RedisServer::start(&dir.path().join("redis"));
    let maildev = Maildev::started(dir.path());
    let pool = redis.pool();
    notify::settings::update(
        &pool,
        "capped",
        &SettingsUpdate {
            max_per_hour: Some(2),
            ..Default::default()
        },
        &notify::AddressPolicy::default(),
    )
    .await
    .unwrap();
    let running = Running::with_defaults(&pool, dir.path(), &maildev);
    let q = queue(&pool);
    for i in 0..4 {
        finish_job(&q, "capped", "cap@example.com", &format!("f{i}.mp4"), None).await;
    }
    finish_job(&q, "default", "free@example.com", "other.mp4", None).await;
    wait_for(
        Duration::from_secs(30),
        "every notification handled",
        async || pending(&pool).await == 0 && dead_letters(&pool).await.len() == 2,
    )
    .await;
    wait_for(Duration::from_secs(30), "the admitted mail", async || {
        maildev.emails().await.len() == 3
    })
    .await;
    running.stop().await;
    let mails = maildev.emails().await;
    let to = |who: &str| {
        mails
            .iter()
            .filter(|m| m["to"][0]["address"] == who)
            .count()
    };
    assert_eq!(to("cap@example.com"), 2);
    assert_eq!(to("free@example.com"), 1);
    for dead in dead_letters(&pool).await {
        assert!(
            dead.values()
                .any(|v| v.contains("cap of 2 messages per hour")),
            "{dead:?}"
        );
    }
}
