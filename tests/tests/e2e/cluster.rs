//! Tapedeck on a real 3-master Redis Cluster (`--redis-cluster-nodes`), with a
//! gateway and a worker as separate processes: the pipeline end to end, tenant limits,
//! fair dispatch, hot swap, a canary, tenant deletion, and the client following `MOVED`.

use super::*;

const OPERATOR: &str = "op-token-0123456789abcdef0123456789";
const SMALL: &str = "aac-lc_8k_stereo_short__musicmetadata_pr-544.m4a";
const LONG: &str = "aac-lc_44k_stereo_music_long__lofty_TempleOS_Hymn.m4a";

/// A cluster, a gateway and a worker (separate processes, one data dir and blob store).
struct ClusterStack {
    dir: tempfile::TempDir,
    cluster: RedisCluster,
    gateway: Service,
    worker: Service,
    api: Api,
}

impl ClusterStack {
    /// The operator's client.
    fn op(&self) -> Api {
        self.api.with_token(OPERATOR)
    }
}

/// `extra` goes to both processes, which are given the nodes `given` (indexes) only.
fn cluster_stack_on(given: &[usize], extra: Vec<(&str, String)>) -> ClusterStack {
    let dir = tempfile::tempdir().unwrap();
    let cluster = RedisCluster::start(&dir.path().join("redis"));
    let nodes = given
        .iter()
        .map(|&i| cluster.nodes[i].url())
        .collect::<Vec<_>>()
        .join(",");
    let start = |role| {
        let mut extra = extra.clone();
        extra.push(("redis-cluster-nodes", nodes.clone()));
        extra.push(("admin-token", OPERATOR.to_string()));
        Service::role(role, "", dir.path(), extra)
    };
    let gateway = start(Role::Gateway);
    let worker = start(Role::Worker);
    let api = Api::new(&gateway.base);
    ClusterStack {
        dir,
        cluster,
        gateway,
        worker,
        api,
    }
}

/// A cluster stack whose processes are given every node.
fn cluster_stack(extra: Vec<(&str, String)>) -> ClusterStack {
    cluster_stack_on(&[0, 1, 2], extra)
}

async fn create_tenant(op: &Api, name: &str, limits: Value) {
    let r = op
        .post("/v1/admin/tenants")
        .json(&json!({"name": name, "self_register": true, "limits": limits}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        201,
        "create {name}: {}",
        r.text().await.unwrap()
    );
}

/// A tenant name `prefix-N` whose slot a node other than `not_on` serves.
fn tenant_elsewhere(cluster: &RedisCluster, prefix: &str, not_on: usize) -> String {
    (0..)
        .map(|i| format!("{prefix}-{i}"))
        .find(|t| cluster.node_of(&tapedeck::store::keys::tenant_key(t)) != not_on)
        .unwrap()
}

fn converters(job: &Value) -> Vec<String> {
    job["converters"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|d| d.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Upload → convert → notify: the job is done with a valid MP3, its events arrive over
/// the gateway's subscription (published on whichever node), its mail is in the outbox,
/// and its keys sit on the node of its tenant's slot. Failed and successful logins (the
/// login guard pipelines counters of several slots) work too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_runs_on_a_cluster() {
    let s = cluster_stack(vec![]);
    let me = s.api.signed_up("default", "cluster@example.com").await;
    let r = s
        .api
        .post("/v1/auth/login")
        .json(&json!({"tenant": "default", "email": "cluster@example.com", "password": "wrong password here"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let me = me.login("default", "cluster@example.com").await;
    let id = me
        .upload_id(&media("aac-lc_44k_stereo_LRtest__rodio_RL.m4a"), &[])
        .await;
    let events = me.follow_events(&id).await;
    let last = events.last().expect("events");
    assert_eq!(last.1["status"], "done", "{events:?}");
    let job = me.wait_final(&id, SLOW).await;
    assert_eq!(job["status"], "done", "{job}");
    let mp3 = me
        .get(&format!("/v1/jobs/{id}/output"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let seconds = check_mp3(&mp3);
    assert!(seconds > 0.5, "an MP3 of {seconds} s");
    let mails = outbox_mails(s.dir.path(), 1, SLOW, Duration::ZERO);
    assert!(mails[0].contains(&id), "{}", mails[0]);
    let keys = tapedeck::store::keys::job_key("default", &id);
    assert_eq!(
        s.cluster.node_of(&keys),
        s.cluster
            .node_of(&tapedeck::store::keys::convert_stream("default"))
    );
    drop((s.gateway, s.worker));
}

/// A tenant's limits on a cluster: its jobs per minute refuse the third upload with the
/// limit named (the gateway's pre-check and the enqueue script read the tenant's slot).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_limits_refuse_on_a_cluster() {
    let s = cluster_stack(vec![]);
    create_tenant(&s.op(), "metered", json!({"jobs_per_minute": 2})).await;
    let me = s.api.signed_up("metered", "m@example.com").await;
    for _ in 0..2 {
        let r = me.upload_raw(&media(SMALL), &[]).await;
        assert_eq!(r.status(), 202);
    }
    let r = me.upload_raw(&media(SMALL), &[]).await;
    assert_eq!(r.status(), 429);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "limit_exceeded", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("jobs_per_minute"),
        "{v}"
    );
    drop((s.gateway, s.worker));
}

/// Fair dispatch across tenants whose slots live on different nodes (the scheduler's on
/// a third, perhaps): a newcomer's job runs next, not after another tenant's backlog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatch_is_fair_across_tenants_on_a_cluster() {
    let s = cluster_stack(vec![("workers", "1".into())]);
    let default_node = s
        .cluster
        .node_of(&tapedeck::store::keys::tenant_key("default"));
    let newcomer = tenant_elsewhere(&s.cluster, "newcomer", default_node);
    let hog = s.api.signed_up("default", "hog@example.com").await;
    let mut hogs = Vec::new();
    for _ in 0..8 {
        hogs.push(hog.upload_id(&media(LONG), &[]).await);
    }
    create_tenant(&s.op(), &newcomer, json!({})).await;
    let other = s.api.signed_up(&newcomer, "n@example.com").await;
    let id = other.upload_id(&media(SMALL), &[]).await;
    assert_eq!(other.wait_final(&id, SLOW).await["status"], "done");
    let mut unfinished = 0;
    for h in &hogs {
        if hog.job(h).await["status"] != "done" {
            unfinished += 1;
        }
    }
    assert!(
        unfinished >= 6,
        "the newcomer's job ran next, not after the backlog ({unfinished} of 8 left)"
    );
    drop((s.gateway, s.worker));
}

/// Hot swap and a canary on a cluster: a published converter activated for everyone
/// converts the next jobs, a rollback brings the built-in one back, a canary at 100 %
/// takes new jobs until it is aborted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_swap_and_a_canary_on_a_cluster() {
    let s = cluster_stack(vec![("workers", "1".into())]);
    let op = s.op();
    let builtin = sha256(tapedeck::components::DEFAULT_CONVERTER);
    let post = async |path: &str, body: Value| {
        let r = op.post(path).json(&body).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json::<Value>().await.unwrap_or(Value::Null))
    };
    // The built-in converter under another digest (a custom section appended).
    let mut variant = tapedeck::components::DEFAULT_CONVERTER.to_vec();
    variant.extend_from_slice(&[0, 8, 7, b'c', b'l', b'u', b's', b't', b'e', b'r']);
    let dv = sha256(&variant);
    assert_eq!(publish(&op, "converter", variant).await.status(), 201);
    let me = s.api.signed_up("default", "swap@example.com").await;
    let clip = media(SMALL);

    let (status, v) = post(
        &format!("/v1/admin/plugins/{dv}/activate"),
        json!({"stage": "converter"}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    wait_all_applied(&op, Duration::from_secs(20)).await;
    let job = me.upload_and_wait(&clip, &[]).await;
    assert_eq!(job["status"], "done", "{job}");
    assert_eq!(converters(&job), std::slice::from_ref(&dv), "{job}");

    let (status, v) = post("/v1/admin/plugins/rollback", json!({"stage": "converter"})).await;
    assert_eq!(status, 200, "{v}");
    wait_all_applied(&op, Duration::from_secs(20)).await;
    let job = me.upload_and_wait(&clip, &[]).await;
    assert_eq!(converters(&job), std::slice::from_ref(&builtin), "{job}");

    let (status, v) = post(
        &format!("/v1/admin/plugins/{dv}/canary"),
        json!({"stage": "converter", "percent": 100, "min_jobs": 50}),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    wait_all_applied(&op, Duration::from_secs(20)).await;
    for _ in 0..2 {
        let job = me.upload_and_wait(&clip, &[]).await;
        assert_eq!(job["status"], "done", "{job}");
        assert_eq!(
            converters(&job),
            std::slice::from_ref(&dv),
            "the canary ran it: {job}"
        );
    }
    let status = op.get_json("/v1/admin/plugins/canaries").await;
    let totals = &status["canaries"][0]["totals"];
    assert_eq!(totals["canary:ok"], 2, "{status}");
    let (status, v) = post(
        "/v1/admin/plugins/canary/abort",
        json!({"stage": "converter"}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    wait_all_applied(&op, Duration::from_secs(20)).await;
    let job = me.upload_and_wait(&clip, &[]).await;
    assert_eq!(converters(&job), [builtin], "aborted: {job}");
    drop((s.gateway, s.worker));
}

/// Deleting a tenant on a cluster: its keys (one slot, scanned on the node serving it)
/// and blobs go, it leaves the scheduler and `td:tenants`, the other tenant is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_tenant_on_a_cluster_leaves_nothing_behind() {
    let s = cluster_stack(vec![]);
    create_tenant(&s.op(), "gone", json!({})).await;
    let doomed = s.api.signed_up("gone", "g@example.com").await;
    assert_eq!(
        doomed.upload_and_wait(&media(SMALL), &[]).await["status"],
        "done"
    );
    let keep = s.api.signed_up("default", "stay@example.com").await;
    let kept = keep.upload_and_wait(&media(SMALL), &[]).await;
    outbox_mails(s.dir.path(), 2, SLOW, Duration::ZERO);
    let node = s
        .cluster
        .node_of(&tapedeck::store::keys::tenant_key("gone"));
    let tagged = |cluster: &RedisCluster| -> Vec<String> {
        redis::cmd("KEYS")
            .arg("td:{gone}:*")
            .query(&mut cluster.nodes[node].conn())
            .unwrap()
    };
    assert!(!tagged(&s.cluster).is_empty());
    let r = s
        .op()
        .delete("/v1/admin/tenants/gone")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    wait_for(
        Duration::from_secs(30),
        "the tenant's keys to go",
        async || tagged(&s.cluster).is_empty(),
    )
    .await;
    let mut conn = s.cluster.conn();
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
        assert!(!s.dir.path().join(dir).exists(), "{dir}");
    }
    assert_eq!(
        keep.job(kept["id"].as_str().unwrap()).await["status"],
        "done"
    );
    drop((s.gateway, s.worker));
}

/// Processes given one node find the others (a tenant whose slot another node serves
/// converts), and follow `MOVED` when that slot migrates to a third node while they run:
/// the job from before is found where its keys went, and a new one converts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_finds_the_other_nodes_and_follows_moved() {
    let s = cluster_stack_on(&[0], vec![]);
    let tenant = tenant_elsewhere(&s.cluster, "roaming", 0);
    create_tenant(&s.op(), &tenant, json!({})).await;
    let me = s.api.signed_up(&tenant, "r@example.com").await;
    let before = me.upload_and_wait(&media(SMALL), &[]).await;
    assert_eq!(before["status"], "done", "{before}");
    let key = tapedeck::store::keys::tenant_key(&tenant);
    let from = s.cluster.node_of(&key);
    let to = (0..3).find(|&n| n != from && n != 0).unwrap_or(0);
    s.cluster.migrate_slot_of(&key, to);
    assert_eq!(s.cluster.node_of(&key), to);
    let id = before["id"].as_str().unwrap();
    assert_eq!(me.job(id).await["status"], "done");
    let after = me.upload_and_wait(&media(SMALL), &[]).await;
    assert_eq!(after["status"], "done", "{after}");
    outbox_mails(s.dir.path(), 2, SLOW, Duration::ZERO);
    drop((s.gateway, s.worker));
}
