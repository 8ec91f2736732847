//! End-to-end tests: real redis-server, real `tapedeck serve` processes, real HTTP over
//! loopback, MP3s checked with ffprobe.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tapedeck_tests::*;

/// A redis-server and one `--role all` service in a fresh temp dir.
struct Stack {
    _dir: tempfile::TempDir,
    redis: RedisServer,
    service: Service,
    api: Api,
}

fn stack(extra: Vec<(&str, String)>) -> Stack {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(&dir.path().join("redis"));
    let service = Service::role(Role::All, &redis.url(), dir.path(), extra);
    let api = Api::new(&service.base);
    Stack {
        _dir: dir,
        redis,
        service,
        api,
    }
}

/// Hex SHA-256: a component's digest.
fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The operator's `POST /v1/admin/plugins` of `bytes` for `stage`.
async fn publish(op: &Api, stage: &str, bytes: Vec<u8>) -> reqwest::Response {
    op.post("/v1/admin/plugins")
        .multipart(plugin_form(stage, bytes))
        .send()
        .await
        .unwrap()
}

const SLOW: Duration = Duration::from_secs(180);

/// The issue-9 hardening: bounded bodies, run limits, split deployments, signed links,
/// crash recovery, HTTP behaviour, operations.
#[path = "e2e/hardening.rs"]
mod hardening;

/// Tenants, the operator API and layered limits.
#[path = "e2e/tenants.rs"]
mod tenants;

/// `tapedeck admin`, the operator CLI over the HTTP API.
#[path = "e2e/admin_cli.rs"]
mod admin_cli;

/// The plugin registry and hot swap.
#[path = "e2e/registry.rs"]
mod registry;

/// Revocable sessions, tenant incarnations, no enumeration, guess caps.
#[path = "e2e/sessions.rs"]
mod sessions;

/// A private data dir and managed Redis, metrics apart from the API, SSE on one
/// subscription, JSON for hyper's own errors.
#[path = "e2e/at_rest.rs"]
mod at_rest;

/// Canary rollouts with automatic rollback.
#[path = "e2e/canary.rs"]
mod canary;

/// The plugin author's kit, and notifiers in Python and JavaScript.
#[path = "e2e/plugin_kit.rs"]
mod plugin_kit;

/// `tapedeck admin plugin ...` over the registry API.
#[path = "e2e/plugin_cli.rs"]
mod plugin_cli;

/// The operator keeps the last word; publish is bounded work; workers start on
/// the active component.
#[path = "e2e/operator.rs"]
mod operator;

/// Failures — no busy loop when Redis goes, outcomes and notifications that
/// wait for Redis, takeover of a dead notifier's work, SSE streams ended at shutdown, a
/// process that starts before Redis, `Retry-After` on 503s.
#[path = "e2e/failure.rs"]
mod failure;

/// Redis Cluster — the pipeline, limits, fair dispatch, hot swap, a canary and
/// tenant deletion on three masters, and the client following `MOVED`.
#[path = "e2e/cluster.rs"]
mod cluster;

/// Plugin runs bounded in wall time, cancelled, stopped at shutdown, safe
/// across binary upgrades, and their output counted against the quota.
#[path = "e2e/runs.rs"]
mod runs;

/// One outbox for many machines; the chaos suite's short run.
#[path = "e2e/scale.rs"]
mod scale;

/// `tapedeck serve`'s settings: flag over environment variable over the TOML file.
#[path = "e2e/config.rs"]
mod config;

mod convert_flow {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn register_login_upload_follow_download() {
        let s = stack(vec![]);
        let me = s.api.signed_up("default", "ann@example.com").await;
        for (file, expected) in [
            ("aac-lc_44k_stereo_music__rodio_music.m4a", None),
            (
                "aac-lc_48k_stereo_20s__mp4parser_output_audio-2ch-20s.mp4",
                Some(20.0),
            ),
            ("alac_44k_mono__androidx_sample_alac.mp4", None),
            (
                "real_iphone_voice_memo__musicmetadata_Apple_voice_memo.m4a",
                None,
            ),
        ] {
            let created = me.upload(&media(file), &[("bitrate", "128")]).await;
            let id = created["id"].as_str().unwrap().to_owned();
            assert_eq!(created["status"], "queued");
            assert_eq!(created["input"]["name"], file);

            let events = me.follow_events(&id).await;
            let (last_kind, last) = events.last().unwrap();
            assert_eq!(last_kind, "status");
            assert_eq!(last["status"], "done", "{file}: {last}");
            assert_eq!(last["progress"], 1.0);

            let job = me.job(&id).await;
            assert_eq!(job["status"], "done");
            assert!(job["finished_at"].as_u64().unwrap() >= job["created_at"].as_u64().unwrap());
            let r = me
                .get(&format!("/v1/jobs/{id}/output"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            assert_eq!(r.headers()["content-type"], "audio/mpeg");
            let stem = file.rsplit_once('.').unwrap().0;
            assert!(
                r.headers()["content-disposition"]
                    .to_str()
                    .unwrap()
                    .contains(&format!("{stem}.mp3")),
                "{:?}",
                r.headers()["content-disposition"]
            );
            let mp3 = r.bytes().await.unwrap();
            assert_eq!(mp3.len() as u64, job["output"]["bytes"].as_u64().unwrap());
            let duration = check_mp3(&mp3);
            if let Some(expected) = expected {
                assert!((duration - expected).abs() < 1.0, "{file}: {duration} s");
            }

            // A player seeking: the last 100 bytes.
            let r = me
                .get(&format!("/v1/jobs/{id}/output"))
                .header("Range", "bytes=-100")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 206);
            let total = mp3.len();
            assert_eq!(
                r.headers()["content-range"].to_str().unwrap(),
                format!("bytes {}-{}/{total}", total - 100, total - 1)
            );
            assert_eq!(r.bytes().await.unwrap(), mp3[total - 100..]);
        }

        let list: Value = me.get_json("/v1/jobs?limit=3").await;
        assert_eq!(list["jobs"].as_array().unwrap().len(), 3);
        assert!(list["next_cursor"].is_string(), "{list}");
        assert_eq!(
            list["jobs"][0]["input"]["name"],
            "real_iphone_voice_memo__musicmetadata_Apple_voice_memo.m4a"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failure_files_fail_with_their_reason() {
        let s = stack(vec![]);
        let me = s.api.signed_up("default", "bob@example.com").await;
        for (file, reason) in [
            ("noaudio_h264__androidx_sample_video_only.mp4", "no audio"),
            (
                "unsupported_ac3_5.1__androidx_sample_ac3.mp4",
                "unsupported",
            ),
        ] {
            let id = me.upload(&media(file), &[]).await["id"]
                .as_str()
                .unwrap()
                .to_owned();
            let job = me.wait_final(&id, SLOW).await;
            assert_eq!(job["status"], "failed", "{file}: {job}");
            let error = job["error"].as_str().unwrap().to_lowercase();
            assert!(error.contains(reason), "{file}: {error}");
            // Permanent: failed on the first attempt, no retries.
            assert_eq!(job["attempts"], 1, "{file}: {job}");
            let r = me
                .get(&format!("/v1/jobs/{id}/output"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 409);
        }
        let mut redis = s.redis.conn();
        let dead: Vec<redis::Value> = redis::cmd("XRANGE")
            .arg(tapedeck::store::keys::convert_dead_key("default"))
            .arg("-")
            .arg("+")
            .query(&mut redis)
            .unwrap();
        assert_eq!(dead.len(), 2);
        // `serve` runs the notifier: each failure mails its owner once, saying why
        // (no SMTP configured, so the mails land in the outbox folder).
        let mails = outbox_mails(s._dir.path(), 2, SLOW, Duration::from_millis(500));
        assert_eq!(mails.len(), 2, "{mails:?}");
        for mail in &mails {
            assert!(mail.contains("To: bob@example.com"), "{mail}");
            assert!(mail.to_lowercase().contains("fail"), "{mail}");
        }
        let all = mails.join("\n").to_lowercase();
        assert!(all.contains("no audio"), "{all}");
        assert!(all.contains("unsupported"), "{all}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn raw_body_upload_with_query_options_and_delete() {
        let s = stack(vec![]);
        let me = s.api.signed_up("default", "raw@example.com").await;
        let bytes = std::fs::read(media("aac-lc_44k_stereo_LRtest__rodio_RL.m4a")).unwrap();
        let r = me
            .post("/v1/jobs?name=lr.m4a&mono=true&sample_rate=22050&bitrate=64")
            .body(bytes)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        let id = r.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let job = me.wait_final(&id, SLOW).await;
        assert_eq!(job["status"], "done", "{job}");
        assert_eq!(job["options"]["mono"], true);
        let r = me.delete(&format!("/v1/jobs/{id}")).send().await.unwrap();
        assert_eq!(r.status(), 204);
        assert_eq!(
            me.get(&format!("/v1/jobs/{id}"))
                .send()
                .await
                .unwrap()
                .status(),
            404
        );
        let out = s
            ._dir
            .path()
            .join("blobs/out/default")
            .join(format!("{id}.mp3"));
        assert!(!out.exists());
        // Bad options are refused before the body is read.
        let r = me
            .post("/v1/jobs?bitrate=100")
            .body(vec![0u8; 16])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
    }

    /// `serve` runs the notifier: a tenant admin turns webhooks on through the API, a job
    /// finishes, and its owner gets one e-mail (outbox) and the tenant one signed webhook.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn finished_jobs_notify_by_mail_and_signed_webhook() {
        let receiver = Receiver::start().await;
        let s = stack(vec![("webhook-allow", "127.0.0.1".into())]);
        let user = s.api.signed_up("default", "plain@example.com").await;
        let settings = json!({
            "webhook": true,
            "webhook_url": receiver.url(),
            "webhook_secret": "0123456789abcdef-secret",
        });
        // Only a tenant admin may change them.
        let r = user
            .put("/v1/tenant/notifications")
            .json(&settings)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
        let admin = s
            .api
            .signed_up_admin(&s.redis, "default", "boss@example.com")
            .await;
        let r = admin
            .put("/v1/tenant/notifications")
            .json(&json!({"webhook": true, "webhook_url": "ftp://x.example/"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        let r = admin
            .put("/v1/tenant/notifications")
            .json(&settings)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["settings"]["webhook"], true, "{body}");
        assert_eq!(body["settings"]["webhook_secret_set"], true, "{body}");
        assert!(!body.to_string().contains("0123456789abcdef"), "{body}");
        let shown: Value = admin.get_json("/v1/tenant/notifications").await;
        assert_eq!(shown["settings"], body["settings"], "{shown}");
        assert!(!shown.to_string().contains("0123456789abcdef"), "{shown}");
        assert_eq!(
            user.get("/v1/tenant/notifications")
                .send()
                .await
                .unwrap()
                .status(),
            403
        );

        let id = user
            .upload(&media("aac-lc_44k_stereo_music__rodio_music.m4a"), &[])
            .await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(user.wait_final(&id, SLOW).await["status"], "done");

        let mails = outbox_mails(s._dir.path(), 1, SLOW, Duration::from_millis(500));
        assert_eq!(mails.len(), 1, "{mails:?}");
        assert!(mails[0].contains("To: plain@example.com"), "{}", mails[0]);
        assert!(
            mails[0].contains(&format!("{}/v1/jobs/{id}/output", s.service.base)),
            "{}",
            mails[0]
        );
        wait_until(SLOW, || !receiver.received().is_empty());
        std::thread::sleep(Duration::from_millis(500));
        let hooks = receiver.received();
        assert_eq!(hooks.len(), 1, "{hooks:?}");
        let hook = &hooks[0];
        let header = |name: &str| hook.headers[name].to_str().unwrap().to_owned();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        tapedeck::notify::verify_signature(
            b"0123456789abcdef-secret",
            &header("x-tapedeck-timestamp"),
            hook.body.as_bytes(),
            &header("x-tapedeck-signature"),
            now,
            Duration::from_secs(300),
        )
        .expect("the webhook signature verifies");
        let event: Value = serde_json::from_str(&hook.body).unwrap();
        assert_eq!(event["type"], "job.done", "{event}");
        assert!(hook.body.contains(&id), "{}", hook.body);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn python_service_endpoints() {
        let s = stack(vec![]);
        s.api.signed_up("default", "old@example.com").await;
        let r = s
            .api
            .http
            .post(s.api.url("/login"))
            .basic_auth("old@example.com", Some("correct horse battery"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let token = r.text().await.unwrap();
        let old = Api {
            token: Some(token),
            ..s.api.clone()
        };
        let bytes =
            std::fs::read(media("aac-lc_16k_mono__androidx_bbb_1ch_16kHz_aac.mp4")).unwrap();
        let form = reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::bytes(bytes).file_name("bbb.mp4"),
        );
        let r = old.post("/upload").multipart(form).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let fid = r.text().await.unwrap();
        assert_eq!(old.wait_final(&fid, SLOW).await["status"], "done");
        let r = old
            .get(&format!("/download?fid={fid}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        check_mp3(&r.bytes().await.unwrap());
        let r = s
            .api
            .http
            .post(s.api.url("/login"))
            .basic_auth("old@example.com", Some("wrong"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
}

mod security {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use hmac::{Hmac, Mac};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tenants_are_isolated() {
        let s = stack(vec![]);
        let mut redis = s.redis.conn();
        let _: () = redis::cmd("HSET")
            .arg(tapedeck::store::keys::tenant_key("beta"))
            .arg("self_register")
            .arg("1")
            .query(&mut redis)
            .unwrap();
        let a = s.api.signed_up("default", "a@example.com").await;
        let a2 = s.api.signed_up("default", "a2@example.com").await;
        let b = s.api.signed_up("beta", "b@example.com").await;
        let id = a
            .upload(
                &media("aac-lc_8k_stereo_short__musicmetadata_pr-544.m4a"),
                &[],
            )
            .await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        a.wait_final(&id, SLOW).await;
        for other in [&b, &a2] {
            for path in [
                format!("/v1/jobs/{id}"),
                format!("/v1/jobs/{id}/output"),
                format!("/v1/jobs/{id}/events"),
                format!("/download?fid={id}"),
            ] {
                let r = other.get(&path).send().await.unwrap();
                assert_eq!(r.status(), 404, "{path}");
                let v: Value = r.json().await.unwrap();
                assert_eq!(v["error"]["code"], "not_found");
            }
            assert_eq!(
                other
                    .delete(&format!("/v1/jobs/{id}"))
                    .send()
                    .await
                    .unwrap()
                    .status(),
                404
            );
            let list: Value = other.get_json("/v1/jobs").await;
            assert_eq!(list["jobs"], json!([]));
        }
        // A tenant admin sees the whole tenant, never another tenant.
        let _: () = redis::cmd("HSET")
            .arg(tapedeck::store::keys::user_key("default", "a2@example.com"))
            .arg("role")
            .arg("admin")
            .query(&mut redis)
            .unwrap();
        let admin = s.api.clone().login("default", "a2@example.com").await;
        assert_eq!(
            admin
                .get(&format!("/v1/jobs/{id}"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
        assert_eq!(
            admin
                .get("/v1/jobs")
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()["jobs"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            a.get(&format!("/v1/jobs/{id}"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }

    fn sign(key: &[u8], header: &str, claims: &Value) -> String {
        let input = format!("{}.{}", B64.encode(header), B64.encode(claims.to_string()));
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
        mac.update(input.as_bytes());
        format!("{input}.{}", B64.encode(mac.finalize().into_bytes()))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bad_tokens_are_401() {
        let s = stack(vec![]);
        let me = s.api.signed_up("default", "tok@example.com").await;
        let token = me.token.clone().unwrap();
        let mut redis = s.redis.conn();
        let key: String = redis::cmd("GET")
            .arg(tapedeck::store::keys::SIGNING_KEY)
            .query(&mut redis)
            .unwrap();
        let key = hex_decode(&key);
        let payload = token.split('.').nth(1).unwrap();
        let mut claims: Value = serde_json::from_slice(&B64.decode(payload).unwrap()).unwrap();
        claims["exp"] = json!(1);
        let expired = sign(&key, r#"{"alg":"HS256","typ":"JWT"}"#, &claims);
        claims["exp"] = json!(4_000_000_000u64);
        let forged = sign(b"not the key", r#"{"alg":"HS256","typ":"JWT"}"#, &claims);
        let none = format!(
            "{}.{}.",
            B64.encode(r#"{"alg":"none","typ":"JWT"}"#),
            B64.encode(claims.to_string())
        );
        for bad in [
            None,
            Some("garbage".to_owned()),
            Some(expired),
            Some(forged),
            Some(none),
        ] {
            let api = Api {
                token: bad.clone(),
                ..s.api.clone()
            };
            let r = api.get("/v1/jobs").send().await.unwrap();
            assert_eq!(r.status(), 401, "{bad:?}");
            let v: Value = r.json().await.unwrap();
            assert_eq!(v["error"]["code"], "invalid_token");
        }
        assert_eq!(me.get("/v1/jobs").send().await.unwrap().status(), 200);
    }

    fn hex_decode(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn login_failures_are_uniform_and_throttled() {
        let s = stack(vec![]);
        s.api.signed_up("default", "victim@example.com").await;
        let attempt = |email: &'static str, password: &'static str| {
            let api = s.api.clone();
            async move {
                let body = json!({"email": email, "password": password});
                let r = api
                    .http
                    .post(api.url("/v1/auth/login"))
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                (r.status().as_u16(), r.text().await.unwrap())
            }
        };
        let unknown = attempt("nobody@example.com", "whatever1").await;
        let wrong = attempt("victim@example.com", "wrong password").await;
        assert_eq!(unknown, wrong);
        assert_eq!(unknown.0, 401);
        for _ in 0..4 {
            attempt("victim@example.com", "wrong password").await;
        }
        // Locked for a while, even with the right password.
        let (status, _) = attempt("victim@example.com", "correct horse battery").await;
        assert_eq!(status, 429);
        let body = json!({"email": "new@example.com", "password": "short"});
        let r = s
            .api
            .http
            .post(s.api.url("/v1/auth/register"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
    }
}

mod limits {
    use super::*;

    /// Sends only the request headers (a declared body that never comes) and returns the
    /// status the server answers with.
    fn headers_only_post(base: &str, token: &str, headers: &str) -> u16 {
        let addr = base.strip_prefix("http://").unwrap();
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        write!(s, "POST /v1/jobs HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n{headers}\r\n").unwrap();
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n])
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn oversize_is_413_with_flat_memory_and_png_is_415() {
        let limit = 8u64 << 20;
        let s = stack(vec![("max-upload-bytes", limit.to_string())]);
        let me = s.api.signed_up("default", "big@example.com").await;
        let token = me.token.clone().unwrap();
        let before = s.service.rss_kib();

        // Declared 2 GiB: refused from the headers, the body is never sent.
        let base = s.api.base.clone();
        let t = token.clone();
        let code = tokio::task::spawn_blocking(move || {
            headers_only_post(
                &base,
                &t,
                "Content-Length: 2147483648\r\nContent-Type: application/octet-stream\r\n",
            )
        })
        .await
        .unwrap();
        assert_eq!(code, 413);

        // Undeclared (chunked) 2 GiB: refused once the limit is passed, long before the end.
        let base = s.api.base.clone();
        let (code, sent) = tokio::task::spawn_blocking(move || {
            // A valid MP4 head, then zeros, until refused.
            let head = format!(
                "POST /v1/jobs HTTP/1.1\r\nAuthorization: Bearer {token}\r\nContent-Type: application/octet-stream"
            );
            chunked_post(&base, &head, b"\0\0\0\x20ftypisom", 0, 2 << 30, &[])
        })
        .await
        .unwrap();
        assert_eq!(code, 413);
        assert!(sent < 1 << 30, "the server read {sent} bytes");
        let after = s.service.rss_kib();
        assert!(
            after < before + 64 * 1024,
            "RSS grew from {before} KiB to {after} KiB"
        );

        let png =
            b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x02\0\0\0\x90wS\xde".to_vec();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.png");
        std::fs::write(&path, png).unwrap();
        let r = me.upload_raw(&path, &[]).await;
        assert_eq!(r.status(), 415);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "unsupported_media_type");
        let list: Value = me.get_json("/v1/jobs").await;
        assert_eq!(list["jobs"], json!([]));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn twenty_concurrent_uploads_complete() {
        let s = stack(vec![("workers", "2".into())]);
        let me = s.api.signed_up("default", "many@example.com").await;
        let files = [
            "aac-lc_8k_stereo_short__musicmetadata_pr-544.m4a",
            "aac-lc_16k_mono__androidx_bbb_1ch_16kHz_aac.mp4",
            "aac-lc_32k_mono__taglib_nonprintable-atom-type.m4a",
            "aac-lc_44k_stereo_LRtest__rodio_RL.m4a",
        ];
        let uploads = (0..20).map(|i| {
            let me = me.clone();
            let path = media(files[i % files.len()]);
            tokio::spawn(async move {
                me.upload(&path, &[]).await["id"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
        });
        let ids: Vec<String> = futures::future::join_all(uploads)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        for id in &ids {
            let job = me.wait_final(id, Duration::from_secs(300)).await;
            assert_eq!(job["status"], "done", "{job}");
        }
        let list: Value = me.get_json("/v1/jobs?limit=100").await;
        assert_eq!(list["jobs"].as_array().unwrap().len(), 20);
        // Everything acknowledged, and the stream trimmed.
        let mut redis = s.redis.conn();
        let pending: Vec<redis::Value> = redis::cmd("XPENDING")
            .arg(tapedeck::store::keys::convert_stream("default"))
            .arg("workers")
            .query(&mut redis)
            .unwrap();
        assert_eq!(pending[0], redis::Value::Int(0));
        // Acks trim at most once a second per worker; an idle worker slot trims what an
        // ack left (within a second and its idle poll).
        wait_for(Duration::from_secs(20), "the stream trimmed", async || {
            let len: u64 = redis::cmd("XLEN")
                .arg(tapedeck::store::keys::convert_stream("default"))
                .query(&mut redis)
                .unwrap();
            len <= 2
        })
        .await;
    }
}

mod resilience {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn killed_worker_job_completes_elsewhere_once() {
        let dir = tempfile::tempdir().unwrap();
        let redis = RedisServer::start(&dir.path().join("redis"));
        let url = redis.url();
        let opts = |role| ServiceOptions {
            role,
            redis_url: &url,
            data_dir: dir.path(),
            extra: vec![
                ("visibility-timeout-secs", "3".into()),
                ("workers", "1".into()),
            ],
        };
        let gateway = Service::start(opts(Role::Gateway));
        let mut doomed = Service::start(opts(Role::Worker));
        let api = Api::new(&gateway.base);
        let me = api.signed_up("default", "crash@example.com").await;
        let id = me
            .upload_id(
                &media("aac-lc_44k_stereo_music_long__lofty_TempleOS_Hymn.m4a"),
                &[],
            )
            .await;
        me.wait_converting(&id, false).await;
        doomed.kill();
        let _rescuer = Service::start(opts(Role::Worker));
        let job = me.wait_final(&id, SLOW).await;
        assert_eq!(job["status"], "done", "{job}");
        assert_eq!(job["attempts"], 2);
        let duration = check_mp3(
            &me.get(&format!("/v1/jobs/{id}/output"))
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap(),
        );
        assert!((duration - 213.0).abs() < 2.0, "{duration}");
        let outputs = std::fs::read_dir(dir.path().join("blobs/out/default"))
            .unwrap()
            .count();
        assert_eq!(outputs, 1);
        let mut conn = redis.conn();
        // One job, one notification: the crash neither lost nor doubled it.
        let mails = outbox_mails(dir.path(), 1, SLOW, Duration::from_secs(1));
        assert_eq!(mails.len(), 1, "{mails:?}");
        assert!(mails[0].contains("To: crash@example.com"), "{}", mails[0]);
        assert!(
            mails[0].contains(&format!("/v1/jobs/{id}/output")),
            "{}",
            mails[0]
        );
        let pending: Vec<redis::Value> = redis::cmd("XPENDING")
            .arg(tapedeck::store::keys::convert_stream("default"))
            .arg("workers")
            .query(&mut conn)
            .unwrap();
        assert_eq!(pending[0], redis::Value::Int(0));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queued_jobs_survive_a_redis_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut redis = RedisServer::start(&dir.path().join("redis"));
        let url = redis.url();
        let opts = |role| ServiceOptions {
            role,
            redis_url: &url,
            data_dir: dir.path(),
            extra: vec![],
        };
        let gateway = Service::start(opts(Role::Gateway));
        let me = Api::new(&gateway.base)
            .signed_up("default", "aof@example.com")
            .await;
        let mut ids = Vec::new();
        for _ in 0..3 {
            ids.push(
                me.upload(
                    &media("aac-lc_16k_mono__androidx_bbb_1ch_16kHz_aac.mp4"),
                    &[],
                )
                .await["id"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            );
        }
        redis.restart();
        let _worker = Service::start(opts(Role::Worker));
        for id in &ids {
            // The gateway's pool reconnects by itself; the token is still valid.
            let job = me.wait_final(id, SLOW).await;
            assert_eq!(job["status"], "done", "{job}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_tenants_backlog_does_not_delay_another() {
        let s = stack(vec![("workers", "1".into())]);
        let mut redis = s.redis.conn();
        let _: () = redis::cmd("HSET")
            .arg(tapedeck::store::keys::tenant_key("small"))
            .arg("self_register")
            .arg("1")
            .query(&mut redis)
            .unwrap();
        let flood = s.api.signed_up("default", "flood@example.com").await;
        let small = s.api.signed_up("small", "small@example.com").await;
        let file = media("aac-lc_48k_stereo_20s__mp4parser_output_audio-2ch-20s.mp4");
        let mut flood_ids = Vec::new();
        for _ in 0..10 {
            flood_ids.push(
                flood.upload(&file, &[]).await["id"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            );
        }
        let mine = small.upload(&file, &[]).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(small.wait_final(&mine, SLOW).await["status"], "done");
        let mut still_waiting = 0;
        for id in &flood_ids {
            if flood.job(id).await["status"] == "queued" {
                still_waiting += 1;
            }
        }
        assert!(
            still_waiting >= 4,
            "only {still_waiting} flood jobs were still queued"
        );
    }
}

mod retries {
    use super::*;

    /// A job whose file makes the converter trap: retried with backoff up to
    /// `max-attempts`, then `failed` with the reason and dead-lettered; the service keeps
    /// converting everyone else's files meanwhile. The hostile test guest is the converter.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn crashing_plugin_retries_then_dead_letters_and_service_carries_on() {
        let mut s = stack(vec![
            ("converter", env!("TAPEDECK_HOSTILE_WASM").into()),
            ("max-attempts", "3".into()),
            ("retry-base-ms", "200".into()),
        ]);
        let me = s.api.signed_up("default", "retry@example.com").await;
        let dir = tempfile::tempdir().unwrap();
        // The hostile guest picks its behaviour from the first bytes; a box type at
        // offset 4 gets the file past the gateway's MP4 sniffing.
        let mut crash = b"trap".to_vec();
        crash.extend_from_slice(b"ftyp");
        crash.resize(4096, 0);
        let crash_path = dir.path().join("crash.mp4");
        std::fs::write(&crash_path, &crash).unwrap();
        let mut fine = b"\0\0\0\x20ftypisom".to_vec();
        fine.resize(4096, 7);
        let fine_path = dir.path().join("fine.mp4");
        std::fs::write(&fine_path, &fine).unwrap();

        let crashing = me.upload(&crash_path, &[]).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let healthy = me.upload(&fine_path, &[]).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let ok = me.wait_final(&healthy, SLOW).await;
        assert_eq!(ok["status"], "done", "{ok}");

        let job = me.wait_final(&crashing, SLOW).await;
        assert_eq!(job["status"], "failed", "{job}");
        assert_eq!(job["attempts"], 3, "{job}");
        let error = job["error"].as_str().unwrap().to_lowercase();
        assert!(error.contains("crash") || error.contains("trap"), "{error}");

        let mut redis = s.redis.conn();
        // The dead-letter stream's entries, as field maps.
        let dead_letters = |redis: &mut redis::Connection| {
            let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
                .arg(tapedeck::store::keys::convert_dead_key("default"))
                .arg("-")
                .arg("+")
                .query(redis)
                .unwrap();
            entries
                .into_iter()
                .map(|(_, fields)| {
                    fields
                        .into_iter()
                        .collect::<std::collections::HashMap<_, _>>()
                })
                .collect::<Vec<_>>()
        };
        let dead = dead_letters(&mut redis);
        assert_eq!(dead.len(), 1, "{dead:?}");
        let fields = &dead[0];
        assert_eq!(fields.get("job"), Some(&crashing), "{fields:?}");
        assert!(fields.contains_key("reason"), "{fields:?}");
        // Nothing is left pending or scheduled for another try.
        let pending: Vec<redis::Value> = redis::cmd("XPENDING")
            .arg(tapedeck::store::keys::convert_stream("default"))
            .arg("workers")
            .query(&mut redis)
            .unwrap();
        assert_eq!(pending[0], redis::Value::Int(0));

        // Retrying: a done job cannot be, another user's job is not there.
        let r = me
            .post(&format!("/v1/jobs/{healthy}/retry"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 409, "{}", r.text().await.unwrap());
        let stranger = s.api.signed_up("default", "stranger@example.com").await;
        let r = stranger
            .post(&format!("/v1/jobs/{crashing}/retry"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);

        // The operator replaces the faulty converter with the built-in one and restarts;
        // the owner retries. The job runs again from attempt 1 under the new plugin
        // (which finds the file is no MP4 at all), and its old dead letter is gone.
        drop(std::mem::replace(
            &mut s.service,
            Service::role(
                Role::All,
                &s.redis.url(),
                s._dir.path(),
                vec![
                    ("max-attempts", "3".into()),
                    ("retry-base-ms", "200".into()),
                ],
            ),
        ));
        let me = me.rebased(&s.service.base);
        let r = me
            .post(&format!("/v1/jobs/{crashing}/retry"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        let requeued: serde_json::Value = r.json().await.unwrap();
        assert_eq!(requeued["attempts"], 0, "{requeued}");
        assert!(
            requeued["error"].is_null() || requeued["error"] == "",
            "{requeued}"
        );
        let job = me.wait_final(&crashing, SLOW).await;
        assert_eq!(job["status"], "failed", "{job}");
        let error = job["error"].as_str().unwrap().to_lowercase();
        assert!(
            !error.contains("trap") && !error.contains("crash"),
            "{error}"
        );
        let dead = dead_letters(&mut redis);
        assert_eq!(
            dead.len(),
            1,
            "the first dead letter must be gone: {dead:?}"
        );
        let fields = &dead[0];
        assert_eq!(
            fields.get("reason").map(|r| r.to_lowercase()),
            Some(error),
            "{fields:?}"
        );
    }
}

mod s3 {
    use super::*;

    /// `--blob-url s3://...` switches uploads, conversions and downloads to S3 (a real
    /// S3-compatible server on loopback); deleting the job deletes its objects.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn blobs_live_in_s3_when_configured() {
        let s3 = S3Server::start("tapedeck-test");
        let s = stack(s3.service_env("tapedeck-test"));
        let me = s.api.signed_up("default", "s3@example.com").await;
        let id = me
            .upload(&media("aac-lc_44k_stereo_music__rodio_music.m4a"), &[])
            .await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let job = me.wait_final(&id, SLOW).await;
        assert_eq!(job["status"], "done", "{job}");
        let keys = s3.keys("tapedeck-test");
        assert!(
            keys.iter()
                .any(|k| k.contains(&id) && k.starts_with("blobs/in/")),
            "{keys:?}"
        );
        assert!(
            keys.iter()
                .any(|k| k.contains(&id) && k.starts_with("blobs/out/")),
            "{keys:?}"
        );
        assert!(
            !s._dir.path().join("blobs").exists(),
            "nothing may go to the local blob dir"
        );
        let r = me
            .get(&format!("/v1/jobs/{id}/output"))
            .header("range", "bytes=0-99")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 206);
        assert_eq!(r.bytes().await.unwrap().len(), 100);
        let mp3 = me
            .get(&format!("/v1/jobs/{id}/output"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert!(check_mp3(&mp3) > 1.0);
        let r = me.delete(&format!("/v1/jobs/{id}")).send().await.unwrap();
        assert_eq!(r.status(), 204);
        let keys = s3.keys("tapedeck-test");
        assert!(!keys.iter().any(|k| k.contains(&id)), "{keys:?}");
    }
}
