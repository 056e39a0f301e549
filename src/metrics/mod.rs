//! Prometheus metrics: every metric declared once ([`catalog`]: name, kind, labels,
//! help); the typed events the code records them with ([`events`], as vector's
//! internal events) into a small process-wide [`registry`] of counters, gauges and
//! histograms, rendered in the text exposition format by the admin endpoint; beside it
//! the per-agent series ([`agents`], from the samples kept in [`usage`]), the process's
//! own ([`process`]), the format itself ([`text`]), and each agent's last hour of CPU
//! and memory for the status page ([`history`], a bounded ring per agent).

pub mod agents;
pub mod catalog;
pub mod events;
pub mod history;
pub mod process;
pub mod registry;
pub mod text;
pub mod usage;

pub use catalog::{Kind, Metric};
pub use events::{emit, InternalEvent};
pub use registry::render;

#[cfg(test)]
mod tests {
    use super::*;

    /// The registry, the per-agent and the process renderers together write every
    /// declared metric's `# HELP` and `# TYPE` once, as declared, and nothing
    /// undeclared.
    #[test]
    fn every_declared_metric_renders_help_and_type_once() {
        let mut out = render();
        agents::render(
            &mut out,
            &[],
            &Default::default(),
            &[],
            Some(agents::GpuView { total: 1, free: 1 }),
            &["running"],
        );
        process::render(
            &mut out,
            Some(process::ProcessView::default()),
            "0.1.0",
            "abc",
        );
        for m in Metric::ALL {
            let help = format!("# HELP {} {}", m.name(), m.help());
            let kind = format!("# TYPE {} {}", m.name(), m.kind().as_str());
            for line in [help, kind] {
                let n = out.lines().filter(|l| *l == line).count();
                assert_eq!(n, 1, "{line} {n} times in:\n{out}");
            }
        }
        let families = out.lines().filter(|l| l.starts_with("# TYPE ")).count();
        assert_eq!(families, Metric::ALL.len(), "{out}");
    }
}
