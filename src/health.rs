//! Looking at one agent: `observe` (Docker I/O, skipped while the agent's heartbeat
//! answers for it), `assess` (pure: the heartbeat's verdict ([`judge`]), the new status,
//! numbers and what self-healing should do), and the `agent.health` event.
//!
//! Two sources say whether an agent is healthy. Its **heartbeat** (contract section 8),
//! read for every agent at once by the supervisor each check interval and handed to
//! each actor ([`BeatRead`]): healthy while the key says `ok`, unhealthy when it says
//! `unhealthy`, hung when it expired after the agent had written one since its
//! container started. And **Docker**: the container's state (from events, the relist,
//! and an inspect when the heartbeat cannot answer) and a HEALTHCHECK where one is set.
//! Either one saying unhealthy makes the agent unhealthy; an agent that never wrote a
//! heartbeat is judged by Docker alone, unless its image promises heartbeats (the label
//! `autogen.heartbeat=true`, [`heartbeat::promised_by`]): then it is `starting` for the
//! start period after its container starts ([`judge_silence`]; the supervisor reads its
//! key every second meanwhile, [`first_beat_wait`]), and unhealthy if none came in it.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::config::HealthConfig;
use crate::context::Deps;
use crate::crash_policy::{CrashPolicy, Decision};
use crate::error::AgentError;
use crate::protocol::heartbeat::{self, BeatStatus, Heartbeat};
use crate::protocol::{error_details, rfc3339, AgentStatus, ErrorCode, EventKind};
use crate::record::status::{self, transition, Cause};
use crate::record::AgentRecord;
use crate::redact;
use crate::runtime::{Observed, Stats};

/// The agent's heartbeat key as the last batched read found it.
#[derive(Debug, Clone, PartialEq)]
pub enum BeatRead {
    /// The key holds a heartbeat (or, `Err`, something that does not read as one).
    Present(Result<Heartbeat, String>),
    /// There is no key: never written, or expired.
    Missing,
}

/// What the heartbeat says of the agent.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Verdict {
    /// No heartbeat since its container started (or none read yet): Docker decides.
    #[default]
    Silent,
    /// Its key says `ok`.
    Healthy,
    /// Its key says `unhealthy` (or holds what does not read as a heartbeat): why.
    Unhealthy(String),
    /// It wrote a heartbeat since its container started, and the key expired.
    Hung,
    /// None since its container started, which was within the start period, and its
    /// image promises heartbeats: it is starting.
    Starting,
    /// Its image promises heartbeats and none came within the start period: why, for
    /// people.
    Overdue(String),
}

impl Verdict {
    /// True when the heartbeat, not Docker, answers for the agent (an agent waiting for
    /// its first heartbeat is still looked at by Docker).
    pub fn heartbeating(&self) -> bool {
        matches!(
            self,
            Verdict::Healthy | Verdict::Unhealthy(_) | Verdict::Hung
        )
    }

    /// True when `agent.health` says what the heartbeat says (`details.heartbeat`).
    pub fn reported(&self) -> bool {
        !matches!(self, Verdict::Silent)
    }

    /// The `heartbeat.status` of `agent.health`: `ok`, `unhealthy`, `expired`,
    /// `starting` (none yet, within the start period), `overdue` (none within it),
    /// `none`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Verdict::Silent => "none",
            Verdict::Healthy => "ok",
            Verdict::Unhealthy(_) => "unhealthy",
            Verdict::Hung => "expired",
            Verdict::Starting => "starting",
            Verdict::Overdue(_) => "overdue",
        }
    }
}

/// Judges the last heartbeat read for the container that started at `started`, given
/// the last heartbeat already seen (`last_seen`, kept in the record across manager
/// restarts). Returns the verdict and the new last seen heartbeat time.
///
/// - A heartbeat written before the container started is from an earlier run (its key
///   outlives a restart by up to its expiry): as if there were none.
/// - No heartbeat (or only an earlier run's): hung if one was seen since the container
///   started, else silent.
/// - A container whose start is unknown takes any heartbeat as its own.
pub fn judge(
    read: Option<&BeatRead>,
    started: Option<DateTime<Utc>>,
    last_seen: Option<DateTime<Utc>>,
) -> (Verdict, Option<DateTime<Utc>>) {
    let this_run = |t: DateTime<Utc>| started.is_none_or(|s| t >= s);
    let missing = || {
        if last_seen.is_some_and(this_run) {
            Verdict::Hung
        } else {
            Verdict::Silent
        }
    };
    match read {
        None => (Verdict::Silent, last_seen),
        Some(BeatRead::Missing) => (missing(), last_seen),
        Some(BeatRead::Present(Err(why))) => (
            Verdict::Unhealthy(format!("its heartbeat does not read: {why}")),
            last_seen,
        ),
        Some(BeatRead::Present(Ok(hb))) => {
            let Some(at) = DateTime::from_timestamp_millis(hb.ts_ms).filter(|t| this_run(*t))
            else {
                return (missing(), last_seen);
            };
            let seen = Some(last_seen.map_or(at, |l| l.max(at)));
            let verdict = match hb.status {
                BeatStatus::Ok => Verdict::Healthy,
                BeatStatus::Unhealthy if hb.detail.is_empty() => {
                    Verdict::Unhealthy("the agent says it is unhealthy".into())
                }
                BeatStatus::Unhealthy => {
                    Verdict::Unhealthy(format!("the agent says it is unhealthy: {}", hb.detail))
                }
            };
            (verdict, seen)
        }
    }
}

/// What a silence means ([`Verdict::Silent`] from [`judge`]: no heartbeat since the
/// container started) for an agent whose image promises heartbeats (`promised`): it is
/// `Starting` while its container has run (`ran`) less than the start period
/// (`period`), and `Overdue` after it, once a read of its key has been made (`read`:
/// an agent whose key was never read yet, as after the manager's start, is not
/// blamed). Any other verdict, an image that promises nothing, or a run whose length
/// is unknown is left as it is: Docker decides.
pub fn judge_silence(
    verdict: Verdict,
    read: bool,
    promised: bool,
    ran: Option<Duration>,
    period: Duration,
) -> Verdict {
    match (verdict, promised, ran) {
        (Verdict::Silent, true, Some(ran)) if ran < period => Verdict::Starting,
        (Verdict::Silent, true, Some(_)) if read => Verdict::Overdue(overdue_reason(period)),
        (verdict, _, _) => verdict,
    }
}

/// Why an agent whose image promises heartbeats and wrote none in `period` is unhealthy,
/// in words a person can act on.
pub fn overdue_reason(period: Duration) -> String {
    format!(
        "the image says it writes heartbeats ({}=true) but none came in {} s since it started: \
         can it reach Redis and RabbitMQ? see AGENT_REDIS_URL / AGENT_RABBITMQ_URL",
        heartbeat::PROMISE_LABEL,
        period.as_secs()
    )
}

/// The start period of `cfg` (`HEARTBEAT_START_PERIOD_S`).
pub fn start_period(cfg: &HealthConfig) -> Duration {
    Duration::from_secs(cfg.heartbeat_start_period_s)
}

/// How long the container has run at `wall` (`None`: its start is unknown). A start a
/// little ahead of `wall` (the Docker host's clock against the manager's) counts as
/// just started.
pub fn ran_for(observed: &Observed, wall: DateTime<Utc>) -> Option<Duration> {
    let started = started_at(observed)?;
    Some((wall - started).to_std().unwrap_or(Duration::ZERO))
}

/// The verdict of `read` for the container `observed`, at `wall`: [`judge`], then
/// [`judge_silence`]. Returns it and the new last seen heartbeat time.
pub fn verdict_of(
    read: Option<&BeatRead>,
    observed: Option<&Observed>,
    last_seen: Option<DateTime<Utc>>,
    cfg: &HealthConfig,
    wall: Option<DateTime<Utc>>,
) -> (Verdict, Option<DateTime<Utc>>) {
    let (verdict, seen) = judge(read, observed.and_then(started_at), last_seen);
    let Some(o) = observed else {
        return (verdict, seen);
    };
    let ran = wall.and_then(|w| ran_for(o, w));
    let promised = heartbeat::promised_by(&o.labels);
    let verdict = judge_silence(verdict, read.is_some(), promised, ran, start_period(cfg));
    (verdict, seen)
}

/// How much longer the supervisor should read the agent's key every second (its
/// first-beat read) at `wall`: while the last look found it
/// [`Verdict::Starting`], what is left of its start period; `None` otherwise (no extra
/// read for an agent that heartbeats, has given up, or promises nothing).
pub fn first_beat_wait(watch: &Watch, cfg: &HealthConfig, wall: DateTime<Utc>) -> Option<Duration> {
    if watch.verdict != Verdict::Starting {
        return None;
    }
    let ran = watch.observed.as_ref().and_then(|o| ran_for(o, wall))?;
    start_period(cfg)
        .checked_sub(ran)
        .filter(|left| !left.is_zero())
}

/// When a container started, from Docker's `StartedAt` (`None`: unknown or never).
pub fn started_at(observed: &Observed) -> Option<DateTime<Utc>> {
    let raw = observed.started_at.as_deref()?;
    DateTime::parse_from_rfc3339(raw)
        .ok()
        .map(|t| t.with_timezone(&Utc))
        .filter(|t| t.timestamp() > 0)
}

/// The agent's `health` from Docker's and the heartbeat's: unhealthy when either says
/// so; healthy when the heartbeat says ok; starting while the first heartbeat is awaited
/// (unless a Docker HEALTHCHECK already has a verdict); otherwise Docker's word.
pub fn combined_health(docker: &str, verdict: &Verdict) -> String {
    match verdict {
        Verdict::Unhealthy(_) | Verdict::Hung | Verdict::Overdue(_) => "unhealthy".into(),
        Verdict::Healthy if docker == "unhealthy" => "unhealthy".into(),
        Verdict::Healthy => "healthy".into(),
        Verdict::Starting if matches!(docker, "healthy" | "unhealthy") => docker.to_string(),
        Verdict::Starting => "starting".into(),
        Verdict::Silent => docker.to_string(),
    }
}

/// Whether a read of heartbeats that finds a key missing can be believed. Not right
/// after the manager starts, nor after Redis was out of reach or restarted (keys may
/// have expired, or been lost, while agents could not write): from then on, agents get
/// `grace` (one heartbeat interval and a little) to write again. Pure: time is given.
#[derive(Debug, Clone)]
pub struct BeatTrust {
    /// The Redis server of the last successful read (its `run_id`).
    server: Option<String>,
    /// From when missing keys count; `None`: since the next successful read.
    from: Option<Instant>,
    grace: Duration,
}

impl BeatTrust {
    pub fn new(grace: Duration) -> Self {
        BeatTrust {
            server: None,
            from: None,
            grace,
        }
    }

    /// A read succeeded at `now` against server `run_id`: whether its missing keys count.
    pub fn on_read(&mut self, run_id: &str, now: Instant) -> bool {
        if self.server.as_deref() != Some(run_id) || self.from.is_none() {
            self.server = Some(run_id.to_string());
            self.from = Some(now + self.grace);
        }
        self.from.is_some_and(|from| now >= from)
    }

    /// Whether `run_id` is another server than the last read's: Redis restarted (and
    /// lost what it did not persist, the agents' ACL users among it).
    pub fn restarted(&self, run_id: &str) -> bool {
        self.server.as_deref().is_some_and(|s| s != run_id)
    }

    /// A read failed (Redis away).
    pub fn on_failure(&mut self) {
        self.from = None;
    }
}

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

/// Reads the container's state (from `exit` when a die event gave it; `reuse`, an
/// earlier inspect, when the heartbeat answers for the agent; else an inspect), and its
/// last logs when it has exited.
pub async fn observe(
    deps: &Deps,
    record: &AgentRecord,
    exit: Option<Exit>,
    reuse: Option<Observed>,
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
        None => match reuse {
            Some(earlier) => Some(earlier),
            None => deps.runtime.inspect(id).await?,
        },
    };
    let mut obs = Observation {
        observed,
        at: Some(Utc::now()),
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

/// Looks at the container, updates the record, and stores and publishes `agent.health`
/// (and `agent.error` for a crash loop) when due. Returns what self-healing should do.
///
/// `inspect`: ask Docker even when an earlier inspect could be reused (a Docker event,
/// or the relist saw a change).
pub async fn check(
    deps: &Deps,
    mut record: AgentRecord,
    mut watch: Watch,
    exit: Option<Exit>,
    inspect: bool,
) -> (AgentRecord, Watch, Result<Heal, AgentError>) {
    let reuse = if inspect {
        None
    } else {
        watch.reusable(&record).cloned()
    };
    let obs = match observe(deps, &record, exit, reuse).await {
        Ok(obs) => obs,
        Err(e) => return (record, watch, Err(e)),
    };
    // Kept for the next looks while it runs; after an exit the next look inspects.
    watch.observed = match exit {
        Some(_) => None,
        None => obs.observed.clone().filter(|o| o.running),
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
        let details = details(&record, &obs, watch.stats, &watch.verdict);
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

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(ms).unwrap()
    }

    fn beat(ts_ms: i64, status: BeatStatus, detail: &str) -> BeatRead {
        BeatRead::Present(Ok(Heartbeat {
            ts_ms,
            status,
            detail: detail.into(),
        }))
    }

    /// A running container that started at `started_ms`, as Docker inspects it.
    fn started(started_ms: i64) -> Observed {
        Observed {
            id: "cid".into(),
            started_at: Some(rfc3339(at(started_ms))),
            ..obs(true, "none")
        }
    }

    #[test]
    fn a_heartbeat_that_says_ok_is_healthy_and_remembered() {
        let read = beat(5_000, BeatStatus::Ok, "");
        let (v, seen) = judge(Some(&read), Some(at(1_000)), None);
        assert_eq!(v, Verdict::Healthy);
        assert_eq!(seen, Some(at(5_000)));
        // An older heartbeat read later never moves the memory back.
        let (_, seen) = judge(Some(&beat(4_000, BeatStatus::Ok, "")), None, seen);
        assert_eq!(seen, Some(at(5_000)));
    }

    #[test]
    fn a_heartbeat_that_says_unhealthy_is_unhealthy_with_its_words() {
        let (v, _) = judge(
            Some(&beat(5_000, BeatStatus::Unhealthy, "db down")),
            None,
            None,
        );
        assert_eq!(
            v,
            Verdict::Unhealthy("the agent says it is unhealthy: db down".into())
        );
        let (v, _) = judge(Some(&beat(5_000, BeatStatus::Unhealthy, "")), None, None);
        assert_eq!(
            v,
            Verdict::Unhealthy("the agent says it is unhealthy".into())
        );
        let garbage = BeatRead::Present(Err("not JSON".into()));
        let (v, seen) = judge(Some(&garbage), None, Some(at(1)));
        assert!(matches!(v, Verdict::Unhealthy(why) if why.contains("does not read: not JSON")));
        assert_eq!(seen, Some(at(1)));
    }

    #[test]
    fn an_expired_heartbeat_is_hung_only_if_this_run_wrote_one() {
        let missing = BeatRead::Missing;
        // Seen since the container started: hung.
        assert_eq!(
            judge(Some(&missing), Some(at(1_000)), Some(at(2_000))).0,
            Verdict::Hung
        );
        // Only seen from an earlier run of the container: not this run's business.
        assert_eq!(
            judge(Some(&missing), Some(at(3_000)), Some(at(2_000))).0,
            Verdict::Silent
        );
        // Never heartbeated: the container decides.
        assert_eq!(
            judge(Some(&missing), Some(at(1_000)), None).0,
            Verdict::Silent
        );
        // Not read yet: nothing to say.
        assert_eq!(
            judge(None, Some(at(1_000)), Some(at(2_000))).0,
            Verdict::Silent
        );
        // The start unknown: any heartbeat seen counts.
        assert_eq!(
            judge(Some(&missing), None, Some(at(2_000))).0,
            Verdict::Hung
        );
    }

    #[test]
    fn a_heartbeat_from_before_the_container_started_is_an_earlier_runs() {
        // The key outlives a restart: its unhealthy word is not the new run's.
        let stale = beat(2_000, BeatStatus::Unhealthy, "old");
        let (v, seen) = judge(Some(&stale), Some(at(3_000)), Some(at(2_000)));
        assert_eq!((v, seen), (Verdict::Silent, Some(at(2_000))));
        // ... unless this run wrote one since, and it is gone: hung.
        let (v, _) = judge(Some(&stale), Some(at(3_000)), Some(at(4_000)));
        assert_eq!(v, Verdict::Hung);
    }

    #[test]
    fn health_is_unhealthy_when_either_source_says_so() {
        assert_eq!(combined_health("none", &Verdict::Healthy), "healthy");
        assert_eq!(combined_health("unhealthy", &Verdict::Healthy), "unhealthy");
        assert_eq!(combined_health("healthy", &Verdict::Hung), "unhealthy");
        assert_eq!(
            combined_health("none", &Verdict::Unhealthy("x".into())),
            "unhealthy"
        );
        assert_eq!(combined_health("starting", &Verdict::Silent), "starting");
        assert_eq!(combined_health("none", &Verdict::Silent), "none");
    }

    #[test]
    fn missing_keys_are_believed_only_after_a_grace_from_a_good_read() {
        let grace = Duration::from_secs(11);
        let mut trust = BeatTrust::new(grace);
        let t = Instant::now();
        assert!(
            !trust.restarted("r1"),
            "the first server seen is no restart"
        );
        assert!(!trust.on_read("r1", t), "the manager just started");
        assert!(!trust.on_read("r1", t + Duration::from_secs(5)));
        assert!(trust.on_read("r1", t + grace));
        // Redis away: the agents could not write either.
        trust.on_failure();
        let back = t + Duration::from_secs(60);
        assert!(!trust.restarted("r1"), "away and back is no restart");
        assert!(!trust.on_read("r1", back));
        assert!(trust.on_read("r1", back + grace));
        // Redis restarted (every key lost) between two reads.
        let later = back + Duration::from_secs(60);
        assert!(trust.restarted("r2"));
        assert!(!trust.on_read("r2", later));
        assert!(!trust.restarted("r2"), "told once");
        assert!(trust.on_read("r2", later + grace));
    }

    #[test]
    fn a_hung_agent_is_unhealthy_then_restarted_like_any_unhealthy_one() {
        let cfg = cfg(); // unhealthy_restart_after = 2
        let mut w = Watch::new(&cfg);
        let mut r = record(Running);
        let t = Instant::now();
        let look = look(started(1_000));
        w.beat = Some(beat(2_000, BeatStatus::Ok, ""));
        assert_eq!(assess(&mut r, &mut w, &look, &cfg, t, 0.5), Heal::Nothing);
        assert_eq!((r.status(), r.health.as_str()), (Running, "healthy"));
        assert_eq!(r.last_heartbeat_at, Some(at(2_000)));
        // The key expires.
        w.beat = Some(BeatRead::Missing);
        assert_eq!(assess(&mut r, &mut w, &look, &cfg, t, 0.5), Heal::Nothing);
        assert_eq!((r.status(), r.health.as_str()), (Unhealthy, "unhealthy"));
        assert_eq!(w.verdict, Verdict::Hung);
        assert!(r.last_error.as_deref().unwrap_or_default().contains("hung"));
        assert_eq!(
            assess(&mut r, &mut w, &look, &cfg, t, 0.5),
            Heal::RestartNow(Reason::Unhealthy)
        );
        // The agent writes again: healthy, the count starts over.
        w.beat = Some(beat(9_000, BeatStatus::Ok, ""));
        assess(&mut r, &mut w, &look, &cfg, t, 0.5);
        assert_eq!((r.status(), r.health.as_str()), (Running, "healthy"));
        assert_eq!(w.unhealthy_streak, 0);
    }

    #[test]
    fn an_agent_that_never_heartbeated_is_judged_by_its_container() {
        let cfg = cfg();
        let mut w = Watch::new(&cfg);
        let mut r = record(Running);
        let t = Instant::now();
        w.beat = Some(BeatRead::Missing);
        for _ in 0..3 {
            assert_eq!(
                assess(&mut r, &mut w, &look(started(1_000)), &cfg, t, 0.5),
                Heal::Nothing
            );
        }
        assert_eq!((r.status(), r.health.as_str()), (Running, "none"));
        assert_eq!(w.verdict, Verdict::Silent);
        // Docker's HEALTHCHECK still counts where one is set.
        let sick = Observed {
            health: "unhealthy".into(),
            ..started(1_000)
        };
        assess(&mut r, &mut w, &look(sick), &cfg, t, 0.5);
        assert_eq!(r.status(), Unhealthy);
    }

    #[test]
    fn a_paused_or_exited_container_is_not_judged_by_its_heartbeat() {
        let cfg = cfg();
        let mut w = Watch::new(&cfg);
        let mut r = record(Running);
        r.last_heartbeat_at = Some(at(2_000));
        w.beat = Some(BeatRead::Missing);
        let paused = Observed {
            state: "paused".into(),
            ..started(1_000)
        };
        assess(&mut r, &mut w, &look(paused), &cfg, Instant::now(), 0.5);
        assert_eq!(w.verdict, Verdict::Silent);
        assert_eq!(r.status(), Running);
    }

    #[test]
    fn a_look_reuses_the_last_inspect_only_while_the_heartbeat_answers() {
        let cfg = cfg();
        let mut w = Watch::new(&cfg);
        let r = record(Running);
        assert!(w.reusable(&r).is_none(), "nothing inspected yet");
        w.observed = Some(started(1_000));
        assert!(w.reusable(&r).is_none(), "silent: Docker decides, inspect");
        w.verdict = Verdict::Healthy;
        assert!(w.reusable(&r).is_some());
        w.verdict = Verdict::Hung;
        assert!(
            w.reusable(&r).is_some(),
            "a hung agent is reported without Docker"
        );
        let mut other = r.clone();
        other.workload_id = Some("another".into());
        assert!(w.reusable(&other).is_none(), "a new container");
        w.observed = Some(Observed {
            health: "healthy".into(),
            ..started(1_000)
        });
        assert!(w.reusable(&r).is_none(), "a HEALTHCHECK to poll");
        w.observed = Some(started(1_000));
        w.reset(Some(Running), Instant::now());
        assert!(w.reusable(&r).is_none(), "a command: inspect afresh");
        // The next read's news is what a look would find.
        w.observed = Some(started(1_000));
        let mut r = r;
        r.last_heartbeat_at = Some(at(2_000));
        assert_eq!(
            w.verdict_with(&r, Some(&BeatRead::Missing), &cfg, at(3_000)),
            Verdict::Hung
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

    /// A frozen agent cannot write its heartbeat, so its key may expire while paused:
    /// once thawed, that is not held against it for one heartbeat interval (and a
    /// second); an agent still silent after that is hung.
    #[test]
    fn a_thawed_agent_is_not_judged_hung_by_a_key_that_expired_while_frozen() {
        let cfg = cfg();
        let grace = beat_thaw_grace(&cfg);
        assert!(grace > Duration::from_secs(cfg.heartbeat_interval_s));
        let t = Instant::now();
        let look = look(started(1_000));
        let mut w = Watch::new(&cfg);
        let mut r = record(Running);
        w.beat = Some(beat(2_000, BeatStatus::Ok, ""));
        assess(&mut r, &mut w, &look, &cfg, t, 0.5);
        assert_eq!(r.health, "healthy");
        // Paused, then resumed by a command; the key expired meanwhile.
        transition(&mut r, Cause::Paused);
        w.last.status = Some(Paused);
        transition(&mut r, Cause::Resumed);
        w.reset(Some(Running), t);
        w.beat = Some(BeatRead::Missing);
        for k in 0..(cfg.unhealthy_restart_after * 3) {
            let now = t + grace * k / (cfg.unhealthy_restart_after * 3);
            assert_eq!(assess(&mut r, &mut w, &look, &cfg, now, 0.5), Heal::Nothing);
            assert_eq!(r.status(), Running, "within the grace");
            assert_ne!(w.verdict, Verdict::Hung);
        }
        // Past the grace and still no heartbeat: hung.
        assess(&mut r, &mut w, &look, &cfg, t + grace, 0.5);
        assert_eq!((r.status(), w.verdict.clone()), (Unhealthy, Verdict::Hung));
    }

    /// A running container of an image that promises heartbeats, started at
    /// `started_ms`.
    fn promising(started_ms: i64) -> Observed {
        let mut o = started(started_ms);
        o.labels
            .insert(heartbeat::PROMISE_LABEL.into(), "true".into());
        o
    }

    /// A look at `o` made at `wall_ms`.
    fn look_at(o: Observed, wall_ms: i64) -> Observation {
        Observation {
            at: Some(at(wall_ms)),
            ..look(o)
        }
    }

    #[test]
    fn a_silence_is_starting_then_overdue_only_where_the_image_promises_heartbeats() {
        let period = Duration::from_secs(60);
        let within = Some(Duration::from_secs(59));
        let over = Some(period);
        let silence =
            |read, promised, ran| judge_silence(Verdict::Silent, read, promised, ran, period);
        assert_eq!(silence(true, true, within), Verdict::Starting);
        assert_eq!(
            silence(false, true, within),
            Verdict::Starting,
            "not read yet"
        );
        assert_eq!(
            silence(true, true, over),
            Verdict::Overdue(overdue_reason(period))
        );
        assert_eq!(
            silence(false, true, over),
            Verdict::Silent,
            "never read (the manager just started): not blamed"
        );
        assert_eq!(
            silence(true, false, within),
            Verdict::Silent,
            "no promise: Docker decides"
        );
        assert_eq!(silence(true, false, over), Verdict::Silent);
        assert_eq!(silence(true, true, None), Verdict::Silent, "start unknown");
        for other in [
            Verdict::Healthy,
            Verdict::Hung,
            Verdict::Unhealthy("x".into()),
        ] {
            assert_eq!(
                judge_silence(other.clone(), true, true, within, period),
                other
            );
        }
        let why = overdue_reason(period);
        for says in [
            "autogen.heartbeat=true",
            "60 s",
            "AGENT_REDIS_URL",
            "AGENT_RABBITMQ_URL",
        ] {
            assert!(why.contains(says), "{why}");
        }
    }

    #[test]
    fn a_starting_agent_reads_starting_until_a_docker_healthcheck_has_its_word() {
        assert_eq!(combined_health("none", &Verdict::Starting), "starting");
        assert_eq!(combined_health("starting", &Verdict::Starting), "starting");
        assert_eq!(combined_health("healthy", &Verdict::Starting), "healthy");
        assert_eq!(
            combined_health("unhealthy", &Verdict::Starting),
            "unhealthy"
        );
        assert_eq!(
            combined_health("none", &Verdict::Overdue("x".into())),
            "unhealthy"
        );
    }

    #[test]
    fn an_agent_whose_image_promises_heartbeats_is_starting_then_healthy_at_its_first() {
        let cfg = cfg();
        let mut w = Watch::new(&cfg);
        let mut r = record(Running);
        let t = Instant::now();
        let started_ms = 1_000_000;
        // Not read yet, then read and missing, then an earlier run's heartbeat (the key
        // outlives a restart): all within the start period, all `starting`.
        for (beat_read, wall_ms) in [
            (None, started_ms + 500),
            (Some(BeatRead::Missing), started_ms + 5_000),
            (
                Some(beat(started_ms - 1, BeatStatus::Unhealthy, "old")),
                started_ms + 59_000,
            ),
        ] {
            w.beat = beat_read;
            let look = look_at(promising(started_ms), wall_ms);
            assert_eq!(assess(&mut r, &mut w, &look, &cfg, t, 0.5), Heal::Nothing);
            assert_eq!((r.status(), r.health.as_str()), (Running, "starting"));
            assert_eq!(w.verdict, Verdict::Starting);
            assert_eq!(w.unhealthy_streak, 0);
            assert!(r.last_error.is_none(), "{:?}", r.last_error);
            let d = details(&r, &look, None, &w.verdict);
            assert_eq!(d["health"], "starting");
            assert_eq!(d["heartbeat"]["status"], "starting");
        }
        // Its first heartbeat: healthy at once.
        w.beat = Some(beat(started_ms + 4_000, BeatStatus::Ok, "idle"));
        let look = look_at(promising(started_ms), started_ms + 4_100);
        assess(&mut r, &mut w, &look, &cfg, t, 0.5);
        assert_eq!((r.status(), r.health.as_str()), (Running, "healthy"));
        assert_eq!(w.verdict, Verdict::Healthy);
    }

    #[test]
    fn an_agent_whose_image_promises_heartbeats_and_writes_none_is_unhealthy_after_the_period() {
        let cfg = cfg(); // unhealthy_restart_after = 2
        let period_ms = cfg.heartbeat_start_period_s as i64 * 1_000;
        let mut w = Watch::new(&cfg);
        let mut r = record(Running);
        let t = Instant::now();
        let started_ms = 1_000_000;
        w.beat = Some(BeatRead::Missing);
        let late = look_at(promising(started_ms), started_ms + period_ms);
        assert_eq!(assess(&mut r, &mut w, &late, &cfg, t, 0.5), Heal::Nothing);
        assert_eq!((r.status(), r.health.as_str()), (Unhealthy, "unhealthy"));
        let why = overdue_reason(start_period(&cfg));
        assert_eq!(w.verdict, Verdict::Overdue(why.clone()));
        assert_eq!(r.last_error, Some(format!("heartbeat: {why}")));
        let d = details(&r, &late, None, &w.verdict);
        assert_eq!(d["heartbeat"]["status"], "overdue");
        assert_eq!(d["heartbeat"]["detail"], why.as_str());
        // Then like any unhealthy agent: restarted after unhealthy_restart_after looks.
        assert_eq!(
            assess(&mut r, &mut w, &late, &cfg, t, 0.5),
            Heal::RestartNow(Reason::Unhealthy)
        );
        // The same image without the label: judged by its container, as before.
        let mut w = Watch::new(&cfg);
        let mut r = record(Running);
        w.beat = Some(BeatRead::Missing);
        let unlabelled = look_at(started(started_ms), started_ms + period_ms);
        assess(&mut r, &mut w, &unlabelled, &cfg, t, 0.5);
        assert_eq!((r.status(), r.health.as_str()), (Running, "none"));
        let early = look_at(started(started_ms), started_ms + 1_000);
        assess(&mut r, &mut w, &early, &cfg, t, 0.5);
        assert_eq!(r.health, "none", "no `starting` without the promise");
        assert!(details(&r, &early, None, &w.verdict)
            .get("heartbeat")
            .is_none());
    }

    #[test]
    fn a_thawed_agent_is_not_overdue_for_the_time_it_was_frozen() {
        let cfg = cfg();
        let period_ms = cfg.heartbeat_start_period_s as i64 * 1_000;
        let t = Instant::now();
        let mut w = Watch::new(&cfg);
        let mut r = record(Paused);
        w.last.status = Some(Paused);
        transition(&mut r, Cause::Resumed);
        w.reset(Some(Running), t);
        w.beat = Some(BeatRead::Missing);
        let look = look_at(promising(1_000), 1_000 + 2 * period_ms);
        assess(&mut r, &mut w, &look, &cfg, t, 0.5);
        assert_eq!(r.status(), Running, "within the thaw grace");
        assert_eq!(w.verdict, Verdict::Silent);
    }

    #[test]
    fn the_first_beat_read_lasts_while_the_agent_is_starting_and_its_period_lasts() {
        let cfg = cfg();
        let period = start_period(&cfg);
        let mut w = Watch::new(&cfg);
        w.observed = Some(promising(1_000_000));
        assert_eq!(
            first_beat_wait(&w, &cfg, at(1_000_000)),
            None,
            "silent: not read"
        );
        w.verdict = Verdict::Starting;
        assert_eq!(first_beat_wait(&w, &cfg, at(1_000_000)), Some(period));
        assert_eq!(
            first_beat_wait(&w, &cfg, at(1_010_000)),
            Some(period - Duration::from_secs(10))
        );
        assert_eq!(
            first_beat_wait(&w, &cfg, at(1_000_000 + period.as_millis() as i64)),
            None
        );
        w.observed = None;
        assert_eq!(
            first_beat_wait(&w, &cfg, at(1_000_000)),
            None,
            "no container known"
        );
        w.observed = Some(promising(1_000_000));
        w.verdict = Verdict::Healthy;
        assert_eq!(
            first_beat_wait(&w, &cfg, at(1_000_000)),
            None,
            "it heartbeats"
        );
    }

    #[test]
    fn a_first_heartbeat_read_while_starting_is_news() {
        let cfg = cfg();
        let mut w = Watch::new(&cfg);
        let r = record(Running);
        w.observed = Some(promising(1_000_000));
        w.verdict = Verdict::Starting;
        let wall = at(1_002_000);
        assert_eq!(
            w.verdict_with(&r, Some(&BeatRead::Missing), &cfg, wall),
            Verdict::Starting,
            "still none: no news, no look"
        );
        let first = beat(1_001_500, BeatStatus::Ok, "");
        assert_eq!(
            w.verdict_with(&r, Some(&first), &cfg, wall),
            Verdict::Healthy
        );
        let past = at(1_000_000 + cfg.heartbeat_start_period_s as i64 * 1_000);
        assert!(matches!(
            w.verdict_with(&r, Some(&BeatRead::Missing), &cfg, past),
            Verdict::Overdue(_)
        ));
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
