//! The outbox (`outbox`: a list of event JSON, oldest first): events waiting for
//! RabbitMQ while it is away, pushed, peeked and popped by the publisher.

use redis::AsyncCommands;

use super::Store;
use crate::error::StoreError;
use crate::protocol::Event;

impl Store {
    /// Appends events to the outbox (RabbitMQ is away).
    pub async fn outbox_push(&self, events: &[Event]) -> Result<(), StoreError> {
        let key = self.keys.outbox();
        let items: Vec<String> = events
            .iter()
            .map(|e| String::from_utf8(e.to_json()).unwrap_or_default())
            .collect();
        let mut pipe = redis::pipe();
        pipe.rpush(key, items).ignore();
        self.write("rpush outbox", pipe).await
    }

    /// The oldest `max` entries of the outbox: how many were read, and the events among
    /// them (an unreadable entry is dropped with an error log).
    pub async fn outbox_peek(&self, max: isize) -> Result<(usize, Vec<Event>), StoreError> {
        let key = self.keys.outbox();
        let mut conn = self.conn.clone();
        let raw: Vec<String> = self
            .run("lrange outbox", async move {
                conn.lrange(key, 0, max - 1).await
            })
            .await?;
        let events = raw
            .iter()
            .filter_map(|s| match serde_json::from_str(s) {
                Ok(e) => Some(e),
                Err(err) => {
                    tracing::error!(error = %err, "dropping an unreadable outbox entry");
                    None
                }
            })
            .collect();
        Ok((raw.len(), events))
    }

    /// Drops the oldest `n` events of the outbox (published); returns how many remain.
    pub async fn outbox_pop(&self, n: usize) -> Result<usize, StoreError> {
        let key = self.keys.outbox();
        // Fenced: a deposed leader's drainer must not drop events a successor pushed.
        let mut pipe = redis::pipe();
        pipe.cmd("LTRIM").arg(&key).arg(n).arg(-1).ignore();
        self.write("ltrim outbox", pipe).await?;
        self.outbox_len().await
    }

    pub async fn outbox_len(&self) -> Result<usize, StoreError> {
        let key = self.keys.outbox();
        let mut conn = self.conn.clone();
        self.run("llen outbox", async move { conn.llen(key).await })
            .await
    }
}
