//! Reconciliation at start, before any command is consumed: the agents of this manager
//! instance are adopted from Redis and Docker. Docker labels and environment are ground
//! truth; a record Redis lost is rebuilt from them (a paused container's agent is
//! `paused`). Teams then lose the members that are no longer agents.
//!
//! With per-agent credentials ([`logins`]), an agent's users exist exactly while its
//! workload does: users Redis or RabbitMQ lost are made again with the password the
//! workload's environment holds (no restart), users of agents without a workload are
//! removed, and a workload holding no login of its own is replaced. While the manager
//! runs, the supervisor's audit puts back lost users the same way ([`reissue`]).
//!
//! Every adopted agent's egress rules are then made to match its record, and rules of
//! agents that are gone are removed (contract section 11).

use std::collections::{HashMap, HashSet};

use futures_util::StreamExt;

use crate::context::Deps;
use crate::error::AgentError;
use crate::ports::CredentialIssuer;
use crate::protocol::{AgentStatus, DesiredState};
use crate::record::status::{transition, Cause};
use crate::record::AgentRecord;
use crate::runtime::spec::{spec_from_container, LABEL_AGENT_ID};
use crate::runtime::Observed;

/// Agents whose users are looked at and restored at once at start.
const LOGIN_CONCURRENCY: usize = 16;

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
    hold(deps, &mut adopted).await?;
    // Every agent's egress rules as its record says, before anything of it runs again;
    // rules of agents no longer here go (section 11).
    deps.egress.sync(&adopted).await?;
    if let Some(issuer) = &deps.credentials {
        logins(deps, issuer.as_ref(), &mut adopted).await?;
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

/// The halts engaged before this start hold their agents again (contract section 10: a
/// manager `kill -9`, a Redis `FLUSHALL` give nothing back): read from Redis and
/// RabbitMQ (each copy gets what it lost), registered, every held agent cut again (a
/// manager may have died before it cut them) and its record `halted` (rebuilt records
/// learn it here). Each agent's first look freezes it again if it runs.
async fn hold(deps: &Deps, adopted: &mut [AgentRecord]) -> Result<(), AgentError> {
    let halts = deps.halts.load_halts().await?;
    let alive: HashSet<String> = adopted.iter().map(|r| r.agent_id.clone()).collect();
    for mut halt in halts {
        let before = halt.agent_ids.len();
        halt.agent_ids.retain(|a| alive.contains(a));
        if halt.agent_ids.len() != before {
            deps.halts.save_halt(&halt, None, None).await?;
        }
        deps.holds.engage(&halt);
    }
    let mut held = Vec::new();
    for record in adopted.iter_mut() {
        let holding = deps.holds.holding(&record.agent_id);
        if holding.is_empty() {
            continue;
        }
        if record.halt_ids != holding {
            if let Some(halt) = holding.first().and_then(|h| deps.holds.halt(h)) {
                record.halted_by = Some(halt.requested_by.clone());
                record.halt_reason = Some(halt.reason.clone());
                record.halted_at = record.halted_at.or(Some(halt.engaged_at));
            }
            record.halt_ids = holding;
            transition(record, Cause::Halted);
            deps.records.save(record, &[], None).await?;
        }
        held.push(record.agent_id.clone());
    }
    crate::metrics::emit(crate::metrics::events::HaltsHeld {
        halts: deps.holds.all().len(),
        agents: deps.holds.held_agents(),
    });
    if let (Some(issuer), false) = (&deps.credentials, held.is_empty()) {
        for (agent_id, e) in issuer.cut(&held).await {
            tracing::warn!(%agent_id, error = %e, "could not cut a halted agent again at start");
        }
        tracing::info!(halted = held.len(), "halted agents held again");
    }
    Ok(())
}

/// What became of one adopted agent's login.
enum Login {
    /// Its users were incomplete and are made again with its workload's password.
    Restored,
    /// Its workload holds no login of its own and was removed: the agent's first look
    /// finds it gone and self-healing makes a new one, with a new login.
    Replaced,
    /// Its workload vanished meanwhile.
    Gone,
}

/// The agents' users after adoption: an agent's users exist exactly while its workload
/// does. Users of this installation whose agent has no workload (deleted, never made,
/// gone) are removed; a workload whose users are missing or incomplete (Redis or
/// RabbitMQ restarted without their data, a manager killed while making them) gets them
/// back with the password in its own environment, so it keeps running untouched; a
/// workload whose environment holds no login of its own (made in `shared` mode or by a
/// version without per-agent credentials) is removed, and made anew with its own login
/// by self-healing (desired running) or the next start.
pub async fn logins(
    deps: &Deps,
    issuer: &dyn CredentialIssuer,
    adopted: &mut [AgentRecord],
) -> Result<(), AgentError> {
    let census = issuer.census().await?;
    let incomplete: Vec<(String, String)> = adopted
        .iter()
        // A halted agent's users are gone on purpose: only halt.release makes them again.
        .filter(|r| !census.complete.contains(&r.agent_id) && !deps.holds.is_held(&r.agent_id))
        .filter_map(|r| Some((r.agent_id.clone(), r.workload_id.clone()?)))
        .collect();
    let outcomes: Vec<(String, Result<Login, AgentError>)> = futures_util::stream::iter(incomplete)
        .map(|(agent_id, workload)| async move {
            let outcome = restore(deps, issuer, &agent_id, &workload).await;
            (agent_id, outcome)
        })
        .buffer_unordered(LOGIN_CONCURRENCY)
        .collect()
        .await;
    let (mut restored, mut replaced) = (0, 0);
    for (agent_id, outcome) in outcomes {
        match outcome? {
            Login::Restored => restored += 1,
            Login::Replaced | Login::Gone => {
                replaced += 1;
                if let Some(r) = adopted.iter_mut().find(|r| r.agent_id == agent_id) {
                    r.workload_id = None;
                }
            }
        }
    }
    let with_workload: HashSet<&str> = adopted
        .iter()
        .filter(|r| r.workload_id.is_some())
        .map(|r| r.agent_id.as_str())
        .collect();
    let mut removed = 0;
    for agent_id in census
        .owned
        .iter()
        .filter(|a| !with_workload.contains(a.as_str()))
    {
        issuer.revoke(agent_id).await?;
        tracing::info!(%agent_id, "removed the users of an agent that has no workload");
        removed += 1;
    }
    tracing::info!(
        restored,
        replaced,
        removed,
        complete = census.complete.len(),
        "agents' credentials reconciled"
    );
    Ok(())
}

/// Makes `agent_id`'s users again with the password its workload holds, or removes a
/// workload that holds none of its own.
async fn restore(
    deps: &Deps,
    issuer: &dyn CredentialIssuer,
    agent_id: &str,
    workload: &str,
) -> Result<Login, AgentError> {
    match reissue(deps, issuer, agent_id, workload).await? {
        Reissued::Restored => Ok(Login::Restored),
        Reissued::Gone => Ok(Login::Gone),
        Reissued::NoOwnLogin => {
            tracing::warn!(%agent_id, workload, "the agent's workload holds no login of its own (made with shared credentials); replacing it");
            deps.runtime
                .remove(workload, deps.config.agents.stop_timeout_s)
                .await?;
            Ok(Login::Replaced)
        }
    }
}

pub use crate::lifecycle::workload::{reissue, Reissued};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::credentials::{AgentLogin, AgentUrls};
    use crate::fakes::Fakes;
    use crate::protocol::sample_spec;
    use crate::runtime::spec;

    /// An agent whose running workload a manager made, with or without its own login;
    /// returns the password the workload holds.
    fn running(f: &Fakes, id: &str, own_login: bool) -> Option<String> {
        let config = f.deps.config.clone();
        let mut r = AgentRecord::new(id, sample_spec(), DesiredState::Running);
        transition(&mut r, Cause::Adopted { running: true });
        let mut container = spec::build(&r, &config);
        let mut password = None;
        if own_login {
            let login = AgentLogin::fresh(id).unwrap();
            let urls = AgentUrls::new(
                config.agent_rabbitmq_url(),
                config.agent_redis_url(),
                &login,
            )
            .unwrap();
            container = container.with_login(&urls, &login.serial);
            password = Some(login.password.expose().to_string());
        }
        r.workload_id = Some(f.runtime.add(container, true));
        f.store.put(r);
        password
    }

    #[tokio::test]
    async fn users_a_service_lost_are_made_again_without_touching_the_workload() {
        let f = Fakes::new(Config::defaults(), 0);
        let lost = running(&f, "lost", true).unwrap();
        let kept = running(&f, "kept", true).unwrap();
        let half = running(&f, "half", true).unwrap();
        f.issuer.put("kept", &kept);
        // Redis restarted without its ACLs: RabbitMQ still has the user.
        f.issuer.put("half", &half);
        f.issuer.lose("half");
        // An agent deleted while no manager ran, and one never made.
        f.issuer.put("deleted", "x");
        f.journal.clear();
        let adoption = adopt(&f.deps).await.expect("adopted");
        assert_eq!(adoption.agents.len(), 3);
        assert_eq!(f.issuer.password_of("lost"), Some(lost));
        assert_eq!(f.issuer.password_of("kept"), Some(kept));
        assert_eq!(f.issuer.password_of("half"), Some(half));
        assert_eq!(f.issuer.agents(), ["half", "kept", "lost"]);
        for call in ["create", "start", "stop", "restart", "remove"] {
            assert!(
                f.journal.matching(&format!("runtime {call}")).is_empty(),
                "no workload was touched: {:?}",
                f.journal.entries()
            );
        }
        assert!(f.journal.position("credentials issue kept").is_none());
        assert!(adoption.agents.iter().all(|a| a.workload_id.is_some()));
        // Every adopted agent's egress rules, and only theirs (section 11).
        assert_eq!(
            f.journal.matching("egress "),
            vec!["egress sync half,kept,lost"]
        );
    }

    #[tokio::test]
    async fn a_workload_without_a_login_of_its_own_is_replaced() {
        let f = Fakes::new(Config::defaults(), 0);
        assert!(running(&f, "old", false).is_none());
        let adoption = adopt(&f.deps).await.expect("adopted");
        assert!(f.runtime.names().is_empty(), "its workload is removed");
        let old = adoption
            .agents
            .iter()
            .find(|a| a.agent_id == "old")
            .expect("the agent stays");
        assert_eq!(old.workload_id, None, "made anew by self-healing");
        assert!(f.issuer.agents().is_empty());
    }

    #[tokio::test]
    async fn users_of_agents_without_a_workload_are_removed() {
        let f = Fakes::new(Config::defaults(), 0);
        let mut r = AgentRecord::new("stopped", sample_spec(), DesiredState::Stopped);
        transition(&mut r, Cause::Adopted { running: false });
        f.store.put(r);
        f.issuer
            .put("stopped", "its container was removed behind our back");
        adopt(&f.deps).await.expect("adopted");
        assert!(f.issuer.agents().is_empty());
    }

    #[tokio::test]
    async fn without_the_users_list_the_start_fails_and_says_why() {
        let f = Fakes::new(Config::defaults(), 0);
        f.issuer.fail("census");
        match adopt(&f.deps).await {
            Err(AgentError::Credentials(_)) => {}
            Err(other) => panic!("not a credentials error: {other}"),
            Ok(_) => panic!("adopted without knowing the users"),
        }
    }
}
