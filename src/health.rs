//! The periodic look at one agent's container: what its status should be given what
//! Docker reports, and when an `agent.health` event is due.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::error::AgentError;
use crate::lifecycle::Deps;
use crate::protocol::{AgentStatus, DesiredState, Event, EventKind};
use crate::runtime::Observed;
use crate::store::AgentRecord;

/// What the last `agent.health` said, to send the next one on change.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LastReport {
    pub health: String,
    pub state: String,
    pub status: Option<AgentStatus>,
    pub at: Option<Instant>,
}

/// The status an agent has given its container. Statuses that belong to a command in
/// progress are never touched here.
pub fn observed_status(
    current: AgentStatus,
    desired: DesiredState,
    observed: Option<&Observed>,
) -> AgentStatus {
    use AgentStatus::*;
    if matches!(
        current,
        Creating | Starting | Stopping | Restarting | Deleting
    ) {
        return current;
    }
    match observed {
        Some(o) if o.running && o.health == "unhealthy" => Unhealthy,
        Some(o) if o.running => Running,
        Some(_) | None => match desired {
            // It should run but does not: it crashed, or its container is gone.
            DesiredState::Running if current != Created => Failed,
            DesiredState::Running => Created,
            DesiredState::Stopped if current == Created => Created,
            DesiredState::Stopped => Stopped,
        },
    }
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
pub fn details(record: &AgentRecord, observed: Option<&Observed>, memory_limit: i64) -> Value {
    let mut d = json!({
        "health": record.health,
        "state": observed.map(|o| o.state.as_str()).unwrap_or("missing"),
        "cpu_percent": record.cpu_percent,
        "memory_bytes": record.memory_bytes,
        "memory_limit_bytes": memory_limit,
        "restart_count": record.restart_count,
    });
    if let Some(o) = observed.filter(|o| !o.running) {
        d["exit_code"] = json!(o.exit_code);
        d["oom_killed"] = json!(o.oom_killed);
    }
    d
}

/// Inspects the container, updates the record, and stores and publishes `agent.health`
/// when due. Returns the record and what was reported.
pub async fn check(
    deps: &Deps,
    mut record: AgentRecord,
    mut last: LastReport,
) -> (AgentRecord, LastReport, Result<(), AgentError>) {
    let observed = match &record.container_id {
        Some(id) => match deps.runtime.inspect(id).await {
            Ok(o) => o,
            Err(e) => return (record, last, Err(e.into())),
        },
        None => None,
    };
    let status = observed_status(record.status, record.desired_state, observed.as_ref());
    let now = LastReport {
        health: observed
            .as_ref()
            .map(|o| o.health.clone())
            .unwrap_or_else(|| "none".into()),
        state: observed
            .as_ref()
            .map(|o| o.state.clone())
            .unwrap_or_else(|| "missing".into()),
        status: Some(status),
        at: Some(Instant::now()),
    };
    let running = observed.as_ref().is_some_and(|o| o.running);
    let every = Duration::from_secs(deps.config.health.report_interval_s);
    if !report_due(&last, &now, every, running) {
        return (record, last, Ok(()));
    }
    if status == AgentStatus::Failed && record.status != AgentStatus::Failed {
        record.last_error = match &observed {
            Some(o) => format!(
                "container exited with code {}{}",
                o.exit_code.unwrap_or(-1),
                if o.oom_killed { " (out of memory)" } else { "" }
            ),
            None => "container is gone".into(),
        };
    }
    record.status = status;
    record.health = now.health.clone();
    if let Some(o) = &observed {
        record.restart_count = record.restart_count.max(o.restart_count.max(0) as u64);
    }
    let now_utc = chrono::Utc::now();
    record.last_health_at = Some(now_utc);
    record.updated_at = now_utc;
    let limit = observed
        .as_ref()
        .map(|o| o.memory_bytes)
        .unwrap_or((record.spec.resources.memory_mb * 1024 * 1024) as i64);
    let event = Event::new(
        EventKind::Health,
        &record.agent_id,
        &record.spec.customer_id,
        None,
        status.as_str(),
        record.container_id.as_deref(),
        details(&record, observed.as_ref(), limit),
    );
    if let Err(e) = deps
        .store
        .save(&record, std::slice::from_ref(&event), None)
        .await
    {
        return (record, last, Err(e.into()));
    }
    if let Err(e) = deps.publisher.publish(&[event]).await {
        return (record, last, Err(e.into()));
    }
    last = now;
    (record, last, Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use AgentStatus::*;

    fn obs(running: bool, health: &str) -> Observed {
        Observed {
            running,
            health: health.into(),
            state: if running { "running" } else { "exited" }.into(),
            ..Default::default()
        }
    }

    #[test]
    fn running_container_means_running_or_unhealthy() {
        let o = obs(true, "none");
        assert_eq!(
            observed_status(Failed, DesiredState::Running, Some(&o)),
            Running
        );
        let o = obs(true, "unhealthy");
        assert_eq!(
            observed_status(Running, DesiredState::Running, Some(&o)),
            Unhealthy
        );
    }

    #[test]
    fn exited_container_fails_only_when_it_should_run() {
        let o = obs(false, "none");
        assert_eq!(
            observed_status(Running, DesiredState::Running, Some(&o)),
            Failed
        );
        assert_eq!(
            observed_status(Stopped, DesiredState::Stopped, Some(&o)),
            Stopped
        );
        assert_eq!(
            observed_status(Running, DesiredState::Running, None),
            Failed
        );
        assert_eq!(
            observed_status(Created, DesiredState::Stopped, Some(&o)),
            Created
        );
    }

    #[test]
    fn commands_in_progress_are_left_alone() {
        let o = obs(false, "none");
        for s in [Creating, Starting, Stopping, Restarting, Deleting] {
            assert_eq!(observed_status(s, DesiredState::Running, Some(&o)), s);
        }
    }

    #[test]
    fn report_on_change_and_on_interval() {
        let now = LastReport {
            health: "none".into(),
            state: "running".into(),
            status: Some(Running),
            at: Some(Instant::now()),
        };
        let fresh = now.clone();
        assert!(!report_due(&fresh, &now, Duration::from_secs(30), true));
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
