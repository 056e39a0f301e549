//! Results: percentiles and distributions of latencies, the load average beside them,
//! and `target/bench-results/<scenario>.json`.

use std::time::Duration;

use serde_json::json;

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p / 100.0 * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

pub fn write_result(name: &str, value: &serde_json::Value) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-results");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(
        dir.join(format!("{name}.json")),
        serde_json::to_vec_pretty(value).unwrap_or_default(),
    );
    println!(
        "{name}: {}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

/// The load average (1, 5, 15 min), as /proc/loadavg says.
pub fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// p50, p99, max and mean of `ms` (sorted here).
pub fn dist(ms: &mut [f64]) -> serde_json::Value {
    ms.sort_by(f64::total_cmp);
    let mean = ms.iter().sum::<f64>() / ms.len().max(1) as f64;
    json!({
        "n": ms.len(),
        "p50": percentile(ms, 50.0),
        "p99": percentile(ms, 99.0),
        "max": ms.last(),
        "mean": mean,
    })
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
