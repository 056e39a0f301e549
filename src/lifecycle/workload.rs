//! The runtime calls the lifecycle makes, with the answers only the runtime can give
//! handled in one place: a workload that vanished behind the manager's back is made
//! anew, a stop of a missing one is done. Used by commands ([`super::executor`]) and by
//! self-healing ([`super::automatic`]) alike.
//!
//! [`ensure`] is the one place a workload is made, so it is also where an agent's own
//! login is issued (contract section 7): a fresh password for every workload made
//! (create, a replacing update, a vanished container made anew, self-healing alike),
//! given to the agent's users first and then to the new workload's environment.

use crate::context::Deps;
use crate::credentials::{own_password, AgentLogin, AgentUrls};
use crate::error::{AgentError, CredentialError, RuntimeError};
use crate::ports::CredentialIssuer;
use crate::protocol::ErrorCode;
use crate::record::AgentRecord;
use crate::runtime::spec::{ENV_RABBITMQ_URL, ENV_REDIS_URL};
use crate::runtime::{spec, Runtime};

/// Creates the agent's workload unless the record names one; returns its id. With
/// per-agent credentials the agent's users get a new password first, which goes into
/// the new workload's environment and nowhere else; a failure to make them makes no
/// workload.
pub async fn ensure(deps: &Deps, record: &mut AgentRecord) -> Result<String, AgentError> {
    if let Some(id) = &record.workload_id {
        return Ok(id.clone());
    }
    refuse_if_held(deps, &record.agent_id)?;
    let config = deps.config.as_ref();
    // Its egress rules exist before its workload does (section 11): no unfiltered start.
    deps.egress.allow(&record.agent_id, &record.spec).await?;
    let mut spec = spec::build(record, config);
    if let Some(issuer) = &deps.credentials {
        let login = AgentLogin::fresh(&record.agent_id).map_err(CredentialError::from)?;
        let urls = AgentUrls::new(
            config.agent_rabbitmq_url(),
            config.agent_redis_url(),
            &login,
        )
        .map_err(CredentialError::from)?;
        issuer.issue(&record.agent_id, &login.password).await?;
        spec = spec.with_login(&urls, &login.serial);
    }
    let id = deps.runtime.create(&spec).await?;
    record.workload_id = Some(id.clone());
    Ok(id)
}

/// Starts the workload, making it first when the record names none or it is gone.
pub async fn start(deps: &Deps, record: &mut AgentRecord) -> Result<(), AgentError> {
    let id = ensure(deps, record).await?;
    match deps.runtime.start(&id).await {
        Err(RuntimeError::NotFound(_)) => remake_and_start(deps, record).await,
        other => Ok(other?),
    }
}

/// Stops with grace and starts again; a missing workload is made and started.
pub async fn restart(
    deps: &Deps,
    record: &mut AgentRecord,
    timeout_s: u32,
) -> Result<(), AgentError> {
    let Some(id) = record.workload_id.clone() else {
        return start(deps, record).await;
    };
    match deps.runtime.restart(&id, timeout_s).await {
        Err(RuntimeError::NotFound(_)) => remake_and_start(deps, record).await,
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
/// Its egress rules go after it.
pub async fn remove(deps: &Deps, record: &AgentRecord, timeout_s: u32) -> Result<(), AgentError> {
    let id = record
        .workload_id
        .clone()
        .unwrap_or_else(|| spec::container_name(&record.agent_id));
    deps.runtime.remove(&id, timeout_s).await?;
    Ok(deps.egress.forget(&record.agent_id).await?)
}

/// New memory and CPU limits and egress rules for `record`'s workload, if it has one
/// (one that vanished is made with them at its next start).
pub async fn update_resources(deps: &Deps, record: &AgentRecord) -> Result<(), AgentError> {
    let Some(id) = &record.workload_id else {
        return Ok(());
    };
    deps.egress.allow(&record.agent_id, &record.spec).await?;
    match deps
        .runtime
        .update_resources(id, &spec::build(record, &deps.config))
        .await
    {
        Ok(()) | Err(RuntimeError::NotFound(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Removes the agent's own users (contract section 7), if it has any: after its
/// workload is gone, so no running agent is ever left without its login.
pub async fn revoke(deps: &Deps, agent_id: &str) -> Result<(), AgentError> {
    if let Some(issuer) = &deps.credentials {
        issuer.revoke(agent_id).await?;
    }
    Ok(())
}

/// What [`reissue`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reissued {
    /// The agent's users are made again with the password its workload holds.
    Restored,
    /// The workload's environment holds no login of the agent's own.
    NoOwnLogin,
    /// There is no such workload.
    Gone,
}

/// Makes `agent_id`'s users again with the password its workload `workload` holds (its
/// `RABBITMQ_URL`/`REDIS_URL`), so the running agent logs in again untouched. Used at
/// start, by the running manager's audit (the agent actor's `RestoreLogin`) and when a
/// halt lets go of the agent. Refused (`halted`) while a halt holds it.
pub async fn reissue(
    deps: &Deps,
    issuer: &dyn CredentialIssuer,
    agent_id: &str,
    workload: &str,
) -> Result<Reissued, AgentError> {
    refuse_if_held(deps, agent_id)?;
    let Some(observed) = deps.runtime.inspect(workload).await? else {
        return Ok(Reissued::Gone);
    };
    let var = |name| observed.env_var(name).unwrap_or_default();
    let Some(password) = own_password(agent_id, var(ENV_RABBITMQ_URL), var(ENV_REDIS_URL)) else {
        return Ok(Reissued::NoOwnLogin);
    };
    issuer.issue(agent_id, &password).await?;
    tracing::info!(%agent_id, "made the agent's users again with the password its workload holds");
    Ok(Reissued::Restored)
}

/// A halt holds the agent (section 10): nothing gives it a login back but
/// `halt.release`.
fn refuse_if_held(deps: &Deps, agent_id: &str) -> Result<(), AgentError> {
    let halts = deps.holds.holding(agent_id);
    if halts.is_empty() {
        return Ok(());
    }
    Err(AgentError::refused(
        ErrorCode::Halted,
        format!(
            "agent {agent_id} is halted ({}): no new login until halt.release",
            halts.join(", ")
        ),
    ))
}

/// Takes the workload out for a halt (frozen, or scaled to 0 in swarm mode); nothing to
/// do without one, or when it does not run.
pub async fn freeze(runtime: &dyn Runtime, record: &AgentRecord) -> Result<(), AgentError> {
    match &record.workload_id {
        Some(id) => Ok(runtime.freeze(id).await?),
        None => Ok(()),
    }
}

/// Gives a halted workload back: thawed, then started again when it does not run (made
/// anew when it is gone, with a new login).
pub async fn thaw(deps: &Deps, record: &mut AgentRecord) -> Result<(), AgentError> {
    if let Some(id) = record.workload_id.clone() {
        match deps.runtime.thaw(&id).await {
            Ok(()) | Err(RuntimeError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        if deps
            .runtime
            .inspect(&id)
            .await?
            .is_some_and(|o| o.running && !o.paused)
        {
            return Ok(());
        }
    }
    start(deps, record).await
}

/// The agent's own users made again with the password its workload holds (a halt cut
/// them); a workload without one, or none at all, gets a new login when it is made.
pub async fn restore_login(deps: &Deps, record: &AgentRecord) -> Result<(), AgentError> {
    let (Some(issuer), Some(workload)) = (&deps.credentials, &record.workload_id) else {
        return Ok(());
    };
    reissue(deps, issuer.as_ref(), &record.agent_id, workload)
        .await
        .map(|_| ())
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
async fn remake_and_start(deps: &Deps, record: &mut AgentRecord) -> Result<(), AgentError> {
    record.workload_id = None;
    let id = ensure(deps, record).await?;
    Ok(deps.runtime.start(&id).await?)
}
