//! Reconciliation at start, before any command is consumed: the agents of this manager
//! instance are adopted from Redis and Docker. Docker labels and environment are ground
//! truth; a record Redis lost is rebuilt from them.

use std::collections::HashMap;

use crate::error::AgentError;
use crate::lifecycle::Deps;
use crate::protocol::{AgentStatus, DesiredState};
use crate::runtime::spec::{spec_from_container, LABEL_AGENT_ID};
use crate::runtime::Observed;
use crate::store::AgentRecord;

/// Every agent to adopt, with records rebuilt or repaired where needed.
pub async fn adopt(deps: &Deps) -> Result<Vec<AgentRecord>, AgentError> {
    let containers: HashMap<String, Observed> = deps
        .runtime
        .list_managed()
        .await?
        .into_iter()
        .filter_map(|o| o.labels.get(LABEL_AGENT_ID).cloned().map(|id| (id, o)))
        .collect();
    let mut records: HashMap<String, AgentRecord> = HashMap::new();
    for (id, loaded) in deps.store.load_all().await? {
        match loaded {
            Ok(record) => {
                records.insert(id, record);
            }
            Err(e) => {
                tracing::warn!(agent_id = %id, error = %e, "corrupt record; rebuilding it from Docker if possible")
            }
        }
    }

    let mut adopted = Vec::with_capacity(records.len().max(containers.len()));
    for (id, observed) in &containers {
        let record = match records.remove(id) {
            Some(mut record) => {
                record.container_id = Some(observed.id.clone());
                record
            }
            None => match rebuild(observed) {
                Some(record) => {
                    tracing::info!(agent_id = %id, "rebuilt the agent's record from its container");
                    deps.store.save(&record, &[], None).await?;
                    record
                }
                None => {
                    tracing::warn!(agent_id = %id, container = %observed.id, "container carries our labels but not enough to rebuild an agent; left alone");
                    continue;
                }
            },
        };
        adopted.push(record);
    }
    // Records whose container is gone: the agent actor's first look marks them (and a
    // start or restart command creates a new container).
    for (_, mut record) in records {
        record.container_id = None;
        adopted.push(record);
    }
    tracing::info!(
        agents = adopted.len(),
        containers = containers.len(),
        "reconciled"
    );
    crate::quota::rebuild(deps, &adopted).await?;
    Ok(adopted)
}

/// An agent record from a container alone.
fn rebuild(observed: &Observed) -> Option<AgentRecord> {
    let (agent_id, spec) = spec_from_container(
        &observed.labels,
        |name| observed.env_var(name).map(str::to_string),
        &observed.image,
    )?;
    let desired = if observed.running {
        DesiredState::Running
    } else {
        DesiredState::Stopped
    };
    let mut record = AgentRecord::new(&agent_id, spec, desired);
    record.container_id = Some(observed.id.clone());
    record.status = if observed.running {
        AgentStatus::Running
    } else {
        AgentStatus::Stopped
    };
    Some(record)
}
