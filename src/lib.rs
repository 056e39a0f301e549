//! agent-manager: runs AutoGen agents as Docker containers, driven by commands on
//! RabbitMQ, with each agent's state in Redis. The contract is ../shared/PROTOCOL.md.
//!
//! # Layout
//!
//! Layered from the contract up; docs/ARCHITECTURE.md has the map, and the paths of a
//! command and of a crash through it.
//!
//! - [`protocol`]: the contract's types, command decoding (`decode/`, one file per
//!   command), events, the validation policy ([`protocol::AgentPolicy`]) and image
//!   rules ([`protocol::image`]) (contract sections 2–3).
//! - [`tls`]: rustls' crypto provider for every TLS client of the process.
//! - [`redact`]: removes secrets from text that leaves the manager: log lines
//!   ([`redact::line`]), URLs ([`redact::url`]), a URL's password in a message
//!   ([`redact::secret_of_url_in`]).
//! - [`error`]: typed errors per boundary and the one place they map to `agent.error`
//!   codes. [`metrics`]: the Prometheus numbers. [`retry`]: reconnect backoff.
//! - [`security`]: the hardening rules (capabilities, security options, mounts, users,
//!   per-customer networks); docs/SECURITY.md.
//! - [`config`]: settings (defaults < file < environment), validated at load with every
//!   wrong setting named at once.
//! - [`record`]: the agent's record and its status machine: [`record::status::transition`]
//!   is the one function that changes a status.
//! - [`crash_policy`]: when a crashed agent is restarted (backoff with jitter) and when
//!   self-healing gives up (a crash loop).
//! - [`credentials`]: each agent's own identity (contract section 7) as data: user
//!   names, passwords from the OS random source, the URLs that carry them, exactly what
//!   the agent's RabbitMQ and Redis users may do.
//! - [`ports`]: the traits the actors work through (record store, event sink, quota
//!   ledger, credential issuer, team store); [`runtime::Runtime`] is the sixth.
//! - [`store`]: everything in Redis (section 5), one file per concern: the keys, the agent
//!   records and sets, event streams, processed markers, the outbox, GPU allocations and
//!   the quota scripts, and the agents' heartbeats (read in one round trip).
//! - [`runtime`]: the [`runtime::Runtime`] trait; [`runtime::spec`] builds an agent's
//!   container (labels, env, limits, section 4); [`runtime::engine`] is the Docker
//!   plumbing all modes share (bounded and admitted calls, errors, networks, logs);
//!   [`runtime::docker`] drives Docker containers (docker mode), [`runtime::swarm`]
//!   Swarm services (swarm mode: a folder with the pure translation, tasks, nodes, GPUs
//!   and image pinning), and [`runtime::gpu`] wraps the Docker runtime with GPU
//!   allocation (gpu mode); [`runtime::agent_urls`] finds the URLs agents reach the
//!   services at; [`runtime::watcher`] follows Docker events;
//!   [`runtime::cgroup`] reads resource samples from the containers' cgroup files.
//! - [`broker`]: RabbitMQ topology, the command consumer, the event publisher and the
//!   management HTTP API ([`broker::management`]).
//! - [`identity`]: the agents' own RabbitMQ and Redis users, made, listed and removed
//!   (the real [`ports::CredentialIssuer`]).
//! - [`quota`]: per-customer quotas, checked and reserved atomically in Redis.
//! - [`context`]: [`context::Deps`], what every agent actor shares, wired to the real
//!   services.
//! - [`lifecycle`]: what commands and self-healing do to one agent, deciding apart from
//!   doing: [`lifecycle::plan`] (pure), [`lifecycle::executor`] (over the ports).
//! - [`team`]: what team commands and a member's deletion do to teams (contract section
//!   9), deciding apart from doing: [`team::plan`] (pure), [`team::executor`].
//! - [`health`]: looking at an agent: its heartbeat's verdict ([`health::verdict`]),
//!   what a look means ([`health::assess`], pure: where a frozen agent is told apart),
//!   and the look itself with its I/O ([`health::observe`]), `agent.health`.
//! - [`actors`]: the AgentActor (one per agent, ordering its commands, looks and
//!   heals), the TeamActor (the one writer of team records), the Supervisor (the
//!   registry of agent actors, routing commands, events and every agent's heartbeat,
//!   read in one Redis round trip per check interval), adoption at start
//!   ([`actors::reconcile`]) and readiness ([`actors::readiness`]: pauses consuming
//!   while Redis or Docker is unreachable).
//! - [`app`]: wires it all together and shuts it down.
//! - [`admin`]: `/healthz`, `/readyz`, `/metrics` over HTTP.
//! - [`cli`]: the operator's commands (`agents list|show|events|logs`, `check`, reading
//!   Redis and Docker; `agents create|update|start|stop|restart|delete|pause|resume`,
//!   sending commands over RabbitMQ; `agents task`, a task and its result); `main.rs`
//!   parses the command line and calls them.
//! - [`build_info`]: the version and git commit the binary was built from.
//! - `fakes` (unit tests only): in-memory implementations of every port and the runtime.

#![forbid(unsafe_code)]

pub mod actors;
pub mod admin;
pub mod app;
pub mod broker;
pub mod build_info;
pub mod cli;
pub mod config;
pub mod context;
pub mod crash_policy;
pub mod credentials;
pub mod egress;
pub mod error;
#[cfg(test)]
pub mod fakes;
pub mod halt;
pub mod halt_records;
pub mod health;
pub mod identity;
pub mod leader;
pub mod lifecycle;
pub mod metrics;
pub mod ports;
pub mod protocol;
pub mod quota;
pub mod record;
pub mod redact;
pub mod retry;
pub mod runtime;
pub mod security;
pub mod store;
pub mod team;
pub mod tls;

pub use app::{Manager, OnDeposed, Standby};
pub use config::Config;
