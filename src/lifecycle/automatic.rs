//! What the manager does to an agent without a command: heal it (restart a crashed or
//! unhealthy agent, as self-healing decided in [`crate::health`]) and finish a delete
//! that a manager which died left half done. Both are plans
//! ([`super::plan::plan_automatic`]) run by the commands' executor.

use super::executor::run_automatic;
use super::plan::Automatic;
use crate::context::Deps;
use crate::error::AgentError;
use crate::health::Reason;
use crate::record::AgentRecord;

/// Restarts an agent by itself (it crashed, or stayed unhealthy): starts its workload
/// again (a new one if it is gone) and reports `agent.restarted` with no correlation
/// id. On failure the agent is marked failed and `agent.error` says why.
pub async fn heal(
    deps: &Deps,
    record: AgentRecord,
    reason: Reason,
) -> (AgentRecord, Result<(), AgentError>) {
    let fallback = record.clone();
    let (after, result) = run_automatic(deps, record, Automatic::Heal(reason)).await;
    (after.unwrap_or(fallback), result.map(|_| ()))
}

/// Finishes a delete that a manager which died left half done (the record says
/// `deleting`): removes the workload, the agent's users and every key, records the
/// answer under the command's message id (so its redelivery is answered, not refused),
/// and publishes `agent.deleted`.
pub async fn finish_delete(deps: &Deps, record: AgentRecord) -> Result<(), AgentError> {
    let agent_id = record.agent_id.clone();
    let (_, result) = run_automatic(deps, record, Automatic::FinishDelete).await;
    let result = result.map(|_| ());
    if result.is_ok() {
        tracing::info!(%agent_id, "finished a delete left half done");
    }
    result
}
