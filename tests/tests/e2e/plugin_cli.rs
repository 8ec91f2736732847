//! `tapedeck admin plugin`: the plugin registry of docs/admin-api.md ("Plugin registry
//! (operator)") driven from the operator's command line against a real service.
//!
//! The component published is the converter this build embeds
//! (`tapedeck::components::DEFAULT_CONVERTER`, the bytes of `tapedeck_converter_component.wasm`
//! that host/tapedeck/build.rs produced), written to a temp file: a valid converter
//! component whatever the target dir, without walking `target/` for it.

use std::path::Path;

use sha2::{Digest, Sha256};

use super::*;

/// The service's operator token (`--admin-token`), 32 characters.
const TOKEN: &str = "e2e-operator-token-plugins-01234";

/// `tapedeck admin` against `base` with the operator token.
fn cli(base: &str) -> AdminCli<'_> {
    AdminCli { base, token: TOKEN }
}

fn ok(base: &str, args: &[&str]) -> String {
    cli(base).ok(args)
}

fn ok_json(base: &str, args: &[&str]) -> Value {
    cli(base).ok_json(args)
}

fn fails(base: &str, args: &[&str]) -> String {
    cli(base).fails(args)
}

fn path_arg(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

/// Publish the built-in converter (a table, then again: already published), list it,
/// activate it for tenant `default`, see it active, roll back to the default component,
/// read the history; a file that is no component is refused as `invalid_plugin`.
#[test]
fn an_operator_publishes_activates_and_rolls_back_a_converter() {
    let s = stack(vec![("admin-token", TOKEN.into())]);
    let base = s.service.base.as_str();
    let files = tempfile::tempdir().unwrap();
    let component = files.path().join("tapedeck_converter.wasm");
    std::fs::write(&component, tapedeck::components::DEFAULT_CONVERTER).unwrap();
    let digest = format!(
        "{:x}",
        Sha256::digest(tapedeck::components::DEFAULT_CONVERTER)
    );
    let short = &digest[..12];

    // Publishing prints the whole digest; the same bytes again are already there.
    let publish = [
        "plugin",
        "publish",
        path_arg(&component),
        "--stage",
        "converter",
    ];
    let published = ok(base, &publish);
    assert!(
        published.starts_with("published converter plugin"),
        "{published}"
    );
    assert!(published.contains(&digest), "{published}");
    let again = ok(base, &publish);
    assert!(again.starts_with("already published"), "{again}");
    assert!(again.contains(&digest), "{again}");
    let plugin = ok_json(base, &publish);
    assert_eq!(plugin["plugin"]["digest"], digest.as_str(), "{plugin}");
    assert_eq!(plugin["plugin"]["stage"], "converter", "{plugin}");
    assert_eq!(
        plugin["plugin"]["bytes"],
        tapedeck::components::DEFAULT_CONVERTER.len() as u64,
        "{plugin}"
    );

    // Listed: in full with --json, abbreviated in the table; not among the notifiers.
    let list = ok_json(base, &["plugin", "list"]);
    let plugins = list["plugins"]
        .as_array()
        .unwrap_or_else(|| panic!("{list}"));
    assert!(
        plugins
            .iter()
            .any(|p| p["digest"] == digest.as_str() && p["stage"] == "converter"),
        "{list}"
    );
    let converters = ok_json(base, &["plugin", "list", "--stage", "converter"]);
    assert!(
        converters["plugins"]
            .as_array()
            .unwrap_or_else(|| panic!("{converters}"))
            .iter()
            .any(|p| p["digest"] == digest.as_str()),
        "{converters}"
    );
    let notifiers = ok_json(base, &["plugin", "list", "--stage", "notifier"]);
    assert!(
        !notifiers.to_string().contains(&digest),
        "a converter listed as a notifier: {notifiers}"
    );
    let table = ok(base, &["plugin", "list"]);
    assert!(table.contains(short) && !table.contains(&digest), "{table}");

    // An abbreviated digest is looked up among the stage's plugins: not a notifier's.
    let wrong_stage = fails(base, &["plugin", "activate", short, "--stage", "notifier"]);
    assert!(
        wrong_stage.starts_with("error: no published notifier plugin"),
        "{wrong_stage}"
    );

    // Activated for tenant `default`.
    let activated = ok_json(
        base,
        &[
            "plugin",
            "activate",
            &digest,
            "--stage",
            "converter",
            "--tenant",
            "default",
        ],
    );
    assert_eq!(
        activated["active"],
        json!({"stage": "converter", "tenant": "default", "digest": digest}),
        "{activated}"
    );
    let active = ok_json(base, &["plugin", "active"]);
    assert!(
        active["active"]
            .as_array()
            .unwrap_or_else(|| panic!("{active}"))
            .iter()
            .any(|a| a["stage"] == "converter"
                && a["tenant"] == "default"
                && a["digest"] == digest.as_str()),
        "{active}"
    );
    let table = ok(base, &["plugin", "active"]);
    assert!(
        table.contains("default") && table.contains(short),
        "{table}"
    );

    // Rolled back: the component the service was started with (`null`).
    let rolled_back = ok_json(
        base,
        &[
            "plugin",
            "rollback",
            "--stage",
            "converter",
            "--tenant",
            "default",
        ],
    );
    assert_eq!(rolled_back["active"]["stage"], "converter", "{rolled_back}");
    assert_eq!(rolled_back["active"]["tenant"], "default", "{rolled_back}");
    assert!(rolled_back["active"]["digest"].is_null(), "{rolled_back}");

    // The history, newest first: the rollback, the activation, the publication.
    let history = ok_json(base, &["plugin", "history"]);
    let events = history["history"]
        .as_array()
        .unwrap_or_else(|| panic!("{history}"));
    let first = |action: &str| {
        events
            .iter()
            .position(|e| e["action"] == action)
            .unwrap_or_else(|| panic!("no {action} in {history}"))
    };
    let (rollback, activate, publish) = (first("rollback"), first("activate"), first("publish"));
    assert!(
        rollback < activate && activate < publish,
        "not newest first: {history}"
    );
    assert_eq!(events[publish]["digest"], digest.as_str(), "{history}");
    assert_eq!(events[publish]["stage"], "converter", "{history}");
    assert_eq!(events[activate]["digest"], digest.as_str(), "{history}");
    assert_eq!(events[activate]["tenant"], "default", "{history}");
    assert_eq!(events[rollback]["tenant"], "default", "{history}");
    assert!(events[rollback]["digest"].is_null(), "{history}");
    assert!(
        events.iter().all(|e| e["at"].is_u64()),
        "every event has a time: {history}"
    );
    let notifier_history = ok_json(base, &["plugin", "history", "--stage", "notifier"]);
    assert!(
        notifier_history["history"]
            .as_array()
            .unwrap_or_else(|| panic!("{notifier_history}"))
            .iter()
            .all(|e| e["stage"] == "notifier"),
        "{notifier_history}"
    );
    let table = ok(base, &["plugin", "history"]);
    assert!(
        ["publish", "activate", "rollback"]
            .iter()
            .all(|a| table.contains(a)),
        "{table}"
    );

    // Not a component: refused by the server, named by its code.
    let junk = files.path().join("junk.wasm");
    std::fs::write(&junk, rand::random::<[u8; 100]>()).unwrap();
    let refused = fails(
        base,
        &["plugin", "publish", path_arg(&junk), "--stage", "converter"],
    );
    assert!(
        refused.starts_with("error: ") && refused.contains("(invalid_plugin)"),
        "{refused}"
    );
    let list = ok_json(base, &["plugin", "list"]);
    assert_eq!(
        list["plugins"].as_array().map(Vec::len),
        Some(1),
        "only the converter is published: {list}"
    );
}

/// Releases: `publish --name N --version V` (semver) names the digest for good;
/// `plugin list` and `history` show the release beside the digest, `activate N@V` takes
/// it, and another component published as the same release is refused (409).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn releases_name_digests_for_listing_activation_and_history() {
    let s = stack(vec![("admin-token", TOKEN.to_string())]);
    let base = s.api.base.as_str();
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, label: &str| {
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            variant(tapedeck::components::DEFAULT_NOTIFIER, label),
        )
        .unwrap();
        path
    };
    let (a, b) = (write("a.wasm", "release-a"), write("b.wasm", "release-b"));
    let digest_b = hex::encode(Sha256::digest(std::fs::read(&b).unwrap()));
    // `plugin publish FILE --stage notifier` as release shout@VERSION.
    let publish = |file: &Path, version: &'static str| -> Vec<String> {
        let file = file.to_str().unwrap().to_owned();
        [
            "plugin",
            "publish",
            &file,
            "--stage",
            "notifier",
            "--name",
            "shout",
            "--version",
        ]
        .iter()
        .map(|a| a.to_string())
        .chain([version.to_owned()])
        .collect()
    };
    fn args(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }
    let published = ok_json(base, &args(&publish(&a, "1.0.0")));
    assert_eq!(published["plugin"]["name"], "shout", "{published}");
    assert_eq!(published["plugin"]["version"], "1.0.0");
    let digest_a = published["plugin"]["digest"].as_str().unwrap().to_owned();
    // The same release for other bytes: refused, naming the component it is.
    let taken = cli(base).fails(&args(&publish(&b, "1.0.0")));
    assert!(
        taken.contains(&format!(
            "shout@1.0.0 is published already, as component {digest_a}"
        )) && taken.contains("(release_taken)"),
        "{taken}"
    );
    let shown = ok(base, &args(&publish(&b, "1.1.0")));
    assert!(shown.contains("shout@1.1.0"), "{shown}");
    let listed = ok(base, &["plugin", "list", "--stage", "notifier"]);
    assert!(
        listed.contains("shout@1.0.0") && listed.contains("shout@1.1.0"),
        "{listed}"
    );
    let activated = ok(
        base,
        &["plugin", "activate", "shout@1.1.0", "--stage", "notifier"],
    );
    assert!(activated.contains(&digest_b), "{activated}");
    let missing = cli(base).fails(&["plugin", "activate", "shout@9.0.0", "--stage", "notifier"]);
    assert!(
        missing.contains("no published notifier plugin is the release shout@9.0.0"),
        "{missing}"
    );
    let history = ok_json(base, &["plugin", "history", "--stage", "notifier"]);
    assert_eq!(history["history"][0]["action"], "activate", "{history}");
    assert_eq!(history["history"][0]["release"], "shout@1.1.0", "{history}");
    let table = ok(base, &["plugin", "history", "--stage", "notifier"]);
    assert!(table.contains("shout@1.1.0"), "{table}");
    // Not semver, or half a release: 400 from the API.
    let op = s.api.with_token(TOKEN);
    for (fields, says) in [
        (vec![("name", "shout"), ("version", "1.0")], "is not semver"),
        (vec![("name", "shout")], "needs both name and version"),
        (
            vec![("name", "Shout"), ("version", "1.0.0")],
            "is not a plugin name",
        ),
    ] {
        let mut form = plugin_form("notifier", std::fs::read(&a).unwrap());
        for (k, v) in fields {
            form = form.text(k, v);
        }
        let r = op
            .post("/v1/admin/plugins")
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        let v: Value = r.json().await.unwrap();
        assert!(
            v["error"]["message"].as_str().unwrap().contains(says),
            "{v}"
        );
    }
}
