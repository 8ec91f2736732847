//! The outbox: notification mail kept as `.eml` objects under `outbox/` of the blob store
//! when no SMTP server is configured. Every process of a deployment shares the blob
//! store, so any gateway lists the mail every worker wrote.
//!
//! One object per message, named after its notification id: writing the same message
//! again replaces the object, never adds one.
//!
//! Capped at the newest [`OutboxCap::messages`] messages and [`OutboxCap::bytes`] bytes.
//! The process that writes a message prunes the oldest beyond the cap (at most once per
//! [`PRUNE_EVERY`] in each process). Processes need no coordination for it: they all sort
//! the same listing the same way (newest first by last-modified time, then by name), so
//! concurrent prunes choose the same victims, and deleting one twice is harmless. Between
//! prunes the outbox may run over the cap by what was written since the last one.
//!
//! Contact points: the notifier's mailer (`put`), the gateway's outbox routes (`list`,
//! `head`, `read`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;

use super::{BlobStore, StorageError, not_found};

/// The key prefix (folder) of outbox messages.
pub const PREFIX: &str = "outbox";
/// The least time between two prunes by one process.
pub const PRUNE_EVERY: Duration = Duration::from_secs(1);

/// How much mail the outbox keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxCap {
    /// The newest this many messages.
    pub messages: usize,
    /// Of those, as many of the newest as fit in this many bytes.
    pub bytes: u64,
}

impl Default for OutboxCap {
    /// 1000 messages, 64 MiB: a notification mail is a few KiB.
    fn default() -> Self {
        Self {
            messages: 1000,
            bytes: 64 << 20,
        }
    }
}

/// One message of the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxMessage {
    /// Its name (`<notification id>.eml`), for [`Outbox::read`].
    pub name: String,
    pub bytes: u64,
    /// When it was written, unix milliseconds.
    pub at_ms: i64,
}

/// The outbox of one deployment, in its blob store.
#[derive(Clone, Debug)]
pub struct Outbox {
    blobs: BlobStore,
    cap: OutboxCap,
    prune_every: Duration,
    /// Unix milliseconds of this process's last prune.
    last_prune_ms: Arc<AtomicU64>,
}

impl Outbox {
    pub fn new(blobs: BlobStore) -> Self {
        Self {
            blobs,
            cap: OutboxCap::default(),
            prune_every: PRUNE_EVERY,
            last_prune_ms: Arc::default(),
        }
    }

    /// The same outbox under another cap, pruned after every write when `prune_every` is
    /// zero (tests).
    pub fn with_cap(mut self, cap: OutboxCap, prune_every: Duration) -> Self {
        self.cap = cap;
        self.prune_every = prune_every;
        self
    }

    /// The name of notification `id`'s message: [`file_safe`]`(id)` then `.eml`.
    pub fn name_for(id: &str) -> String {
        format!("{}.eml", file_safe(id))
    }

    /// Writes message `name` (replacing one of that name), then prunes if due. A failed
    /// prune is logged, not returned: the message is stored.
    pub async fn put(&self, name: &str, message: Bytes) -> Result<(), StorageError> {
        let key = key(name).ok_or_else(|| StorageError::NotFound(name.into()))?;
        self.blobs.store.put(&key, message.into()).await?;
        let now = now_ms();
        let last = self.last_prune_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= self.prune_every.as_millis() as u64
            && self
                .last_prune_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            && let Err(e) = self.prune().await
        {
            tracing::warn!(error = %e, "could not prune the outbox");
        }
        Ok(())
    }

    /// Every message, newest first.
    pub async fn list(&self) -> Result<Vec<OutboxMessage>, StorageError> {
        let prefix = ObjectPath::from(PREFIX);
        let mut found: Vec<OutboxMessage> = self
            .blobs
            .store
            .list(Some(&prefix))
            .try_filter_map(|meta| async move {
                let name = meta.location.filename().unwrap_or_default().to_owned();
                Ok(key(&name).map(|_| OutboxMessage {
                    name,
                    bytes: meta.size,
                    at_ms: meta.last_modified.timestamp_millis(),
                }))
            })
            .try_collect()
            .await?;
        found.sort_by(|a, b| b.at_ms.cmp(&a.at_ms).then_with(|| b.name.cmp(&a.name)));
        Ok(found)
    }

    /// The first `len` bytes of a message listed with `bytes` in all.
    pub async fn head(&self, message: &OutboxMessage, len: u64) -> Result<Bytes, StorageError> {
        let len = len.min(message.bytes);
        if len == 0 {
            return Ok(Bytes::new());
        }
        let key = key(&message.name).ok_or_else(|| StorageError::NotFound(message.name.clone()))?;
        self.blobs
            .store
            .get_range(&key, 0..len)
            .await
            .map_err(|e| not_found(&message.name, e))
    }

    /// Message `name` as written; `None` for a name that is not a message's, a missing
    /// message or one over `max_bytes`.
    pub async fn read(&self, name: &str, max_bytes: u64) -> Result<Option<Bytes>, StorageError> {
        let Some(key) = key(name) else {
            return Ok(None);
        };
        let got = match self.blobs.store.get(&key).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        if got.meta.size > max_bytes {
            return Ok(None);
        }
        Ok(Some(got.bytes().await?))
    }

    /// Deletes every message of `tenant` (notification ids, and so message names, start
    /// with `{tenant}.`): a deleted tenant's mail goes with it. Returns how many.
    pub async fn delete_tenant(&self, tenant: &str) -> Result<usize, StorageError> {
        let prefix = format!("{}.", file_safe(tenant));
        let mut deleted = 0;
        for message in self.list().await? {
            if message.name.starts_with(&prefix) {
                self.blobs
                    .delete(&format!("{PREFIX}/{}", message.name))
                    .await?;
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    /// Deletes the messages beyond the cap, oldest first; returns how many.
    pub async fn prune(&self) -> Result<usize, StorageError> {
        let messages = self.list().await?;
        let mut total = 0u64;
        let mut deleted = 0;
        for (i, message) in messages.iter().enumerate() {
            total = total.saturating_add(message.bytes);
            if i >= self.cap.messages || total > self.cap.bytes {
                self.blobs
                    .delete(&format!("{PREFIX}/{}", message.name))
                    .await?;
                deleted += 1;
            }
        }
        Ok(deleted)
    }
}

/// `id` with everything but `[A-Za-z0-9._-]` replaced by `_`: a message's file name
/// without `.eml`, and the local part of its Message-ID.
pub fn file_safe(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The key of message `name`: `outbox/<name>` for a plain `*.eml` file name, else `None`.
fn key(name: &str) -> Option<ObjectPath> {
    let plain = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b));
    (plain && name.ends_with(".eml") && !name.starts_with('.'))
        .then(|| ObjectPath::from(format!("{PREFIX}/{name}")))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outbox(dir: &std::path::Path, cap: OutboxCap) -> Outbox {
        Outbox::new(BlobStore::open(dir.to_str().unwrap()).unwrap()).with_cap(cap, Duration::ZERO)
    }

    #[tokio::test]
    async fn the_same_message_twice_is_one_object() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = outbox(dir.path(), OutboxCap::default());
        let name = Outbox::name_for("acme.7-0:0");
        assert_eq!(name, "acme.7-0_0.eml");
        outbox
            .put(&name, Bytes::from_static(b"To: a\r\n\r\none"))
            .await
            .unwrap();
        outbox
            .put(&name, Bytes::from_static(b"To: a\r\n\r\ntwo"))
            .await
            .unwrap();
        let listed = outbox.list().await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(
            outbox.read(&name, 1 << 20).await.unwrap().unwrap(),
            &b"To: a\r\n\r\ntwo"[..]
        );
        assert_eq!(outbox.head(&listed[0], 5).await.unwrap(), &b"To: a"[..]);
        // Only plain `*.eml` names are messages; over the size asked for is none.
        for bad in ["../x.eml", ".eml", "a/b.eml", "x.txt", ""] {
            assert_eq!(outbox.read(bad, 1 << 20).await.unwrap(), None, "{bad}");
        }
        assert_eq!(outbox.read(&name, 3).await.unwrap(), None);
        assert_eq!(outbox.read("other.eml", 1 << 20).await.unwrap(), None);
    }

    #[tokio::test]
    async fn writers_keep_the_newest_within_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let cap = OutboxCap {
            messages: 3,
            bytes: 1000,
        };
        // Two processes writing into one store: each prunes what it finds beyond the cap.
        let (a, b) = (outbox(dir.path(), cap), outbox(dir.path(), cap));
        for i in 0..8 {
            let writer = if i % 2 == 0 { &a } else { &b };
            writer
                .put(&format!("m{i}.eml"), Bytes::from(vec![b'x'; 100]))
                .await
                .unwrap();
            // Distinct modification times (the local store has millisecond ones).
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let names: Vec<String> = a
            .list()
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.name)
            .collect();
        assert_eq!(names, ["m7.eml", "m6.eml", "m5.eml"]);
        // The byte cap: one big message leaves room for nothing older.
        a.put("big.eml", Bytes::from(vec![b'x'; 950]))
            .await
            .unwrap();
        let names: Vec<String> = b
            .list()
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.name)
            .collect();
        assert_eq!(names, ["big.eml"]);
    }
}
