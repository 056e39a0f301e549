//! The latest resource sample of each running agent, as the agent actors take them
//! (cgroup files or Docker's stats API), kept for `/metrics`. A sample is dropped when
//! its agent stops (no container, no usage: as cAdvisor does) and when its actor ends
//! (deleted); a scrape shows only agents among the records it read.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, OnceLock};

/// One agent's usage, cumulative counters since its container started.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// CPU time of the container.
    pub cpu_seconds: f64,
    /// Memory in use, page cache excluded (cAdvisor's working set).
    pub memory_working_set_bytes: u64,
    /// The container's memory limit; 0: none.
    pub memory_limit_bytes: u64,
    /// OOM kills in the container's cgroup, where the source sees them.
    pub oom_kills: Option<u64>,
    /// Bytes received and sent over its interfaces, where the source sees them.
    pub network_bytes: Option<(u64, u64)>,
}

fn samples() -> &'static Mutex<HashMap<String, Usage>> {
    static SAMPLES: OnceLock<Mutex<HashMap<String, Usage>>> = OnceLock::new();
    SAMPLES.get_or_init(Default::default)
}

fn with<T>(f: impl FnOnce(&mut HashMap<String, Usage>) -> T) -> T {
    let mut guard = samples()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    f(&mut guard)
}

/// Keeps `usage` as the agent's latest.
pub fn record(agent_id: &str, usage: Usage) {
    with(|s| match s.get_mut(agent_id) {
        Some(kept) => *kept = usage,
        None => {
            s.insert(agent_id.to_string(), usage);
        }
    });
}

/// Drops the agent's sample (it stopped, or its actor ended).
pub fn forget(agent_id: &str) {
    with(|s| {
        s.remove(agent_id);
    });
}

/// The samples of the agents in `present` (one manager's records: several managers
/// may share a process in tests).
pub fn of(present: &HashSet<&str>) -> HashMap<String, Usage> {
    with(|s| {
        s.iter()
            .filter(|(id, _)| present.contains(id.as_str()))
            .map(|(id, u)| (id.clone(), *u))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_samples_of_present_agents_are_shown() {
        let u = Usage {
            cpu_seconds: 1.5,
            ..Default::default()
        };
        record("usage-test-a", u);
        record("usage-test-b", u);
        record("usage-test-c", u);
        forget("usage-test-c");
        let present: HashSet<&str> = ["usage-test-a"].into();
        let kept = of(&present);
        assert_eq!(kept.get("usage-test-a"), Some(&u));
        assert!(!kept.contains_key("usage-test-b"));
        assert!(
            !of(&["usage-test-c"].into()).contains_key("usage-test-c"),
            "forgotten"
        );
    }
}
