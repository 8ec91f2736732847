//! Plugin runs bounded in every dimension, and the operator in control of them
//! — a run's wall time (a converter that sleeps; a header that lies about the length),
//! cancelling a converting job, shutting down with a stuck run, replacing the binary
//! while it runs, and the storage quota counting what a run writes.
//!
//! The hostile test guest is the converter where a run must misbehave: a file starting
//! with `idle` makes it sleep forever at zero CPU.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::*;

const OPERATOR: &str = "op-token-0123456789abcdef0123456789";

/// A file the hostile guest sleeps on forever (`idle`), past the gateway's MP4 sniffing
/// (a box type at offset 4).
fn idle_file(dir: &Path, name: &str) -> PathBuf {
    let mut bytes = b"idleftyp".to_vec();
    bytes.resize(4096, 0);
    let path = dir.join(name);
    std::fs::write(&path, &bytes).unwrap();
    path
}

/// A file the hostile guest copies to its output at once.
fn echo_file(dir: &Path) -> PathBuf {
    let mut bytes = b"\0\0\0\x20ftypisom".to_vec();
    bytes.resize(4096, 7);
    let path = dir.join("echo.mp4");
    std::fs::write(&path, &bytes).unwrap();
    path
}

fn boxed(kind: &[u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut b = ((payload.len() + 8) as u32).to_be_bytes().to_vec();
    b.extend_from_slice(kind);
    b.extend_from_slice(payload);
    b
}

/// 140 bytes of ISO-BMFF whose movie header (`moov/mvhd`, version 0) says the movie is
/// `seconds` long: what a tenant forges to be granted hours of CPU for nothing.
fn forged_length_file(dir: &Path, seconds: u32) -> PathBuf {
    let mut mvhd = vec![0u8; 12];
    mvhd.extend_from_slice(&1000u32.to_be_bytes());
    mvhd.extend_from_slice(&(seconds * 1000).to_be_bytes());
    mvhd.resize(100, 0);
    let mut bytes = boxed(b"ftyp", b"M4A \0\0\0\0isomM4A ");
    bytes.extend(boxed(b"moov", &boxed(b"mvhd", &mvhd)));
    let path = dir.join("forged.m4a");
    std::fs::write(&path, &bytes).unwrap();
    path
}

/// The plugin runner children of these service processes.
fn runners(services: &[&Service]) -> Vec<u32> {
    services
        .iter()
        .flat_map(|s| children_of(s.pid()))
        .filter(|&pid| process_running(pid))
        .collect()
}

/// Waits until exactly `n` runner children run under `services`; returns them.
fn wait_runners(services: &[&Service], n: usize) -> Vec<u32> {
    let mut found = Vec::new();
    wait_until(Duration::from_secs(30), || {
        found = runners(services);
        found.len() == n
    });
    found
}

/// A converter that sleeps is stopped at the run's wall-clock ceiling
/// (`--run-wall-max-secs`), at zero CPU, and the job fails saying so; a file whose header
/// claims 10 hours in 140 bytes is refused before any run is sized from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sleeping_converters_stop_at_their_wall_time_and_forged_lengths_are_refused() {
    let s = stack(vec![
        ("converter", env!("TAPEDECK_HOSTILE_WASM").into()),
        ("run-wall-max-secs", "3".into()),
        ("workers", "1".into()),
    ]);
    let me = s
        .api
        .signed_up_admin(&s.redis, "default", "sleepy@example.com")
        .await;
    let dir = tempfile::tempdir().unwrap();

    let sleeper = me.upload_id(&idle_file(dir.path(), "idle.mp4"), &[]).await;
    let runner = wait_runners(&[&s.service], 1)[0];
    let job = me.wait_final(&sleeper, Duration::from_secs(60)).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["attempts"], 1, "a wall-time limit is final: {job}");
    let error = job["error"].as_str().unwrap();
    assert!(
        error.starts_with("wall-clock limit of 3 s exceeded")
            && error.contains("--run-wall-max-secs"),
        "{error}"
    );
    wait_until(Duration::from_secs(5), || !process_running(runner));
    let cpu_seconds =
        async || me.get_json("/v1/tenant/usage").await["hours"][0]["cpu_seconds"].clone();
    let cpu_before = cpu_seconds().await;

    let forged = me
        .upload_id(&forged_length_file(dir.path(), 10 * 3600), &[])
        .await;
    let job = me.wait_final(&forged, Duration::from_secs(60)).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["attempts"], 1, "{job}");
    let error = job["error"].as_str().unwrap();
    assert!(
        error.contains("declares 600.0 minutes of audio but is only 140 bytes long"),
        "{error}"
    );
    // Refused by the host before any run: no converter CPU time was spent on it.
    assert_eq!(cpu_seconds().await, cpu_before);
}

/// Deleting a converting job stops its runner within a second or two, on
/// whichever of two workers runs it, and that worker takes the next job at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_converting_job_stops_its_run_on_the_worker_running_it() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(&dir.path().join("redis"));
    let url = redis.url();
    let gateway = Service::role(Role::Gateway, &url, dir.path(), vec![]);
    let worker = || {
        Service::role(
            Role::Worker,
            &url,
            dir.path(),
            vec![
                ("converter", env!("TAPEDECK_HOSTILE_WASM").into()),
                ("workers", "1".into()),
            ],
        )
    };
    let (first, second) = (worker(), worker());
    let me = Api::new(&gateway.base)
        .signed_up("default", "cancel@example.com")
        .await;
    // Both workers busy, each with a run that would sleep for a minute or more.
    let a = me.upload_id(&idle_file(dir.path(), "a.mp4"), &[]).await;
    let b = me.upload_id(&idle_file(dir.path(), "b.mp4"), &[]).await;
    let before = wait_runners(&[&first, &second], 2);
    assert_eq!(runners(&[&first]).len(), 1, "one run on each worker");
    me.wait_converting(&a, false).await;

    let r = me.delete(&format!("/v1/jobs/{a}")).send().await.unwrap();
    assert_eq!(r.status(), 204);
    // Without the cancel it would sleep on to its wall-clock limit (over a minute).
    wait_until(Duration::from_secs(3), || {
        runners(&[&first, &second]).len() == 1
    });
    let left = runners(&[&first, &second]);
    assert!(before.contains(&left[0]), "the other job's run goes on");

    // The freed worker takes the next job (the other is still asleep on `b`).
    let next = me.upload_id(&echo_file(dir.path()), &[]).await;
    let job = me.wait_final(&next, Duration::from_secs(30)).await;
    assert_eq!(job["status"], "done", "{job}");
    assert_eq!(me.job(&b).await["status"], "converting");
    let r = me.delete(&format!("/v1/jobs/{b}")).send().await.unwrap();
    assert_eq!(r.status(), 204);
    wait_until(Duration::from_secs(5), || {
        runners(&[&first, &second]).is_empty()
    });
    // Nothing of either run is left pending in the stream.
    let mut conn = redis.conn();
    wait_until(Duration::from_secs(5), || {
        let pending: Vec<redis::Value> = redis::cmd("XPENDING")
            .arg(tapedeck::store::keys::convert_stream("default"))
            .arg("workers")
            .query(&mut conn)
            .unwrap();
        pending[0] == redis::Value::Int(0)
    });
}

/// SIGTERM with a stuck run: after `--shutdown-timeout-secs` the job is handed
/// back, its runner killed, and the process exits (status 0: nothing was lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_kills_stuck_runs_and_exits_within_its_timeout() {
    let mut s = stack(vec![
        ("converter", env!("TAPEDECK_HOSTILE_WASM").into()),
        ("shutdown-timeout-secs", "1".into()),
        ("workers", "1".into()),
    ]);
    let me = s.api.signed_up("default", "stuck@example.com").await;
    let dir = tempfile::tempdir().unwrap();
    let id = me.upload_id(&idle_file(dir.path(), "idle.mp4"), &[]).await;
    let runner = wait_runners(&[&s.service], 1)[0];
    me.wait_converting(&id, false).await;

    let stopping = Instant::now();
    signal(s.service.pid(), libc::SIGTERM);
    let mut status = None;
    wait_until(Duration::from_secs(10), || {
        status = s.service.child.try_wait().unwrap();
        status.is_some()
    });
    assert!(
        status.unwrap().success(),
        "exits cleanly after {:?}",
        stopping.elapsed()
    );
    assert!(!process_running(runner), "the runner died with the service");
    // The job is back in the queue, its attempt not counted.
    let job: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(tapedeck::store::keys::job_key("default", &id))
        .query(&mut s.redis.conn())
        .unwrap();
    assert_eq!(job["status"], "queued", "{job:?}");
    assert_eq!(job["attempts"], "0", "{job:?}");
}

/// The binary is replaced on disk (a package upgrade: a new file renamed over
/// it) while the service runs; conversions and publish checks still run, with the
/// binary that is running, not whatever the path names now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_the_binary_on_disk_leaves_the_running_service_working() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(&dir.path().join("redis"));
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let exe = bin.join("tapedeck");
    std::fs::copy(serve_exe(), &exe).unwrap();
    let mut cmd = std::process::Command::new(&exe);
    cmd.arg("serve")
        .args(["--role", "all", "--listen", "127.0.0.1:0"])
        .args(["--redis-url", &redis.url()])
        .arg("--data-dir")
        .arg(dir.path())
        .arg("--blob-url")
        .arg(dir.path().join("blobs"))
        .args(["--admin-token", OPERATOR])
        .env("RUST_LOG", "warn")
        .env_remove("TAPEDECK_CONFIG")
        .stdout(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let base = listening_on(&mut child);
    let service = Service { child, base };
    let api = Api::new(&service.base);
    wait_for(
        Duration::from_secs(30),
        "the service is ready",
        async || {
            api.get("/readyz")
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        },
    )
    .await;

    // The upgrade: another program takes the path (it would fail every run).
    let new = bin.join("tapedeck.new");
    std::fs::write(&new, "#!/bin/sh\nexit 1\n").unwrap();
    std::fs::set_permissions(&new, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::rename(&new, &exe).unwrap();

    let me = api.signed_up("default", "upgrade@example.com").await;
    let id = me
        .upload_id(
            &media("aac-lc_16k_mono__androidx_bbb_1ch_16kHz_aac.mp4"),
            &[],
        )
        .await;
    let job = me.wait_final(&id, SLOW).await;
    assert_eq!(job["status"], "done", "{job}");

    let op = api.with_token(OPERATOR);
    let form = plugin_form(
        "converter",
        std::fs::read(env!("TAPEDECK_HOSTILE_WASM")).unwrap(),
    );
    let r = op
        .post("/v1/admin/plugins")
        .multipart(form)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body = r.text().await.unwrap();
    assert_eq!(status, 201, "the publish check ran: {body}");
}

/// What a run writes counts against the quota. A job whose MP3 would pass the
/// tenant's `quota_bytes` fails with `limit_exceeded`, no output is kept, and the
/// tenant's stored bytes are what they were (the upload alone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mp3_the_quota_cannot_hold_fails_the_job_and_is_not_kept() {
    let s = stack(vec![("admin-token", OPERATOR.to_string())]);
    let file = media("aac-lc_44k_stereo_LRtest__rodio_RL.m4a");
    let size = std::fs::metadata(&file).unwrap().len();
    // Room for the upload and 50 kB: at 320 kbit/s the 27 s MP3 is ~1.1 MB.
    let r = s
        .api
        .with_token(OPERATOR)
        .post("/v1/admin/tenants")
        .json(&json!({
            "name": "tight",
            "self_register": true,
            "limits": {"quota_bytes": size + 50_000},
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let admin = s
        .api
        .signed_up_admin(&s.redis, "tight", "tight@example.com")
        .await;
    let id = admin.upload_id(&file, &[("bitrate", "320")]).await;
    let job = admin.wait_final(&id, SLOW).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["attempts"], 1, "{job}");
    let error = job["error"].as_str().unwrap();
    assert!(error.starts_with("limit_exceeded: quota_bytes"), "{error}");
    assert!(job["output"].is_null(), "{job}");
    let outputs = s._dir.path().join("blobs/out/tight");
    let kept = std::fs::read_dir(&outputs).map_or(0, |d| d.count());
    assert_eq!(kept, 0, "no MP3 in {}", outputs.display());
    let usage = admin.get_json("/v1/tenant/usage").await;
    assert_eq!(usage["stored_bytes"], size, "{usage}");
}

/// A tenant's own published component counts against its quota;
/// one the quota cannot hold is refused with `limit_exceeded` and charges nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_published_components_count_against_its_quota() {
    let s = stack(vec![("admin-token", OPERATOR.to_string())]);
    let op = s.api.with_token(OPERATOR);
    let hostile = std::fs::read(env!("TAPEDECK_HOSTILE_WASM")).unwrap();
    let speech = std::fs::read(env!("TAPEDECK_SPEECH_WASM")).unwrap();
    let quota = (hostile.len() + speech.len() - 1) as u64;
    let r = op
        .post("/v1/admin/tenants")
        .json(&json!({"name": "makers", "self_register": true, "limits": {"quota_bytes": quota}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = op
        .patch("/v1/admin/tenants/makers")
        .json(&json!({"allow_plugins": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let admin = s
        .api
        .signed_up_admin(&s.redis, "makers", "maker@example.com")
        .await;
    let publish = async |bytes: Vec<u8>| {
        let form = plugin_form("converter", bytes);
        admin
            .post("/v1/tenant/plugins")
            .multipart(form)
            .send()
            .await
            .unwrap()
    };
    let r = publish(hostile.clone()).await;
    assert_eq!(r.status(), 201);
    let usage = admin.get_json("/v1/tenant/usage").await;
    assert_eq!(usage["stored_bytes"], hostile.len(), "{usage}");

    let r = publish(speech).await;
    let status = r.status();
    let v: Value = r.json().await.unwrap();
    assert_eq!(status, 403, "{v}");
    assert_eq!(v["error"]["code"], "limit_exceeded", "{v}");
    assert_eq!(v["error"]["limit"], "quota_bytes", "{v}");
    let usage = admin.get_json("/v1/tenant/usage").await;
    assert_eq!(usage["stored_bytes"], hostile.len(), "{usage}");
    // Publishing the same bytes again is a no-op, not a second charge.
    assert_eq!(publish(hostile.clone()).await.status(), 200);
    let usage = admin.get_json("/v1/tenant/usage").await;
    assert_eq!(usage["stored_bytes"], hostile.len(), "{usage}");
}
