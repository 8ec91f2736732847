//! The operator's command line, `tapedeck admin`, against a real service: the operator API
//! of docs/admin-api.md driven over HTTP from another process, as an operator would.

use std::process::{Command, Output};

use super::*;

/// The service's operator token (`--admin-token`), 32 characters.
const TOKEN: &str = "e2e-operator-token-0123456789abc";

/// `tapedeck admin` against `base` with the operator token.
fn cli(base: &str) -> AdminCli<'_> {
    AdminCli { base, token: TOKEN }
}

fn admin(base: &str, token: &str, args: &[&str]) -> Output {
    AdminCli { base, token }.run(args)
}

fn ok(base: &str, args: &[&str]) -> String {
    cli(base).ok(args)
}

fn ok_json(base: &str, args: &[&str]) -> Value {
    cli(base).ok_json(args)
}

fn fails(base: &str, token: &str, args: &[&str]) -> String {
    AdminCli { base, token }.fails(args)
}

/// Create a tenant with limits, list it, set and clear a limit, read its usage, delete it;
/// a wrong token is refused without being echoed.
#[test]
fn an_operator_manages_a_tenant_from_the_command_line() {
    let s = stack(vec![("admin-token", TOKEN.into())]);
    let base = s.service.base.as_str();

    // Limits in the flags' units: MB are 1,000,000 bytes.
    let created = ok(
        base,
        &[
            "tenant",
            "create",
            "acme",
            "--jobs-per-minute",
            "2",
            "--max-upload-mb",
            "1",
        ],
    );
    assert!(created.contains("acme"), "{created}");
    let shown = ok_json(base, &["tenant", "show", "acme"]);
    assert_eq!(shown["tenant"]["name"], "acme", "{shown}");
    assert_eq!(shown["tenant"]["self_register"], false, "{shown}");
    assert_eq!(shown["tenant"]["limits"]["jobs_per_minute"], 2, "{shown}");
    assert_eq!(
        shown["tenant"]["limits"]["max_upload_bytes"], 1_000_000,
        "{shown}"
    );
    let again = fails(base, TOKEN, &["tenant", "create", "acme"]);
    assert!(
        again.starts_with("error: ") && again.contains("(tenant_exists)"),
        "{again}"
    );

    let list = ok_json(base, &["tenant", "list"]);
    let names: Vec<&str> = list["tenants"]
        .as_array()
        .unwrap_or_else(|| panic!("{list}"))
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(names.contains(&"acme"), "{list}");
    let table = ok(base, &["tenant", "list"]);
    assert!(table.contains("acme"), "{table}");

    let updated = ok_json(
        base,
        &["tenant", "update", "acme", "--self-register", "true"],
    );
    assert_eq!(updated["tenant"]["self_register"], true, "{updated}");

    // Set a limit (a table), see it in JSON, clear it with `none`.
    let table = ok(base, &["tenant", "limits", "acme", "--max-queued", "5"]);
    assert!(
        table.contains("max_queued") && table.contains("server default"),
        "{table}"
    );
    let limits = ok_json(base, &["tenant", "limits", "acme"]);
    assert_eq!(limits["limits"]["max_queued"], 5, "{limits}");
    assert!(
        limits["effective"]["max_queued"]
            .as_u64()
            .is_some_and(|v| v <= 5),
        "{limits}"
    );
    assert!(limits["server"].is_object(), "{limits}");
    let cleared = ok_json(base, &["tenant", "limits", "acme", "--max-queued", "none"]);
    assert!(
        cleared["limits"]
            .get("max_queued")
            .is_none_or(Value::is_null),
        "{cleared}"
    );
    assert_eq!(
        cleared["limits"]["jobs_per_minute"], 2,
        "only the named limit changes: {cleared}"
    );
    let limits = ok_json(base, &["tenant", "limits", "acme"]);
    assert!(
        limits["limits"]
            .get("max_queued")
            .is_none_or(Value::is_null),
        "{limits}"
    );

    // A wrong token: refused, named by its code, never printed.
    let wrong = "wrong-operator-token-0123456789a";
    let refused = fails(base, wrong, &["tenant", "list"]);
    assert!(
        refused.starts_with("error: ") && refused.contains("(invalid_token)"),
        "{refused}"
    );
    assert!(!refused.contains(wrong), "{refused}");

    let usage = ok_json(base, &["usage", "acme"]);
    assert_eq!(usage["tenant"], "acme", "{usage}");
    assert!(usage["jobs"].is_object(), "{usage}");
    let all = ok_json(base, &["usage"]);
    assert!(all["tenants"].is_array(), "{all}");
    let table = ok(base, &["usage", "acme"]);
    assert!(
        table.contains("acme") && table.contains("stored"),
        "{table}"
    );

    // Deleting answers at once; the tenant is gone for the API.
    let deleting = ok_json(base, &["tenant", "delete", "acme"]);
    assert_eq!(deleting["deleting"], "acme", "{deleting}");
    wait_until(Duration::from_secs(10), || {
        !admin(base, TOKEN, &["tenant", "show", "acme"])
            .status
            .success()
    });
    let gone = fails(base, TOKEN, &["tenant", "show", "acme"]);
    assert!(
        gone.starts_with("error: ") && gone.contains("(not_found)"),
        "{gone}"
    );
}

/// No server: the message names the URL. No token: a usage error (exit code 2).
#[test]
fn an_unreachable_server_is_named_and_a_missing_token_is_a_usage_error() {
    let base = format!("http://127.0.0.1:{}", free_port());
    let err = fails(&base, TOKEN, &["tenant", "list"]);
    assert!(
        err.contains(&format!("cannot connect to the server at {base}")),
        "{err}"
    );

    let out = Command::new(serve_exe())
        .args(["admin", "--server", &base, "tenant", "list"])
        .env_remove("TAPEDECK_SERVER")
        .env_remove("TAPEDECK_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", lossy(&out.stderr));
    assert!(
        lossy(&out.stderr).contains("TAPEDECK_ADMIN_TOKEN"),
        "{}",
        lossy(&out.stderr)
    );
}

/// `tapedeck admin jobs list|show|retry|dlq`: the operator finds a tenant's
/// failed job, its dead letter, and puts it back on the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_are_listed_shown_retried_and_dead_letters_listed() {
    let s = stack(vec![
        ("admin-token", TOKEN.to_string()),
        ("max-attempts", "1".into()),
    ]);
    let base = s.api.base.clone();
    let me = s.api.signed_up("default", "jobs@example.com").await;
    let mut not_audio = b"\0\0\0\x20ftypisom".to_vec();
    not_audio.resize(4096, 7);
    let path = s._dir.path().join("not-audio.mp4");
    std::fs::write(&path, &not_audio).unwrap();
    let job = me.upload_and_wait(&path, &[]).await;
    assert_eq!(job["status"], "failed", "{job}");
    let id = job["id"].as_str().unwrap().to_owned();

    let listed = ok(&base, &["jobs", "list", "--tenant", "default"]);
    assert!(
        listed.contains(&id) && listed.contains("failed"),
        "{listed}"
    );
    let page = ok_json(
        &base,
        &["jobs", "list", "--tenant", "default", "--limit", "1"],
    );
    assert_eq!(page["jobs"][0]["id"], id.as_str(), "{page}");
    let shown = ok_json(&base, &["jobs", "show", "default", &id]);
    assert_eq!(shown["status"], "failed", "{shown}");
    let dead = ok(&base, &["jobs", "dlq", "--tenant", "default"]);
    assert!(dead.contains(&id), "{dead}");
    let dead = ok_json(&base, &["jobs", "dlq"]);
    let letter = dead["entries"][0]["id"].clone();
    assert_eq!(dead["entries"][0]["job_id"], id.as_str(), "{dead}");
    let retried = ok(&base, &["jobs", "retry", "default", &id]);
    assert!(retried.contains("queued again"), "{retried}");
    // The worker may fail the retried job again at once (one attempt allowed): a new
    // letter then, but never the one the retry took.
    let dead = ok_json(&base, &["jobs", "dlq"]);
    let entries = dead["entries"].as_array().unwrap();
    assert!(
        entries.iter().all(|e| e["id"] != letter),
        "the retry took its dead letter: {dead}"
    );
    let missing = fails(&base, TOKEN, &["jobs", "show", "default", "nope"]);
    assert!(
        missing.contains("404") || missing.contains("not found"),
        "{missing}"
    );
    let unknown = fails(&base, TOKEN, &["jobs", "list", "--tenant", "ghost"]);
    assert!(!unknown.is_empty());
}

/// Every limit the server describes (`TenantLimits` in its `/openapi.json`, which the web
/// page's limits form is built from) is a flag of `tapedeck admin tenant limits`, helped by
/// the server's own description, that sets the limit of that name and no other: the API,
/// its description and the command line come from one declaration of the limits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_limit_the_server_describes_is_a_flag_that_sets_it() {
    let s = stack(vec![("admin-token", TOKEN.into())]);
    let base = s.service.base.as_str();
    let spec = s.api.get_json("/openapi.json").await;
    let described = spec["components"]["schemas"]["TenantLimits"]["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("no TenantLimits in the spec"))
        .clone();
    assert!(described.len() >= 13, "{described:?}");
    let words = |text: &str| text.split_whitespace().collect::<Vec<_>>().join(" ");
    let help = words(&ok(base, &["tenant", "limits", "--help"]));
    ok(base, &["tenant", "create", "spec"]);
    for (name, property) in &described {
        let description = property["description"]
            .as_str()
            .unwrap_or_else(|| panic!("{name} has no description"));
        let at = help
            .find(&words(description))
            .unwrap_or_else(|| panic!("{name}: `{description}` is no flag's help:\n{help}"));
        // The flag is the last one named before its help.
        let flag = help[..at]
            .split_whitespace()
            .rfind(|w| w.starts_with("--"))
            .unwrap_or_else(|| panic!("{name}: no flag before its help"));
        let set = ok_json(base, &["tenant", "limits", "spec", flag, "1"]);
        let own = set["limits"].as_object().unwrap();
        assert_eq!(
            own.keys().collect::<Vec<_>>(),
            [name],
            "{flag} sets {name} only: {set}"
        );
        let cleared = ok_json(base, &["tenant", "limits", "spec", flag, "none"]);
        assert_eq!(cleared["limits"], json!({}), "{flag} none clears it");
    }
}
