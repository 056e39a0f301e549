//! What a look at an agent means, pure: [`assess`] takes the record, what the actor
//! remembers between looks ([`Watch`]) and what the look found ([`Observation`]), and
//! gives the new status, health, numbers and what self-healing does ([`Heal`]); the
//! one place a frozen agent is told apart ([`is_frozen`], the status table's
//! `Workload::Frozen`); the `agent.health` details and when one is due.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::config::HealthConfig;
use crate::crash_policy::{CrashPolicy, Decision};
use crate::protocol::{rfc3339, AgentStatus};
use crate::record::status::{self, transition, Cause};
use crate::record::AgentRecord;
use crate::runtime::{Observed, Stats};

use super::*;

/// What the last `agent.health` said, to send the next one on change.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LastReport {
    pub health: String,
    pub state: String,
    pub status: Option<AgentStatus>,
    pub at: Option<Instant>,
}

/// An agent actor's memory between looks at its container.
#[derive(Debug, Clone)]
pub struct Watch {
    pub last: LastReport,
    /// The latest stats sample (CPU % comes from it and the one before).
    pub stats: Option<Stats>,
    pub policy: CrashPolicy,
    /// Looks in a row that found the container unhealthy.
    pub unhealthy_streak: u32,
    /// Where self-healing stands.
    pub healing: Healing,
    /// The heartbeat key as the supervisor's last batched read found it (`None`: not
    /// read yet).
    pub beat: Option<BeatRead>,
    /// What the heartbeat said at the last look.
    pub verdict: Verdict,
    /// The last inspect of the running container, reused by looks while the heartbeat
    /// answers for the agent (Docker's events and the relist report any change of
    /// state); `None` after a command, a heal or an exit, so the next look inspects.
    pub observed: Option<Observed>,
    /// When the agent was last seen thawed after a pause: Docker's health verdict from
    /// the frozen time (its probes cannot run in a frozen container) is not held against
    /// it until Docker has probed it again (see [`thaw_grace`]).
    pub thawed_at: Option<Instant>,
}

/// Where self-healing stands for one agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Healing {
    /// Nothing to heal, or a look decides.
    Watching,
    /// A restart is scheduled.
    RestartScheduled,
    /// A crash loop: no more automatic restarts until a command arrives.
    GaveUp,
}

impl Watch {
    pub fn new(cfg: &HealthConfig) -> Self {
        Watch {
            last: LastReport::default(),
            stats: None,
            policy: CrashPolicy::new(cfg),
            unhealthy_streak: 0,
            healing: Healing::Watching,
            beat: None,
            verdict: Verdict::Silent,
            observed: None,
            thawed_at: None,
        }
    }

    /// A command took over the agent: self-healing starts afresh, and the next look
    /// inspects the container (it may be a new one). A command that took a paused agent
    /// out of `paused` (resume, start) thawed it `now`.
    pub fn reset(&mut self, status: Option<AgentStatus>, now: Instant) {
        let frozen = |s: Option<AgentStatus>| s.is_some_and(|s| status::row(s).is_frozen());
        if frozen(self.last.status) && !frozen(status) {
            self.thawed_at = Some(now);
        }
        self.policy.reset();
        self.unhealthy_streak = 0;
        self.healing = Healing::Watching;
        self.last.status = status;
        self.observed = None;
    }

    /// The verdict `read` would give at `wall` (for the container last inspected): a
    /// look is due at once when it differs from the last look's.
    pub fn verdict_with(
        &self,
        record: &AgentRecord,
        read: Option<&BeatRead>,
        cfg: &HealthConfig,
        wall: DateTime<Utc>,
    ) -> Verdict {
        let observed = self.observed.as_ref();
        verdict_of(read, observed, record.last_heartbeat_at, cfg, Some(wall)).0
    }

    /// The inspect a look can reuse instead of asking Docker: the running container
    /// the record names, without a Docker HEALTHCHECK to poll, while its heartbeat
    /// answers for the agent. An agent that never heartbeated is inspected every look.
    pub fn reusable(&self, record: &AgentRecord) -> Option<&Observed> {
        let o = self.observed.as_ref()?;
        let current = record.workload_id.as_deref() == Some(o.id.as_str());
        (current && o.running && o.health == "none" && self.verdict.heartbeating()).then_some(o)
    }
}

/// How long after a thaw Docker's `unhealthy` may still be its verdict from the frozen
/// time: its next probe comes within one check interval and takes at most the check's
/// timeout (one second more for the result to be seen). A probe that succeeds in that
/// time makes it `healthy` at once; one that fails keeps it `unhealthy`, judged after.
pub fn thaw_grace(cfg: &HealthConfig) -> Duration {
    Duration::from_secs(cfg.container_check_interval_s + cfg.container_check_timeout_s + 1)
}

/// How long after a thaw a missing heartbeat is not held against the agent: it could not
/// write while frozen, so its key may have expired; it writes again within one heartbeat
/// interval (one second more for the write to be read).
pub fn beat_thaw_grace(cfg: &HealthConfig) -> Duration {
    Duration::from_secs(cfg.heartbeat_interval_s + 1).max(thaw_grace(cfg))
}

/// What a look at the container found.
#[derive(Debug, Clone, Default)]
pub struct Observation {
    pub observed: Option<Observed>,
    /// Last log lines (redacted), read when the container has exited.
    pub logs: Vec<String>,
    /// When the look was made (the wall clock), to tell how long the container has run
    /// against the heartbeat start period; `None`: unknown, no start period applies.
    pub at: Option<DateTime<Utc>>,
}

/// A stats sample as `/metrics` shows it (cAdvisor's container series).
pub fn usage_of(s: &Stats) -> crate::metrics::usage::Usage {
    crate::metrics::usage::Usage {
        cpu_seconds: s.cpu_total_ns as f64 / 1e9,
        memory_working_set_bytes: s.memory_bytes,
        memory_limit_bytes: s.memory_limit_bytes,
        oom_kills: s.oom_kills,
        network_bytes: s.network.map(|n| (n.rx_bytes, n.tx_bytes)),
    }
}

/// Takes a new stats sample into the record (and `/metrics`' usage samples, and the
/// status page's last hour): memory, and CPU % since the last sample.
/// Stats are sampled apart from looks (a first sample of a new container takes Docker
/// up to a second), so a look is never held up by them.
pub fn apply_stats(record: &mut AgentRecord, watch: &mut Watch, sample: Option<Stats>) {
    match sample {
        Some(now) => {
            if let Some(prev) = &watch.stats {
                record.cpu_percent = now.cpu_percent_since(prev);
            }
            record.memory_bytes = now.memory_bytes;
            crate::metrics::usage::record(&record.agent_id, usage_of(&now));
            crate::metrics::history::record(
                &record.agent_id,
                crate::metrics::history::Point {
                    at_s: crate::metrics::history::now_s(),
                    cpu_percent: record.cpu_percent as f32,
                    memory_kib: crate::metrics::history::Point::memory_kib_of(record.memory_bytes),
                },
            );
            watch.stats = Some(now);
        }
        None => {
            record.cpu_percent = 0.0;
            record.memory_bytes = 0;
            crate::metrics::usage::forget(&record.agent_id);
            watch.stats = None;
        }
    }
}

/// Why the manager restarts an agent by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Crashed,
    Unhealthy,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Crashed => "crashed",
            Reason::Unhealthy => "unhealthy",
        }
    }
}

/// What self-healing should do after a look.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Heal {
    Nothing,
    /// A halted agent found running (thawed behind the manager's back, or a freeze that
    /// failed): frozen again, never restarted (contract section 10).
    Refreeze,
    RestartAfter(Duration),
    RestartNow(Reason),
    CrashLoop {
        restarts: usize,
        window: Duration,
    },
}

/// How an exit is classified for people: `oom_killed`, `signal`, `error` or `clean`.
pub fn classify_exit(exit_code: Option<i64>, oom_killed: bool) -> (&'static str, Option<String>) {
    let signal = exit_code
        .filter(|c| *c > 128 && *c < 160)
        .map(|c| signal_name(c - 128));
    let class = if oom_killed {
        "oom_killed"
    } else if signal.is_some() {
        "signal"
    } else if exit_code == Some(0) {
        "clean"
    } else {
        "error"
    };
    (class, signal)
}

pub(super) fn signal_name(n: i64) -> String {
    match n {
        1 => "SIGHUP".into(),
        2 => "SIGINT".into(),
        3 => "SIGQUIT".into(),
        6 => "SIGABRT".into(),
        9 => "SIGKILL".into(),
        11 => "SIGSEGV".into(),
        13 => "SIGPIPE".into(),
        15 => "SIGTERM".into(),
        n => format!("signal {n}"),
    }
}

/// True when the look found the workload frozen on purpose (Docker's pause): it is
/// neither a crash nor hung, and nothing about it is judged (health check, heartbeat,
/// exit) until it is thawed. The one place a paused agent is told apart.
pub fn is_frozen(obs: &Observation) -> bool {
    obs.observed.as_ref().is_some_and(|o| o.paused)
}

/// Updates the record from an observation and decides what self-healing does.
pub fn assess(
    record: &mut AgentRecord,
    watch: &mut Watch,
    obs: &Observation,
    cfg: &HealthConfig,
    now: Instant,
    jitter: f64,
) -> Heal {
    if record.is_held() {
        // Halted: nothing is healed, whatever the look finds; a workload that runs is
        // frozen again.
        let runs = obs
            .observed
            .as_ref()
            .is_some_and(|o| o.running && !o.paused);
        transition(record, Cause::Halted);
        watch.unhealthy_streak = 0;
        apply_stats(record, watch, None);
        return if runs { Heal::Refreeze } else { Heal::Nothing };
    }
    if is_frozen(obs) {
        // Paused: its processes cannot answer a health check or write a heartbeat, and
        // that is by design. It stays `paused`, nothing is healed, no unhealthy streak
        // builds up, and its stats are not sampled.
        transition(record, Cause::SeenPaused);
        watch.unhealthy_streak = 0;
        apply_stats(record, watch, None);
        return Heal::Nothing;
    }
    if status::row(record.status()).is_frozen() {
        // Frozen at the last look or command, not now: thawed (behind the manager's back,
        // or by a resume whose look came first).
        watch.thawed_at = Some(now);
    }
    let o = obs.observed.as_ref();
    let running = o.is_some_and(|o| o.running);
    // What Docker's probe and the heartbeat said while the agent was frozen is not the
    // agent's until it has been probed, or has written, again (see [`thaw_grace`]).
    let since_thaw = watch.thawed_at.map(|t| now.saturating_duration_since(t));
    let docker_stale = since_thaw.is_some_and(|d| d < thaw_grace(cfg));
    let beat_stale = since_thaw.is_some_and(|d| d < beat_thaw_grace(cfg));
    // A paused container writes nothing: its heartbeat says nothing of it.
    let judged = running && o.is_some_and(|o| o.state != "paused") && !beat_stale;
    // Not judged (exited, frozen, just thawed): no read, no start period, Docker alone.
    let (verdict, seen) = verdict_of(
        watch.beat.as_ref().filter(|_| judged),
        o.filter(|_| judged),
        record.last_heartbeat_at,
        cfg,
        obs.at,
    );
    record.last_heartbeat_at = seen;
    if let Some(o) = o {
        record.node = o.node.clone();
    }
    let docker_health = o.map(|o| o.health.as_str()).unwrap_or("none");
    record.health = combined_health(docker_health, &verdict);
    match &verdict {
        Verdict::Unhealthy(why) => record.last_error = Some(format!("heartbeat: {why}")),
        Verdict::Hung => {
            record.last_error = Some(format!(
                "heartbeat: none since {} (its key expired): the agent is hung",
                record.last_heartbeat_at.map(rfc3339).unwrap_or_default()
            ))
        }
        Verdict::Overdue(why) => record.last_error = Some(format!("heartbeat: {why}")),
        Verdict::Healthy | Verdict::Silent | Verdict::Starting => {}
    }
    let beat_unhealthy = matches!(
        verdict,
        Verdict::Unhealthy(_) | Verdict::Hung | Verdict::Overdue(_)
    );
    let docker_unhealthy = docker_health == "unhealthy" && !docker_stale;
    watch.verdict = verdict;
    let unhealthy = running && (beat_unhealthy || docker_unhealthy);
    let before = transition(record, Cause::Observed { running, unhealthy });
    if !running {
        apply_stats(record, watch, None);
    }

    let mut heal = Heal::Nothing;
    if running {
        watch.policy.on_running(now);
        if watch.healing == Healing::RestartScheduled {
            watch.healing = Healing::Watching;
        }
        if unhealthy {
            watch.unhealthy_streak += 1;
            if watch.unhealthy_streak >= cfg.unhealthy_restart_after {
                watch.unhealthy_streak = 0;
                heal = Heal::RestartNow(Reason::Unhealthy);
            }
        } else {
            watch.unhealthy_streak = 0;
        }
    } else if record.status() == AgentStatus::Failed {
        if before != AgentStatus::Failed || watch.last.status != Some(AgentStatus::Failed) {
            record.last_error = Some(match o {
                Some(o) => {
                    let (class, signal) = classify_exit(o.exit_code, o.oom_killed);
                    format!(
                        "container exited with code {} ({class}{})",
                        o.exit_code.unwrap_or(-1),
                        signal.map(|s| format!(", {s}")).unwrap_or_default()
                    )
                }
                None => "container is gone".into(),
            });
            if !obs.logs.is_empty() {
                record.last_logs = obs.logs.clone();
            }
        }
        match watch.healing {
            // Stays failed until a command arrives.
            Healing::GaveUp => {}
            Healing::RestartScheduled => {
                transition(record, Cause::RestartScheduled);
            }
            Healing::Watching => match watch.policy.on_exit(now, jitter) {
                Decision::RestartAfter(delay) => {
                    watch.healing = Healing::RestartScheduled;
                    transition(record, Cause::RestartScheduled);
                    heal = Heal::RestartAfter(delay);
                }
                Decision::CrashLoop { restarts, window } => {
                    watch.healing = Healing::GaveUp;
                    record.last_error = Some(format!(
                        "crash loop: restarted {restarts} times within {} s; not restarting until a command arrives ({})",
                        window.as_secs(),
                        record.last_error.as_deref().unwrap_or_default()
                    ));
                    heal = Heal::CrashLoop { restarts, window };
                }
            },
        }
    }
    heal
}

/// True when an `agent.health` is due: something changed, or a running agent has not
/// been reported for `every`.
pub fn report_due(last: &LastReport, now: &LastReport, every: Duration, running: bool) -> bool {
    last.health != now.health
        || last.state != now.state
        || last.status != now.status
        || (running && last.at.is_none_or(|t| t.elapsed() >= every))
}

/// The `details` of `agent.health`.
pub fn details(
    record: &AgentRecord,
    obs: &Observation,
    stats: Option<Stats>,
    verdict: &Verdict,
) -> Value {
    let o = obs.observed.as_ref();
    let limit = stats
        .map(|s| s.memory_limit_bytes as i64)
        .filter(|l| *l > 0)
        .or_else(|| o.map(|o| o.memory_bytes).filter(|m| *m > 0))
        .unwrap_or((record.spec.resources.memory_mb * 1024 * 1024) as i64);
    let mut d = json!({
        "health": record.health,
        "state": o.map(|o| o.state.as_str()).unwrap_or("missing"),
        "cpu_percent": (record.cpu_percent * 100.0).round() / 100.0,
        "memory_bytes": record.memory_bytes,
        "memory_limit_bytes": limit,
        "restart_count": record.restart_count,
    });
    if let Some(node) = o.and_then(|o| o.node.as_deref()) {
        d["node"] = json!(node);
    }
    if let Some(reason) = o.and_then(|o| o.reason.as_deref()) {
        d["reason"] = json!(reason);
    }
    if let Some(s) = stats {
        d["pids"] = json!(s.pids);
        d["stats_source"] = json!(s.origin.as_str());
        if let Some(n) = s.network {
            d["network_rx_bytes"] = json!(n.rx_bytes);
            d["network_tx_bytes"] = json!(n.tx_bytes);
        }
        if let Some(kills) = s.oom_kills {
            d["oom_kills"] = json!(kills);
        }
    }
    if verdict.reported() || record.last_heartbeat_at.is_some() {
        let mut hb = json!({
            "status": verdict.as_str(),
            "last_at": record.last_heartbeat_at.map(rfc3339),
        });
        if let Verdict::Unhealthy(why) | Verdict::Overdue(why) = verdict {
            hb["detail"] = json!(why);
        }
        d["heartbeat"] = hb;
    }
    if let Some(o) = o.filter(|o| !o.running && o.state != "created") {
        let (class, signal) = classify_exit(o.exit_code, o.oom_killed);
        d["exit_code"] = json!(o.exit_code);
        d["oom_killed"] = json!(o.oom_killed);
        d["exit_class"] = json!(class);
        d["signal"] = json!(signal);
        d["logs"] = json!(obs.logs);
    }
    if let (Some(error), AgentStatus::Failed) = (&record.last_error, record.status()) {
        d["last_error"] = json!(error);
    }
    d
}
