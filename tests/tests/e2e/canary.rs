//! Canary rollouts, end to end: a flaky canary converter (the hostile test
//! guest, which traps on ~30% of inputs) is rolled back by its analysis, the jobs it
//! failed finish on the stable converter, the other tenant's jobs never see it; a clean
//! canary is promoted after N runs; the operator's promote and abort.

use super::*;
use std::path::{Path, PathBuf};

const OPERATOR: &str = "op-token-canary-0123456789abcdef012345";

async fn publish(op: &Api, bytes: Vec<u8>) -> Value {
    publish_for(op, "converter", bytes).await
}

async fn publish_for(op: &Api, stage: &str, bytes: Vec<u8>) -> Value {
    let r = op
        .post("/v1/admin/plugins")
        .multipart(plugin_form(stage, bytes))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    r.json().await.unwrap()
}

async fn post(op: &Api, path: &str, body: Value) -> (u16, Value) {
    let r = op.post(path).json(&body).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn create_tenant(op: &Api, name: &str) {
    let (status, v) = post(
        op,
        "/v1/admin/tenants",
        json!({"name": name, "self_register": true}),
    )
    .await;
    assert_eq!(status, 201, "{v}");
}

/// A short real clip with a trailing `free` box naming `n`: the hostile guest traps on
/// it when `n % 10 < 3`; the built-in converter ignores the box.
fn marked_clip(dir: &Path, n: usize) -> PathBuf {
    let mut bytes =
        std::fs::read(media("aac-lc_8k_stereo_short__musicmetadata_pr-544.m4a")).unwrap();
    let payload = format!("tapedeck-flaky:{n}");
    bytes.extend_from_slice(&((payload.len() + 8) as u32).to_be_bytes());
    bytes.extend_from_slice(b"free");
    bytes.extend_from_slice(payload.as_bytes());
    let path = dir.join(format!("clip-{n}.m4a"));
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Two tenant names on either side of a tenant-sticky canary of `digest` at 50%.
fn tenants_either_side(digest: &str) -> (String, String) {
    let name = |i: usize| format!("t{i}");
    let inside = (0..)
        .map(name)
        .find(|t| tapedeck_model::canary::bucket(digest, t) < 5000)
        .unwrap();
    let outside = (0..)
        .map(name)
        .find(|t| tapedeck_model::canary::bucket(digest, t) >= 5000)
        .unwrap();
    (inside, outside)
}

/// The stage's latest `canary-rollback` in the registry's history.
async fn last_rollback(op: &Api, stage: &str) -> Value {
    let history = op
        .get_json(&format!("/v1/admin/plugins/history?stage={stage}"))
        .await;
    history["history"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["action"] == "canary-rollback")
        .unwrap_or_else(|| panic!("no rollback in {history}"))
        .clone()
}

fn converters(job: &Value) -> Vec<String> {
    job["converters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flaky_canary_is_rolled_back_and_its_failures_finish_on_stable() {
    let s = stack(vec![
        ("admin-token", OPERATOR.to_string()),
        ("workers", "2".into()),
    ]);
    let op = s.api.with_token(OPERATOR);
    let builtin = sha256(tapedeck::components::DEFAULT_CONVERTER);
    let flaky_bytes = std::fs::read(env!("TAPEDECK_HOSTILE_WASM")).unwrap();
    let flaky = sha256(&flaky_bytes);

    // Publishing records who, the world, and the smoke run's figures.
    let v = publish(&op, flaky_bytes).await;
    assert_eq!(v["plugin"]["by"], "operator", "{v}");
    assert_eq!(
        v["plugin"]["world"], "tapedeck:plugin/converter@0.1.0",
        "{v}"
    );
    // The required cases passed (it loads; the smoke run's MP3 has the clip's length);
    // the rest of the conformance suite is recorded: this test guest writes silence.
    let smoke = v["plugin"]["smoke"].as_str().unwrap();
    assert!(smoke.starts_with("smoke: 20"), "{v}");
    assert!(smoke.contains("failed: AAC stereo 44.1 kHz"), "{v}");

    let (inside, outside) = tenants_either_side(&flaky);
    create_tenant(&op, &inside).await;
    create_tenant(&op, &outside).await;
    let (status, v) = post(
        &op,
        &format!("/v1/admin/plugins/{flaky}/canary"),
        json!({"stage": "converter", "percent": 50, "sticky": "tenant", "min_jobs": 10}),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["canary"]["state"], "collecting", "{v}");
    wait_all_applied(&op, Duration::from_secs(10)).await;

    let a = s.api.signed_up(&inside, "a@example.com").await;
    let b = s.api.signed_up(&outside, "b@example.com").await;
    let mut in_ids = Vec::new();
    let mut out_ids = Vec::new();
    for n in 0..30 {
        in_ids.push(a.upload_id(&marked_clip(s._dir.path(), n), &[]).await);
        if n % 3 == 0 {
            out_ids.push(b.upload_id(&marked_clip(s._dir.path(), n), &[]).await);
        }
    }
    // Every job finishes, whatever the canary did to it.
    let (mut on_canary, mut retried) = (0, 0);
    for id in &in_ids {
        let job = a.wait_final(id, SLOW).await;
        assert_eq!(job["status"], "done", "{job}");
        assert_eq!(
            job["attempts"], 1,
            "a canary's attempt does not count: {job}"
        );
        let used = converters(&job);
        match used.as_slice() {
            [one] if *one == flaky => on_canary += 1,
            [first, then] if *first == flaky && *then == builtin => retried += 1,
            [one] if *one == builtin => {}
            other => panic!("unexpected converters {other:?}: {job}"),
        }
    }
    assert!(on_canary > 0, "some jobs ran the canary to the end");
    assert!(
        retried >= 2,
        "the canary's failures were retried on stable: {retried}"
    );
    // The other tenant never saw the canary.
    for id in &out_ids {
        let job = b.wait_final(id, SLOW).await;
        assert_eq!(job["status"], "done", "{job}");
        assert_eq!(converters(&job), std::slice::from_ref(&builtin), "{job}");
    }
    // Its analysis rolled it back, saying why.
    let canaries = op.get_json("/v1/admin/plugins/canaries").await;
    assert_eq!(canaries["canaries"], json!([]), "{canaries}");
    let rollback = last_rollback(&op, "converter").await;
    assert_eq!(rollback["digest"], flaky.as_str());
    let why = rollback["reason"].as_str().unwrap();
    assert!(why.starts_with("plugin failures: "), "{why}");
    // New jobs of the canary's tenant run the stable converter only.
    wait_all_applied(&op, Duration::from_secs(10)).await;
    let job = a.upload_and_wait(&marked_clip(s._dir.path(), 0), &[]).await;
    assert_eq!(job["status"], "done", "{job}");
    assert_eq!(converters(&job), [builtin], "{job}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_clean_canary_is_promoted_and_the_operator_can_promote_or_abort() {
    let s = stack(vec![
        ("admin-token", OPERATOR.to_string()),
        ("workers", "2".into()),
    ]);
    let op = s.api.with_token(OPERATOR);
    let builtin = sha256(tapedeck::components::DEFAULT_CONVERTER);
    // The built-in converter under other digests (a custom section appended).
    let (clean, other) = (
        variant(tapedeck::components::DEFAULT_CONVERTER, "clean"),
        variant(tapedeck::components::DEFAULT_CONVERTER, "other"),
    );
    let (dc, dother) = (sha256(&clean), sha256(&other));
    publish(&op, clean).await;
    publish(&op, other).await;

    // Refusals: unknown digest, bad share, the stage's own component.
    let (status, _) = post(
        &op,
        &format!("/v1/admin/plugins/{}/canary", "0".repeat(64)),
        json!({"stage": "converter", "percent": 10}),
    )
    .await;
    assert_eq!(status, 404);
    let (status, v) = post(
        &op,
        &format!("/v1/admin/plugins/{dc}/canary"),
        json!({"stage": "converter", "percent": 0}),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("percent"),
        "{v}"
    );

    let (status, v) = post(
        &op,
        &format!("/v1/admin/plugins/{dc}/canary"),
        json!({"stage": "converter", "percent": 100, "min_jobs": 3, "promote_after": 5}),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    wait_all_applied(&op, Duration::from_secs(10)).await;
    let me = s.api.signed_up("default", "c@example.com").await;
    let clip = media("aac-lc_8k_stereo_short__musicmetadata_pr-544.m4a");
    for _ in 0..5 {
        let job = me.upload_and_wait(&clip, &[]).await;
        assert_eq!(job["status"], "done", "{job}");
        assert_eq!(converters(&job), std::slice::from_ref(&dc), "{job}");
    }
    // Promoted after 5 clean runs: it is the active converter now.
    wait_for(Duration::from_secs(10), "the canary promoted", async || {
        let active = op.get_json("/v1/admin/plugins/active").await;
        active["active"] == json!([{"stage": "converter", "tenant": null, "digest": dc}])
    })
    .await;
    let history = op
        .get_json("/v1/admin/plugins/history?stage=converter")
        .await;
    assert_eq!(
        history["history"][0]["action"], "canary-promote",
        "{history}"
    );
    wait_all_applied(&op, Duration::from_secs(10)).await;
    let job = me.upload_and_wait(&clip, &[]).await;
    assert_eq!(converters(&job), std::slice::from_ref(&dc), "{job}");

    // By hand: a canary aborted (with `tapedeck admin`, whose tables read the server's
    // answers as its types), another promoted.
    let cli = AdminCli {
        base: &s.api.base,
        token: OPERATOR,
    };
    let short = &dother[..12];
    // The table row of the canary: its first five cells.
    let row = |table: &str| -> Vec<String> {
        let line = table.lines().find(|l| l.contains(short));
        let line = line.unwrap_or_else(|| panic!("no row for {short}: {table}"));
        line.split(['│', '┆'])
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .take(5)
            .map(str::to_owned)
            .collect()
    };
    let expected = ["converter", "all", short, "100% by job", "collecting"];
    let started = cli.ok(&[
        "plugin",
        "canary",
        short,
        "--stage",
        "converter",
        "--percent",
        "100",
    ]);
    assert_eq!(row(&started), expected, "{started}");
    let listed = cli.ok(&["plugin", "canaries"]);
    assert_eq!(row(&listed), expected, "{listed}");
    let listed = cli.ok_json(&["plugin", "canaries"]);
    assert_eq!(listed["canaries"][0]["digest"], dother, "{listed}");
    let aborted = cli.ok(&["plugin", "abort", "--stage", "converter"]);
    assert_eq!(
        aborted.trim(),
        format!("canary abort: converter {short} for all")
    );
    assert_eq!(cli.ok(&["plugin", "canaries"]).trim(), "no canary running");
    let (status, _) = post(
        &op,
        "/v1/admin/plugins/canary/promote",
        json!({"stage": "converter"}),
    )
    .await;
    assert_eq!(status, 404, "no canary left to promote");
    wait_all_applied(&op, Duration::from_secs(10)).await;
    let job = me.upload_and_wait(&clip, &[]).await;
    assert_eq!(
        converters(&job),
        std::slice::from_ref(&dc),
        "aborted: nothing changed: {job}"
    );

    let (status, _) = post(
        &op,
        &format!("/v1/admin/plugins/{builtin}/canary"),
        json!({"stage": "converter", "percent": 100}),
    )
    .await;
    assert_eq!(
        status, 404,
        "the built-in converter is not a published plugin"
    );
    let (status, _) = post(
        &op,
        &format!("/v1/admin/plugins/{dother}/canary"),
        json!({"stage": "converter", "percent": 100}),
    )
    .await;
    assert_eq!(status, 201);
    let (status, v) = post(
        &op,
        "/v1/admin/plugins/canary/promote",
        json!({"stage": "converter"}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let active = op.get_json("/v1/admin/plugins/active").await;
    assert_eq!(active["active"][0]["digest"], dother.as_str(), "{active}");
}

/// A PCM-in-MP4 file of `seconds` of 44.1 kHz stereo (176 kB a second) ending in a `free`
/// box that asks the hostile test guest to loop (the built-in converter ignores it).
fn looping_clip(dir: &Path, seconds: u64) -> PathBuf {
    let spec = tapedeck_mediagen::Spec {
        duration_ms: seconds * 1000,
        ..Default::default()
    };
    let mut bytes = Vec::new();
    tapedeck_mediagen::write(&spec, tapedeck_mediagen::Damage::None, &mut bytes).unwrap();
    let payload = b"tapedeck-loop";
    bytes.extend_from_slice(&((payload.len() + 8) as u32).to_be_bytes());
    bytes.extend_from_slice(b"free");
    bytes.extend_from_slice(payload);
    let path = dir.join("loops.mp4");
    std::fs::write(&path, bytes).unwrap();
    path
}

/// A canary that loops on some real inputs (none of the conformance suite's, so it is
/// published) holds one of the worker's two slots, for a deadline derived from what the
/// stable converter took on inputs that long, not for a job's run limit: meanwhile
/// another tenant's job takes no longer than it normally does (plus a second), the
/// canary tenant's next job runs the stable converter, and the first deadline hit rolls
/// the canary back, naming the figures; the job it held finishes on stable.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_canary_looping_on_some_inputs_stops_at_its_deadline_and_delays_no_one() {
    let s = stack(vec![
        ("admin-token", OPERATOR.to_string()),
        ("workers", "2".into()),
    ]);
    let op = s.api.with_token(OPERATOR);
    let builtin = sha256(tapedeck::components::DEFAULT_CONVERTER);
    let looping = std::fs::read(env!("TAPEDECK_HOSTILE_WASM")).unwrap();
    let digest = sha256(&looping);
    publish(&op, looping).await;
    create_tenant(&op, "canaried").await;
    create_tenant(&op, "other").await;
    let canaried = s.api.signed_up("canaried", "c@example.com").await;
    let other = s.api.signed_up("other", "o@example.com").await;
    let large = looping_clip(s._dir.path(), 15);
    let small = media("aac-lc_8k_stereo_short__musicmetadata_pr-544.m4a");

    // The stable converter's record on large inputs (what the deadline comes from), and
    // the other tenant's normal time for a small job.
    for _ in 0..3 {
        let job = canaried.upload_and_wait(&large, &[]).await;
        assert_eq!(converters(&job), std::slice::from_ref(&builtin), "{job}");
    }
    let mut normal = Duration::ZERO;
    for _ in 0..3 {
        let started = Instant::now();
        assert_eq!(other.upload_and_wait(&small, &[]).await["status"], "done");
        normal = normal.max(started.elapsed());
    }

    let (status, v) = post(
        &op,
        &format!("/v1/admin/plugins/{digest}/canary"),
        json!({"stage": "converter", "tenant": "canaried", "percent": 100, "min_jobs": 10}),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    wait_all_applied(&op, Duration::from_secs(10)).await;
    let started = Instant::now();
    let stuck = canaried.upload_id(&large, &[]).await;
    wait_for(
        Duration::from_secs(20),
        "the canary converting",
        async || {
            let job = canaried.get_json(&format!("/v1/jobs/{stuck}")).await;
            job["status"] == "converting" && converters(&job) == [digest.clone()]
        },
    )
    .await;

    // While the canary spins: another tenant's job as fast as ever, and the canary's
    // tenant's next job on the stable converter in the other slot.
    let t = Instant::now();
    assert_eq!(other.upload_and_wait(&small, &[]).await["status"], "done");
    let took = t.elapsed();
    assert!(
        took <= normal + Duration::from_secs(1),
        "another tenant's job took {took:?} while the canary ran, {normal:?} before"
    );
    let next = canaried.upload_and_wait(&large, &[]).await;
    assert_eq!(next["status"], "done", "{next}");
    assert_eq!(converters(&next), std::slice::from_ref(&builtin), "{next}");

    // The deadline rolls the canary back at its first hit; the job finishes on stable.
    let job = canaried.wait_final(&stuck, SLOW).await;
    assert_eq!(job["status"], "done", "{job}");
    assert_eq!(converters(&job), [digest.clone(), builtin.clone()], "{job}");
    let rolled_back_after = started.elapsed();
    let canaries = op.get_json("/v1/admin/plugins/canaries").await;
    assert_eq!(canaries["canaries"], json!([]), "{canaries}");
    let rollback = last_rollback(&op, "converter").await;
    let why = rollback["reason"].as_str().unwrap();
    assert!(
        why.starts_with("a canary run passed its deadline: deadline of ")
            && why.contains("x the stable converter's p95 of"),
        "{why}"
    );
    // Well inside the run limit of a 15 s input (30 s of CPU, 70 s of wall time).
    assert!(
        rolled_back_after < Duration::from_secs(30),
        "rolled back {rolled_back_after:?} after the canary started"
    );
}

/// A component whose conformance check recorded failures at publish (this test guest
/// writes silence, and what it should refuse it converts) runs its canary cleanly on the
/// canary's jobs, yet `promote_after` does not promote it: the canary shows why, `plugin
/// list` shows the failures, and the operator can still promote it by hand, the
/// failures named in the answer and the history.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_canary_with_recorded_check_failures_is_not_promoted_by_itself() {
    let s = stack(vec![
        ("admin-token", OPERATOR.to_string()),
        ("workers", "2".into()),
    ]);
    let op = s.api.with_token(OPERATOR);
    let bytes = std::fs::read(env!("TAPEDECK_HOSTILE_WASM")).unwrap();
    let digest = sha256(&bytes);
    let short = &digest[..12];
    let v = publish(&op, bytes).await;
    let failures = v["plugin"]["failures"].as_array().unwrap().clone();
    assert!(
        failures
            .iter()
            .any(|f| f.as_str().unwrap().contains("silent")),
        "{v}"
    );
    let cli = AdminCli {
        base: &s.api.base,
        token: OPERATOR,
    };
    let listed = cli.ok(&["plugin", "list", "--stage", "converter"]);
    let line = listed.lines().find(|l| l.contains(short)).unwrap();
    assert!(
        line.contains(&format!("{} failed: ", failures.len())),
        "{listed}"
    );
    let published = cli.ok(&["plugin", "list", "--stage", "converter", "--json"]);
    assert!(published.contains("silent"), "{published}");

    let (status, v) = post(
        &op,
        &format!("/v1/admin/plugins/{digest}/canary"),
        json!({"stage": "converter", "percent": 100, "min_jobs": 3, "promote_after": 5}),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    wait_all_applied(&op, Duration::from_secs(10)).await;
    let me = s.api.signed_up("default", "h@example.com").await;
    // Inputs the guest converts without trapping (`n % 10 >= 3`), one at a time so each
    // finds the canary's slot free.
    for n in 3..10 {
        let job = me
            .upload_and_wait(&marked_clip(s._dir.path(), n), &[])
            .await;
        assert_eq!(job["status"], "done", "{job}");
        assert_eq!(converters(&job), std::slice::from_ref(&digest), "{job}");
    }
    // Seven clean canary runs, past promote_after: still a canary, saying why.
    let canaries = op.get_json("/v1/admin/plugins/canaries").await;
    let canary = &canaries["canaries"][0];
    assert_eq!(canary["digest"], digest.as_str(), "{canaries}");
    assert_eq!(canary["totals"]["canary:ok"], 7, "{canaries}");
    let held = canary["promotion_held"].as_str().unwrap();
    assert!(
        held.starts_with("not promoted automatically: its conformance check recorded")
            && held.contains("silent"),
        "{held}"
    );
    let shown = cli.ok(&["plugin", "canaries"]);
    assert!(
        shown.contains(&format!("converter {short}: not promoted automatically")),
        "{shown}"
    );

    // By hand: promoted, the failures named.
    let promoted = cli.ok(&["plugin", "promote", "--stage", "converter"]);
    assert!(
        promoted.starts_with(&format!("canary promote: converter {short} for all"))
            && promoted.contains("recorded at publish: FAIL "),
        "{promoted}"
    );
    let history = op
        .get_json("/v1/admin/plugins/history?stage=converter")
        .await;
    let why = history["history"][0]["reason"].as_str().unwrap();
    assert!(
        why.starts_with("promoted by the operator, with the conformance failures recorded")
            && why.contains("silent"),
        "{history}"
    );
}

/// A notifier canary runs in shadow: it composes each event beside the stable notifier
/// and only stable's messages are sent. This one (the hostile test notifier) composes
/// finished jobs well and panics on failed ones: its failures roll it back, and every
/// job's mail, the built-in notifier's, arrives all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_notifier_canary_that_crashes_on_failed_jobs_is_rolled_back_and_no_mail_is_lost() {
    let s = stack(vec![
        ("admin-token", OPERATOR.to_string()),
        ("workers", "1".into()),
    ]);
    let op = s.api.with_token(OPERATOR);
    let bytes = std::fs::read(env!("TAPEDECK_HOSTILE_NOTIFIER_WASM")).unwrap();
    let digest = sha256(&bytes);
    let v = publish_for(&op, "notifier", bytes).await;
    // Its crash on a failed job is recorded at publish, with what it said.
    let failures = v["plugin"]["failures"].to_string();
    assert!(
        failures.contains("the hostile notifier panics on failed jobs"),
        "{v}"
    );
    let (status, v) = post(
        &op,
        &format!("/v1/admin/plugins/{digest}/canary"),
        json!({"stage": "notifier", "percent": 100, "min_jobs": 3}),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    wait_all_applied(&op, Duration::from_secs(10)).await;

    let me = s.api.signed_up("default", "n@example.com").await;
    let clip = media("aac-lc_8k_stereo_short__musicmetadata_pr-544.m4a");
    let broken = not_audio(s._dir.path());
    for _ in 0..2 {
        assert_eq!(me.upload_and_wait(&clip, &[]).await["status"], "done");
    }
    for _ in 0..3 {
        assert_eq!(me.upload_and_wait(&broken, &[]).await["status"], "failed");
    }
    // Rolled back by its analysis at its third run, the first crash (min_jobs 3).
    wait_for(
        Duration::from_secs(20),
        "the notifier canary rolled back",
        async || op.get_json("/v1/admin/plugins/canaries").await["canaries"] == json!([]),
    )
    .await;
    let rollback = last_rollback(&op, "notifier").await;
    assert_eq!(rollback["digest"], digest.as_str());
    let why = rollback["reason"].as_str().unwrap();
    assert!(
        why.starts_with("plugin failures: 1 of the canary's last 3 runs (33%) vs 0 of stable's 3"),
        "{why}"
    );
    // Every job's mail was sent, each the built-in notifier's.
    let mails = outbox_mails(s._dir.path(), 5, SLOW, Duration::from_millis(500));
    assert_eq!(mails.len(), 5, "{mails:?}");
    assert!(
        mails
            .iter()
            .all(|m| m.contains("n@example.com") && !m.contains("hostile notifier")),
        "{mails:?}"
    );
    let converted = mails
        .iter()
        .filter(|m| m.contains("has been converted to MP3"))
        .count();
    assert_eq!(converted, 2, "{mails:?}");
}
