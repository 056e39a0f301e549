//! How big each scenario runs: full sizes under `cargo bench`, tiny ones in the quick
//! test mode (`cargo test --bench e2e`, as `cargo test --all-targets` runs it), each
//! overridden by its environment variable.

use std::time::Duration;

pub struct Sizes {
    pub quick: bool,
    pub detect_agents: usize,
    pub kills: usize,
    pub monitor_agents: usize,
    pub window: Duration,
    pub lifecycle_agents: usize,
    pub lifecycle_batch: usize,
    pub burst_agents: usize,
    pub burst_commands: usize,
    pub scale_running: usize,
    pub scale_stopped: usize,
    pub scale_window: Duration,
    pub recovery_agents: usize,
    pub restarts: usize,
    pub machine_agents: Vec<usize>,
    pub machine_window: Duration,
    pub machine_settle: Duration,
    pub machine_interval_s: u64,
    pub hung_agents: usize,
    pub hung_rounds: usize,
    pub machine_exec_probe: bool,
    pub pause_agents: usize,
    pub pauses: usize,
    pub autogen_agents: usize,
    pub autogen_tasks: usize,
    pub autogen_idle: Duration,
    pub halt: HaltSizes,
    pub failover_agents: usize,
    pub failovers: usize,
    pub handovers: usize,
    pub failover_window: Duration,
    pub egress: EgressSizes,
}

/// The `egress` scenario's sizes (see its `//!`).
pub struct EgressSizes {
    /// Agents created through each manager (rules on, rules off).
    pub agents: usize,
    pub batch: usize,
    /// Agents whose chains are written at once.
    pub rule_agents: usize,
    /// One agent's chain rewritten this many times with them all present.
    pub updates: usize,
    /// Requests timed per path (connects, proxy round trips).
    pub requests: usize,
}

/// The `halt` scenario's sizes (see its `//!`).
pub struct HaltSizes {
    /// Running agents of one customer, each with a connection of its own user.
    pub agents: usize,
    /// How long the manager is measured idle, with the rate watch on and off.
    pub cpu_window: Duration,
    /// How long the manager settles before each CPU window.
    pub settle: Duration,
    /// How often each held connection publishes while the probes are on, ms.
    pub probe_ms: u64,
    /// Docker calls at once (the plain pause's 16 in flight), and inspects.
    pub in_flight: usize,
    /// Logins at once: the held connections opened, and the logins after the release
    /// (the bench's own pace, not the manager's).
    pub login_in_flight: usize,
    /// New logins tried while halted (they must be refused).
    pub login_sample: usize,
    /// `HALT_WINDOW_S` of the manager: the automatic halt's window, seconds.
    pub auto_window_s: u64,
    /// The flooding agent's `resources.max_messages_per_s`.
    pub flood_limit: f64,
}

pub fn sizes() -> Sizes {
    let quick = !std::env::args().any(|a| a == "--bench");
    let n = |var: &str, full: usize, small: usize| {
        std::env::var(var)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(if quick { small } else { full })
    };
    Sizes {
        quick,
        detect_agents: n("DETECT_AGENTS", 5, 2),
        kills: n("KILLS", 60, 4),
        monitor_agents: n("AGENTS", 100, 3),
        window: Duration::from_secs(n("WINDOW_S", 60, 6) as u64),
        lifecycle_agents: n("LIFECYCLE_AGENTS", 100, 5),
        lifecycle_batch: n("LIFECYCLE_BATCH", 25, 5),
        burst_agents: n("BURST_AGENTS", 50, 5),
        burst_commands: n("BURST_COMMANDS", 5000, 200),
        scale_running: n("SCALE_RUNNING", 200, 5),
        scale_stopped: n("SCALE_STOPPED", 1000, 10),
        scale_window: Duration::from_secs(n("SCALE_WINDOW_S", 60, 3) as u64),
        recovery_agents: n("RECOVERY_AGENTS", 200, 5),
        restarts: n("RESTARTS", 5, 1),
        machine_agents: std::env::var("MACHINE_AGENTS")
            .ok()
            .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
            .unwrap_or_else(|| if quick { vec![3] } else { vec![200, 1000] }),
        machine_window: Duration::from_secs(n("MACHINE_WINDOW_S", 60, 3) as u64),
        machine_settle: Duration::from_secs(n("MACHINE_SETTLE_S", 30, 1) as u64),
        machine_interval_s: n("MACHINE_INTERVAL_S", 10, 1) as u64,
        hung_agents: n("HUNG_AGENTS", 20, 1),
        hung_rounds: n("HUNG_ROUNDS", 5, 1),
        machine_exec_probe: n("MACHINE_EXEC_PROBE", 0, 0) > 0,
        pause_agents: n("PAUSE_AGENTS", 5, 2),
        pauses: n("PAUSES", 200, 6),
        autogen_agents: n("AUTOGEN_AGENTS", 10, 1),
        autogen_tasks: n("AUTOGEN_TASKS", 100, 3),
        autogen_idle: Duration::from_secs(n("AUTOGEN_IDLE_S", 60, 2) as u64),
        halt: HaltSizes {
            agents: n("HALT_AGENTS", 1000, 3),
            cpu_window: Duration::from_secs(n("HALT_CPU_WINDOW_S", 60, 1) as u64),
            settle: Duration::from_secs(n("HALT_SETTLE_S", 30, 0) as u64),
            probe_ms: n("HALT_PROBE_MS", 50, 50) as u64,
            in_flight: n("HALT_IN_FLIGHT", 16, 16).max(1),
            login_in_flight: n("HALT_LOGIN_IN_FLIGHT", 64, 16).max(1),
            login_sample: n("HALT_LOGIN_SAMPLE", 20, 3),
            auto_window_s: n("HALT_AUTO_WINDOW_S", 5, 2) as u64,
            flood_limit: n("HALT_FLOOD_LIMIT", 5, 5) as f64,
        },
        failover_agents: n("FAILOVER_AGENTS", 200, 2),
        failovers: n("FAILOVERS", 20, 2),
        handovers: n("HANDOVERS", 5, 1),
        failover_window: Duration::from_secs(n("FAILOVER_WINDOW_S", 60, 2) as u64),
        egress: EgressSizes {
            agents: n("EGRESS_AGENTS", 60, 2),
            batch: n("EGRESS_BATCH", 20, 2),
            rule_agents: n("EGRESS_RULE_AGENTS", 1000, 20),
            updates: n("EGRESS_UPDATES", 50, 3),
            requests: n("EGRESS_REQUESTS", 200, 5),
        },
    }
}
