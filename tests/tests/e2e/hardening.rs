//! What testing the service the way a new user and an attacker would found, each as a
//! test against real processes: bounded request bodies, run limits sized to the input,
//! worker health and links in split deployments, signed download links, `kill -9`
//! recovery, HTTP details, and operating it.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use super::*;

const BOUNDARY: &str = "tapedeckBOUNDARY";

fn multipart_head(token: &str) -> String {
    format!(
        "POST /v1/jobs HTTP/1.1\r\nAuthorization: Bearer {token}\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}"
    )
}

fn part_header(name: &str, filename: Option<&str>) -> Vec<u8> {
    let filename = filename
        .map(|f| format!("; filename=\"{f}\""))
        .unwrap_or_default();
    format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"{filename}\r\n\r\n")
        .into_bytes()
}

fn blob_count(data_dir: &Path, under: &str) -> usize {
    std::fs::read_dir(data_dir.join("blobs").join(under))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Every part of a request body is bounded whatever its encoding, and the server's
/// memory stays flat under an attack of hundreds of MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_are_bounded_in_every_part() {
    let s = stack(vec![("max-upload-bytes", "1000000".into())]);
    let me = s.api.signed_up("default", "bounded@example.com").await;
    let token = me.token.clone().unwrap();
    let base = s.api.base.clone();
    let peak_before = s.service.peak_rss_kib();
    let post = |prefix: Vec<u8>, fill: u8, filler: u64, suffix: Vec<u8>| {
        let (base, head) = (base.clone(), multipart_head(&token));
        tokio::task::spawn_blocking(move || {
            chunked_post(&base, &head, &prefix, fill, filler, &suffix)
        })
    };

    // A 400 MiB option field nobody asked for, then a valid file: refused at once.
    let (code, sent) = post(part_header("junk", None), b'j', 400 << 20, Vec::new())
        .await
        .unwrap();
    assert_eq!(code, 413, "junk field");
    assert!(sent < 64 << 20, "the server read {sent} bytes of junk");
    // A 200 MiB `bitrate` under a 1 MB upload limit.
    let (code, _) = post(part_header("bitrate", None), b'1', 200 << 20, Vec::new())
        .await
        .unwrap();
    assert_eq!(code, 413, "bitrate field");
    // Part headers that never end (the parser would buffer them whole).
    let endless = format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"x\"\r\nX-Pad: ");
    let (code, _) = post(endless.into_bytes(), b'a', 100 << 20, Vec::new())
        .await
        .unwrap();
    assert_eq!(code, 413, "endless part header");
    // A whole body over the limit, in the file field.
    let mut file_head = part_header("file", Some("big.mp4"));
    file_head.extend_from_slice(b"\0\0\0\x20ftypisom");
    let (code, _) = post(file_head.clone(), 0, 50 << 20, Vec::new())
        .await
        .unwrap();
    assert_eq!(code, 413, "file over the limit");

    let peak_after = s.service.peak_rss_kib();
    assert!(
        peak_after < peak_before + 50 * 1024,
        "peak RSS grew from {peak_before} KiB to {peak_after} KiB"
    );

    // Too many fields.
    let mut many = Vec::new();
    for i in 0..20 {
        many.extend(part_header(&format!("f{i}"), None));
        many.extend_from_slice(b"1\r\n");
    }
    let (code, _) = post(many, 0, 0, format!("--{BOUNDARY}--\r\n").into_bytes())
        .await
        .unwrap();
    assert_eq!(code, 400, "too many fields");

    // A file stored, then a broken field after it: the upload leaves no blob behind.
    let mut good_then_bad = file_head.clone();
    good_then_bad.extend_from_slice(&[7u8; 1000]);
    good_then_bad.extend_from_slice(b"\r\n");
    good_then_bad.extend(part_header("vbr", None));
    let (code, _) = post(good_then_bad.clone(), b'9', 1 << 20, Vec::new())
        .await
        .unwrap();
    assert_eq!(code, 413, "oversized field after the file");
    let mut bad_option = good_then_bad;
    bad_option.extend_from_slice(b"12\r\n");
    let (code, _) = post(bad_option, 0, 0, format!("--{BOUNDARY}--\r\n").into_bytes())
        .await
        .unwrap();
    assert_eq!(code, 400, "invalid option after the file");
    assert_eq!(
        blob_count(s._dir.path(), "in/default"),
        0,
        "orphan input blobs"
    );
    let list = me.get_json("/v1/jobs").await;
    assert_eq!(list["jobs"], json!([]));

    // JSON bodies of the auth and settings routes are small. (100 KiB: over the 16 KiB
    // limit, small enough for the socket buffers, so the early answer is not a broken pipe.)
    let big = json!({"email": "a@example.com", "password": "x".repeat(100 << 10)});
    let r = s
        .api
        .http
        .post(s.api.url("/v1/auth/login"))
        .json(&big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "field_too_large", "{v}");

    // Options the converter would refuse are refused at once, by the converter's rules.
    let short = media("aac-lc_8k_stereo_short__musicmetadata_pr-544.m4a");
    for fields in [
        &[("bitrate", "100")][..],
        &[("bitrate", "16"), ("sample_rate", "44100")],
        &[("sample_rate", "96000")],
    ] {
        let r = me.upload_raw(&short, fields).await;
        assert_eq!(r.status(), 400, "{fields:?}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "invalid_options", "{v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains("valid:"),
            "{v}"
        );
    }
    // A bitrate the source's own rate lacks (8 kHz: MPEG-2.5, at most 64 kbit/s), with no
    // sample rate asked for: the gateway reads the file's rate and refuses at once.
    let r = me.upload_raw(&short, &[("bitrate", "128")]).await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    let why = v["error"]["message"].as_str().unwrap();
    assert!(why.contains("taken from the source"), "{why}");
    assert!(
        why.contains("valid: 8, 16, 24, 32, 40, 48, 56, 64 kbps"),
        "{why}"
    );
    assert_eq!(
        blob_count(s._dir.path(), "in/default"),
        0,
        "refused uploads leave no blob"
    );
    // The same from a file whose moov comes last and whose first track is video (22 kHz
    // audio: MPEG-2, at most 160 kbit/s).
    let moov_last = media("aac-lc_22k_mono_video_moovend__bento4_video-h264-001.mp4");
    let r = me.upload_raw(&moov_last, &[("bitrate", "192")]).await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at 22050 Hz"),
        "{v}"
    );

    // Honest uploads still work, and the record says what was produced: the default for
    // the output rate when no bitrate was asked for (8 kHz stereo: 40 kbit/s).
    let job = me.upload_and_wait(&short, &[]).await;
    assert_eq!(job["status"], "done", "{job}");
    assert_eq!(job["output"]["bitrate_kbps"], 40, "{job}");
    let job = me
        .upload_and_wait(&short, &[("bitrate", "32"), ("mono", "true")])
        .await;
    assert_eq!(job["options"]["bitrate"], 32, "{job}");
    assert_eq!(job["output"]["bitrate_kbps"], 32, "{job}");
}

/// CPU time is sized to the input's audio, a limit fails the job at once (no
/// retries) naming the limit and the setting, and the mail does not blame "your account".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_limits_are_settings_sized_to_the_audio_and_fail_at_once() {
    // 3.5 minutes of music needs well over a second of CPU to convert.
    let long = media("aac-lc_44k_stereo_music_long__lofty_TempleOS_Hymn.m4a");
    let tight = stack(vec![
        ("run-cpu-base-secs", "1".into()),
        ("run-cpu-secs-per-minute", "0".into()),
        ("max-attempts", "4".into()),
        ("retry-base-ms", "100".into()),
    ]);
    let me = tight.api.signed_up("default", "limits@example.com").await;
    let job = me.upload_and_wait(&long, &[]).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["attempts"], 1, "a limit is not retried: {job}");
    let error = job["error"].as_str().unwrap();
    assert!(
        error.starts_with("CPU time limit of 1 s exceeded"),
        "{error}"
    );
    assert!(error.contains("--run-cpu-secs-per-minute"), "{error}");
    let mails = outbox_mails(tight._dir.path(), 1, SLOW, Duration::ZERO);
    assert!(mails[0].contains("Conversion failed"), "{}", mails[0]);
    assert!(!mails[0].contains("your account"), "{}", mails[0]);

    // The same base with room per minute of audio: it converts.
    let sized = stack(vec![
        ("run-cpu-base-secs", "1".into()),
        ("run-cpu-secs-per-minute", "20".into()),
    ]);
    let me = sized.api.signed_up("default", "limits@example.com").await;
    let job = me.upload_and_wait(&long, &[]).await;
    assert_eq!(job["status"], "done", "{job}");

    // A plugin that loops is stopped by the base on a short input, and not retried.
    let hostile = stack(vec![
        ("converter", env!("TAPEDECK_HOSTILE_WASM").into()),
        ("run-cpu-base-secs", "1".into()),
        ("max-attempts", "4".into()),
    ]);
    let me = hostile.api.signed_up("default", "loop@example.com").await;
    let dir = tempfile::tempdir().unwrap();
    let mut spin = b"loopftyp".to_vec();
    spin.resize(4096, 0);
    let path = dir.path().join("spin.mp4");
    std::fs::write(&path, &spin).unwrap();
    let job = me.upload_and_wait(&path, &[]).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["attempts"], 1, "{job}");
    let error = job["error"].as_str().unwrap();
    assert!(
        error.starts_with("CPU time limit of 2 s exceeded"),
        "{error}"
    );
    assert!(error.contains("estimated from the file size"), "{error}");
}

/// The signed link in a mail: `http://.../v1/jobs/{id}/output?tenant=..&expires=..&sig=..`.
fn mail_link(mail: &str) -> String {
    let start = mail.find("http://").expect("the mail has a link");
    mail[start..]
        .split(|c: char| c.is_whitespace() || c == '"' || c == '<')
        .next()
        .unwrap()
        .replace("&amp;", "&")
}

/// A worker process serves health on its `--listen`; its mails link to the
/// gateway's public URL with a signed link that downloads without a token, for that
/// output only, and stops working when tampered with or when the job is deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_deployment_mails_signed_links_that_work_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(&dir.path().join("redis"));
    let url = redis.url();
    let gateway = Service::role(Role::Gateway, &url, dir.path(), vec![]);
    // Service::start gives every role its own `--listen` and waits for `/readyz`.
    let worker = Service::role(Role::Worker, &url, dir.path(), vec![]);
    let http = reqwest::Client::new();
    let worker_base = worker.base.clone();
    for path in ["/healthz", "/readyz"] {
        let r = http
            .get(format!("{worker_base}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "worker {path}");
    }
    let r = http
        .get(format!("{worker_base}/v1/jobs"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "a worker serves no API");

    let api = Api::new(&gateway.base);
    let me = api.signed_up("default", "split@example.com").await;
    let id = me
        .upload(&media("aac-lc_44k_stereo_LRtest__rodio_RL.m4a"), &[])
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let job = me.wait_final(&id, SLOW).await;
    assert_eq!(job["status"], "done", "{job}");
    let mails = outbox_mails(dir.path(), 1, SLOW, Duration::ZERO);
    let link = mail_link(&mails[0]);
    assert!(
        link.starts_with(&format!(
            "{}/v1/jobs/{id}/output?tenant=default&expires=",
            gateway.base
        )),
        "{link}"
    );
    assert!(!mails[0].contains("signed in to your"), "{}", mails[0]);
    let authed = me
        .get(&format!("/v1/jobs/{id}/output"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    // No Authorization header at all: the link is the authority.
    let r = http.get(&link).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "audio/mpeg");
    assert_eq!(r.bytes().await.unwrap(), authed);
    let r = http
        .get(&link)
        .header("Range", "bytes=0-9")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);

    let (prefix, sig) = link.split_once("&sig=").unwrap();
    let flipped = format!(
        "{prefix}&sig={}{}",
        if sig.starts_with('0') { '1' } else { '0' },
        &sig[1..]
    );
    let (before_expiry, _) = prefix.split_once("expires=").unwrap();
    let longer = format!("{before_expiry}expires=99999999999&sig={sig}");
    let other_job = link.replace(&id, &"0".repeat(32));
    let other_tenant = link.replace("tenant=default", "tenant=other");
    for bad in [
        flipped,
        longer,
        other_job,
        other_tenant,
        format!("{prefix}&sig="),
    ] {
        let r = http.get(&bad).send().await.unwrap();
        assert_eq!(r.status(), 403, "{bad}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "invalid_link");
    }
    let r = me.delete(&format!("/v1/jobs/{id}")).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let r = http.get(&link).send().await.unwrap();
    assert_eq!(r.status(), 403, "the job is deleted");
}

/// A link stops working when it expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_links_expire() {
    let s = stack(vec![("download-link-ttl-secs", "6".into())]);
    let me = s.api.signed_up("default", "expiry@example.com").await;
    let id = me
        .upload_id(
            &media("aac-lc_8k_stereo_short__musicmetadata_pr-544.m4a"),
            &[],
        )
        .await;
    assert_eq!(me.wait_final(&id, SLOW).await["status"], "done");
    let link = mail_link(&outbox_mails(s._dir.path(), 1, SLOW, Duration::ZERO)[0]);
    let expires: u64 = link
        .split("expires=")
        .nth(1)
        .and_then(|rest| rest.split('&').next())
        .and_then(|n| n.parse().ok())
        .expect("the link says when it expires");
    let unix_now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    assert!(expires <= unix_now() + 6, "6 s from signing: {link}");
    let http = reqwest::Client::new();
    assert_eq!(http.get(&link).send().await.unwrap().status(), 200);
    // Polled until it stops working (the unit test of `LinkSigner` checks the boundary):
    // never before it expires, and within a second or two after.
    let mut status = 200;
    wait_for(Duration::from_secs(10), "the link to expire", async || {
        status = http.get(&link).send().await.unwrap().status().as_u16();
        if status != 200 {
            assert!(unix_now() >= expires, "refused before it expired: {link}");
        }
        status != 200
    })
    .await;
    assert_eq!(status, 403);
}

/// `kill -9` of `tapedeck serve` takes its managed redis-server and plugin runner
/// with it; the restart cleans the scratch, takes the job over at once (not after the
/// visibility timeout) and completes it exactly once. Also item 7's first log line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_leaves_no_orphans_and_the_restart_resumes_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let start = |log: &Path| {
        let mut child = Command::new(serve_exe())
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--workers", "1"])
            .args(["--visibility-timeout-secs", "300"])
            .arg("--data-dir")
            .arg(&data)
            .env_remove("RUST_LOG")
            .env_remove("REDIS_URL")
            .env_remove("TAPEDECK_CONFIG")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        let base = listening_on(&mut child);
        let ready = format!("{base}/readyz");
        wait_until(Duration::from_secs(60), || {
            std::process::Command::new("curl")
                .args(["-sf", "-o", "/dev/null", &ready])
                .status()
                .is_ok_and(|s| s.success())
        });
        Service { child, base }
    };
    let log1 = dir.path().join("serve1.log");
    let mut first = start(&log1);

    // Info by default, a first line naming where everything is, no colours.
    let text = std::fs::read_to_string(&log1).unwrap();
    let first_line = BufReader::new(text.as_bytes())
        .lines()
        .next()
        .unwrap()
        .unwrap();
    for word in ["listen", "role", "redis", "blobs", "data_dir"] {
        assert!(first_line.contains(word), "{word} missing in: {first_line}");
    }
    assert!(
        !text.contains('\u{1b}'),
        "ANSI escapes in a log file: {text}"
    );

    let api = Api::new(&first.base);
    let me = api.signed_up("default", "kill9@example.com").await;
    let id = me
        .upload_id(
            &media("aac-lc_44k_stereo_music_long__lofty_TempleOS_Hymn.m4a"),
            &[],
        )
        .await;
    me.wait_converting(&id, true).await;
    let children = children_of(first.pid());
    assert!(
        children.len() >= 2,
        "managed redis and a plugin runner: {children:?}"
    );
    let scratch_in_use = std::fs::read_dir(data.join("scratch")).unwrap().count();
    assert!(scratch_in_use >= 1, "scratch in use");
    signal(first.pid(), libc::SIGKILL);
    let _ = first.child.wait();
    wait_until(Duration::from_secs(15), || {
        children.iter().all(|&pid| !process_running(pid))
    });

    let second = start(&dir.path().join("serve2.log"));
    let old_scratch = data.join("scratch").join(first.pid().to_string());
    assert!(
        !old_scratch.exists(),
        "stale scratch {} kept",
        old_scratch.display()
    );
    let me = me.rebased(&second.base);
    // Well within the 300 s visibility timeout: the entry was taken over at once.
    let job = me.wait_final(&id, Duration::from_secs(120)).await;
    assert_eq!(job["status"], "done", "{job}");
    assert_eq!(job["attempts"], 2, "{job}");
    let mails = outbox_mails(&data, 1, SLOW, Duration::from_secs(1));
    assert_eq!(mails.len(), 1, "exactly one completion: {mails:?}");
    assert_eq!(blob_count(&data, "out/default"), 1);
}

/// A managed redis-server left running on the data dir (by a crash before
/// children died with their parent) is stopped before a new one starts on that dir.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_managed_redis_of_the_data_dir_is_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let redis_dir = data.join("redis");
    std::fs::create_dir_all(&redis_dir).unwrap();
    let redis_dir = std::fs::canonicalize(&redis_dir).unwrap();
    let stale = Command::new("redis-server")
        .args(["--port", &free_port().to_string(), "--bind", "127.0.0.1"])
        .arg("--dir")
        .arg(&redis_dir)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stale_pid = stale.id();
    std::fs::write(redis_dir.join("managed.pid"), stale_pid.to_string()).unwrap();
    wait_until(Duration::from_secs(10), || {
        std::fs::read_link(format!("/proc/{stale_pid}/cwd")).is_ok_and(|cwd| cwd == redis_dir)
    });
    let mut child = Command::new(serve_exe())
        .args(["serve", "--listen", "127.0.0.1:0", "--role", "gateway"])
        .arg("--data-dir")
        .arg(&data)
        .env_remove("REDIS_URL")
        .env_remove("TAPEDECK_CONFIG")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let base = listening_on(&mut child);
    let service = Service { child, base };
    let mut stale = stale;
    wait_until(Duration::from_secs(20), || {
        matches!(stale.try_wait(), Ok(Some(_)))
    });
    let ready = format!("{}/readyz", service.base);
    let since = Instant::now();
    while !reqwest::get(&ready).await.is_ok_and(|r| r.status() == 200) {
        assert!(since.elapsed() < SLOW, "the new managed Redis never served");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pid: u32 = std::fs::read_to_string(redis_dir.join("managed.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_ne!(pid, stale_pid);
    assert!(process_running(pid));
}

/// The framework's rejections, unknown routes and wrong methods answer in the
/// API's JSON error shape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_has_the_json_shape() {
    let s = stack(vec![]);
    let me = s.api.signed_up("default", "shape@example.com").await;
    let http = &s.api.http;
    let login = s.api.url("/v1/auth/login");
    let cases = [
        (
            http.post(&login)
                .header("content-type", "application/json")
                .body("{not json"),
            400,
        ),
        (http.post(&login).body("{}"), 415),
        (http.post(&login).json(&json!({"email": 5})), 422),
        (me.get("/v1/jobs?limit=many"), 400),
        (me.get("/v1/jobs?cursor=3"), 400),
        (http.get(s.api.url("/v2/nothing")), 404),
        (http.delete(&login), 405),
    ];
    for (request, status) in cases {
        let r = request.send().await.unwrap();
        assert_eq!(r.status(), status);
        let allow = r.headers().get("allow").cloned();
        let v: Value = r.json().await.unwrap();
        assert!(
            v["error"]["code"].is_string() && v["error"]["message"].is_string(),
            "{v}"
        );
        if status == 405 {
            assert!(allow.is_some_and(|a| a.to_str().unwrap().contains("POST")));
        }
    }
}

/// RFC 9110 ranges, the Bearer scheme in any case, Basic on the compat login,
/// cursor pages that do not shift, file names as users named them, a final SSE event on
/// delete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_details_follow_the_rfcs_and_users() {
    let s = stack(vec![]);
    let me = s.api.signed_up("default", "rfc@example.com").await;
    let token = me.token.clone().unwrap();
    let id = me
        .upload_id(
            &media("aac-lc_8k_stereo_short__musicmetadata_pr-544.m4a"),
            &[],
        )
        .await;
    assert_eq!(me.wait_final(&id, SLOW).await["status"], "done");
    let path = format!("/v1/jobs/{id}/output");
    let whole = me.get(&path).send().await.unwrap().bytes().await.unwrap();
    for ignored in ["items=0-1", "bytes=0-1,5-6", "bytes=garbage", "bytes=9-2"] {
        let r = me.get(&path).header("Range", ignored).send().await.unwrap();
        assert_eq!(r.status(), 200, "{ignored}");
        assert_eq!(r.bytes().await.unwrap(), whole);
    }
    let r = me
        .get(&path)
        .header("Range", "bytes=99999999-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 416);
    for scheme in ["bearer", "BEARER", "BeArEr"] {
        let r = s
            .api
            .http
            .get(s.api.url(&format!("/v1/jobs/{id}")))
            .header("Authorization", format!("{scheme} {token}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{scheme}");
    }
    let r = s
        .api
        .http
        .post(s.api.url("/login"))
        .basic_auth("rfc@example.com", Some("wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic")
    );

    // Names: `"` arrives as %22 from browsers and curl; `\` is kept outside Windows paths.
    let raw = std::fs::read(media("aac-lc_8k_stereo_short__musicmetadata_pr-544.m4a")).unwrap();
    // reqwest escapes `\` in the quoted name as `\\` (an RFC 2183 quoted-pair).
    for (sent, kept) in [
        ("say %22hi%22.m4a", "say \"hi\".m4a"),
        ("a\\b.m4a", "a\\b.m4a"),
        ("C:\\music\\c.m4a", "c.m4a"),
    ] {
        let form = reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::bytes(raw.clone()).file_name(sent),
        );
        let r = me.post("/v1/jobs").multipart(form).send().await.unwrap();
        assert_eq!(r.status(), 202);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["input"]["name"], kept, "{sent}");
    }

    // Pages by cursor: a job added between pages does not shift the next one.
    let first: Value = me.get_json("/v1/jobs?limit=2").await;
    let cursor = first["next_cursor"].as_str().unwrap().to_owned();
    me.upload(
        &media("aac-lc_8k_stereo_short__musicmetadata_pr-544.m4a"),
        &[],
    )
    .await;
    let second: Value = me
        .get_json(&format!("/v1/jobs?limit=2&cursor={cursor}"))
        .await;
    let ids = |v: &Value| -> Vec<String> {
        v["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let (a, b) = (ids(&first), ids(&second));
    assert_eq!(b.len(), 2);
    assert!(a.iter().all(|x| !b.contains(x)), "{a:?} then {b:?}");
    let all: Value = me.get_json("/v1/jobs?limit=100").await;
    let all = ids(&all);
    assert_eq!(all.len(), 5);
    assert_eq!(
        &all[1..5],
        [a, b].concat().as_slice(),
        "pages follow the listing order"
    );
}

/// An SSE follower of a job learns that it was deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_followers_get_a_final_event_on_delete() {
    // A gateway alone: the job stays queued while it is followed.
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(&dir.path().join("redis"));
    let gateway = Service::role(Role::Gateway, &redis.url(), dir.path(), vec![]);
    let me = Api::new(&gateway.base)
        .signed_up("default", "sse@example.com")
        .await;
    let id = me
        .upload_id(
            &media("aac-lc_8k_stereo_short__musicmetadata_pr-544.m4a"),
            &[],
        )
        .await;
    let follower = {
        let me = me.clone();
        let id = id.clone();
        tokio::spawn(async move { me.follow_events(&id).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = me.delete(&format!("/v1/jobs/{id}")).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let events = tokio::time::timeout(Duration::from_secs(5), follower)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(events.first().unwrap().0, "status");
    let last = events.last().unwrap();
    assert_eq!(last.0, "deleted", "{events:?}");
    assert_eq!(last.1["id"], id.as_str());
}

/// Webhook URLs to internal addresses are refused when set; login throttling
/// counts per account and address (behind trusted proxies, the forwarded one), so a
/// guesser cannot lock the owner out from everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_ssrf_is_refused_and_throttling_does_not_lock_owners_out() {
    let s = stack(vec![("trusted-proxies", "127.0.0.1".into())]);
    let admin = s
        .api
        .signed_up_admin(&s.redis, "default", "ops@example.com")
        .await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://10.1.2.3/hook",
        "http://[::1]/hook",
        "http://localhost/hook",
    ] {
        let r = admin
            .put("/v1/tenant/notifications")
            .json(&json!({"webhook": true, "webhook_url": url}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{url}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "invalid_settings", "{v}");
    }

    s.api.signed_up("default", "owner@example.com").await;
    let login = |from: &'static str, password: &'static str| {
        let api = s.api.clone();
        async move {
            let body = json!({"email": "owner@example.com", "password": password});
            api.http
                .post(api.url("/v1/auth/login"))
                .header("X-Forwarded-For", from)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    for _ in 0..5 {
        assert_eq!(login("198.51.100.1", "guess").await, 401);
    }
    assert_eq!(
        login("198.51.100.1", "correct horse battery").await,
        429,
        "the guesser's address is locked"
    );
    assert_eq!(
        login("203.0.113.7", "correct horse battery").await,
        200,
        "the owner still gets in"
    );
}

/// An unusable data dir is named once, with its cause once.
#[test]
fn an_unusable_data_dir_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let data = file.join("data");
    let out = Command::new(serve_exe())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--redis-url",
            "redis://127.0.0.1:1",
        ])
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("the data dir {} is not usable", data.display())),
        "{err}"
    );
    assert_eq!(err.matches("Not a directory").count(), 1, "{err}");
}

/// Graceful shutdown: a worker given SIGTERM mid-conversion lets it run for
/// `--shutdown-timeout-secs`, then hands the job back to the queue at once (the attempt
/// not counted, the reason on the job) and exits; another worker takes it right away
/// (not after the 60 s visibility timeout) — here it converts with the same looping
/// converter, so the job ends failed by its CPU limit with a single counted attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_worker_hands_its_job_back_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(&dir.path().join("redis"));
    let url = redis.url();
    let gateway = Service::role(Role::Gateway, &url, dir.path(), vec![]);
    let worker_options = || ServiceOptions {
        role: Role::Worker,
        redis_url: &url,
        data_dir: dir.path(),
        extra: vec![
            ("converter", env!("TAPEDECK_HOSTILE_WASM").into()),
            ("run-cpu-base-secs", "4".into()),
            ("shutdown-timeout-secs", "1".into()),
            ("workers", "1".into()),
        ],
    };
    let mut first = Service::start(worker_options());
    let api = Api::new(&gateway.base);
    let me = api.signed_up("default", "handback@example.com").await;
    let mut spin = b"loopftyp".to_vec();
    spin.resize(4096, 0);
    let path = dir.path().join("spin.mp4");
    std::fs::write(&path, &spin).unwrap();
    let id = me.upload_id(&path, &[]).await;
    wait_for(
        Duration::from_secs(20),
        "the conversion started",
        async || me.job(&id).await["status"] == "converting",
    )
    .await;
    let stopping = Instant::now();
    signal(first.child.id(), libc::SIGTERM);
    let status = first.child.wait().unwrap();
    assert!(status.success(), "the worker exits cleanly: {status:?}");
    assert!(
        stopping.elapsed() < Duration::from_secs(10),
        "within the bound"
    );
    let job = me.job(&id).await;
    assert_eq!(job["status"], "queued", "{job}");
    assert_eq!(
        job["attempts"], 0,
        "the handed-back attempt does not count: {job}"
    );
    assert!(
        job["error"].as_str().unwrap().contains("handed back"),
        "{job}"
    );
    // Another worker takes it at once.
    let _second = Service::start(worker_options());
    let job = me.wait_final(&id, SLOW).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["attempts"], 1, "{job}");
    assert!(
        job["error"].as_str().unwrap().starts_with("CPU time limit"),
        "{job}"
    );
}
