//! Tenants: existence, self-registration, limits (`td:{T}:tenant`), the set of every
//! tenant (`td:tenants`), and deleting one with everything it owns. The default tenant is
//! created at startup.

use std::collections::HashMap;

use crate::Pool;
use redis::AsyncCommands;

use crate::keys::{TENANTS, TENANTS_DELETING, tenant_key};
use tapedeck_model::tenant::{LIMIT_NAMES, TenantLimits};

/// The tenant every install has; allows self-registration.
pub const DEFAULT_TENANT: &str = "default";

/// A tenant as stored: its own limits, before the server defaults are layered under them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Tenant {
    pub name: String,
    /// Anyone may register an account.
    pub self_register: bool,
    /// Its admins may publish and activate components for this tenant only.
    pub allow_plugins: bool,
    /// The tenant's own limits (the operator's).
    pub limits: TenantLimits,
    /// Being deleted: refuses new work.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub deleting: bool,
}

impl Tenant {
    /// Its limits over the server's defaults.
    pub fn effective(&self, server: &TenantLimits) -> TenantLimits {
        self.limits.over(server)
    }
}

/// Tenant names are safe in keys and URLs: 1..=64 of `[a-z0-9_-]`.
pub fn valid_tenant_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Creates the default tenant if missing (never overwrites an operator's settings).
pub async fn ensure_default_tenant(pool: &Pool) -> anyhow::Result<()> {
    let mut conn = pool.get().await?;
    let _: bool = conn
        .hset_nx(tenant_key(DEFAULT_TENANT), "self_register", "1")
        .await?;
    let _: bool = conn
        .hset_nx(
            tenant_key(DEFAULT_TENANT),
            "incarnation",
            crate::sessions::new_incarnation(),
        )
        .await?;
    let _: () = conn.sadd(TENANTS, DEFAULT_TENANT).await?;
    Ok(())
}

fn from_hash(name: &str, h: &HashMap<String, String>) -> Tenant {
    let mut limits = TenantLimits::default();
    for limit in LIMIT_NAMES {
        if let Some(v) = h.get(*limit).and_then(|v| v.parse::<u64>().ok()) {
            limits.set(limit, Some(v));
        }
    }
    Tenant {
        name: name.to_owned(),
        self_register: h.get("self_register").is_some_and(|v| v == "1"),
        allow_plugins: h.get("allow_plugins").is_some_and(|v| v == "1"),
        limits,
        deleting: h.get("deleting").is_some_and(|v| v == "1"),
    }
}

/// Loads a tenant; `None` if it does not exist (or is being deleted).
pub async fn load_tenant(pool: &Pool, name: &str) -> redis::RedisResult<Option<Tenant>> {
    let tenant = load_any(pool, name).await?;
    Ok(tenant.filter(|t| !t.deleting))
}

/// Loads a tenant, also one being deleted.
pub async fn load_any(pool: &Pool, name: &str) -> redis::RedisResult<Option<Tenant>> {
    if !valid_tenant_name(name) {
        return Ok(None);
    }
    let mut conn = pool.get().await.map_err(crate::pool_error)?;
    let h: HashMap<String, String> = conn.hgetall(tenant_key(name)).await?;
    if h.is_empty() {
        return Ok(None);
    }
    Ok(Some(from_hash(name, &h)))
}

/// Loads a tenant (also one being deleted) for a job's hot path — an upload's limits,
/// a run's limits, a notification's cap: a record this process read less than the pool's
/// read cache time ago (1 s) is not read again ([`Pool::hgetall_cached`]).
pub async fn load_cached(pool: &Pool, name: &str) -> redis::RedisResult<Option<Tenant>> {
    if !valid_tenant_name(name) {
        return Ok(None);
    }
    let h = pool.hgetall_cached(&tenant_key(name)).await?;
    if h.is_empty() {
        return Ok(None);
    }
    Ok(Some(from_hash(name, &h)))
}

/// Every tenant, by name.
pub async fn list(pool: &Pool) -> redis::RedisResult<Vec<Tenant>> {
    let mut conn = pool.get().await.map_err(crate::pool_error)?;
    let mut names: Vec<String> = conn.smembers(TENANTS).await?;
    names.sort();
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for n in &names {
        pipe.hgetall(tenant_key(n));
    }
    let hashes: Vec<HashMap<String, String>> = pipe.query_async(&mut conn).await?;
    Ok(names
        .iter()
        .zip(hashes)
        .filter(|(_, h)| !h.is_empty())
        .map(|(n, h)| from_hash(n, &h))
        .collect())
}

/// Creates a tenant; false if one of that name exists.
pub async fn create(
    pool: &Pool,
    name: &str,
    self_register: bool,
    limits: &TenantLimits,
) -> redis::RedisResult<bool> {
    let mut conn = pool.get().await.map_err(crate::pool_error)?;
    let created: bool = conn
        .hset_nx(
            tenant_key(name),
            "self_register",
            if self_register { "1" } else { "0" },
        )
        .await?;
    if !created {
        return Ok(false);
    }
    // Tokens and sessions are bound to this id, not to the name: a tenant deleted and
    // created again is a new incarnation, which none of the old tokens open.
    let _: () = conn
        .hset(
            tenant_key(name),
            "incarnation",
            crate::sessions::new_incarnation(),
        )
        .await?;
    let fields: Vec<(&str, u64)> = limits.iter().collect();
    if !fields.is_empty() {
        let _: () = conn.hset_multiple(tenant_key(name), &fields).await?;
    }
    let _: () = conn.sadd(TENANTS, name).await?;
    pool.forget(&tenant_key(name));
    Ok(true)
}

/// Turns self-registration on or off.
pub async fn set_self_register(pool: &Pool, name: &str, on: bool) -> redis::RedisResult<()> {
    let mut conn = pool.get().await.map_err(crate::pool_error)?;
    let _: () = conn
        .hset(
            tenant_key(name),
            "self_register",
            if on { "1" } else { "0" },
        )
        .await?;
    pool.forget(&tenant_key(name));
    Ok(())
}

/// Lets (or stops letting) a tenant's admins publish components for the tenant.
pub async fn set_allow_plugins(pool: &Pool, name: &str, on: bool) -> redis::RedisResult<()> {
    let mut conn = pool.get().await.map_err(crate::pool_error)?;
    let _: () = conn
        .hset(
            tenant_key(name),
            "allow_plugins",
            if on { "1" } else { "0" },
        )
        .await?;
    pool.forget(&tenant_key(name));
    Ok(())
}

/// Sets (`Some`) or clears (`None`) some of a tenant's limits.
pub async fn update_limits(
    pool: &Pool,
    name: &str,
    changes: &[(&str, Option<u64>)],
) -> redis::RedisResult<()> {
    if changes.is_empty() {
        return Ok(());
    }
    let mut conn = pool.get().await.map_err(crate::pool_error)?;
    let mut pipe = redis::pipe();
    pipe.atomic();
    for (limit, value) in changes {
        match value {
            Some(v) => pipe.hset(tenant_key(name), *limit, *v).ignore(),
            None => pipe.hdel(tenant_key(name), *limit).ignore(),
        };
    }
    pipe.query_async::<()>(&mut conn).await?;
    pool.forget(&tenant_key(name));
    Ok(())
}

/// Marks a tenant as being deleted: it refuses logins, uploads and dispatch from now on.
pub async fn mark_deleting(pool: &Pool, name: &str) -> redis::RedisResult<()> {
    let mut conn = pool.get().await.map_err(crate::pool_error)?;
    redis::pipe()
        .hset(tenant_key(name), "deleting", "1")
        .ignore()
        .sadd(TENANTS_DELETING, name)
        .ignore()
        .query_async::<()>(&mut conn)
        .await?;
    pool.forget(&tenant_key(name));
    Ok(())
}

/// Deletes every key of a tenant (they all carry its hash tag: one `SCAN MATCH`) and
/// forgets it; the caller removes its blobs first. Returns keys deleted.
pub async fn purge_keys(pool: &Pool, name: &str) -> redis::RedisResult<u64> {
    let mut conn = pool.get().await.map_err(crate::pool_error)?;
    let keys = crate::scan_keys(&mut conn, &format!("td:{{{name}}}:*")).await?;
    // The tenant hash goes last: while it exists, the tenant shows as deleting.
    let mut deleted = 0;
    for batch in keys
        .iter()
        .filter(|k| **k != tenant_key(name))
        .collect::<Vec<_>>()
        .chunks(500)
    {
        let n: u64 = conn.unlink(batch).await?;
        deleted += n;
    }
    let _: () = conn.srem(TENANTS, name).await?;
    let _: () = conn.srem(TENANTS_DELETING, name).await?;
    let n: u64 = conn.unlink(tenant_key(name)).await?;
    pool.forget(&tenant_key(name));
    Ok(deleted + n)
}

/// Tenants marked as being deleted (a restarted process finishes what another began):
/// one set read, whatever the number of tenants.
pub async fn deleting(pool: &Pool) -> redis::RedisResult<Vec<String>> {
    let mut conn = pool.get().await.map_err(crate::pool_error)?;
    conn.smembers(TENANTS_DELETING).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_names() {
        assert!(valid_tenant_name("default"));
        assert!(valid_tenant_name("acme-2_x"));
        assert!(!valid_tenant_name(""));
        assert!(!valid_tenant_name("Acme"));
        assert!(!valid_tenant_name("a b"));
        assert!(!valid_tenant_name("a:b"));
        assert!(!valid_tenant_name("a{b}"));
        assert!(!valid_tenant_name("~sched"));
    }
}
