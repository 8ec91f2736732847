//! Tenants as the service needs them: existence, self-registration, upload limit
//! (`td:tenant:{name}`). The default tenant is created at startup.

use std::collections::HashMap;

use deadpool_redis::Pool;
use redis::AsyncCommands;

use crate::keys::tenant_key;

/// The tenant every install has; allows self-registration.
pub const DEFAULT_TENANT: &str = "default";

/// A tenant's settings, with server defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub name: String,
    /// Anyone may register an account.
    pub self_register: bool,
    /// Largest accepted upload; never above the server's limit.
    pub max_upload_bytes: u64,
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
    let _: () = conn.sadd(crate::keys::TENANTS, DEFAULT_TENANT).await?;
    Ok(())
}

/// Loads a tenant; `None` if it does not exist. `server_max_upload` caps its limit.
pub async fn load_tenant(
    pool: &Pool,
    name: &str,
    server_max_upload: u64,
) -> redis::RedisResult<Option<Tenant>> {
    if !valid_tenant_name(name) {
        return Ok(None);
    }
    let mut conn = pool.get().await.map_err(crate::pool_error)?;
    let h: HashMap<String, String> = conn.hgetall(tenant_key(name)).await?;
    if h.is_empty() {
        return Ok(None);
    }
    let max_upload_bytes = h
        .get("max_upload_bytes")
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(server_max_upload, |v| v.min(server_max_upload));
    Ok(Some(Tenant {
        name: name.to_owned(),
        self_register: h.get("self_register").is_some_and(|v| v == "1"),
        max_upload_bytes,
    }))
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
    }
}
