//! The consumer-group protocol both pipelines speak (each tenant's convert stream
//! `td:{T}:convert` and notify stream `td:{T}:notify`), written once: ensure the group,
//! take over entries a stopped consumer left past the visibility timeout (`XAUTOCLAIM`)
//! before reading new ones, heart-beat an entry while working on it, and back off
//! between attempts.

use std::time::Duration;

use redis::RedisResult;
use redis::aio::ConnectionLike;
use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};

/// One consumer group on one stream.
#[derive(Debug, Clone, Copy)]
pub struct Group<'a> {
    pub stream: &'a str,
    pub name: &'a str,
}

impl Group<'_> {
    /// Creates the group (and the stream) if missing, reading from `start` (`0`: the
    /// whole stream).
    pub async fn ensure(
        &self,
        conn: &mut (impl ConnectionLike + Send),
        start: &str,
    ) -> RedisResult<()> {
        let created: RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(self.stream)
            .arg(self.name)
            .arg(start)
            .arg("MKSTREAM")
            .query_async(conn)
            .await;
        match created {
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            other => other,
        }
    }

    /// Creates the group if missing on an existing stream; false if the stream does not
    /// exist (it is not created).
    pub async fn ensure_existing(
        &self,
        conn: &mut (impl ConnectionLike + Send),
        start: &str,
    ) -> RedisResult<bool> {
        let created: RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(self.stream)
            .arg(self.name)
            .arg(start)
            .query_async(conn)
            .await;
        match created {
            Ok(()) => Ok(true),
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(true),
            Err(e) if e.to_string().contains("requires the key to exist") => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Up to `count` entries idle for `min_idle` (their consumer stopped heart-beating),
    /// now `consumer`'s.
    pub async fn claim_abandoned(
        &self,
        conn: &mut (impl ConnectionLike + Send),
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> RedisResult<Vec<StreamId>> {
        let claimed: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
            .arg(self.stream)
            .arg(self.name)
            .arg(consumer)
            .arg(min_idle.as_millis() as u64)
            .arg("0-0")
            .arg("COUNT")
            .arg(count)
            .query_async(conn)
            .await?;
        Ok(claimed.claimed)
    }

    /// Up to `count` entries never delivered to the group, now `consumer`'s.
    pub async fn read_new(
        &self,
        conn: &mut (impl ConnectionLike + Send),
        consumer: &str,
        count: usize,
    ) -> RedisResult<Vec<StreamId>> {
        let read: Option<StreamReadReply> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(self.name)
            .arg(consumer)
            .arg("COUNT")
            .arg(count)
            .arg("STREAMS")
            .arg(self.stream)
            .arg(">")
            .query_async(conn)
            .await?;
        Ok(read
            .and_then(|r| r.keys.into_iter().next())
            .map(|k| k.ids)
            .unwrap_or_default())
    }

    /// Abandoned entries first, else new ones; says which it returned (`true`: taken
    /// over).
    pub async fn claim_or_read(
        &self,
        conn: &mut (impl ConnectionLike + Send),
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> RedisResult<(Vec<StreamId>, bool)> {
        let claimed = self
            .claim_abandoned(conn, consumer, min_idle, count)
            .await?;
        if !claimed.is_empty() {
            return Ok((claimed, true));
        }
        Ok((self.read_new(conn, consumer, count).await?, false))
    }

    /// Acknowledges `entry_id`: the group never delivers it again.
    pub async fn ack(
        &self,
        conn: &mut (impl ConnectionLike + Send),
        entry_id: &str,
    ) -> RedisResult<()> {
        redis::cmd("XACK")
            .arg(self.stream)
            .arg(self.name)
            .arg(entry_id)
            .query_async(conn)
            .await
    }

    /// Resets `entry_id`'s idle time while `consumer` works on it; false if another
    /// consumer has taken it over meanwhile.
    pub async fn heartbeat(
        &self,
        conn: &mut (impl ConnectionLike + Send),
        consumer: &str,
        entry_id: &str,
    ) -> RedisResult<bool> {
        let ours: i64 = crate::lua::HEARTBEAT
            .call()
            .key("stream", self.stream)
            .arg("group", self.name)
            .arg("consumer", consumer)
            .arg("entry", entry_id)
            .invoke(conn)
            .await?;
        Ok(ours == 1)
    }
}

/// One entry of [`Group::pending`].
#[derive(Debug, Clone)]
pub struct Pending {
    pub entry_id: String,
    pub consumer: String,
    pub idle_ms: u64,
}

impl Group<'_> {
    /// Up to `count` entries delivered and not acknowledged, oldest first, with their
    /// consumer and idle time (`XPENDING … - + count`); none when the group or the stream
    /// does not exist yet.
    pub async fn pending(
        &self,
        conn: &mut (impl ConnectionLike + Send),
        count: usize,
    ) -> RedisResult<Vec<Pending>> {
        let rows: Vec<(String, String, u64, u64)> = match redis::cmd("XPENDING")
            .arg(self.stream)
            .arg(self.name)
            .arg("-")
            .arg("+")
            .arg(count)
            .query_async(conn)
            .await
        {
            Err(e) if e.code() == Some("NOGROUP") => return Ok(Vec::new()),
            other => other?,
        };
        Ok(rows
            .into_iter()
            .map(|(entry_id, consumer, idle_ms, _)| Pending {
                entry_id,
                consumer,
                idle_ms,
            })
            .collect())
    }
}

/// The delay before attempt `attempts + 1`: `base` doubled per attempt so far, at most
/// `max`, plus up to 50% jitter so retries of many entries spread out.
pub fn backoff(base: Duration, attempts: u32, max: Duration) -> Duration {
    let exp = base.saturating_mul(2u32.saturating_pow(attempts.saturating_sub(1).min(20)));
    exp.min(max).mul_f64(1.0 + rand::random_range(0.0..0.5))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(1);
        let first = backoff(base, 1, max);
        assert!(first >= base && first <= base.mul_f64(1.5));
        let third = backoff(base, 3, max);
        assert!(third >= base * 4 && third <= (base * 4).mul_f64(1.5));
        assert!(backoff(base, 30, max) <= max.mul_f64(1.5));
    }
}
