//! What the manager does to an agent without a command: heal it (restart a crashed or
//! unhealthy agent, as self-healing decided in [`crate::health`]) and finish a delete
//! that a manager which died left half done.

use serde_json::json;

use super::workload;
use crate::context::Deps;
use crate::error::AgentError;
use crate::health::Reason;
use crate::ports::Processed;
use crate::protocol::{error_details, EventKind};
use crate::record::status::{transition, Cause};
use crate::record::AgentRecord;

/// Restarts an agent by itself (it crashed, or stayed unhealthy): starts its workload
/// again (a new one if it is gone) and reports `agent.restarted` with no correlation
/// id. On failure the agent is marked failed and `agent.error` says why.
pub async fn heal(
    deps: &Deps,
    mut record: AgentRecord,
    reason: Reason,
) -> (AgentRecord, Result<(), AgentError>) {
    // The exit's last words travel with agent.restarted; read them now if the look
    // that saw the exit could not.
    if record.last_logs.is_empty() {
        if let Some(id) = record.workload_id.clone() {
            record.last_logs = crate::health::last_logs(deps, &id).await;
        }
    }
    let outcome = match reason {
        Reason::Unhealthy => {
            let grace = deps.config.agents.stop_timeout_s;
            workload::restart(deps, &mut record, grace).await
        }
        Reason::Crashed => workload::start(deps, &mut record).await,
    };
    let event = match &outcome {
        Ok(()) => {
            transition(&mut record, Cause::Started);
            record.restart_count += 1;
            crate::metrics::inc(
                "agent_manager_restarts_total",
                &[("reason", reason.as_str())],
            );
            tracing::info!(agent_id = %record.agent_id, reason = reason.as_str(), restarts = record.restart_count, "agent restarted by the manager");
            let details = json!({
                "reason": reason.as_str(),
                "restart_count": record.restart_count,
                "automatic": true,
                "last_error": record.last_error.as_deref().unwrap_or_default(),
                "logs": record.last_logs,
            });
            record.event(EventKind::Restarted, None, details)
        }
        Err(e) => {
            transition(&mut record, Cause::Failed);
            let message = format!("automatic restart failed: {e}");
            tracing::warn!(agent_id = %record.agent_id, error = %e, "automatic restart failed");
            let details = error_details(None, e.code(), &message);
            record.last_error = Some(message);
            record.event(EventKind::Error, None, details)
        }
    };
    record.updated_at = chrono::Utc::now();
    let events = [event];
    if let Err(e) = deps.records.save(&record, &events, None).await {
        return (record, Err(e.into()));
    }
    if let Err(e) = deps.events.publish(&events).await {
        return (record, Err(e.into()));
    }
    (record, outcome)
}

/// Finishes a delete that a manager which died left half done (the record says
/// `deleting`): removes the workload, the agent's users and every key, records the
/// answer under the command's message id (so its redelivery is answered, not refused),
/// and publishes `agent.deleted`.
pub async fn finish_delete(deps: &Deps, record: AgentRecord) -> Result<(), AgentError> {
    workload::remove(
        deps.runtime.as_ref(),
        &record,
        deps.config.agents.stop_timeout_s,
    )
    .await?;
    workload::revoke(deps, &record.agent_id).await?;
    let correlation = record.pending.as_ref().map(|p| p.message_id.as_str());
    let event = record.event(
        EventKind::Deleted,
        correlation,
        json!({"finished_after_restart": true}),
    );
    let answer = [event];
    let processed = correlation.map(|message_id| Processed {
        message_id,
        answer: &answer,
    });
    deps.records.delete(&record, processed).await?;
    deps.events.publish(&answer).await?;
    tracing::info!(agent_id = %record.agent_id, "finished a delete left half done");
    Ok(())
}
