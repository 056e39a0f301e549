//! In-memory fakes of every boundary ([`crate::runtime::Runtime`] and the
//! [`crate::ports`], the agents' credential issuer included), for unit tests only: the lifecycle, the looks and self-healing
//! run over them in milliseconds, without Docker, Redis, RabbitMQ or actix. Each fake
//! can be told to fail, and all of them write one shared [`Journal`], so a test can
//! check the order of effects (a status saved before the Docker call it announces, a
//! record saved before the event that reports it).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

use crate::config::{Config, CredentialMode};
use crate::context::Deps;
use crate::credentials::{LoginCensus, Password};
use crate::error::{
    AgentError, BrokerError, CredentialError, PublishError, RuntimeError, StoreError,
};
use crate::ports::{
    CredentialIssuer, EventSink, HaltStore, HeartbeatBatch, Processed, QuotaLedger, RecordStore,
    TeamStore,
};
use crate::protocol::{AgentSpec, ErrorCode, Event};
use crate::record::halt::{HaltEntry, HaltRecord};
use crate::record::team::TeamRecord;
use crate::record::AgentRecord;
use crate::runtime::{ContainerSpec, Observed, Runtime, Stats};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Docker's 409 for an operation the container's state does not allow.
fn conflict(op: &'static str, message: &str) -> RuntimeError {
    RuntimeError::Docker {
        op,
        status: Some(409),
        message: message.into(),
    }
}

/// Every effect, in order: `runtime start c-1`, `save a-1 starting`, `publish
/// agent.started a-1`, ...
#[derive(Clone, Default)]
pub struct Journal(Arc<Mutex<Vec<String>>>);

impl Journal {
    pub fn push(&self, entry: String) {
        lock(&self.0).push(entry);
    }

    pub fn entries(&self) -> Vec<String> {
        lock(&self.0).clone()
    }

    /// Entries that start with `prefix`.
    pub fn matching(&self, prefix: &str) -> Vec<String> {
        self.entries()
            .into_iter()
            .filter(|e| e.starts_with(prefix))
            .collect()
    }

    /// Position of the first entry equal to `entry`.
    pub fn position(&self, entry: &str) -> Option<usize> {
        self.entries().iter().position(|e| e == entry)
    }

    pub fn clear(&self) {
        lock(&self.0).clear();
    }
}

/// A failure the fake runtime is told to give.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Docker answers 500.
    Docker,
    /// Docker answers 404.
    NotFound,
    /// The image is neither present nor pullable.
    ImageNotFound,
    /// The GPU allocations in Redis are away (transient).
    Store,
}

impl Fault {
    fn error(self, op: &'static str) -> RuntimeError {
        match self {
            Fault::Docker => RuntimeError::Docker {
                op,
                status: Some(500),
                message: format!("injected failure of {op}"),
            },
            Fault::NotFound => RuntimeError::NotFound(format!("injected: no such workload ({op})")),
            Fault::ImageNotFound => RuntimeError::ImageNotFound("injected".into()),
            Fault::Store => RuntimeError::Store(StoreError::Timeout { op: "injected" }),
        }
    }
}

#[derive(Debug, Clone)]
struct Container {
    id: String,
    spec: ContainerSpec,
    running: bool,
    /// Frozen (Docker pause); only while running.
    paused: bool,
}

#[derive(Default)]
struct RuntimeState {
    containers: Vec<Container>,
    next_id: u32,
    faults: HashMap<&'static str, Fault>,
    /// Faults of one operation on one container (by id or name).
    faults_for: HashMap<(&'static str, String), Fault>,
}

/// Containers in memory. Operation names for [`FakeRuntime::fail`]: `ensure_image`,
/// `create`, `start`, `stop`, `restart`, `remove`, `update_resources`, `pause`,
/// `unpause`, `inspect`. Pause and unpause behave as Docker's: a container that is not
/// running cannot be paused (409), a paused one cannot be started (409); stop, restart
/// and remove work on a paused one.
#[derive(Clone, Default)]
pub struct FakeRuntime {
    state: Arc<Mutex<RuntimeState>>,
    journal: Journal,
}

impl FakeRuntime {
    pub fn new(journal: Journal) -> Self {
        FakeRuntime {
            state: Arc::default(),
            journal,
        }
    }

    /// Every later call of `op` fails with `fault` (until [`FakeRuntime::heal`]).
    pub fn fail(&self, op: &'static str, fault: Fault) {
        lock(&self.state).faults.insert(op, fault);
    }

    /// Every later call of `op` on container `target` (its id or name) fails with
    /// `fault`; other containers are untouched.
    pub fn fail_for(&self, op: &'static str, target: &str, fault: Fault) {
        lock(&self.state)
            .faults_for
            .insert((op, target.to_string()), fault);
    }

    /// No more injected failures.
    pub fn heal(&self) {
        let mut s = lock(&self.state);
        s.faults.clear();
        s.faults_for.clear();
    }

    /// A container made outside the lifecycle (adopted, or set up by a test).
    pub fn add(&self, spec: ContainerSpec, running: bool) -> String {
        let mut s = lock(&self.state);
        s.next_id += 1;
        let id = format!("c-{}", s.next_id);
        s.containers.push(Container {
            id: id.clone(),
            spec,
            running,
            paused: false,
        });
        id
    }

    /// Pauses container `id` behind the manager's back (or for a test's set-up).
    pub fn freeze(&self, id: &str) {
        let _ = self.with(id, |c| {
            c.running = true;
            c.paused = true;
        });
    }

    /// Whether container `id` exists and is paused.
    pub fn paused(&self, id: &str) -> Option<bool> {
        lock(&self.state)
            .containers
            .iter()
            .find(|c| c.id == id)
            .map(|c| c.paused)
    }

    /// Removes a container behind the manager's back.
    pub fn vanish(&self, id: &str) {
        lock(&self.state).containers.retain(|c| c.id != id);
    }

    /// Whether container `id` exists and runs.
    pub fn running(&self, id: &str) -> Option<bool> {
        lock(&self.state)
            .containers
            .iter()
            .find(|c| c.id == id)
            .map(|c| c.running)
    }

    /// The containers, by name.
    pub fn names(&self) -> Vec<String> {
        lock(&self.state)
            .containers
            .iter()
            .map(|c| c.spec.name.clone())
            .collect()
    }

    /// The spec container `id` was made with.
    pub fn spec_of(&self, id: &str) -> Option<ContainerSpec> {
        lock(&self.state)
            .containers
            .iter()
            .find(|c| c.id == id)
            .map(|c| c.spec.clone())
    }

    /// Journals the call and gives the injected failure, if any.
    fn enter(&self, op: &'static str, target: &str) -> Result<(), RuntimeError> {
        self.journal.push(format!("runtime {op} {target}"));
        let s = lock(&self.state);
        let named = s
            .containers
            .iter()
            .find(|c| c.id == target || c.spec.name == target)
            .map(|c| (c.id.clone(), c.spec.name.clone()));
        let own = named.and_then(|(id, name)| {
            s.faults_for
                .get(&(op, id))
                .or_else(|| s.faults_for.get(&(op, name)))
                .copied()
        });
        match own.or_else(|| s.faults.get(op).copied()) {
            Some(fault) => Err(fault.error(op)),
            None => Ok(()),
        }
    }

    fn with<T>(&self, id: &str, f: impl FnOnce(&mut Container) -> T) -> Result<T, RuntimeError> {
        let mut s = lock(&self.state);
        s.containers
            .iter_mut()
            .find(|c| c.id == id || c.spec.name == id)
            .map(f)
            .ok_or_else(|| RuntimeError::NotFound(format!("no such container: {id}")))
    }

    fn observed(c: &Container) -> Observed {
        Observed {
            id: c.id.clone(),
            name: c.spec.name.clone(),
            image: c.spec.image.clone(),
            labels: c.spec.labels.clone(),
            env: c.spec.env.clone(),
            state: match (c.running, c.paused) {
                (true, true) => "paused",
                (true, false) => "running",
                (false, _) => "exited",
            }
            .into(),
            running: c.running,
            paused: c.paused,
            exit_code: (!c.running).then_some(0),
            health: "none".into(),
            memory_bytes: c.spec.memory_bytes,
            nano_cpus: c.spec.nano_cpus,
            ..Default::default()
        }
    }
}

#[async_trait]
impl Runtime for FakeRuntime {
    fn mode(&self) -> &'static str {
        "fake"
    }

    async fn prepare(&self) -> Result<(), RuntimeError> {
        Ok(())
    }

    async fn ping(&self) -> Result<(), RuntimeError> {
        Ok(())
    }

    async fn ensure_image(&self, image: &str) -> Result<(), RuntimeError> {
        self.enter("ensure_image", image)
    }

    /// As Docker's: a container of the name with the same recreate hash is returned, one
    /// with another hash is stale and replaced.
    async fn create(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        self.enter("create", &spec.name)?;
        let existing = lock(&self.state)
            .containers
            .iter()
            .find(|c| c.spec.name == spec.name)
            .map(|c| (c.id.clone(), c.spec.recreate_hash == spec.recreate_hash));
        match existing {
            Some((id, true)) => Ok(id),
            Some((stale, false)) => {
                self.vanish(&stale);
                Ok(self.add(spec.clone(), false))
            }
            None => Ok(self.add(spec.clone(), false)),
        }
    }

    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        self.enter("start", id)?;
        self.with(id, |c| {
            if c.paused {
                return Err(conflict("start", "cannot start a paused container"));
            }
            c.running = true;
            Ok(())
        })?
    }

    async fn stop(&self, id: &str, _timeout_s: u32) -> Result<(), RuntimeError> {
        self.enter("stop", id)?;
        self.with(id, |c| {
            c.running = false;
            c.paused = false;
        })
    }

    async fn restart(&self, id: &str, _timeout_s: u32) -> Result<(), RuntimeError> {
        self.enter("restart", id)?;
        self.with(id, |c| {
            c.running = true;
            c.paused = false;
        })
    }

    async fn pause(&self, id: &str) -> Result<(), RuntimeError> {
        self.enter("pause", id)?;
        self.with(id, |c| {
            if !c.running {
                return Err(conflict("pause", "container is not running"));
            }
            c.paused = true;
            Ok(())
        })?
    }

    async fn unpause(&self, id: &str) -> Result<(), RuntimeError> {
        self.enter("unpause", id)?;
        self.with(id, |c| c.paused = false)
    }

    async fn remove(&self, id: &str, _timeout_s: u32) -> Result<(), RuntimeError> {
        self.enter("remove", id)?;
        lock(&self.state)
            .containers
            .retain(|c| c.id != id && c.spec.name != id);
        Ok(())
    }

    async fn update_resources(&self, id: &str, spec: &ContainerSpec) -> Result<(), RuntimeError> {
        self.enter("update_resources", id)?;
        self.with(id, |c| {
            c.spec.memory_bytes = spec.memory_bytes;
            c.spec.nano_cpus = spec.nano_cpus;
        })
    }

    async fn inspect(&self, id_or_name: &str) -> Result<Option<Observed>, RuntimeError> {
        self.enter("inspect", id_or_name)?;
        Ok(self.with(id_or_name, |c| Self::observed(c)).ok())
    }

    async fn list_managed(&self) -> Result<Vec<Observed>, RuntimeError> {
        Ok(lock(&self.state)
            .containers
            .iter()
            .map(Self::observed)
            .collect())
    }

    async fn list_managed_brief(&self) -> Result<Vec<Observed>, RuntimeError> {
        self.list_managed().await
    }

    async fn stats(&self, _id: &str) -> Result<Option<Stats>, RuntimeError> {
        Ok(None)
    }

    async fn logs(&self, id: &str, _tail: u32) -> Result<Vec<String>, RuntimeError> {
        Ok(vec![format!("last words of {id}")])
    }
}

#[derive(Default)]
struct StoreState {
    records: HashMap<String, AgentRecord>,
    streams: HashMap<String, Vec<Event>>,
    processed: HashMap<String, Vec<Event>>,
    teams: HashMap<String, TeamRecord>,
    /// The next this many writes fail (Redis away).
    failing_writes: usize,
}

/// Records, streams, processed markers and teams in memory.
#[derive(Clone, Default)]
pub struct FakeStore {
    state: Arc<Mutex<StoreState>>,
    journal: Journal,
}

impl FakeStore {
    pub fn new(journal: Journal) -> Self {
        FakeStore {
            state: Arc::default(),
            journal,
        }
    }

    /// The next `n` writes fail as if Redis were away.
    pub fn fail_writes(&self, n: usize) {
        lock(&self.state).failing_writes = n;
    }

    pub fn record(&self, agent_id: &str) -> Option<AgentRecord> {
        lock(&self.state).records.get(agent_id).cloned()
    }

    pub fn put(&self, record: AgentRecord) {
        lock(&self.state)
            .records
            .insert(record.agent_id.clone(), record);
    }

    /// The agent's event stream.
    pub fn stream(&self, agent_id: &str) -> Vec<Event> {
        lock(&self.state)
            .streams
            .get(agent_id)
            .cloned()
            .unwrap_or_default()
    }

    pub fn processed_answer(&self, message_id: &str) -> Option<Vec<Event>> {
        lock(&self.state).processed.get(message_id).cloned()
    }

    pub fn team(&self, team_id: &str) -> Option<TeamRecord> {
        lock(&self.state).teams.get(team_id).cloned()
    }

    pub fn put_team(&self, team: TeamRecord) {
        lock(&self.state).teams.insert(team.team_id.clone(), team);
    }

    /// Removes an agent's record behind the manager's back (it vanished while the
    /// manager was down).
    pub fn forget(&self, agent_id: &str) {
        lock(&self.state).records.remove(agent_id);
    }

    /// Journals a call; a write fails while [`FakeStore::fail_writes`] says so.
    fn enter(&self, entry: String, write: bool) -> Result<MutexGuard<'_, StoreState>, StoreError> {
        self.journal.push(entry);
        let mut s = lock(&self.state);
        if write && s.failing_writes > 0 {
            s.failing_writes -= 1;
            return Err(StoreError::Timeout { op: "injected" });
        }
        Ok(s)
    }

    fn remember(s: &mut StoreState, processed: Option<Processed<'_>>) {
        if let Some(p) = processed {
            s.processed
                .insert(p.message_id.to_string(), p.answer.to_vec());
        }
    }
}

#[async_trait]
impl RecordStore for FakeStore {
    async fn save(
        &self,
        record: &AgentRecord,
        events: &[Event],
        processed: Option<Processed<'_>>,
    ) -> Result<(), StoreError> {
        let entry = format!("save {} {}", record.agent_id, record.status().as_str());
        let mut s = self.enter(entry, true)?;
        s.records.insert(record.agent_id.clone(), record.clone());
        s.streams
            .entry(record.agent_id.clone())
            .or_default()
            .extend(events.iter().cloned());
        Self::remember(&mut s, processed);
        Ok(())
    }

    async fn delete(
        &self,
        record: &AgentRecord,
        processed: Option<Processed<'_>>,
    ) -> Result<(), StoreError> {
        let mut s = self.enter(format!("delete {}", record.agent_id), true)?;
        s.records.remove(&record.agent_id);
        s.streams.remove(&record.agent_id);
        Self::remember(&mut s, processed);
        Ok(())
    }

    async fn save_processed(&self, processed: Processed<'_>) -> Result<(), StoreError> {
        let mut s = self.enter(format!("processed {}", processed.message_id), true)?;
        Self::remember(&mut s, Some(processed));
        Ok(())
    }

    async fn processed(&self, message_id: &str) -> Result<Option<Vec<Event>>, StoreError> {
        let s = self.enter(format!("lookup {message_id}"), false)?;
        Ok(s.processed.get(message_id).cloned())
    }

    async fn load_all(&self) -> Result<Vec<(String, Result<AgentRecord, StoreError>)>, StoreError> {
        let s = self.enter("load_all".into(), false)?;
        Ok(s.records
            .iter()
            .map(|(id, r)| (id.clone(), Ok(r.clone())))
            .collect())
    }

    async fn heartbeats(&self, agent_ids: &[String]) -> Result<HeartbeatBatch, StoreError> {
        // No agent of the fakes writes a heartbeat, and the fake Redis never restarts.
        let _s = self.enter(format!("heartbeats {}", agent_ids.len()), false)?;
        Ok(HeartbeatBatch {
            server_run_id: "fake-0".into(),
            values: vec![None; agent_ids.len()],
        })
    }
}

#[async_trait]
impl TeamStore for FakeStore {
    async fn save_team(
        &self,
        team: &TeamRecord,
        processed: Option<Processed<'_>>,
    ) -> Result<(), StoreError> {
        let mut s = self.enter(format!("save team {}", team.team_id), true)?;
        s.teams.insert(team.team_id.clone(), team.clone());
        Self::remember(&mut s, processed);
        Ok(())
    }

    async fn delete_team(
        &self,
        team: &TeamRecord,
        processed: Option<Processed<'_>>,
    ) -> Result<(), StoreError> {
        let mut s = self.enter(format!("delete team {}", team.team_id), true)?;
        s.teams.remove(&team.team_id);
        Self::remember(&mut s, processed);
        Ok(())
    }

    async fn load_team(&self, team_id: &str) -> Result<Option<TeamRecord>, StoreError> {
        let s = self.enter(format!("load team {team_id}"), false)?;
        Ok(s.teams.get(team_id).cloned())
    }

    async fn teams(&self, customer_id: Option<&str>) -> Result<Vec<TeamRecord>, StoreError> {
        let s = self.enter("load teams".into(), false)?;
        let mut teams: Vec<TeamRecord> = s
            .teams
            .values()
            .filter(|t| customer_id.is_none_or(|c| t.customer_id == c))
            .cloned()
            .collect();
        teams.sort_by(|a, b| a.team_id.cmp(&b.team_id));
        Ok(teams)
    }
}

/// Published events and messages, in order.
#[derive(Clone, Default)]
pub struct FakeSink {
    published: Arc<Mutex<Vec<Event>>>,
    /// Messages that are not events: (routing key, body).
    messages: Arc<Mutex<Vec<(String, serde_json::Value)>>>,
    failing: Arc<Mutex<bool>>,
    journal: Journal,
}

impl FakeSink {
    pub fn new(journal: Journal) -> Self {
        FakeSink {
            journal,
            ..Default::default()
        }
    }

    pub fn published(&self) -> Vec<Event> {
        lock(&self.published).clone()
    }

    /// Publishing fails (RabbitMQ away, no outbox) until told otherwise.
    pub fn set_failing(&self, failing: bool) {
        *lock(&self.failing) = failing;
    }

    /// The messages that are not events (team messages), as (routing key, body).
    pub fn messages(&self) -> Vec<(String, serde_json::Value)> {
        lock(&self.messages).clone()
    }

    pub fn clear(&self) {
        lock(&self.published).clear();
        lock(&self.messages).clear();
    }
}

#[async_trait]
impl EventSink for FakeSink {
    async fn publish(&self, events: &[Event]) -> Result<(), PublishError> {
        for e in events {
            self.journal
                .push(format!("publish {} {}", e.routing_key(), e.agent_id));
        }
        if *lock(&self.failing) {
            return Err(PublishError::Unavailable(BrokerError::Timeout {
                op: "publishing (injected)".into(),
                after_s: 0,
            }));
        }
        lock(&self.published).extend(events.iter().cloned());
        Ok(())
    }

    async fn publish_message(&self, routing_key: &str, body: &[u8]) -> Result<(), PublishError> {
        self.journal.push(format!("message {routing_key}"));
        if *lock(&self.failing) {
            return Err(PublishError::Unavailable(BrokerError::Timeout {
                op: "publishing (injected)".into(),
                after_s: 0,
            }));
        }
        let body = serde_json::from_slice(body).unwrap_or(serde_json::Value::Null);
        lock(&self.messages).push((routing_key.to_string(), body));
        Ok(())
    }
}

/// A quota of at most `max_agents` agents per customer (0: unlimited).
#[derive(Clone, Default)]
pub struct FakeQuota {
    /// customer → agent → memory MiB held.
    held: Arc<Mutex<HashMap<String, HashMap<String, u64>>>>,
    max_agents: usize,
    journal: Journal,
}

impl FakeQuota {
    pub fn new(max_agents: usize, journal: Journal) -> Self {
        FakeQuota {
            max_agents,
            journal,
            ..Default::default()
        }
    }

    /// What `agent_id` holds of `customer_id`'s quota (memory MiB), if anything.
    pub fn holding(&self, customer_id: &str, agent_id: &str) -> Option<u64> {
        lock(&self.held)
            .get(customer_id)
            .and_then(|agents| agents.get(agent_id).copied())
    }
}

#[async_trait]
impl QuotaLedger for FakeQuota {
    async fn reserve(&self, agent_id: &str, spec: &AgentSpec) -> Result<(), AgentError> {
        self.journal.push(format!("quota reserve {agent_id}"));
        let mut held = lock(&self.held);
        let agents = held.entry(spec.customer_id.clone()).or_default();
        if self.max_agents > 0 && !agents.contains_key(agent_id) && agents.len() >= self.max_agents
        {
            return Err(AgentError::refused(
                ErrorCode::QuotaExceeded,
                format!(
                    "customer {} already has {} agent(s)",
                    spec.customer_id,
                    agents.len()
                ),
            ));
        }
        agents.insert(agent_id.to_string(), spec.resources.memory_mb);
        Ok(())
    }

    async fn resync(&self, record: &AgentRecord) {
        self.journal
            .push(format!("quota resync {}", record.agent_id));
        lock(&self.held)
            .entry(record.spec.customer_id.clone())
            .or_default()
            .insert(record.agent_id.clone(), record.spec.resources.memory_mb);
    }

    async fn release(&self, agent_id: &str, customer_id: &str) -> Result<(), AgentError> {
        self.journal.push(format!("quota release {agent_id}"));
        if let Some(agents) = lock(&self.held).get_mut(customer_id) {
            agents.remove(agent_id);
        }
        Ok(())
    }

    async fn rebuild(&self, records: &[AgentRecord]) -> Result<(), AgentError> {
        let mut held = lock(&self.held);
        held.clear();
        for r in records {
            held.entry(r.spec.customer_id.clone())
                .or_default()
                .insert(r.agent_id.clone(), r.spec.resources.memory_mb);
        }
        Ok(())
    }
}

#[derive(Default)]
struct IssuerState {
    /// agent → the password its users log in with.
    users: HashMap<String, String>,
    /// Agents whose users one service lost (not complete).
    incomplete: HashSet<String>,
    /// Operations that fail, and whether as away (503) or refused (401).
    failing: HashMap<&'static str, bool>,
}

/// The agents' users in memory: which agent logs in with which password.
#[derive(Clone, Default)]
pub struct FakeIssuer {
    state: Arc<Mutex<IssuerState>>,
    journal: Journal,
}

impl FakeIssuer {
    pub fn new(journal: Journal) -> Self {
        FakeIssuer {
            state: Arc::default(),
            journal,
        }
    }

    /// Every later `op` (`issue`, `revoke`, `census`) is refused (401: a wrong
    /// management user), until [`FakeIssuer::heal`].
    pub fn fail(&self, op: &'static str) {
        lock(&self.state).failing.insert(op, false);
    }

    /// Every later `op` fails as if the management API were away (503: retried).
    pub fn away(&self, op: &'static str) {
        lock(&self.state).failing.insert(op, true);
    }

    pub fn heal(&self) {
        lock(&self.state).failing.clear();
    }

    /// The password `agent_id`'s users log in with, if it has users.
    pub fn password_of(&self, agent_id: &str) -> Option<String> {
        lock(&self.state).users.get(agent_id).cloned()
    }

    /// The agents that have users.
    pub fn agents(&self) -> Vec<String> {
        let mut agents: Vec<String> = lock(&self.state).users.keys().cloned().collect();
        agents.sort();
        agents
    }

    /// Users made outside the lifecycle (left by an earlier manager).
    pub fn put(&self, agent_id: &str, password: &str) {
        lock(&self.state)
            .users
            .insert(agent_id.to_string(), password.to_string());
    }

    /// One service lost `agent_id`'s user (Redis restarted without its ACLs).
    pub fn lose(&self, agent_id: &str) {
        lock(&self.state).incomplete.insert(agent_id.to_string());
    }

    fn enter(
        &self,
        op: &'static str,
        target: &str,
    ) -> Result<MutexGuard<'_, IssuerState>, CredentialError> {
        self.journal.push(format!("credentials {op} {target}"));
        let s = lock(&self.state);
        if let Some(away) = s.failing.get(op) {
            return Err(CredentialError::Management {
                op,
                status: Some(if *away { 503 } else { 401 }),
                message: format!("injected failure of {op}"),
            });
        }
        Ok(s)
    }
}

#[async_trait]
impl CredentialIssuer for FakeIssuer {
    async fn issue(&self, agent_id: &str, password: &Password) -> Result<(), CredentialError> {
        let mut s = self.enter("issue", agent_id)?;
        s.users
            .insert(agent_id.to_string(), password.expose().to_string());
        s.incomplete.remove(agent_id);
        Ok(())
    }

    async fn revoke(&self, agent_id: &str) -> Result<(), CredentialError> {
        let mut s = self.enter("revoke", agent_id)?;
        s.users.remove(agent_id);
        s.incomplete.remove(agent_id);
        Ok(())
    }

    async fn cut(&self, agent_ids: &[String]) -> Vec<(String, CredentialError)> {
        let mut failed = Vec::new();
        for id in agent_ids {
            match self.enter("cut", id) {
                Ok(mut s) => {
                    s.users.remove(id);
                }
                Err(e) => failed.push((id.clone(), e)),
            }
        }
        failed
    }

    async fn census(&self) -> Result<LoginCensus, CredentialError> {
        let s = self.enter("census", "all")?;
        let owned: HashSet<String> = s.users.keys().cloned().collect();
        Ok(LoginCensus {
            complete: owned.difference(&s.incomplete).cloned().collect(),
            owned,
        })
    }
}

/// The halts kept outside the manager, in memory.
#[derive(Clone, Default)]
pub struct FakeHalts(Arc<Mutex<std::collections::BTreeMap<String, HaltRecord>>>);

#[async_trait]
impl HaltStore for FakeHalts {
    async fn save_halt(
        &self,
        halt: &HaltRecord,
        _entry: Option<HaltEntry<'_>>,
        _processed: Option<Processed<'_>>,
    ) -> Result<(), AgentError> {
        if let Ok(mut m) = self.0.lock() {
            m.insert(halt.halt_id.clone(), halt.clone());
        }
        Ok(())
    }

    async fn delete_halt(
        &self,
        halt: &HaltRecord,
        _entry: Option<HaltEntry<'_>>,
        _processed: Option<Processed<'_>>,
    ) -> Result<(), AgentError> {
        if let Ok(mut m) = self.0.lock() {
            m.remove(&halt.halt_id);
        }
        Ok(())
    }

    async fn load_halts(&self) -> Result<Vec<HaltRecord>, AgentError> {
        Ok(self
            .0
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default())
    }
}

/// Every fake, wired into a [`Deps`].
#[derive(Clone)]
pub struct Fakes {
    pub deps: Deps,
    pub runtime: FakeRuntime,
    pub store: FakeStore,
    pub sink: FakeSink,
    pub quota: FakeQuota,
    /// The agents' users (wired only with per-agent credentials).
    pub issuer: FakeIssuer,
    pub journal: Journal,
}

/// An egress filter that only writes down what it was asked (`egress allow a1`,
/// `egress forget a1`, `egress sync a1,a2`).
pub struct FakeEgress(Journal);

#[async_trait]
impl crate::ports::EgressFilter for FakeEgress {
    fn enforced(&self) -> bool {
        true
    }
    async fn allow(&self, agent_id: &str, spec: &AgentSpec) -> Result<(), RuntimeError> {
        self.0
            .push(format!("egress allow {agent_id} {}", spec.egress.join(",")));
        Ok(())
    }
    async fn forget(&self, agent_id: &str) -> Result<(), RuntimeError> {
        self.0.push(format!("egress forget {agent_id}"));
        Ok(())
    }
    async fn sync(&self, agents: &[AgentRecord]) -> Result<(), RuntimeError> {
        let mut ids: Vec<&str> = agents.iter().map(|r| r.agent_id.as_str()).collect();
        ids.sort_unstable();
        self.0.push(format!("egress sync {}", ids.join(",")));
        Ok(())
    }
    async fn refused_by_agent(&self) -> Result<HashMap<String, u64>, RuntimeError> {
        Ok(HashMap::new())
    }
}

impl Fakes {
    /// Fakes under `config`, with a quota of `max_agents` per customer (0: none).
    pub fn new(config: Config, max_agents: usize) -> Fakes {
        let journal = Journal::default();
        let runtime = FakeRuntime::new(journal.clone());
        let store = FakeStore::new(journal.clone());
        let sink = FakeSink::new(journal.clone());
        let quota = FakeQuota::new(max_agents, journal.clone());
        let issuer = FakeIssuer::new(journal.clone());
        let credentials: Option<Arc<dyn CredentialIssuer>> = match config.agents.credentials {
            CredentialMode::PerAgent => Some(Arc::new(issuer.clone())),
            CredentialMode::Shared => None,
        };
        let deps = Deps {
            runtime: Arc::new(runtime.clone()),
            records: Arc::new(store.clone()),
            teams: Arc::new(store.clone()),
            events: Arc::new(sink.clone()),
            quotas: Arc::new(quota.clone()),
            credentials,
            halts: Arc::new(FakeHalts::default()),
            holds: crate::record::holds::Holds::default(),
            egress: Arc::new(FakeEgress(journal.clone())),
            config: Arc::new(config),
        };
        Fakes {
            deps,
            runtime,
            store,
            sink,
            quota,
            issuer,
            journal,
        }
    }
}
