//! Weighted fair dispatch across tenants (stride scheduling), in Redis.
//!
//! Every tenant with work to dispatch is in `SCHED_READY` with a *pass*; a dispatch takes
//! the tenant with the smallest pass and advances it by the tenant's *stride*
//! (`STRIDE_ONE / weight`). With every tenant saturating, tenant shares are proportional
//! to weights; a tenant that arrives (or comes back from idle) starts at the virtual
//! time — the smallest pass in the ready set, whoever is due next —, so a new tenant's
//! first job waits at most one dispatch round behind the others, whatever backlog they
//! hold. When nobody is ready, every remembered pass is forgotten (nobody is owed
//! anything). Choosing costs `O(log n)` in the number of ready tenants (one `ZRANGE 0 0`
//! and one `ZADD`), not a scan; it writes nothing but the chosen tenant's pass.
//!
//! A tenant leaves the ready set (`park`) when its stream has nothing to take or it is
//! at its running-jobs cap; whoever changes that puts it back (`add`): the gateway on
//! enqueue, a worker when it releases a lease or promotes a retry. To close the window
//! between "nothing to take" and "park", the worker that parks looks once more
//! afterwards (see `JobQueue::next_delivery`).
//!
//! Leases: each running conversion holds one in its tenant's `running` zset (the cap
//! counts them) and one in `SCHED_LEASES`, both with an expiry the worker's heartbeat
//! pushes forward. A worker that dies stops pushing: `sweep_leases` finds expired leases
//! in `O(log n + k)` and puts their tenants back in the ready set, where the next `TAKE`
//! drops the dead lease and claims the entry.
//!
//! All keys here share the hash tag `{~sched}`: each script touches one Cluster slot.

use std::time::Duration;

use crate::Pool;
use redis::AsyncCommands;

use crate::lua;

use crate::keys::{
    NOTIFY_READY, NOTIFY_WAKE, SCHED_LEASES, SCHED_PASS, SCHED_READY, SCHED_RETRIES, SCHED_STRIDE,
    SCHED_WAKE,
};

/// The stride of weight 1.
pub const STRIDE_ONE: u64 = 1 << 20;
/// Highest weight a tenant may have.
pub const MAX_WEIGHT: u32 = 1000;
/// Wake-up tokens kept (up to twice as many between trims). A token wakes a reader
/// blocked on the list at once; one left over wakes a reader that blocks later, which
/// looks once more for nothing, so few are kept: enough for the readers that may be
/// about to block when work arrives (a reader looks for work before it blocks).
const WAKE_CAP: i64 = 8;

/// `"{tenant} {x}"` members as `(tenant, x)`.
fn split_members(members: &[String]) -> Vec<(String, String)> {
    members
        .iter()
        .filter_map(|m| m.split_once(' '))
        .map(|(t, x)| (t.to_owned(), x.to_owned()))
        .collect()
}

/// A lease in `SCHED_LEASES`: which tenant, which entry.
pub fn lease_member(tenant: &str, entry_id: &str) -> String {
    format!("{tenant} {entry_id}")
}

/// A tenant [`Scheduler::pick_charged`] chose, and the stride its pass advanced by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Picked {
    pub tenant: String,
    pub stride: u64,
}

/// The dispatcher's Redis state; cheap to clone.
#[derive(Clone)]
pub struct Scheduler {
    pool: Pool,
}

impl Scheduler {
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }

    async fn conn(&self) -> redis::RedisResult<crate::Connection> {
        self.pool.get().await.map_err(crate::pool_error)
    }

    /// Makes `tenant` ready; `wake` leaves a token for an idle worker even if it already
    /// was (a new job: one more worker may start).
    pub async fn add(&self, tenant: &str, wake: bool) -> redis::RedisResult<bool> {
        let mut conn = self.conn().await?;
        let added: i64 = lua::SCHED_ADD
            .call()
            .key("ready", SCHED_READY)
            .key("pass", SCHED_PASS)
            .key("wake", SCHED_WAKE)
            .arg("tenant", tenant)
            .arg("always", if wake { "1" } else { "0" })
            .arg("cap", WAKE_CAP)
            .invoke(&mut conn)
            .await?;
        Ok(added == 1)
    }

    /// The next tenant to dispatch from, if any is ready.
    pub async fn pick(&self) -> redis::RedisResult<Option<String>> {
        Ok(self.pick_charged().await?.map(|p| p.tenant))
    }

    /// [`pick`](Self::pick), with the stride it charged the tenant (what
    /// [`park_picked`](Self::park_picked) gives back).
    pub async fn pick_charged(&self) -> redis::RedisResult<Option<Picked>> {
        let mut conn = self.conn().await?;
        let picked: Option<(String, u64)> = lua::SCHED_PICK
            .call()
            .key("ready", SCHED_READY)
            .key("stride", SCHED_STRIDE)
            .arg("default_stride", STRIDE_ONE)
            .invoke(&mut conn)
            .await?;
        Ok(picked.map(|(tenant, stride)| Picked { tenant, stride }))
    }

    /// Takes `tenant` out of the ready set (nothing to take, or at its cap).
    pub async fn park(&self, tenant: &str) -> redis::RedisResult<()> {
        self.park_with(tenant, "").await
    }

    /// [`park`](Self::park) for a tenant just picked, with the stride the pick charged
    /// it (no second read of its stride).
    pub async fn park_picked(&self, picked: &Picked) -> redis::RedisResult<()> {
        self.park_with(&picked.tenant, &picked.stride.to_string())
            .await
    }

    async fn park_with(&self, tenant: &str, stride: &str) -> redis::RedisResult<()> {
        let mut conn = self.conn().await?;
        let _: i64 = lua::SCHED_PARK
            .call()
            .key("ready", SCHED_READY)
            .key("pass", SCHED_PASS)
            .key("stride", SCHED_STRIDE)
            .arg("tenant", tenant)
            .arg("stride", stride)
            .arg("default_stride", STRIDE_ONE)
            .invoke(&mut conn)
            .await?;
        Ok(())
    }

    /// Waits up to `timeout` for a wake-up token (new work somewhere), on a dedicated
    /// connection (`Pool::blpop`).
    pub async fn wait(&self, timeout: Duration) -> redis::RedisResult<bool> {
        Ok(self.pool.blpop(SCHED_WAKE, timeout).await?.is_some())
    }

    /// Sets a tenant's weight (1..=`MAX_WEIGHT`).
    pub async fn set_weight(&self, tenant: &str, weight: u32) -> redis::RedisResult<()> {
        let mut conn = self.conn().await?;
        let stride = STRIDE_ONE / u64::from(weight.clamp(1, MAX_WEIGHT));
        let _: () = conn.hset(SCHED_STRIDE, tenant, stride).await?;
        Ok(())
    }

    /// Records (or extends) a running conversion's lease until `expires_ms`.
    pub async fn lease(
        &self,
        tenant: &str,
        entry_id: &str,
        expires_ms: u64,
    ) -> redis::RedisResult<()> {
        let mut conn = self.conn().await?;
        let _: () = conn
            .zadd(SCHED_LEASES, lease_member(tenant, entry_id), expires_ms)
            .await?;
        Ok(())
    }

    /// A conversion ended: drops its lease; with `readd` (it counted against a
    /// running-jobs cap, see `Delivery::capped`) lets the tenant be dispatched again;
    /// with `notify`, tells the notifiers that the tenant has a new notify entry; then
    /// picks the next tenant for the worker slot that ran it
    /// ([`pick_charged`](Self::pick_charged)), `None` when no tenant is ready. One script.
    pub async fn finish(
        &self,
        tenant: &str,
        entry_id: &str,
        notify: bool,
        readd: bool,
    ) -> redis::RedisResult<Option<Picked>> {
        let mut conn = self.conn().await?;
        let picked: Option<(String, u64)> = lua::SCHED_FINISH
            .call()
            .key("leases", SCHED_LEASES)
            .key("ready", SCHED_READY)
            .key("pass", SCHED_PASS)
            .key("wake", SCHED_WAKE)
            .key("notify_ready", NOTIFY_READY)
            .key("notify_wake", NOTIFY_WAKE)
            .key("stride", SCHED_STRIDE)
            .arg("lease", lease_member(tenant, entry_id))
            .arg("tenant", tenant)
            .arg("notify", if notify { "1" } else { "0" })
            .arg("readd", if readd { "1" } else { "0" })
            .arg("cap", WAKE_CAP)
            .arg("default_stride", STRIDE_ONE)
            .invoke(&mut conn)
            .await?;
        Ok(picked.map(|(tenant, stride)| Picked { tenant, stride }))
    }

    /// Up to `limit` leases that expired before `now_ms`: `(tenant, entry id)`.
    pub async fn expired_leases(
        &self,
        now_ms: u64,
        limit: usize,
    ) -> redis::RedisResult<Vec<(String, String)>> {
        Ok(split_members(&self.due(SCHED_LEASES, now_ms, limit).await?))
    }

    /// Members of the `"{tenant} {x}"` zset `key` scored up to `now_ms`, at most `limit`.
    async fn due(&self, key: &str, now_ms: u64, limit: usize) -> redis::RedisResult<Vec<String>> {
        let mut conn = self.conn().await?;
        conn.zrangebyscore_limit(key, "-inf", now_ms, 0, limit as isize)
            .await
    }

    /// Forgets a lease without touching the ready set.
    pub async fn forget_lease(&self, tenant: &str, entry_id: &str) -> redis::RedisResult<()> {
        let mut conn = self.conn().await?;
        let _: () = conn
            .zrem(SCHED_LEASES, lease_member(tenant, entry_id))
            .await?;
        Ok(())
    }

    /// Schedules a retry of `job` at `due_ms`.
    pub async fn add_retry(&self, tenant: &str, job: &str, due_ms: u64) -> redis::RedisResult<()> {
        let mut conn = self.conn().await?;
        let _: () = conn
            .zadd(SCHED_RETRIES, format!("{tenant} {job}"), due_ms)
            .await?;
        Ok(())
    }

    /// Drops a scheduled retry (the job was deleted).
    pub async fn drop_retry(&self, tenant: &str, job: &str) -> redis::RedisResult<()> {
        let mut conn = self.conn().await?;
        let _: () = conn.zrem(SCHED_RETRIES, format!("{tenant} {job}")).await?;
        Ok(())
    }

    /// Up to `limit` retries due by `now_ms`, removed from the set: `(tenant, job)`.
    pub async fn take_due_retries(
        &self,
        now_ms: u64,
        limit: usize,
    ) -> redis::RedisResult<Vec<(String, String)>> {
        let members = self.due(SCHED_RETRIES, now_ms, limit).await?;
        if !members.is_empty() {
            let _: () = self.conn().await?.zrem(SCHED_RETRIES, &members).await?;
        }
        Ok(split_members(&members))
    }

    /// When the next retry is due after `now_ms` (unix ms), if any is scheduled.
    pub async fn next_retry_after(&self, now_ms: u64) -> redis::RedisResult<Option<u64>> {
        let mut conn = self.conn().await?;
        let next: Vec<(String, u64)> = conn
            .zrangebyscore_limit_withscores(SCHED_RETRIES, format!("({now_ms}"), "+inf", 0, 1)
            .await?;
        Ok(next.first().map(|(_, due)| *due))
    }

    /// Removes every trace of a tenant from the scheduler.
    pub async fn forget_tenant(&self, tenant: &str) -> redis::RedisResult<()> {
        let mut conn = self.conn().await?;
        redis::pipe()
            .atomic()
            .zrem(SCHED_READY, tenant)
            .ignore()
            .hdel(SCHED_PASS, tenant)
            .ignore()
            .hdel(SCHED_STRIDE, tenant)
            .ignore()
            .srem(NOTIFY_READY, tenant)
            .ignore()
            .query_async::<()>(&mut conn)
            .await
    }
}
