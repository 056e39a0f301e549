//! The Prometheus text exposition format, written by hand: a family's `# HELP` and
//! `# TYPE` lines, then its samples with escaped label values.

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
