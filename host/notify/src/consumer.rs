//! The consumer group `notifiers` on each tenant's notify stream (`td:{T}:notify`): one
//! notification per finished job. Workers add a tenant to `NOTIFY_READY` (and leave a
//! wake-up token) when they write an entry; a notifier reads the ready tenants in turn
//! and drops a tenant from the set once its stream has nothing new or pending, looking
//! once more afterwards so an entry written meanwhile is not stranded.
//!
//! For each entry:
//! 1. The *plan* — the messages the component queued — is computed once and stored in
//!    the entry's delivery record (`td:{T}:notify:delivery:{entry}`), so a redelivered entry
//!    (after a crash, via `XAUTOCLAIM`) sends the same messages, not newly composed ones.
//! 2. The tenant's hourly cap admits a number of the plan's messages once per entry (a
//!    Lua script); the rest are dead-lettered with the reason.
//! 3. Each message is delivered with retries (exponential backoff with jitter); success
//!    or a dead letter is written to the delivery record as `msg:{i}` = `sent`/`dead`, and
//!    a message already marked is never sent again. The plan's last message, once sent,
//!    is recorded by acknowledging the entry (step 4) instead: an acknowledged entry is
//!    never delivered again, so a `sent` mark would be one more write for nothing.
//! 4. The entry is acknowledged only when every message is sent or dead-lettered.
//!
//! While an entry is worked on, its idle time is reset every third of the visibility
//! timeout; if another consumer took it over meanwhile, this one stops.
//!
//! After a crash: consumers are named `notifier-{hostname}-{pid}`, and a notifier
//! starting on a host first takes over (`XCLAIM` with the idle time it saw, so two
//! restarted processes cannot both take one) the pending entries of that host's notifiers
//! whose process is gone, as the conversion workers do: their notifications go out at
//! once, not after the visibility timeout.
//!
//! Duplicates: the delivery record (in the tenant's slot, kept 7 days) says `sent` for a
//! message before its entry is acknowledged, and is read before anything is sent, so a
//! message is sent again only if the process dies in the moment between the server
//! accepting it and `msg:{i}` being written. A Redis outage in that moment does not
//! widen it: writing `sent` is retried until Redis is back (or the process stops). SMTP
//! offers no way to close the last window; the Message-ID and the webhook's
//! `X-Tapedeck-Delivery` (both the notification id) let receivers drop the copy.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use redis::streams::StreamId;
use tapedeck_store::Pool;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::mail::Mailer;
use super::webhook::WebhookClient;
use super::{DeliveryError, NotifierConfig, NotifyError};
use tapedeck_model::backoff::Backoff;
use tapedeck_model::logs::Throttled;
use tapedeck_model::net::AddressPolicy;
use tapedeck_model::notify::{Channels, Composer, FinalStatus, JobEvent, Outgoing, SendPolicy};
use tapedeck_model::stage::Stage;
use tapedeck_store::keys::{NOTIFY_READY, NOTIFY_WAKE, TENANTS, job_key, notify_stream};
use tapedeck_store::links::LinkSigner;
use tapedeck_store::notify_settings::{self as settings, TenantNotifySettings};
use tapedeck_store::queue::now_ms;
use tapedeck_store::streams::Group;

/// The consumer group of notifier processes on each tenant's `td:{T}:notify`.
pub const GROUP: &str = "notifiers";
/// A tenant's notifications (or single messages) that could not be delivered, with the
/// reason.
pub use tapedeck_store::keys::notify_dead_key;
/// How long a delivery record outlives its notification.
const RECORD_TTL_SECS: u64 = 7 * 24 * 3600;
/// Entries read or claimed per round.
const BATCH: usize = 16;

/// The delivery record of one notify entry.
pub use tapedeck_store::keys::delivery_key;
use tapedeck_store::keys::rate_key;

/// The `notifiers` group on a tenant's notify stream.
fn notifiers(stream: &str) -> Group<'_> {
    Group {
        stream,
        name: GROUP,
    }
}

/// Where the time goes, for benchmarks and metrics. All counters only grow.
#[derive(Debug, Default)]
pub struct NotifierStats {
    /// Notifications acknowledged.
    pub notifications: AtomicU64,
    /// Messages delivered.
    pub sent: AtomicU64,
    /// Messages (or whole notifications) dead-lettered.
    pub dead: AtomicU64,
    /// Delivery attempts that failed and were retried.
    pub retries: AtomicU64,
    /// Time inside the notifier component (instantiate + `notify`), nanoseconds.
    pub wasm_nanos: AtomicU64,
    /// Time in SMTP/HTTP delivery attempts, nanoseconds.
    pub delivery_nanos: AtomicU64,
}

/// One notifier process's part of the consumer group.
#[derive(Clone)]
pub struct NotifyConsumer {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    /// The download links' key, read from Redis on first use.
    signer: tokio::sync::OnceCell<LinkSigner>,
    /// Resolved per notification: the component composing for its tenant now.
    composer: Stage<dyn Composer>,
    config: NotifierConfig,
    mailer: Mailer,
    webhooks: WebhookClient,
    stats: Arc<NotifierStats>,
    /// Streams whose group this process has created.
    ensured: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Where the next round over the ready tenants starts.
    cursor: AtomicU64,
    /// When this process last trimmed each notify stream (at most every [`TRIM_EVERY`]).
    trimmed: std::sync::Mutex<HashMap<String, Instant>>,
    /// When this process last looked for abandoned entries of each tenant (at most every
    /// [`CLAIM_EVERY`]).
    claimed: std::sync::Mutex<HashMap<String, Instant>>,
}

/// How often a notifier trims a notify stream: its acknowledged entries wait this long
/// at most (a trim is four commands; once per notification it was most of the cost).
const TRIM_EVERY: Duration = Duration::from_secs(5);
/// How often a notifier looks for a tenant's entries abandoned past the visibility
/// timeout (besides at start, where a dead notifier's are taken over at once).
const CLAIM_EVERY: Duration = Duration::from_secs(1);
/// How long an idle notifier's wait for a wake-up token blocks before it looks at the
/// streams again (new entries wake it at once).
const IDLE_WAIT: Duration = Duration::from_secs(5);
/// A notifier woken by a token naming a tenant reads that tenant alone, but reads every
/// ready tenant (`NOTIFY_READY`) at least this often: tokens are capped, so one may be
/// lost.
const FULL_ROUND_EVERY: Duration = Duration::from_secs(1);

/// How a sent message is recorded, so that it is never sent again.
#[derive(Clone, Copy)]
enum Sent<'a> {
    /// `msg:{i}` = `sent` in the entry's delivery record.
    Mark { record: &'a str, field: &'a str },
    /// The plan's last message: the entry's acknowledgement itself (an acknowledged
    /// entry is never delivered again; a mark would be one more write for nothing).
    Ack { stream: &'a str, entry_id: &'a str },
}

/// An entry this consumer now holds.
struct Taken {
    tenant: String,
    entry: StreamId,
    /// Read for the first time (`XREADGROUP >`): no consumer had it before, so it has
    /// no delivery record.
    fresh: bool,
}

/// Why work on one entry stopped before it was acknowledged.
enum Interrupted {
    /// Redis failed; the entry stays pending and is retried later.
    Redis(NotifyError),
    /// Shutting down, or another consumer took the entry over.
    Stopped,
}

impl From<NotifyError> for Interrupted {
    fn from(e: NotifyError) -> Self {
        Self::Redis(e)
    }
}
impl From<tapedeck_store::notify_settings::SettingsError> for Interrupted {
    fn from(e: tapedeck_store::notify_settings::SettingsError) -> Self {
        Self::Redis(e.into())
    }
}
impl From<redis::RedisError> for Interrupted {
    fn from(e: redis::RedisError) -> Self {
        Self::Redis(e.into())
    }
}
impl From<tapedeck_store::PoolError> for Interrupted {
    fn from(e: tapedeck_store::PoolError) -> Self {
        Self::Redis(e.into())
    }
}

impl NotifyConsumer {
    pub fn new(
        pool: Pool,
        composer: impl Into<Stage<dyn Composer>>,
        config: NotifierConfig,
    ) -> Result<Self, NotifyError> {
        let mailer = match &config.smtp_url {
            Some(url) => Mailer::smtp(url, &config.mail_from, config.smtp_timeout)?,
            None => Mailer::outbox(config.outbox.clone(), &config.mail_from)?,
        };
        let webhooks = WebhookClient::new(
            AddressPolicy::new(config.webhook_allow.clone()),
            config.webhook_timeout,
        );
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                signer: tokio::sync::OnceCell::new(),
                composer: composer.into(),
                config,
                mailer,
                webhooks,
                stats: Arc::default(),
                ensured: Default::default(),
                cursor: AtomicU64::new(0),
                trimmed: Default::default(),
                claimed: Default::default(),
            }),
        })
    }

    pub fn stats(&self) -> Arc<NotifierStats> {
        self.inner.stats.clone()
    }

    /// Creates the consumer group on `tenant`'s notify stream (reading it from its start)
    /// if this process has not yet. False when the stream does not exist (nothing was
    /// ever written, or the tenant was deleted): never creates it.
    async fn ensure_group(&self, tenant: &str) -> Result<bool, NotifyError> {
        let stream = notify_stream(tenant);
        let known = self
            .inner
            .ensured
            .lock()
            .expect("lock is never poisoned")
            .contains(&stream);
        if !known {
            let mut conn = self.inner.pool.get().await?;
            if !notifiers(&stream).ensure_existing(&mut conn, "0").await? {
                return Ok(false);
            }
            self.inner
                .ensured
                .lock()
                .expect("lock is never poisoned")
                .insert(stream);
        }
        Ok(true)
    }

    /// Forgets that `tenant`'s group exists (its stream was deleted).
    fn forget_group(&self, tenant: &str) {
        self.inner
            .ensured
            .lock()
            .expect("lock is never poisoned")
            .remove(&notify_stream(tenant));
    }

    /// Marks every tenant as possibly having notifications (a start: heals a tenant
    /// left out by a crash between a worker's two steps).
    pub async fn seed_ready(&self) -> Result<(), NotifyError> {
        let mut conn = self.inner.pool.get().await?;
        let tenants: Vec<String> = conn.smembers(TENANTS).await?;
        if !tenants.is_empty() {
            let _: () = conn.sadd(NOTIFY_READY, &tenants).await?;
        }
        Ok(())
    }

    /// Reads and handles entries until `shutdown` is cancelled, then waits for the
    /// entries in hand to stop.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), NotifyError> {
        // While Redis is down every read fails at once: wait longer each time, log once
        // in a while.
        let mut backoff = Backoff::new(
            Duration::from_millis(500),
            Duration::from_secs(5),
            Duration::ZERO,
        );
        let warnings = Throttled::default();
        let mut first = loop {
            let started = async {
                self.seed_ready().await?;
                self.take_over_dead().await
            };
            match started.await {
                Ok(entries) => break entries,
                Err(e) => tapedeck_model::warn_throttled!(warnings, "notifier: could not start", e),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(backoff.failed()) => {}
            }
        };
        backoff.succeeded();
        let slots = Arc::new(Semaphore::new(self.inner.config.concurrency.max(1)));
        // The tenant the last wake-up token named (workers name the tenant whose notify
        // entry they wrote), and when every ready tenant was last read.
        let mut named: Option<String> = None;
        let mut last_full = Instant::now();
        let mut tasks = JoinSet::new();
        tracing::info!(consumer = %self.inner.config.consumer, "notifier started");
        while !shutdown.is_cancelled() {
            while tasks.try_join_next().is_some() {}
            let free = slots.available_permits().min(BATCH);
            let mut failed = None;
            let (entries, drained) = if !first.is_empty() {
                (std::mem::take(&mut first), false)
            } else if free == 0 {
                (Vec::new(), false)
            } else {
                // The tenant the last wake-up token named, unless a full round is due.
                let only = named
                    .take()
                    .filter(|_| last_full.elapsed() < FULL_ROUND_EVERY);
                if only.is_none() {
                    last_full = Instant::now();
                }
                match self.next_entries(free, only.as_deref()).await {
                    Ok(read) => {
                        backoff.succeeded();
                        read
                    }
                    Err(e) => {
                        tapedeck_model::warn_throttled!(
                            warnings,
                            "notifier: reading the notify streams failed",
                            e
                        );
                        failed = Some(backoff.failed());
                        (Vec::new(), false)
                    }
                }
            };
            let idle = entries.is_empty();
            for taken in entries {
                let permit = slots
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("the semaphore is never closed");
                let this = self.clone();
                let stop = shutdown.child_token();
                tasks.spawn(async move {
                    this.handle(taken, stop).await;
                    drop(permit);
                });
            }
            // Read everything there was: the next entry comes with a worker's wake-up
            // token (left after its entry was written), so wait for one instead of asking
            // the streams again at once.
            if idle || drained {
                let wait = self
                    .inner
                    .config
                    .poll_interval
                    .min(Duration::from_millis(400));
                let warnings = &warnings;
                let woken = async {
                    if let Some(pause) = failed {
                        tokio::time::sleep(pause).await;
                        return None;
                    }
                    if free == 0 {
                        tokio::time::sleep(wait).await;
                        return None;
                    }
                    // A dedicated connection: a blocking read would hold up every
                    // other command on the shared one.
                    match self.inner.pool.blpop(NOTIFY_WAKE, IDLE_WAIT).await {
                        Ok(token) => token.filter(|t| t != "1"),
                        Err(e) => {
                            tapedeck_model::warn_throttled!(
                                warnings,
                                "notifier: waiting for work failed",
                                e
                            );
                            tokio::time::sleep(wait).await;
                            None
                        }
                    }
                };
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    token = woken => named = token,
                }
            }
        }
        while tasks.join_next().await.is_some() {}
        tracing::info!("notifier stopped");
        Ok(())
    }

    /// The pending entries of this host's notifiers whose process is gone, now this
    /// consumer's (see the module doc, "After a crash").
    async fn take_over_dead(&self) -> Result<Vec<Taken>, NotifyError> {
        let me = &self.inner.config.consumer;
        let mut conn = self.inner.pool.get().await?;
        let mut tenants: Vec<String> = conn.smembers(TENANTS).await?;
        tenants.sort();
        let mut taken = Vec::new();
        for tenant in tenants {
            let stream = notify_stream(&tenant);
            let group = notifiers(&stream);
            for tapedeck_store::streams::Pending {
                entry_id,
                consumer,
                idle_ms,
            } in group.pending(&mut conn, 1000).await?
            {
                if consumer == *me || !gone_from_this_host(&consumer) {
                    continue;
                }
                let claimed: redis::streams::StreamClaimReply = redis::cmd("XCLAIM")
                    .arg(&stream)
                    .arg(GROUP)
                    .arg(me)
                    .arg(idle_ms)
                    .arg(&entry_id)
                    .query_async(&mut conn)
                    .await?;
                for entry in claimed.ids {
                    tracing::info!(
                        tenant,
                        entry = %entry.id,
                        from = consumer,
                        "notifier: took over a notification of a stopped notifier on this host"
                    );
                    taken.push(Taken {
                        tenant: tenant.clone(),
                        entry,
                        fresh: false,
                    });
                }
            }
        }
        Ok(taken)
    }

    /// Up to `count` entries of the ready tenants, taken in turn: for each, entries
    /// abandoned by a dead consumer first, then new ones. A tenant with nothing new and
    /// nothing pending leaves the ready set (and is read once more, in case a worker
    /// added an entry in between). Also says whether every ready tenant was read to its
    /// end (fewer entries than asked for): then nothing is left to read until a worker's
    /// wake-up token says so.
    /// `only`: read this tenant alone (a wake-up token named it), not every ready one.
    async fn next_entries(
        &self,
        count: usize,
        only: Option<&str>,
    ) -> Result<(Vec<Taken>, bool), NotifyError> {
        let config = &self.inner.config;
        let mut tenants: Vec<String> = match only {
            Some(tenant) => vec![tenant.to_owned()],
            None => self.inner.pool.get().await?.smembers(NOTIFY_READY).await?,
        };
        tenants.sort();
        if tenants.is_empty() {
            return Ok((Vec::new(), true));
        }
        let start = self.inner.cursor.fetch_add(1, Ordering::Relaxed) as usize;
        let mut found = Vec::new();
        fn taken(tenant: &str, entries: Vec<StreamId>, fresh: bool) -> Vec<Taken> {
            entries
                .into_iter()
                .map(|entry| Taken {
                    tenant: tenant.to_owned(),
                    entry,
                    fresh,
                })
                .collect()
        }
        for i in 0..tenants.len() {
            if found.len() >= count {
                break;
            }
            let tenant = &tenants[(start + i) % tenants.len()];
            let mut conn = self.inner.pool.get().await?;
            if !self.ensure_group(tenant).await? {
                let _: () = conn.srem(NOTIFY_READY, tenant).await?;
                continue;
            }
            let stream = notify_stream(tenant);
            let group = notifiers(&stream);
            let claim = {
                let mut claimed = self.inner.claimed.lock().expect("lock is never poisoned");
                let due = claimed
                    .get(tenant)
                    .is_none_or(|at| at.elapsed() >= CLAIM_EVERY);
                if due {
                    claimed.insert(tenant.clone(), Instant::now());
                }
                due
            };
            let read = if claim {
                group
                    .claim_or_read(
                        &mut conn,
                        &config.consumer,
                        config.visibility_timeout,
                        count - found.len(),
                    )
                    .await
            } else {
                group
                    .read_new(&mut conn, &config.consumer, count - found.len())
                    .await
                    .map(|entries| (entries, false))
            };
            let (entries, taken_over) = match read {
                Ok(read) => read,
                Err(e) if e.code() == Some("NOGROUP") => {
                    // Deleted since (a tenant deletion): look again next round.
                    self.forget_group(tenant);
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            if taken_over {
                tracing::info!(
                    tenant,
                    n = entries.len(),
                    "notifier: took over abandoned notifications"
                );
                // There may be more abandoned ones, or new ones behind them.
                found.extend(taken(tenant, entries, false));
                return Ok((found, false));
            }
            if entries.is_empty() {
                let pending: (u64,) = redis::cmd("XPENDING")
                    .arg(&stream)
                    .arg(GROUP)
                    .query_async::<(u64, redis::Value, redis::Value, redis::Value)>(&mut conn)
                    .await
                    .map(|p| (p.0,))?;
                if pending.0 == 0 {
                    let _: () = conn.srem(NOTIFY_READY, tenant).await?;
                    let again = group
                        .read_new(&mut conn, &config.consumer, count - found.len())
                        .await?;
                    if !again.is_empty() {
                        let _: () = conn.sadd(NOTIFY_READY, tenant).await?;
                    }
                    found.extend(taken(tenant, again, true));
                }
                continue;
            }
            found.extend(taken(tenant, entries, true));
        }
        let drained = found.len() < count;
        Ok((found, drained))
    }

    /// Handles one entry while heart-beating it; logs instead of failing (the entry stays
    /// pending and comes back).
    async fn handle(
        &self,
        Taken {
            tenant,
            entry,
            fresh,
        }: Taken,
        stop: CancellationToken,
    ) {
        let tenant = tenant.as_str();
        let id = entry.id.clone();
        let mut fields: HashMap<String, String> = entry
            .map
            .iter()
            .filter_map(|(k, v)| {
                redis::from_redis_value::<String>(v.clone())
                    .ok()
                    .map(|v| (k.clone(), v))
            })
            .collect();
        // The stream says whose notification this is, whatever the entry claims.
        fields.insert("tenant".into(), tenant.to_owned());
        let work = self.deliver_entry(tenant, &id, &fields, fresh, &stop);
        let result = tokio::select! {
            result = work => result,
            () = self.keep_alive(tenant, &id) => Err(Interrupted::Stopped),
        };
        match result {
            Ok(()) => {}
            Err(Interrupted::Stopped) => tracing::info!(entry = %id, "notification left pending"),
            Err(Interrupted::Redis(e)) => {
                tracing::warn!(entry = %id, "notification left pending: {e}")
            }
        }
    }

    /// Returns when the entry is no longer ours (or Redis keeps failing).
    async fn keep_alive(&self, tenant: &str, entry_id: &str) {
        let stream = notify_stream(tenant);
        let every = self.inner.config.visibility_timeout / 3;
        loop {
            tokio::time::sleep(every).await;
            let ours = async {
                let mut conn = self.inner.pool.get().await?;
                let ours = notifiers(&stream)
                    .heartbeat(&mut conn, &self.inner.config.consumer, entry_id)
                    .await?;
                Ok::<_, NotifyError>(ours)
            }
            .await;
            match ours {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(
                        entry = entry_id,
                        "another notifier took this notification over"
                    );
                    return;
                }
                Err(e) => tracing::warn!(entry = entry_id, "notifier heartbeat failed: {e}"),
            }
        }
    }

    /// Steps 1–4 of the module doc for one entry.
    async fn deliver_entry(
        &self,
        tenant: &str,
        entry_id: &str,
        fields: &HashMap<String, String>,
        fresh: bool,
        stop: &CancellationToken,
    ) -> Result<(), Interrupted> {
        let inner = &self.inner;
        let record = delivery_key(tenant, entry_id);
        let stream = notify_stream(tenant);
        // Connections are taken per step, never held across a delivery: a slow SMTP
        // server must not starve the pool.
        let mut conn = inner.pool.get().await?;
        let tenant = tenant.to_owned();
        let job = fields.get("job").cloned().unwrap_or_default();
        // An entry read for the first time (`XREADGROUP >`) has no delivery record yet:
        // only one delivered before (claimed from a dead or slow consumer) is looked up.
        let state: HashMap<String, String> = if fresh {
            HashMap::new()
        } else {
            conn.hgetall(&record).await?
        };
        drop(conn);
        let settings = settings::load_cached(&inner.pool, &tenant).await?;
        let stored: Option<Vec<Outgoing>> =
            state.get("plan").and_then(|p| serde_json::from_str(p).ok());
        let plan = match stored {
            Some(plan) => plan,
            None => self.compose(entry_id, fields, &settings).await?,
        };
        // Layered: the server default, the operator's tenant limit
        // (`notifications_per_hour`), the tenant admin's own setting; the smallest wins.
        let operator_cap = tapedeck_store::tenants::load_cached(&inner.pool, &tenant)
            .await?
            .and_then(|t| t.limits.notifications_per_hour)
            .map_or(u32::MAX, |n| u32::try_from(n).unwrap_or(u32::MAX));
        let cap = settings
            .max_per_hour
            .unwrap_or(inner.config.default_max_per_hour)
            .min(inner.config.default_max_per_hour)
            .min(operator_cap);
        let hour = now_ms() / 3_600_000;
        let json = serde_json::to_string(&plan).expect("messages serialize to JSON");
        let mut conn = inner.pool.get().await?;
        let (admitted, theirs): (usize, String) = tapedeck_store::lua::NOTIFY_PLAN
            .call()
            .key("record", &record)
            .key("rate", rate_key(&tenant, hour))
            .arg("plan", &json)
            .arg("messages", plan.len())
            .arg("cap", cap)
            .arg("record_ttl", RECORD_TTL_SECS)
            .arg("rate_ttl", 2 * 3600)
            .arg("fresh", if fresh { "1" } else { "0" })
            .invoke(&mut conn)
            .await?;
        // Another consumer planned first: deliver its plan.
        let plan: Vec<Outgoing> = if theirs.is_empty() {
            plan
        } else {
            serde_json::from_str(&theirs).unwrap_or_default()
        };
        drop(conn);
        // Whether the entry is acknowledged already (by the last message's record).
        let mut acked = false;
        for (i, message) in plan.iter().enumerate() {
            let field = format!("msg:{i}");
            if state.contains_key(&field) {
                continue;
            }
            let message_id = format!("{tenant}.{entry_id}.{i}");
            let outcome = if i >= admitted {
                Err((
                    format!("over the tenant's cap of {cap} messages per hour"),
                    0,
                ))
            } else {
                self.deliver_with_retries(&message_id, message, &settings, stop)
                    .await?
            };
            let channel = match message {
                Outgoing::Mail(_) => "mail",
                Outgoing::Webhook(_) => "webhook",
            };
            metrics::counter!(
                "tapedeck_notifications_total",
                "channel" => channel,
                "outcome" => if outcome.is_ok() { "delivered" } else { "failed" }
            )
            .increment(1);
            match outcome {
                Ok(()) => {
                    inner.stats.sent.fetch_add(1, Ordering::Relaxed);
                    // Recorded whatever it takes: unrecorded, it would be sent again. The
                    // last message's record is the acknowledgement itself (an acknowledged
                    // entry is never delivered again): one command, not two.
                    let last = i + 1 == plan.len();
                    let sent = if last {
                        Sent::Ack {
                            stream: &stream,
                            entry_id,
                        }
                    } else {
                        Sent::Mark {
                            record: &record,
                            field: &field,
                        }
                    };
                    self.record_sent(sent, stop).await?;
                    acked = last;
                }
                Err((reason, attempts)) => {
                    let mut conn = inner.pool.get().await?;
                    tracing::warn!(entry = entry_id, %job, %tenant, "notification message dead-lettered: {reason}");
                    let payload =
                        serde_json::to_string(message).expect("messages serialize to JSON");
                    self.dead_letter(
                        &mut conn,
                        entry_id,
                        &job,
                        &tenant,
                        &reason,
                        attempts,
                        Some(&payload),
                    )
                    .await?;
                    // The last message's mark would be followed by the ack at once (and
                    // a plan of one message has no record to mark).
                    if i + 1 < plan.len() {
                        let _: () = conn.hset(&record, &field, "dead").await?;
                    }
                }
            }
        }
        let mut conn = inner.pool.get().await?;
        if !acked {
            notifiers(&stream).ack(&mut conn, entry_id).await?;
        }
        // The group `notifiers` exists (run() made it), so this never drops an entry
        // that is pending or not yet read.
        let trim = {
            let mut trimmed = inner.trimmed.lock().expect("lock is never poisoned");
            let due = trimmed
                .get(&stream)
                .is_none_or(|at| at.elapsed() >= TRIM_EVERY);
            if due {
                trimmed.insert(stream.clone(), Instant::now());
            }
            due
        };
        if trim {
            tapedeck_store::queue::trim_stream(&mut conn, &stream).await?;
        }
        inner.stats.notifications.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Records a sent message (see [`Sent`]), trying again with backoff while Redis cannot
    /// be reached (a restart, a failover) until it can, or until `stop`.
    async fn record_sent(
        &self,
        sent: Sent<'_>,
        stop: &CancellationToken,
    ) -> Result<(), Interrupted> {
        let mut backoff = Backoff::redis();
        let warnings = Throttled::default();
        loop {
            let written = async {
                let mut conn = self.inner.pool.get().await?;
                match sent {
                    Sent::Mark { record, field } => {
                        let _: () = conn.hset(record, field, "sent").await?;
                    }
                    Sent::Ack { stream, entry_id } => {
                        notifiers(stream).ack(&mut conn, entry_id).await?;
                    }
                }
                Ok::<_, NotifyError>(())
            }
            .await;
            match written {
                Ok(()) => return Ok(()),
                Err(e) => tapedeck_model::warn_throttled!(
                    warnings,
                    "notifier: recording a sent message waits for Redis",
                    e
                ),
            }
            tokio::select! {
                _ = stop.cancelled() => return Err(Interrupted::Stopped),
                _ = tokio::time::sleep(backoff.failed()) => {}
            }
        }
    }

    /// Runs the component for an entry. A component failure or a missing owner address
    /// is dead-lettered here (the plan then leaves that part out), never dropped.
    async fn compose(
        &self,
        entry_id: &str,
        fields: &HashMap<String, String>,
        settings: &TenantNotifySettings,
    ) -> Result<Vec<Outgoing>, Interrupted> {
        let inner = &self.inner;
        let job_id = fields.get("job").cloned().unwrap_or_default();
        let tenant = fields.get("tenant").cloned().unwrap_or_default();
        // Entries from before the pipeline copied everything fall back to the job hash.
        let complete = fields.contains_key("owner_email")
            && (fields.get("status").map(String::as_str) != Some("done")
                || fields.contains_key("output_key"));
        let job: HashMap<String, String> = if complete {
            HashMap::new()
        } else {
            inner
                .pool
                .get()
                .await?
                .hgetall(job_key(&tenant, &job_id))
                .await?
        };
        let links = self.download_links().await?;
        let event = build_event(fields, &job, &links);
        let mail_to =
            (settings.email && !event.owner_email.is_empty()).then(|| event.owner_email.clone());
        if settings.email && mail_to.is_none() {
            self.dead_letter(
                &mut inner.pool.get().await?,
                entry_id,
                &job_id,
                &tenant,
                "no e-mail: the job has no owner address",
                0,
                None,
            )
            .await?;
        }
        let webhook_url = settings.webhook_url.clone().filter(|_| settings.webhook);
        let policy = SendPolicy {
            mail_to: mail_to.clone(),
            webhook_url: webhook_url.clone(),
        };
        let channels = Channels {
            email_enabled: mail_to.is_some(),
            webhook_enabled: webhook_url.is_some(),
            webhook_url,
        };
        let (installed, canary) = inner.composer.for_job(&tenant);
        // A notifier canary runs in shadow: it composes the same event beside the
        // stable notifier, its result is judged against stable's and recorded, and only
        // stable's messages are sent (a canary that crashes costs nobody their mail).
        let shadow = canary.filter(|c| c.settings.takes(&tenant, &event.owner_email, &job_id));
        let compose = |composer: Arc<dyn Composer>| {
            let (event, channels, policy) = (event.clone(), channels.clone(), policy.clone());
            async move {
                let started = Instant::now();
                let run = tokio::task::spawn_blocking(move || {
                    composer.compose(&event, &channels, &policy)
                })
                .await
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic.into_panic()));
                (run, started.elapsed().as_millis() as u64)
            }
        };
        // The shadow composes at the same time, on another blocking thread: a canary
        // adds its record (below) to a notification's time, not a second composition.
        let shadowed = shadow.as_ref().map(|c| compose(c.installed.stage.clone()));
        let ((run, stable_ms), canary_result) =
            tokio::join!(compose(installed.stage.clone()), async {
                match shadowed {
                    Some(composing) => Some(composing.await),
                    None => None,
                }
            });
        count_run(&tenant, &installed.digest, &run);
        if let (Some(canary), Some((canary_run, canary_ms))) = (shadow, canary_result) {
            count_run(&tenant, &canary.installed.digest, &canary_run);
            if let Err(e) = &canary_run {
                tracing::info!(job = %job_id, digest = %canary.installed.digest, "notifier canary (shadow): {e}");
            }
            let judged = tapedeck_model::notify::shadow_result(&run, &canary_run);
            self.record_shadow(&canary.settings, (judged, canary_ms), (&run, stable_ms))
                .await;
        }
        match run {
            Ok(output) => {
                inner
                    .stats
                    .wasm_nanos
                    .fetch_add(output.elapsed.as_nanos() as u64, Ordering::Relaxed);
                Ok(output.messages)
            }
            Err(e) => {
                let reason = e.to_string();
                tracing::warn!(entry = entry_id, job = %job_id, "{reason}");
                self.dead_letter(
                    &mut inner.pool.get().await?,
                    entry_id,
                    &job_id,
                    &tenant,
                    &reason,
                    0,
                    None,
                )
                .await?;
                Ok(Vec::new())
            }
        }
    }

    /// Records a shadowed composition on both arms of the notifier canary and acts on
    /// its analysis (a breach rolls it back). Redis trouble only costs the record.
    async fn record_shadow(
        &self,
        settings: &tapedeck_model::canary::CanarySettings,
        (canary, canary_ms): (tapedeck_model::canary::RunResult, u64),
        (stable, stable_ms): (
            &Result<tapedeck_model::notify::Composed, tapedeck_model::notify::ComposeError>,
            u64,
        ),
    ) {
        use tapedeck_store::canary::{self, Outcome, RunResult};
        let pool = &self.inner.pool;
        let stable = match stable {
            Err(tapedeck_model::notify::ComposeError::Failed(_)) => RunResult::Fail,
            _ => RunResult::Ok,
        };
        for (arm, result, ms) in [("canary", canary, canary_ms), ("stable", stable, stable_ms)] {
            if let Err(e) = canary::record(pool, settings, arm, Outcome { result, ms }).await {
                tracing::warn!(error = %e, "notifier canary outcome not recorded");
                return;
            }
        }
        match canary::evaluate(pool, settings).await {
            Ok(Some(verdict)) => {
                tracing::warn!(digest = %settings.digest, ?verdict, "notifier canary ended by its analysis")
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "notifier canary analysis failed"),
        }
    }

    /// How to write this notification's download link: the configured public URL, or
    /// the one a gateway published; without either the entry waits (stays pending).
    async fn download_links(&self) -> Result<DownloadLinks, Interrupted> {
        let inner = &self.inner;
        let mut conn = inner.pool.get().await?;
        let base = match &inner.config.public_base_url {
            Some(url) => url.clone(),
            None => tapedeck_store::links::published_public_url(&mut conn)
                .await?
                .ok_or(NotifyError::NoPublicUrl)?,
        };
        let signer = inner
            .signer
            .get_or_try_init(|| LinkSigner::load_or_create(&mut conn))
            .await?
            .clone();
        Ok(DownloadLinks {
            base,
            signer,
            ttl: inner.config.link_ttl,
            now: now_ms() / 1000,
        })
    }

    /// Delivers one message, retrying transient failures. `Ok(Err((reason, attempts)))`
    /// when it must be dead-lettered; `Err` when stopping.
    async fn deliver_with_retries(
        &self,
        message_id: &str,
        message: &Outgoing,
        settings: &TenantNotifySettings,
        stop: &CancellationToken,
    ) -> Result<Result<(), (String, u32)>, Interrupted> {
        let inner = &self.inner;
        let max = inner.config.max_attempts.max(1);
        for attempt in 1..=max {
            let started = Instant::now();
            let result = match message {
                Outgoing::Mail(mail) => inner.mailer.send(message_id, mail).await,
                Outgoing::Webhook(hook) => match &settings.webhook_secret {
                    Some(secret) => {
                        inner
                            .webhooks
                            .post(message_id, hook, secret.as_bytes())
                            .await
                    }
                    None => Err(DeliveryError::Permanent(
                        "the tenant has no webhook secret".into(),
                    )),
                },
            };
            inner
                .stats
                .delivery_nanos
                .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
            match result {
                Ok(()) => return Ok(Ok(())),
                Err(DeliveryError::Permanent(reason)) => return Ok(Err((reason, attempt))),
                Err(DeliveryError::Transient(reason)) if attempt == max => {
                    return Ok(Err((
                        format!("gave up after {attempt} attempts: {reason}"),
                        attempt,
                    )));
                }
                Err(DeliveryError::Transient(reason)) => {
                    inner.stats.retries.fetch_add(1, Ordering::Relaxed);
                    let delay = tapedeck_store::streams::backoff(
                        inner.config.retry_base,
                        attempt,
                        inner.config.retry_max,
                    );
                    tracing::info!(
                        message = message_id,
                        attempt,
                        ?delay,
                        "delivery failed, retrying: {reason}"
                    );
                    tokio::select! {
                        _ = stop.cancelled() => return Err(Interrupted::Stopped),
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        unreachable!("the loop returns on its last attempt")
    }

    #[allow(clippy::too_many_arguments)]
    async fn dead_letter(
        &self,
        conn: &mut tapedeck_store::Connection,
        entry_id: &str,
        job: &str,
        tenant: &str,
        reason: &str,
        attempts: u32,
        message: Option<&str>,
    ) -> Result<(), Interrupted> {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(notify_dead_key(tenant))
            .arg("MAXLEN")
            .arg("~")
            .arg(100_000)
            .arg("*")
            .arg("entry")
            .arg(entry_id)
            .arg("job")
            .arg(job)
            .arg("tenant")
            .arg(tenant)
            .arg("reason")
            .arg(reason)
            .arg("attempts")
            .arg(attempts);
        if let Some(message) = message {
            cmd.arg("message").arg(message);
        }
        let _: String = cmd.query_async(conn).await?;
        self.inner.stats.dead.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// The host and pid of a notifier consumer's name (`notifier-{hostname}-{pid}`).
fn notifier_of(consumer: &str) -> Option<(&str, u32)> {
    let (host, pid) = consumer.strip_prefix("notifier-")?.rsplit_once('-')?;
    Some((host, pid.parse().ok()?))
}

/// Whether `consumer` is a notifier of this host whose process no longer runs (and is
/// not this one).
fn gone_from_this_host(consumer: &str) -> bool {
    notifier_of(consumer).is_some_and(|(host, pid)| {
        host == tapedeck_store::queue::hostname()
            && pid != std::process::id()
            && !std::path::Path::new(&format!("/proc/{pid}")).exists()
    })
}

/// What a notification's download link is made of.
struct DownloadLinks {
    base: String,
    signer: LinkSigner,
    ttl: Duration,
    /// Unix seconds.
    now: u64,
}

impl DownloadLinks {
    fn url(&self, tenant: &str, job_id: &str, output_key: &str) -> String {
        let expires = self.now.saturating_add(self.ttl.as_secs());
        self.signer
            .url(&self.base, tenant, job_id, output_key, expires)
    }
}

/// The component's event from a notify entry, falling back to the job hash for fields
/// the entry lacks.
fn build_event(
    entry: &HashMap<String, String>,
    job: &HashMap<String, String>,
    links: &DownloadLinks,
) -> JobEvent {
    let get = |k: &str| {
        entry
            .get(k)
            .filter(|v| !v.is_empty())
            .or_else(|| job.get(k).filter(|v| !v.is_empty()))
            .cloned()
    };
    let num = |k: &str| get(k).and_then(|v| v.parse::<u64>().ok());
    let job_id = get("job").or_else(|| get("id")).unwrap_or_default();
    let tenant = get("tenant").unwrap_or_default();
    let done = get("status").as_deref() == Some("done");
    JobEvent {
        owner_email: get("owner_email").unwrap_or_default(),
        tenant: get("tenant").unwrap_or_default(),
        status: if done {
            FinalStatus::Done
        } else {
            FinalStatus::Failed
        },
        input_name: get("input_name").unwrap_or_default(),
        output_bytes: num("output_bytes").filter(|_| done),
        duration_ms: num("duration_ms").filter(|_| done),
        failure_reason: if done {
            None
        } else {
            Some(get("error").unwrap_or_else(|| "unknown error".into()))
        },
        download_url: done
            .then(|| get("output_key"))
            .flatten()
            .map(|key| links.url(&tenant, &job_id, &key)),
        finished_at: num("finished_at").unwrap_or_else(|| now_ms() / 1000),
        job_id,
    }
}

/// Counts one notifier run in `tapedeck_plugin_runs_total`.
fn count_run(
    tenant: &str,
    digest: &str,
    run: &Result<tapedeck_model::notify::Composed, tapedeck_model::notify::ComposeError>,
) {
    metrics::counter!(
        "tapedeck_plugin_runs_total",
        "stage" => "notifier",
        "tenant" => tenant.to_owned(),
        "digest" => digest.to_owned(),
        "outcome" => if run.is_ok() { "ok" } else { "trap" }
    )
    .increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn notifier_names_give_their_host_and_pid() {
        assert_eq!(notifier_of("notifier-web-1-42"), Some(("web-1", 42)));
        assert_eq!(notifier_of("notifier-host-x"), None);
        // A conversion worker's consumer is not a notifier's.
        assert_eq!(notifier_of("web-1-42-0"), None);
        let me = format!(
            "notifier-{}-{}",
            tapedeck_store::queue::hostname(),
            std::process::id()
        );
        assert!(!gone_from_this_host(&me), "this process");
        let dead = format!(
            "notifier-{}-{}",
            tapedeck_store::queue::hostname(),
            u32::MAX - 1
        );
        assert!(gone_from_this_host(&dead));
        assert!(!gone_from_this_host("notifier-another-host-1"));
    }

    #[test]
    fn events_take_entry_fields_then_the_job_hash() {
        let entry = map(&[
            ("job", "j1"),
            ("tenant", "t"),
            ("status", "done"),
            ("output_bytes", "10"),
        ]);
        let job = map(&[
            ("output_key", "out/t/j1.mp3"),
            ("owner_email", "a@b.c"),
            ("input_name", "x.mp4"),
            ("output_bytes", "99"),
            ("duration_ms", "5"),
        ]);
        let links = DownloadLinks {
            base: "https://td.example/".into(),
            signer: LinkSigner::new(b"k".to_vec()),
            ttl: Duration::from_secs(100),
            now: 1000,
        };
        let e = build_event(&entry, &job, &links);
        assert_eq!(e.owner_email, "a@b.c");
        assert_eq!(e.output_bytes, Some(10));
        assert_eq!(e.duration_ms, Some(5));
        let sig = links.signer.sign("j1", "out/t/j1.mp3", 1100);
        assert_eq!(
            e.download_url,
            Some(format!(
                "https://td.example/v1/jobs/j1/output?tenant=t&expires=1100&sig={sig}"
            ))
        );
        assert_eq!(e.failure_reason, None);
        let failed = build_event(
            &map(&[("job", "j2"), ("status", "failed"), ("error", "no audio")]),
            &HashMap::new(),
            &links,
        );
        assert_eq!(failed.status, FinalStatus::Failed);
        assert_eq!(failed.failure_reason.as_deref(), Some("no audio"));
        assert_eq!(failed.download_url, None);
    }
}
