//! `tapedeck serve`'s settings in layers: each setting is taken from its flag, else its
//! environment variable, else the TOML file of `--config`, else the default.

use super::*;

/// One process configured in all three layers at once. `redis_url` is in the file, the
/// environment and a flag, and only the flag's Redis runs: the process is ready only if
/// the flag won. `max_upload_bytes` is in the file (1000) and the environment (2000):
/// the environment's limit is the one an upload meets. `bench_routes` is in the file
/// alone, and its route is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flag_beats_its_env_var_which_beats_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(&dir.path().join("redis"));
    // Nothing listens on port 1.
    let nowhere = "redis://127.0.0.1:1";
    let file = dir.path().join("tapedeck.toml");
    std::fs::write(
        &file,
        format!("redis_url = \"{nowhere}\"\nmax_upload_bytes = 1000\nbench_routes = true\n"),
    )
    .unwrap();
    let service = Service::role(
        Role::All,
        &redis.url(),
        dir.path(),
        vec![
            ("config", file.display().to_string()),
            ("env:REDIS_URL", nowhere.into()),
            ("env:TAPEDECK_MAX_UPLOAD_BYTES", "2000".into()),
        ],
    );
    let api = Api::new(&service.base)
        .signed_up("default", "layers@example.com")
        .await;
    let upload = |len: usize| {
        let mut body = b"\0\0\0\x20ftypisom".to_vec();
        body.resize(len, 0);
        api.post("/v1/jobs")
            .header("content-type", "application/octet-stream")
            .body(body)
            .send()
    };

    let r = upload(2500).await.unwrap();
    assert_eq!(r.status(), 413);
    let refused: Value = r.json().await.unwrap();
    assert_eq!(refused["error"]["limit"], "max_upload_bytes", "{refused}");
    assert_eq!(refused["error"]["value"], 2000, "{refused}");
    let r = upload(1500).await.unwrap();
    assert_eq!(r.status(), 202, "over the file's limit, within the env's");
    let job: Value = r.json().await.unwrap();

    let id = job["id"].as_str().unwrap();
    let r = reqwest::get(format!("{}/bench/unauthenticated/jobs/{id}", service.base))
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "bench_routes from the file");
}
