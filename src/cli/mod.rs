//! The operator's commands: `agent-manager agents …` reads the agents' records and
//! events from Redis and their logs from Docker; `agent-manager check` is the preflight
//! (and the container's health check). `main.rs` parses the command line and calls
//! these; they write to the writers they are given, so tests can read the output.
//!
//! Exit codes (also in the README):
//! - 0 ([`EXIT_OK`]): done; every check passed.
//! - 1 ([`EXIT_FAILED`]): an agent was not found, a check failed, or a service the
//!   command needs did not answer.
//! - 2 ([`EXIT_USAGE`]): bad arguments or configuration.
//!
//! Every Redis and Docker call is bounded by the configured timeouts (`REDIS_TIMEOUT_MS`,
//! `DOCKER_TIMEOUT_S`); `--follow` waits for new output until interrupted, in bounded
//! steps. URLs are printed with their passwords redacted.

pub mod agents;
pub mod check;
pub mod table;

use std::io;

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
    /// The agent (or its container) does not exist (exit 1).
    #[error("{0}")]
    NotFound(String),
    /// A service did not answer or failed (exit 1).
    #[error("{0}")]
    Unavailable(String),
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
            | CliError::ChecksFailed { .. }
            | CliError::Output(_) => EXIT_FAILED,
        }
    }

    /// True when the reader went away (`agent-manager agents list | head`): not an error.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, CliError::Output(e) if e.kind() == io::ErrorKind::BrokenPipe)
    }
}

/// The text of `e` and every error below it, joined with ": ", skipping causes whose
/// text the outer message already includes.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
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

/// `text` with the password of `url` (if it has one) replaced by `***`, so that no
/// message of a client library can leak it. (A password equal to the user name, like
/// RabbitMQ's guest:guest, is only hidden where it follows the user.)
pub fn scrub(text: &str, url: &str) -> String {
    let userinfo = url
        .split_once("://")
        .map(|(_, rest)| rest.split('/').next().unwrap_or(""))
        .and_then(|authority| authority.rsplit_once('@'))
        .map(|(userinfo, _)| userinfo);
    let Some((user, password)) = userinfo.and_then(|u| u.split_once(':')) else {
        return text.to_string();
    };
    if password.is_empty() {
        return text.to_string();
    }
    let text = text.replace(&format!("{user}:{password}@"), &format!("{user}:***@"));
    if password == user {
        text
    } else {
        text.replace(password, "***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_hides_the_password_wherever_it_appears() {
        let url = "amqp://user:s3cret@rabbit:5672/%2f";
        assert_eq!(
            scrub(
                "failed to log in to amqp://user:s3cret@rabbit with s3cret",
                url
            ),
            "failed to log in to amqp://user:***@rabbit with ***"
        );
        assert_eq!(
            scrub("no password here", "redis://127.0.0.1:6379/0"),
            "no password here"
        );
        assert_eq!(scrub("x", "redis://:pw@h:1/0"), "x");
        assert_eq!(
            scrub(
                "amqp://guest:guest@h: refused for guest",
                "amqp://guest:guest@h"
            ),
            "amqp://guest:***@h: refused for guest"
        );
    }

    #[test]
    fn exit_codes_mean_what_the_readme_says() {
        assert_eq!(CliError::Usage("x".into()).exit_code(), 2);
        assert_eq!(CliError::NotFound("x".into()).exit_code(), 1);
        assert_eq!(CliError::Unavailable("x".into()).exit_code(), 1);
        let pipe = CliError::Output(io::Error::from(io::ErrorKind::BrokenPipe));
        assert!(pipe.is_broken_pipe());
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
