//! Tenants and layered limits, end to end: real `tapedeck serve` processes, a
//! real redis-server, real HTTP. Every limit is hit through the API with its exact status
//! and error body (`limit_exceeded`, the limit's name, its value, the layer that set it).

use super::*;

const OPERATOR: &str = "op-token-0123456789abcdef0123456789";

/// A service with the operator token set, plus `extra` flags.
fn operated(extra: Vec<(&str, String)>) -> Stack {
    let mut flags = vec![("admin-token", OPERATOR.to_string())];
    flags.extend(extra);
    stack(flags)
}

/// A gateway only (no worker): jobs stay queued, so backlog limits can be reached.
fn gateway_only(extra: Vec<(&str, String)>) -> (tempfile::TempDir, RedisServer, Service, Api) {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(&dir.path().join("redis"));
    let mut flags = vec![("admin-token", OPERATOR.to_string())];
    flags.extend(extra);
    let service = Service::role(Role::Gateway, &redis.url(), dir.path(), flags);
    let api = Api::new(&service.base);
    (dir, redis, service, api)
}

/// The operator's client.
fn operator(api: &Api) -> Api {
    api.with_token(OPERATOR)
}

/// Creates tenant `name` (self-registration on) with `limits`; returns the answer.
async fn create_tenant(api: &Api, name: &str, limits: Value) -> Value {
    let r = operator(api)
        .post("/v1/admin/tenants")
        .json(&json!({"name": name, "self_register": true, "limits": limits}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "create {name}");
    r.json().await.unwrap()
}

/// Asserts a `limit_exceeded` refusal; returns the response headers.
async fn refused(
    r: reqwest::Response,
    status: u16,
    limit: &str,
    value: u64,
    layer: &str,
) -> reqwest::header::HeaderMap {
    let got = r.status();
    let headers = r.headers().clone();
    let v: Value = r.json().await.unwrap();
    assert_eq!(got, status, "{limit}: {v}");
    assert_eq!(v["error"]["code"], "limit_exceeded", "{v}");
    assert_eq!(v["error"]["limit"], limit, "{v}");
    assert_eq!(v["error"]["value"], value, "{v}");
    assert_eq!(v["error"]["layer"], layer, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains(limit),
        "the message names the limit: {v}"
    );
    headers
}

const SMALL: &str = "aac-lc_8k_stereo_short__musicmetadata_pr-544.m4a";
const LONG: &str = "aac-lc_44k_stereo_music_long__lofty_TempleOS_Hymn.m4a";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_manage_tenants_and_limits_with_their_token_only() {
    let (_dir, _redis, _service, api) =
        gateway_only(vec![("tenant-defaults", "jobs_per_minute=50".into())]);
    // No token, a user's token, a wrong token: 401.
    let user = api.signed_up("default", "plain@example.com").await;
    for client in [
        api.clone(),
        user.clone(),
        api.with_token("op-token-0123456789abcdef0123456788"),
    ] {
        let r = client.get("/v1/admin/tenants").send().await.unwrap();
        assert_eq!(r.status(), 401);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "invalid_token");
    }
    let op = operator(&api);
    let created = create_tenant(
        &api,
        "acme",
        json!({"jobs_per_minute": 100, "max_queued": 7}),
    )
    .await;
    assert_eq!(created["tenant"]["limits"]["max_queued"], 7);
    // Layering: the server default (50) is lower than the tenant's 100.
    assert_eq!(created["tenant"]["effective"]["jobs_per_minute"], 50);
    let again = op
        .post("/v1/admin/tenants")
        .json(&json!({"name": "acme"}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
    for bad in [
        json!({"name": "Not Valid"}),
        json!({"name": "x", "limits": {"max_queued": 0}}),
        json!({"name": "x", "limits": {"weight": 5000}}),
    ] {
        let r = op
            .post("/v1/admin/tenants")
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
    }
    // A body that does not fit the schema at all: 422, as for every JSON body.
    let bad = json!({"name": "x", "limits": {"bogus": 1}});
    let r = op
        .post("/v1/admin/tenants")
        .json(&bad)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422, "{bad}");
    let list = op.get_json("/v1/admin/tenants").await;
    let names: Vec<&str> = list["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["acme", "default"]);

    let r = op
        .patch("/v1/admin/tenants/acme/limits")
        .json(&json!({"max_queued": null, "max_running": 2, "weight": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert!(v["limits"].get("max_queued").is_none(), "{v}");
    assert_eq!(v["limits"]["max_running"], 2);
    assert_eq!(v["server"]["jobs_per_minute"], 50);
    assert_eq!(v["effective"]["weight"], 3);
    let r = op
        .patch("/v1/admin/tenants/acme/limits")
        .json(&json!({"nonsense": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = op.get("/v1/admin/tenants/nope").send().await.unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_rate_backlog_and_size_limits_refuse_with_the_limit_named() {
    let (_dir, _redis, _service, api) =
        gateway_only(vec![("tenant-defaults", "max_queued=3".into())]);
    create_tenant(
        &api,
        "lim",
        json!({"max_upload_bytes": 6000, "jobs_per_minute": 2, "max_queued": 10}),
    )
    .await;
    let me = api.signed_up("lim", "lim@example.com").await;
    // 413: the tenant's upload limit, before the job exists.
    let r = me
        .upload_raw(
            &media("aac-lc_16k_mono__androidx_bbb_1ch_16kHz_aac.mp4"),
            &[],
        )
        .await;
    refused(r, 413, "max_upload_bytes", 6000, "tenant").await;
    // Two jobs a minute; the third is refused with Retry-After up to the next minute.
    me.upload_id(&media(SMALL), &[]).await;
    me.upload_id(&media(SMALL), &[]).await;
    let r = me.upload_raw(&media(SMALL), &[]).await;
    let headers = refused(r, 429, "jobs_per_minute", 2, "tenant").await;
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");

    // Backlog: the server default (3) is below the tenant's 10. Nothing converts here.
    create_tenant(&api, "backlog", json!({"max_queued": 10})).await;
    let b = api.signed_up("backlog", "b@example.com").await;
    for _ in 0..3 {
        b.upload_id(&media(SMALL), &[]).await;
    }
    let r = b.upload_raw(&media(SMALL), &[]).await;
    let headers = refused(r, 429, "max_queued", 3, "server").await;
    assert!(headers.contains_key("retry-after"));
    // Another tenant is not affected.
    let other = api.signed_up("default", "other@example.com").await;
    other.upload_id(&media(SMALL), &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_counts_uploads_and_returns_to_zero_after_deletes() {
    let (_dir, _redis, _service, api) = gateway_only(vec![]);
    let size = std::fs::metadata(media(SMALL)).unwrap().len();
    create_tenant(&api, "quota", json!({"quota_bytes": size * 3 / 2})).await;
    let admin = api
        .signed_up_admin(&_redis, "quota", "qa@example.com")
        .await;
    let first = admin.upload_id(&media(SMALL), &[]).await;
    let usage = admin.get_json("/v1/tenant/usage").await;
    assert_eq!(usage["stored_bytes"], size, "{usage}");
    assert_eq!(usage["jobs"]["queued"], 1, "{usage}");
    assert_eq!(usage["hours"][0]["jobs"], 1, "{usage}");
    assert_eq!(usage["hours"][0]["bytes_in"], size, "{usage}");
    let r = admin.upload_raw(&media(SMALL), &[]).await;
    refused(r, 403, "quota_bytes", size * 3 / 2, "tenant").await;
    let r = admin
        .delete(&format!("/v1/jobs/{first}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let usage = admin.get_json("/v1/tenant/usage").await;
    assert_eq!(usage["stored_bytes"], 0, "{usage}");
    assert_eq!(usage["jobs"]["queued"], 0, "{usage}");
    admin.upload_id(&media(SMALL), &[]).await;
    // The operator sees the same figures.
    let v = operator(&api)
        .get_json("/v1/admin/tenants/quota/usage")
        .await;
    assert_eq!(v["stored_bytes"], size);
    let all = operator(&api).get_json("/v1/admin/usage").await;
    let quota = all["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["tenant"] == "quota")
        .expect("every tenant's usage");
    assert_eq!(quota["stored_bytes"], size, "{all}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_limits_of_a_tenant_fail_the_job_at_once_saying_who_can_raise_them() {
    let s = operated(vec![("workers", "2".into())]);
    create_tenant(&s.api, "short", json!({"max_input_minutes": 2})).await;
    create_tenant(&s.api, "tight", json!({"max_output_mib": 1})).await;
    let short = s.api.signed_up("short", "s@example.com").await;
    let tight = s.api.signed_up("tight", "t@example.com").await;
    // 3.5 minutes of music over a 2-minute limit: refused before converting.
    let job = short.upload_and_wait(&media(LONG), &[]).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["attempts"], 1, "a limit is not retried: {job}");
    let error = job["error"].as_str().unwrap();
    assert!(error.contains("max_input_minutes"), "{error}");
    assert!(error.contains("3.6 minutes of audio"), "{error}");
    assert!(
        error.contains("tapedeck admin tenant limits short --max-input-minutes"),
        "{error}"
    );
    // The same file as ~5 MB of MP3 against a 1 MiB output limit.
    let job = tight.upload_and_wait(&media(LONG), &[]).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["attempts"], 1, "{job}");
    let error = job["error"].as_str().unwrap();
    assert!(
        error.contains("tapedeck admin tenant limits tight --max-output-mb"),
        "{error}"
    );
    // The default tenant converts the same file.
    let me = s.api.signed_up("default", "d@example.com").await;
    assert_eq!(
        me.upload_and_wait(&media(LONG), &[]).await["status"],
        "done"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_seconds_per_hour_are_measured_and_stop_dispatch_for_the_hour() {
    let s = operated(vec![("workers", "1".into())]);
    create_tenant(&s.api, "cpu", json!({"cpu_seconds_per_hour": 1})).await;
    let admin = s
        .api
        .signed_up_admin(&s.redis, "cpu", "c@example.com")
        .await;
    // The first job runs (the budget is checked before a job starts) and spends it.
    let first = admin.upload_and_wait(&media(LONG), &[]).await;
    assert_eq!(first["status"], "done", "{first}");
    let usage = admin.get_json("/v1/tenant/usage").await;
    let cpu = usage["hours"][0]["cpu_seconds"].as_f64().unwrap();
    assert!(
        cpu >= 1.0,
        "3.5 minutes of music cost measured CPU time: {usage}"
    );
    // The next waits for the next hour; another tenant's job still runs.
    let waiting = admin.upload_id(&media(SMALL), &[]).await;
    let other = s.api.signed_up("default", "o@example.com").await;
    assert_eq!(
        other.upload_and_wait(&media(SMALL), &[]).await["status"],
        "done"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let job = admin.job(&waiting).await;
    assert_eq!(job["status"], "queued", "{job}");
    assert_eq!(job["attempts"], 0, "{job}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_expires_finished_jobs_and_frees_their_bytes() {
    // The janitor judges retention two days ahead of the real clock.
    let s = operated(vec![
        (
            "env:TAPEDECK_TEST_CLOCK_SKEW_SECS",
            (2 * 86_400).to_string(),
        ),
        ("env:TAPEDECK_TEST_RETENTION_SCAN_SECS", "1".to_string()),
    ]);
    create_tenant(&s.api, "keep", json!({"retention_days": 1})).await;
    let admin = s
        .api
        .signed_up_admin(&s.redis, "keep", "k@example.com")
        .await;
    let id = admin.upload_id(&media(SMALL), &[]).await;
    // A scan a second: the job may be done and expired between two polls, so "done" is
    // seen in what expiry keeps (its output's description, no error).
    let mut expired = Value::Null;
    wait_for(SLOW, "the job to expire", async || {
        expired = admin.job(&id).await;
        assert!(
            ["queued", "converting", "done", "expired"]
                .contains(&expired["status"].as_str().unwrap()),
            "{expired}"
        );
        expired["status"] == "expired"
    })
    .await;
    assert!(
        expired["error"].is_null() && expired["output"]["bytes"].as_u64() > Some(0),
        "expired after it was done: {expired}"
    );
    let usage = admin.get_json("/v1/tenant/usage").await;
    assert_eq!(usage["stored_bytes"], 0, "{usage}");
    assert_eq!(usage["jobs"]["expired"], 1, "{usage}");
    assert_eq!(usage["jobs"]["done"], 0, "{usage}");
    for dir in ["blobs/in/keep", "blobs/out/keep"] {
        let left = std::fs::read_dir(s._dir.path().join(dir))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(left, 0, "{dir}");
    }
    let r = admin
        .get(&format!("/v1/jobs/{id}/output"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409, "an expired job has no output");
    // The default tenant keeps its jobs (no retention set).
    let me = s.api.signed_up("default", "d@example.com").await;
    let kept = me.upload_and_wait(&media(SMALL), &[]).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(me.job(kept["id"].as_str().unwrap()).await["status"], "done");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_tenant_leaves_nothing_behind() {
    let s = operated(vec![]);
    create_tenant(&s.api, "gone", json!({"max_queued": 5})).await;
    let admin = s
        .api
        .signed_up_admin(&s.redis, "gone", "g@example.com")
        .await;
    let job = admin.upload_and_wait(&media(SMALL), &[]).await;
    assert_eq!(job["status"], "done");
    let keep = s.api.signed_up("default", "stay@example.com").await;
    let kept = keep.upload_and_wait(&media(SMALL), &[]).await;
    // Both notifications are out (nothing of the tenant is still in flight).
    outbox_mails(s._dir.path(), 2, SLOW, Duration::ZERO);
    let tagged = |redis: &mut redis::Connection| -> Vec<String> {
        redis::cmd("KEYS").arg("td:{gone}:*").query(redis).unwrap()
    };
    assert!(!tagged(&mut s.redis.conn()).is_empty());

    let r = operator(&s.api)
        .delete("/v1/admin/tenants/gone")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    // At once: no more logins or uploads.
    let r = admin.upload_raw(&media(SMALL), &[]).await;
    assert_eq!(r.status(), 401);
    let redis = s.redis.url();
    wait_for(
        Duration::from_secs(20),
        "the tenant's keys to go",
        async || {
            let mut conn = redis::Client::open(redis.as_str())
                .unwrap()
                .get_connection()
                .unwrap();
            tagged(&mut conn).is_empty()
        },
    )
    .await;
    let mut conn = s.redis.conn();
    let members: Vec<String> = redis::cmd("SMEMBERS")
        .arg(tapedeck::store::keys::TENANTS)
        .query(&mut conn)
        .unwrap();
    assert_eq!(members, ["default"]);
    let ready: Option<f64> = redis::cmd("ZSCORE")
        .arg(tapedeck::store::keys::SCHED_READY)
        .arg("gone")
        .query(&mut conn)
        .unwrap();
    assert_eq!(ready, None);
    for dir in ["blobs/in/gone", "blobs/out/gone"] {
        assert!(!s._dir.path().join(dir).exists(), "{dir}");
    }
    // The other tenant is untouched.
    assert_eq!(
        keep.job(kept["id"].as_str().unwrap()).await["status"],
        "done"
    );
    let r = operator(&s.api)
        .get("/v1/admin/tenants/gone")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // The name can be used again.
    create_tenant(&s.api, "gone", json!({})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_admins_manage_their_users() {
    let (_dir, _redis, _service, api) = gateway_only(vec![]);
    create_tenant(&api, "team", json!({})).await;
    // The operator makes the tenant's first admin.
    let r = operator(&api)
        .post("/v1/admin/tenants/team/users")
        .json(&json!({"email": "lead@example.com", "password": "correct horse battery", "role": "admin"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["user"]["role"], "admin");
    let admin = api.clone().login("team", "lead@example.com").await;
    let r = admin
        .post("/v1/tenant/users")
        .json(&json!({"email": "New@Example.com", "password": "correct horse battery", "role": "user"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["user"]["email"], "new@example.com");
    let newbie = api.clone().login("team", "new@example.com").await;
    // A plain user may not manage users.
    let r = newbie.get("/v1/tenant/users").send().await.unwrap();
    assert_eq!(r.status(), 403);
    let users = admin.get_json("/v1/tenant/users").await;
    let emails: Vec<&str> = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["email"].as_str().unwrap())
        .collect();
    assert_eq!(emails, ["lead@example.com", "new@example.com"]);
    let r = admin
        .patch("/v1/tenant/users/new@example.com")
        .json(&json!({"role": "admin"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The new role applies from the next login.
    let promoted = api.clone().login("team", "new@example.com").await;
    assert_eq!(
        promoted
            .get("/v1/tenant/users")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let r = admin
        .delete("/v1/tenant/users/new@example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = api
        .http
        .post(api.url("/v1/auth/login"))
        .json(&json!({"tenant": "team", "email": "new@example.com", "password": "correct horse battery"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "a removed user cannot log in");
    let r = admin
        .delete("/v1/tenant/users/lead@example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409, "not oneself");
}

/// Weighted fair dispatch through the real service: a tenant holding a backlog does not
/// delay a newcomer's job behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_does_not_starve_another_tenants_job() {
    let s = operated(vec![("workers", "1".into())]);
    let hog = s.api.signed_up("default", "hog@example.com").await;
    let mut hogs = Vec::new();
    for _ in 0..12 {
        hogs.push(hog.upload_id(&media(LONG), &[]).await);
    }
    create_tenant(&s.api, "newcomer", json!({})).await;
    let newcomer = s.api.signed_up("newcomer", "n@example.com").await;
    let id = newcomer.upload_id(&media(SMALL), &[]).await;
    assert_eq!(newcomer.wait_final(&id, SLOW).await["status"], "done");
    let mut unfinished = 0;
    for h in &hogs {
        if hog.job(h).await["status"] != "done" {
            unfinished += 1;
        }
    }
    assert!(
        unfinished >= 10,
        "the newcomer's job ran next, not after the backlog ({unfinished} of 12 left)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_memory_and_notification_limits_apply() {
    let s = operated(vec![]);
    create_tenant(
        &s.api,
        "frugal",
        json!({"max_memory_mib": 1, "notifications_per_hour": 1}),
    )
    .await;
    let me = s.api.signed_up("frugal", "f@example.com").await;
    let job = me.upload_and_wait(&media(SMALL), &[]).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["attempts"], 1, "{job}");
    let error = job["error"].as_str().unwrap();
    assert!(
        error.contains("tapedeck admin tenant limits frugal --max-memory-mb"),
        "{error}"
    );
    // Raised by the operator: it converts; one notification an hour goes out, the
    // second is dead-lettered with the limit.
    let r = operator(&s.api)
        .patch("/v1/admin/tenants/frugal/limits")
        .json(&json!({"max_memory_mib": null}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        me.upload_and_wait(&media(SMALL), &[]).await["status"],
        "done"
    );
    let redis = s.redis.url();
    wait_for(Duration::from_secs(30), "the capped message", async || {
        let mut conn = redis::Client::open(redis.as_str())
            .unwrap()
            .get_connection()
            .unwrap();
        let dead: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
            .arg(tapedeck::store::keys::notify_dead_key("frugal"))
            .arg("-")
            .arg("+")
            .query(&mut conn)
            .unwrap();
        dead.iter().any(|(_, fields)| {
            fields
                .iter()
                .any(|(k, v)| k == "reason" && v.contains("cap of 1 messages per hour"))
        })
    })
    .await;
    let mails = outbox_mails(s._dir.path(), 1, SLOW, Duration::from_secs(1));
    assert_eq!(mails.len(), 1, "one mail an hour: {mails:?}");
}

/// A worker killed with SIGKILL while it holds a capped tenant's only running slot: its
/// lease expires, another worker (already running: no start-up takeover) claims the
/// entry, and the count returns to zero — the tenant is not stuck at its cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_workers_lease_frees_itself() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(&dir.path().join("redis"));
    let url = redis.url();
    let gateway = Service::role(
        Role::Gateway,
        &url,
        dir.path(),
        vec![("admin-token", OPERATOR.to_string())],
    );
    let worker = || {
        Service::role(
            Role::Worker,
            &url,
            dir.path(),
            vec![
                ("workers", "2".into()),
                ("visibility-timeout-secs", "3".into()),
            ],
        )
    };
    let api = Api::new(&gateway.base);
    create_tenant(&api, "one", json!({"max_running": 1})).await;
    let me = api.signed_up("one", "one@example.com").await;
    let mut doomed = worker();
    let first = me.upload_id(&media(LONG), &[]).await;
    me.wait_converting(&first, true).await;
    let _survivor = worker();
    let second = me.upload_id(&media(SMALL), &[]).await;
    let running = |redis: &RedisServer| -> u64 {
        redis::cmd("ZCARD")
            .arg(tapedeck::store::keys::running_key("one"))
            .query(&mut redis.conn())
            .unwrap()
    };
    assert_eq!(running(&redis), 1, "the cap holds the second job back");
    assert_eq!(me.job(&second).await["status"], "queued");
    doomed.kill();
    let job = me.wait_final(&first, SLOW).await;
    assert_eq!(job["status"], "done", "{job}");
    assert_eq!(job["attempts"], 2, "{job}");
    assert_eq!(me.wait_final(&second, SLOW).await["status"], "done");
    assert_eq!(running(&redis), 0, "no lease left behind");
    let usage = operator(&api).get_json("/v1/admin/tenants/one/usage").await;
    assert_eq!(usage["running"], 0, "{usage}");
    assert_eq!(usage["jobs"]["done"], 2, "{usage}");
}

/// A tenant's CPU per minute of audio: a converter that loops is stopped at the tenant's
/// (lower) sizing, and the reason names the tenant limit and how to raise it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_cpu_per_audio_minute_sizes_the_run() {
    let s = operated(vec![
        ("converter", env!("TAPEDECK_HOSTILE_WASM").into()),
        ("run-cpu-base-secs", "1".into()),
    ]);
    create_tenant(&s.api, "slowcpu", json!({"cpu_per_audio_minute": 1})).await;
    let me = s.api.signed_up("slowcpu", "cpu@example.com").await;
    let mut spin = b"loopftyp".to_vec();
    spin.resize(4096, 0);
    let path = s._dir.path().join("spin.mp4");
    std::fs::write(&path, &spin).unwrap();
    let job = me.upload_and_wait(&path, &[]).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["attempts"], 1, "{job}");
    let error = job["error"].as_str().unwrap();
    assert!(
        error.starts_with("CPU time limit of 2 s exceeded"),
        "{error}"
    );
    assert!(
        error.contains("tapedeck admin tenant limits slowcpu --cpu-per-audio-minute"),
        "{error}"
    );
}
