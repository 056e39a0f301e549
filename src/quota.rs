//! Per-customer quotas (`[quotas]` in the configuration): how many agents a customer may
//! have and how much memory, CPU and GPU they may hold between them. Every existing agent
//! counts (running or stopped) with its configured resources.
//!
//! # Consistency
//!
//! Commands for different agents of one customer run concurrently (one actor per agent),
//! so the check and the reservation must be one atomic step: the store does each as a
//! Lua script that Redis runs atomically ([`Store::quota_reserve`],
//! [`Store::quota_release`], [`Store::quota_replace`]), over two hashes per customer:
//! `customer:<id>:reservations` (agent id → what that agent holds) and
//! `customer:<id>:usage` (the totals, for operators). A script replaces one agent's entry
//! and adjusts the totals by the difference, so repeating it is harmless (a redelivered
//! command reserves nothing twice). Only the agent's own actor changes its entry (its
//! commands run one at a time), so no two writers race on one entry. At start,
//! [`rebuild`] recomputes both hashes from the agent records, healing anything a crash
//! between a reservation and the record left behind.
//!
//! This module is the policy (what an agent holds, the limits, the messages); the keys
//! and scripts are the store's (`src/store/quota.rs`).
//!
//! The lifecycle reaches it through [`Quotas`], its [`QuotaLedger`]: `reserve` before a
//! create or update takes effect (refused with `quota_exceeded`), `resync` after an
//! update that failed, `release` when a delete has removed the workload and on a create
//! that failed, `rebuild` at start. Each takes only the store and the limits.

use std::collections::BTreeMap;

use async_trait::async_trait;

use crate::config::QuotaConfig;
use crate::error::AgentError;
use crate::ports::QuotaLedger;
use crate::protocol::{AgentSpec, ErrorCode, Resources};
use crate::record::AgentRecord;
use crate::store::{QuotaRefusal, QuotaReply, Store};

/// What one agent holds of its customer's quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Holding {
    pub memory_mb: u64,
    /// CPUs in thousandths (integers keep the totals exact).
    pub cpus_milli: u64,
    pub gpus: u64,
}

impl Holding {
    pub fn of(resources: &Resources) -> Holding {
        Holding {
            memory_mb: resources.memory_mb,
            cpus_milli: cpus_milli(resources.cpus),
            gpus: u64::from(resources.gpus),
        }
    }

    /// As the store takes it: `[memory_mb, cpus_milli, gpus]`.
    fn amounts(&self) -> [u64; 3] {
        [self.memory_mb, self.cpus_milli, self.gpus]
    }
}

fn cpus_milli(cpus: f64) -> u64 {
    (cpus * 1000.0).round().max(0.0) as u64
}

/// A customer's totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub agents: u64,
    pub memory_mb: u64,
    pub cpus_milli: u64,
    pub gpus: u64,
}

/// The limits as the store takes them (0 = unlimited), in the order of the usage fields
/// ([`crate::store::QUOTA_FIELDS`]).
fn limits(q: &QuotaConfig) -> [u64; 4] {
    [
        q.max_agents,
        q.max_memory_mb,
        cpus_milli(q.max_cpus),
        q.max_gpus,
    ]
}

/// The quota ledger over Redis, for the agent actors ([`QuotaLedger`]).
#[derive(Clone)]
pub struct Quotas {
    store: Store,
    limits: QuotaConfig,
}

impl Quotas {
    pub fn new(store: Store, limits: QuotaConfig) -> Self {
        Quotas { store, limits }
    }
}

#[async_trait]
impl QuotaLedger for Quotas {
    async fn reserve(&self, agent_id: &str, spec: &AgentSpec) -> Result<(), AgentError> {
        reserve(&self.store, &self.limits, agent_id, spec).await
    }

    async fn resync(&self, record: &AgentRecord) {
        resync(&self.store, &self.limits, record).await
    }

    async fn release(&self, agent_id: &str, customer_id: &str) -> Result<(), AgentError> {
        release(&self.store, agent_id, customer_id).await
    }

    async fn rebuild(&self, records: &[AgentRecord]) -> Result<(), AgentError> {
        rebuild(&self.store, records).await
    }
}

async fn set(
    store: &Store,
    quotas: &QuotaConfig,
    agent_id: &str,
    customer_id: &str,
    holding: Holding,
    check: bool,
) -> Result<(), AgentError> {
    let limits = limits(quotas);
    let reply = store
        .quota_reserve(customer_id, agent_id, holding.amounts(), limits, check)
        .await?;
    match reply {
        QuotaReply::Granted => Ok(()),
        QuotaReply::Refused(refusal) => Err(AgentError::refused(
            ErrorCode::QuotaExceeded,
            refusal_message(customer_id, &refusal),
        )),
    }
}

/// What an operator reads when a reservation is refused: the total, its limit and the
/// setting that sets it.
fn refusal_message(customer_id: &str, refusal: &QuotaRefusal) -> String {
    let QuotaRefusal {
        field,
        others,
        wanted,
        limit,
    } = refusal;
    match field.as_str() {
        "agents" => format!(
            "customer {customer_id} already has {others} agent(s); the quota allows {limit} (QUOTA_MAX_AGENTS)"
        ),
        "cpus_milli" => format!(
            "customer {customer_id}'s agents would hold {} CPUs; the quota allows {} (QUOTA_MAX_CPUS)",
            (others + wanted) as f64 / 1000.0,
            *limit as f64 / 1000.0
        ),
        "memory_mb" => format!(
            "customer {customer_id}'s agents would hold {} MiB of memory; the quota allows {limit} (QUOTA_MAX_MEMORY_MB)",
            others + wanted
        ),
        _ => format!(
            "customer {customer_id}'s agents would hold {} {field}; the quota allows {limit} (QUOTA_MAX_GPUS)",
            others + wanted
        ),
    }
}

/// Reserves `spec`'s resources for `agent_id` (replacing what it held), or refuses with
/// `quota_exceeded` and changes nothing. Shrinking is never refused.
pub async fn reserve(
    store: &Store,
    quotas: &QuotaConfig,
    agent_id: &str,
    spec: &AgentSpec,
) -> Result<(), AgentError> {
    set(
        store,
        quotas,
        agent_id,
        &spec.customer_id,
        Holding::of(&spec.resources),
        true,
    )
    .await
}

/// After a command that failed part-way: makes the agent hold exactly what its record
/// says (no check: the record is what exists). Failures are logged; the next start's
/// [`rebuild`] heals them.
pub async fn resync(store: &Store, quotas: &QuotaConfig, record: &AgentRecord) {
    let holding = Holding::of(&record.spec.resources);
    if let Err(e) = set(
        store,
        quotas,
        &record.agent_id,
        &record.spec.customer_id,
        holding,
        false,
    )
    .await
    {
        tracing::warn!(agent_id = %record.agent_id, error = %e, "could not resync the agent's quota");
    }
}

/// Frees what `agent_id` held of `customer_id`'s quota. Harmless when it held nothing.
pub async fn release(store: &Store, agent_id: &str, customer_id: &str) -> Result<(), AgentError> {
    store.quota_release(customer_id, agent_id).await?;
    Ok(())
}

/// Recomputes every customer's reservations and totals from `records` (at start, before
/// any command is consumed), and removes those of customers without agents.
pub async fn rebuild(store: &Store, records: &[AgentRecord]) -> Result<(), AgentError> {
    let mut by_customer: BTreeMap<&str, Vec<&AgentRecord>> = BTreeMap::new();
    for record in records {
        by_customer
            .entry(record.spec.customer_id.as_str())
            .or_default()
            .push(record);
    }
    let stale: Vec<String> = store
        .quota_customers()
        .await?
        .into_iter()
        .filter(|c| !by_customer.contains_key(c.as_str()))
        .collect();
    for customer in &stale {
        store.quota_replace(customer, &[]).await?;
    }
    for (customer, agents) in &by_customer {
        let holdings: Vec<(String, [u64; 3])> = agents
            .iter()
            .map(|r| (r.agent_id.clone(), Holding::of(&r.spec.resources).amounts()))
            .collect();
        store.quota_replace(customer, &holdings).await?;
    }
    tracing::info!(
        customers = by_customer.len(),
        cleared = stale.len(),
        "quota usage recomputed from the agent records"
    );
    Ok(())
}

/// A customer's current totals (for operators and tests).
pub async fn usage(store: &Store, customer_id: &str) -> Result<Usage, AgentError> {
    let [agents, memory_mb, cpus_milli, gpus] = store.quota_usage(customer_id).await?;
    Ok(Usage {
        agents,
        memory_mb,
        cpus_milli,
        gpus,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holdings_are_whole_numbers() {
        let h = Holding::of(&Resources {
            memory_mb: 512,
            cpus: 0.333_7,
            gpus: 1,
            max_messages_per_s: None,
        });
        assert_eq!(h.cpus_milli, 334);
        assert_eq!(h.amounts(), [512, 334, 1]);
        let q = QuotaConfig {
            max_agents: 3,
            max_memory_mb: 0,
            max_cpus: 2.5,
            max_gpus: 0,
        };
        assert_eq!(limits(&q), [3, 0, 2500, 0]);
    }

    #[test]
    fn refusals_name_the_total_and_its_setting() {
        let refusal = |field: &str, others, wanted, limit| QuotaRefusal {
            field: field.into(),
            others,
            wanted,
            limit,
        };
        assert_eq!(
            refusal_message("c1", &refusal("agents", 2, 1, 2)),
            "customer c1 already has 2 agent(s); the quota allows 2 (QUOTA_MAX_AGENTS)"
        );
        assert_eq!(
            refusal_message("c1", &refusal("cpus_milli", 1500, 1000, 2000)),
            "customer c1's agents would hold 2.5 CPUs; the quota allows 2 (QUOTA_MAX_CPUS)"
        );
        assert_eq!(
            refusal_message("c1", &refusal("memory_mb", 768, 512, 1024)),
            "customer c1's agents would hold 1280 MiB of memory; the quota allows 1024 (QUOTA_MAX_MEMORY_MB)"
        );
        assert_eq!(
            refusal_message("c1", &refusal("gpus", 1, 1, 1)),
            "customer c1's agents would hold 2 gpus; the quota allows 1 (QUOTA_MAX_GPUS)"
        );
    }
}
