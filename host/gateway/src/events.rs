//! Job events for the SSE streams of `GET /v1/jobs/{id}/events`: one Redis pub/sub
//! subscription per process, fanned out to every stream, and the per-user cap on open
//! streams.
//!
//! [`JobEvents`] holds one dedicated connection with `PSUBSCRIBE td:events:*` (every
//! job's channel, `tapedeck_store::keys::events_channel`) and hands each message to the
//! streams watching that job through a broadcast channel per watched job. Streams cost no
//! Redis connection of their own: 500 streams are one Redis client, not 500. If the
//! connection drops, it subscribes again with backoff (never in a busy loop), and every
//! watcher is told to re-read its job ([`JobSignal::Resync`]), since changes published
//! meanwhile are lost with the connection.
//!
//! Shutdown: [`JobEvents::close`] ends every stream at once with a last `reconnect`
//! event (the client reconnects to another gateway), so an open stream does not hold a
//! gateway's exit until its shutdown timeout.
//!
//! Contact points: `serve` starts [`JobEvents`] for gateways and sizes [`StreamCap`];
//! `jobs::events` watches a job and holds a [`StreamSlot`] while its stream is open.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::sync::broadcast;
use tokio::task::AbortHandle;

use tapedeck_store::keys::{EVENTS_PATTERN, job_of_events_channel};

/// Signals buffered per watched job; a watcher further behind re-reads its job.
const BUFFERED: usize = 64;
/// First wait before subscribing again; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A subscription that lasted this long resets the backoff.
const STABLE: Duration = Duration::from_secs(10);
/// How often the subscription's connection is checked with a PING (a peer that
/// vanished without closing the socket shows only this way).
const PING_EVERY: Duration = Duration::from_secs(30);
const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// What a watcher of a job hears.
#[derive(Debug, Clone)]
pub enum JobSignal {
    /// A change published for the job (its JSON `JobChange`).
    Change(Arc<str>),
    /// Changes may have been missed (the subscription was established again, or this
    /// watcher fell behind): re-read the job.
    Resync,
}

/// The broadcast sender of each watched job, by job id.
type Watchers = Arc<Mutex<HashMap<String, broadcast::Sender<JobSignal>>>>;

/// The process's one subscription to job events; cheap to clone.
#[derive(Clone)]
pub struct JobEvents {
    watchers: Watchers,
    /// `true` once the process shuts down: every stream ends.
    closing: Arc<tokio::sync::watch::Sender<bool>>,
    /// Stops the subscriber task when the last handle goes.
    _task: Arc<AbortOnDrop>,
}

struct AbortOnDrop(AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl JobEvents {
    /// Starts the subscriber task on `pool`'s Redis (it connects, and reconnects, by
    /// itself, on a connection of its own: to any node of a cluster, where `PUBLISH`
    /// reaches every node).
    pub fn start(pool: tapedeck_store::Pool) -> Self {
        let watchers: Watchers = Arc::default();
        let task = tokio::spawn(subscribe_forever(pool, watchers.clone()));
        JobEvents {
            watchers,
            closing: Arc::new(tokio::sync::watch::channel(false).0),
            _task: Arc::new(AbortOnDrop(task.abort_handle())),
        }
    }

    /// Ends every stream (the process shuts down): each sends a last `reconnect` event
    /// and closes, and streams opened from now on end at once.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Resolves once [`JobEvents::close`] has been called (at once if it has).
    pub async fn closed(&self) {
        let mut closing = self.closing.subscribe();
        // `Err`: the sender is gone, which it never is while `self` lives.
        let _ = closing.wait_for(|closing| *closing).await;
    }

    /// Starts watching job `id`: every change published from now on reaches the
    /// returned [`JobWatch`].
    pub fn watch(&self, id: &str) -> JobWatch {
        let mut watchers = self.watchers.lock().expect("never poisoned");
        let receiver = watchers
            .entry(id.to_owned())
            .or_insert_with(|| broadcast::channel(BUFFERED).0)
            .subscribe();
        JobWatch {
            id: id.to_owned(),
            receiver,
            watchers: self.watchers.clone(),
        }
    }
}

/// One stream's view of one job's events; stops watching when dropped.
pub struct JobWatch {
    id: String,
    receiver: broadcast::Receiver<JobSignal>,
    watchers: Watchers,
}

impl JobWatch {
    /// The next signal for the job.
    pub async fn next(&mut self) -> JobSignal {
        match self.receiver.recv().await {
            Ok(signal) => signal,
            Err(broadcast::error::RecvError::Lagged(_)) => JobSignal::Resync,
            // The sender lives in the map as long as a watcher does: never closed.
            Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
        }
    }
}

impl Drop for JobWatch {
    fn drop(&mut self) {
        let mut watchers = self.watchers.lock().expect("never poisoned");
        // `receiver` is dropped after this: 1 means this is the job's last watcher.
        if watchers
            .get(&self.id)
            .is_some_and(|sender| sender.receiver_count() <= 1)
        {
            watchers.remove(&self.id);
        }
    }
}

/// Subscribes, delivers, and subscribes again whenever the connection ends, waiting
/// between attempts (backoff from [`MIN_BACKOFF`] to [`MAX_BACKOFF`]; a failure that
/// repeats is logged once in a while).
async fn subscribe_forever(pool: tapedeck_store::Pool, watchers: Watchers) {
    let mut backoff = MIN_BACKOFF;
    let warnings = tapedeck_model::logs::Throttled::default();
    loop {
        let began = Instant::now();
        // A client per subscription: on a cluster, the next node each time.
        match deliver(&pool.pubsub_client(), &watchers).await {
            Ok(()) => tracing::warn!("the job events subscription ended; subscribing again"),
            Err(e) => tapedeck_model::warn_throttled!(
                warnings,
                "job events: no subscription; retrying",
                e
            ),
        }
        backoff = if began.elapsed() >= STABLE {
            MIN_BACKOFF
        } else {
            (backoff * 2).min(MAX_BACKOFF)
        };
        tokio::time::sleep(backoff).await;
    }
}

/// One subscription's life: subscribe, tell every watcher to re-read (what was
/// published while there was none is lost), then hand out messages until the
/// connection ends or stops answering.
async fn deliver(client: &redis::Client, watchers: &Watchers) -> redis::RedisResult<()> {
    let (mut sink, mut messages) = client.get_async_pubsub().await?.split();
    sink.psubscribe(EVENTS_PATTERN).await?;
    for sender in watchers.lock().expect("never poisoned").values() {
        let _ = sender.send(JobSignal::Resync);
    }
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    loop {
        tokio::select! {
            message = messages.next() => {
                let Some(message) = message else { return Ok(()) };
                let Some(id) = job_of_events_channel(message.get_channel_name()) else {
                    continue;
                };
                let Ok(payload) = message.get_payload::<String>() else { continue };
                if let Some(sender) = watchers.lock().expect("never poisoned").get(id) {
                    let _ = sender.send(JobSignal::Change(payload.into()));
                }
            }
            _ = ping.tick() => {
                match tokio::time::timeout(PING_TIMEOUT, sink.ping::<redis::Value>()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Err(e),
                    Err(_) => return Ok(()),
                }
            }
        }
    }
}

/// Caps the event streams each user has open in this process (`--max-event-streams-per-user`).
#[derive(Clone)]
pub struct StreamCap {
    /// Streams one user may hold open at once.
    pub per_user: usize,
    /// Open streams by (tenant, user id).
    open: Arc<Mutex<HashMap<(String, String), usize>>>,
}

impl StreamCap {
    pub fn new(per_user: usize) -> Self {
        StreamCap {
            per_user,
            open: Arc::default(),
        }
    }

    /// A slot for one more stream of `user` of `tenant`, or `None` at the cap.
    pub fn open(&self, tenant: &str, user: &str) -> Option<StreamSlot> {
        let key = (tenant.to_owned(), user.to_owned());
        let mut open = self.open.lock().expect("never poisoned");
        let n = open.entry(key.clone()).or_insert(0);
        if *n >= self.per_user {
            return None;
        }
        *n += 1;
        Some(StreamSlot {
            key,
            open: self.open.clone(),
        })
    }
}

/// One open stream counted against its user's cap, until dropped.
pub struct StreamSlot {
    key: (String, String),
    open: Arc<Mutex<HashMap<(String, String), usize>>>,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().expect("never poisoned");
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_counts_open_streams_per_user() {
        let cap = StreamCap::new(2);
        let a = cap.open("acme", "u1").unwrap();
        let _b = cap.open("acme", "u1").unwrap();
        assert!(cap.open("acme", "u1").is_none());
        assert!(cap.open("acme", "u2").is_some(), "another user");
        assert!(
            cap.open("other", "u1").is_some(),
            "the same id in another tenant"
        );
        drop(a);
        assert!(
            cap.open("acme", "u1").is_some(),
            "a closed stream frees its slot"
        );
    }
}
