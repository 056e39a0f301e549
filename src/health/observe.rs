//! Looking at an agent's workload, with I/O: [`observe`] (the die event's exit, a
//! reused inspect while the heartbeat answers, else an inspect and its last log lines),
//! [`last_logs`], and [`check`]: observe, assess, save and publish `agent.health`.

use std::time::{Duration, Instant};

use chrono::Utc;

use crate::context::Deps;
use crate::error::AgentError;
use crate::protocol::{error_details, ErrorCode, EventKind};
use crate::record::AgentRecord;
use crate::redact;
use crate::runtime::Observed;

use super::*;

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
