//! The plugin registry in Redis: published components (their bytes are in the blob store
//! under `plugins/{digest}.wasm`), which digest runs each stage for everyone and per
//! tenant, the history of changes, and the version counter + channel every process
//! watches to swap within a second.

use std::collections::HashMap;

use deadpool_redis::Pool;
use redis::AsyncCommands;
use serde::Serialize;

use crate::keys::{
    PLUGIN_ACTIVE, PLUGIN_APPLIED, PLUGIN_CHANNEL, PLUGIN_HISTORY, PLUGIN_VERSION, plugin_key,
    plugins_of_stage,
};

/// The blob of a published component.
pub fn blob_key(digest: &str) -> String {
    format!("plugins/{digest}.wasm")
}

/// A published component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plugin {
    pub digest: String,
    pub stage: String,
    pub bytes: u64,
    pub published_at: u64,
    pub compile_ms: u64,
    /// The tenant whose admin published it (only that tenant may run it); `None`: the
    /// operator's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Who published it: `operator`, or the tenant admin's `{tenant}/{email}`.
    #[serde(default)]
    pub by: String,
    /// The WIT world version it implements.
    #[serde(default)]
    pub world: String,
    /// The smoke run at publish: what ran and what it took.
    #[serde(default)]
    pub smoke: String,
    /// Milliseconds the smoke run took.
    #[serde(default)]
    pub smoke_ms: u64,
}

/// Which digest runs a stage, for everyone (`tenant` none) or one tenant; `digest` none:
/// the component the process started with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Active {
    pub stage: String,
    pub tenant: Option<String>,
    pub digest: Option<String>,
}

/// One change in the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub at: u64,
    pub action: String,
    pub stage: String,
    pub tenant: Option<String>,
    pub digest: Option<String>,
    /// Why (a canary's settings, or what ended it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

fn active_field(stage: &str, tenant: Option<&str>) -> String {
    match tenant {
        Some(t) => format!("{stage}:{t}"),
        None => stage.to_owned(),
    }
}

fn now_s() -> u64 {
    crate::queue::now_ms() / 1000
}

/// Records a published component; false if that digest was published before.
pub async fn publish(pool: &Pool, plugin: &Plugin) -> redis::RedisResult<bool> {
    let mut conn = pool.get().await.map_err(crate::pool_error)?;
    let created: bool = conn
        .hset_nx(plugin_key(&plugin.digest), "stage", &plugin.stage)
        .await?;
    if !created {
        return Ok(false);
    }
    let _: () = conn
        .hset_multiple(
            plugin_key(&plugin.digest),
            &[
                ("bytes", plugin.bytes),
                ("published_at", plugin.published_at),
                ("compile_ms", plugin.compile_ms),
                ("smoke_ms", plugin.smoke_ms),
            ],
        )
        .await?;
    let _: () = conn
        .hset_multiple(
            plugin_key(&plugin.digest),
            &[
                ("by", plugin.by.as_str()),
                ("world", plugin.world.as_str()),
                ("smoke", plugin.smoke.as_str()),
            ],
        )
        .await?;
    if let Some(owner) = &plugin.owner {
        let _: () = conn
            .hset(plugin_key(&plugin.digest), "owner", owner)
            .await?;
    }
    let _: () = conn
        .zadd(
            plugins_of_stage(&plugin.stage),
            &plugin.digest,
            plugin.published_at,
        )
        .await?;
    drop(conn);
    record(pool, "publish", &plugin.stage, None, Some(&plugin.digest)).await?;
    Ok(true)
}

/// A published component by digest.
pub async fn get(pool: &Pool, digest: &str) -> redis::RedisResult<Option<Plugin>> {
    let mut conn = pool.get().await.map_err(crate::pool_error)?;
    let h: HashMap<String, String> = conn.hgetall(plugin_key(digest)).await?;
    if h.is_empty() {
        return Ok(None);
    }
    let num = |k: &str| h.get(k).and_then(|v| v.parse().ok()).unwrap_or(0);
    Ok(Some(Plugin {
        digest: digest.to_owned(),
        stage: h.get("stage").cloned().unwrap_or_default(),
        bytes: num("bytes"),
        published_at: num("published_at"),
        compile_ms: num("compile_ms"),
        owner: h.get("owner").cloned(),
        by: h.get("by").cloned().unwrap_or_default(),
        world: h.get("world").cloned().unwrap_or_default(),
        smoke: h.get("smoke").cloned().unwrap_or_default(),
        smoke_ms: num("smoke_ms"),
    }))
}

/// Published components of a stage, newest first.
pub async fn list(pool: &Pool, stage: &str) -> redis::RedisResult<Vec<Plugin>> {
    let mut conn = pool.get().await.map_err(crate::pool_error)?;
    let digests: Vec<String> = conn.zrevrange(plugins_of_stage(stage), 0, -1).await?;
    drop(conn);
    let mut out = Vec::new();
    for d in digests {
        if let Some(p) = get(pool, &d).await? {
            out.push(p);
        }
    }
    Ok(out)
}

/// Every activation in force.
pub async fn active(pool: &Pool) -> redis::RedisResult<Vec<Active>> {
    let mut conn = pool.get().await.map_err(crate::pool_error)?;
    let h: HashMap<String, String> = conn.hgetall(PLUGIN_ACTIVE).await?;
    let mut out: Vec<Active> = h
        .into_iter()
        .map(|(field, digest)| {
            let (stage, tenant) = match field.split_once(':') {
                Some((s, t)) => (s.to_owned(), Some(t.to_owned())),
                None => (field, None),
            };
            Active {
                stage,
                tenant,
                digest: Some(digest),
            }
        })
        .collect();
    out.sort_by(|a, b| (&a.stage, &a.tenant).cmp(&(&b.stage, &b.tenant)));
    Ok(out)
}

/// Makes `digest` (none: the starting component) run `stage` for `tenant` (none:
/// everyone), records it, and tells every process.
pub async fn activate(
    pool: &Pool,
    stage: &str,
    tenant: Option<&str>,
    digest: Option<&str>,
    action: &str,
) -> redis::RedisResult<Active> {
    activate_why(pool, stage, tenant, digest, action, None).await
}

/// [`activate`], recording why.
pub async fn activate_why(
    pool: &Pool,
    stage: &str,
    tenant: Option<&str>,
    digest: Option<&str>,
    action: &str,
    why: Option<&str>,
) -> redis::RedisResult<Active> {
    let mut conn = pool.get().await.map_err(crate::pool_error)?;
    let field = active_field(stage, tenant);
    let _: () = match digest {
        Some(d) => conn.hset(PLUGIN_ACTIVE, &field, d).await?,
        None => conn.hdel(PLUGIN_ACTIVE, &field).await?,
    };
    drop(conn);
    record_with(pool, action, stage, tenant, digest, why).await?;
    bump(pool).await?;
    Ok(Active {
        stage: stage.to_owned(),
        tenant: tenant.map(str::to_owned),
        digest: digest.map(str::to_owned),
    })
}

/// The digest active before the current one for `stage` and `tenant` (from the
/// history), `None` when there was none (the starting component).
pub async fn previous(
    pool: &Pool,
    stage: &str,
    tenant: Option<&str>,
) -> redis::RedisResult<Option<String>> {
    let changes = history(pool, Some(stage), 10_000).await?;
    let mut activations = changes
        .iter()
        .filter(|c| ACTIVATIONS.contains(&c.action.as_str()) && c.tenant.as_deref() == tenant);
    // Newest first: skip the one in force.
    activations.next();
    Ok(activations.next().and_then(|c| c.digest.clone()))
}

/// History actions that change what runs a stage.
const ACTIVATIONS: &[&str] = &["activate", "rollback", "canary-promote"];

/// Bumps the registry version and tells every process.
pub async fn bump(pool: &Pool) -> redis::RedisResult<()> {
    let mut conn = pool.get().await.map_err(crate::pool_error)?;
    let version: u64 = conn.incr(PLUGIN_VERSION, 1).await?;
    let _: () = conn.publish(PLUGIN_CHANNEL, version).await?;
    Ok(())
}

async fn record(
    pool: &Pool,
    action: &str,
    stage: &str,
    tenant: Option<&str>,
    digest: Option<&str>,
) -> redis::RedisResult<()> {
    record_with(pool, action, stage, tenant, digest, None).await
}

/// Adds a change to the history, with why.
pub async fn record_with(
    pool: &Pool,
    action: &str,
    stage: &str,
    tenant: Option<&str>,
    digest: Option<&str>,
    why: Option<&str>,
) -> redis::RedisResult<()> {
    let mut conn = pool.get().await.map_err(crate::pool_error)?;
    let _: String = redis::cmd("XADD")
        .arg(PLUGIN_HISTORY)
        .arg("MAXLEN")
        .arg("~")
        .arg(10_000)
        .arg("*")
        .arg("at")
        .arg(now_s())
        .arg("action")
        .arg(action)
        .arg("stage")
        .arg(stage)
        .arg("tenant")
        .arg(tenant.unwrap_or(""))
        .arg("digest")
        .arg(digest.unwrap_or(""))
        .arg("reason")
        .arg(why.unwrap_or(""))
        .query_async(&mut conn)
        .await?;
    Ok(())
}

/// Registry changes, newest first (of one stage if given), at most `limit`.
pub async fn history(
    pool: &Pool,
    stage: Option<&str>,
    limit: usize,
) -> redis::RedisResult<Vec<Change>> {
    let mut conn = pool.get().await.map_err(crate::pool_error)?;
    let reply: redis::streams::StreamRangeReply = redis::cmd("XREVRANGE")
        .arg(PLUGIN_HISTORY)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(10_000)
        .query_async(&mut conn)
        .await?;
    let field = |e: &redis::streams::StreamId, k: &str| -> String { e.get(k).unwrap_or_default() };
    Ok(reply
        .ids
        .iter()
        .map(|e| Change {
            at: field(e, "at").parse().unwrap_or(0),
            action: field(e, "action"),
            stage: field(e, "stage"),
            tenant: Some(field(e, "tenant")).filter(|t| !t.is_empty()),
            digest: Some(field(e, "digest")).filter(|d| !d.is_empty()),
            reason: Some(field(e, "reason")).filter(|r| !r.is_empty()),
        })
        .filter(|c| stage.is_none_or(|s| c.stage == s))
        .take(limit)
        .collect())
}

/// Records that process `process` runs registry version `version` now.
pub async fn applied(pool: &Pool, process: &str, version: u64) -> redis::RedisResult<()> {
    let mut conn = pool.get().await.map_err(crate::pool_error)?;
    let _: () = conn
        .hset(
            PLUGIN_APPLIED,
            process,
            format!("{version}:{}", crate::queue::now_ms()),
        )
        .await?;
    Ok(())
}

/// A process's applied registry version, as last reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Applied {
    pub process: String,
    pub version: u64,
    /// When it last reported, unix ms.
    pub seen_ms: u64,
}

/// Processes that reported within `fresh_ms`, and their versions; older entries (stopped
/// processes) are removed.
pub async fn applied_by(pool: &Pool, fresh_ms: u64) -> redis::RedisResult<Vec<Applied>> {
    let mut conn = pool.get().await.map_err(crate::pool_error)?;
    let h: HashMap<String, String> = conn.hgetall(PLUGIN_APPLIED).await?;
    let now = crate::queue::now_ms();
    let mut out = Vec::new();
    for (process, value) in h {
        let (v, seen) = value.split_once(':').unwrap_or(("0", "0"));
        let seen_ms: u64 = seen.parse().unwrap_or(0);
        if now.saturating_sub(seen_ms) > fresh_ms.saturating_mul(10) {
            let _: () = conn.hdel(PLUGIN_APPLIED, &process).await?;
            continue;
        }
        if now.saturating_sub(seen_ms) <= fresh_ms {
            out.push(Applied {
                process,
                version: v.parse().unwrap_or(0),
                seen_ms,
            });
        }
    }
    out.sort_by(|a, b| a.process.cmp(&b.process));
    Ok(out)
}

/// The registry's version (bumped on every activation).
pub async fn version(pool: &Pool) -> redis::RedisResult<u64> {
    let mut conn = pool.get().await.map_err(crate::pool_error)?;
    let v: Option<u64> = conn.get(PLUGIN_VERSION).await?;
    Ok(v.unwrap_or(0))
}
