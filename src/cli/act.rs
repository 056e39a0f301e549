//! `agent-manager agents create|update|start|stop|restart|delete|pause|resume`: the
//! operator's commands that act on an agent. Each sends the contract's command (section
//! 2, section 9; an [`Order`]) to the exchange as the Core Engine would — with the owner
//! from the spec or read from the agent's record, a fresh
//! `message_id`, persistent, mandatory and confirmed — and, with `--wait`, waits for the
//! answer carrying that `message_id` as `correlation_id`: the command's success event
//! (exit 0) or `agent.error` (exit 1, its code and message on stderr). [`send`] is the
//! one path every acting command on an agent takes; [`round_trip`] is the one path of
//! any command the CLI sends (the halt commands of [`super::halt`] too), and its broker
//! steps (`confirmed_channel`, `own_queue`, `publish`, `close`) are functions of their
//! own, which [`super::task`] uses as well.

use std::io::Write;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection};
use serde_json::{json, Value};

use super::order::Order;
use super::{CliError, Format};
use crate::broker::{bounded, connect, BrokerError};
use crate::config::{Config, RabbitConfig};
use crate::protocol::{valid_agent_id, Event, EventKind};
use crate::redact;
use crate::store::Store;

/// Who asks, for `requested_by`: the configured operator name, else the OS user
/// (`USER`, `LOGNAME`, `USERNAME` from `env`), else nobody named.
pub fn operator_name(
    configured: Option<&str>,
    env: impl Fn(&str) -> Option<String>,
) -> Option<String> {
    configured
        .map(str::to_string)
        .or_else(|| {
            ["USER", "LOGNAME", "USERNAME"]
                .into_iter()
                .find_map(|var| env(var).filter(|v| !v.trim().is_empty()))
        })
        .map(|name| name.trim().to_string())
}

/// Sends `order` for its agent and, when `wait` is given, waits that long for the
/// answer. Prints what happened to `out`.
pub async fn send(
    config: &Config,
    order: &Order,
    wait: Option<Duration>,
    format: Format,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    if !valid_agent_id(&order.agent_id) {
        return Err(CliError::Usage(format!(
            "'{}' is not an agent id (letters, digits, '_', '.', '-'; at most 63)",
            order.agent_id
        )));
    }
    let customer_id = match &order.customer_id {
        Some(c) => c.clone(),
        None => owner(config, &order.agent_id).await?,
    };
    let message_id = uuid::Uuid::new_v4().to_string();
    let command = Outgoing {
        routing_key: order.kind.routing_key(),
        body: order.body(&message_id, &customer_id),
        message_id: &message_id,
        answers: order.answers(),
        what: format!("{} for agent {}", order.kind, order.agent_id),
    };
    let answer = round_trip(&config.rabbitmq, &command, wait, |e| order.is_done_at(e)).await?;
    let Some(event) = answer else {
        match format {
            Format::Json => writeln!(
                out,
                "{}",
                json!({"sent": order.kind.routing_key(), "agent_id": order.agent_id, "message_id": message_id})
            )?,
            Format::Table => writeln!(
                out,
                "sent {} for agent {} (message_id {message_id})",
                order.kind, order.agent_id
            )?,
        }
        return Ok(());
    };
    if let Some(refused) = refusal(&event) {
        return Err(refused);
    }
    match format {
        Format::Json => writeln!(out, "{}", String::from_utf8_lossy(&event.to_json()))?,
        Format::Table => writeln!(
            out,
            "{} {} (status {})",
            event.routing_key(),
            order.agent_id,
            event.status
        )?,
    }
    Ok(())
}

/// A command of the contract on its way, and the events that answer it.
pub(crate) struct Outgoing<'a> {
    /// Its routing key (`agent.stop`, `halt.engage`, ...).
    pub routing_key: &'static str,
    /// Its body, carrying `message_id`.
    pub body: Value,
    pub message_id: &'a str,
    /// The events that may answer it when it succeeds (`agent.error` always may): the
    /// answer queue is bound to them.
    pub answers: Vec<EventKind>,
    /// What it is, for people ("agent.stop for agent a1").
    pub what: String,
}

/// Sends `command` to the exchange as the Core Engine would and, when `wait` is given,
/// waits that long for its answer: the first event carrying its `message_id` as
/// `correlation_id` that is `agent.error` or that `done` says ends it. `Ok(None)`: not
/// waiting, the broker confirmed the command. The answer queue is bound before the
/// command goes, so the answer cannot be missed; the connection is closed either way.
pub(crate) async fn round_trip(
    rabbit: &RabbitConfig,
    command: &Outgoing<'_>,
    wait: Option<Duration>,
    done: impl Fn(&Event) -> bool,
) -> Result<Option<Event>, CliError> {
    let limit = Duration::from_secs(rabbit.timeout_s);
    let (conn, channel) = confirmed_channel(rabbit).await?;
    let answers = match wait {
        Some(_) => {
            let keys: Vec<String> = command
                .answers
                .iter()
                .copied()
                .chain([EventKind::Error])
                .map(|k| k.routing_key().to_string())
                .collect();
            Some(
                own_queue(&channel, &rabbit.exchange, &keys, limit)
                    .await
                    .map_err(|e| rabbit_down(rabbit, &e))?,
            )
        }
        None => None,
    };
    let body = command.body.to_string();
    let routed = publish(
        &channel,
        rabbit,
        command.routing_key,
        body.as_bytes(),
        command.message_id,
    )
    .await;
    let answer = match (routed, answers, wait) {
        (Err(e), _, _) => Err(e),
        (Ok(false), _, _) => Err(CliError::Unavailable(format!(
            "no queue takes {} on exchange {}: is the manager running? (it declares {})",
            command.routing_key, rabbit.exchange, rabbit.command_queue
        ))),
        (Ok(true), Some(mut answers), Some(wait)) => wait_answer(&mut answers, command, wait, done)
            .await
            .map(Some),
        (Ok(true), _, _) => Ok(None),
    };
    close(&conn, limit).await;
    answer
}

/// The refusal `event` carries when it is `agent.error`: its code and message.
pub(crate) fn refusal(event: &Event) -> Option<CliError> {
    (event.event == EventKind::Error).then(|| {
        let detail = |k: &str| event.details[k].as_str().unwrap_or_default().to_string();
        CliError::Refused {
            code: detail("code"),
            message: detail("message"),
        }
    })
}

/// The agent's owner, from its record (the command must name it).
async fn owner(config: &Config, agent_id: &str) -> Result<String, CliError> {
    let down = |e: crate::error::StoreError| {
        CliError::Unavailable(redact::secret_of_url_in(
            &format!(
                "Redis at {}: {} (`agent-manager check` says what to do)",
                redact::url(&config.redis.url),
                super::error_chain(&e)
            ),
            &config.redis.url,
        ))
    };
    let store = Store::connect(&config.redis).await.map_err(down)?;
    let found = store
        .load_fields(&[agent_id.to_string()])
        .await
        .map_err(down)?;
    found
        .into_iter()
        .next()
        .and_then(|(_, fields)| fields.get("customer_id").cloned())
        .filter(|c| !c.is_empty())
        .ok_or_else(|| {
            let scope = match config.redis.prefix.as_str() {
                "" => String::new(),
                prefix => format!(" (REDIS_PREFIX '{prefix}')"),
            };
            CliError::NotFound(format!("agent {agent_id} not found{scope}"))
        })
}

/// A RabbitMQ call that failed, naming the broker (password redacted) and the fix: the
/// one place the CLI turns a [`BrokerError`] into its own.
pub(super) fn rabbit_down(rabbit: &RabbitConfig, e: &BrokerError) -> CliError {
    CliError::Unavailable(redact::secret_of_url_in(
        &format!(
            "RabbitMQ at {}: {} (`agent-manager check` says what to do)",
            redact::url(&rabbit.url),
            super::error_chain(e)
        ),
        &rabbit.url,
    ))
}

/// A connection of the CLI's own and a channel on it with publisher confirms; each call
/// bounded by `RABBITMQ_TIMEOUT_S`.
pub(super) async fn confirmed_channel(
    rabbit: &RabbitConfig,
) -> Result<(Connection, Channel), CliError> {
    let limit = Duration::from_secs(rabbit.timeout_s);
    let conn = connect(rabbit, "agent-manager.cli")
        .await
        .map_err(|e| rabbit_down(rabbit, &e))?;
    let channel = bounded(limit, "opening a channel", conn.create_channel())
        .await
        .map_err(|e| rabbit_down(rabbit, &e))?;
    bounded(
        limit,
        "enabling publisher confirms",
        channel.confirm_select(ConfirmSelectOptions::default()),
    )
    .await
    .map_err(|e| rabbit_down(rabbit, &e))?;
    Ok((conn, channel))
}

/// Publishes `body` to the exchange with `routing_key` as the Core Engine would:
/// persistent, `application/json`, `message_id`, mandatory, and waits (bounded) for the
/// broker's confirm. `Ok(false)`: no queue is bound to the key (the broker returned it).
pub(super) async fn publish(
    channel: &Channel,
    rabbit: &RabbitConfig,
    routing_key: &str,
    body: &[u8],
    message_id: &str,
) -> Result<bool, CliError> {
    let limit = Duration::from_secs(rabbit.timeout_s);
    let unavailable = |e: BrokerError| rabbit_down(rabbit, &e);
    let props = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_message_id(ShortString::from(message_id.to_string()));
    let confirm = bounded(
        limit,
        format!("publishing {routing_key}"),
        channel.basic_publish(
            rabbit.exchange.clone().into(),
            routing_key.into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            body,
            props,
        ),
    )
    .await
    .map_err(unavailable)?;
    let op = || format!("confirming {routing_key}");
    let confirmation = bounded(limit, op(), confirm).await.map_err(unavailable)?;
    if confirmation.is_nack() {
        return Err(unavailable(BrokerError::Nacked { op: op().into() }));
    }
    Ok(confirmation.take_message().is_none())
}

/// Closes the CLI's connection, waiting at most `limit` (the work is done either way).
pub(super) async fn close(conn: &Connection, limit: Duration) {
    let _ = tokio::time::timeout(limit, conn.close(200, "done".into())).await;
}

/// A queue of the CLI's own (server-named, exclusive, auto-delete), bound to `keys` on
/// `exchange` and consumed without acks: bound before anything is sent, so no answer is
/// missed.
pub(super) async fn own_queue(
    channel: &Channel,
    exchange: &str,
    keys: &[String],
    limit: Duration,
) -> Result<lapin::Consumer, BrokerError> {
    let queue = bounded(
        limit,
        "declaring an answer queue",
        channel.queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await?;
    for key in keys {
        bounded(
            limit,
            "binding the answer queue",
            channel.queue_bind(
                queue.name().clone(),
                exchange.to_string().into(),
                key.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            ),
        )
        .await?;
    }
    bounded(
        limit,
        "consuming answers",
        channel.basic_consume(
            queue.name().clone(),
            "agent-manager-cli".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await
}

/// The first event answering `command` that is `agent.error` or that `done` says ends
/// it, within `wait`.
async fn wait_answer(
    answers: &mut lapin::Consumer,
    command: &Outgoing<'_>,
    wait: Duration,
    done: impl Fn(&Event) -> bool,
) -> Result<Event, CliError> {
    let until = tokio::time::Instant::now() + wait;
    loop {
        let next = tokio::time::timeout_at(until, answers.next())
            .await
            .map_err(|_| {
                CliError::NotAnswered(format!(
                    "{} was sent (message_id {}) but not answered within {} s",
                    command.what,
                    command.message_id,
                    wait.as_secs()
                ))
            })?;
        let delivery = match next {
            Some(Ok(d)) => d,
            Some(Err(e)) => return Err(CliError::Unavailable(format!("RabbitMQ: {e}"))),
            None => {
                return Err(CliError::Unavailable(
                    "RabbitMQ closed the answer queue".into(),
                ))
            }
        };
        let Ok(event) = serde_json::from_slice::<Event>(&delivery.data) else {
            continue;
        };
        let answers_it = event.correlation_id.as_deref() == Some(command.message_id);
        if answers_it && (event.event == EventKind::Error || done(&event)) {
            return Ok(event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_operator_is_the_configured_name_else_the_os_user() {
        let env = |k: &str| match k {
            "USER" => Some("alice".to_string()),
            "LOGNAME" => Some("al".to_string()),
            _ => None,
        };
        assert_eq!(operator_name(Some("ops-bob"), env), Some("ops-bob".into()));
        assert_eq!(operator_name(None, env), Some("alice".into()));
        let no_user = |k: &str| (k == "LOGNAME").then(|| "al".to_string());
        assert_eq!(operator_name(None, no_user), Some("al".into()));
        assert_eq!(operator_name(None, |_| Some("  ".into())), None);
        assert_eq!(operator_name(None, |_| None), None);
    }
}
