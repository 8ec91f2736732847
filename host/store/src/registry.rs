//! The plugin registry in Redis: published components (their bytes are in the blob store
//! under `plugins/{digest}.wasm`), which digest runs each stage for everyone and per
//! tenant, the history of changes, and the version counter + channel every process
//! watches to swap within a second.

use std::collections::HashMap;

use crate::Pool;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

use crate::keys::{
    PLUGIN_ACTIVE, PLUGIN_APPLIED, PLUGIN_CHANNEL, PLUGIN_HISTORY, PLUGIN_RELEASES, PLUGIN_VERSION,
    plugin_key, plugin_trail, plugins_of_stage, tenant_plugin_key,
};

/// The blob of a published component.
pub fn blob_key(digest: &str) -> String {
    format!("plugins/{digest}.wasm")
}

/// A published component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Plugin {
    /// SHA-256 of the component, hex.
    pub digest: String,
    pub stage: String,
    pub bytes: u64,
    /// Unix seconds.
    pub published_at: u64,
    pub compile_ms: u64,
    /// The tenant whose admin published it (only that tenant may run it); `None`: the
    /// operator's.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub owner: Option<String>,
    /// Who published it: `operator`, or the tenant admin's `{tenant}/{email}`.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub by: String,
    /// The WIT world version it implements.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub world: String,
    /// The smoke run at publish: what ran and what it took.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub smoke: String,
    /// Milliseconds the smoke run took.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub smoke_ms: u64,
    /// The conformance cases it failed at publish that do not refuse it (`{case}:
    /// {detail}`): a canary of it is never promoted by `promote_after`, only by hand.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub failures: Vec<String>,
    /// The release it was published as (`--name`, `--version`, semver): `NAME@VERSION`
    /// names this digest for its owner and stage, for good.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub version: Option<String>,
}

/// The digest `name@version` names among `owner`'s `stage` plugins (none: the operator's),
/// if it was published. A release names one digest for good.
pub async fn release(
    pool: &Pool,
    owner: Option<&str>,
    stage: &str,
    name: &str,
    version: &str,
) -> redis::RedisResult<Option<String>> {
    let mut conn = pool.get().await.map_err(crate::pool_error)?;
    conn.hget(PLUGIN_RELEASES, release_field(owner, stage, name, version))
        .await
}

/// Why a publish was not recorded.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// Its `name@version` names another digest (that one).
    #[error("that release is component {0}")]
    ReleaseTaken(String),
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
}

fn release_field(owner: Option<&str>, stage: &str, name: &str, version: &str) -> String {
    format!("{}/{stage}/{name}@{version}", owner.unwrap_or("-"))
}

/// Which digest runs a stage, for everyone (`tenant` none) or one tenant; `digest` none:
/// the component the process started with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Active {
    pub stage: String,
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub tenant: Option<String>,
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub digest: Option<String>,
}

/// One change in the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Change {
    /// Unix seconds.
    pub at: u64,
    pub action: String,
    pub stage: String,
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub tenant: Option<String>,
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub digest: Option<String>,
    /// Why (a canary's settings, or what ended it).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub reason: Option<String>,
    /// The release the digest was published as (`NAME@VERSION`), where it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub release: Option<String>,
}

fn active_field(stage: &str, tenant: Option<&str>) -> String {
    match tenant {
        Some(t) => format!("{stage}:{t}"),
        None => stage.to_owned(),
    }
}

/// Where `owner`'s registration of `digest` is (none: the operator's).
fn registration_key(owner: Option<&str>, digest: &str) -> String {
    match owner {
        Some(tenant) => tenant_plugin_key(tenant, digest),
        None => plugin_key(digest),
    }
}

/// A registration's member in the stage's listing.
fn listing_member(owner: Option<&str>, digest: &str) -> String {
    match owner {
        Some(tenant) => format!("{tenant}/{digest}"),
        None => digest.to_owned(),
    }
}

fn now_s() -> u64 {
    crate::queue::now_ms() / 1000
}

/// Records a published component under its owner (the operator, or the tenant whose
/// admin published it: each has a registration of its own, so nobody claims a digest
/// for anyone else); false if that owner had published that digest before.
pub async fn publish(pool: &Pool, plugin: &Plugin) -> Result<bool, PublishError> {
    let key = registration_key(plugin.owner.as_deref(), &plugin.digest);
    let mut conn = pool.get().await.map_err(crate::pool_error)?;
    // The release name first: taken by another digest, nothing is registered.
    if let (Some(name), Some(version)) = (&plugin.name, &plugin.version) {
        let field = release_field(plugin.owner.as_deref(), &plugin.stage, name, version);
        let _: bool = conn
            .hset_nx(PLUGIN_RELEASES, &field, &plugin.digest)
            .await?;
        let holder: Option<String> = conn.hget(PLUGIN_RELEASES, &field).await?;
        if let Some(holder) = holder.filter(|d| *d != plugin.digest) {
            return Err(PublishError::ReleaseTaken(holder));
        }
    }
    let created: bool = conn.hset_nx(&key, "stage", &plugin.stage).await?;
    if !created {
        return Ok(false);
    }
    let _: () = conn
        .hset_multiple(
            &key,
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
            &key,
            &[
                ("by", plugin.by.as_str()),
                ("world", plugin.world.as_str()),
                ("smoke", plugin.smoke.as_str()),
                (
                    "failures",
                    serde_json::to_string(&plugin.failures)
                        .expect("strings serialize")
                        .as_str(),
                ),
            ],
        )
        .await?;
    if let Some(owner) = &plugin.owner {
        let _: () = conn.hset(&key, "owner", owner).await?;
    }
    if let (Some(name), Some(version)) = (&plugin.name, &plugin.version) {
        let _: () = conn
            .hset_multiple(&key, &[("name", name), ("version", version)])
            .await?;
    }
    let _: () = conn
        .zadd(
            plugins_of_stage(&plugin.stage),
            listing_member(plugin.owner.as_deref(), &plugin.digest),
            plugin.published_at,
        )
        .await?;
    drop(conn);
    // A tenant's publish is that tenant's entry in the history.
    record(
        pool,
        "publish",
        &plugin.stage,
        plugin.owner.as_deref(),
        Some(&plugin.digest),
    )
    .await?;
    Ok(true)
}

/// `owner`'s registration of `digest` (none: the operator's).
pub async fn get(
    pool: &Pool,
    owner: Option<&str>,
    digest: &str,
) -> redis::RedisResult<Option<Plugin>> {
    let mut conn = pool.get().await.map_err(crate::pool_error)?;
    let h: HashMap<String, String> = conn.hgetall(registration_key(owner, digest)).await?;
    // Before registrations were per owner, a tenant's lived under the global key with its
    // `owner`: such an entry is not the operator's.
    if h.is_empty() || h.get("owner").map(String::as_str) != owner {
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
        failures: h
            .get("failures")
            .and_then(|f| serde_json::from_str(f).ok())
            .unwrap_or_default(),
        name: h.get("name").cloned(),
        version: h.get("version").cloned(),
    }))
}

/// The registration that may run `stage` in a scope: the operator's, or, for a tenant's
/// scope, that tenant's own.
pub async fn runnable_in(
    pool: &Pool,
    digest: &str,
    tenant: Option<&str>,
) -> redis::RedisResult<Option<Plugin>> {
    if let Some(p) = get(pool, None, digest).await? {
        return Ok(Some(p));
    }
    match tenant {
        Some(t) => get(pool, Some(t), digest).await,
        None => Ok(None),
    }
}

/// Published components of a stage (every owner's registrations), newest first.
pub async fn list(pool: &Pool, stage: &str) -> redis::RedisResult<Vec<Plugin>> {
    let mut conn = pool.get().await.map_err(crate::pool_error)?;
    let members: Vec<String> = conn.zrevrange(plugins_of_stage(stage), 0, -1).await?;
    drop(conn);
    let mut out = Vec::new();
    for m in members {
        let (owner, digest) = match m.split_once('/') {
            Some((t, d)) => (Some(t), d),
            None => (None, m.as_str()),
        };
        if let Some(p) = get(pool, owner, digest).await? {
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

/// Who chose an activation: a rollback walks back over both, revoking a tenant's
/// plugins (`allow_plugins` off) over the tenant's own choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChosenBy {
    Operator,
    Tenant,
}

impl ChosenBy {
    fn as_str(self) -> &'static str {
        match self {
            ChosenBy::Operator => "operator",
            ChosenBy::Tenant => "tenant",
        }
    }
}

/// Activations remembered per scope for rollbacks.
const TRAIL_LEN: isize = 1000;

/// Makes `digest` run `stage` for `tenant` (none: everyone), remembers it in the scope's
/// trail (for rollbacks), records it, and tells every process.
pub async fn activate(
    pool: &Pool,
    stage: &str,
    tenant: Option<&str>,
    digest: &str,
    by: ChosenBy,
    action: &str,
) -> redis::RedisResult<Active> {
    activate_why(pool, stage, tenant, digest, by, action, None).await
}

/// [`activate`], recording why.
pub async fn activate_why(
    pool: &Pool,
    stage: &str,
    tenant: Option<&str>,
    digest: &str,
    by: ChosenBy,
    action: &str,
    why: Option<&str>,
) -> redis::RedisResult<Active> {
    let field = active_field(stage, tenant);
    let mut conn = pool.get().await.map_err(crate::pool_error)?;
    let _: () = redis::pipe()
        .atomic()
        .hset(PLUGIN_ACTIVE, &field, digest)
        .ignore()
        .lpush(plugin_trail(&field), format!("{}|{digest}", by.as_str()))
        .ignore()
        .ltrim(plugin_trail(&field), 0, TRAIL_LEN - 1)
        .ignore()
        .query_async(&mut conn)
        .await?;
    drop(conn);
    record_with(pool, action, stage, tenant, Some(digest), why).await?;
    bump(pool).await?;
    Ok(Active {
        stage: stage.to_owned(),
        tenant: tenant.map(str::to_owned),
        digest: Some(digest.to_owned()),
    })
}

/// Steps a scope's activations back, atomically (`lua/step_back.lua`).
async fn step_back(
    pool: &Pool,
    stage: &str,
    tenant: Option<&str>,
    mode: &str,
) -> redis::RedisResult<Option<Option<String>>> {
    let field = active_field(stage, tenant);
    let mut conn = pool.get().await.map_err(crate::pool_error)?;
    let (changed, digest): (u8, String) = crate::lua::STEP_BACK
        .call()
        .key("active", PLUGIN_ACTIVE)
        .key("trail", plugin_trail(&field))
        .arg("field", &field)
        .arg("mode", mode)
        .invoke(&mut conn)
        .await?;
    Ok((changed == 1).then(|| Some(digest).filter(|d| !d.is_empty())))
}

/// Rolls `stage` for `tenant` (none: everyone) back to the activation before the one in
/// force — down the scope's whole trail to the built-in component. `None`: the scope
/// runs the built-in component already, there is nothing to roll back.
pub async fn rollback(
    pool: &Pool,
    stage: &str,
    tenant: Option<&str>,
) -> redis::RedisResult<Option<Active>> {
    let Some(digest) = step_back(pool, stage, tenant, "one").await? else {
        return Ok(None);
    };
    record(pool, "rollback", stage, tenant, digest.as_deref()).await?;
    bump(pool).await?;
    Ok(Some(Active {
        stage: stage.to_owned(),
        tenant: tenant.map(str::to_owned),
        digest,
    }))
}

/// Takes a tenant's own choices off every stage of its scope (the operator revoked its
/// `allow_plugins`): each stage runs what the operator chose for it last, or the
/// built-in component. Returns the scopes that changed.
pub async fn revoke_tenant(pool: &Pool, tenant: &str) -> redis::RedisResult<Vec<Active>> {
    let mut changed = Vec::new();
    for stage in tapedeck_model::registry::REGISTRY_STAGES {
        if let Some(digest) = step_back(pool, stage, Some(tenant), "tenant").await? {
            record_with(
                pool,
                "revoke",
                stage,
                Some(tenant),
                digest.as_deref(),
                Some("the operator revoked the tenant's allow_plugins"),
            )
            .await?;
            changed.push(Active {
                stage: (*stage).to_owned(),
                tenant: Some(tenant.to_owned()),
                digest,
            });
        }
    }
    if !changed.is_empty() {
        bump(pool).await?;
    }
    Ok(changed)
}

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
            release: None,
        })
        .filter(|c| stage.is_none_or(|s| c.stage == s))
        .take(limit)
        .collect())
}

/// Records where process `process` stands: the registry version whose components it
/// runs (`version`, all of them compiled), the one it has heard of (`heard`: its jobs
/// wait for components still compiling), and how long compiling took for the last one.
pub async fn applied(
    pool: &Pool,
    process: &str,
    version: u64,
    heard: u64,
    compile_ms: u64,
    watched: &[String],
) -> redis::RedisResult<()> {
    let mut conn = pool.get().await.map_err(crate::pool_error)?;
    let _: () = conn
        .hset(
            PLUGIN_APPLIED,
            process,
            format!(
                "{version}:{}:{heard}:{compile_ms}:{}",
                crate::queue::now_ms(),
                watched.join(",")
            ),
        )
        .await?;
    Ok(())
}

/// A process's applied registry version, as last reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Applied {
    pub process: String,
    /// The version it runs: every component of it compiled and installed.
    pub version: u64,
    /// The version it has heard of (at least `version`): above it while components
    /// compile, and jobs of the scopes they are for wait.
    pub heard: u64,
    /// Milliseconds it took to compile (or load from its cache) the components new in
    /// the last version it applied.
    pub compile_ms: u64,
    /// When it last reported, unix ms.
    pub seen_ms: u64,
    /// What it runs from `serve --watch DIR` instead of the registry's choice:
    /// `{stage}={digest}` (the process's component for everyone).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub watched: Vec<String>,
}

/// Processes that reported within `fresh_ms`, and their versions; older entries (stopped
/// processes) are removed.
pub async fn applied_by(pool: &Pool, fresh_ms: u64) -> redis::RedisResult<Vec<Applied>> {
    let mut conn = pool.get().await.map_err(crate::pool_error)?;
    let h: HashMap<String, String> = conn.hgetall(PLUGIN_APPLIED).await?;
    let now = crate::queue::now_ms();
    let mut out = Vec::new();
    for (process, value) in h {
        // `{version}:{seen ms}:{heard}:{compile ms}:{watched}`; older processes wrote
        // the first two, or four.
        let mut fields = value.split(':');
        let mut number = || fields.next().and_then(|p| p.parse::<u64>().ok());
        let version = number().unwrap_or(0);
        let seen_ms = number().unwrap_or(0);
        let heard = number().unwrap_or(version).max(version);
        let compile_ms = number().unwrap_or(0);
        let watched = value
            .splitn(5, ':')
            .nth(4)
            .map(|w| {
                w.split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        if now.saturating_sub(seen_ms) > fresh_ms.saturating_mul(10) {
            let _: () = conn.hdel(PLUGIN_APPLIED, &process).await?;
            continue;
        }
        if now.saturating_sub(seen_ms) <= fresh_ms {
            out.push(Applied {
                process,
                version,
                heard,
                compile_ms,
                seen_ms,
                watched,
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

/// Gives the registry keys of a release before they shared the `{~plugins}` hash tag
/// (`td:plugins:…`) their tagged names, once, at a process's start: `RENAMENX`, so a key
/// another process already renamed, or one a newer process already wrote, is left
/// alone. Returns how many were renamed. (On a cluster nothing has the old names: the
/// cluster support came with the tag.)
pub async fn rename_untagged_keys(pool: &Pool) -> redis::RedisResult<usize> {
    const OLD: &str = "td:plugins:";
    let mut conn = pool.get().await.map_err(crate::pool_error)?;
    // A registry that was ever used has a history (every publish) or a version (every
    // activation); without them there is nothing to rename and no keyspace to scan.
    let history: bool = conn.exists(format!("{OLD}history")).await?;
    let version: bool = conn.exists(format!("{OLD}version")).await?;
    if !history && !version {
        return Ok(0);
    }
    let mut renamed = 0;
    for old in crate::scan_keys(&mut conn, &format!("{OLD}*")).await? {
        let Some(rest) = old.strip_prefix(OLD) else {
            continue;
        };
        let new = format!("td:{{~plugins}}:{rest}");
        match conn.rename_nx::<_, _, bool>(&old, &new).await {
            Ok(done) => renamed += usize::from(done),
            // Renamed by another process in the meantime.
            Err(e) if e.to_string().contains("no such key") => {}
            Err(e) => return Err(e),
        }
    }
    Ok(renamed)
}
