//! The runtime calls the lifecycle makes, with the answers only the runtime can give
//! handled in one place: a workload that vanished behind the manager's back is made
//! anew, a stop of a missing one is done. Used by commands ([`super::executor`]) and by
//! self-healing ([`super::automatic`]) alike.

use crate::config::Config;
use crate::error::{AgentError, RuntimeError};
use crate::record::AgentRecord;
use crate::runtime::{spec, Runtime};

/// Creates the agent's workload unless the record names one; returns its id.
pub async fn ensure(
    runtime: &dyn Runtime,
    config: &Config,
    record: &mut AgentRecord,
) -> Result<String, AgentError> {
    if let Some(id) = &record.workload_id {
        return Ok(id.clone());
    }
    let id = runtime.create(&spec::build(record, config)).await?;
    record.workload_id = Some(id.clone());
    Ok(id)
}

/// Starts the workload, making it first when the record names none or it is gone.
pub async fn start(
    runtime: &dyn Runtime,
    config: &Config,
    record: &mut AgentRecord,
) -> Result<(), AgentError> {
    let id = ensure(runtime, config, record).await?;
    match runtime.start(&id).await {
        Err(RuntimeError::NotFound(_)) => remake_and_start(runtime, config, record).await,
        other => Ok(other?),
    }
}

/// Stops with grace and starts again; a missing workload is made and started.
pub async fn restart(
    runtime: &dyn Runtime,
    config: &Config,
    record: &mut AgentRecord,
    timeout_s: u32,
) -> Result<(), AgentError> {
    let Some(id) = record.workload_id.clone() else {
        return start(runtime, config, record).await;
    };
    match runtime.restart(&id, timeout_s).await {
        Err(RuntimeError::NotFound(_)) => remake_and_start(runtime, config, record).await,
        other => Ok(other?),
    }
}

/// Stops the workload, if there is one; one that vanished is forgotten.
pub async fn stop(
    runtime: &dyn Runtime,
    record: &mut AgentRecord,
    timeout_s: u32,
) -> Result<(), AgentError> {
    let Some(id) = record.workload_id.clone() else {
        return Ok(());
    };
    match runtime.stop(&id, timeout_s).await {
        Err(RuntimeError::NotFound(_)) => {
            record.workload_id = None;
            Ok(())
        }
        other => Ok(other?),
    }
}

/// Removes the workload (by id, or by its deterministic name when the record names
/// none, so a workload made but never recorded goes too).
pub async fn remove(
    runtime: &dyn Runtime,
    record: &AgentRecord,
    timeout_s: u32,
) -> Result<(), AgentError> {
    let id = record
        .workload_id
        .clone()
        .unwrap_or_else(|| spec::container_name(&record.agent_id));
    Ok(runtime.remove(&id, timeout_s).await?)
}

/// New memory and CPU limits for `record`'s workload, if it has one (one that vanished
/// is made with them at its next start).
pub async fn update_resources(
    runtime: &dyn Runtime,
    config: &Config,
    record: &AgentRecord,
) -> Result<(), AgentError> {
    let Some(id) = &record.workload_id else {
        return Ok(());
    };
    match runtime
        .update_resources(id, &spec::build(record, config))
        .await
    {
        Ok(()) | Err(RuntimeError::NotFound(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Freezes the workload. One the record does not name, or that vanished, cannot be
/// paused (`not_found`); the next look at it says what became of it.
pub async fn pause(runtime: &dyn Runtime, record: &AgentRecord) -> Result<(), AgentError> {
    Ok(runtime.pause(&named_workload(record)?).await?)
}

/// Thaws the workload (`not_found` as for [`pause`]).
pub async fn unpause(runtime: &dyn Runtime, record: &AgentRecord) -> Result<(), AgentError> {
    Ok(runtime.unpause(&named_workload(record)?).await?)
}

/// The workload the record names.
fn named_workload(record: &AgentRecord) -> Result<String, RuntimeError> {
    record
        .workload_id
        .clone()
        .ok_or_else(|| RuntimeError::NotFound(format!("agent {} has no workload", record.agent_id)))
}

/// The workload vanished behind the manager's back: make a new one and start it.
async fn remake_and_start(
    runtime: &dyn Runtime,
    config: &Config,
    record: &mut AgentRecord,
) -> Result<(), AgentError> {
    record.workload_id = None;
    let id = ensure(runtime, config, record).await?;
    Ok(runtime.start(&id).await?)
}
