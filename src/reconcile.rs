//! Reconciliation at start, before any command is consumed: the agents of this manager
//! instance are adopted from Redis and Docker. Docker labels and environment are ground
//! truth; a record Redis lost is rebuilt from them (a paused container's agent is
//! `paused`). Teams then lose the members that are no longer agents.

use std::collections::HashMap;

use crate::context::Deps;
use crate::error::AgentError;
use crate::protocol::{AgentStatus, DesiredState};
use crate::record::status::{transition, Cause};
use crate::record::AgentRecord;
use crate::runtime::spec::{spec_from_container, LABEL_AGENT_ID};
use crate::runtime::Observed;

/// What reconciliation found.
pub struct Adoption {
    /// Every agent to adopt, with records rebuilt or repaired where needed.
    pub agents: Vec<AgentRecord>,
    /// Containers that carry our labels but belong to no agent (ids).
    pub orphans: Vec<String>,
}

/// Adopts this instance's agents from Redis and Docker.
pub async fn adopt(deps: &Deps) -> Result<Adoption, AgentError> {
    let mut containers: HashMap<String, Observed> = HashMap::new();
    let mut orphans = Vec::new();
    for observed in deps.runtime.list_managed_brief().await? {
        match observed.labels.get(LABEL_AGENT_ID).cloned() {
            Some(id) if !id.is_empty() => {
                containers.insert(id, observed);
            }
            _ => {
                tracing::warn!(container = %observed.id, "orphan: container carries our labels but no agent id");
                orphans.push(observed.id);
            }
        }
    }
    let mut records: HashMap<String, AgentRecord> = HashMap::new();
    for (id, loaded) in deps.records.load_all().await? {
        match loaded {
            Ok(record) => {
                records.insert(id, record);
            }
            Err(e) => {
                tracing::warn!(agent_id = %id, error = %e, "corrupt record; rebuilding it from Docker if possible")
            }
        }
    }

    // Deletes a dead manager left half done are finished first.
    let half_deleted: Vec<String> = records
        .iter()
        .filter(|(_, r)| r.status() == AgentStatus::Deleting)
        .map(|(id, _)| id.clone())
        .collect();
    for id in half_deleted {
        if let Some(mut record) = records.remove(&id) {
            if let Some(observed) = containers.get(&id) {
                record.workload_id = Some(observed.id.clone());
            }
            crate::lifecycle::finish_delete(deps, record).await?;
        }
        containers.remove(&id);
    }

    let mut adopted = Vec::with_capacity(records.len().max(containers.len()));
    for (id, observed) in &containers {
        let record = match records.remove(id) {
            Some(mut record) => {
                record.workload_id = Some(observed.id.clone());
                record
            }
            // The listing has no env: the container is inspected to rebuild from it.
            None => match deps
                .runtime
                .inspect(&observed.id)
                .await?
                .and_then(|o| rebuild(&o))
            {
                Some(record) => {
                    tracing::info!(agent_id = %id, "rebuilt the agent's record from its container");
                    deps.records.save(&record, &[], None).await?;
                    record
                }
                None => {
                    tracing::warn!(agent_id = %id, container = %observed.id, "orphan: container carries our labels but not enough to rebuild an agent");
                    orphans.push(observed.id.clone());
                    continue;
                }
            },
        };
        adopted.push(record);
    }
    // Records whose container is gone: the agent actor's first look marks them (and a
    // start or restart command creates a new container).
    for (_, mut record) in records {
        record.workload_id = None;
        adopted.push(record);
    }
    tracing::info!(
        agents = adopted.len(),
        containers = containers.len(),
        orphans = orphans.len(),
        "reconciled"
    );
    deps.quotas.rebuild(&adopted).await?;
    let alive = adopted.iter().map(|r| r.agent_id.clone()).collect();
    crate::team::reconcile(deps, &alive).await?;
    Ok(Adoption {
        agents: adopted,
        orphans,
    })
}

/// Removes orphans after the grace period if they are still orphans (or, in dry-run,
/// only reports them), as Nomad's garbage collection does.
pub async fn reap_orphans(deps: Deps, orphans: Vec<String>) {
    if orphans.is_empty() {
        return;
    }
    let cfg = &deps.config.docker;
    tokio::time::sleep(std::time::Duration::from_secs(cfg.orphan_grace_s)).await;
    for id in orphans {
        let still = match deps.runtime.inspect(&id).await {
            Ok(Some(o)) => rebuild(&o).is_none(),
            Ok(None) => false,
            Err(e) => {
                tracing::warn!(container = %id, error = %e, "cannot look at an orphan; left alone");
                false
            }
        };
        if !still {
            continue;
        }
        if cfg.orphan_dry_run {
            tracing::warn!(container = %id, "orphan container (dry run: not removed)");
        } else {
            match deps
                .runtime
                .remove(&id, deps.config.agents.stop_timeout_s)
                .await
            {
                Ok(()) => tracing::warn!(container = %id, "removed an orphan container"),
                Err(e) => {
                    tracing::warn!(container = %id, error = %e, "could not remove an orphan container")
                }
            }
        }
    }
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
    record.workload_id = Some(observed.id.clone());
    transition(
        &mut record,
        Cause::Adopted {
            running: observed.running,
        },
    );
    if observed.paused {
        transition(&mut record, Cause::SeenPaused);
    }
    Some(record)
}
