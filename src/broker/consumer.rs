//! The CommandConsumer: reads the command queue with manual acks and a prefetch limit,
//! decodes and validates each delivery, and acks it only when its command is done.
//!
//! - not a JSON object: rejected to the dead-letter queue (and logged);
//! - a JSON object that can never succeed: answered with `agent.error`, then acked;
//! - a valid command (about an agent, or a team): routed to the supervisor in order,
//!   acked when the agent actor (the team actor) reports it durable and answered;
//!   requeued when Redis or RabbitMQ was away.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::{Message, Recipient};
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
    BasicRejectOptions,
};
use lapin::types::FieldTable;
use lapin::Acker;
use tokio::sync::watch;

use super::publisher::EventPublisher;
use super::{bounded, connect, topology, Backoff, BrokerError};
use crate::config::{AgentPolicy, RabbitConfig};
use crate::error::{AgentError, PublishError, COMMAND_RETRY_AFTER};
use crate::metrics::events::{CommandAcknowledged, CommandHandled, Reconnecting};
use crate::protocol::{decode, Command, Decoded, Event, HaltCommand, Rejection, TeamCommand};

/// Bound on waiting for in-flight commands at shutdown.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(30);

/// A valid command for the agents; resolves when it is done (durable and answered).
/// The supervisor handles it, routing it to the agent's actor.
#[derive(Message)]
#[rtype(result = "Result<(), AgentError>")]
pub struct Dispatch(pub Command);

/// A valid team command; resolves when it is done. The supervisor handles it, handing
/// it to the team actor.
#[derive(Message)]
#[rtype(result = "Result<(), AgentError>")]
pub struct DispatchTeam(pub TeamCommand);

/// A valid halt command; resolves when it is done. The supervisor handles it, handing
/// it to the halt actor with the agents it knows.
#[derive(Message)]
#[rtype(result = "Result<(), AgentError>")]
pub struct DispatchHalt(pub HaltCommand);

pub struct CommandConsumer {
    cfg: RabbitConfig,
    policy: AgentPolicy,
    /// Where valid commands go (the supervisor), in delivery order.
    commands: Recipient<Dispatch>,
    /// Where valid team commands go (the supervisor too: one mailbox keeps the order).
    team_commands: Recipient<DispatchTeam>,
    /// Where valid halt commands go (the supervisor too).
    halt_commands: Recipient<DispatchHalt>,
    publisher: EventPublisher,
    /// Deliveries received and not yet acked, rejected or requeued.
    inflight: Arc<AtomicUsize>,
    /// False while Redis or Docker is unreachable: consuming pauses.
    deps_ok: watch::Receiver<bool>,
    /// The connection's name (the management UI's; a new leader closes a deposed one's
    /// consumer by it: [`consumer_name`]).
    name: String,
}

/// The consumer connection's name for manager `id` of `instance` (contract section 12:
/// a new leader closes the consumers of this installation that are not its own).
pub fn consumer_name(instance: &str, id: &str) -> String {
    format!("{} {instance} {id}", CONSUMER_NAME_PREFIX)
}

/// What every consumer connection's name starts with.
pub const CONSUMER_NAME_PREFIX: &str = "agent-manager.consumer";

impl CommandConsumer {
    pub fn new(
        cfg: RabbitConfig,
        policy: AgentPolicy,
        commands: Recipient<Dispatch>,
        team_commands: Recipient<DispatchTeam>,
        halt_commands: Recipient<DispatchHalt>,
        publisher: EventPublisher,
        deps_ok: watch::Receiver<bool>,
    ) -> Self {
        CommandConsumer {
            cfg,
            policy,
            commands,
            team_commands,
            halt_commands,
            publisher,
            inflight: Arc::new(AtomicUsize::new(0)),
            deps_ok,
            name: CONSUMER_NAME_PREFIX.into(),
        }
    }

    /// Names the connection ([`consumer_name`]).
    pub fn named(mut self, name: String) -> Self {
        self.name = name;
        self
    }

    /// A counter of deliveries in flight, for graceful shutdown.
    pub fn inflight(&self) -> Arc<AtomicUsize> {
        self.inflight.clone()
    }

    /// Consumes until `shutdown` turns true, reconnecting with backoff on any failure.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>, ready: watch::Sender<bool>) {
        let mut backoff = Backoff::new(Duration::from_secs(10));
        loop {
            if *shutdown.borrow() {
                return;
            }
            match self.consume(&mut shutdown, &ready).await {
                Ok(conn) => {
                    // In-flight commands finish and settle on this connection first.
                    self.drain().await;
                    let _ = tokio::time::timeout(
                        Duration::from_secs(self.cfg.timeout_s),
                        conn.close(200, "shutting down".into()),
                    )
                    .await;
                    return;
                }
                Err(e) => {
                    let _ = ready.send(false);
                    crate::metrics::emit(Reconnecting {
                        service: "rabbitmq_consumer",
                    });
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "command consumer lost RabbitMQ; reconnecting");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = shutdown.changed() => return,
                    }
                }
            }
        }
    }

    /// Waits (bounded) until every delivery in flight is settled.
    async fn drain(&self) {
        let deadline = tokio::time::Instant::now() + SHUTDOWN_DRAIN;
        while self.inflight.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left = self.inflight.load(Ordering::SeqCst);
        if left > 0 {
            tracing::warn!(
                left,
                "shutting down with commands in flight; RabbitMQ redelivers them"
            );
        }
    }

    /// One connection's worth of consuming: the connection on shutdown (to settle what is
    /// in flight), `Err` on a broken link.
    async fn consume(
        &self,
        shutdown: &mut watch::Receiver<bool>,
        ready: &watch::Sender<bool>,
    ) -> Result<lapin::Connection, BrokerError> {
        let limit = Duration::from_secs(self.cfg.timeout_s);
        let conn = connect(&self.cfg, &self.name).await?;
        topology::declare(&conn, &self.cfg).await?;
        let channel = bounded(limit, "opening the consume channel", conn.create_channel()).await?;
        bounded(
            limit,
            "setting the prefetch",
            channel.basic_qos(self.cfg.prefetch, BasicQosOptions::default()),
        )
        .await?;
        let mut deps_ok = self.deps_ok.clone();
        loop {
            // While Redis or Docker is away, commands wait in RabbitMQ instead of failing.
            while !*deps_ok.borrow_and_update() {
                let _ = ready.send(false);
                tokio::select! {
                    changed = deps_ok.changed() => if changed.is_err() { break },
                    _ = shutdown.changed() => return Ok(conn),
                }
            }
            let tag = format!("agent-manager-{}", uuid::Uuid::new_v4().simple());
            let mut deliveries = bounded(
                limit,
                "starting to consume",
                channel.basic_consume(
                    self.cfg.command_queue.clone().into(),
                    tag.clone().into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                ),
            )
            .await?;
            tracing::info!(queue = %self.cfg.command_queue, prefetch = self.cfg.prefetch, "consuming commands");
            let _ = ready.send(true);
            loop {
                tokio::select! {
                    next = deliveries.next() => match next {
                        Some(Ok(delivery)) => self.handle(delivery),
                        Some(Err(source)) => {
                            return Err(BrokerError::Call { op: "consumer stream".into(), source })
                        }
                        None => return Err(BrokerError::StreamEnded),
                    },
                    changed = deps_ok.changed() => {
                        if changed.is_ok() && !*deps_ok.borrow() {
                            tracing::warn!("Redis or Docker is unreachable: not taking commands until both are back");
                            let _ = ready.send(false);
                            self.stop_consuming(&channel, &tag, &mut deliveries, limit).await;
                            break;
                        }
                    }
                    _ = shutdown.changed() => {
                        self.stop_consuming(&channel, &tag, &mut deliveries, limit).await;
                        return Ok(conn);
                    }
                }
            }
        }
    }

    /// Cancels the consumer and hands back to RabbitMQ what it had delivered but this
    /// manager had not started on.
    async fn stop_consuming(
        &self,
        channel: &lapin::Channel,
        tag: &str,
        deliveries: &mut lapin::Consumer,
        limit: Duration,
    ) {
        let _ = bounded(
            limit,
            "cancelling the consumer",
            channel.basic_cancel(tag.to_string().into(), BasicCancelOptions::default()),
        )
        .await;
        while let Ok(Some(Ok(delivery))) =
            tokio::time::timeout(Duration::from_millis(200), deliveries.next()).await
        {
            let _ = bounded(
                limit,
                "requeueing",
                delivery.acker.nack(BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                }),
            )
            .await;
        }
    }

    fn handle(&self, delivery: Delivery) {
        let received = std::time::Instant::now();
        self.inflight.fetch_add(1, Ordering::SeqCst);
        let guard = InflightGuard(self.inflight.clone());
        let routing_key = delivery.routing_key.as_str().to_string();
        let amqp_message_id = delivery
            .properties
            .message_id()
            .as_ref()
            .map(|s| s.as_str().to_string());
        let acker = delivery.acker;
        let limit = Duration::from_secs(self.cfg.timeout_s);
        match decode(
            &routing_key,
            amqp_message_id.as_deref(),
            &delivery.data,
            &self.policy,
        ) {
            Err(Rejection::NotAnObject(reason)) => {
                tracing::warn!(%routing_key, bytes = delivery.data.len(), %reason, "dead-lettering a delivery that is not a JSON object");
                crate::metrics::emit(CommandHandled {
                    command: "unknown",
                    outcome: "dead_lettered",
                });
                actix_rt::spawn(async move {
                    let _guard = guard;
                    let _ = bounded(
                        limit,
                        "rejecting",
                        acker.reject(BasicRejectOptions { requeue: false }),
                    )
                    .await;
                });
            }
            Err(Rejection::Invalid(invalid)) => {
                tracing::info!(message_id = %invalid.message_id, agent_id = %invalid.agent_id, code = invalid.code.as_str(), message = %invalid.message, "refusing an invalid command");
                crate::metrics::emit(CommandHandled {
                    command: invalid
                        .command
                        .as_deref()
                        .and_then(|c| crate::protocol::command_routing_keys().find(|k| *k == c))
                        .unwrap_or("unknown"),
                    outcome: invalid.code.as_str(),
                });
                let publisher = self.publisher.clone();
                actix_rt::spawn(async move {
                    let _guard = guard;
                    let event = Event::for_invalid(&invalid);
                    let done = publisher.publish(&[event]).await.map_err(NotDone::from);
                    settle(&acker, done, limit).await;
                });
            }
            Ok(decoded) => {
                // Sent now (in delivery order); awaited in a task so other agents'
                // commands go on meanwhile.
                type Request = std::pin::Pin<
                    Box<
                        dyn std::future::Future<
                            Output = Result<Result<(), AgentError>, actix::MailboxError>,
                        >,
                    >,
                >;
                let (command, request): (&str, Request) = match decoded {
                    Decoded::Agent(cmd) => {
                        let command = cmd.kind.routing_key();
                        (command, Box::pin(self.commands.send(Dispatch(cmd))))
                    }
                    Decoded::Team(cmd) => {
                        let command = cmd.kind.routing_key();
                        (
                            command,
                            Box::pin(self.team_commands.send(DispatchTeam(cmd))),
                        )
                    }
                    Decoded::Halt(cmd) => {
                        let command = cmd.kind.routing_key();
                        (
                            command,
                            Box::pin(self.halt_commands.send(DispatchHalt(cmd))),
                        )
                    }
                };
                actix_rt::spawn(async move {
                    let _guard = guard;
                    let done = match request.await {
                        Ok(done) => done.map_err(NotDone::from),
                        Err(unanswered) => Err(NotDone::from(unanswered)),
                    };
                    if done.is_ok() {
                        crate::metrics::emit(CommandAcknowledged {
                            command,
                            took: received.elapsed(),
                        });
                    }
                    settle(&acker, done, limit).await;
                });
            }
        }
    }
}

/// Why a delivery was not done: it goes back to RabbitMQ, and the reason to the log.
#[derive(Debug, thiserror::Error)]
enum NotDone {
    /// The command met a service away (the error policy said retry).
    #[error(transparent)]
    Command(#[from] AgentError),
    /// The answer to an invalid command could not be made durable.
    #[error(transparent)]
    Answer(#[from] PublishError),
    /// The supervisor's mailbox did not take or answer the command.
    #[error("supervisor unavailable: {0}")]
    Supervisor(#[from] actix::MailboxError),
}

/// Acks a done command; hands an undone one back to RabbitMQ after a pause.
async fn settle(acker: &Acker, done: Result<(), NotDone>, limit: Duration) {
    match done {
        Ok(()) => {
            if let Err(e) = bounded(limit, "acking", acker.ack(BasicAckOptions::default())).await {
                tracing::warn!(error = %e, "ack failed; the command will be redelivered and answered again");
            }
        }
        Err(e) => {
            // The error policy (`AgentError::disposition`): a command not done is retried
            // after a pause, by RabbitMQ's redelivery.
            tracing::warn!(error = %e, "command not done; requeueing it");
            tokio::time::sleep(COMMAND_RETRY_AFTER).await;
            let _ = bounded(
                limit,
                "requeueing",
                acker.nack(BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                }),
            )
            .await;
        }
    }
}

struct InflightGuard(Arc<AtomicUsize>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
