//! The job-event JSON has one type, `JobChange`: every message the real pipeline scripts
//! (and the delete) publish on a job's channel parses into it, with the status each
//! transition promises; a job nobody watches is changed without publishing.

use std::time::Duration;

use futures::StreamExt;
use tapedeck::model::job::{ChangeStatus, JobChange, JobOutput, JobRecord};
use tapedeck::queue::{AttemptStart, JobQueue, events_channel};
use tapedeck_tests::{RedisServer, pipeline_policy, queued_job};

const TENANT: &str = "ev";

fn job(id: &str) -> JobRecord {
    queued_job(TENANT, id, 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_published_change_parses_as_a_job_change() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(dir.path());
    let pool = redis.pool();
    let queue = JobQueue::new(
        pool,
        pipeline_policy(Duration::from_secs(60), Duration::from_millis(1)),
    );
    let client = redis::Client::open(redis.url()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    for id in ["ok1", "bad1"] {
        pubsub.subscribe(events_channel(id)).await.unwrap();
        queue.enqueue(&job(id)).await.unwrap();
    }
    pubsub.subscribe(events_channel("quiet")).await.unwrap();
    // Changes are published for watched jobs (an event stream marks its job); `quiet`
    // is never watched.
    assert!(queue.watch(TENANT, "ok1").await.unwrap());
    assert!(queue.watch(TENANT, "bad1").await.unwrap());
    assert!(!queue.watch(TENANT, "missing").await.unwrap());
    let next = || async {
        queue
            .next_delivery("host-1-0", Duration::ZERO)
            .await
            .unwrap()
            .expect("an entry is waiting")
    };

    // ok1: converting, progress, done.
    let d = next().await;
    assert_eq!(d.job_id, "ok1");
    assert_eq!(
        queue.start_attempt(&d).await.unwrap(),
        AttemptStart::Convert(1)
    );
    queue.report_progress(TENANT, "ok1", 0.5).await.unwrap();
    let out = JobOutput {
        key: "out/ev/ok1.mp3".into(),
        bytes: 10,
        duration_ms: 5,
        bitrate_kbps: Some(192),
    };
    assert!(queue.complete(&d, &out).await.unwrap());
    // bad1: converting, retried (queued with an error), then failed, then deleted.
    let d = next().await;
    assert_eq!(d.job_id, "bad1");
    queue.start_attempt(&d).await.unwrap();
    queue
        .retry_later(&d, "flaky", Duration::from_millis(1))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    queue.promote_due_retries().await.unwrap();
    let d = next().await;
    queue.start_attempt(&d).await.unwrap();
    queue.fail(&d, "broken", 2).await.unwrap();
    let failed = queue.get(TENANT, "bad1").await.unwrap().unwrap();
    queue.delete(&failed).await.unwrap();
    // quiet: converting, progress, done, with nobody watching: nothing published.
    queue.enqueue(&job("quiet")).await.unwrap();
    let d = next().await;
    assert_eq!(d.job_id, "quiet");
    queue.start_attempt(&d).await.unwrap();
    queue.report_progress(TENANT, "quiet", 0.5).await.unwrap();
    assert!(queue.complete(&d, &out).await.unwrap());

    let mut messages = pubsub.into_on_message();
    let mut seen: Vec<(String, JobChange)> = Vec::new();
    while seen.len() < 8 {
        let msg = tokio::time::timeout(Duration::from_secs(5), messages.next())
            .await
            .expect("the scripts publish every change")
            .unwrap();
        let payload: String = msg.get_payload().unwrap();
        let change: JobChange = serde_json::from_str(&payload)
            .unwrap_or_else(|e| panic!("{payload} is not a JobChange: {e}"));
        seen.push((msg.get_channel_name().to_owned(), change));
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(500), messages.next())
            .await
            .is_err(),
        "a change of a job nobody watches was published"
    );
    let of = |id: &str| -> Vec<JobChange> {
        seen.iter()
            .filter(|(c, _)| *c == events_channel(id))
            .map(|(_, change)| change.clone())
            .collect()
    };
    let statuses = |id| of(id).iter().map(|c| c.status).collect::<Vec<_>>();
    use ChangeStatus::*;
    assert_eq!(statuses("ok1"), [Converting, Converting, Done]);
    assert_eq!(of("ok1")[1].converting_progress(), Some(0.5));
    assert_eq!(
        statuses("bad1"),
        [Converting, Queued, Converting, Failed, Deleted]
    );
    let bad = of("bad1");
    assert_eq!(bad[1].error.as_deref(), Some("flaky"));
    assert_eq!(bad[3].error.as_deref(), Some("broken"));
}
