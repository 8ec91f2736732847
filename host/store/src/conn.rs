//! Connections to Redis: every ordinary command of a process goes over ONE multiplexed
//! connection that reconnects by itself (a single Redis through
//! `redis::aio::ConnectionManager`, a Redis Cluster through the cluster client, which
//! follows `MOVED`/`ASK` and connects to the nodes it discovers); blocking reads
//! ([`Pool::blpop`]) and subscriptions ([`Pool::pubsub`]) get connections of their own.
//!
//! [`Pool`] keeps the name and the shape of the connection pool it replaced
//! (`pool.get().await`, then commands): a checkout is a clone of the shared handle, with
//! no round trip. (deadpool-redis checked each connection it handed out with `PING` and
//! `UNWATCH`: two commands per checkout, 40 % of all commands.) Commands of concurrent
//! callers are pipelined on the one socket; a `MULTI`/`EXEC` pipeline is written to it in
//! one piece, so transactions stay whole. Nothing uses `WATCH`: it would hold for every
//! caller of the shared connection.
//!
//! On a cluster, what spans slots:
//! - a pipeline whose commands live in more than one slot is sent as one pipeline per
//!   slot, to each slot's node at once ([`Connection`]); a transaction must stay within
//!   one slot (Redis refuses it with `CROSSSLOT`), and every one of ours does;
//! - `SCAN` goes to the node serving the pattern's hash tag, or to every master
//!   ([`scan_keys`]);
//! - subscriptions go to any one node: `PUBLISH` reaches every node of a cluster.
//!
//! Hashes that change rarely and are read for every job (a tenant's record, its
//! notification settings) may be read through [`Pool::hgetall_cached`]: a read less than
//! [`Pool::set_read_cache`] old (1 s by default, the sessions' cache time) is answered
//! from memory. Writers call [`Pool::forget`], so the writing process sees its change at
//! once; other processes within the cache time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, Slot, SlotAddr};
use redis::{AsyncCommands, Cmd, Pipeline, RedisError, RedisFuture, RedisResult, Value};

/// A reply slower than this fails the command (Redis answers in microseconds; a slow
/// reply is a Redis in trouble, and the caller's retry is better than a hung request).
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(500);
/// Longest wait for a TCP connection to a Redis node.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// A blocking read that has not answered this long after its own timeout is taken as a
/// dead connection.
const BLOCKING_SLACK: Duration = Duration::from_secs(2);
/// How long [`Pool::hgetall_cached`] trusts a read unless told otherwise.
const READ_CACHE_TTL: Duration = Duration::from_secs(1);
/// Most hashes the read cache holds; past it, stale ones go, then all.
const READ_CACHE_CAPACITY: usize = 10_000;

/// The connection could not be had: Redis did not answer when the process first
/// connected (after that, the shared connection reconnects by itself and failures are
/// the commands' own errors).
#[derive(Debug, thiserror::Error)]
#[error("connecting to Redis: {0}")]
pub struct PoolError(#[from] pub RedisError);

/// A pool failure as a Redis error, for functions that answer `RedisResult`.
pub fn pool_error(e: PoolError) -> RedisError {
    e.0
}

/// Where Redis is: one server, or the nodes of a cluster.
enum Target {
    Single(redis::Client),
    Cluster(Box<ClusterTarget>),
}

/// The clients of a Redis Cluster.
struct ClusterTarget {
    /// Ordinary commands: short response timeout.
    shared: ClusterClient,
    /// Blocking reads: no response timeout (each read bounds its own wait).
    blocking: ClusterClient,
    /// A client for each node given, for subscriptions.
    nodes: Vec<redis::Client>,
    /// The node the next subscription tries first (moves on when one fails).
    next_node: AtomicUsize,
}

/// The process's Redis: cheap to clone, every clone shares one connection.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if self.is_cluster() {
            "cluster"
        } else {
            "single"
        };
        f.debug_struct("Pool").field("redis", &kind).finish()
    }
}

/// Cached hash reads: key → (when read, the fields).
type ReadCache = HashMap<String, (Instant, Arc<HashMap<String, String>>)>;

struct Inner {
    target: Target,
    /// The shared multiplexed connection, once made.
    shared: tokio::sync::OnceCell<Connection>,
    /// Dedicated connections for blocking reads, not in use now.
    idle_blocking: Mutex<Vec<Blocking>>,
    /// Recent reads of [`Pool::hgetall_cached`]: key → (read at, fields).
    read_cache: Mutex<ReadCache>,
    /// How long a cached read is trusted, in ms (0: not cached).
    read_cache_ms: AtomicU64,
    /// Counts [`Pool::forget`]s: a read that saw one happen while it was in flight is
    /// not cached (it may predate the write).
    read_cache_writes: AtomicU64,
}

impl Pool {
    /// A single Redis at `url` (`redis://`, `rediss://`, `unix://`). Connects on first use.
    pub fn open(url: &str) -> RedisResult<Self> {
        Ok(Self::with(Target::Single(redis::Client::open(url)?)))
    }

    /// A Redis Cluster through any of `nodes` (`redis://host:port` each): the client
    /// asks the first that answers for the others. Connects on first use.
    pub fn cluster(nodes: &[String]) -> RedisResult<Self> {
        if nodes.is_empty() {
            return Err(RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "no cluster nodes given",
            )));
        }
        let shared = ClusterClientBuilder::new(nodes.to_vec())
            .connection_timeout(CONNECT_TIMEOUT)
            .response_timeout(RESPONSE_TIMEOUT)
            // Following a redirect or a failover may take a few attempts.
            .overall_response_timeout(Some(RESPONSE_TIMEOUT * 4))
            .build()?;
        let blocking = ClusterClientBuilder::new(nodes.to_vec())
            .connection_timeout(CONNECT_TIMEOUT)
            .build()?;
        let nodes = nodes
            .iter()
            .map(|n| redis::Client::open(n.as_str()))
            .collect::<RedisResult<_>>()?;
        Ok(Self::with(Target::Cluster(Box::new(ClusterTarget {
            shared,
            blocking,
            nodes,
            next_node: AtomicUsize::new(0),
        }))))
    }

    fn with(target: Target) -> Self {
        Self {
            inner: Arc::new(Inner {
                target,
                shared: tokio::sync::OnceCell::new(),
                idle_blocking: Mutex::new(Vec::new()),
                read_cache: Mutex::new(HashMap::new()),
                read_cache_ms: AtomicU64::new(READ_CACHE_TTL.as_millis() as u64),
                read_cache_writes: AtomicU64::new(0),
            }),
        }
    }

    /// How long [`Pool::hgetall_cached`] answers from memory (zero: never), for every
    /// clone of this pool.
    pub fn set_read_cache(&self, ttl: Duration) {
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        self.inner.read_cache_ms.store(ms, Ordering::Relaxed);
        if ms == 0 {
            self.cache().clear();
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, ReadCache> {
        self.inner
            .read_cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// `HGETALL key`, answered from memory when this process read it less than the read
    /// cache time ago (an empty hash too: a missing key). Only for hashes whose writers
    /// call [`Pool::forget`] and whose readers can live with a second-old copy.
    pub async fn hgetall_cached(&self, key: &str) -> RedisResult<Arc<HashMap<String, String>>> {
        let ttl = Duration::from_millis(self.inner.read_cache_ms.load(Ordering::Relaxed));
        if !ttl.is_zero()
            && let Some((at, fields)) = self.cache().get(key)
            && at.elapsed() < ttl
        {
            return Ok(fields.clone());
        }
        let writes = self.inner.read_cache_writes.load(Ordering::SeqCst);
        let mut conn = self.get().await.map_err(pool_error)?;
        let fields: Arc<HashMap<String, String>> = Arc::new(conn.hgetall(key).await?);
        if !ttl.is_zero() && self.inner.read_cache_writes.load(Ordering::SeqCst) == writes {
            let mut cache = self.cache();
            if cache.len() >= READ_CACHE_CAPACITY {
                cache.retain(|_, (at, _)| at.elapsed() < ttl);
                if cache.len() >= READ_CACHE_CAPACITY {
                    cache.clear();
                }
            }
            cache.insert(key.to_owned(), (Instant::now(), fields.clone()));
        }
        Ok(fields)
    }

    /// Drops this process's cached read of `key` (it was just written).
    pub fn forget(&self, key: &str) {
        let mut cache = self.cache();
        self.inner.read_cache_writes.fetch_add(1, Ordering::SeqCst);
        cache.remove(key);
    }

    /// Whether this is a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.inner.target, Target::Cluster(_))
    }

    /// The shared connection (made on the first call; a failed first connection is
    /// tried again by the next call).
    pub async fn get(&self) -> Result<Connection, PoolError> {
        let conn = self
            .inner
            .shared
            .get_or_try_init(|| self.connect_shared())
            .await?;
        Ok(conn.clone())
    }

    async fn connect_shared(&self) -> RedisResult<Connection> {
        Ok(match &self.inner.target {
            Target::Single(client) => {
                // Few quick reconnect attempts per failed command: while Redis is down,
                // commands fail fast and the next one tries again.
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(RESPONSE_TIMEOUT))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_secs(1));
                let manager = ConnectionManager::new_with_config(client.clone(), config).await?;
                Connection(Shared::Single(manager))
            }
            Target::Cluster(c) => {
                Connection(Shared::Cluster(c.shared.get_async_connection().await?))
            }
        })
    }

    /// `BLPOP key timeout` on a dedicated connection (a blocking command would hold up
    /// everyone's commands on the shared one): the value popped, or `None` after
    /// `timeout`. Connections are reused by later reads; one that failed, or whose read
    /// was abandoned (the future dropped), is closed.
    pub async fn blpop(&self, key: &str, timeout: Duration) -> RedisResult<Option<String>> {
        let idle = self
            .inner
            .idle_blocking
            .lock()
            .expect("the idle list's lock is never poisoned")
            .pop();
        let mut conn = match idle {
            Some(conn) => conn,
            None => self.connect_blocking().await?,
        };
        let read = conn.blpop::<_, Option<(String, String)>>(key, timeout.as_secs_f64());
        match tokio::time::timeout(timeout + BLOCKING_SLACK, read).await {
            Ok(Ok(got)) => {
                self.inner
                    .idle_blocking
                    .lock()
                    .expect("the idle list's lock is never poisoned")
                    .push(conn);
                Ok(got.map(|(_, v)| v))
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(RedisError::from((
                redis::ErrorKind::Io,
                "blocking read",
                format!("no answer {BLOCKING_SLACK:?} past its timeout"),
            ))),
        }
    }

    async fn connect_blocking(&self) -> RedisResult<Blocking> {
        Ok(match &self.inner.target {
            Target::Single(client) => {
                let config = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(None);
                Blocking::Single(
                    client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await?,
                )
            }
            Target::Cluster(c) => Blocking::Cluster(c.blocking.get_async_connection().await?),
        })
    }

    /// A client for a subscription of its own: the server, or one node of a cluster
    /// (messages published on any node reach every node). Each call on a cluster offers
    /// the next node given, so a subscriber that lost its node tries another.
    pub fn pubsub_client(&self) -> redis::Client {
        match &self.inner.target {
            Target::Single(client) => client.clone(),
            Target::Cluster(c) => {
                let i = c.next_node.fetch_add(1, Ordering::Relaxed) % c.nodes.len();
                c.nodes[i].clone()
            }
        }
    }

    /// A new pub/sub connection: on a cluster, the first node given that answers.
    pub async fn pubsub(&self) -> RedisResult<redis::aio::PubSub> {
        let tries = match &self.inner.target {
            Target::Single(_) => 1,
            Target::Cluster(c) => c.nodes.len(),
        };
        let mut last = None;
        for _ in 0..tries {
            // A node that takes the SYN and never answers must not hold the caller's
            // resubscribe loop: the same deadline as any connection.
            match tokio::time::timeout(CONNECT_TIMEOUT, self.pubsub_client().get_async_pubsub())
                .await
            {
                Ok(Ok(pubsub)) => return Ok(pubsub),
                Ok(Err(e)) => last = Some(e),
                Err(_) => {
                    last = Some(RedisError::from((
                        redis::ErrorKind::Io,
                        "subscribing",
                        format!("no connection within {CONNECT_TIMEOUT:?}"),
                    )))
                }
            }
        }
        Err(last.expect("at least one node was tried"))
    }
}

/// A dedicated connection for blocking reads.
enum Blocking {
    Single(redis::aio::MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Blocking {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Blocking::Single(c) => c.req_packed_command(cmd),
            Blocking::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Blocking::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Blocking::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        0
    }
}

/// A handle on the process's shared connection (`Pool::get`); cheap to clone. On a
/// cluster, a pipeline spanning slots is split per slot (see `per_slot`).
#[derive(Clone)]
pub struct Connection(Shared);

#[derive(Clone)]
enum Shared {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.0 {
            Shared::Single(c) => c.req_packed_command(cmd),
            Shared::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        // The cluster client sends a pipeline to one node: one whose commands live in
        // several slots is split per slot.
        let split = !pipeline.is_transaction() && spans_slots(pipeline);
        match (&mut self.0, split) {
            (Shared::Single(c), _) => c.req_packed_commands(pipeline, offset, count),
            (Shared::Cluster(c), true) => Box::pin(async move {
                let replies = per_slot(c, pipeline).await?;
                Ok(replies.into_iter().skip(offset).take(count).collect())
            }),
            (Shared::Cluster(c), false) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        0
    }
}

/// Runs a pipeline whose commands live in several slots on a cluster: the commands of
/// each slot as one pipeline to that slot's node (in their order), the slots at once; a
/// command whose own keys span slots (`DEL a b`) alone, split by the cluster client.
/// Replies come back in the pipeline's order. Commands of different slots may run in any
/// order relative to each other.
async fn per_slot(cluster: &ClusterConnection, pipeline: &Pipeline) -> RedisResult<Vec<Value>> {
    // (slot, the pipeline's indexes of its commands); `None`: a command on its own.
    let mut groups: Vec<(Option<Slot>, Vec<usize>)> = Vec::new();
    for (i, cmd) in pipeline.cmd_iter().enumerate() {
        let slots: Vec<Slot> = command_keys(cmd).into_iter().map(Slot::for_key).collect();
        let slot = match slots.split_first() {
            Some((first, rest)) if rest.iter().all(|s| s == first) => Some(*first),
            _ => None,
        };
        match groups
            .iter_mut()
            .find(|(s, _)| slot.is_some() && *s == slot)
        {
            Some((_, members)) => members.push(i),
            None => groups.push((slot, vec![i])),
        }
    }
    let commands: Vec<&Cmd> = pipeline.cmd_iter().collect();
    let sent = groups.iter().map(|(_, members)| {
        let mut conn = cluster.clone();
        let group: Vec<Cmd> = members.iter().map(|&i| commands[i].clone()).collect();
        async move {
            if let [one] = group.as_slice() {
                return Ok(vec![conn.req_packed_command(one).await?]);
            }
            let mut pipe = redis::Pipeline::with_capacity(group.len());
            for cmd in group {
                pipe.add_command(cmd);
            }
            conn.req_packed_commands(&pipe, 0, pipe.len()).await
        }
    });
    let replies = futures::future::try_join_all(sent).await?;
    let mut ordered: Vec<Option<Value>> = vec![None; pipeline.len()];
    for ((_, members), values) in groups.iter().zip(replies) {
        for (&i, value) in members.iter().zip(values) {
            ordered[i] = Some(value);
        }
    }
    Ok(ordered
        .into_iter()
        .map(|v| v.unwrap_or(Value::Nil))
        .collect())
}

/// The keys a command names, for the commands Tapedeck pipelines: scripts (`numkeys`
/// keys after the script), stream reads (after `STREAMS`), multi-key deletes and reads
/// (every argument), keyless commands (none), and otherwise the first argument.
fn command_keys(cmd: &Cmd) -> Vec<&[u8]> {
    let args: Vec<&[u8]> = cmd
        .args_iter()
        .map(|a| match a {
            redis::Arg::Simple(a) => a,
            _ => &b""[..],
        })
        .collect();
    let Some(name) = args.first().map(|n| n.to_ascii_uppercase()) else {
        return Vec::new();
    };
    match name.as_slice() {
        b"EVAL" | b"EVALSHA" | b"EVAL_RO" | b"EVALSHA_RO" | b"FCALL" | b"FCALL_RO" => {
            let n = args
                .get(2)
                .and_then(|n| std::str::from_utf8(n).ok())
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or(0);
            args.iter().skip(3).take(n).copied().collect()
        }
        b"XREAD" | b"XREADGROUP" => {
            let Some(at) = args.iter().position(|a| a.eq_ignore_ascii_case(b"STREAMS")) else {
                return Vec::new();
            };
            let rest = &args[at + 1..];
            rest[..rest.len() / 2].to_vec()
        }
        b"DEL" | b"UNLINK" | b"EXISTS" | b"MGET" | b"TOUCH" => args[1..].to_vec(),
        b"PING" | b"PUBLISH" | b"SCAN" | b"INFO" | b"SCRIPT" | b"CLUSTER" | b"CLIENT" => Vec::new(),
        _ => args.get(1).copied().into_iter().collect(),
    }
}

/// Whether a pipeline's commands name keys of more than one cluster slot.
fn spans_slots(pipeline: &Pipeline) -> bool {
    let mut slots = pipeline
        .cmd_iter()
        .flat_map(command_keys)
        .map(Slot::for_key);
    match slots.next() {
        Some(first) => slots.any(|s| s != first),
        None => false,
    }
}

/// The part of a key (or `SCAN` pattern) Redis Cluster hashes: the first `{…}` with
/// something inside, if any.
fn hash_tag(key: &str) -> Option<&str> {
    let open = key.find('{')?;
    let close = key[open + 1..].find('}')? + open + 1;
    (close > open + 1).then(|| &key[open + 1..close])
}

/// Every key matching `pattern` (`SCAN MATCH`, in batches: never blocks Redis). On a
/// cluster, a pattern with a hash tag (`td:{acme}:*`: one tenant's keys) is scanned on
/// the node serving that slot, any other on every master.
pub async fn scan_keys(conn: &mut Connection, pattern: &str) -> RedisResult<Vec<String>> {
    let Shared::Cluster(cluster) = &mut conn.0 else {
        return scan_node(conn, pattern, None).await;
    };
    let routes = match hash_tag(pattern) {
        Some(_) => vec![SingleNodeRoutingInfo::SpecificNode(Route::with_key(
            pattern,
            SlotAddr::Master,
        ))],
        None => masters(cluster)
            .await?
            .into_iter()
            .map(|(host, port)| SingleNodeRoutingInfo::ByAddress { host, port })
            .collect(),
    };
    let mut found = Vec::new();
    for route in routes {
        found.extend(scan_node(conn, pattern, Some(route)).await?);
    }
    Ok(found)
}

/// One node's keys matching `pattern` (`route`: which node of a cluster).
async fn scan_node(
    conn: &mut Connection,
    pattern: &str,
    route: Option<SingleNodeRoutingInfo>,
) -> RedisResult<Vec<String>> {
    let mut found = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let mut scan = redis::cmd("SCAN");
        scan.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(500);
        let (next, keys): (u64, Vec<String>) = match (&mut conn.0, &route) {
            (Shared::Cluster(c), Some(route)) => redis::from_redis_value(
                c.route_command(scan, RoutingInfo::SingleNode(route.clone()))
                    .await?,
            )?,
            _ => scan.query_async(conn).await?,
        };
        found.extend(keys);
        cursor = next;
        if cursor == 0 {
            return Ok(found);
        }
    }
}

/// The masters of a cluster that are not failing, as `(host, port)` (`CLUSTER NODES`).
async fn masters(cluster: &mut ClusterConnection) -> RedisResult<Vec<(String, u16)>> {
    let nodes: String = redis::from_redis_value(
        cluster
            .route_command(
                redis::cmd("CLUSTER").arg("NODES").clone(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
            )
            .await?,
    )?;
    Ok(parse_masters(&nodes))
}

/// `CLUSTER NODES` lines: `id host:port@bus[,hostname] flags master ...`.
fn parse_masters(nodes: &str) -> Vec<(String, u16)> {
    nodes
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let addr = fields.nth(1)?;
            let flags = fields.next()?;
            let is_live_master = flags.split(',').any(|f| f == "master")
                && !flags.split(',').any(|f| f == "fail" || f == "noaddr");
            if !is_live_master {
                return None;
            }
            let addr = addr.split(['@', ',']).next()?;
            let (host, port) = addr.rsplit_once(':')?;
            Some((host.to_owned(), port.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_tags() {
        assert_eq!(hash_tag("td:{acme}:*"), Some("acme"));
        assert_eq!(hash_tag("td:{~sched}:ready"), Some("~sched"));
        assert_eq!(hash_tag("td:plugins:active"), None);
        assert_eq!(hash_tag("td:{}:x"), None);
    }

    #[test]
    fn pipelines_within_one_slot_are_not_split() {
        let mut one = redis::pipe();
        one.hgetall("td:{a}:job:1")
            .hgetall("td:{a}:job:2")
            .del(&["td:{a}:x", "td:{a}:y"]);
        assert!(!spans_slots(&one));
        let mut script = redis::pipe();
        script
            .cmd("EVALSHA")
            .arg("abc")
            .arg(2)
            .arg("td:{a}:k1")
            .arg("td:{a}:k2")
            .arg("td:{b}:not-a-key");
        assert!(!spans_slots(&script));
        let mut two = redis::pipe();
        two.incr("td:loginfail:acct:a:x", 1)
            .incr("td:loginfail:addr:1.2.3.4", 1);
        assert!(spans_slots(&two));
        let mut del = redis::pipe();
        del.del(&["td:{a}:x", "td:{b}:y"]);
        assert!(spans_slots(&del));
    }

    #[test]
    fn masters_from_cluster_nodes() {
        let nodes = "\
a1 127.0.0.1:7001@17001 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:7002@17002,host-b master - 0 1 2 connected 5461-10922
c3 127.0.0.1:7003@17003 master,fail - 0 1 3 connected
d4 127.0.0.1:7004@17004 slave a1 0 1 1 connected
";
        assert_eq!(
            parse_masters(nodes),
            vec![("127.0.0.1".into(), 7001), ("127.0.0.1".into(), 7002)]
        );
    }
}
