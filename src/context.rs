//! What the agent actors (and the team actor) share: the runtime, the record store, the
//! event sink, the quota ledger, the agents' credential issuer, the team store and the
//! configuration, each behind its trait ([`crate::ports`],
//! [`crate::runtime::Runtime`]). Lives below every module that uses it, so none of them
//! imports another to reach it. [`Deps::new`] wires the real services; the unit tests
//! wire in-memory fakes.

use std::sync::Arc;

use async_trait::async_trait;

use crate::broker::management::Management;
use crate::broker::publisher::EventPublisher;
use crate::config::{Config, CredentialMode};
use crate::error::{CredentialError, PublishError, StoreError};
use crate::halt_records::HaltRecords;
use crate::identity::Identities;
use crate::ports::{
    CredentialIssuer, EgressFilter, EventSink, HaltStore, HeartbeatBatch, Processed, QuotaLedger,
    RecordStore, TeamStore,
};
use crate::protocol::Event;
use crate::quota::Quotas;
use crate::record::holds::Holds;
use crate::record::team::TeamRecord;
use crate::record::AgentRecord;
use crate::runtime::Runtime;
use crate::store::Store;

/// What every agent actor shares. Cheap to clone.
#[derive(Clone)]
pub struct Deps {
    /// Docker containers, Swarm services or GPU containers, by deployment mode.
    pub runtime: Arc<dyn Runtime>,
    /// The agents' records, event streams and processed commands.
    pub records: Arc<dyn RecordStore>,
    /// Where events are published.
    pub events: Arc<dyn EventSink>,
    /// Per-customer quotas.
    pub quotas: Arc<dyn QuotaLedger>,
    /// Each agent's own RabbitMQ and Redis users; `None` with `AGENT_CREDENTIALS=shared`.
    pub credentials: Option<Arc<dyn CredentialIssuer>>,
    /// The teams' records.
    pub teams: Arc<dyn TeamStore>,
    /// The halts, kept in Redis and RabbitMQ (contract section 10).
    pub halts: Arc<dyn HaltStore>,
    /// Which halts hold which agents, in memory: what every actor asks before it gives
    /// an agent anything back (the halt actor alone changes it).
    pub holds: Holds,
    /// What agents may reach outside the platform (contract section 11).
    pub egress: Arc<dyn EgressFilter>,
    pub config: Arc<Config>,
}

impl Deps {
    /// The real services: Redis for records, quotas and the agents' ACL users, RabbitMQ
    /// for events and (its management API) the agents' users. Fails only when the
    /// management API's settings cannot be used (its URL, its CA file).
    pub fn new(
        runtime: Arc<dyn Runtime>,
        store: Store,
        publisher: EventPublisher,
        config: Arc<Config>,
        egress: Arc<dyn EgressFilter>,
    ) -> Result<Self, CredentialError> {
        let quotas = Quotas::new(store.clone(), config.quotas.clone());
        let credentials: Option<Arc<dyn CredentialIssuer>> = match config.agents.credentials {
            CredentialMode::PerAgent => Some(Arc::new(Identities::new(&config, store.clone())?)),
            CredentialMode::Shared => None,
        };
        // The broker's copy of the halts needs its management API, which per-agent
        // credentials already need; in shared mode Redis alone keeps them.
        let management = match config.agents.credentials {
            CredentialMode::PerAgent => Some(Management::for_config(&config.rabbitmq)?),
            CredentialMode::Shared => None,
        };
        Ok(Deps {
            runtime,
            halts: Arc::new(HaltRecords::new(
                store.clone(),
                management,
                &config.instance,
            )),
            holds: Holds::default(),
            teams: Arc::new(store.clone()),
            records: Arc::new(store),
            events: Arc::new(publisher),
            quotas: Arc::new(quotas),
            credentials,
            egress,
            config,
        })
    }
}

#[async_trait]
impl RecordStore for Store {
    async fn save(
        &self,
        record: &AgentRecord,
        events: &[Event],
        processed: Option<Processed<'_>>,
    ) -> Result<(), StoreError> {
        Store::save(self, record, events, processed).await
    }

    async fn delete(
        &self,
        record: &AgentRecord,
        processed: Option<Processed<'_>>,
    ) -> Result<(), StoreError> {
        Store::delete(self, record, processed).await
    }

    async fn save_processed(&self, processed: Processed<'_>) -> Result<(), StoreError> {
        Store::save_processed(self, processed).await
    }

    async fn processed(&self, message_id: &str) -> Result<Option<Vec<Event>>, StoreError> {
        Store::processed(self, message_id).await
    }

    async fn load_all(&self) -> Result<Vec<(String, Result<AgentRecord, StoreError>)>, StoreError> {
        Store::load_all(self).await
    }

    async fn heartbeats(&self, agent_ids: &[String]) -> Result<HeartbeatBatch, StoreError> {
        Store::heartbeats(self, agent_ids).await
    }
}

#[async_trait]
impl EventSink for EventPublisher {
    async fn publish(&self, events: &[Event]) -> Result<(), PublishError> {
        EventPublisher::publish(self, events).await
    }

    async fn publish_message(&self, routing_key: &str, body: &[u8]) -> Result<(), PublishError> {
        EventPublisher::publish_message(self, routing_key, body).await
    }
}

#[async_trait]
impl TeamStore for Store {
    async fn save_team(
        &self,
        team: &TeamRecord,
        processed: Option<Processed<'_>>,
    ) -> Result<(), StoreError> {
        Store::save_team(self, team, processed).await
    }

    async fn delete_team(
        &self,
        team: &TeamRecord,
        processed: Option<Processed<'_>>,
    ) -> Result<(), StoreError> {
        Store::delete_team(self, team, processed).await
    }

    async fn load_team(&self, team_id: &str) -> Result<Option<TeamRecord>, StoreError> {
        Store::load_team(self, team_id).await
    }

    async fn teams(&self, customer_id: Option<&str>) -> Result<Vec<TeamRecord>, StoreError> {
        let ids = self.team_ids(customer_id).await?;
        self.load_teams(&ids).await
    }
}
