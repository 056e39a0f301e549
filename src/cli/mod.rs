//! The operator's commands: `agent-manager agents list|describe|show|events|logs` reads
//! the agents' records and events from Redis and their containers and logs from Docker
//! ([`list`], [`describe`], [`agents`]); `agent-manager
//! agents create|update|start|stop|restart|delete|pause|resume` sends a command
//! ([`order`], read from a file by [`spec_file`]) over RabbitMQ and can wait for its
//! answer ([`act`]); `agent-manager agents task ID TEXT` gives an agent a task and waits
//! for its result ([`task`], contract section 8); `agent-manager halt
//! engage|release|list|show` takes agents out at once and gives them back, and reads the
//! halts ([`halt`], contract section 10); `agent-manager check` is the
//! preflight, and `check --ready` asks the running manager's `/readyz` ([`ready`], the
//! container's health check). `main.rs` parses the command line and calls these; they
//! write to the writers they are given, so tests can read the output.
//!
//! Exit codes (also in the README):
//! - 0 ([`EXIT_OK`]): done; every check passed.
//! - 1 ([`EXIT_FAILED`]): an agent (a team, a halt) was not found, a check failed, a
//!   service the command needs did not answer, or the manager answered a command with
//!   `agent.error`; a task failed, was refused (the agent is not running) or got no
//!   result in time.
//! - 2 ([`EXIT_USAGE`]): bad arguments or configuration.
//!
//! Every Redis and Docker call is bounded by the configured timeouts (`REDIS_TIMEOUT_MS`,
//! `DOCKER_TIMEOUT_S`); `--follow` waits for new output until interrupted, in bounded
//! steps. URLs are printed with their passwords redacted ([`crate::redact`]).

pub mod act;
pub mod agents;
pub mod check;
pub mod describe;
pub mod halt;
pub mod list;
pub mod order;
pub mod ready;
pub mod spec_file;
pub mod table;
pub mod task;

use std::io;
use std::time::Duration;

use thiserror::Error;

pub const EXIT_OK: u8 = 0;
pub const EXIT_FAILED: u8 = 1;
pub const EXIT_USAGE: u8 = 2;

/// How a command prints what it found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// For people: aligned columns that fit the terminal.
    #[default]
    Table,
    /// For scripts: JSON (an array, or one object per line for streams).
    Json,
}

/// Why a command did not do what was asked.
#[derive(Debug, Error)]
pub enum CliError {
    /// Bad arguments (exit 2).
    #[error("{0}")]
    Usage(String),
    /// The agent (or its container, its team, the halt) does not exist (exit 1).
    #[error("{0}")]
    NotFound(String),
    /// A service did not answer or failed (exit 1).
    #[error("{0}")]
    Unavailable(String),
    /// The command was sent (the broker confirmed it) but its answer did not come in
    /// time (exit 1): it may still be applied.
    #[error("{0}")]
    NotAnswered(String),
    /// The manager answered the command with `agent.error` (exit 1).
    #[error("agent.error {code}: {message}")]
    Refused { code: String, message: String },
    /// The agent would not take a task now (stopped, paused, failed; exit 1); the text
    /// names what to do.
    #[error("{0}; nothing was sent")]
    NotRunning(String),
    /// The agent answered a task with a result that is not `completed` (exit 1).
    #[error("task {task_id} failed: {error}")]
    TaskFailed { task_id: String, error: String },
    /// Some checks failed (exit 1); they are in the output already.
    #[error("{failed} check(s) failed")]
    ChecksFailed { failed: usize },
    /// Writing the output failed (a closed pipe is not reported).
    #[error("writing output: {0}")]
    Output(#[from] io::Error),
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => EXIT_USAGE,
            CliError::NotFound(_)
            | CliError::Unavailable(_)
            | CliError::NotAnswered(_)
            | CliError::Refused { .. }
            | CliError::NotRunning(_)
            | CliError::TaskFailed { .. }
            | CliError::ChecksFailed { .. }
            | CliError::Output(_) => EXIT_FAILED,
        }
    }

    /// True when the reader went away (`agent-manager agents list | head`): not an error.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, CliError::Output(e) if e.kind() == io::ErrorKind::BrokenPipe)
    }
}

/// The longest `--timeout` an acting command waits.
const MAX_WAIT: Duration = Duration::from_secs(3600);

/// Why a `--timeout` is refused (clap shows it under the flag's name).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WaitError {
    #[error("'{0}' is not a duration (90, 90s, 5m, 1h)")]
    NotADuration(String),
    #[error("'{0}' is not between 1s and 1h")]
    OutOfRange(String),
}

/// `--timeout` of the acting commands: seconds (`90`), or with a unit (`90s`, `5m`,
/// `1h`); from 1 s to 1 h.
pub fn parse_wait(text: &str) -> Result<Duration, WaitError> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let not_a_duration = || WaitError::NotADuration(text.to_string());
    let n: u64 = number.parse().map_err(|_| not_a_duration())?;
    let seconds = match unit {
        "s" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        _ => None,
    }
    .ok_or_else(not_a_duration)?;
    let wait = Duration::from_secs(seconds);
    if wait.is_zero() || wait > MAX_WAIT {
        return Err(WaitError::OutOfRange(text.to_string()));
    }
    Ok(wait)
}

/// The text of an error and every error below it ([`crate::error::chain`]).
pub use crate::error::chain as error_chain;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_mean_what_the_readme_says() {
        assert_eq!(CliError::Usage("x".into()).exit_code(), 2);
        assert_eq!(CliError::NotFound("x".into()).exit_code(), 1);
        assert_eq!(CliError::Unavailable("x".into()).exit_code(), 1);
        let refused = CliError::Refused {
            code: "validation_failed".into(),
            message: "agent a is stopped".into(),
        };
        assert_eq!(refused.exit_code(), 1);
        assert_eq!(CliError::NotRunning("x".into()).exit_code(), 1);
        let failed = CliError::TaskFailed {
            task_id: "t-1".into(),
            error: "boom".into(),
        };
        assert_eq!(failed.exit_code(), 1);
        assert_eq!(failed.to_string(), "task t-1 failed: boom");
        assert_eq!(
            refused.to_string(),
            "agent.error validation_failed: agent a is stopped"
        );
        let pipe = CliError::Output(io::Error::from(io::ErrorKind::BrokenPipe));
        assert!(pipe.is_broken_pipe());
    }

    #[test]
    fn waits_read_with_or_without_a_unit() {
        assert_eq!(parse_wait("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_wait("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_wait("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_wait("1h"), Ok(Duration::from_secs(3600)));
        for bad in ["", "0", "2h", "5x", "m", "-3", "1.5s"] {
            assert!(parse_wait(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn error_chain_names_every_cause_once() {
        let inner = io::Error::new(
            io::ErrorKind::PermissionDenied,
            "Permission denied (os error 13)",
        );
        let outer = io::Error::other(inner);
        assert_eq!(error_chain(&outer), "Permission denied (os error 13)");
        #[derive(Debug, Error)]
        #[error("client error (Connect)")]
        struct Wrap(#[source] io::Error);
        let w = Wrap(io::Error::from(io::ErrorKind::NotFound));
        assert_eq!(error_chain(&w), "client error (Connect): entity not found");
    }
}
