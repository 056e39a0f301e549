//! What `/metrics` shows besides the registry's counters: read at each scrape from the
//! agents' records (status, health, restarts, info, per-customer quota use), the usage
//! samples the actors keep ([`metrics::usage`]), the GPU allocations, and `/proc/self`.

use std::collections::{BTreeMap, HashSet};

use crate::config::QuotaConfig;
use crate::metrics;
use crate::metrics::agents::{AgentView, GpuView, QuotaView};
use crate::metrics::events::{AgentsCounted, Readiness};
use crate::protocol::AgentStatus;
use crate::record::AgentRecord;
use crate::store::Store;

/// Where a scrape reads from.
#[derive(Clone)]
pub struct MetricsSource {
    pub store: Store,
    /// GPUs in the inventory (gpu mode); `None` in the other modes.
    pub gpu_inventory: Option<u64>,
    /// The per-customer limits, for `type="hard"`.
    pub quotas: QuotaConfig,
    /// Egress refusals per agent (contract section 11).
    pub egress: std::sync::Arc<dyn crate::ports::EgressFilter>,
}

/// The whole `/metrics` text. A Redis failure leaves out what needs the records (the
/// registry's series and the process's still show).
pub async fn render(source: &MetricsSource, ready: bool) -> String {
    let records: Vec<AgentRecord> = match source.store.load_all().await {
        Ok(all) => all.into_iter().filter_map(|(_, r)| r.ok()).collect(),
        Err(e) => {
            tracing::debug!(error = %e, "metrics: records not read");
            Vec::new()
        }
    };
    let mut by_status: BTreeMap<(String, String), f64> = BTreeMap::new();
    for r in &records {
        let key = (
            r.status().as_str().into(),
            r.spec.agent_type.as_str().into(),
        );
        *by_status.entry(key).or_default() += 1.0;
    }
    metrics::emit(AgentsCounted {
        by_status_and_type: by_status,
    });
    metrics::emit(Readiness { ready });
    let mut out = metrics::render();

    let refused = if source.egress.enforced() {
        source.egress.refused_by_agent().await.ok()
    } else {
        None
    };
    let views: Vec<AgentView> = records
        .iter()
        .map(|r| {
            let egress_refused = refused
                .as_ref()
                .map(|by_agent| by_agent.get(&r.agent_id).copied().unwrap_or(0));
            view(r, egress_refused)
        })
        .collect();
    let present: HashSet<&str> = records.iter().map(|r| r.agent_id.as_str()).collect();
    let usage = metrics::usage::of(&present);
    let gpus = match source.gpu_inventory {
        Some(total) => {
            let held = source
                .store
                .gpu_allocations()
                .await
                .map(|a| a.len() as u64)
                .unwrap_or(0);
            Some(GpuView {
                total,
                free: total.saturating_sub(held),
            })
        }
        None => None,
    };
    let statuses: Vec<&str> = AgentStatus::ALL.iter().map(|s| s.as_str()).collect();
    metrics::agents::render(
        &mut out,
        &views,
        &usage,
        &quota_use(&records, &source.quotas),
        gpus,
        &statuses,
    );
    metrics::process::render(
        &mut out,
        metrics::process::read(),
        crate::build_info::VERSION,
        crate::build_info::GIT_COMMIT,
    );
    out
}

fn view(r: &AgentRecord, egress_refused: Option<u64>) -> AgentView {
    AgentView {
        agent_id: r.agent_id.clone(),
        customer_id: r.spec.customer_id.clone(),
        agent_type: r.spec.agent_type.as_str().into(),
        image: r.spec.image.clone(),
        status: r.status().as_str().into(),
        health: r.health.clone(),
        restarts: r.restart_count,
        egress_refused,
    }
}

/// Each customer's agents, memory, CPUs and GPUs over all its agents (running or
/// stopped, as the quota counts them), with the limits.
pub fn quota_use(records: &[AgentRecord], limits: &QuotaConfig) -> Vec<QuotaView> {
    let mut used: BTreeMap<&str, [f64; 4]> = BTreeMap::new();
    for r in records {
        let u = used.entry(r.spec.customer_id.as_str()).or_default();
        u[0] += 1.0;
        u[1] += r.spec.resources.memory_mb as f64;
        u[2] += r.spec.resources.cpus;
        u[3] += f64::from(r.spec.resources.gpus);
    }
    let hard = [
        limits.max_agents as f64,
        limits.max_memory_mb as f64,
        limits.max_cpus,
        limits.max_gpus as f64,
    ];
    let names = ["agents", "memory_mb", "cpus", "gpus"];
    used.into_iter()
        .flat_map(|(customer, u)| {
            (0..4).map(move |i| QuotaView {
                customer_id: customer.to_string(),
                resource: names[i],
                used: u[i],
                hard: hard[i],
            })
        })
        .collect()
}
