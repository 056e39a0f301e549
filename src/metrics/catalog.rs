//! Every metric `/metrics` serves, declared once: its name, kind, label names and help
//! text side by side ([`Metric`]). The registry, the per-agent and the process
//! renderers name a metric by its variant, so a misspelt name does not compile, and a
//! series' label names always come from here. The names are what the alert rules and
//! the dashboard in `deploy/` (and operators' own) query: never rename one.

use super::text;

/// A metric's type, as its `# TYPE` line says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// Declares [`Metric`] from one row per metric: `Variant = "name", Kind, [labels], "help";`.
/// [`Metric::ALL`] holds every row in the order written.
macro_rules! catalog {
    ($(
        $(#[$doc:meta])*
        $variant:ident = $name:literal, $kind:ident, [$($label:literal),*], $help:literal;
    )*) => {
        /// One metric family of `/metrics`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Metric {
            $($(#[$doc])* $variant,)*
        }

        impl Metric {
            /// Every metric, in the order declared.
            pub const ALL: &'static [Metric] = &[$(Metric::$variant),*];

            /// Its name, as Prometheus stores it (a histogram's series add `_bucket`,
            /// `_sum`, `_count`).
            pub const fn name(self) -> &'static str {
                match self {
                    $(Metric::$variant => $name,)*
                }
            }

            pub const fn kind(self) -> Kind {
                match self {
                    $(Metric::$variant => Kind::$kind,)*
                }
            }

            /// Its label names, in the order each series writes them (a histogram's
            /// `le` comes after them).
            pub const fn labels(self) -> &'static [&'static str] {
                match self {
                    $(Metric::$variant => &[$($label),*],)*
                }
            }

            /// Its `# HELP` text.
            pub const fn help(self) -> &'static str {
                match self {
                    $(Metric::$variant => $help,)*
                }
            }
        }
    };
}

catalog! {
    // Recorded as things happen, in the registry (`metrics::render`, in this order).
    Agents = "agent_manager_agents", Gauge, ["status", "type"],
        "Agents by status and type.";
    CommandsTotal = "agent_manager_commands_total", Counter, ["command", "outcome"],
        "Commands by command and outcome.";
    CommandDurationSeconds = "agent_manager_command_duration_seconds", Histogram, ["command"],
        "Time from delivery to acknowledgement, by command.";
    EventsPublishedTotal = "agent_manager_events_published_total", Counter, ["event"],
        "Events made durable (confirmed or kept in the outbox), by event.";
    OutboxEvents = "agent_manager_outbox_events", Gauge, [],
        "Events waiting in the Redis outbox for RabbitMQ.";
    RestartsTotal = "agent_manager_restarts_total", Counter, ["reason"],
        "Automatic restarts of agents, by reason.";
    DockerCallDurationSeconds = "agent_manager_docker_call_duration_seconds", Histogram, ["op"],
        "Docker API calls, by operation.";
    CredentialCallDurationSeconds = "agent_manager_credential_call_duration_seconds", Histogram, ["op"],
        "Making, removing and listing the agents' own RabbitMQ and Redis users (both services), by operation.";
    ReconnectsTotal = "agent_manager_reconnects_total", Counter, ["service"],
        "Reconnects, by service.";
    Ready = "agent_manager_ready", Gauge, [],
        "1 while the manager takes commands.";
    HaltsEngagedTotal = "agent_manager_halts_engaged_total", Counter, ["kind"],
        "Halts engaged (contract section 10), by kind: command or automatic.";
    HaltedAgents = "agent_manager_halted_agents", Gauge, [],
        "Agents some engaged halt holds.";
    Halts = "agent_manager_halts", Gauge, [],
        "Engaged halts.";
    LeaderRole = "agent_manager_leader", Gauge, ["role"],
        "1 for this manager's part in the election (contract section 12: leader, standby, deposed), 0 for the others.";
    LeaderTerm = "agent_manager_leader_term", Gauge, [],
        "The lease term this manager leads, or last led, in; 0 while it never led.";

    // Per agent and per customer, from what a scrape reads (`metrics::agents`).
    AgentInfo = "agent_manager_agent_info", Gauge, ["agent", "customer", "type", "image"],
        "An agent: its customer, type and image (always 1).";
    AgentStatus = "agent_manager_agent_status", Gauge, ["agent", "status"],
        "1 for the agent's status, 0 for the others.";
    AgentHealth = "agent_manager_agent_health", Gauge, ["agent", "health"],
        "1 for the agent's health, 0 for the others.";
    AgentRestartsTotal = "agent_manager_agent_restarts_total", Counter, ["agent"],
        "Restarts of the agent's container (by the manager or Docker).";
    AgentEgressRefusedTotal = "agent_manager_agent_egress_refused_total", Counter, ["agent"],
        "Connections of the agent that egress refused (contract section 11): the kernel's rules and the egress proxy.";
    ContainerCpuUsageSecondsTotal = "container_cpu_usage_seconds_total", Counter, ["agent", "name"],
        "CPU time of the agent's container.";
    ContainerMemoryWorkingSetBytes = "container_memory_working_set_bytes", Gauge, ["agent", "name"],
        "Memory in use by the agent's container, page cache excluded.";
    ContainerSpecMemoryLimitBytes = "container_spec_memory_limit_bytes", Gauge, ["agent", "name"],
        "Memory limit of the agent's container.";
    ContainerOomEventsTotal = "container_oom_events_total", Counter, ["agent", "name"],
        "OOM kills in the agent's container (cgroup samples only).";
    ContainerNetworkReceiveBytesTotal = "container_network_receive_bytes_total", Counter, ["agent", "name"],
        "Bytes received by the agent's container.";
    ContainerNetworkTransmitBytesTotal = "container_network_transmit_bytes_total", Counter, ["agent", "name"],
        "Bytes sent by the agent's container.";
    CustomerResourcequota = "agent_manager_customer_resourcequota", Gauge, ["customer", "resource", "type"],
        "A customer's quota: type=used (all its agents, running or stopped) and type=hard (the limit; absent when unlimited), by resource.";
    Gpus = "agent_manager_gpus", Gauge, [],
        "GPUs in the inventory (gpu mode).";
    GpusFree = "agent_manager_gpus_free", Gauge, [],
        "GPUs held by no agent (gpu mode).";

    // The process's own, from `/proc/self` (`metrics::process`).
    ProcessCpuSecondsTotal = "process_cpu_seconds_total", Counter, [],
        "User and system CPU time spent, in seconds.";
    ProcessResidentMemoryBytes = "process_resident_memory_bytes", Gauge, [],
        "Resident memory size in bytes.";
    ProcessVirtualMemoryBytes = "process_virtual_memory_bytes", Gauge, [],
        "Virtual memory size in bytes.";
    ProcessStartTimeSeconds = "process_start_time_seconds", Gauge, [],
        "Start time of the process since the Unix epoch, in seconds.";
    ProcessOpenFds = "process_open_fds", Gauge, [],
        "Open file descriptors.";
    ProcessMaxFds = "process_max_fds", Gauge, [],
        "Maximum number of open file descriptors.";
    BuildInfo = "agent_manager_build_info", Gauge, ["version", "commit"],
        "The version and git commit the manager was built from (always 1).";
}

impl Metric {
    /// The metrics the registry records as things happen, in the order `/metrics`
    /// shows them; the others are rendered from what each scrape reads.
    pub const RECORDED: [Metric; 15] = [
        Metric::Agents,
        Metric::CommandsTotal,
        Metric::CommandDurationSeconds,
        Metric::EventsPublishedTotal,
        Metric::OutboxEvents,
        Metric::RestartsTotal,
        Metric::DockerCallDurationSeconds,
        Metric::CredentialCallDurationSeconds,
        Metric::ReconnectsTotal,
        Metric::Ready,
        Metric::HaltsEngagedTotal,
        Metric::HaltedAgents,
        Metric::Halts,
        Metric::LeaderRole,
        Metric::LeaderTerm,
    ];

    /// Writes its `# HELP` and `# TYPE` lines.
    pub fn family(self, out: &mut String) {
        text::family(out, self.name(), self.kind().as_str(), self.help());
    }

    /// Writes one sample: `values` are its labels' values, in [`Metric::labels`] order.
    pub fn sample<const N: usize>(self, out: &mut String, values: [&str; N], value: f64) {
        text::sample(out, self.name(), &self.pairs(values), value);
    }

    /// `values` paired with the label names (as many as declared: checked in tests).
    pub(super) fn pairs<const N: usize>(self, values: [&str; N]) -> Vec<(&'static str, &str)> {
        debug_assert_eq!(
            N,
            self.labels().len(),
            "{}: label values {values:?} for labels {:?}",
            self.name(),
            self.labels()
        );
        self.labels().iter().copied().zip(values).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_are_unique_and_valid_and_label_names_too() {
        let mut names = HashSet::new();
        for m in Metric::ALL {
            let name = m.name();
            assert!(names.insert(name), "{name} declared twice");
            let valid = |s: &str| {
                s.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                    && s.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            };
            assert!(valid(name), "{name}");
            assert!(!m.help().is_empty() && !m.help().contains('\n'), "{name}");
            assert_eq!(
                m.kind() == Kind::Counter,
                name.ends_with("_total"),
                "{name}"
            );
            let labels: HashSet<_> = m.labels().iter().collect();
            assert_eq!(labels.len(), m.labels().len(), "{name}: a label twice");
            for l in m.labels() {
                assert!(
                    valid(l) && *l != "le" && !l.starts_with("__"),
                    "{name}: {l}"
                );
            }
        }
        // A histogram's series names must not be taken by another metric.
        for m in Metric::ALL.iter().filter(|m| m.kind() == Kind::Histogram) {
            for suffix in ["_bucket", "_sum", "_count"] {
                let series = format!("{}{suffix}", m.name());
                assert!(!names.contains(series.as_str()), "{series}");
            }
        }
        let recorded: HashSet<_> = Metric::RECORDED.iter().collect();
        assert_eq!(recorded.len(), Metric::RECORDED.len());
    }

    #[test]
    fn a_sample_names_its_declared_labels() {
        let mut out = String::new();
        Metric::CommandsTotal.family(&mut out);
        Metric::CommandsTotal.sample(&mut out, ["agent.stop", "ok"], 2.0);
        assert_eq!(
            out,
            "# HELP agent_manager_commands_total Commands by command and outcome.\n\
             # TYPE agent_manager_commands_total counter\n\
             agent_manager_commands_total{command=\"agent.stop\",outcome=\"ok\"} 2\n"
        );
    }
}
