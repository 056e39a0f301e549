//! Typed errors of each boundary, and the one place they map to the contract's
//! `agent.error` codes.

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
}

/// Errors from publishing to RabbitMQ.
#[derive(Debug, Error)]
pub enum PublishError {
    #[error("RabbitMQ unavailable: {0}")]
    Unavailable(String),
    #[error("RabbitMQ did not confirm the event (nacked)")]
    Nacked,
    #[error("publishing timed out after {0} s")]
    Timeout(u64),
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
            AgentError::Store(_) | AgentError::Publish(_) => ErrorCode::Internal,
        }
    }

    /// True when the command did not take durable effect because a service the manager
    /// depends on (Redis, RabbitMQ) is away: the command is retried, not answered.
    pub fn is_transient_infrastructure(&self) -> bool {
        matches!(
            self,
            AgentError::Store(_)
                | AgentError::Publish(_)
                | AgentError::Runtime(RuntimeError::Store(_))
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
