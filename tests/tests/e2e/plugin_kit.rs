//! End to end: the plugin author's kit (`tapedeck plugin wit|new|check`) and
//! the example notifiers in Python (componentize-py) and JavaScript (componentize-js):
//! built by `make test`'s setup (examples/plugins/build.sh into the folder named by
//! `TAPEDECK_PLUGIN_EXAMPLES`), passing the conformance suite, published, activated for
//! one tenant each, and composing that tenant's notification (the mail lands in the
//! outbox; `/metrics` counts the run under the plugin's digest and the tenant).

use super::*;
use sha2::Digest;
use std::path::Path;
use std::process::Command;

const OPERATOR: &str = "op-token-kit-0123456789abcdef0123456789";

/// The CLI, its `plugin check` compile cache in the build's scratch space rather than
/// the user's ~/.cache.
fn tapedeck(args: &[&str]) -> std::process::Output {
    Command::new(serve_exe())
        .args(args)
        .env("XDG_CACHE_HOME", env!("CARGO_TARGET_TMPDIR"))
        .output()
        .unwrap()
}

#[test]
fn plugin_wit_prints_and_writes_the_wit_the_binary_was_built_with() {
    let dir = tempfile::tempdir().unwrap();
    let out = tapedeck(&["plugin", "wit", "--out", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    for name in ["io.wit", "converter.wit", "notifier.wit", "auth.wit"] {
        let shipped = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../wit")
                .join(name),
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join(name)).unwrap(),
            shipped,
            "{name}"
        );
    }
    let printed = tapedeck(&["plugin", "wit"]);
    let text = String::from_utf8(printed.stdout).unwrap();
    assert!(text.contains("package tapedeck:plugin@0.1.0;"), "{text}");
    assert!(text.contains("world notifier"), "{text}");
}

#[test]
fn plugin_new_writes_projects_and_refuses_bad_names() {
    let dir = tempfile::tempdir().unwrap();
    for lang in ["rust", "python", "js"] {
        let project = dir.path().join(lang);
        let out = tapedeck(&[
            "plugin",
            "new",
            "notifier",
            "my-notes",
            "--lang",
            lang,
            "--dir",
            project.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{lang}: {out:?}");
        assert!(project.join("wit/notifier.wit").is_file(), "{lang}");
        assert!(project.join("README.md").is_file(), "{lang}");
        let build = std::fs::read_to_string(project.join("build.sh")).unwrap();
        assert!(build.contains("my-notes.wasm"), "{lang}: {build}");
    }
    // Into a folder that is not empty: refused, nothing overwritten.
    let again = tapedeck(&[
        "plugin",
        "new",
        "notifier",
        "my-notes",
        "--lang",
        "rust",
        "--dir",
        dir.path().join("rust").to_str().unwrap(),
    ]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));
    let bad = tapedeck(&["plugin", "new", "notifier", "../evil", "--lang", "rust"]);
    assert!(!bad.status.success());
    let converter = tapedeck(&["plugin", "new", "converter", "speech", "--lang", "js"]);
    assert!(!converter.status.success());
    // No auth template: not offered, refused as a usage error.
    let help = tapedeck(&["plugin", "new", "--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("[possible values: converter, notifier]"),
        "{help}"
    );
    let auth = tapedeck(&["plugin", "new", "auth", "x", "--lang", "rust"]);
    assert_eq!(auth.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&auth.stderr).contains("invalid value 'auth'"));
    // The Python project keeps its virtualenv and build output out of version control;
    // the Rust notifier is the built-in one's source; a converter project names no path
    // of this checkout and links it instead.
    let ignored = std::fs::read_to_string(dir.path().join("python/.gitignore")).unwrap();
    assert_eq!(ignored, ".venv/\n__pycache__/\n*.wasm\n");
    let lib = std::fs::read_to_string(dir.path().join("rust/src/lib.rs")).unwrap();
    assert_eq!(
        lib,
        std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../components/notifier/src/lib.rs")
        )
        .unwrap()
    );
    let conv = dir.path().join("conv");
    let out = tapedeck(&[
        "plugin",
        "new",
        "converter",
        "conv",
        "--lang",
        "rust",
        "--dir",
        conv.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let checkout = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(conv.join(".tapedeck-src")).unwrap(),
        format!("{}\n", checkout.display())
    );
    for file in ["Cargo.toml", "src/lib.rs", "build.sh"] {
        let text = std::fs::read_to_string(conv.join(file)).unwrap();
        assert!(!text.contains(checkout.to_str().unwrap()), "{file}: {text}");
    }
}

#[test]
fn plugin_check_passes_the_built_in_components_and_fails_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let builtin = dir.path().join("converter.wasm");
    std::fs::write(&builtin, tapedeck::components::DEFAULT_CONVERTER).unwrap();
    let out = tapedeck(&[
        "plugin",
        "check",
        builtin.to_str().unwrap(),
        "--stage",
        "converter",
        "--quick",
        "--json",
    ]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(out.status.success(), "{report:#}");
    assert_eq!(report["passed"], true);
    let names: Vec<&str> = report["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for must in [
        "option: mono",
        "PCM 5.1 48 kHz, 1.5 s",
        "PCM stereo 44.1 kHz, 3 s, fragmented",
        "no audio track (video only)",
        "deterministic: the same output twice",
    ] {
        assert!(names.contains(&must), "{must}: {names:?}");
    }
    // The hostile test guest writes silence for real audio and converts what it should
    // refuse: the suite says so, case by case, and exits 1.
    let hostile = tapedeck(&[
        "plugin",
        "check",
        env!("TAPEDECK_HOSTILE_WASM"),
        "--stage",
        "converter",
        "--quick",
        "--json",
    ]);
    assert_eq!(hostile.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&hostile.stdout).unwrap();
    let failed: Vec<&str> = report["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["passed"] == false)
        .map(|c| c["detail"].as_str().unwrap())
        .collect();
    assert!(
        failed.iter().any(|d| d.contains("silent")),
        "silence is caught: {failed:?}"
    );
    assert!(
        failed
            .iter()
            .any(|d| d.contains("converted an input it should have refused")),
        "{failed:?}"
    );
    // Not a component for the stage: the first case fails with the reason.
    let wrong = tapedeck(&[
        "plugin",
        "check",
        env!("TAPEDECK_HOSTILE_WASM"),
        "--stage",
        "notifier",
    ]);
    assert_eq!(wrong.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&wrong.stdout).contains("FAIL loads"));
}

/// The author's inner loop: a second check of the same bytes loads them from the compile
/// cache, and a check of a rebuilt component whose functions did not change reuses
/// every function's machine code from Cranelift's per-function cache.
#[test]
fn check_reuses_compiled_code_across_runs_and_builds() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let check = |bytes: &[u8], name: &str| -> Value {
        let file = dir.path().join(name);
        std::fs::write(&file, bytes).unwrap();
        let out = tapedeck(&[
            "plugin",
            "check",
            file.to_str().unwrap(),
            "--stage",
            "notifier",
            "--json",
            "--cache-dir",
            cache.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let first = check(tapedeck::components::DEFAULT_NOTIFIER, "a.wasm");
    assert_eq!(first["cached"], false, "{first:#}");
    // Cold: most functions compiled (identical ones within it are compiled once).
    let [hits, all] = [0, 1].map(|i| first["functions_reused"][i].as_u64().unwrap());
    assert!(all > 100 && hits < all / 2, "{first:#}");
    let again = check(tapedeck::components::DEFAULT_NOTIFIER, "a.wasm");
    assert_eq!(again["cached"], true, "{again:#}");
    // Another build (another digest), the same functions: all but some of the glue
    // wasmtime generates per component reused (400 to 420 of 444 here; cold, ~116).
    let rebuilt = check(
        &variant(tapedeck::components::DEFAULT_NOTIFIER, "rebuilt"),
        "b.wasm",
    );
    assert_eq!(rebuilt["cached"], false, "{rebuilt:#}");
    let [reused, all] = [0, 1].map(|i| rebuilt["functions_reused"][i].as_u64().unwrap());
    assert!(reused * 10 >= all * 8, "{rebuilt:#}");
    let detail = rebuilt["cases"][0]["detail"].as_str().unwrap();
    let said = format!("; {reused} of {all} functions' code reused from the cache");
    assert!(detail.ends_with(&said), "{rebuilt:#}");
}

/// `plugin run`: a notifier composes one event (the sample, or the author's) and prints
/// its messages, sending nothing; a crash prints its guest's words and exits 1; a
/// converter converts one file.
#[test]
fn plugin_run_composes_one_event_or_converts_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let notifier = dir.path().join("notifier.wasm");
    std::fs::write(&notifier, tapedeck::components::DEFAULT_NOTIFIER).unwrap();
    let cache = dir.path().join("cache");
    let run = |args: &[&str]| {
        let mut all = vec!["plugin", "run", "--cache-dir", cache.to_str().unwrap()];
        all.extend_from_slice(args);
        tapedeck(&all)
    };
    let out = run(&[notifier.to_str().unwrap(), "--stage", "notifier"]);
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let messages = v["messages"].as_array().unwrap();
    assert_eq!(
        messages.len(),
        1,
        "e-mail only without a webhook URL: {v:#}"
    );
    assert_eq!(messages[0]["kind"], "mail");
    assert_eq!(messages[0]["to"], "owner@example.com");
    assert!(
        messages[0]["text_body"]
            .as_str()
            .unwrap()
            .contains("\"talk.mp4\" has been converted to MP3"),
        "{v:#}"
    );

    let event = dir.path().join("failed.json");
    std::fs::write(
        &event,
        r#"{"status": "failed", "input_name": "my talk.mov", "owner_email": "me@example.com",
            "failure_reason": "no audio track in the file"}"#,
    )
    .unwrap();
    let out = run(&[
        notifier.to_str().unwrap(),
        "--stage",
        "notifier",
        "--event",
        event.to_str().unwrap(),
        "--webhook-url",
        "https://hooks.example.com/t",
        "--no-email",
    ]);
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["messages"].as_array().unwrap().len(), 1, "{v:#}");
    let hook = &v["messages"][0];
    assert_eq!(hook["kind"], "webhook");
    assert_eq!(hook["url"], "https://hooks.example.com/t");
    let body: Value = serde_json::from_str(hook["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["status"], "failed");
    assert_eq!(body["input_name"], "my talk.mov");

    let crashes = run(&[
        env!("TAPEDECK_HOSTILE_NOTIFIER_WASM"),
        "--stage",
        "notifier",
        "--event",
        event.to_str().unwrap(),
    ]);
    assert_eq!(crashes.status.code(), Some(1));
    let said = String::from_utf8_lossy(&crashes.stderr);
    assert!(
        said.contains("the hostile notifier panics on failed jobs"),
        "{said}"
    );
    let bad = std::fs::write(dir.path().join("bad.json"), r#"{"colour": "blue"}"#);
    bad.unwrap();
    let refused = run(&[
        notifier.to_str().unwrap(),
        "--stage",
        "notifier",
        "--event",
        dir.path().join("bad.json").to_str().unwrap(),
    ]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("is not an event"));

    let converter = dir.path().join("converter.wasm");
    std::fs::write(&converter, tapedeck::components::DEFAULT_CONVERTER).unwrap();
    let mp3 = dir.path().join("out.mp3");
    let out = run(&[
        converter.to_str().unwrap(),
        "--stage",
        "converter",
        media("aac-lc_44k_stereo_LRtest__rodio_RL.m4a")
            .to_str()
            .unwrap(),
        mp3.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    assert!(check_mp3(&std::fs::read(&mp3).unwrap()) > 0.2);
}

/// A guest that panics: what it wrote to stderr (Rust's panic message) is in the failed
/// case of `plugin check` and in the publish refusal, not only in the server's log. One
/// that loops on inputs over 2 MiB is refused at publish by the suite's large input.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guests_panic_message_reaches_check_and_the_publish_refusal() {
    let hostile = std::fs::read(env!("TAPEDECK_HOSTILE_WASM")).unwrap();
    let panicking = replace_all(&hostile, b"tapedeck-mode:normal", b"tapedeck-mode:panic!");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("panics.wasm");
    std::fs::write(&file, &panicking).unwrap();
    let said = "panicked at tests/guests/hostile/src/lib.rs";
    let why = "the hostile guest panics on request (";
    let out = tapedeck(&[
        "plugin",
        "check",
        file.to_str().unwrap(),
        "--stage",
        "converter",
        "--quick",
    ]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{report}");
    let smoke = report
        .lines()
        .find(|l| l.starts_with("FAIL smoke"))
        .unwrap_or_else(|| panic!("{report}"));
    assert!(
        smoke.contains("plugin crashed: ")
            && smoke.contains("it wrote to stderr: ")
            && smoke.contains(said)
            && smoke.contains(why),
        "{smoke}"
    );

    let s = stack(vec![("admin-token", OPERATOR.to_string())]);
    let op = s.api.with_token(OPERATOR);
    // The message of a refused publish.
    let refused = async |bytes: Vec<u8>| -> String {
        let r = op
            .post("/v1/admin/plugins")
            .multipart(plugin_form("converter", bytes))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        let v: Value = r.json().await.unwrap();
        v["error"]["message"].as_str().unwrap().to_owned()
    };
    let message = refused(panicking).await;
    assert!(message.contains(said) && message.contains(why), "{message}");

    let large = replace_all(&hostile, b"tapedeck-mode:normal", b"tapedeck-mode:large!");
    let message = refused(large).await;
    assert!(
        message.starts_with("large input: PCM 5.1 96 kHz, 16 s (18 MB), within 10 s of CPU: ")
            // Its CPU time, or (a loaded machine gives it less than half a core) its
            // wall-clock time, twice that.
            && (message.contains("CPU time limit of 10 s exceeded")
                || message.contains("wall-clock limit of 20 s exceeded")),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn python_and_javascript_notifiers_compose_their_tenants_notifications() {
    let built = plugin_examples(&["notifier-python.wasm", "notifier-js.wasm"]);
    let python = std::fs::read(built.join("notifier-python.wasm")).unwrap();
    let js = std::fs::read(built.join("notifier-js.wasm")).unwrap();
    let s = stack(vec![
        ("admin-token", OPERATOR.to_string()),
        ("workers", "1".into()),
    ]);
    // Checked with the service's own compile cache, as an operator checking on the
    // server would: each is compiled once, by the first check, and publishing and the
    // worker load the artifact (a Python component is ~20 CPU-seconds of Cranelift).
    let cache = s._dir.path().join("plugin-cache");
    let check = |path: &str, json: bool| {
        let file = built.join(path);
        let mut args = vec![
            "plugin",
            "check",
            file.to_str().unwrap(),
            "--stage",
            "notifier",
            "--cache-dir",
            cache.to_str().unwrap(),
        ];
        if json {
            args.push("--json");
        }
        let out = tapedeck(&args);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{path}: {stdout}");
        stdout
    };
    for path in ["notifier-python.wasm", "notifier-js.wasm"] {
        let report = check(path, false);
        assert!(report.contains("), compiled in "), "{path}: {report}");
    }
    let again: Value = serde_json::from_str(&check("notifier-python.wasm", true)).unwrap();
    assert_eq!(
        again["cached"], true,
        "a second check compiles nothing: {again:#}"
    );
    let op = s.api.with_token(OPERATOR);
    let mut digests = Vec::new();
    for (tenant, bytes) in [("py", python), ("js", js)] {
        let digest = hex::encode(sha2::Sha256::digest(&bytes));
        let form = plugin_form("notifier", bytes);
        let r = op
            .post("/v1/admin/plugins")
            .multipart(form)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let v: Value = r.json().await.unwrap();
        assert_eq!(status, 201, "{tenant}: {v}");
        assert_eq!(v["plugin"]["world"], "tapedeck:plugin/notifier@0.1.0");
        let r = op
            .post("/v1/admin/tenants")
            .json(&json!({"name": tenant, "self_register": true}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let r = op
            .post(&format!("/v1/admin/plugins/{digest}/activate"))
            .json(&json!({"stage": "notifier", "tenant": tenant}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        digests.push((tenant, digest));
    }
    wait_for(
        Duration::from_secs(60),
        "the notifiers loaded",
        async || {
            let active = op.get_json("/v1/admin/plugins/active").await;
            let procs = active["processes"].as_array().unwrap();
            !procs.is_empty() && procs.iter().all(|p| p["version"] == active["version"])
        },
    )
    .await;
    let clip = media("aac-lc_8k_stereo_short__musicmetadata_pr-544.m4a");
    for (i, (tenant, _)) in digests.iter().enumerate() {
        let user = s
            .api
            .signed_up(tenant, &format!("owner-{tenant}@example.com"))
            .await;
        let job = user.upload_and_wait(&clip, &[]).await;
        assert_eq!(job["status"], "done", "{job}");
        let mails = outbox_mails(s._dir.path(), i + 1, SLOW, Duration::from_millis(200));
        let mine = mails
            .iter()
            .find(|m| m.contains(&format!("owner-{tenant}@example.com")))
            .unwrap_or_else(|| panic!("no mail for {tenant}: {mails:?}"));
        assert!(mine.contains("has been converted to MP3"), "{mine}");
    }
    let r = s
        .api
        .get("/healthz")
        .header("x-request-id", "kit-42")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["x-request-id"],
        "kit-42",
        "the client's request id comes back"
    );
    let fresh = s.api.get("/healthz").send().await.unwrap();
    assert_eq!(
        fresh.headers()["x-request-id"].len(),
        36,
        "a new UUID when the client sent none"
    );
    // Composed by each tenant's own plugin: the run is counted under its digest.
    let metrics = s.service.metrics_text().await;
    assert!(
        metrics.contains("tapedeck_queue_backlog{tenant=\"py\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tapedeck_http_requests_total{"),
        "{metrics}"
    );
    for (tenant, digest) in &digests {
        let line = metrics
            .lines()
            .find(|l| {
                l.starts_with("tapedeck_plugin_runs_total")
                    && l.contains("stage=\"notifier\"")
                    && l.contains(&format!("tenant=\"{tenant}\""))
                    && l.contains(&format!("digest=\"{digest}\""))
                    && l.contains("outcome=\"ok\"")
            })
            .unwrap_or_else(|| panic!("no notifier run of {tenant}'s plugin in:\n{metrics}"));
        assert!(line.ends_with(" 1"), "{line}");
    }
}

/// The second converter (examples/plugins/converter-speech, built by tests/build.rs):
/// the conformance suite passes it except where its preset overrides a default on
/// purpose (mono where the input is stereo), and it converts with `convert --plugin`.
#[test]
fn the_speech_converter_is_checked_and_converts_to_mono() {
    let out = tapedeck(&[
        "plugin",
        "check",
        env!("TAPEDECK_SPEECH_WASM"),
        "--stage",
        "converter",
        "--quick",
        "--json",
    ]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let failed: Vec<(&str, &str)> = report["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["passed"] == false)
        .map(|c| (c["name"].as_str().unwrap(), c["detail"].as_str().unwrap()))
        .collect();
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert!(
        failed
            .iter()
            .all(|(_, d)| *d == "1 channel(s), the input is stereo"),
        "{failed:?}"
    );
    let dir = tempfile::tempdir().unwrap();
    let mp3 = dir.path().join("talk.mp3");
    let converted = tapedeck(&[
        "convert",
        media("aac-lc_44k_stereo_LRtest__rodio_RL.m4a")
            .to_str()
            .unwrap(),
        "-o",
        mp3.to_str().unwrap(),
        "--plugin",
        env!("TAPEDECK_SPEECH_WASM"),
    ]);
    assert!(converted.status.success(), "{converted:?}");
    let info = tapedeck_runtime::media::mp3_info(&std::fs::File::open(&mp3).unwrap()).unwrap();
    assert_eq!(info.channels, 1);
    assert!(info.bitrates.len() > 1, "VBR: {:?}", info.bitrates);
}

/// `plugin dev`: on start and on every change of the project's sources it builds the
/// project, checks the component, publishes it and activates it for the tenant, until
/// every process runs it; a failing build is reported and the loop goes on. (The
/// project's build.sh picks one of two prebuilt notifiers by a source file, so the test
/// does not compile Rust.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_dev_publishes_and_activates_each_saved_change() {
    let s = stack(vec![("admin-token", OPERATOR.to_string())]);
    let op = s.api.with_token(OPERATOR);
    let r = op
        .post("/v1/admin/tenants")
        .json(&json!({"name": "dev", "self_register": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let project = tempfile::tempdir().unwrap();
    let p = project.path();
    let (a, b) = (
        variant(tapedeck::components::DEFAULT_NOTIFIER, "edit-a"),
        variant(tapedeck::components::DEFAULT_NOTIFIER, "edit-b"),
    );
    let (da, db) = (sha256(&a), sha256(&b));
    std::fs::write(p.join("a.component"), &a).unwrap();
    std::fs::write(p.join("b.component"), &b).unwrap();
    std::fs::write(p.join("which.txt"), "a").unwrap();
    std::fs::write(
        p.join("build.sh"),
        "#!/bin/sh\nset -e\ncp \"$(cat which.txt).component\" dev.wasm\n",
    )
    .unwrap();
    std::fs::set_permissions(
        p.join("build.sh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let log = p.join("dev.log");
    let mut dev = ChildGuard(
        Command::new(serve_exe())
            .args(["plugin", "dev", p.to_str().unwrap(), "--stage", "notifier"])
            .args([
                "--server",
                &s.api.base,
                "--token",
                OPERATOR,
                "--tenant",
                "dev",
            ])
            .arg("--cache-dir")
            .arg(p.join(".cache"))
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(p.join("dev.err")).unwrap())
            .spawn()
            .unwrap(),
    );
    let active_for_dev = async |digest: &str| {
        let active = op.get_json("/v1/admin/plugins/active").await;
        active["active"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["tenant"] == "dev" && a["stage"] == "notifier" && a["digest"] == digest)
    };
    wait_for(SLOW, "the first build active for the tenant", async || {
        active_for_dev(&da).await
    })
    .await;
    // A save: rebuilt, checked, published, activated.
    std::fs::write(p.join("which.txt"), "b").unwrap();
    wait_for(SLOW, "the saved change active", async || {
        active_for_dev(&db).await
    })
    .await;
    // A build that fails is reported; the next save goes through.
    std::fs::write(p.join("which.txt"), "missing").unwrap();
    wait_for(SLOW, "the failed build reported", async || {
        std::fs::read_to_string(p.join("dev.err"))
            .unwrap_or_default()
            .contains("build.sh failed")
    })
    .await;
    std::fs::write(p.join("which.txt"), "a").unwrap();
    wait_for(SLOW, "the first build active again", async || {
        active_for_dev(&da).await
    })
    .await;
    let _ = dev.0.kill();
    let printed = std::fs::read_to_string(&log).unwrap();
    assert!(
        printed.contains(&format!(
            "dev: notifier {} active for tenant dev in ",
            &db[..12]
        )),
        "{printed}"
    );
}

/// `plugin check --cases DIR`: the author's own inputs and events run after the suite's,
/// each a case of the report; nothing is written beside them.
#[test]
fn check_runs_the_authors_own_cases_after_the_suites() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = dir.path().join("inputs");
    std::fs::create_dir(&inputs).unwrap();
    std::fs::copy(
        media("aac-lc_48k_stereo__lofty_m4a_codec_aac.m4a"),
        inputs.join("clip.m4a"),
    )
    .unwrap();
    std::fs::rename(not_audio(&inputs), inputs.join("bad-noaudio.mp4")).unwrap();
    let events = dir.path().join("events");
    std::fs::create_dir(&events).unwrap();
    std::fs::write(events.join("done.json"), r#"{"input_name": "lecture.mov"}"#).unwrap();
    std::fs::write(events.join("failed.json"), r#"{"status": "failed"}"#).unwrap();
    let check = |file: &str, stage: &str, cases: &Path| {
        let out = tapedeck(&[
            "plugin",
            "check",
            file,
            "--stage",
            stage,
            "--quick",
            "--json",
            "--cases",
            cases.to_str().unwrap(),
        ]);
        let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (out.status.code(), report)
    };
    let yours = |report: &Value| -> Vec<(String, bool)> {
        report["cases"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["name"].as_str().unwrap().starts_with("yours: "))
            .map(|c| (c["name"].as_str().unwrap().to_owned(), c["passed"] == true))
            .collect()
    };
    let converter = dir.path().join("converter.wasm");
    std::fs::write(&converter, tapedeck::components::DEFAULT_CONVERTER).unwrap();
    let (code, report) = check(converter.to_str().unwrap(), "converter", &inputs);
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(
        yours(&report),
        [
            ("yours: bad-noaudio.mp4".to_owned(), true),
            ("yours: clip.m4a".to_owned(), true)
        ],
        "{report:#}"
    );
    let (code, report) = check(env!("TAPEDECK_HOSTILE_WASM"), "converter", &inputs);
    assert_eq!(code, Some(1), "{report:#}");
    assert!(
        yours(&report).contains(&("yours: bad-noaudio.mp4".to_owned(), false)),
        "the hostile guest converts what it should refuse: {report:#}"
    );
    let entries: Vec<_> = std::fs::read_dir(&inputs).unwrap().collect();
    assert_eq!(entries.len(), 2, "nothing written beside the inputs");

    let notifier = dir.path().join("notifier.wasm");
    std::fs::write(&notifier, tapedeck::components::DEFAULT_NOTIFIER).unwrap();
    let (code, report) = check(notifier.to_str().unwrap(), "notifier", &events);
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(
        yours(&report),
        [
            ("yours: done.json".to_owned(), true),
            ("yours: failed.json".to_owned(), true)
        ]
    );
    let (code, report) = check(env!("TAPEDECK_HOSTILE_NOTIFIER_WASM"), "notifier", &events);
    assert_eq!(code, Some(1), "{report:#}");
    assert!(yours(&report).contains(&("yours: failed.json".to_owned(), false)));
    // A folder without events: the check cannot run.
    let (code, _) = check(notifier.to_str().unwrap(), "notifier", &inputs);
    assert_eq!(code, Some(2));
}
