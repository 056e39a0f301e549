//! Prometheus metrics: a small process-wide registry of counters, gauges and
//! histograms, rendered in the text exposition format by the admin endpoint; beside it
//! the per-agent series ([`agents`], from the samples kept in [`usage`]), the process's
//! own ([`process`]), the format itself ([`text`]), and each agent's last hour of CPU
//! and memory for the status page ([`history`], a bounded ring per agent).
//! Recording is a mutex-guarded map update (well under a microsecond), off every hot
//! Docker or network path.

pub mod agents;
pub mod history;
pub mod process;
pub mod text;
pub mod usage;

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// Histogram buckets in seconds: 1 ms .. 60 s.
const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0,
];

type Labels = Vec<(&'static str, String)>;

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

#[derive(Default)]
struct Registry {
    counters: BTreeMap<(&'static str, Labels), u64>,
    gauges: BTreeMap<(&'static str, Labels), f64>,
    histograms: BTreeMap<(&'static str, Labels), Histogram>,
}

fn registry() -> &'static Mutex<Registry> {
    static REGISTRY: OnceLock<Mutex<Registry>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

fn with<T>(f: impl FnOnce(&mut Registry) -> T) -> T {
    let mut guard = registry()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    f(&mut guard)
}

fn labels(pairs: &[(&'static str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

/// Adds one to counter `name` with `pairs` as labels.
pub fn inc(name: &'static str, pairs: &[(&'static str, &str)]) {
    with(|r| *r.counters.entry((name, labels(pairs))).or_default() += 1);
}

/// Sets gauge `name`.
pub fn set(name: &'static str, pairs: &[(&'static str, &str)], value: f64) {
    with(|r| {
        r.gauges.insert((name, labels(pairs)), value);
    });
}

/// Replaces every series of gauge `name` (series not given disappear).
pub fn set_all(name: &'static str, series: Vec<(Labels, f64)>) {
    with(|r| {
        r.gauges.retain(|(n, _), _| *n != name);
        for (l, v) in series {
            r.gauges.insert((name, l), v);
        }
    });
}

/// Records one observation of histogram `name`.
pub fn observe(name: &'static str, pairs: &[(&'static str, &str)], took: Duration) {
    let secs = took.as_secs_f64();
    with(|r| {
        let h = r.histograms.entry((name, labels(pairs))).or_default();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                h.counts[i] += 1;
            }
        }
        h.sum += secs;
        h.count += 1;
    });
}

/// Help text of each metric, in one place.
const HELP: &[(&str, &str, &str)] = &[
    (
        "agent_manager_agents",
        "gauge",
        "Agents by status and type.",
    ),
    (
        "agent_manager_commands_total",
        "counter",
        "Commands by command and outcome.",
    ),
    (
        "agent_manager_command_duration_seconds",
        "histogram",
        "Time from delivery to acknowledgement, by command.",
    ),
    (
        "agent_manager_events_published_total",
        "counter",
        "Events made durable (confirmed or kept in the outbox), by event.",
    ),
    (
        "agent_manager_outbox_events",
        "gauge",
        "Events waiting in the Redis outbox for RabbitMQ.",
    ),
    (
        "agent_manager_restarts_total",
        "counter",
        "Automatic restarts of agents, by reason.",
    ),
    (
        "agent_manager_docker_call_duration_seconds",
        "histogram",
        "Docker API calls, by operation.",
    ),
    (
        "agent_manager_credential_call_duration_seconds",
        "histogram",
        "Making, removing and listing the agents' own RabbitMQ and Redis users (both services), by operation.",
    ),
    (
        "agent_manager_reconnects_total",
        "counter",
        "Reconnects, by service.",
    ),
    (
        "agent_manager_ready",
        "gauge",
        "1 while the manager takes commands.",
    ),
];

fn render_labels(out: &mut String, l: &Labels, extra: Option<(&str, String)>) {
    let mut all: Vec<(&str, &str)> = l.iter().map(|(k, v)| (*k, v.as_str())).collect();
    if let Some((k, v)) = &extra {
        all.push((k, v.as_str()));
    }
    text::write_labels(out, &all);
}

/// Everything, in the Prometheus text format.
pub fn render() -> String {
    let mut out = String::new();
    with(|r| {
        for (name, kind, help) in HELP {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for ((n, l), v) in &r.counters {
                if n == name {
                    out.push_str(name);
                    render_labels(&mut out, l, None);
                    let _ = writeln!(out, " {v}");
                }
            }
            for ((n, l), v) in &r.gauges {
                if n == name {
                    out.push_str(name);
                    render_labels(&mut out, l, None);
                    let _ = writeln!(out, " {v}");
                }
            }
            for ((n, l), h) in &r.histograms {
                if n != name {
                    continue;
                }
                for (i, bound) in BUCKETS.iter().enumerate() {
                    let _ = write!(out, "{name}_bucket");
                    render_labels(&mut out, l, Some(("le", bound.to_string())));
                    let _ = writeln!(out, " {}", h.counts[i]);
                }
                let _ = write!(out, "{name}_bucket");
                render_labels(&mut out, l, Some(("le", "+Inf".into())));
                let _ = writeln!(out, " {}", h.count);
                let _ = write!(out, "{name}_sum");
                render_labels(&mut out, l, None);
                let _ = writeln!(out, " {}", h.sum);
                let _ = write!(out, "{name}_count");
                render_labels(&mut out, l, None);
                let _ = writeln!(out, " {}", h.count);
            }
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms_in_text_format() {
        inc(
            "agent_manager_commands_total",
            &[("command", "agent.t1"), ("outcome", "ok")],
        );
        inc(
            "agent_manager_commands_total",
            &[("command", "agent.t1"), ("outcome", "ok")],
        );
        observe(
            "agent_manager_command_duration_seconds",
            &[("command", "agent.t1")],
            Duration::from_millis(3),
        );
        let text = render();
        assert!(
            text.contains("agent_manager_commands_total{command=\"agent.t1\",outcome=\"ok\"} 2")
        );
        assert!(text.contains(
            "agent_manager_command_duration_seconds_bucket{command=\"agent.t1\",le=\"0.005\"} 1"
        ));
        assert!(text.contains(
            "agent_manager_command_duration_seconds_bucket{command=\"agent.t1\",le=\"0.001\"} 0"
        ));
        assert!(
            text.contains("agent_manager_command_duration_seconds_count{command=\"agent.t1\"} 1")
        );
        assert!(text.contains("# TYPE agent_manager_commands_total counter"));
    }
}
