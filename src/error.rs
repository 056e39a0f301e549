//! Typed errors of each boundary, the one place they map to the contract's
//! `agent.error` codes, and the one place that says what a failure does
//! ([`AgentError::disposition`]: retried, and when, or answered).

use std::borrow::Cow;
use std::time::Duration;

use thiserror::Error;

use crate::protocol::ErrorCode;

/// Errors from the container runtime (Docker or Swarm).
#[derive(Debug, Error)]
pub enum RuntimeError {
    #[error("no such container or service: {0}")]
    NotFound(String),
    #[error("image {0} is not present on the Docker host and could not be pulled")]
    ImageNotFound(String),
    #[error("GPUs unavailable: {0}")]
    GpuUnavailable(String),
    /// The deployment mode cannot do this (pausing a Swarm service).
    #[error("not supported in this deployment mode: {0}")]
    Unsupported(String),
    /// The Docker host is not set up for the deployment mode (not a swarm manager, a
    /// network of the wrong kind, ...): an operator has to act.
    #[error("the Docker host is not set up for this mode: {0}")]
    Setup(String),
    /// The GPU allocations in Redis could not be read or written.
    #[error("GPU allocations: {0}")]
    Store(#[from] StoreError),
    #[error("Docker call '{op}' timed out after {after_s} s")]
    Timeout { op: &'static str, after_s: u64 },
    #[error("Docker call '{op}' failed: {message}")]
    Docker {
        op: &'static str,
        /// The HTTP status Docker answered with, when it answered.
        status: Option<u16>,
        message: String,
    },
}

/// Errors from Redis.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("Redis call '{op}' timed out")]
    Timeout { op: &'static str },
    #[error("Redis call '{op}' failed: {source}")]
    Redis {
        op: &'static str,
        #[source]
        source: redis::RedisError,
    },
    #[error("agent record {key} is corrupt: {message}")]
    Corrupt { key: String, message: String },
    /// The TLS material of a `rediss://` URL could not be read.
    #[error("Redis TLS: {message}")]
    Tls { message: String },
    /// A write of a leader whose term has passed (contract section 12): refused by
    /// Redis, nothing written.
    #[error("Redis refused '{op}': this manager's leader term {term} has passed")]
    Fenced { op: &'static str, term: u64 },
}

/// Errors from RabbitMQ over AMQP (lapin): connecting, declaring the topology,
/// consuming, settling deliveries, publishing. `op` says what was being done, in words
/// a log reader follows ("declaring the command queue", "connecting to amqp://u:***@h").
/// No variant holds a password: URLs are redacted before they get here, and lapin's own
/// errors do not repeat the URL.
#[derive(Debug, Error)]
pub enum BrokerError {
    /// `RABBITMQ_URL` (shown redacted) does not parse as an AMQP URL.
    #[error("RABBITMQ_URL {url} is not an AMQP URL: {message}")]
    Url { url: String, message: String },
    /// The broker refused the call, or the connection or channel broke.
    #[error("{op}: {source}")]
    Call {
        op: Cow<'static, str>,
        #[source]
        source: lapin::Error,
    },
    /// The call got no answer within `RABBITMQ_TIMEOUT_S`.
    #[error("{op}: timed out after {after_s} s")]
    Timeout { op: Cow<'static, str>, after_s: u64 },
    /// The broker nacked a publish.
    #[error("{op}: the broker refused it (nack)")]
    Nacked { op: Cow<'static, str> },
    /// The consumer's stream of deliveries ended (the channel or connection closed).
    #[error("consumer stream ended")]
    StreamEnded,
}

impl BrokerError {
    /// True when the broker refused a declaration because the thing exists with other
    /// arguments (AMQP 406 `PRECONDITION_FAILED`, "inequivalent arg").
    pub fn is_precondition_failed(&self) -> bool {
        const PRECONDITION_FAILED: u16 = 406;
        matches!(
            self,
            BrokerError::Call { source, .. }
                if matches!(source.kind(), lapin::ErrorKind::ProtocolError(e)
                    if e.get_id() == PRECONDITION_FAILED)
        )
    }
}

/// Errors from publishing to RabbitMQ.
#[derive(Debug, Error)]
pub enum PublishError {
    #[error("RabbitMQ unavailable: {0}")]
    Unavailable(#[from] BrokerError),
    #[error("RabbitMQ did not confirm the event (nacked)")]
    Nacked,
    #[error("publishing timed out after {0} s")]
    Timeout(u64),
    /// The Redis outbox, where events wait while RabbitMQ is away, failed too.
    #[error("the Redis outbox failed: {0}")]
    Outbox(#[source] StoreError),
}

/// Why an agent's login could not be made (no I/O involved).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum LoginError {
    /// The operating system's random source failed: no password is made without it.
    #[error("the operating system's random source failed: {0}")]
    Random(String),
    /// The agents' URL (`AGENT_RABBITMQ_URL`, `AGENT_REDIS_URL`, else the manager's) has
    /// no host to log in to, or does not parse.
    #[error("cannot give agents their own login in {url}: {message}")]
    Url { url: String, message: String },
}

/// Errors from making, listing or removing the agents' own users (contract section 7).
#[derive(Debug, Error)]
pub enum CredentialError {
    #[error(transparent)]
    Login(#[from] LoginError),
    #[error("RabbitMQ management API: {op} timed out after {after_s} s")]
    ManagementTimeout { op: &'static str, after_s: u64 },
    /// The management API was not reached: refused, unresolved, or its TLS certificate
    /// not accepted. The message carries the whole cause (hyper's own says only
    /// "client error (Connect)"); `endpoint` is shown without credentials.
    #[error("RabbitMQ management API: {op} failed: {endpoint}: {}", chain(source))]
    ManagementUnreachable {
        op: &'static str,
        endpoint: String,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    #[error("RabbitMQ management API: {op} failed: {message}")]
    Management {
        op: &'static str,
        /// The HTTP status the API answered with, when it answered.
        status: Option<u16>,
        message: String,
    },
    #[error("Redis ACL: {0}")]
    Redis(#[from] StoreError),
}

impl CredentialError {
    /// True when the service was away (unreachable, timed out, 5xx), not refusing: the
    /// command that met it is retried like one that met RabbitMQ or Redis away.
    pub fn is_transient(&self) -> bool {
        match self {
            CredentialError::ManagementTimeout { .. }
            | CredentialError::ManagementUnreachable { .. } => true,
            CredentialError::Management { status, .. } => status.is_none_or(|s| s >= 500),
            CredentialError::Redis(StoreError::Timeout { .. }) => true,
            CredentialError::Redis(StoreError::Redis { source, .. }) => {
                source.is_io_error()
                    || source.is_timeout()
                    || source.is_connection_dropped()
                    || source.is_connection_refusal()
            }
            CredentialError::Redis(_) | CredentialError::Login(_) => false,
        }
    }

    /// True when the management API answered with a 5xx status (it was reached, and
    /// failed on its side).
    pub fn is_server_error(&self) -> bool {
        matches!(self, CredentialError::Management { status: Some(s), .. } if *s >= 500)
    }
}

/// `e` and each of its causes, once each, joined by ": " (a cause whose text the
/// message already holds is not repeated).
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !text.is_empty() && !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Why a command for an agent failed.
#[derive(Debug, Error)]
pub enum AgentError {
    /// A refusal the sender can act on (wrong owner, spec conflict, ...).
    #[error("{message}")]
    Refused { code: ErrorCode, message: String },
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// The agent's own users could not be made or removed: answered (`internal`) when
    /// refused, retried when the service was away; a create that meets it leaves
    /// nothing behind either way.
    #[error("the agent's credentials: {0}")]
    Credentials(#[from] CredentialError),
}

impl AgentError {
    pub fn refused(code: ErrorCode, message: impl Into<String>) -> Self {
        AgentError::Refused {
            code,
            message: message.into(),
        }
    }

    /// The `agent.error` code this failure is reported with.
    pub fn code(&self) -> ErrorCode {
        match self {
            AgentError::Refused { code, .. } => *code,
            AgentError::Runtime(RuntimeError::ImageNotFound(_)) => ErrorCode::ImageNotFound,
            AgentError::Runtime(RuntimeError::GpuUnavailable(_)) => ErrorCode::GpuUnavailable,
            AgentError::Runtime(RuntimeError::Unsupported(_)) => ErrorCode::Unsupported,
            AgentError::Runtime(RuntimeError::NotFound(_)) => ErrorCode::NotFound,
            AgentError::Runtime(RuntimeError::Store(_)) => ErrorCode::Internal,
            AgentError::Runtime(_) => ErrorCode::DockerError,
            AgentError::Store(_) | AgentError::Publish(_) | AgentError::Credentials(_) => {
                ErrorCode::Internal
            }
        }
    }

    /// True when the command did not take durable effect because a service the manager
    /// depends on (Redis, RabbitMQ) is away: the command is retried, not answered.
    pub fn is_transient_infrastructure(&self) -> bool {
        match self {
            AgentError::Credentials(e) => e.is_transient(),
            other => matches!(
                other,
                AgentError::Store(_)
                    | AgentError::Publish(_)
                    | AgentError::Runtime(RuntimeError::Store(_))
            ),
        }
    }
}

/// Who met a failure: what retrying it means differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A command from RabbitMQ (agent or team command).
    Command,
    /// Self-healing restarting an agent by itself.
    Heal,
    /// A delete that a manager which died left half done, finished at start.
    FinishDelete,
    /// A halt taking an agent out or giving it back (the halt actor reports what failed
    /// for which agent; the next look, or the next engage, applies it again).
    Halt,
}

/// When failed work is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryAt {
    /// Handed back to RabbitMQ after this pause (requeued), and answered by the retry.
    After(Duration),
    /// At the agent's next look (its crash policy's backoff decides again).
    NextLook,
    /// At the manager's next start (the start fails now, naming why).
    NextStart,
}

/// What a failure does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Nothing is answered: the work is tried again.
    Retry(RetryAt),
    /// Answered with `agent.error` (what the failure left of the agent, the plan's
    /// `OnFailure` said: kept, marked failed, or discarded).
    Answer,
}

/// How long a command that met Redis or RabbitMQ away waits before it is requeued.
pub const COMMAND_RETRY_AFTER: Duration = Duration::from_millis(500);

impl AgentError {
    /// The error policy (kube-rs's `error_policy`): retry a failure a service being
    /// away caused; answer the rest. A delete left half done is only ever finished at a
    /// start: every failure of it fails that start.
    pub fn disposition(&self, origin: Origin) -> Disposition {
        match origin {
            Origin::FinishDelete => Disposition::Retry(RetryAt::NextStart),
            _ if !self.is_transient_infrastructure() => Disposition::Answer,
            Origin::Command => Disposition::Retry(RetryAt::After(COMMAND_RETRY_AFTER)),
            Origin::Heal | Origin::Halt => Disposition::Retry(RetryAt::NextLook),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_policy_retries_what_a_service_away_caused_and_answers_the_rest() {
        let away = AgentError::Store(StoreError::Timeout { op: "save" });
        let refused = AgentError::refused(ErrorCode::NotFound, "gone");
        let docker = AgentError::Runtime(RuntimeError::NotFound("c".into()));
        assert_eq!(
            away.disposition(Origin::Command),
            Disposition::Retry(RetryAt::After(COMMAND_RETRY_AFTER))
        );
        assert_eq!(
            away.disposition(Origin::Heal),
            Disposition::Retry(RetryAt::NextLook)
        );
        for e in [&refused, &docker] {
            assert_eq!(e.disposition(Origin::Command), Disposition::Answer);
            assert_eq!(e.disposition(Origin::Heal), Disposition::Answer);
        }
        for e in [&away, &refused, &docker] {
            assert_eq!(
                e.disposition(Origin::FinishDelete),
                Disposition::Retry(RetryAt::NextStart)
            );
        }
    }

    #[test]
    fn credential_errors_are_retried_only_when_a_service_was_away() {
        let away = [
            CredentialError::ManagementTimeout {
                op: "put user",
                after_s: 10,
            },
            CredentialError::Management {
                op: "put user",
                status: None,
                message: "refused".into(),
            },
            CredentialError::Management {
                op: "put user",
                status: Some(503),
                message: "booting".into(),
            },
            CredentialError::Redis(StoreError::Timeout { op: "acl setuser" }),
        ];
        for e in away {
            let e = AgentError::from(e);
            assert!(e.is_transient_infrastructure(), "{e}");
            assert_eq!(e.code(), ErrorCode::Internal);
        }
        let refused = [
            CredentialError::Management {
                op: "put user",
                status: Some(401),
                message: "no".into(),
            },
            CredentialError::Login(LoginError::Random("no entropy".into())),
        ];
        for e in refused {
            assert!(!AgentError::from(e).is_transient_infrastructure());
        }
    }

    #[test]
    fn a_declaration_refused_for_other_arguments_is_told_apart_by_its_code() {
        use lapin::protocol::{AMQPError, AMQPErrorKind, AMQPSoftError};
        let refused = |kind: AMQPSoftError| BrokerError::Call {
            op: "declaring the command queue".into(),
            source: lapin::Error::from(lapin::ErrorKind::ProtocolError(AMQPError::new(
                AMQPErrorKind::Soft(kind),
                "inequivalent arg 'x-queue-type'".into(),
            ))),
        };
        let inequivalent = refused(AMQPSoftError::PRECONDITIONFAILED);
        assert!(inequivalent.is_precondition_failed());
        assert!(
            inequivalent
                .to_string()
                .starts_with("declaring the command queue: protocol error: "),
            "{inequivalent}"
        );
        assert!(!refused(AMQPSoftError::ACCESSREFUSED).is_precondition_failed());
        assert!(!BrokerError::StreamEnded.is_precondition_failed());
        // Every broker failure met while publishing is a service away: retried.
        let away = AgentError::from(PublishError::from(BrokerError::StreamEnded));
        assert!(away.is_transient_infrastructure());
        assert_eq!(
            away.to_string(),
            "RabbitMQ unavailable: consumer stream ended"
        );
    }

    #[test]
    fn a_chain_names_each_cause_once() {
        #[derive(Debug, Error)]
        #[error("client error (Connect)")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "Connection refused (os error 111)",
        ));
        assert_eq!(
            chain(&e),
            "client error (Connect): Connection refused (os error 111)"
        );
        let store = StoreError::Timeout { op: "outbox push" };
        assert_eq!(
            chain(&PublishError::Outbox(store)),
            "the Redis outbox failed: Redis call 'outbox push' timed out"
        );
    }

    #[test]
    fn runtime_failures_map_to_their_codes() {
        let code = |e: RuntimeError| AgentError::from(e).code();
        assert_eq!(
            code(RuntimeError::Unsupported("pause".into())),
            ErrorCode::Unsupported
        );
        assert_eq!(
            code(RuntimeError::NotFound("x".into())),
            ErrorCode::NotFound
        );
        assert_eq!(
            code(RuntimeError::Docker {
                op: "pause container",
                status: Some(409),
                message: "not running".into()
            }),
            ErrorCode::DockerError
        );
        assert_eq!(ErrorCode::Unsupported.as_str(), "unsupported");
    }
}
