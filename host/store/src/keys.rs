//! Every Redis key and channel Tapedeck uses, in one place; `redis/README.md` is the same
//! map in prose (what each holds, who writes it). Nothing outside this module spells a
//! `td:` key.

use std::net::IpAddr;

// Jobs and the convert pipeline.

/// A job's record (hash).
pub fn job_key(id: &str) -> String {
    format!("td:job:{id}")
}
/// A user's job ids (zset, score = created ms).
pub fn user_jobs_key(tenant: &str, user_id: &str) -> String {
    format!("td:jobs:{tenant}:{user_id}")
}
/// A tenant's job ids (zset), for admins.
pub fn tenant_jobs_key(tenant: &str) -> String {
    format!("td:jobs:{tenant}")
}
/// Prefix of the per-tenant convert streams (the retry promoter's Lua derives stream
/// keys with it).
pub const CONVERT_PREFIX: &str = "td:convert:";
/// A tenant's convert stream.
pub fn convert_stream(tenant: &str) -> String {
    format!("{CONVERT_PREFIX}{tenant}")
}
/// Set of tenants that have a convert stream.
pub const TENANTS_WITH_STREAMS: &str = "td:convert:tenants";
/// Retries waiting for their backoff to pass (zset).
pub const RETRY_ZSET: &str = "td:convert:retry";
/// Jobs that failed for good (stream).
pub const DEAD_LETTER: &str = "td:deadletter";
/// Finished jobs for the notifier (stream).
pub const NOTIFY: &str = "td:notify";
/// Pub/sub channel of a job's progress and status changes (JSON).
pub fn events_channel(id: &str) -> String {
    format!("td:events:{id}")
}

// Notifications.

/// Notifications that could not be delivered (stream).
pub const NOTIFY_DEAD: &str = "td:notify:dead";
/// What a notify entry's delivery planned and has sent (hash, TTL).
pub fn delivery_key(entry_id: &str) -> String {
    format!("td:notify:delivery:{entry_id}")
}
/// Messages admitted for a tenant in one hour (counter, TTL).
pub fn rate_key(tenant: &str, hour: u64) -> String {
    format!("td:notify:rate:{tenant}:{hour}")
}
/// A tenant's notification settings (hash).
pub fn notify_settings_key(tenant: &str) -> String {
    format!("td:tenant:{tenant}:notify")
}

// Tenants, users, login.

/// A tenant (hash).
pub fn tenant_key(name: &str) -> String {
    format!("td:tenant:{name}")
}
/// A user (hash), by tenant and normalized email.
pub fn user_key(tenant: &str, email: &str) -> String {
    format!("td:user:{tenant}:{email}")
}
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

// Links.

/// The HMAC key of signed download links (hex string).
pub const LINK_KEY: &str = "td:linkkey";
/// The public base URL gateways publish for workers' links.
pub const PUBLIC_URL_KEY: &str = "td:public_url";
