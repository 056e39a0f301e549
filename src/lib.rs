//! agent-manager: runs AutoGen agents as Docker containers, driven by commands on
//! RabbitMQ, with each agent's state in Redis. The contract is ../shared/PROTOCOL.md.
//!
//! # Layout
//!
//! - [`config`]: settings (defaults < file < environment), validated at load with every
//!   wrong setting named at once; `config/env.rs` reads the environment,
//!   `config/validate.rs` checks each section.
//! - [`protocol`]: commands, events, error codes and validation (contract sections 2–3),
//!   a folder by concern: the contract's types, the decoded command, the event, the
//!   envelope scanner, the field validators, [`protocol::AgentPolicy`] (the defaults and
//!   bounds commands are checked against), [`protocol::image`] (image references and the
//!   allowlist), and `decode/` with one file per command kind.
//! - [`store`]: everything in Redis (section 5), one file per concern: the keys, the agent
//!   records and sets, event streams, processed markers, the outbox, GPU allocations and
//!   the quota scripts.
//! - [`runtime`]: the [`runtime::Runtime`] trait; [`runtime::spec`] builds an agent's
//!   container (labels, env, limits, section 4); [`runtime::engine`] is the Docker
//!   plumbing both modes share (bounded and admitted calls, errors, networks, logs);
//!   [`runtime::docker`] drives Docker containers (docker mode), [`runtime::swarm`]
//!   Swarm services (swarm mode), and [`runtime::gpu`] wraps the Docker runtime with
//!   GPU allocation (gpu mode); [`runtime::watcher`] follows Docker events and sends
//!   them on as its own messages.
//! - [`lifecycle`]: what each command does to one agent, as plain async functions.
//! - [`health`]: looking at a container: status, stats, `agent.health`, what to heal.
//! - [`restart`]: the self-healing policy (backoff with jitter, crash loops).
//! - [`security`]: the hardening rules (capabilities, security options, mounts, users,
//!   per-customer networks); docs/SECURITY.md.
//! - [`quota`]: per-customer quotas, checked and reserved atomically in Redis.
//! - [`redact`]: removes secrets from text that leaves the manager: log lines
//!   ([`redact::line`]), URLs ([`redact::url`]), a URL's password in a message
//!   ([`redact::secret_of_url_in`]).
//! - [`agent`]: the AgentActor, one per agent, ordering its commands.
//! - [`supervisor`]: the registry of agent actors, routing commands to them.
//! - [`reconcile`]: adopts existing agents at start.
//! - [`readiness`]: pauses consuming while Redis or Docker is unreachable.
//! - [`broker`]: RabbitMQ topology, the command consumer and the event publisher.
//! - [`app`]: wires it all together and shuts it down.
//! - [`admin`]: `/healthz`, `/readyz`, `/metrics` over HTTP; [`metrics`] holds the numbers.
//! - [`error`]: typed errors per boundary and their `agent.error` codes.
//! - [`cli`]: the operator's commands (`agents list|show|events|logs`, `check`), reading
//!   Redis and Docker; `main.rs` parses the command line and calls them.

#![forbid(unsafe_code)]

pub mod admin;
pub mod agent;
pub mod app;
pub mod broker;
pub mod cli;
pub mod config;
pub mod context;
pub mod crash_policy;
pub mod error;
#[cfg(test)]
pub mod fakes;
pub mod health;
pub mod lifecycle;
pub mod metrics;
pub mod ports;
pub mod protocol;
pub mod quota;
pub mod readiness;
pub mod reconcile;
pub mod record;
pub mod redact;
pub mod retry;
pub mod runtime;
pub mod security;
pub mod store;
pub mod supervisor;

pub use app::Manager;
pub use config::Config;
