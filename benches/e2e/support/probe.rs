//! What a process costs: CPU time and RSS from `/proc`, and CPU over a window as % of one
//! core ([`CpuProbe`]).

use std::process::Command;
use std::time::Instant;

use serde_json::json;

/// CPU time (user + system, clock ticks) of a process, from /proc.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

pub fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

pub fn pid_of(name: &str) -> Option<u32> {
    let out = Command::new("pidof").arg(name).output().ok()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// CPU time of a few processes over a window, as % of one core.
pub struct CpuProbe {
    start: Instant,
    procs: Vec<(String, u32, Option<u64>)>,
}

impl CpuProbe {
    /// This bench process, `manager`, and dockerd, RabbitMQ (beam.smp) and Redis when
    /// found.
    pub fn start(manager: Option<u32>) -> CpuProbe {
        let mut procs: Vec<(String, u32)> = vec![("bench".into(), std::process::id())];
        if let Some(pid) = manager {
            procs.push(("manager".into(), pid));
        }
        for (name, exe) in [
            ("dockerd", "dockerd"),
            ("rabbitmq", "beam.smp"),
            ("redis", "redis-server"),
        ] {
            if let Some(pid) = pid_of(exe) {
                procs.push((name.into(), pid));
            }
        }
        CpuProbe {
            start: Instant::now(),
            procs: procs
                .into_iter()
                .map(|(n, p)| (n, p, cpu_ticks(p)))
                .collect(),
        }
    }

    /// name → % of one core since `start`.
    pub fn percent(&self) -> serde_json::Value {
        let secs = self.start.elapsed().as_secs_f64();
        let mut out = serde_json::Map::new();
        for (name, pid, t0) in &self.procs {
            if let (Some(a), Some(b)) = (*t0, cpu_ticks(*pid)) {
                let pct = (b.saturating_sub(a)) as f64 / 100.0 / secs * 100.0;
                out.insert(name.clone(), json!((pct * 10.0).round() / 10.0));
            }
        }
        serde_json::Value::Object(out)
    }
}
