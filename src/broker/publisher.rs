//! The EventPublisher: one connection and one channel in confirm mode. `publish`
//! returns only when every event is durable: confirmed by RabbitMQ (persistent, so on
//! disk), or, while RabbitMQ is away, kept in the Redis outbox. The outbox is drained
//! in order once RabbitMQ is back; while it holds anything, new events queue behind it,
//! so each agent's events keep their order. A broken channel is replaced with backoff.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::ShortString;
use lapin::{BasicProperties, Channel, Connection, PublisherConfirm};
use tokio::sync::{watch, Mutex, Notify};

use super::{bounded, connect, Backoff, BrokerError};
use crate::config::RabbitConfig;
use crate::error::PublishError;
use crate::metrics::events::{EventPublished, OutboxLength, Reconnecting};
use crate::protocol::Event;
use crate::store::Store;

/// Events published from the outbox per round.
const OUTBOX_BATCH: isize = 100;

/// The Redis outbox: where events wait while RabbitMQ is away.
struct Outbox {
    store: Store,
    /// The outbox may hold events: new ones must queue behind them.
    pending: std::sync::atomic::AtomicBool,
    /// Serialises "append to the outbox" against "the outbox is empty now".
    lock: Mutex<()>,
    /// Wakes the drainer.
    wake: Notify,
}

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
    /// `None`: no outbox (a publish fails while RabbitMQ is away).
    outbox: Option<Arc<Outbox>>,
}

impl EventPublisher {
    pub fn new(cfg: RabbitConfig) -> Self {
        EventPublisher {
            cfg: Arc::new(cfg),
            link: Arc::new(Mutex::new(None)),
            generation: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            outbox: None,
        }
    }

    /// A publisher that keeps events in `store`'s outbox while RabbitMQ is away. Run
    /// [`EventPublisher::drain_outbox`] beside it.
    pub fn with_outbox(cfg: RabbitConfig, store: Store) -> Self {
        let mut publisher = Self::new(cfg);
        publisher.outbox = Some(Arc::new(Outbox {
            store,
            pending: std::sync::atomic::AtomicBool::new(true),
            lock: Mutex::new(()),
            wake: Notify::new(),
        }));
        publisher
    }

    /// Events waiting in the outbox, or 0 without one.
    pub async fn outbox_len(&self) -> usize {
        match &self.outbox {
            Some(ob) => ob.store.outbox_len().await.unwrap_or(0),
            None => 0,
        }
    }

    /// Publishes the outbox in order whenever it holds events, until `shutdown` (then
    /// one last try).
    pub async fn drain_outbox(self, mut shutdown: watch::Receiver<bool>) {
        let Some(ob) = self.outbox.clone() else {
            return;
        };
        let mut backoff = Backoff::new(Duration::from_secs(5));
        loop {
            let stopping = *shutdown.borrow();
            if ob.pending.load(std::sync::atomic::Ordering::SeqCst) {
                match self.drain_once(&ob).await {
                    Ok(true) => backoff.reset(),
                    Ok(false) => continue, // more to send
                    Err(e) => {
                        let delay = backoff.next_delay();
                        tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "outbox not drained yet");
                        if stopping {
                            return;
                        }
                        tokio::select! {
                            _ = tokio::time::sleep(delay) => {}
                            _ = shutdown.changed() => {}
                        }
                        continue;
                    }
                }
            }
            if stopping {
                return;
            }
            tokio::select! {
                _ = ob.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// Publishes one batch of the outbox; `Ok(true)` when it is empty afterwards.
    async fn drain_once(&self, ob: &Outbox) -> Result<bool, PublishError> {
        let (read, events) = ob
            .store
            .outbox_peek(OUTBOX_BATCH)
            .await
            .map_err(PublishError::Outbox)?;
        if read > 0 {
            let limit = Duration::from_secs(self.cfg.timeout_s);
            self.publish_direct(&events, limit).await?;
        }
        let _guard = ob.lock.lock().await;
        let left = ob
            .store
            .outbox_pop(read)
            .await
            .map_err(PublishError::Outbox)?;
        crate::metrics::emit(OutboxLength {
            events: left as u64,
        });
        if read > 0 {
            tracing::info!(
                published = events.len(),
                left,
                "published events from the outbox"
            );
        }
        if left == 0 {
            ob.pending.store(false, std::sync::atomic::Ordering::SeqCst);
            return Ok(true);
        }
        Ok(false)
    }

    async fn push_outbox(&self, ob: &Outbox, events: &[Event]) -> Result<(), PublishError> {
        ob.store
            .outbox_push(events)
            .await
            .map_err(PublishError::Outbox)?;
        ob.pending.store(true, std::sync::atomic::Ordering::SeqCst);
        ob.wake.notify_one();
        if let Ok(len) = ob.store.outbox_len().await {
            crate::metrics::emit(OutboxLength { events: len as u64 });
        }
        Ok(())
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
        let conn = connect(&self.cfg, "agent-manager.publisher").await?;
        let limit = Duration::from_secs(self.cfg.timeout_s);
        let channel = bounded(limit, "opening the publish channel", conn.create_channel()).await?;
        bounded(
            limit,
            "enabling publisher confirms",
            channel.confirm_select(ConfirmSelectOptions::default()),
        )
        .await?;
        let generation = self
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        if generation > 1 {
            crate::metrics::emit(Reconnecting {
                service: "rabbitmq_publisher",
            });
        }
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

    /// Makes `events` durable, in order: confirmed by RabbitMQ, or queued in the outbox
    /// while RabbitMQ is away (or while the outbox still holds older events).
    pub async fn publish(&self, events: &[Event]) -> Result<(), PublishError> {
        if events.is_empty() {
            return Ok(());
        }
        let result = self.publish_durably(events).await;
        if result.is_ok() {
            for e in events {
                crate::metrics::emit(EventPublished {
                    event: e.routing_key(),
                });
            }
        }
        result
    }

    async fn publish_durably(&self, events: &[Event]) -> Result<(), PublishError> {
        let limit = Duration::from_secs(self.cfg.timeout_s);
        let Some(ob) = self.outbox.clone() else {
            return self.publish_direct(events, limit).await;
        };
        if ob.pending.load(std::sync::atomic::Ordering::SeqCst) {
            let _guard = ob.lock.lock().await;
            if ob.pending.load(std::sync::atomic::Ordering::SeqCst) {
                return self.push_outbox(&ob, events).await;
            }
        }
        match self.publish_direct(events, limit).await {
            Ok(()) => Ok(()),
            Err(e) => {
                tracing::warn!(error = %e, events = events.len(), "RabbitMQ unavailable; keeping events in the Redis outbox");
                let _guard = ob.lock.lock().await;
                self.push_outbox(&ob, events).await
            }
        }
    }

    /// Publishes one message that is not an event (a team member's
    /// `agent:<agent_id>:team`, contract section 9) to the exchange with `routing_key`:
    /// persistent, JSON, confirmed, retried on a fresh channel until the timeout. It has
    /// no outbox: while RabbitMQ is away it fails and the command sending it is retried.
    pub async fn publish_message(
        &self,
        routing_key: &str,
        body: &[u8],
    ) -> Result<(), PublishError> {
        let limit = Duration::from_secs(self.cfg.timeout_s);
        self.retrying(limit, routing_key, |channel| async move {
            self.publish_one(&channel, routing_key, body, limit).await
        })
        .await
    }

    /// Runs `attempt` on the channel until it succeeds or `limit` has passed; a failed
    /// attempt drops the link, so the next one gets a fresh channel. `what` names it in
    /// the log.
    async fn retrying<F, Fut>(
        &self,
        limit: Duration,
        what: &str,
        mut attempt: F,
    ) -> Result<(), PublishError>
    where
        F: FnMut(Channel) -> Fut,
        Fut: std::future::Future<Output = Result<(), PublishError>>,
    {
        let deadline = Instant::now() + limit;
        let mut backoff = Backoff::new(Duration::from_secs(2));
        loop {
            let err = match self.channel().await {
                Ok((channel, generation)) => match attempt(channel).await {
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
            tracing::warn!(error = %err, what, "publishing failed; retrying");
            tokio::time::sleep(delay).await;
        }
    }

    async fn publish_one(
        &self,
        channel: &Channel,
        routing_key: &str,
        body: &[u8],
        limit: Duration,
    ) -> Result<(), PublishError> {
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_message_id(ShortString::from(uuid::Uuid::new_v4().to_string()))
            .with_timestamp(chrono::Utc::now().timestamp().max(0) as u64);
        let confirm = bounded(
            limit,
            "publishing a message",
            channel.basic_publish(
                self.cfg.exchange.clone().into(),
                routing_key.to_string().into(),
                BasicPublishOptions::default(),
                body,
                props,
            ),
        )
        .await?;
        confirmed(confirm, limit).await
    }

    /// Publishes `events` in order and waits for their confirms, retrying on a fresh
    /// channel until `limit` has passed.
    async fn publish_direct(&self, events: &[Event], limit: Duration) -> Result<(), PublishError> {
        self.retrying(limit, "events", |channel| async move {
            self.publish_on(&channel, events, limit).await
        })
        .await
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
            .await?;
            confirms.push(confirm);
        }
        for confirm in confirms {
            confirmed(confirm, limit).await?;
        }
        Ok(())
    }
}

/// Waits up to `limit` for the broker's confirm of one publish; a nack is an error.
async fn confirmed(confirm: PublisherConfirm, limit: Duration) -> Result<(), PublishError> {
    let confirmation = tokio::time::timeout(limit, confirm)
        .await
        .map_err(|_| PublishError::Timeout(limit.as_secs()))?
        .map_err(|source| BrokerError::Call {
            op: "waiting for the broker's confirm".into(),
            source,
        })?;
    if confirmation.is_nack() {
        return Err(PublishError::Nacked);
    }
    Ok(())
}
