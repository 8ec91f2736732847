//! Canary rollouts: a published component runs a share of a stage's new jobs (for
//! everyone, or for one tenant) beside the active one, both arms' outcomes are compared
//! over a window, and a breach rolls the canary back by itself.
//!
//! - Which jobs: a job runs the canary on its first attempt when the hash of the sticky
//!   key (its tenant, its owner or the job itself) with the canary's digest falls in the
//!   canary's share ([`CanarySettings::takes`]). Retries never run the canary, so a job
//!   the canary failed is converted again by the stable component.
//! - Analysis ([`analyze`]): after `min_jobs` canary outcomes, over the last `window` of
//!   each arm: the plugin-failure rate (traps, limit hits, internal errors — not input
//!   the converter refuses), the invalid-output rate (the MP3's decoded length vs the
//!   input's), and p95 run time. The canary may be worse than stable by at most
//!   `max_failure_delta` / `max_invalid_delta` (absolute shares) and `max_p95_ratio`
//!   (plus `p95_slack_ms`, so tiny jobs' jitter does not count).
//! - Endings: `rollback` (automatic, with the reason), `promote` (by hand, or after
//!   `promote_after` canary outcomes with no breach: the canary becomes the active
//!   component), `abort` (by hand). Each goes to the registry's history with its reason
//!   and bumps the registry version, so every process drops the canary within a second.
//!   The guard in [`end`] makes one process win when several see the same breach.

use std::collections::HashMap;

use crate::Pool;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

pub use tapedeck_model::canary::*;

use crate::keys::{
    PLUGIN_CANARIES, RUN_TIMES_KEPT, canary_outcomes, canary_totals, plugin_run_times,
};
use crate::registry;

/// A running canary with its analysis so far.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CanaryStatus {
    #[serde(flatten)]
    pub settings: CanarySettings,
    pub state: CanaryState,
    pub canary: ArmStats,
    pub stable: ArmStats,
    /// Outcomes since the start, by `{arm}:{result}`.
    pub totals: HashMap<String, u64>,
    /// Why `promote_after` will not promote it (conformance failures recorded when it
    /// was published); the operator can still promote it by hand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promotion_held: Option<String>,
}

/// Where a canary's analysis is: collecting its first `min_jobs` outcomes, or comparing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum CanaryState {
    Collecting,
    Analysing,
}

impl CanaryState {
    /// Its name in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            CanaryState::Collecting => "collecting",
            CanaryState::Analysing => "analysing",
        }
    }
}

/// Starts (or replaces) the canary of a scope: clears the previous one's outcomes,
/// records it in the history, and tells every process.
pub async fn start(pool: &Pool, s: &CanarySettings) -> redis::RedisResult<()> {
    let scope = s.scope();
    let json = serde_json::to_string(s).expect("canary settings serialize");
    let mut conn = pool.get().await.map_err(crate::pool_error)?;
    // Not one MULTI: the keys live in different cluster slots. Clearing first, then the
    // settings: a crash in between leaves old outcomes cleared and no canary, harmless.
    let _: () = redis::pipe()
        .del(canary_outcomes(&scope, "canary"))
        .del(canary_outcomes(&scope, "stable"))
        .del(canary_totals(&scope))
        .hset(PLUGIN_CANARIES, &scope, json)
        .query_async(&mut conn)
        .await?;
    drop(conn);
    let why = format!("{}% of new jobs, sticky by {:?}", s.percent, s.sticky).to_lowercase();
    registry::record_with(
        pool,
        "canary",
        &s.stage,
        s.tenant.as_deref(),
        Some(&s.digest),
        Some(&why),
    )
    .await?;
    registry::bump(pool).await
}

/// Every canary running.
pub async fn all(pool: &Pool) -> redis::RedisResult<Vec<CanarySettings>> {
    let mut conn = pool.get().await.map_err(crate::pool_error)?;
    let h: HashMap<String, String> = conn.hgetall(PLUGIN_CANARIES).await?;
    let mut out: Vec<CanarySettings> = h
        .values()
        .filter_map(|v| serde_json::from_str(v).ok())
        .collect();
    out.sort_by(|a, b| (&a.stage, &a.tenant).cmp(&(&b.stage, &b.tenant)));
    Ok(out)
}

/// The canary of one scope.
pub async fn get(
    pool: &Pool,
    stage: &str,
    tenant: Option<&str>,
) -> redis::RedisResult<Option<CanarySettings>> {
    let mut conn = pool.get().await.map_err(crate::pool_error)?;
    let v: Option<String> = conn.hget(PLUGIN_CANARIES, scope(stage, tenant)).await?;
    Ok(v.and_then(|v| serde_json::from_str(&v).ok()))
}

/// Records one run of a canary's arm (`canary` or `stable`), keeping the window.
pub async fn record(
    pool: &Pool,
    s: &CanarySettings,
    arm: &str,
    outcome: Outcome,
) -> redis::RedisResult<()> {
    let scope = s.scope();
    let key = canary_outcomes(&scope, arm);
    let result = outcome.encode();
    let field = format!(
        "{arm}:{}",
        result.split_once(':').map(|(r, _)| r).unwrap_or("")
    );
    let mut conn = pool.get().await.map_err(crate::pool_error)?;
    let _: () = redis::pipe()
        .lpush(&key, &result)
        .ltrim(&key, 0, s.window as isize - 1)
        .hincr(canary_totals(&scope), field, 1)
        .query_async(&mut conn)
        .await?;
    Ok(())
}

/// Records a successful run of the component `digest` (any tenant, canary or not).
pub async fn record_run_time(pool: &Pool, digest: &str, run: RunTime) -> redis::RedisResult<()> {
    let key = plugin_run_times(digest);
    let mut conn = pool.get().await.map_err(crate::pool_error)?;
    let _: () = redis::pipe()
        .lpush(&key, run.encode())
        .ltrim(&key, 0, RUN_TIMES_KEPT - 1)
        .expire(&key, 30 * 24 * 3600)
        .query_async(&mut conn)
        .await?;
    Ok(())
}

/// The component's recent successful runs, newest first.
pub async fn run_times(pool: &Pool, digest: &str) -> redis::RedisResult<Vec<RunTime>> {
    let mut conn = pool.get().await.map_err(crate::pool_error)?;
    let raw: Vec<String> = conn.lrange(plugin_run_times(digest), 0, -1).await?;
    Ok(raw.iter().filter_map(|r| RunTime::decode(r)).collect())
}

async fn outcomes(pool: &Pool, scope: &str, arm: &str) -> redis::RedisResult<Vec<Outcome>> {
    let mut conn = pool.get().await.map_err(crate::pool_error)?;
    let raw: Vec<String> = conn.lrange(canary_outcomes(scope, arm), 0, -1).await?;
    Ok(raw.iter().filter_map(|r| Outcome::decode(r)).collect())
}

async fn totals(pool: &Pool, scope: &str) -> redis::RedisResult<HashMap<String, u64>> {
    let mut conn = pool.get().await.map_err(crate::pool_error)?;
    conn.hgetall(canary_totals(scope)).await
}

/// The analysis of a canary now.
pub async fn status(pool: &Pool, s: &CanarySettings) -> redis::RedisResult<CanaryStatus> {
    let scope = s.scope();
    let (c, st) = (
        outcomes(pool, &scope, "canary").await?,
        outcomes(pool, &scope, "stable").await?,
    );
    let totals = totals(pool, &scope).await?;
    let state = if (c.len() as u32) < s.min_jobs {
        CanaryState::Collecting
    } else {
        CanaryState::Analysing
    };
    Ok(CanaryStatus {
        settings: s.clone(),
        state,
        canary: ArmStats::of(&c),
        stable: ArmStats::of(&st),
        totals,
        promotion_held: promotion_held(pool, s).await?,
    })
}

/// The conformance cases the canary's component failed at publish (recorded, not
/// refused): what keeps `promote_after` from promoting it, and what a promotion by hand
/// names.
pub async fn recorded_failures(pool: &Pool, s: &CanarySettings) -> redis::RedisResult<Vec<String>> {
    Ok(registry::runnable_in(pool, &s.digest, s.tenant.as_deref())
        .await?
        .map(|p| p.failures)
        .unwrap_or_default())
}

/// Why a canary may not be promoted automatically: its [`recorded_failures`]. `None`
/// without `promote_after`.
pub async fn promotion_held(pool: &Pool, s: &CanarySettings) -> redis::RedisResult<Option<String>> {
    if s.promote_after.is_none() {
        return Ok(None);
    }
    let failures = recorded_failures(pool, s).await?;
    Ok((!failures.is_empty()).then(|| {
        format!(
            "not promoted automatically: its conformance check recorded {} failure(s) at \
             publish ({}); promote it by hand if that is acceptable",
            failures.len(),
            failures.join("; ")
        )
    }))
}

/// Analyses a canary and acts on the verdict: a breach rolls it back, a clean run with
/// `promote_after` promotes it. Returns what happened (`None`: it goes on, or another
/// process ended it first).
pub async fn evaluate(pool: &Pool, s: &CanarySettings) -> redis::RedisResult<Option<Verdict>> {
    let scope = s.scope();
    let (c, st) = (
        outcomes(pool, &scope, "canary").await?,
        outcomes(pool, &scope, "stable").await?,
    );
    let total: u64 = totals(pool, &scope)
        .await?
        .iter()
        .filter(|(k, _)| k.starts_with("canary:"))
        .map(|(_, v)| v)
        .sum();
    let verdict = analyze(s, &c, &st, total);
    let ended = match &verdict {
        Verdict::Continue => return Ok(None),
        Verdict::Rollback(why) => end(pool, s, "canary-rollback", why).await?,
        Verdict::Promote => {
            if let Some(held) = promotion_held(pool, s).await? {
                tracing::info!(digest = %s.digest, %held, "canary kept running");
                return Ok(None);
            }
            let why = format!("{total} canary runs with no breach (promote_after)");
            end(pool, s, "canary-promote", &why).await?
        }
    };
    Ok(ended.then_some(verdict))
}

/// Ends a canary (`canary-rollback`, `canary-promote`, `canary-abort`) if it is still
/// the one running in its scope; a promotion makes its digest the active component.
/// False: it had ended already.
pub async fn end(
    pool: &Pool,
    s: &CanarySettings,
    action: &str,
    why: &str,
) -> redis::RedisResult<bool> {
    let mut conn = pool.get().await.map_err(crate::pool_error)?;
    let ended: i32 = crate::lua::CANARY_END
        .call()
        .key("canaries", PLUGIN_CANARIES)
        .arg("scope", s.scope())
        .arg("digest", &s.digest)
        .arg("started_at", s.started_at.to_string())
        .invoke(&mut conn)
        .await?;
    drop(conn);
    if ended == 0 {
        return Ok(false);
    }
    match action {
        "canary-promote" => {
            registry::activate_why(
                pool,
                &s.stage,
                s.tenant.as_deref(),
                &s.digest,
                registry::ChosenBy::Operator,
                action,
                Some(why),
            )
            .await?;
        }
        _ => {
            registry::record_with(
                pool,
                action,
                &s.stage,
                s.tenant.as_deref(),
                Some(&s.digest),
                Some(why),
            )
            .await?;
            registry::bump(pool).await?;
        }
    }
    tracing::warn!(
        stage = %s.stage,
        tenant = s.tenant.as_deref().unwrap_or("*"),
        digest = %s.digest,
        action,
        why,
        "canary ended"
    );
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::CanaryState;

    #[test]
    fn state_names_are_the_apis() {
        for state in [CanaryState::Collecting, CanaryState::Analysing] {
            assert_eq!(serde_json::to_value(state).unwrap(), state.as_str());
        }
    }
}
