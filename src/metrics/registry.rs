//! The registry of the metrics recorded as things happen ([`Metric::RECORDED`]):
//! counters, gauges and histograms keyed by metric and label values, fed by the typed
//! events of [`super::events`] and rendered at each scrape. Recording is a
//! mutex-guarded map update (well under a microsecond), off every hot Docker or
//! network path.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use super::catalog::Metric;
use super::text;

/// Histogram buckets in seconds: 1 ms .. 60 s.
const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0,
];

/// A series' label values, in its metric's declared label order.
type Values = Vec<String>;

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

#[derive(Default)]
struct Registry {
    counters: BTreeMap<(Metric, Values), u64>,
    gauges: BTreeMap<(Metric, Values), f64>,
    histograms: BTreeMap<(Metric, Values), Histogram>,
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

/// `values` as a series key, their number checked against the declared labels.
fn values<const N: usize>(metric: Metric, values: [&str; N]) -> Values {
    metric
        .pairs(values)
        .into_iter()
        .map(|(_, v)| v.to_string())
        .collect()
}

/// Adds one to counter `metric`'s series of `label_values`.
pub(super) fn inc<const N: usize>(metric: Metric, label_values: [&str; N]) {
    let key = (metric, values(metric, label_values));
    with(|r| *r.counters.entry(key).or_default() += 1);
}

/// Sets gauge `metric`'s series of `label_values`.
pub(super) fn set<const N: usize>(metric: Metric, label_values: [&str; N], value: f64) {
    let key = (metric, values(metric, label_values));
    with(|r| {
        r.gauges.insert(key, value);
    });
}

/// Replaces every series of gauge `metric` (series not given disappear).
pub(super) fn set_all(metric: Metric, series: Vec<(Values, f64)>) {
    debug_assert!(series.iter().all(|(v, _)| v.len() == metric.labels().len()));
    with(|r| {
        r.gauges.retain(|(m, _), _| *m != metric);
        for (v, n) in series {
            r.gauges.insert((metric, v), n);
        }
    });
}

/// Records one observation of histogram `metric`'s series of `label_values`.
pub(super) fn observe<const N: usize>(metric: Metric, label_values: [&str; N], took: Duration) {
    let key = (metric, values(metric, label_values));
    let secs = took.as_secs_f64();
    with(|r| {
        let h = r.histograms.entry(key).or_default();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                h.counts[i] += 1;
            }
        }
        h.sum += secs;
        h.count += 1;
    });
}

fn render_labels(out: &mut String, metric: Metric, v: &Values, extra: Option<(&str, String)>) {
    let mut all: Vec<(&str, &str)> = metric
        .labels()
        .iter()
        .copied()
        .zip(v.iter().map(String::as_str))
        .collect();
    if let Some((k, v)) = &extra {
        all.push((k, v.as_str()));
    }
    text::write_labels(out, &all);
}

/// The registry's metrics ([`Metric::RECORDED`]), in the Prometheus text format.
pub fn render() -> String {
    let mut out = String::new();
    with(|r| {
        for metric in Metric::RECORDED {
            let name = metric.name();
            metric.family(&mut out);
            for ((m, l), v) in &r.counters {
                if *m == metric {
                    out.push_str(name);
                    render_labels(&mut out, metric, l, None);
                    let _ = writeln!(out, " {v}");
                }
            }
            for ((m, l), v) in &r.gauges {
                if *m == metric {
                    out.push_str(name);
                    render_labels(&mut out, metric, l, None);
                    let _ = writeln!(out, " {v}");
                }
            }
            for ((m, l), h) in &r.histograms {
                if *m != metric {
                    continue;
                }
                for (i, bound) in BUCKETS.iter().enumerate() {
                    let _ = write!(out, "{name}_bucket");
                    render_labels(&mut out, metric, l, Some(("le", bound.to_string())));
                    let _ = writeln!(out, " {}", h.counts[i]);
                }
                let _ = write!(out, "{name}_bucket");
                render_labels(&mut out, metric, l, Some(("le", "+Inf".into())));
                let _ = writeln!(out, " {}", h.count);
                let _ = write!(out, "{name}_sum");
                render_labels(&mut out, metric, l, None);
                let _ = writeln!(out, " {}", h.sum);
                let _ = write!(out, "{name}_count");
                render_labels(&mut out, metric, l, None);
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
        inc(Metric::CommandsTotal, ["agent.t1", "ok"]);
        inc(Metric::CommandsTotal, ["agent.t1", "ok"]);
        observe(
            Metric::CommandDurationSeconds,
            ["agent.t1"],
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
