//! The Prometheus text exposition format, written by hand: a family's `# HELP` and
//! `# TYPE` lines, then its samples with escaped label values.
//!
//! # Why not `prometheus-client` or `prometheus` (issue 26)
//! Kept, because the crates do not offer this part alone: both encode their own
//! registry of metric objects, not the samples this manager renders at each scrape from
//! its views (records, usage samples, GPU allocations, `/proc/self`: per-agent series
//! that come and go with the agents). Moving would mean moving the registry
//! ([`super`]) too, and a `Collector` for every view. The costs seen in
//! `prometheus-client` 0.26 (adds 3 packages: cheap) are in what it writes: counters
//! must be registered without `_total` (it appends it; a name ending in it panics in
//! debug builds), every `# HELP` gets a `.` appended, and its default encoder writes
//! OpenMetrics (`# EOF`) — each a change to the exposition that the dashboard and the
//! alert rules (`deploy/`) read. `prometheus` 0.14 adds 5 packages (protobuf, a second
//! `thiserror`) for the same registry model. What is here is five pure functions with
//! a test; what the format asks (escaping `\`, `"` and newlines in label values, `NaN`
//! and `±Inf`) is all in them.

use std::fmt::Write;

/// `# HELP` and `# TYPE` of one family.
pub fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// One sample: `name{labels} value`.
pub fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    out.push_str(name);
    write_labels(out, labels);
    let _ = writeln!(out, " {}", number(value));
}

/// `{k="v",...}`, nothing when there are no labels.
pub fn write_labels(out: &mut String, labels: &[(&str, &str)]) {
    if labels.is_empty() {
        return;
    }
    out.push('{');
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{k}=\"{}\"", escape(v));
    }
    out.push('}');
}

/// A label value as the format wants it: `\`, `"` and newlines escaped.
pub fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A value: integers without a fraction, `NaN` and infinities by their names.
pub fn number(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_escape_their_label_values() {
        let mut out = String::new();
        family(&mut out, "x_total", "counter", "Xs.");
        sample(&mut out, "x_total", &[("a", "q\"\\\nz"), ("b", "2")], 3.0);
        sample(&mut out, "x_total", &[], 0.5);
        assert_eq!(
            out,
            "# HELP x_total Xs.\n# TYPE x_total counter\nx_total{a=\"q\\\"\\\\\\nz\",b=\"2\"} 3\nx_total 0.5\n"
        );
        assert_eq!(number(f64::INFINITY), "+Inf");
    }
}
