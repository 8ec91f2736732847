//! The plugin registry, end to end: publish (checked, content
//! addressed), activate for one tenant or everyone, roll back; the worker swaps within a
//! second and each job records the converter digest it ran with.

use super::*;

const OPERATOR: &str = "op-token-0123456789abcdef0123456789";

async fn activate(op: &Api, digest: &str, body: Value) -> Value {
    let r = op
        .post(&format!("/v1/admin/plugins/{digest}/activate"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_converters_swap_per_tenant_and_back_while_the_service_runs() {
    let s = stack(vec![
        ("admin-token", OPERATOR.to_string()),
        ("workers", "1".into()),
    ]);
    let op = s.api.with_token(OPERATOR);
    let builtin = sha256(tapedeck::components::DEFAULT_CONVERTER);
    let hostile_bytes = std::fs::read(env!("TAPEDECK_HOSTILE_WASM")).unwrap();
    let hostile = sha256(&hostile_bytes);

    // Refused with the reason: not a component; another stage's world.
    let r = publish(&op, "converter", vec![7u8; 100]).await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "invalid_plugin", "{v}");
    let r = publish(
        &op,
        "converter",
        tapedeck::components::DEFAULT_NOTIFIER.to_vec(),
    )
    .await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    let why = v["error"]["message"].as_str().unwrap();
    assert!(why.contains("converter"), "names the world it lacks: {why}");
    // Built against another WIT version (the same guest with its `@0.1.0` names patched
    // to `@0.2.0`): refused with the version it uses and the one the host provides.
    let patched = replace_all(
        &hostile_bytes,
        b"tapedeck:plugin/io@0.1.0",
        b"tapedeck:plugin/io@0.2.0",
    );
    assert_ne!(
        patched, hostile_bytes,
        "the guest names its imports with the version"
    );
    let r = publish(&op, "converter", patched).await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    let why = v["error"]["message"].as_str().unwrap();
    assert!(
        why.contains("tapedeck:plugin@0.2.0") && why.contains("tapedeck:plugin@0.1.0"),
        "{why}"
    );
    // Accepted, content-addressed; a second publish is a no-op.
    let r = publish(&op, "converter", hostile_bytes.clone()).await;
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["plugin"]["digest"], hostile.as_str());
    assert_eq!(v["plugin"]["bytes"], hostile_bytes.len());
    let r = publish(&op, "converter", hostile_bytes.clone()).await;
    assert_eq!(r.status(), 200);

    create_canary(&op).await;
    let canary = s.api.signed_up("canary", "c@example.com").await;
    let me = s.api.signed_up("default", "d@example.com").await;
    let input = not_audio(s._dir.path());

    // One tenant on the published converter; the others keep the built-in one.
    activate(
        &op,
        &hostile,
        json!({"stage": "converter", "tenant": "canary"}),
    )
    .await;
    wait_all_applied(&op, Duration::from_secs(30)).await;
    let job = canary.upload_and_wait(&input, &[]).await;
    assert_eq!(job["status"], "done", "{job}");
    assert_eq!(job["converters"], json!([hostile]), "{job}");
    let job = me.upload_and_wait(&input, &[]).await;
    assert_eq!(
        job["status"], "failed",
        "the built-in converter refuses it: {job}"
    );
    assert_eq!(job["converters"], json!([builtin]), "{job}");

    // Everyone on it, then rolled back: the built-in converter again.
    activate(&op, &hostile, json!({"stage": "converter"})).await;
    wait_all_applied(&op, Duration::from_secs(30)).await;
    let job = me.upload_and_wait(&input, &[]).await;
    assert_eq!(job["status"], "done", "{job}");
    assert_eq!(job["converters"], json!([hostile]), "{job}");
    let r = op
        .post("/v1/admin/plugins/rollback")
        .json(&json!({"stage": "converter"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["active"]["digest"], Value::Null, "{v}");
    wait_all_applied(&op, Duration::from_secs(30)).await;
    let job = me
        .upload_and_wait(
            &media("aac-lc_8k_stereo_short__musicmetadata_pr-544.m4a"),
            &[],
        )
        .await;
    assert_eq!(job["status"], "done", "{job}");
    assert_eq!(job["converters"], json!([builtin]), "{job}");

    let active = op.get_json("/v1/admin/plugins/active").await;
    assert_eq!(
        active["active"],
        json!([{"stage": "converter", "tenant": "canary", "digest": hostile}]),
        "{active}"
    );
    let history = op
        .get_json("/v1/admin/plugins/history?stage=converter")
        .await;
    let actions: Vec<&str> = history["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["rollback", "activate", "activate", "publish"]);
    let r = op
        .post(&format!("/v1/admin/plugins/{}/activate", "0".repeat(64)))
        .json(&json!({"stage": "converter"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

async fn create_canary(op: &Api) {
    let r = op
        .post("/v1/admin/tenants")
        .json(&json!({"name": "canary", "self_register": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
}

/// The built-in converter with a custom section appended: the same code under another
/// digest (a component may carry custom sections anywhere between its sections).
fn converter_variant(name: &str) -> Vec<u8> {
    variant(tapedeck::components::DEFAULT_CONVERTER, name)
}

/// Hot swap under load: jobs stream into a gateway and two worker processes (a backlog
/// kept up until the last swap, however fast or loaded the machine is) while the
/// converter is switched twice and rolled back once: none fails, none is lost, every
/// output is an MP3, and every job names a converter that was active.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_swaps_and_a_rollback_under_load_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(&dir.path().join("redis"));
    let url = redis.url();
    let gateway = Service::role(
        Role::Gateway,
        &url,
        dir.path(),
        vec![("admin-token", OPERATOR.to_string())],
    );
    let _workers: Vec<Service> = (0..2)
        .map(|_| {
            Service::role(
                Role::Worker,
                &url,
                dir.path(),
                vec![("workers", "1".into())],
            )
        })
        .collect();
    let api = Api::new(&gateway.base);
    let op = api.with_token(OPERATOR);
    let builtin = sha256(tapedeck::components::DEFAULT_CONVERTER);
    let (a, b) = (converter_variant("a"), converter_variant("b"));
    let (da, db) = (sha256(&a), sha256(&b));
    assert_eq!(publish(&op, "converter", a).await.status(), 201);
    assert_eq!(publish(&op, "converter", b).await.status(), 201);

    let me = api.signed_up("default", "load@example.com").await;
    // A 1.5 s clip: what loads the workers is the number of jobs, not their length (the
    // test once converted 200 copies of a 27 s clip, 90 minutes of audio, for this).
    let clip = media("aac-lc_48k_stereo__lofty_m4a_codec_aac.m4a");
    let mut ids = Vec::new();
    for _ in 0..40 {
        ids.push(me.upload_id(&clip, &[]).await);
    }
    // Uploads go on until the rollback, so the workers are never idle during a swap.
    let swapping = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let feeder = tokio::spawn({
        let (me, clip, swapping) = (me.clone(), clip.clone(), swapping.clone());
        async move {
            let mut ids = Vec::new();
            while swapping.load(std::sync::atomic::Ordering::Relaxed) {
                ids.push(me.upload_id(&clip, &[]).await);
            }
            ids
        }
    });
    // The workers are busy with the backlog: swap, swap, roll back, each once a worker
    // has converted with the component just activated (however loaded the machine is).
    let converted_with = async |digest: &str| {
        wait_for(SLOW, "a conversion with the new converter", async || {
            for worker in &_workers {
                let metrics = worker.metrics_text().await;
                if metrics.lines().any(|l| {
                    l.starts_with("tapedeck_plugin_runs_total{")
                        && l.contains("stage=\"converter\"")
                        && l.contains(&format!("digest=\"{digest}\""))
                        && l.contains("outcome=\"ok\"")
                }) {
                    return true;
                }
            }
            false
        })
        .await;
    };
    activate(&op, &da, json!({"stage": "converter"})).await;
    converted_with(&da).await;
    activate(&op, &db, json!({"stage": "converter"})).await;
    converted_with(&db).await;
    let r = op
        .post("/v1/admin/plugins/rollback")
        .json(&json!({"stage": "converter"}))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["active"]["digest"],
        da.as_str(),
        "back to the one before: {v}"
    );
    swapping.store(false, std::sync::atomic::Ordering::Relaxed);
    ids.extend(feeder.await.unwrap());
    // Every process (the two workers, and the gateway for the auth stage) reports that
    // it runs the registry's latest version.
    let mut active = Value::Null;
    wait_for(
        Duration::from_secs(10),
        "both workers on the new version",
        async || {
            active = op.get_json("/v1/admin/plugins/active").await;
            let procs = active["processes"].as_array().unwrap();
            // The gateway (auth) and the two workers.
            procs.len() == 3 && procs.iter().all(|p| p["version"] == active["version"])
        },
    )
    .await;

    let known = [builtin.as_str(), da.as_str(), db.as_str()];
    let mut seen = std::collections::HashSet::new();
    for (i, id) in ids.iter().enumerate() {
        let job = me.wait_final(id, SLOW).await;
        assert_eq!(job["status"], "done", "job {i}: {job}");
        assert_eq!(job["attempts"], 1, "job {i}: {job}");
        let used: Vec<&str> = job["converters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_str().unwrap())
            .collect();
        assert_eq!(used.len(), 1, "one attempt, one converter: {job}");
        assert!(known.contains(&used[0]), "{job}");
        seen.insert(used[0].to_owned());
        if i % 25 == 0 {
            let r = me
                .get(&format!("/v1/jobs/{id}/output"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            assert!(check_mp3(&r.bytes().await.unwrap()) > 0.5);
        }
    }
    assert!(
        seen.contains(&da) && seen.contains(&db),
        "both swaps took effect under load: {seen:?}"
    );
}

/// `serve --watch DIR`: a rebuilt `converter.wasm` is picked up without a restart; one
/// that does not load leaves the running converter in place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_reloads_a_rebuilt_converter_from_a_folder() {
    let plugins = tempfile::tempdir().unwrap();
    let s = stack(vec![
        ("watch", plugins.path().display().to_string()),
        ("admin-token", OPERATOR.to_string()),
    ]);
    let op = s.api.with_token(OPERATOR);
    let me = s.api.signed_up("default", "dev@example.com").await;
    let input = not_audio(s._dir.path());
    let hostile_bytes = std::fs::read(env!("TAPEDECK_HOSTILE_WASM")).unwrap();
    let hostile = sha256(&hostile_bytes);
    let builtin = sha256(tapedeck::components::DEFAULT_CONVERTER);
    let target = plugins.path().join("converter.wasm");
    let runs_with = async |digest: &str| {
        let mut job = Value::Null;
        wait_for(
            Duration::from_secs(30),
            "the converter expected",
            async || {
                job = me.upload_and_wait(&input, &[]).await;
                job["converters"] == json!([digest])
            },
        )
        .await;
        job
    };

    std::fs::write(&target, &hostile_bytes).unwrap();
    let job = runs_with(&hostile).await;
    assert_eq!(job["status"], "done", "{job}");

    // A broken build: reported, and the running converter stays.
    std::fs::write(&target, b"not a component").unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let job = me.upload_and_wait(&input, &[]).await;
    assert_eq!(job["converters"], json!([hostile]), "{job}");

    // `plugin active` shows what the process runs from its folder.
    let watched = format!("converter={hostile}");
    wait_for(
        Duration::from_secs(15),
        "the watched converter reported",
        async || {
            let active = op.get_json("/v1/admin/plugins/active").await;
            active["processes"][0]["watched"] == json!([watched])
        },
    )
    .await;
    let cli = AdminCli {
        base: &s.api.base,
        token: OPERATOR,
    };
    let shown = cli.ok(&["plugin", "active"]);
    assert!(
        shown.contains(&format!(
            "runs converter {} from its --watch folder",
            &hostile[..12]
        )),
        "{shown}"
    );

    // Deleted: back to the component that ran before (the built-in one), no longer
    // reported as watched.
    std::fs::remove_file(&target).unwrap();
    let job = runs_with(&builtin).await;
    assert_eq!(
        job["status"], "failed",
        "the built-in converter refuses it: {job}"
    );
    wait_for(
        Duration::from_secs(15),
        "no watched converter reported",
        async || {
            let active = op.get_json("/v1/admin/plugins/active").await;
            active["processes"][0].get("watched").is_none()
        },
    )
    .await;

    // And a new build there is picked up again.
    std::fs::write(&target, &hostile_bytes).unwrap();
    runs_with(&hostile).await;
}

/// Tenant admins publish their own converter when the operator allows it: it runs for
/// their tenant only, nobody else can activate it, and without the permission: 403.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_admins_publish_components_for_their_tenant_only() {
    let s = stack(vec![("admin-token", OPERATOR.to_string())]);
    let op = s.api.with_token(OPERATOR);
    let admin_of = async |tenant: &str, allow: bool| -> Api {
        let r = op
            .post("/v1/admin/tenants")
            .json(&json!({"name": tenant}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let r = op
            .patch(&format!("/v1/admin/tenants/{tenant}"))
            .json(&json!({"allow_plugins": allow}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let email = format!("admin@{tenant}.example");
        let r = op
            .post(&format!("/v1/admin/tenants/{tenant}/users"))
            .json(&json!({"email": email, "password": "correct horse battery", "role": "admin"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        s.api.clone().login(tenant, &email).await
    };
    let own = admin_of("own", true).await;
    let other = admin_of("other", true).await;
    let closed = admin_of("closed", false).await;
    let hostile_bytes = std::fs::read(env!("TAPEDECK_HOSTILE_WASM")).unwrap();
    let hostile = sha256(&hostile_bytes);

    let tenant_publish = async |api: &Api, bytes: Vec<u8>| {
        let form = plugin_form("converter", bytes);
        api.post("/v1/tenant/plugins")
            .multipart(form)
            .send()
            .await
            .unwrap()
    };
    // Refused before the body is read: a small body, so the refusal is what the client
    // sees rather than a connection closed mid-upload.
    let r = tenant_publish(&closed, vec![0u8; 64]).await;
    assert_eq!(r.status(), 403);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "plugins_not_allowed");
    let r = tenant_publish(&own, hostile_bytes.clone()).await;
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["plugin"]["owner"], "own", "{v}");

    let activate_own = async |api: &Api| {
        api.post(&format!("/v1/tenant/plugins/{hostile}/activate"))
            .json(&json!({"stage": "converter"}))
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_eq!(
        activate_own(&other).await,
        404,
        "another tenant's component"
    );
    assert_eq!(activate_own(&own).await, 200);
    let r = op
        .post(&format!("/v1/admin/plugins/{hostile}/activate"))
        .json(&json!({"stage": "converter"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "a tenant's component runs only for it");

    wait_all_applied(&op, Duration::from_secs(30)).await;
    let input = not_audio(s._dir.path());
    let job = own.upload_and_wait(&input, &[]).await;
    assert_eq!(job["status"], "done", "{job}");
    assert_eq!(job["converters"], json!([hostile]), "{job}");
    let job = other.upload_and_wait(&input, &[]).await;
    assert_eq!(job["status"], "failed", "the built-in converter: {job}");
}

/// The auth stage swaps in gateways: a published auth component (the built-in
/// one under another digest; publishing runs the register/login/verify contract) is
/// activated for one tenant, whose users then log in through it and whose tokens it
/// verifies; other tenants keep the built-in one; a rollback puts the tenant back. A
/// component that is not an auth component is refused with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_components_swap_per_tenant_in_the_gateway() {
    let s = stack(vec![
        ("admin-token", OPERATOR.to_string()),
        ("workers", "1".into()),
    ]);
    let op = s.api.with_token(OPERATOR);
    let builtin = sha256(tapedeck::components::DEFAULT_AUTH);
    let mut variant = tapedeck::components::DEFAULT_AUTH.to_vec();
    variant.extend_from_slice(&[0, 5, 4, b'a', b'u', b't', b'h']);
    let own = sha256(&variant);

    let r = publish(
        &op,
        "auth",
        std::fs::read(env!("TAPEDECK_HOSTILE_WASM")).unwrap(),
    )
    .await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("loads: "),
        "{v}"
    );
    let r = publish(&op, "auth", variant).await;
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["plugin"]["world"], "tapedeck:plugin/auth@0.1.0", "{v}");
    assert!(
        v["plugin"]["smoke"]
            .as_str()
            .unwrap()
            .contains("all 9 cases passed"),
        "{v}"
    );

    create_canary(&op).await;
    activate(&op, &own, json!({"stage": "auth", "tenant": "canary"})).await;
    wait_for(
        Duration::from_secs(10),
        "the gateway on the new version",
        async || {
            let active = op.get_json("/v1/admin/plugins/active").await;
            let procs = active["processes"].as_array().unwrap();
            !procs.is_empty() && procs.iter().all(|p| p["version"] == active["version"])
        },
    )
    .await;
    let mine = s.api.signed_up("canary", "a@example.com").await;
    let r = mine.get("/v1/jobs").send().await.unwrap();
    assert_eq!(r.status(), 200, "its own component verifies its tokens");
    let other = s.api.signed_up("default", "b@example.com").await;
    assert_eq!(other.get("/v1/jobs").send().await.unwrap().status(), 200);
    let logins = |metrics: &str, tenant: &str, digest: &str| {
        metrics.lines().any(|l| {
            l.starts_with("tapedeck_plugin_runs_total")
                && l.contains("stage=\"auth\"")
                && l.contains(&format!("tenant=\"{tenant}\""))
                && l.contains(&format!("digest=\"{digest}\""))
        })
    };
    let metrics = s.service.metrics_text().await;
    assert!(logins(&metrics, "canary", &own), "{metrics}");
    assert!(logins(&metrics, "default", &builtin), "{metrics}");
    assert!(!logins(&metrics, "canary", &builtin), "{metrics}");

    // Back to the built-in one: the tenant's tokens (same key) still verify.
    let r = op
        .post("/v1/admin/plugins/rollback")
        .json(&json!({"stage": "auth", "tenant": "canary"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    wait_all_applied(&op, Duration::from_secs(30)).await;
    assert_eq!(mine.get("/v1/jobs").send().await.unwrap().status(), 200);
}

/// The registry of a release before its keys shared the `{~plugins}` hash tag (named
/// `td:plugins:…`): after the upgrade the same component runs, its history and trail are
/// there, and the old names are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_keeps_the_registry_of_the_untagged_keys() {
    let mut s = stack(vec![
        ("admin-token", OPERATOR.to_string()),
        ("workers", "1".into()),
    ]);
    let op = s.api.with_token(OPERATOR);
    let hostile_bytes = std::fs::read(env!("TAPEDECK_HOSTILE_WASM")).unwrap();
    let hostile = sha256(&hostile_bytes);
    let r = publish(&op, "converter", hostile_bytes).await;
    assert_eq!(r.status(), 201);
    activate(&op, &hostile, json!({"stage": "converter"})).await;
    s.service.kill();

    // What the earlier release wrote: the same keys under their old names.
    let mut conn = s.redis.conn();
    let tagged: Vec<String> = redis::cmd("KEYS")
        .arg("td:{~plugins}:*")
        .query(&mut conn)
        .unwrap();
    assert!(
        tagged.contains(&"td:{~plugins}:active".to_string()),
        "{tagged:?}"
    );
    for key in &tagged {
        let old = key.replace("td:{~plugins}:", "td:plugins:");
        let () = redis::cmd("RENAME")
            .arg(key)
            .arg(&old)
            .query(&mut conn)
            .unwrap();
    }

    let service = Service::role(
        Role::All,
        &s.redis.url(),
        s._dir.path(),
        vec![
            ("admin-token", OPERATOR.to_string()),
            ("workers", "1".into()),
        ],
    );
    let api = Api::new(&service.base);
    let op = api.with_token(OPERATOR);
    let active = op.get_json("/v1/admin/plugins/active").await;
    assert_eq!(
        active["active"],
        json!([{"stage": "converter", "tenant": null, "digest": hostile}]),
        "{active}"
    );
    let me = api.signed_up("default", "upgrade@example.com").await;
    let job = me.upload_and_wait(&not_audio(s._dir.path()), &[]).await;
    assert_eq!(job["status"], "done", "{job}");
    assert_eq!(job["converters"], json!([hostile]), "{job}");
    // The trail came along: a rollback goes back to the built-in converter.
    let r = op
        .post("/v1/admin/plugins/rollback")
        .json(&json!({"stage": "converter"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["active"]["digest"], Value::Null, "{v}");
    let history = op
        .get_json("/v1/admin/plugins/history?stage=converter")
        .await;
    assert_eq!(history["history"].as_array().unwrap().len(), 3, "{history}");
    let old: Vec<String> = redis::cmd("KEYS")
        .arg("td:plugins:*")
        .query(&mut conn)
        .unwrap();
    assert_eq!(old, Vec::<String>::new());
}
