//! Declares the exchange, the command queue with its dead-lettering, and the
//! dead-letter exchange and queue (contract section 1). Idempotent.

use std::time::Duration;

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, ExchangeKind};

use super::{bounded, BrokerError};
use crate::config::RabbitConfig;
use crate::protocol::command_routing_keys;

/// Redeliveries of one command before RabbitMQ dead-letters it (a poison message).
pub const DELIVERY_LIMIT: i64 = 5;

/// Arguments of the command queue: a quorum queue (durable, replicated, counts
/// deliveries) that dead-letters to the dead-letter exchange.
pub fn command_queue_arguments(cfg: &RabbitConfig) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(cfg.dead_letter_exchange.clone().into()),
    );
    args.insert(
        "x-delivery-limit".into(),
        AMQPValue::LongLongInt(DELIVERY_LIMIT),
    );
    args
}

/// Declares everything. When the command queue already exists with other arguments
/// (declared by someone else), it is used as it is and a warning says so.
pub async fn declare(conn: &Connection, cfg: &RabbitConfig) -> Result<(), BrokerError> {
    let limit = Duration::from_secs(cfg.timeout_s);
    let ch = bounded(limit, "opening a channel", conn.create_channel()).await?;
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    bounded(
        limit,
        "declaring the exchange",
        ch.exchange_declare(
            cfg.exchange.clone().into(),
            ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        ),
    )
    .await?;
    bounded(
        limit,
        "declaring the dead-letter exchange",
        ch.exchange_declare(
            cfg.dead_letter_exchange.clone().into(),
            ExchangeKind::Fanout,
            durable,
            FieldTable::default(),
        ),
    )
    .await?;
    let durable_queue = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    bounded(
        limit,
        "declaring the dead-letter queue",
        ch.queue_declare(
            cfg.dead_letter_queue.clone().into(),
            durable_queue,
            FieldTable::default(),
        ),
    )
    .await?;
    bounded(
        limit,
        "binding the dead-letter queue",
        ch.queue_bind(
            cfg.dead_letter_queue.clone().into(),
            cfg.dead_letter_exchange.clone().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        ),
    )
    .await?;

    let declared = bounded(
        limit,
        "declaring the command queue",
        ch.queue_declare(
            cfg.command_queue.clone().into(),
            durable_queue,
            command_queue_arguments(cfg),
        ),
    )
    .await;
    let ch = match declared {
        Ok(_) => ch,
        Err(e) if e.is_precondition_failed() => {
            tracing::warn!(
                queue = %cfg.command_queue,
                error = %e,
                "the command queue exists with other arguments; using it as it is (no delivery limit)"
            );
            let ch = bounded(limit, "opening a channel", conn.create_channel()).await?;
            bounded(
                limit,
                "checking the command queue",
                ch.queue_declare(
                    cfg.command_queue.clone().into(),
                    QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                ),
            )
            .await?;
            ch
        }
        Err(e) => return Err(e),
    };
    // Every command: section 2's, and section 9's pause, resume and team commands.
    for routing_key in command_routing_keys() {
        bounded(
            limit,
            "binding the command queue",
            ch.queue_bind(
                cfg.command_queue.clone().into(),
                cfg.exchange.clone().into(),
                routing_key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            ),
        )
        .await?;
    }
    let _ = ch.close(200, "declared".into()).await;
    Ok(())
}
