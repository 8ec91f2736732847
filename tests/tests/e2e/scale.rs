//! Many machines: the outbox lives in the blob store every process shares, so
//! any gateway shows the mail any worker wrote; and the chaos suite's short run (the full
//! one is `make chaos`).

use super::*;

const OPERATOR: &str = "op-token-0123456789abcdef0123456789";

/// Two gateways and a worker, each with a data dir of its own (as on three machines),
/// one Redis and one blob store: the worker's notification mail is listed, and readable,
/// on both gateways, and nothing is written to the worker's own data dir.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_gateway_shows_the_mail_every_worker_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(&dir.path().join("redis"));
    let url = redis.url();
    let blobs = dir.path().join("shared-blobs");
    let machine = |name: &str, role: Role| {
        let extra = vec![
            ("blob-url", blobs.display().to_string()),
            ("admin-token", OPERATOR.to_string()),
            ("workers", "1".into()),
        ];
        Service::role(role, &url, &dir.path().join(name), extra)
    };
    let first = machine("gateway-1", Role::Gateway);
    let second = machine("gateway-2", Role::Gateway);
    let _worker = machine("worker", Role::Worker);

    let me = Api::new(&first.base)
        .signed_up("default", "ann@example.com")
        .await;
    let job = me
        .upload_and_wait(
            &media("alac_44k_stereo_itunes__musicmetadata_BethHart.m4a"),
            &[],
        )
        .await;
    assert_eq!(job["status"], "done", "{job}");
    let id = job["id"].as_str().unwrap();

    for gateway in [&first, &second] {
        let op = Api::new(&gateway.base).with_token(OPERATOR);
        let mut listed = Value::Null;
        wait_for(SLOW, "the mail in the gateway's outbox", async || {
            listed = op.get_json("/v1/admin/outbox").await;
            listed["messages"].as_array().is_some_and(|m| !m.is_empty())
        })
        .await;
        let messages = listed["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 1, "{listed}");
        assert_eq!(messages[0]["to"], "ann@example.com", "{listed}");
        assert!(
            messages[0]["subject"]
                .as_str()
                .unwrap()
                .starts_with("Your MP3 is ready"),
            "{listed}"
        );
        let name = messages[0]["name"].as_str().unwrap();
        let r = op
            .get(&format!("/v1/admin/outbox/{name}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let text = unfold_qp(&r.text().await.unwrap());
        assert!(text.contains(&format!("Job {id}")), "{text}");
        let r = op
            .get("/v1/admin/outbox/..%2Fjobs.eml")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
    }
    assert!(
        !dir.path().join("worker/outbox").exists(),
        "mail goes to the shared blob store, not to the worker's data dir"
    );
    assert!(blobs.join("outbox").is_dir());
}

/// `make chaos`'s short plan: 50 jobs over 2 tenants through a gateway and 2 workers,
/// while a worker is SIGKILLed twice, Redis SIGKILLed and restarted on its AOF, the
/// gateway SIGTERMed (an SSE stream open) and restarted, a converter activated and rolled
/// back and the pub/sub connections dropped: nothing lost, stuck or run on the wrong
/// converter, every MP3 valid, every job notified, no busy loop afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_short() {
    let dir = tempfile::tempdir().unwrap();
    let report = tapedeck_tests::chaos::run(tapedeck_tests::chaos::Plan::short(), dir.path()).await;
    println!("{}", report.table());
    if !report.passed() {
        let kept = dir.keep();
        panic!(
            "the chaos run failed (logs in {}/logs):\n{}",
            kept.display(),
            report.table()
        );
    }
}
