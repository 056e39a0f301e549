//! Looking at one agent's container: `observe` (Docker I/O), `assess` (pure: the new
//! status, numbers and what self-healing should do), and the `agent.health` event.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::config::HealthConfig;
use crate::context::Deps;
use crate::crash_policy::{CrashPolicy, Decision};
use crate::error::AgentError;
use crate::protocol::{error_details, AgentStatus, ErrorCode, EventKind};
use crate::record::status::{transition, Cause};
use crate::record::AgentRecord;
use crate::redact;
use crate::runtime::{Observed, Stats};

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
            thawed_at: None,
        }
    }

    /// A command took over the agent: self-healing starts afresh. A command that took a
    /// paused agent out of `paused` (resume, start) thawed it `now`.
    pub fn reset(&mut self, status: Option<AgentStatus>, now: Instant) {
        if self.last.status == Some(AgentStatus::Paused) && status != Some(AgentStatus::Paused) {
            self.thawed_at = Some(now);
        }
        self.policy.reset();
        self.unhealthy_streak = 0;
        self.healing = Healing::Watching;
        self.last.status = status;
    }
}

/// How long after a thaw Docker's `unhealthy` may still be its verdict from the frozen
/// time: its next probe comes within one check interval and takes at most the check's
/// timeout (one second more for the result to be seen). A probe that succeeds in that
/// time makes it `healthy` at once; one that fails keeps it `unhealthy`, judged after.
pub fn thaw_grace(cfg: &HealthConfig) -> Duration {
    Duration::from_secs(cfg.container_check_interval_s + cfg.container_check_timeout_s + 1)
}

/// What a look at the container found.
#[derive(Debug, Clone, Default)]
pub struct Observation {
    pub observed: Option<Observed>,
    /// Last log lines (redacted), read when the container has exited.
    pub logs: Vec<String>,
}

/// Takes a new stats sample into the record: memory, and CPU % since the last sample.
/// Stats are sampled apart from looks (a first sample of a new container takes Docker
/// up to a second), so a look is never held up by them.
pub fn apply_stats(record: &mut AgentRecord, watch: &mut Watch, sample: Option<Stats>) {
    match sample {
        Some(now) => {
            if let Some(prev) = &watch.stats {
                record.cpu_percent = now.cpu_percent_since(prev);
            }
            record.memory_bytes = now.memory_bytes;
            watch.stats = Some(now);
        }
        None => {
            record.cpu_percent = 0.0;
            record.memory_bytes = 0;
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
    RestartAfter(Duration),
    RestartNow(Reason),
    CrashLoop { restarts: usize, window: Duration },
}

/// How a container ended, from Docker's `oom` and `die` events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub exit_code: i64,
    pub oom_killed: bool,
}

/// Reads the container's state (from `exit` when a die event gave it), and its last
/// logs when it has exited.
pub async fn observe(
    deps: &Deps,
    record: &AgentRecord,
    exit: Option<Exit>,
) -> Result<Observation, AgentError> {
    let Some(id) = &record.workload_id else {
        return Ok(Observation::default());
    };
    let observed = match exit {
        // Docker's die event already says how it ended; an inspect now would wait for
        // dockerd to finish its exit handling (tens of ms). The next look inspects.
        Some(exit) => Some(Observed {
            id: id.clone(),
            state: "exited".into(),
            running: false,
            exit_code: Some(exit.exit_code),
            oom_killed: exit.oom_killed,
            health: record.health.clone(),
            memory_bytes: (record.spec.resources.memory_mb * 1024 * 1024) as i64,
            ..Default::default()
        }),
        None => deps.runtime.inspect(id).await?,
    };
    let mut obs = Observation {
        observed,
        ..Default::default()
    };
    // After a die event the logs are read once the event is out (see `check`): Docker
    // answers a log read only when it has finished with the exit.
    let exited = obs
        .observed
        .as_ref()
        .is_some_and(|o| !o.running && o.exit_code.is_some() && o.state != "created");
    if exited && exit.is_none() {
        obs.logs = last_logs(deps, id).await;
    }
    Ok(obs)
}

/// The container's last log lines, secrets redacted (empty when they cannot be read).
pub async fn last_logs(deps: &Deps, id: &str) -> Vec<String> {
    let tail = deps.config.health.log_tail_lines;
    match deps.runtime.logs(id, tail).await {
        Ok(lines) => lines.iter().map(|l| redact::line(l)).collect(),
        Err(e) => {
            tracing::debug!(container = %id, error = %e, "could not read the container's logs");
            Vec::new()
        }
    }
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

fn signal_name(n: i64) -> String {
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
    if is_frozen(obs) {
        // Paused: its processes cannot answer a health check or write a heartbeat, and
        // that is by design. It stays `paused`, nothing is healed, no unhealthy streak
        // builds up, and its stats are not sampled.
        transition(record, Cause::SeenPaused);
        watch.unhealthy_streak = 0;
        apply_stats(record, watch, None);
        return Heal::Nothing;
    }
    if record.status() == AgentStatus::Paused {
        // Frozen at the last look or command, not now: thawed (behind the manager's back,
        // or by a resume whose look came first).
        watch.thawed_at = Some(now);
    }
    let o = obs.observed.as_ref();
    let running = o.is_some_and(|o| o.running);
    record.health = o.map(|o| o.health.clone()).unwrap_or_else(|| "none".into());
    // Docker's verdict from the frozen time is not the agent's until Docker probed again.
    let stale = watch
        .thawed_at
        .is_some_and(|t| now.saturating_duration_since(t) < thaw_grace(cfg));
    let unhealthy = running && record.health == "unhealthy" && !stale;
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
pub fn details(record: &AgentRecord, obs: &Observation, stats: Option<Stats>) -> Value {
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
    if let Some(s) = stats {
        d["pids"] = json!(s.pids);
        d["network_rx_bytes"] = json!(s.rx_bytes);
        d["network_tx_bytes"] = json!(s.tx_bytes);
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

/// Looks at the container, updates the record, and stores and publishes `agent.health`
/// (and `agent.error` for a crash loop) when due. Returns what self-healing should do.
pub async fn check(
    deps: &Deps,
    mut record: AgentRecord,
    mut watch: Watch,
    exit: Option<Exit>,
) -> (AgentRecord, Watch, Result<Heal, AgentError>) {
    let obs = match observe(deps, &record, exit).await {
        Ok(obs) => obs,
        Err(e) => return (record, watch, Err(e)),
    };
    let jitter = fastrand::f64();
    let heal = assess(
        &mut record,
        &mut watch,
        &obs,
        &deps.config.health,
        Instant::now(),
        jitter,
    );
    let now = LastReport {
        health: record.health.clone(),
        state: obs
            .observed
            .as_ref()
            .map(|o| o.state.clone())
            .unwrap_or_else(|| "missing".into()),
        status: Some(record.status()),
        at: Some(Instant::now()),
    };
    let running = obs.observed.as_ref().is_some_and(|o| o.running);
    let every = Duration::from_secs(deps.config.health.report_interval_s);
    let mut events = Vec::new();
    // Operators see every look in the record; events go out on change and on interval.
    record.last_health_at = Some(chrono::Utc::now());
    if report_due(&watch.last, &now, every, running) || !matches!(heal, Heal::Nothing) {
        let details = details(&record, &obs, watch.stats);
        events.push(record.event(EventKind::Health, None, details));
    }
    if let Heal::CrashLoop { .. } = heal {
        let message = record.last_error.as_deref().unwrap_or_default();
        let details = error_details(None, ErrorCode::CrashLoop, message);
        events.push(record.event(EventKind::Error, None, details));
    }
    if !events.is_empty() {
        record.updated_at = chrono::Utc::now();
    }
    if let Err(e) = deps.records.save(&record, &events, None).await {
        return (record, watch, Err(e.into()));
    }
    if events.is_empty() {
        return (record, watch, Ok(heal));
    }
    if let Err(e) = deps.events.publish(&events).await {
        return (record, watch, Err(e.into()));
    }
    watch.last = now;
    if let (Some(_), Some(id)) = (exit, record.workload_id.clone()) {
        // The exit is reported; now its last words, for the record and the restart event.
        let logs = last_logs(deps, &id).await;
        if !logs.is_empty() {
            record.last_logs = logs;
            if let Err(e) = deps.records.save(&record, &[], None).await {
                return (record, watch, Err(e.into()));
            }
        }
    }
    (record, watch, Ok(heal))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::protocol::DesiredState;
    use AgentStatus::*;

    fn obs(running: bool, health: &str) -> Observed {
        Observed {
            running,
            health: health.into(),
            state: if running { "running" } else { "exited" }.into(),
            exit_code: (!running).then_some(3),
            ..Default::default()
        }
    }

    fn record(status: AgentStatus) -> AgentRecord {
        let mut r = AgentRecord::new("a", crate::protocol::sample_spec(), DesiredState::Running);
        transition(&mut r, Cause::Restored(status));
        r.workload_id = Some("cid".into());
        r
    }

    fn cfg() -> HealthConfig {
        let mut c = Config::defaults().health;
        c.unhealthy_restart_after = 2;
        c.crash_loop_max_restarts = 2;
        c
    }

    fn look(o: Observed) -> Observation {
        Observation {
            observed: Some(o),
            ..Default::default()
        }
    }

    #[test]
    fn a_crash_schedules_a_restart_then_a_crash_loop_gives_up() {
        let cfg = cfg();
        let mut w = Watch::new(&cfg);
        let mut r = record(Running);
        let t = Instant::now();
        let heal = assess(&mut r, &mut w, &look(obs(false, "none")), &cfg, t, 0.5);
        assert!(matches!(heal, Heal::RestartAfter(_)));
        assert_eq!(r.status(), Restarting);
        let error = r.last_error.clone().unwrap_or_default();
        assert!(error.contains("code 3"), "{error}");
        // Seen again before the restart happened: nothing new.
        assert_eq!(
            assess(&mut r, &mut w, &look(obs(false, "none")), &cfg, t, 0.5),
            Heal::Nothing
        );
        // Restarted, then crashes again, twice: the second exceeds the limit of 2.
        assess(&mut r, &mut w, &look(obs(true, "none")), &cfg, t, 0.5);
        assert!(matches!(
            assess(&mut r, &mut w, &look(obs(false, "none")), &cfg, t, 0.5),
            Heal::RestartAfter(_)
        ));
        assess(&mut r, &mut w, &look(obs(true, "none")), &cfg, t, 0.5);
        let heal = assess(&mut r, &mut w, &look(obs(false, "none")), &cfg, t, 0.5);
        assert!(
            matches!(heal, Heal::CrashLoop { restarts: 2, .. }),
            "{heal:?}"
        );
        assert_eq!(r.status(), Failed);
        assert!(r
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("crash loop"));
        assert_eq!(
            assess(&mut r, &mut w, &look(obs(false, "none")), &cfg, t, 0.5),
            Heal::Nothing
        );
        w.reset(Some(Running), t);
        assert_eq!(w.healing, Healing::Watching);
    }

    #[test]
    fn a_stopped_agent_is_never_restarted() {
        let cfg = cfg();
        let mut w = Watch::new(&cfg);
        let mut r = record(Stopped);
        r.desired_state = DesiredState::Stopped;
        let heal = assess(
            &mut r,
            &mut w,
            &look(obs(false, "none")),
            &cfg,
            Instant::now(),
            0.5,
        );
        assert_eq!(heal, Heal::Nothing);
        assert_eq!(r.status(), Stopped);
    }

    #[test]
    fn unhealthy_for_n_looks_restarts() {
        let cfg = cfg();
        let mut w = Watch::new(&cfg);
        let mut r = record(Running);
        let t = Instant::now();
        assert_eq!(
            assess(&mut r, &mut w, &look(obs(true, "unhealthy")), &cfg, t, 0.5),
            Heal::Nothing
        );
        assert_eq!(r.status(), Unhealthy);
        assert_eq!(
            assess(&mut r, &mut w, &look(obs(true, "unhealthy")), &cfg, t, 0.5),
            Heal::RestartNow(Reason::Unhealthy)
        );
        // A healthy look in between resets the count.
        assess(&mut r, &mut w, &look(obs(true, "unhealthy")), &cfg, t, 0.5);
        assess(&mut r, &mut w, &look(obs(true, "healthy")), &cfg, t, 0.5);
        assert_eq!(
            assess(&mut r, &mut w, &look(obs(true, "unhealthy")), &cfg, t, 0.5),
            Heal::Nothing
        );
    }

    #[test]
    fn a_paused_agent_is_neither_crashed_nor_unhealthy_however_long_it_is_looked_at() {
        let cfg = cfg();
        let mut w = Watch::new(&cfg);
        let mut r = record(Running);
        let t = Instant::now();
        // Docker: a paused container is running and paused, and its health check
        // fails (its processes are frozen).
        let frozen = Observed {
            paused: true,
            state: "paused".into(),
            ..obs(true, "unhealthy")
        };
        for _ in 0..(cfg.unhealthy_restart_after * 5) {
            assert_eq!(
                assess(&mut r, &mut w, &look(frozen.clone()), &cfg, t, 0.5),
                Heal::Nothing
            );
            assert_eq!(r.status(), Paused);
            assert_eq!(w.unhealthy_streak, 0);
        }
        // Thawed behind the manager's back: it runs.
        assess(&mut r, &mut w, &look(obs(true, "healthy")), &cfg, t, 0.5);
        assert_eq!(r.status(), Running);
        assert_eq!(w.thawed_at, Some(t));
        // Killed while paused: a crash like any other.
        let mut r = record(Paused);
        assert!(matches!(
            assess(&mut r, &mut w, &look(obs(false, "none")), &cfg, t, 0.5),
            Heal::RestartAfter(_)
        ));
    }

    /// Docker's `unhealthy` from while the container was frozen (its probes cannot run
    /// then) is not held against a thawed agent until Docker could probe it again; after
    /// that, an `unhealthy` counts as ever.
    #[test]
    fn a_thawed_agent_is_not_judged_by_dockers_verdict_from_the_frozen_time() {
        let cfg = cfg();
        let grace = thaw_grace(&cfg);
        let t = Instant::now();
        let stale = obs(true, "unhealthy");
        for thawed_by_command in [true, false] {
            let mut w = Watch::new(&cfg);
            let mut r = record(Paused);
            w.last.status = Some(Paused);
            if thawed_by_command {
                // agent.resume answered; the record says running before any look.
                transition(&mut r, Cause::Resumed);
                w.reset(Some(Running), t);
            }
            for k in 0..(cfg.unhealthy_restart_after * 3) {
                let now = t + grace * k / (cfg.unhealthy_restart_after * 3);
                assert_eq!(
                    assess(&mut r, &mut w, &look(stale.clone()), &cfg, now, 0.5),
                    Heal::Nothing,
                    "within the grace (by command: {thawed_by_command})"
                );
                assert_eq!(r.status(), Running);
                assert_eq!(r.health, "unhealthy", "Docker's word is reported");
                assert_eq!(w.unhealthy_streak, 0);
            }
            // Past the grace: Docker probed again and still says unhealthy.
            let mut heal = Heal::Nothing;
            for k in 0..cfg.unhealthy_restart_after {
                let now = t + grace + Duration::from_millis(u64::from(k));
                heal = assess(&mut r, &mut w, &look(stale.clone()), &cfg, now, 0.5);
                assert_eq!(r.status(), Unhealthy);
            }
            assert_eq!(heal, Heal::RestartNow(Reason::Unhealthy));
        }
    }

    #[test]
    fn exits_are_classified() {
        assert_eq!(classify_exit(Some(137), true).0, "oom_killed");
        assert_eq!(
            classify_exit(Some(137), false),
            ("signal", Some("SIGKILL".into()))
        );
        assert_eq!(classify_exit(Some(0), false).0, "clean");
        assert_eq!(classify_exit(Some(3), false).0, "error");
    }

    #[test]
    fn report_on_change_and_on_interval() {
        let now = LastReport {
            health: "none".into(),
            state: "running".into(),
            status: Some(Running),
            at: Some(Instant::now()),
        };
        assert!(!report_due(
            &now.clone(),
            &now,
            Duration::from_secs(30),
            true
        ));
        let mut changed = now.clone();
        changed.state = "exited".into();
        assert!(report_due(&changed, &now, Duration::from_secs(30), true));
        assert!(report_due(
            &LastReport::default(),
            &now,
            Duration::from_secs(30),
            true
        ));
        let old = LastReport {
            at: Instant::now().checked_sub(Duration::from_secs(31)),
            ..now.clone()
        };
        assert!(report_due(&old, &now, Duration::from_secs(30), true));
        assert!(!report_due(&old, &now, Duration::from_secs(30), false));
    }
}
