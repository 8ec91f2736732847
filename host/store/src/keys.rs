//! Every Redis key and channel Tapedeck uses, in one place; `redis/README.md` is the same
//! map in prose (what each holds, who writes it). Nothing outside this module spells a
//! `td:` key.
//!
//! Keys are named for Redis Cluster (and Valkey cluster mode): everything of one tenant
//! carries the hash tag `{TENANT}` (`td:{acme}:job:…`), so every script that changes a
//! job, its stream, its retry set, dead letters and notify entries touches one slot.
//! The scheduler's keys share the tag `{~sched}` (`~` is not allowed in tenant names) and
//! its scripts touch only those; the plugin registry's share `{~plugins}` (an activation
//! writes the scope's active digest and its trail in one transaction, a rollback pops
//! the trail in one script). Singletons and login counters are one key per command.
//! Registry keys of releases before the tag (`td:plugins:…`) are renamed at start
//! ([`crate::registry::rename_untagged_keys`]).

use std::net::IpAddr;

/// `td:{tenant}:` — the prefix of every key of one tenant.
fn tenant_prefix(tenant: &str) -> String {
    format!("td:{{{tenant}}}:")
}

// Jobs and the convert pipeline (per tenant).

/// A job's record (hash).
pub fn job_key(tenant: &str, id: &str) -> String {
    format!("{}job:{id}", tenant_prefix(tenant))
}
/// A user's job ids (zset, score = created ms).
pub fn user_jobs_key(tenant: &str, user_id: &str) -> String {
    format!("{}jobs:{user_id}", tenant_prefix(tenant))
}
/// A tenant's job ids (zset), for admins.
pub fn tenant_jobs_key(tenant: &str) -> String {
    format!("{}jobs", tenant_prefix(tenant))
}
/// A tenant's convert stream.
pub fn convert_stream(tenant: &str) -> String {
    format!("{}convert", tenant_prefix(tenant))
}
/// A tenant's jobs that failed for good (stream).
pub fn convert_dead_key(tenant: &str) -> String {
    format!("{}deadletter", tenant_prefix(tenant))
}
/// A tenant's finished jobs for the notifier (stream).
pub fn notify_stream(tenant: &str) -> String {
    format!("{}notify", tenant_prefix(tenant))
}
/// Conversions of a tenant running now (zset: entry id, score = lease expiry ms).
pub fn running_key(tenant: &str) -> String {
    format!("{}running", tenant_prefix(tenant))
}
/// A tenant's usage (hash), changed by the scripts that change a job: jobs by state
/// (`queued` — every job not finished, converting ones included —, `done`, `failed`,
/// `expired`; `converting` in hashes from before counts with `queued`), `stored_bytes`,
/// and its activity per hour and per day, `h:<start>:<name>` and `d:<start>:<name>`
/// (unix s; names `jobs`, `done`, `failed`, `cpu_ms`, `bytes_in`, `bytes_out`; hours kept
/// 8 days, days 400, pruned by the janitor: see `usage::prune`).
pub fn usage_key(tenant: &str) -> String {
    format!("{}usage", tenant_prefix(tenant))
}
/// Jobs a tenant created in the minute starting at `start` (counter, TTL 2 min).
pub fn job_rate_key(tenant: &str, start: u64) -> String {
    format!("{}rate:jobs:{start}", tenant_prefix(tenant))
}
/// Pub/sub channel of a job's progress and status changes (JSON).
pub fn events_channel(id: &str) -> String {
    format!("td:events:{id}")
}
/// The pattern of every job's events channel: each gateway's one `PSUBSCRIBE`.
pub const EVENTS_PATTERN: &str = "td:events:*";
/// The job id of an events channel.
pub fn job_of_events_channel(channel: &str) -> Option<&str> {
    channel.strip_prefix("td:events:")
}
/// Pub/sub channel on which deleting a converting job asks the worker running it to stop
/// (JSON `{"tenant", "job"}`); every worker process subscribes once.
pub const JOB_CANCEL_CHANNEL: &str = "td:jobs:cancel";

// The scheduler (one slot: `{~sched}`).

/// Tenants with work to dispatch (zset: tenant, score = its pass in stride scheduling).
pub const SCHED_READY: &str = "td:{~sched}:ready";
/// The pass a tenant had when it left `SCHED_READY` (hash: tenant → pass).
pub const SCHED_PASS: &str = "td:{~sched}:pass";
/// Tenants' strides, `STRIDE_ONE / weight` (hash: tenant → stride); absent = weight 1.
pub const SCHED_STRIDE: &str = "td:{~sched}:stride";
/// Wake-up tokens for idle workers (list, capped).
pub const SCHED_WAKE: &str = "td:{~sched}:wake";
/// Every running conversion's lease (zset: `tenant entry`, score = expiry ms): finds
/// the leases of workers that died without scanning tenants.
pub const SCHED_LEASES: &str = "td:{~sched}:leases";
/// Retries waiting for their backoff (zset: `tenant job`, score = due ms). Promotion is
/// one tenant-slot script per job, which checks the job still waits for it.
pub const SCHED_RETRIES: &str = "td:{~sched}:retries";
/// Tenants that may have notify entries to deliver (set).
pub const NOTIFY_READY: &str = "td:{~sched}:notify";
/// Wake-up tokens for idle notifiers (list, capped).
pub const NOTIFY_WAKE: &str = "td:{~sched}:notify-wake";

// Notifications (per tenant).

/// What a notify entry's delivery planned and has sent (hash, TTL).
pub fn delivery_key(tenant: &str, entry_id: &str) -> String {
    format!("{}notify:delivery:{entry_id}", tenant_prefix(tenant))
}
/// Messages admitted for a tenant in one hour (counter, TTL).
pub fn rate_key(tenant: &str, hour: u64) -> String {
    format!("{}notify:rate:{hour}", tenant_prefix(tenant))
}
/// A tenant's notifications that could not be delivered (stream).
pub fn notify_dead_key(tenant: &str) -> String {
    format!("{}notify:dead", tenant_prefix(tenant))
}
/// A tenant's notification settings (hash).
pub fn notify_settings_key(tenant: &str) -> String {
    format!("{}notify:settings", tenant_prefix(tenant))
}

// Tenants, users, login.

/// Every tenant's name (set).
pub const TENANTS: &str = "td:tenants";
/// Tenants marked for deletion that the janitor has not finished (set).
pub const TENANTS_DELETING: &str = "td:tenants:deleting";
/// A tenant's settings and limits (hash).
pub fn tenant_key(name: &str) -> String {
    format!("{}tenant", tenant_prefix(name))
}
/// A user (hash), by tenant and normalized email.
pub fn user_key(tenant: &str, email: &str) -> String {
    format!("{}user:{email}", tenant_prefix(tenant))
}
/// A login session (hash: `user` id, `inc` the tenant's incarnation when it began),
/// by the SHA-256 (hex) of its token; expires with the token. A token without one is
/// refused: deleting it ends the session.
pub fn session_key(tenant: &str, token_sha256: &str) -> String {
    format!("{}session:{token_sha256}", tenant_prefix(tenant))
}
/// The last second a token was issued at for an account (string, TTL 2 min): logins
/// within one second get the seconds after it, so no two tokens are the same.
pub fn last_issue_key(tenant: &str, email: &str) -> String {
    format!("{}issued:{email}", tenant_prefix(tenant))
}
/// The sessions of one user (set of token SHA-256s), so that all of them can end at
/// once (role or password change, removal, `logout-all`).
pub fn user_sessions_key(tenant: &str, user_id: &str) -> String {
    format!("{}sessions:{user_id}", tenant_prefix(tenant))
}
/// Login attempts an account may still make from addresses it never logged in from,
/// once its failures began (hash: `tokens`, `at` ms; a token bucket; TTL).
pub fn login_bucket_key(tenant: &str, email: &str) -> String {
    format!("td:loginfail:bucket:{tenant}:{email}")
}
/// Addresses an account logged in from successfully (zset: address, score = last
/// success ms; trimmed, TTL): these skip the account's guess cap.
pub fn login_known_key(tenant: &str, email: &str) -> String {
    format!("td:login:known:{tenant}:{email}")
}
/// SHA-256 (hex) of the operator token (string).
pub const ADMIN_TOKEN_HASH: &str = "td:admin:token-sha256";
/// Held by the process doing a janitor pass (string with a TTL).
pub const JANITOR_LOCK: &str = "td:janitor:lock";
/// The HMAC key of login tokens (hex string).
pub const SIGNING_KEY: &str = "td:auth:signing-key";
/// Failed logins for an account from anywhere (counter, TTL).
pub fn login_fail_account_key(tenant: &str, email: &str) -> String {
    format!("td:loginfail:acct:{tenant}:{email}")
}
/// Failed logins for an account from one address (counter, TTL).
pub fn login_fail_pair_key(tenant: &str, email: &str, addr: IpAddr) -> String {
    format!("td:loginfail:pair:{tenant}:{email}:{addr}")
}
/// Failed logins from one address (counter, TTL).
pub fn login_fail_address_key(addr: IpAddr) -> String {
    format!("td:loginfail:addr:{addr}")
}

// The plugin registry (global; one key per command).

/// A published component (hash: `stage`, `bytes`, `published_at`, `compile_ms`).
pub fn plugin_key(digest: &str) -> String {
    format!("td:plugin:{digest}")
}
/// A component a tenant's admin published (hash, as [`plugin_key`]): private to the
/// tenant, apart from the operator's registration of the same bytes.
pub fn tenant_plugin_key(tenant: &str, digest: &str) -> String {
    format!("{}plugin:{digest}", tenant_prefix(tenant))
}
/// Published components of a stage (zset: `{digest}` for the operator's,
/// `{tenant}/{digest}` for a tenant's; score = published at).
pub fn plugins_of_stage(stage: &str) -> String {
    format!("td:{{~plugins}}:{stage}")
}
/// The activations in force for one scope, newest first (list of `{by}|{digest}`, `by`
/// = `operator` or `tenant`): a rollback pops one, down to the built-in component.
pub fn plugin_trail(scope: &str) -> String {
    format!("td:{{~plugins}}:trail:{scope}")
}
/// What runs each stage (hash: `{stage}` or `{stage}:{tenant}` → digest).
pub const PLUGIN_ACTIVE: &str = "td:{~plugins}:active";
/// Every publish, activation and rollback (stream).
pub const PLUGIN_HISTORY: &str = "td:{~plugins}:history";
/// Bumped on every activation (counter); processes poll it.
pub const PLUGIN_VERSION: &str = "td:{~plugins}:version";
/// The registry version each process has applied (hash: `{host}-{pid}` →
/// `{version}:{unix ms}`, refreshed every few seconds; stale entries are old processes).
pub const PLUGIN_APPLIED: &str = "td:{~plugins}:applied";
/// Pub/sub channel announcing a new registry version.
pub const PLUGIN_CHANNEL: &str = "td:plugins:changed";
/// Published releases (hash: `{owner or -}/{stage}/{name}@{version}` → digest; set once
/// at the release's first publish, never changed).
pub const PLUGIN_RELEASES: &str = "td:{~plugins}:releases";
/// Canaries running (hash: `{stage}` or `{stage}:{tenant}` → JSON settings).
pub const PLUGIN_CANARIES: &str = "td:{~plugins}:canaries";
/// The recent outcomes of one arm (`canary` or `stable`) of a canary (list, newest
/// first, trimmed to the canary's window; `ok|fail|invalid:{run ms}`).
pub fn canary_outcomes(scope: &str, arm: &str) -> String {
    format!("td:{{~plugins}}:canary:{scope}:{arm}")
}
/// Totals of a canary's arms since it started (hash: `{arm}:{outcome}` → count).
pub fn canary_totals(scope: &str) -> String {
    format!("td:{{~plugins}}:canary:{scope}:totals")
}
/// A component's recent successful conversions (list, newest first, at most
/// [`RUN_TIMES_KEPT`]; `{input audio ms}:{run ms}`; expires 30 days after the last):
/// what a canary's deadline is derived from. Not in the registry's slot: every job
/// writes one.
pub fn plugin_run_times(digest: &str) -> String {
    format!("td:runs:{digest}")
}
/// How many runs [`plugin_run_times`] keeps.
pub const RUN_TIMES_KEPT: isize = 100;

// Links.

/// The HMAC key of signed download links (hex string).
pub const LINK_KEY: &str = "td:linkkey";
/// The public base URL gateways publish for workers' links.
pub const PUBLIC_URL_KEY: &str = "td:public_url";

#[cfg(test)]
mod tests {
    use super::*;

    /// The part of a key Redis Cluster hashes.
    fn hash_tag(key: &str) -> &str {
        let open = key.find('{').expect("tagged");
        let close = key[open..].find('}').expect("closed") + open;
        &key[open + 1..close]
    }

    #[test]
    fn a_tenants_keys_share_one_slot() {
        let t = "acme";
        for key in [
            job_key(t, "j1"),
            user_jobs_key(t, "u1"),
            tenant_jobs_key(t),
            convert_stream(t),
            convert_dead_key(t),
            notify_stream(t),
            running_key(t),
            usage_key(t),
            job_rate_key(t, 60),
            delivery_key(t, "1-0"),
            rate_key(t, 7),
            notify_dead_key(t),
            notify_settings_key(t),
            tenant_key(t),
            user_key(t, "a@b.c"),
            session_key(t, "ab"),
            user_sessions_key(t, "u1"),
            last_issue_key(t, "a@b.c"),
        ] {
            assert_eq!(hash_tag(&key), t, "{key}");
        }
        for key in [
            SCHED_READY,
            SCHED_PASS,
            SCHED_STRIDE,
            SCHED_WAKE,
            SCHED_LEASES,
            SCHED_RETRIES,
            NOTIFY_READY,
            NOTIFY_WAKE,
        ] {
            assert_eq!(hash_tag(key), "~sched", "{key}");
        }
    }
}
