//! The heartbeat's verdict (contract section 8), pure: what a read of an agent's key
//! means ([`judge`]: healthy, unhealthy, hung or silent; a silence against the start
//! period, [`judge_silence`]), how long a starting agent's key is read every second
//! ([`first_beat_wait`]), Docker's and the heartbeat's health combined, and when a
//! missing key can be believed ([`BeatTrust`]).

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::config::HealthConfig;
use crate::protocol::heartbeat::{self, BeatStatus, Heartbeat, HeartbeatError};
use crate::runtime::Observed;

use super::*;

/// The agent's heartbeat key as the last batched read found it.
#[derive(Debug, Clone, PartialEq)]
pub enum BeatRead {
    /// The key holds a heartbeat (or, `Err`, something that does not read as one).
    Present(Result<Heartbeat, HeartbeatError>),
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
