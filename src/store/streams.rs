//! The agents' event streams (`agent:<agent_id>:events`, contract section 5): appending
//! events (capped at the configured length, inside a record's transaction) and reading
//! them back for operators' tools ([`StreamEntry`]).

use std::time::Duration;

use redis::AsyncCommands;

use super::Store;
use crate::error::StoreError;
use crate::protocol::Event;

impl Store {
    /// Queues `event` on its agent's stream (capped) in `pipe`.
    pub(super) fn push_event(&self, pipe: &mut redis::Pipeline, event: &Event) {
        let json = String::from_utf8(event.to_json()).unwrap_or_default();
        pipe.cmd("XADD")
            .arg(self.keys.events(&event.agent_id))
            .arg("MAXLEN")
            .arg(self.stream_max_len)
            .arg("*")
            .arg("event")
            .arg(event.routing_key())
            .arg("event_id")
            .arg(&event.event_id)
            .arg("data")
            .arg(json)
            .ignore();
    }

    /// The last `count` entries of the agent's event stream, oldest first.
    pub async fn last_events(
        &self,
        agent_id: &str,
        count: usize,
    ) -> Result<Vec<StreamEntry>, StoreError> {
        let key = self.keys.events(agent_id);
        let mut conn = self.conn.clone();
        let reply: redis::streams::StreamRangeReply = self
            .run("xrevrange", async move {
                conn.xrevrange_count(key, "+", "-", count).await
            })
            .await?;
        let mut entries: Vec<StreamEntry> = reply.ids.into_iter().map(StreamEntry::from).collect();
        entries.reverse();
        Ok(entries)
    }

    /// Up to `count` entries of the agent's event stream older than the entry
    /// `before` (from the newest when `None`), newest first: fewer than `count` means
    /// the stream ends there. Pass the last entry's `id` to read on.
    pub async fn events_before(
        &self,
        agent_id: &str,
        before: Option<&str>,
        count: usize,
    ) -> Result<Vec<StreamEntry>, StoreError> {
        let rows = self
            .stream_before(&self.keys.events(agent_id), before, count)
            .await?;
        Ok(rows.into_iter().map(StreamEntry::from).collect())
    }

    /// Up to `count` entries of stream `key` older than the entry `before` (from the
    /// newest when `None`), newest first. `before` is read inclusively and dropped, so
    /// that Redis before 6.2 (no exclusive ranges) answers too.
    pub(super) async fn stream_before(
        &self,
        key: &str,
        before: Option<&str>,
        count: usize,
    ) -> Result<Vec<redis::streams::StreamId>, StoreError> {
        let end = before.unwrap_or("+").to_string();
        let asked = count + usize::from(before.is_some());
        let key = key.to_string();
        let mut conn = self.conn.clone();
        let reply: redis::streams::StreamRangeReply = self
            .run("xrevrange", async move {
                conn.xrevrange_count(key, end, "-", asked).await
            })
            .await?;
        let mut rows = reply.ids;
        if let (Some(before), Some(first)) = (before, rows.first()) {
            if first.id == before {
                rows.remove(0);
            }
        }
        rows.truncate(count);
        Ok(rows)
    }

    /// Entries of the agent's event stream after stream id `after` ("0" for all),
    /// waiting up to `block` (XREAD BLOCK) when there are none yet. `block` is capped
    /// at half the Redis timeout so that the call itself stays bounded; an empty answer
    /// means "nothing new yet". Blocks this store's connection meanwhile: for tools,
    /// not for the daemon.
    pub async fn events_after(
        &self,
        agent_id: &str,
        after: &str,
        block: Duration,
        count: usize,
    ) -> Result<Vec<StreamEntry>, StoreError> {
        let block_ms = block.min(self.timeout / 2).as_millis().max(1);
        let opts = redis::streams::StreamReadOptions::default()
            .block(usize::try_from(block_ms).unwrap_or(1))
            .count(count.max(1));
        let key = self.keys.events(agent_id);
        let after = after.to_string();
        let mut conn = self.conn.clone();
        let reply: Option<redis::streams::StreamReadReply> = self
            .run("xread", async move {
                conn.xread_options(&[key], &[after], &opts).await
            })
            .await?;
        Ok(reply
            .into_iter()
            .flat_map(|r| r.keys)
            .flat_map(|k| k.ids)
            .map(StreamEntry::from)
            .collect())
    }
}

/// One entry of an agent's event stream (`agent:<id>:events`).
#[derive(Debug, Clone, PartialEq)]
pub struct StreamEntry {
    /// The stream id (`<ms>-<seq>`), for reading on after it.
    pub id: String,
    /// Field `event`: the routing key.
    pub event: String,
    /// Field `event_id`.
    pub event_id: String,
    /// Field `data`: the event as published (JSON).
    pub data: String,
}

impl From<redis::streams::StreamId> for StreamEntry {
    fn from(s: redis::streams::StreamId) -> Self {
        let field = |name: &str| -> String {
            s.map
                .get(name)
                .and_then(|v| redis::from_redis_value_ref::<String>(v).ok())
                .unwrap_or_default()
        };
        StreamEntry {
            event: field("event"),
            event_id: field("event_id"),
            data: field("data"),
            id: s.id.clone(),
        }
    }
}
