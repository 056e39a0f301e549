//! The per-agent series of `/metrics`, named as cAdvisor (`container_*`) and
//! kube-state-metrics (`*_info`, `*_status`, `*_restarts_total`, `*_resourcequota`)
//! name theirs, so dashboards and alerts written for Kubernetes read them alike. An
//! agent is the label `agent` (its id); `agent_manager_agent_info` carries its customer,
//! type and image for joins (`* on (agent) group_left(customer) agent_manager_agent_info`).
//! Pure: the admin endpoint hands in what it read; an agent not handed in has no series.

use std::collections::HashMap;

use super::catalog::Metric;
use super::usage::Usage;

/// One agent as its record says.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentView {
    pub agent_id: String,
    pub customer_id: String,
    pub agent_type: String,
    pub image: String,
    /// Its status (contract section 5).
    pub status: String,
    /// healthy, unhealthy, starting or none.
    pub health: String,
    pub restarts: u64,
    /// Connections egress refused it, where egress is enforced.
    pub egress_refused: Option<u64>,
}

/// One customer's use of a quota resource, and its limit (0: unlimited).
#[derive(Debug, Clone, PartialEq)]
pub struct QuotaView {
    pub customer_id: String,
    /// `agents`, `memory_mb`, `cpus` or `gpus`.
    pub resource: &'static str,
    pub used: f64,
    pub hard: f64,
}

/// The GPU inventory (gpu mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuView {
    pub total: u64,
    pub free: u64,
}

/// Every value `agent_manager_agent_health` has a series for.
const HEALTHS: [&str; 4] = ["healthy", "unhealthy", "starting", "none"];

/// Writes the per-agent, per-customer and GPU families; `statuses`: every status name.
pub fn render(
    out: &mut String,
    agents: &[AgentView],
    usage: &HashMap<String, Usage>,
    quotas: &[QuotaView],
    gpus: Option<GpuView>,
    statuses: &[&str],
) {
    Metric::AgentInfo.family(out);
    for a in agents {
        let labels = [
            a.agent_id.as_str(),
            a.customer_id.as_str(),
            a.agent_type.as_str(),
            a.image.as_str(),
        ];
        Metric::AgentInfo.sample(out, labels, 1.0);
    }
    Metric::AgentStatus.family(out);
    for a in agents {
        for s in statuses {
            let on = if a.status == *s { 1.0 } else { 0.0 };
            Metric::AgentStatus.sample(out, [&a.agent_id, s], on);
        }
    }
    Metric::AgentHealth.family(out);
    for a in agents {
        let health = if a.health.is_empty() {
            "none"
        } else {
            a.health.as_str()
        };
        for h in HEALTHS {
            let on = if health == h { 1.0 } else { 0.0 };
            Metric::AgentHealth.sample(out, [&a.agent_id, h], on);
        }
    }
    Metric::AgentRestartsTotal.family(out);
    for a in agents {
        Metric::AgentRestartsTotal.sample(out, [&a.agent_id], a.restarts as f64);
    }
    Metric::AgentEgressRefusedTotal.family(out);
    for a in agents {
        if let Some(n) = a.egress_refused {
            Metric::AgentEgressRefusedTotal.sample(out, [&a.agent_id], n as f64);
        }
    }
    render_usage(out, agents, usage);
    Metric::CustomerResourcequota.family(out);
    for q in quotas {
        let labels = |kind| [q.customer_id.as_str(), q.resource, kind];
        Metric::CustomerResourcequota.sample(out, labels("used"), q.used);
        if q.hard > 0.0 {
            Metric::CustomerResourcequota.sample(out, labels("hard"), q.hard);
        }
    }
    if let Some(g) = gpus {
        Metric::Gpus.family(out);
        Metric::Gpus.sample(out, [], g.total as f64);
        Metric::GpusFree.family(out);
        Metric::GpusFree.sample(out, [], g.free as f64);
    }
}

/// cAdvisor's container families, for the agents with a sample (running ones).
fn render_usage(out: &mut String, agents: &[AgentView], usage: &HashMap<String, Usage>) {
    type Pick = fn(&Usage) -> Option<f64>;
    let families: [(Metric, Pick); 6] = [
        (Metric::ContainerCpuUsageSecondsTotal, |u| {
            Some(u.cpu_seconds)
        }),
        (Metric::ContainerMemoryWorkingSetBytes, |u| {
            Some(u.memory_working_set_bytes as f64)
        }),
        (Metric::ContainerSpecMemoryLimitBytes, |u| {
            Some(u.memory_limit_bytes as f64)
        }),
        (Metric::ContainerOomEventsTotal, |u| {
            u.oom_kills.map(|n| n as f64)
        }),
        (Metric::ContainerNetworkReceiveBytesTotal, |u| {
            u.network_bytes.map(|(rx, _)| rx as f64)
        }),
        (Metric::ContainerNetworkTransmitBytesTotal, |u| {
            u.network_bytes.map(|(_, tx)| tx as f64)
        }),
    ];
    for (metric, pick) in families {
        metric.family(out);
        for a in agents {
            let Some(value) = usage.get(&a.agent_id).and_then(pick) else {
                continue;
            };
            let container = format!("agent-{}", a.agent_id);
            metric.sample(out, [&a.agent_id, &container], value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(id: &str) -> AgentView {
        AgentView {
            agent_id: id.into(),
            customer_id: "acme".into(),
            agent_type: "trading".into(),
            image: "autogen-agent:latest".into(),
            status: "running".into(),
            health: "healthy".into(),
            restarts: 2,
            egress_refused: None,
        }
    }

    #[test]
    fn egress_refusals_are_shown_only_where_egress_is_enforced() {
        let mut out = String::new();
        render(
            &mut out,
            &[agent("a-1")],
            &HashMap::new(),
            &[],
            None,
            &["running"],
        );
        assert!(!out.contains("egress_refused_total{"), "{out}");
        let mut watched = agent("a-1");
        watched.egress_refused = Some(3);
        let mut out = String::new();
        render(
            &mut out,
            &[watched],
            &HashMap::new(),
            &[],
            None,
            &["running"],
        );
        assert!(
            out.contains("agent_manager_agent_egress_refused_total{agent=\"a-1\"} 3"),
            "{out}"
        );
    }

    #[test]
    fn each_agent_gets_its_series_and_only_sampled_ones_usage() {
        let usage = HashMap::from([(
            "a-1".to_string(),
            Usage {
                cpu_seconds: 12.5,
                memory_working_set_bytes: 1024,
                memory_limit_bytes: 67_108_864,
                oom_kills: Some(1),
                network_bytes: Some((10, 20)),
            },
        )]);
        let quotas = [QuotaView {
            customer_id: "acme".into(),
            resource: "memory_mb",
            used: 128.0,
            hard: 0.0,
        }];
        let mut out = String::new();
        render(
            &mut out,
            &[agent("a-1"), agent("a-2")],
            &usage,
            &quotas,
            Some(GpuView { total: 2, free: 1 }),
            &["running", "stopped"],
        );
        for line in [
            "agent_manager_agent_info{agent=\"a-1\",customer=\"acme\",type=\"trading\",image=\"autogen-agent:latest\"} 1",
            "agent_manager_agent_status{agent=\"a-2\",status=\"running\"} 1",
            "agent_manager_agent_status{agent=\"a-2\",status=\"stopped\"} 0",
            "agent_manager_agent_health{agent=\"a-1\",health=\"healthy\"} 1",
            "agent_manager_agent_restarts_total{agent=\"a-1\"} 2",
            "container_cpu_usage_seconds_total{agent=\"a-1\",name=\"agent-a-1\"} 12.5",
            "container_spec_memory_limit_bytes{agent=\"a-1\",name=\"agent-a-1\"} 67108864",
            "container_network_transmit_bytes_total{agent=\"a-1\",name=\"agent-a-1\"} 20",
            "agent_manager_customer_resourcequota{customer=\"acme\",resource=\"memory_mb\",type=\"used\"} 128",
            "agent_manager_gpus_free 1",
        ] {
            assert!(out.lines().any(|l| l == line), "no {line} in:\n{out}");
        }
        assert!(
            !out.contains("agent=\"a-2\",name="),
            "a-2 has no sample:\n{out}"
        );
        assert!(
            !out.contains("type=\"hard\""),
            "unlimited has no hard series"
        );
    }
}
