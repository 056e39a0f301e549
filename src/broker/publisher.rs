//! The EventPublisher: one connection and one channel in confirm mode. `publish`
//! returns only when RabbitMQ has confirmed every event (persistent, so they are on
//! disk); a broken channel is replaced with backoff until the publish deadline.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::ShortString;
use lapin::{BasicProperties, Channel, Connection};
use tokio::sync::Mutex;

use super::{bounded, connect, Backoff};
use crate::config::RabbitConfig;
use crate::error::PublishError;
use crate::protocol::Event;

struct Link {
    /// Kept so the channel's connection lives as long as the link.
    _conn: Connection,
    channel: Channel,
    /// Distinguishes links so only the broken one is replaced.
    generation: u64,
}

/// Publishes events; cheap to clone, all clones share one channel.
#[derive(Clone)]
pub struct EventPublisher {
    cfg: Arc<RabbitConfig>,
    link: Arc<Mutex<Option<Link>>>,
    generation: Arc<std::sync::atomic::AtomicU64>,
}

impl EventPublisher {
    pub fn new(cfg: RabbitConfig) -> Self {
        EventPublisher {
            cfg: Arc::new(cfg),
            link: Arc::new(Mutex::new(None)),
            generation: Arc::new(std::sync::atomic::AtomicU64::new(0)),
        }
    }

    /// Connects now, so a start-up against an unreachable broker fails early.
    pub async fn connect(&self) -> Result<(), PublishError> {
        self.channel().await.map(|_| ())
    }

    async fn channel(&self) -> Result<(Channel, u64), PublishError> {
        let mut guard = self.link.lock().await;
        if let Some(link) = guard.as_ref() {
            if link.channel.status().connected() {
                return Ok((link.channel.clone(), link.generation));
            }
        }
        let conn = connect(&self.cfg, "agent-manager.publisher")
            .await
            .map_err(PublishError::Unavailable)?;
        let limit = Duration::from_secs(self.cfg.timeout_s);
        let channel = bounded(limit, "opening the publish channel", conn.create_channel())
            .await
            .map_err(PublishError::Unavailable)?;
        bounded(
            limit,
            "enabling publisher confirms",
            channel.confirm_select(ConfirmSelectOptions::default()),
        )
        .await
        .map_err(PublishError::Unavailable)?;
        let generation = self
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        *guard = Some(Link {
            _conn: conn,
            channel: channel.clone(),
            generation,
        });
        Ok((channel, generation))
    }

    async fn drop_link(&self, generation: u64) {
        let mut guard = self.link.lock().await;
        if guard.as_ref().map(|l| l.generation) == Some(generation) {
            *guard = None;
        }
    }

    /// Publishes `events` in order and waits for their confirms, retrying on a fresh
    /// channel until the configured timeout has passed.
    pub async fn publish(&self, events: &[Event]) -> Result<(), PublishError> {
        if events.is_empty() {
            return Ok(());
        }
        let limit = Duration::from_secs(self.cfg.timeout_s);
        let deadline = Instant::now() + limit;
        let mut backoff = Backoff::new(Duration::from_secs(2));
        loop {
            let err = match self.channel().await {
                Ok((channel, generation)) => match self.publish_on(&channel, events, limit).await {
                    Ok(()) => return Ok(()),
                    Err(e) => {
                        self.drop_link(generation).await;
                        e
                    }
                },
                Err(e) => e,
            };
            let delay = backoff.next_delay();
            if Instant::now() + delay >= deadline {
                return Err(err);
            }
            tracing::warn!(error = %err, "publishing events failed; retrying");
            tokio::time::sleep(delay).await;
        }
    }

    async fn publish_on(
        &self,
        channel: &Channel,
        events: &[Event],
        limit: Duration,
    ) -> Result<(), PublishError> {
        let mut confirms = Vec::with_capacity(events.len());
        for event in events {
            let mut props = BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type("application/json".into())
                .with_message_id(ShortString::from(event.event_id.clone()))
                .with_timestamp(chrono::Utc::now().timestamp().max(0) as u64)
                .with_type(event.routing_key().into());
            if let Some(cid) = &event.correlation_id {
                props = props.with_correlation_id(ShortString::from(cid.clone()));
            }
            let confirm = bounded(
                limit,
                "publishing an event",
                channel.basic_publish(
                    self.cfg.exchange.clone().into(),
                    event.routing_key().into(),
                    BasicPublishOptions::default(),
                    &event.to_json(),
                    props,
                ),
            )
            .await
            .map_err(PublishError::Unavailable)?;
            confirms.push(confirm);
        }
        for confirm in confirms {
            let confirmation = tokio::time::timeout(limit, confirm)
                .await
                .map_err(|_| PublishError::Timeout(limit.as_secs()))?
                .map_err(|e| PublishError::Unavailable(e.to_string()))?;
            if confirmation.is_nack() {
                return Err(PublishError::Nacked);
            }
        }
        Ok(())
    }
}
