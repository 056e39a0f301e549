//! RabbitMQ: the topology (contract section 1), the command consumer and the event
//! publisher, all through lapin with bounded calls and backed-off reconnects; and the
//! management HTTP API ([`management`]) for the agents' own users.

pub mod consumer;
pub mod management;
pub mod publisher;
pub mod topology;

use std::borrow::Cow;
use std::future::Future;
use std::time::Duration;

use lapin::{Connection, ConnectionProperties};

pub use crate::error::BrokerError;
pub use crate::retry::Backoff;

use crate::config::RabbitConfig;
use crate::redact;

/// Runs one broker call (`op`, in words for the log) under the configured timeout.
pub async fn bounded<T>(
    limit: Duration,
    op: impl Into<Cow<'static, str>>,
    fut: impl Future<Output = lapin::Result<T>>,
) -> Result<T, BrokerError> {
    match tokio::time::timeout(limit, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(source)) => Err(BrokerError::Call {
            op: op.into(),
            source,
        }),
        Err(_) => Err(BrokerError::Timeout {
            op: op.into(),
            after_s: limit.as_secs(),
        }),
    }
}

/// The AMQP frame size asked for unless the URL names one (`?frame_max=`). lapin keeps
/// 2 x 32 frames of buffer per connection, so RabbitMQ's default of 128 KiB would cost
/// 8 MiB of resident memory per connection; commands and events are a few KiB, and a
/// larger message is simply split over several frames.
pub const DEFAULT_FRAME_MAX: u32 = 16 * 1024;

/// The broker URL as lapin takes it, with the frame size defaulted.
fn amqp_uri(url: &str) -> Result<lapin::uri::AMQPUri, BrokerError> {
    let mut uri: lapin::uri::AMQPUri = url.parse().map_err(|message| BrokerError::Url {
        url: redact::url(url),
        message,
    })?;
    if uri.query.frame_max.is_none() {
        uri.query.frame_max = Some(DEFAULT_FRAME_MAX);
    }
    Ok(uri)
}

/// Opens a connection named `name` (visible in the management UI).
pub async fn connect(cfg: &RabbitConfig, name: &str) -> Result<Connection, BrokerError> {
    let props = ConnectionProperties::default().with_connection_name(name.to_string().into());
    let uri = amqp_uri(&cfg.url)?;
    bounded(
        Duration::from_secs(cfg.timeout_s),
        format!("connecting to {}", redact::url(&cfg.url)),
        Connection::connect_uri(uri, props),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_frame_size_is_small_unless_the_url_names_one() {
        let uri = amqp_uri("amqp://u:p@127.0.0.1:5672/%2f").expect("valid");
        assert_eq!(uri.query.frame_max, Some(DEFAULT_FRAME_MAX));
        let uri = amqp_uri("amqp://127.0.0.1:5672/%2f?frame_max=131072").expect("valid");
        assert_eq!(uri.query.frame_max, Some(131072));
        let err = amqp_uri("http//secret@nowhere").expect_err("not a URL");
        assert!(matches!(err, BrokerError::Url { .. }), "{err:?}");
        assert!(err.to_string().contains("RABBITMQ_URL"), "{err}");
    }

    #[test]
    fn broker_errors_name_the_operation_and_never_the_password() {
        let err =
            amqp_uri("amqp://bot:hunter2@rabbit:5672/%2f?frame_max=x").expect_err("a bad query");
        let text = err.to_string();
        assert!(
            text.starts_with("RABBITMQ_URL amqp://bot:***@rabbit"),
            "{text}"
        );
        assert!(!text.contains("hunter2"), "{text}");
        let timeout = BrokerError::Timeout {
            op: "declaring the exchange".into(),
            after_s: 5,
        };
        assert_eq!(
            timeout.to_string(),
            "declaring the exchange: timed out after 5 s"
        );
        assert!(!timeout.is_precondition_failed());
        let nacked = BrokerError::Nacked {
            op: format!("publishing {}", "agent.start").into(),
        };
        assert_eq!(
            nacked.to_string(),
            "publishing agent.start: the broker refused it (nack)"
        );
    }

    #[tokio::test]
    async fn a_call_past_its_limit_times_out_naming_its_operation() {
        let never = std::future::pending::<lapin::Result<()>>();
        let err = bounded(Duration::from_millis(10), "opening a channel", never)
            .await
            .expect_err("no answer");
        assert!(
            matches!(&err, BrokerError::Timeout { op, .. } if op == "opening a channel"),
            "{err:?}"
        );
    }
}
