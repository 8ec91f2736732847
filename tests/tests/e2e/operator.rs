//! The operator keeps the last word, and publishing is work too: rollbacks walk
//! a scope's whole history, revoking `allow_plugins` takes a tenant's own components off
//! its stages, a tenant's registration of a digest is private to it, the history names
//! the tenant that published, the CLI covers the tenant switches and first admins,
//! conformance checks are bounded work counted against the tenant, and a worker converts
//! with the active component from its first job.

use std::io::Write as _;
use std::process::{Command, Stdio};

use super::*;

const OPERATOR: &str = "op-token-0123456789abcdef0123456789";

fn hostile() -> Vec<u8> {
    std::fs::read(env!("TAPEDECK_HOSTILE_WASM")).unwrap()
}

/// `POST /v1/admin/plugins` (the operator) or `/v1/tenant/plugins` (a tenant admin).
async fn publish(api: &Api, operator: bool, stage: &str, bytes: Vec<u8>) -> (u16, Value) {
    let path = if operator {
        "/v1/admin/plugins"
    } else {
        "/v1/tenant/plugins"
    };
    let r = api
        .post(path)
        .multipart(plugin_form(stage, bytes))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn post(api: &Api, path: &str, body: Value) -> (u16, Value) {
    let r = api.post(path).json(&body).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// A tenant whose admin the operator created, and that admin logged in.
async fn tenant_admin(s: &Stack, op: &Api, tenant: &str, allow_plugins: bool) -> Api {
    let (status, _) = post(op, "/v1/admin/tenants", json!({"name": tenant})).await;
    assert_eq!(status, 201);
    let r = op
        .patch(&format!("/v1/admin/tenants/{tenant}"))
        .json(&json!({"allow_plugins": allow_plugins}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let email = format!("admin@{tenant}.example");
    let (status, v) = post(
        op,
        &format!("/v1/admin/tenants/{tenant}/users"),
        json!({"email": email, "password": "correct horse battery", "role": "admin"}),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    s.api.clone().login(tenant, &email).await
}

/// What runs `stage` for `tenant` now (`None`: the built-in component).
async fn active_for(op: &Api, stage: &str, tenant: &str) -> Option<String> {
    let v = op.get_json("/v1/admin/plugins/active").await;
    v["active"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["stage"] == stage && a["tenant"] == tenant)
        .and_then(|a| a["digest"].as_str().map(str::to_owned))
}

/// Activate A, B, C for a scope; each rollback steps one back — B, A,
/// the built-in component — and one more is a clear 409.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_walks_the_whole_history_down_to_the_built_in_component() {
    let s = stack(vec![("admin-token", OPERATOR.to_string())]);
    let op = s.api.with_token(OPERATOR);
    let (status, _) = post(&op, "/v1/admin/tenants", json!({"name": "acme"})).await;
    assert_eq!(status, 201);
    let mut digests = Vec::new();
    for name in ["a", "b", "c"] {
        let (status, v) = publish(&op, true, "converter", variant(&hostile(), name)).await;
        assert_eq!(status, 201, "{v}");
        let digest = v["plugin"]["digest"].as_str().unwrap().to_owned();
        let (status, v) = post(
            &op,
            &format!("/v1/admin/plugins/{digest}/activate"),
            json!({"stage": "converter", "tenant": "acme"}),
        )
        .await;
        assert_eq!(status, 200, "{v}");
        digests.push(digest);
    }
    let scope = json!({"stage": "converter", "tenant": "acme"});
    for want in [Some(&digests[1]), Some(&digests[0]), None] {
        let (status, v) = post(&op, "/v1/admin/plugins/rollback", scope.clone()).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(
            v["active"]["digest"].as_str(),
            want.map(String::as_str),
            "{v}"
        );
        assert_eq!(
            active_for(&op, "converter", "acme").await.as_ref(),
            want,
            "what runs the scope"
        );
    }
    let (status, v) = post(&op, "/v1/admin/plugins/rollback", scope).await;
    assert_eq!(status, 409, "{v}");
    assert_eq!(v["error"]["code"], "nothing_to_roll_back", "{v}");
    // Everyone's scope has its own trail: nothing was activated there.
    let (status, _) = post(
        &op,
        "/v1/admin/plugins/rollback",
        json!({"stage": "converter"}),
    )
    .await;
    assert_eq!(status, 409);
}

/// The operator runs a component for a tenant, the tenant's admin then
/// activates one of its own; revoking `allow_plugins` puts the tenant's jobs back on the
/// operator's choice at once, and a rollback from there reaches the built-in component.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_allow_plugins_takes_the_tenants_own_components_off() {
    let s = stack(vec![
        ("admin-token", OPERATOR.to_string()),
        ("workers", "1".into()),
    ]);
    let op = s.api.with_token(OPERATOR);
    let admin = tenant_admin(&s, &op, "acme", true).await;
    let chosen = variant(&hostile(), "operator-choice");
    let (status, v) = publish(&op, true, "converter", chosen.clone()).await;
    assert_eq!(status, 201, "{v}");
    let chosen = sha256(&chosen);
    let (status, _) = post(
        &op,
        &format!("/v1/admin/plugins/{chosen}/activate"),
        json!({"stage": "converter", "tenant": "acme"}),
    )
    .await;
    assert_eq!(status, 200);
    let own = variant(&hostile(), "tenant-own");
    let (status, v) = publish(&admin, false, "converter", own.clone()).await;
    assert_eq!(status, 201, "{v}");
    let own = sha256(&own);
    let (status, v) = post(
        &admin,
        &format!("/v1/tenant/plugins/{own}/activate"),
        json!({"stage": "converter"}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        active_for(&op, "converter", "acme").await,
        Some(own.clone())
    );

    let r = op
        .patch("/v1/admin/tenants/acme")
        .json(&json!({"allow_plugins": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        active_for(&op, "converter", "acme").await,
        Some(chosen.clone()),
        "back on the operator's choice"
    );
    wait_all_applied(&op, Duration::from_secs(10)).await;
    let job = admin.upload_and_wait(&not_audio(s._dir.path()), &[]).await;
    assert_eq!(job["converters"], json!([chosen]), "{job}");
    let history = op.get_json("/v1/admin/plugins/history").await;
    let last = &history["history"][0];
    assert_eq!(
        (&last["action"], &last["tenant"], &last["digest"]),
        (&json!("revoke"), &json!("acme"), &json!(chosen)),
        "{history}"
    );
    let (status, v) = post(
        &admin,
        &format!("/v1/tenant/plugins/{own}/activate"),
        json!({"stage": "converter"}),
    )
    .await;
    assert_eq!(status, 403, "{v}");
    let (status, v) = post(
        &op,
        "/v1/admin/plugins/rollback",
        json!({"stage": "converter", "tenant": "acme"}),
    )
    .await;
    assert_eq!((status, &v["active"]["digest"]), (200, &Value::Null), "{v}");
}

/// A tenant that publishes a digest first claims nothing — the
/// operator publishes the same bytes (the built-in notifier, too) and runs them for
/// everyone, another tenant gets a registration of its own — and the history shows each
/// tenant's publish as that tenant's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_registration_is_private_and_claims_nothing() {
    let s = stack(vec![("admin-token", OPERATOR.to_string())]);
    let op = s.api.with_token(OPERATOR);
    let first = tenant_admin(&s, &op, "first", true).await;
    let second = tenant_admin(&s, &op, "second", true).await;
    let converter = hostile();
    let digest = sha256(&converter);
    let builtin_notifier = tapedeck::components::DEFAULT_NOTIFIER.to_vec();
    let notifier_digest = sha256(&builtin_notifier);

    for (stage, bytes) in [
        ("converter", converter.clone()),
        ("notifier", builtin_notifier.clone()),
    ] {
        let (status, v) = publish(&first, false, stage, bytes.clone()).await;
        assert_eq!(status, 201, "{v}");
        assert_eq!(v["plugin"]["owner"], "first", "{v}");
        let (status, v) = publish(&op, true, stage, bytes.clone()).await;
        assert_eq!(status, 201, "the operator publishes it too: {v}");
        assert!(v["plugin"].get("owner").is_none(), "{v}");
        let (status, v) = publish(&second, false, stage, bytes.clone()).await;
        assert_eq!(status, 201, "a registration of its own: {v}");
        assert_eq!(v["plugin"]["owner"], "second", "{v}");
        let (status, _) = publish(&second, false, stage, bytes).await;
        assert_eq!(status, 200, "published before, by this tenant");
    }
    // The operator runs its registration for everyone; each tenant can run its own.
    let (status, v) = post(
        &op,
        &format!("/v1/admin/plugins/{digest}/activate"),
        json!({"stage": "converter"}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = post(
        &second,
        &format!("/v1/tenant/plugins/{notifier_digest}/activate"),
        json!({"stage": "notifier"}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let listed = op.get_json("/v1/admin/plugins?stage=converter").await;
    let owners: Vec<&Value> = listed["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["digest"] == digest.as_str())
        .map(|p| &p["owner"])
        .collect();
    assert_eq!(owners.len(), 3, "{listed}");

    let history = op.get_json("/v1/admin/plugins/history").await;
    let publishes: Vec<(&Value, &Value)> = history["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["action"] == "publish" && c["digest"] == digest.as_str())
        .map(|c| (&c["tenant"], &c["digest"]))
        .collect();
    assert_eq!(
        publishes.iter().map(|(t, _)| *t).collect::<Vec<_>>(),
        vec![&json!("second"), &Value::Null, &json!("first")],
        "newest first; the operator's is global: {history}"
    );
}

/// Runs `tapedeck admin --server BASE --token OPERATOR ARGS...` with `stdin` as its input.
fn admin_cli(base: &str, args: &[&str], stdin: &str) -> std::process::Output {
    let mut child = Command::new(serve_exe())
        .arg("admin")
        .args(["--server", base, "--token", OPERATOR])
        .args(args)
        .env_remove("TAPEDECK_SERVER")
        .env_remove("TAPEDECK_ADMIN_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// The CLI creates a tenant's first admin (a password from standard
/// input, or a random one it prints once), and turns `allow_plugins` and
/// `self_register` on and off each on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_creates_first_admins_and_switches_plugins() {
    let s = stack(vec![("admin-token", OPERATOR.to_string())]);
    let base = s.service.base.as_str();
    let run = |args: &[&str], stdin: &str| {
        let out = admin_cli(base, args, stdin);
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        assert!(
            out.status.success(),
            "tapedeck admin {args:?}: {}",
            text(&out.stderr)
        );
        (text(&out.stdout), text(&out.stderr))
    };
    run(&["tenant", "create", "acme"], "");
    let (out, _) = run(
        &[
            "tenant",
            "admin-create",
            "acme",
            "boss@acme.example",
            "--password-stdin",
        ],
        "a long enough secret\n",
    );
    assert!(out.contains("admin boss@acme.example"), "{out}");
    let boss = s.api.clone();
    let r = boss
        .http
        .post(boss.url("/v1/auth/login"))
        .json(&json!({"tenant": "acme", "email": "boss@acme.example",
                      "password": "a long enough secret"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let token: Value = r.json().await.unwrap();
    let boss = boss.with_token(token["token"].as_str().unwrap());
    let users = boss.get_json("/v1/tenant/users").await;
    assert_eq!(users["users"][0]["role"], "admin", "{users}");

    // A random password, printed once on stderr.
    let (_, err) = run(
        &["tenant", "admin-create", "acme", "second@acme.example"],
        "",
    );
    let password = err
        .lines()
        .find_map(|l| l.strip_prefix("password (shown once): "))
        .unwrap_or_else(|| panic!("{err}"))
        .trim()
        .to_owned();
    let r = s
        .api
        .http
        .post(s.api.url("/v1/auth/login"))
        .json(&json!({"tenant": "acme", "email": "second@acme.example", "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Each switch on its own: the other keeps its value.
    let op = s.api.with_token(OPERATOR);
    run(&["tenant", "update", "acme", "--self-register", "true"], "");
    run(&["tenant", "update", "acme", "--allow-plugins", "true"], "");
    let t = op.get_json("/v1/admin/tenants/acme").await;
    assert_eq!(
        (&t["tenant"]["self_register"], &t["tenant"]["allow_plugins"]),
        (&json!(true), &json!(true)),
        "{t}"
    );
    run(
        &["tenant", "update", "acme", "--allow-plugins", "false"],
        "",
    );
    let t = op.get_json("/v1/admin/tenants/acme").await;
    assert_eq!(
        (&t["tenant"]["self_register"], &t["tenant"]["allow_plugins"]),
        (&json!(true), &json!(false)),
        "{t}"
    );
    let out = admin_cli(base, &["tenant", "update", "acme"], "");
    assert_eq!(
        out.status.code(),
        Some(2),
        "nothing to change is a usage error"
    );
}

/// A gateway on a fresh Redis, and the operator's client.
fn gateway(dir: &std::path::Path, redis: &RedisServer) -> (Service, Api) {
    let gateway = Service::role(
        Role::Gateway,
        &redis.url(),
        dir,
        vec![("admin-token", OPERATOR.to_string())],
    );
    let op = Api::new(&gateway.base).with_token(OPERATOR);
    (gateway, op)
}

/// A worker with a data dir of its own (no compile cache), on the gateway's blobs.
fn fresh_worker(dir: &std::path::Path, redis: &RedisServer, name: &str, slots: &str) -> Service {
    let own = dir.join(name);
    std::fs::create_dir_all(&own).unwrap();
    Service::role(
        Role::Worker,
        &redis.url(),
        &own,
        vec![
            ("workers", slots.into()),
            ("blob-url", dir.join("blobs").display().to_string()),
        ],
    )
}

/// A job queued while no worker runs, of a tenant whose own converter
/// is active; a worker then started with an empty data dir (nothing compiled) converts it
/// with that converter from its first attempt, not with the built-in one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_worker_converts_with_the_active_component_from_its_first_job() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(&dir.path().join("redis"));
    let (_gateway, op) = gateway(dir.path(), &redis);
    let (status, _) = post(
        &op,
        "/v1/admin/tenants",
        json!({"name": "acme", "self_register": true}),
    )
    .await;
    assert_eq!(status, 201);
    let own = variant(&hostile(), "acme-own");
    let (status, v) = publish(&op, true, "converter", own.clone()).await;
    assert_eq!(status, 201, "{v}");
    let own = sha256(&own);
    let (status, _) = post(
        &op,
        &format!("/v1/admin/plugins/{own}/activate"),
        json!({"stage": "converter", "tenant": "acme"}),
    )
    .await;
    assert_eq!(status, 200);
    let user = Api::new(&op.base).signed_up("acme", "u@acme.example").await;
    let id = user.upload_id(&not_audio(dir.path()), &[]).await;

    let _worker = fresh_worker(dir.path(), &redis, "worker", "1");
    let job = user.wait_final(&id, SLOW).await;
    assert_eq!(job["converters"], json!([own]), "{job}");
    assert_eq!(job["status"], "done", "{job}");
}

/// Under load: jobs stream in while the operator activates another
/// converter for everyone on a worker that has to compile it first; no job created after
/// the activation answered runs on the component it replaced. The worker reports the
/// version it has heard of and what compiling took.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_job_created_after_an_activation_runs_on_the_old_component() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(&dir.path().join("redis"));
    let (_gateway, op) = gateway(dir.path(), &redis);
    let _worker = fresh_worker(dir.path(), &redis, "worker", "2");
    // The new one is the built-in converter under another digest: seconds to compile on a
    // worker that never saw it.
    let (old, new) = (
        variant(&hostile(), "old"),
        variant(tapedeck::components::DEFAULT_CONVERTER, "new"),
    );
    for bytes in [&old, &new] {
        let (status, v) = publish(&op, true, "converter", bytes.clone()).await;
        assert_eq!(status, 201, "{v}");
    }
    let (old, new) = (sha256(&old), sha256(&new));
    let (status, _) = post(
        &op,
        &format!("/v1/admin/plugins/{old}/activate"),
        json!({"stage": "converter"}),
    )
    .await;
    assert_eq!(status, 200);
    wait_all_applied(&op, Duration::from_secs(30)).await;

    let user = Api::new(&op.base)
        .signed_up("default", "load@example.com")
        .await;
    // Audio both convert.
    let input = media("aac-lc_44k_stereo_LRtest__rodio_RL.m4a");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let uploader = {
        let (user, input, stop) = (user.clone(), input.clone(), stop.clone());
        tokio::spawn(async move {
            let mut jobs = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let started = Instant::now();
                jobs.push((started, user.upload_id(&input, &[]).await));
                // A steady stream, not a flood: what is measured is the swap.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            jobs
        })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (status, _) = post(
        &op,
        &format!("/v1/admin/plugins/{new}/activate"),
        json!({"stage": "converter"}),
    )
    .await;
    assert_eq!(status, 200);
    let activated = Instant::now();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let jobs = uploader.await.unwrap();

    let (mut before, mut after) = (0, 0);
    for (started, id) in &jobs {
        let job = user.wait_final(id, SLOW).await;
        assert_eq!(job["status"], "done", "{job}");
        if *started > activated {
            after += 1;
            assert_eq!(
                job["converters"],
                json!([new]),
                "created after the activation: {job}"
            );
        } else if job["converters"] == json!([old]) {
            before += 1;
        }
    }
    assert!(
        before > 0 && after > 0,
        "{before} jobs before, {after} after"
    );
    wait_all_applied(&op, Duration::from_secs(10)).await;
    let active = op.get_json("/v1/admin/plugins/active").await;
    let worker = active["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["compile_ms"].as_u64().is_some_and(|ms| ms > 0))
        .unwrap_or_else(|| panic!("the worker reports what compiling took: {active}"));
    assert_eq!(worker["heard"], active["version"], "{active}");
}

/// The hostile guest patched to spin on every input: the conformance check's too.
fn spinner(name: &str) -> Vec<u8> {
    let bytes = hostile();
    let spinning = replace_all(&bytes, b"tapedeck-mode:normal", b"tapedeck-mode:spin!!");
    assert_ne!(spinning, bytes, "the guest carries its mode in its data");
    variant(&spinning, name)
}

/// The descendants of `pid` running `tapedeck plugin-check-run` and `plugin-run`. A
/// check's child between fork and exec still shows the check's command line: it is not
/// counted as another check.
fn check_processes(pid: u32) -> (usize, usize) {
    let (mut checks, mut runners) = (0, 0);
    let mut todo: Vec<(u32, bool)> = children_of(pid).into_iter().map(|p| (p, false)).collect();
    while let Some((p, in_check)) = todo.pop() {
        let cmdline = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let is_check = args.contains(&&b"plugin-check-run"[..]);
        if process_running(p) {
            checks += usize::from(is_check && !in_check);
            runners += usize::from(args.contains(&&b"plugin-run"[..]));
        }
        todo.extend(
            children_of(p)
                .into_iter()
                .map(|c| (c, in_check || is_check)),
        );
    }
    (checks, runners)
}

/// CPU seconds in the tenant's usage this hour.
async fn cpu_seconds(admin: &Api) -> f64 {
    admin.get_json("/v1/tenant/usage").await["hours"][0]["cpu_seconds"]
        .as_f64()
        .unwrap_or(0.0)
}

/// Three tenant publishes at once of a component that spins in the
/// conformance check itself. One check runs (one slot), the others wait at most the
/// wait allowed and answer 503 `checks_busy`; the client that gave up stops its check —
/// its runner is killed at once, nothing is left spinning — and the CPU the check burnt
/// is in the tenant's usage. A check left alone is stopped at a job's CPU limit and
/// refused, and billed too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_checks_are_bounded_work_billed_to_the_tenant() {
    let s = stack(vec![
        ("admin-token", OPERATOR.to_string()),
        ("max-concurrent-checks", "1".into()),
        ("max-check-wait-secs", "1".into()),
        ("run-cpu-base-secs", "2".into()),
    ]);
    let op = s.api.with_token(OPERATOR);
    let admin = tenant_admin(&s, &op, "acme", true).await;
    assert_eq!(cpu_seconds(&admin).await, 0.0);
    let impatient = Api {
        http: reqwest::Client::builder()
            .timeout(Duration::from_millis(1500))
            .build()
            .unwrap(),
        ..admin.clone()
    };
    let started = Instant::now();
    let publishes: Vec<_> = ["one", "two", "three"]
        .into_iter()
        .map(|name| {
            let api = impatient.clone();
            tokio::spawn(async move {
                let r = api
                    .post("/v1/tenant/plugins")
                    .multipart(plugin_form("converter", spinner(name)))
                    .send()
                    .await;
                match r {
                    Ok(r) => Some((r.status().as_u16(), r.json::<Value>().await.unwrap())),
                    Err(e) => {
                        assert!(e.is_timeout(), "{e}");
                        None
                    }
                }
            })
        })
        .collect();
    let (mut most_checks, mut most_runners) = (0, 0);
    while started.elapsed() < Duration::from_millis(1400) {
        let (checks, runners) = check_processes(s.service.pid());
        most_checks = most_checks.max(checks);
        most_runners = most_runners.max(runners);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut busy = 0;
    for p in publishes {
        if let Some((status, v)) = p.await.unwrap() {
            assert_eq!(status, 503, "{v}");
            assert_eq!(v["error"]["code"], "checks_busy", "{v}");
            busy += 1;
        }
    }
    assert_eq!(busy, 2, "one check ran, two waited too long");
    assert_eq!(
        (most_checks, most_runners),
        (1, 1),
        "one check at a time, and it was running its component"
    );
    // Given up at 1.5 s: the check and its runner are gone well before its 2 s of CPU.
    wait_for(
        Duration::from_millis(400),
        "the check stopped",
        async || check_processes(s.service.pid()) == (0, 0),
    )
    .await;
    wait_for(
        Duration::from_secs(5),
        "the check's CPU billed",
        async || cpu_seconds(&admin).await > 0.3,
    )
    .await;
    let billed = cpu_seconds(&admin).await;

    // Left alone, the check stops at the CPU a job of the smoke clip gets, and refuses.
    let (status, v) = publish(&admin, false, "converter", spinner("four")).await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["code"], "invalid_plugin", "{v}");
    let why = v["error"]["message"].as_str().unwrap();
    assert!(why.contains("smoke") && why.contains("CPU"), "{why}");
    assert_eq!(check_processes(s.service.pid()), (0, 0));
    let now = cpu_seconds(&admin).await;
    assert!(
        now >= billed + 1.5,
        "a spin to the limit is billed: {billed} then {now}"
    );

    // A tenant that has used its CPU seconds of the hour checks nothing more this hour.
    let r = op
        .patch("/v1/admin/tenants/acme/limits")
        .json(&json!({"cpu_seconds_per_hour": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (status, v) = publish(&admin, false, "converter", spinner("five")).await;
    assert_eq!(status, 429, "{v}");
    assert_eq!(
        (
            &v["error"]["code"],
            &v["error"]["limit"],
            &v["error"]["layer"]
        ),
        (
            &json!("limit_exceeded"),
            &json!("cpu_seconds_per_hour"),
            &json!("tenant")
        ),
        "{v}"
    );
    assert_eq!(check_processes(s.service.pid()), (0, 0));
}
