//! The boundaries the agent actors work through, as traits, so the lifecycle, the
//! looks and the self-healing run the same over the real services and over the
//! in-memory fakes of the unit tests. The runtime's trait is [`crate::runtime::Runtime`];
//! the others are here:
//!
//! - [`RecordStore`]: the agents' records, their event streams, the answers of
//!   applied commands and the agents' heartbeats (Redis: [`crate::store::Store`]);
//! - [`EventSink`]: where events go (RabbitMQ, with the Redis outbox:
//!   [`crate::broker::publisher::EventPublisher`]);
//! - [`QuotaLedger`]: each customer's quota (Redis scripts: [`crate::quota::Quotas`]);
//! - [`CredentialIssuer`]: each agent's own RabbitMQ and Redis users (the management API
//!   and Redis ACLs: [`crate::identity::Identities`]).
//! - [`TeamStore`]: the teams' records (Redis: [`crate::store::Store`]).
//! - [`EgressFilter`]: what agents may reach outside the platform (the kernel's rules:
//!   [`crate::egress::Firewall`]; [`crate::egress::Unfiltered`] where none are kept).
//!
//! [`crate::context`] wires the real ones together.

use async_trait::async_trait;

use crate::credentials::{LoginCensus, Password};
use crate::error::{AgentError, CredentialError, PublishError, RuntimeError, StoreError};
use crate::protocol::{AgentSpec, Event};
use crate::record::halt::{HaltEntry, HaltRecord};
use crate::record::team::TeamRecord;
use crate::record::AgentRecord;

/// A command that has been applied, remembered so that a redelivery applies nothing
/// twice and is answered again.
#[derive(Debug, Clone, Copy)]
pub struct Processed<'a> {
    pub message_id: &'a str,
    /// Every event that answered it, replayed verbatim on redelivery.
    pub answer: &'a [Event],
}

/// One read of many agents' heartbeat keys (contract section 8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatBatch {
    /// The Redis server's `run_id`: it changes when the server restarts (and, without
    /// persistence, loses every heartbeat key).
    pub server_run_id: String,
    /// Each key's value in the order of the ids asked for; `None`: no such key (never
    /// written, or expired).
    pub values: Vec<Option<String>>,
}

/// Where the agents' state is kept.
#[async_trait]
pub trait RecordStore: Send + Sync + 'static {
    /// Writes the record, its set memberships, `events` to its stream and, when given,
    /// the processed marker: one atomic step.
    async fn save(
        &self,
        record: &AgentRecord,
        events: &[Event],
        processed: Option<Processed<'_>>,
    ) -> Result<(), StoreError>;
    /// Removes every key of the agent and records the processed marker, atomically.
    async fn delete(
        &self,
        record: &AgentRecord,
        processed: Option<Processed<'_>>,
    ) -> Result<(), StoreError>;
    /// Records that a command was applied (one that leaves no agent behind).
    async fn save_processed(&self, processed: Processed<'_>) -> Result<(), StoreError>;
    /// The events that answered `message_id`, if that command was already applied.
    async fn processed(&self, message_id: &str) -> Result<Option<Vec<Event>>, StoreError>;
    /// Every agent record; corrupt ones as errors beside their id.
    async fn load_all(&self) -> Result<Vec<(String, Result<AgentRecord, StoreError>)>, StoreError>;
    /// The heartbeat keys of `agent_ids` (written by the agents), in a bounded number of
    /// round trips whatever their number.
    async fn heartbeats(&self, agent_ids: &[String]) -> Result<HeartbeatBatch, StoreError>;
}

/// Where events go. `publish` returns once every event is durable.
#[async_trait]
pub trait EventSink: Send + Sync + 'static {
    async fn publish(&self, events: &[Event]) -> Result<(), PublishError>;
    /// Publishes one message that is not an event (a team member's
    /// `agent:<agent_id>:team`) to the exchange with `routing_key`: persistent, and
    /// returns once RabbitMQ confirmed it. No outbox: while RabbitMQ is away it fails,
    /// and the command that sends it is retried.
    async fn publish_message(&self, routing_key: &str, body: &[u8]) -> Result<(), PublishError>;
}

/// Where the teams' records are kept (contract section 9). Only the team actor writes.
#[async_trait]
pub trait TeamStore: Send + Sync + 'static {
    /// Writes the team (replacing its record), its set memberships and, when given, the
    /// processed marker: one atomic step.
    async fn save_team(
        &self,
        team: &TeamRecord,
        processed: Option<Processed<'_>>,
    ) -> Result<(), StoreError>;
    /// Removes the team and records the processed marker, atomically.
    async fn delete_team(
        &self,
        team: &TeamRecord,
        processed: Option<Processed<'_>>,
    ) -> Result<(), StoreError>;
    /// `None` when there is no such team.
    async fn load_team(&self, team_id: &str) -> Result<Option<TeamRecord>, StoreError>;
    /// Every team of `customer_id`, or every team (`None`).
    async fn teams(&self, customer_id: Option<&str>) -> Result<Vec<TeamRecord>, StoreError>;
}

/// Each customer's quota of agents, memory, CPU and GPUs.
#[async_trait]
pub trait QuotaLedger: Send + Sync + 'static {
    /// Reserves `spec`'s resources for `agent_id` (replacing what it held), or refuses
    /// with `quota_exceeded` and changes nothing. Shrinking is never refused.
    async fn reserve(&self, agent_id: &str, spec: &AgentSpec) -> Result<(), AgentError>;
    /// After a command that failed part-way: the agent holds exactly what its record
    /// says. Best effort (logged); the next start heals what it could not.
    async fn resync(&self, record: &AgentRecord);
    /// Frees what `agent_id` held of `customer_id`'s quota; harmless when it held none.
    async fn release(&self, agent_id: &str, customer_id: &str) -> Result<(), AgentError>;
    /// Recomputes every customer's usage from `records` (at start).
    async fn rebuild(&self, records: &[AgentRecord]) -> Result<(), AgentError>;
}

/// Each agent's own users in RabbitMQ and Redis (contract section 7), named
/// `agent-<agent_id>`. Absent in `AGENT_CREDENTIALS=shared` mode.
#[async_trait]
pub trait CredentialIssuer: Send + Sync + 'static {
    /// Makes the agent's users, or updates them, so that they log in with `password`
    /// and may do exactly what section 7 allows. Idempotent: issuing again (the same or
    /// another password) leaves one user per service.
    async fn issue(&self, agent_id: &str, password: &Password) -> Result<(), CredentialError>;
    /// Removes the agent's users and closes their connections; users that are already
    /// gone are fine.
    async fn revoke(&self, agent_id: &str) -> Result<(), CredentialError>;
    /// Which agents have users made by this manager installation, and whose are
    /// complete (reconciliation).
    async fn census(&self) -> Result<LoginCensus, CredentialError>;
    /// Cuts the agents off at once (a halt, section 10): their users removed in as few
    /// calls as the brokers allow, each broker closing their open connections itself.
    /// Their inboxes stay. Returns the agents that could not be cut, with why (empty:
    /// every one was).
    async fn cut(&self, agent_ids: &[String]) -> Vec<(String, CredentialError)>;
}

/// The engaged halts kept outside the manager (contract section 10): in Redis for
/// operators (`halt:<halt_id>`, `halts`, the `halts:events` audit trail) and in
/// RabbitMQ, so that a Redis wipe loses no halt.
#[async_trait]
pub trait HaltStore: Send + Sync + 'static {
    /// Keeps `halt` (both copies), with its `halts:events` entry and the command's
    /// processed marker when given.
    async fn save_halt(
        &self,
        halt: &HaltRecord,
        entry: Option<HaltEntry<'_>>,
        processed: Option<Processed<'_>>,
    ) -> Result<(), AgentError>;
    /// Forgets `halt` (both copies), with its `halts:events` entry and the processed
    /// marker when given.
    async fn delete_halt(
        &self,
        halt: &HaltRecord,
        entry: Option<HaltEntry<'_>>,
        processed: Option<Processed<'_>>,
    ) -> Result<(), AgentError>;
    /// Every engaged halt either copy knows (the union, by id); the copies that were
    /// missing are written back.
    async fn load_halts(&self) -> Result<Vec<HaltRecord>, AgentError>;
}

/// What agents may reach outside the platform (contract section 11).
#[async_trait]
pub trait EgressFilter: Send + Sync + 'static {
    /// Whether anything is enforced (else every call succeeds and changes nothing).
    fn enforced(&self) -> bool;
    /// From now on agent `agent_id` reaches the platform's services and what `spec`
    /// (with the installation's and its customer's lists) allows, nothing else. Called
    /// before its workload is made, so it never runs unfiltered.
    async fn allow(&self, agent_id: &str, spec: &AgentSpec) -> Result<(), RuntimeError>;
    /// The agent's workload is gone: its rules go.
    async fn forget(&self, agent_id: &str) -> Result<(), RuntimeError>;
    /// At start (and on taking the lead): exactly `agents` have rules, each its record's;
    /// this instance's other rules go.
    async fn sync(&self, agents: &[AgentRecord]) -> Result<(), RuntimeError>;
    /// Connections refused so far, by agent id.
    async fn refused_by_agent(
        &self,
    ) -> Result<std::collections::HashMap<String, u64>, RuntimeError>;
}
