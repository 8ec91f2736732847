//! The data dir and the managed Redis are private to
//! the service's user, `/metrics` is served apart from the API and forgets deleted
//! tenants, SSE streams share one Redis subscription and are capped per user, and the
//! small ones (a refusal names the layer it reports, hyper's 414/431 in JSON, unknown
//! notification settings refused).

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::*;

const OPERATOR: &str = "op-token-0123456789abcdef0123456789";
const SMALL: &str = "aac-lc_8k_stereo_short__musicmetadata_pr-544.m4a";
const LONG: &str = "aac-lc_44k_stereo_music_long__lofty_TempleOS_Hymn.m4a";

/// Runs `program args` as user `nobody` (uid and gid 65534, no supplementary groups);
/// returns whether it succeeded, and its stdout and stderr.
fn as_nobody(program: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", program])
        .args(args)
        .output()
        .expect("setpriv (util-linux) runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Every path under `dir` (not following symlinks), `dir` included.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut found = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < found.len() {
        let path = found[i].clone();
        i += 1;
        let is_dir = std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir());
        // A scratch directory may go while the walk runs.
        if is_dir && let Ok(entries) = std::fs::read_dir(&path) {
            found.extend(entries.flatten().map(|e| e.path()));
        }
    }
    found
}

/// The TCP sockets process `pid` listens on (its socket inodes found in the LISTEN
/// rows of /proc/net/tcp and tcp6).
fn tcp_listeners_of(pid: u32) -> Vec<String> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|target| {
            let t = target.to_string_lossy().into_owned();
            t.strip_prefix("socket:[")
                .and_then(|s| s.strip_suffix(']'))
                .map(str::to_owned)
        })
        .collect();
    let mut listening = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for row in text.lines().skip(1) {
            let cols: Vec<&str> = row.split_whitespace().collect();
            // `sl local rem st ... inode` (state 0A: LISTEN; inode is the 10th column).
            if cols.len() > 9 && cols[3] == "0A" && inodes.iter().any(|i| i == cols[9]) {
                listening.push(row.to_owned());
            }
        }
    }
    listening
}

/// As `nobody`, the managed Redis cannot be reached (no TCP port; its socket is
/// inside 0700 directories) and no blob, AOF or other file of the data dir can be read;
/// every file and directory under it is owner-only, although the service was started
/// with umask 000.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_local_user_reaches_neither_the_managed_redis_nor_the_data() {
    // SAFETY: geteuid(2) only reads the caller's effective uid.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "switching to uid nobody needs root: run the suite as root (CI does), or leave this \
         test out by name (never a silent pass)"
    );
    let dir = tempfile::tempdir().unwrap();
    // The temp dir itself is 0700: open it, so only the data dir's own modes protect it.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let control = dir.path().join("control.txt");
    std::fs::write(&control, "readable").unwrap();
    std::fs::set_permissions(&control, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (ok, text) = as_nobody("cat", &[control.to_str().unwrap()]);
    assert!(
        ok && text == "readable",
        "nobody can read beside the data dir: {text}"
    );

    let data = dir.path().join("data");
    let mut command = Command::new(serve_exe());
    command
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "off",
        ])
        .arg("--data-dir")
        .arg(&data)
        .env("RUST_LOG", "warn")
        .env_remove("REDIS_URL")
        .env_remove("TAPEDECK_CONFIG")
        .env_remove("TAPEDECK_BLOB_URL")
        .stdout(Stdio::piped());
    // SAFETY: umask(2) is async-signal-safe, as pre_exec requires.
    unsafe {
        command.pre_exec(|| {
            libc::umask(0);
            Ok(())
        });
    }
    let mut child = command.spawn().unwrap();
    let base = listening_on(&mut child);
    let service = Service { child, base };
    let ready = format!("{}/readyz", service.base);
    wait_for(SLOW, "the service ready", async || {
        reqwest::get(&ready).await.is_ok_and(|r| r.status() == 200)
    })
    .await;

    let api = Api::new(&service.base);
    let me = api.signed_up("default", "private@example.com").await;
    let job = me.upload_and_wait(&media(SMALL), &[]).await;
    assert_eq!(job["status"], "done", "{job}");
    outbox_mails(&data, 1, SLOW, Duration::ZERO);

    // The managed Redis: a socket that works for the service's user, and no TCP port.
    let socket = data.join("redis").join("redis.sock");
    let out = Command::new("redis-cli")
        .arg("-s")
        .arg(&socket)
        .arg("PING")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "PONG");
    let redis_pid: u32 = std::fs::read_to_string(data.join("redis").join("managed.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let tcp = tcp_listeners_of(redis_pid);
    assert!(tcp.is_empty(), "the managed Redis listens on TCP: {tcp:?}");

    let files = walk(&data);
    let blob = files
        .iter()
        .find(|p| p.starts_with(data.join("blobs")) && p.is_file())
        .expect("a blob");
    let aof = files
        .iter()
        .find(|p| p.is_file() && p.to_string_lossy().contains(".aof"))
        .expect("an AOF file");
    for (what, args) in [
        ("redis-cli", vec!["-s", socket.to_str().unwrap(), "PING"]),
        ("cat", vec![blob.to_str().unwrap()]),
        ("cat", vec![aof.to_str().unwrap()]),
        ("ls", vec![data.to_str().unwrap()]),
    ] {
        let (ok, text) = as_nobody(what, &args);
        assert!(
            !ok && !text.contains("PONG"),
            "nobody ran `{what} {args:?}`: {text}"
        );
    }
    for path in &files {
        // A temporary file may be gone since the walk.
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            continue;
        };
        let mode = meta.permissions().mode();
        assert_eq!(
            mode & 0o077,
            0,
            "{} is {:o}: group or others have access",
            path.display(),
            mode & 0o777
        );
    }
    assert!(
        files.len() > 10,
        "the walk saw the data dir's files: {files:?}"
    );
}

/// `/metrics` is not on the API's listener; on its own one, a deleted tenant's
/// series are gone once the tenant is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_served_apart_and_forget_deleted_tenants() {
    let s = stack(vec![("admin-token", OPERATOR.to_string())]);
    let op = s.api.with_token(OPERATOR);
    let r = s.api.get("/metrics").send().await.unwrap();
    assert_eq!(r.status(), 404, "no /metrics on the API listener");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "not_found", "{v}");

    let r = op
        .post("/v1/admin/tenants")
        .json(&json!({"name": "doomed", "self_register": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let user = s.api.signed_up("doomed", "d@example.com").await;
    user.upload_and_wait(&media(SMALL), &[]).await;
    let mine = |text: &str, tenant: &str| {
        text.lines()
            .filter(|l| !l.starts_with('#') && l.contains(&format!("tenant=\"{tenant}\"")))
            .count()
    };
    let before = s.service.metrics_text().await;
    assert!(
        mine(&before, "doomed") >= 3,
        "the tenant's jobs, conversions and logins: {before}"
    );

    let r = op.delete("/v1/admin/tenants/doomed").send().await.unwrap();
    assert_eq!(r.status(), 202);
    let after = s.service.metrics_text().await;
    assert_eq!(mine(&after, "doomed"), 0, "gone with the deletion: {after}");
    assert!(mine(&after, "default") > 0, "other tenants stay: {after}");
    assert!(after.contains("tapedeck_http_requests_total{"), "{after}");
}

/// Opens `GET /v1/jobs/{id}/events`; the response, unread.
async fn open_events(api: &Api, id: &str) -> reqwest::Response {
    api.get(&format!("/v1/jobs/{id}/events"))
        .send()
        .await
        .unwrap()
}

/// Reads an open event stream to its end; its `(event, data)` pairs.
async fn read_events(r: reqwest::Response) -> Vec<(String, Value)> {
    use futures::StreamExt;
    let mut body = r.bytes_stream();
    let mut buf = String::new();
    let mut events = Vec::new();
    while let Some(chunk) = tokio::time::timeout(SLOW, body.next())
        .await
        .expect("SSE stalled")
    {
        buf.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let event = block
                .lines()
                .find_map(|l| l.strip_prefix("event:"))
                .map(|e| e.trim().to_owned());
            let data: String = block
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(str::trim_start)
                .collect();
            if let (Some(event), false) = (event, data.is_empty()) {
                events.push((event, serde_json::from_str(&data).unwrap()));
            }
        }
    }
    events
}

/// `CLIENT LIST`, one client a line.
fn client_list(redis: &RedisServer) -> String {
    redis::cmd("CLIENT")
        .arg("LIST")
        .query(&mut redis.conn())
        .unwrap()
}

/// Clients of `list` with a nonzero field among `fields` (`sub=`, `psub=`).
fn clients_with(list: &str, fields: &[&str]) -> usize {
    list.lines()
        .filter(|l| {
            l.split(' ')
                .any(|f| fields.iter().any(|p| f.starts_with(p)) && !f.ends_with("=0"))
        })
        .count()
}

/// Redis clients in pub/sub mode, and all clients.
fn redis_clients(redis: &RedisServer) -> (usize, usize) {
    let list = client_list(redis);
    (
        clients_with(&list, &["sub=", "psub="]),
        list.lines().count(),
    )
}

/// Many SSE streams are one Redis subscription, which comes back when its
/// connection is killed; events reach every stream; and a user cannot hold more than
/// `max-event-streams-per-user` open (429).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_share_one_subscription_and_are_capped_per_user() {
    const CAP: usize = 6;
    let s = stack(vec![("max-event-streams-per-user", CAP.to_string())]);
    let me = s.api.signed_up("default", "sse@example.com").await;
    let id = me.upload_id(&media(LONG), &[]).await;
    me.wait_converting(&id, false).await;
    // The job events subscription (the one PSUBSCRIBE) is killed: it comes back.
    assert_eq!(clients_with(&client_list(&s.redis), &["psub="]), 1);
    let _: i64 = redis::cmd("CLIENT")
        .arg(&["KILL", "TYPE", "pubsub"])
        .query(&mut s.redis.conn())
        .unwrap();
    wait_for(
        Duration::from_secs(10),
        "the job events subscription back",
        async || clients_with(&client_list(&s.redis), &["psub="]) == 1,
    )
    .await;
    // The service's own subscriptions (registry changes, job cancels, job events).
    let (subscribed_before, clients_before) = redis_clients(&s.redis);
    let mut streams = Vec::new();
    for _ in 0..CAP {
        let r = open_events(&me, &id).await;
        assert_eq!(r.status(), 200);
        streams.push(r);
    }
    let (subscribed, clients) = redis_clients(&s.redis);
    assert_eq!(
        subscribed, subscribed_before,
        "{CAP} streams opened no subscription of their own"
    );
    assert!(
        clients < clients_before + CAP,
        "{CAP} streams added {} Redis clients",
        clients - clients_before
    );

    // Over the cap: a JSON 429 naming the limit; another user is not affected.
    let r = open_events(&me, &id).await;
    assert_eq!(r.status(), 429);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "limit_exceeded", "{v}");
    assert_eq!(v["error"]["limit"], "max_event_streams_per_user", "{v}");
    assert_eq!(v["error"]["value"], CAP, "{v}");
    let other = s.api.signed_up("default", "sse-other@example.com").await;
    let r = open_events(&other, "no-such-job").await;
    assert_eq!(r.status(), 404, "another user's streams count apart");

    // Every stream hears the conversion through the shared subscription, to `done`.
    let mut heard = Vec::new();
    for r in streams.drain(..CAP - 1) {
        heard.push(tokio::spawn(read_events(r)));
    }
    for task in heard {
        let events = task.await.unwrap();
        let (first, last) = (&events[0], events.last().unwrap());
        assert_eq!(first.0, "status");
        assert_ne!(first.1["status"], "done", "opened while converting");
        assert!(
            events.iter().any(|(e, _)| e == "progress"),
            "progress came through pub/sub: {events:?}"
        );
        assert_eq!(last.0, "status");
        assert_eq!(last.1["status"], "done", "{events:?}");
    }
    // Streams that ended free their slots (one is still open).
    let r = open_events(&me, &id).await;
    assert_eq!(r.status(), 200, "slots freed");
}

/// A refusal's message names the layer its `layer` reports; hyper's own 414
/// and 431 answers are JSON; an unknown notification setting is a 400 naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_ones_agree_with_the_error_shape() {
    let s = stack(vec![("admin-token", OPERATOR.to_string())]);
    let op = s.api.with_token(OPERATOR);

    // A quota refused by the enqueue script (after the body): the tenant's limit.
    let size = std::fs::metadata(media(SMALL)).unwrap().len();
    let r = op
        .post("/v1/admin/tenants")
        .json(&json!({"name": "quota", "self_register": true,
                      "limits": {"quota_bytes": size * 3 / 2}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let user = s.api.signed_up("quota", "q@example.com").await;
    user.upload_id(&media(SMALL), &[]).await;
    let r = user.upload_raw(&media(SMALL), &[]).await;
    assert_eq!(r.status(), 403);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["limit"], "quota_bytes", "{v}");
    assert_eq!(v["error"]["layer"], "tenant", "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains("the tenant's limit"), "{message}");
    assert!(!message.contains("server"), "{message}");

    // hyper's parse errors, over a raw socket.
    let addr = s.api.base.strip_prefix("http://").unwrap().to_owned();
    let long_uri = format!("/v1/jobs?x={}", "a".repeat(70_000));
    let many_headers: String = (0..120).map(|i| format!("x-h{i}: {i}\r\n")).collect();
    for (request, status, code) in [
        (
            format!("GET {long_uri} HTTP/1.1\r\nHost: {addr}\r\n\r\n"),
            414,
            "uri_too_long",
        ),
        (
            format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n{many_headers}\r\n"),
            431,
            "headers_too_large",
        ),
    ] {
        let answer = tokio::task::spawn_blocking({
            let addr = addr.clone();
            move || {
                let mut socket = TcpStream::connect(&addr).unwrap();
                socket
                    .set_read_timeout(Some(Duration::from_secs(30)))
                    .unwrap();
                socket.write_all(request.as_bytes()).unwrap();
                let mut answer = Vec::new();
                let _ = socket.read_to_end(&mut answer);
                String::from_utf8_lossy(&answer).into_owned()
            }
        })
        .await
        .unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
        assert!(head.starts_with(&format!("HTTP/1.1 {status} ")), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: application/json"),
            "{head}"
        );
        let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body:?}"));
        assert_eq!(v["error"]["code"], code, "{v}");
        assert!(v["error"]["message"].as_str().unwrap().len() > 10, "{v}");
    }

    // Unknown notification settings: a 400 that names the field; nothing applied.
    let admin = s
        .api
        .signed_up_admin(&s.redis, "default", "n@example.com")
        .await;
    let before = admin.get_json("/v1/tenant/notifications").await;
    let r = admin
        .put("/v1/tenant/notifications")
        .json(
            &json!({"email": !before["settings"]["email"].as_bool().unwrap(),
                      "webhook_urll": "https://example.com/hook"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "invalid_settings", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("webhook_urll"),
        "{v}"
    );
    let after = admin.get_json("/v1/tenant/notifications").await;
    assert_eq!(before, after, "nothing applied");
}

/// `plugin check` keeps compiled code between runs, and what it loads from there runs as
/// machine code: its cache directory is made private, and one that another user owns
/// (who could plant an artifact) is refused with the way out, before anything loads.
#[test]
fn the_check_compile_cache_is_private_and_one_another_user_owns_is_refused() {
    // SAFETY: geteuid(2) only reads the caller's effective uid.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "giving a directory to uid nobody needs root: run the suite as root (CI does), or \
         leave this test out by name (never a silent pass)"
    );
    let dir = tempfile::tempdir().unwrap();
    let notifier = dir.path().join("notifier.wasm");
    std::fs::write(&notifier, tapedeck::components::DEFAULT_NOTIFIER).unwrap();
    let check = |cache: &Path| {
        Command::new(serve_exe())
            .args(["plugin", "check", "--stage", "notifier", "--json"])
            .arg(&notifier)
            .arg("--cache-dir")
            .arg(cache)
            .output()
            .unwrap()
    };

    // Open to everyone, ours: made 0700, then used.
    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = check(&open);
    assert!(out.status.success(), "{out:?}");
    let mode = std::fs::metadata(&open).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    let artifacts = std::fs::read_dir(&open)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension() == Some("cwasm".as_ref()))
        .count();
    assert_eq!(artifacts, 1, "the compiled notifier is kept");

    // Someone else's: refused, exit 2, nothing written into it.
    let theirs = dir.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
    let out = check(&theirs);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("owned by uid 65534") && stderr.contains("--cache-dir"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_dir(&theirs).unwrap().count(), 0);
    let mode = std::fs::metadata(&theirs).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o755, "another user's directory is left as it was");
}
