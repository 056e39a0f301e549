//! The HaltActor: the one writer of halts (contract section 10). Halt commands reach it
//! in the order the supervisor received them, each with the agents the supervisor
//! knows (their owners and actors), and each runs to completion before the next
//! (`AtomicResponse`).
//!
//! An engage, in the contract's order: the halt kept (Redis and RabbitMQ) and
//! registered in the shared [`Holds`] (from then on nothing gives its agents a login
//! back, starts or thaws them: see `lifecycle::plan_with_holds`, `workload::ensure`,
//! `workload::reissue`); every agent **cut** at once (`CredentialIssuer::cut`: one
//! bulk call per broker); then each agent **frozen** by its own actor
//! ([`HoldAgent`], behind the commands it received before), which records it `halted`
//! and reports `agent.halted`; then the answer `halt.engaged`, naming every agent that
//! could not be cut or frozen (the others are taken out regardless). A release lets go
//! in the registry first, then each agent gets its login back and returns to its
//! desired state ([`ReleaseAgent`]), then the halt is forgotten and `halt.released`
//! answers.

use std::collections::HashMap;
use std::time::Instant;

use actix::prelude::*;
use serde_json::json;

use crate::actors::agent::{AgentActor, HaltOutcome, HoldAgent, ReleaseAgent};
use crate::context::Deps;
use crate::error::AgentError;
use crate::halt::{self, HaltPlan, Known};
use crate::lifecycle::HoldOrder;
use crate::metrics::events::{CommandHandled, HaltEngaged, HaltsHeld};
use crate::ports::Processed;
use crate::protocol::Event;
use crate::protocol::{error_details, EventKind, HaltAction, HaltCommand, HaltTarget};
use crate::record::halt::{HaltEntry, HaltEventKind, HaltRecord};

/// Applies one halt command. Resolves when it is done (durable and answered).
#[derive(Message)]
#[rtype(result = "Result<(), AgentError>")]
pub struct RunHalt {
    pub cmd: HaltCommand,
    /// Every agent the supervisor knows, with its owner.
    pub known: Vec<Known>,
    /// Their actors.
    pub actors: HashMap<String, Addr<AgentActor>>,
    /// When the command arrived: `cut_ms` and `frozen_ms` are measured from it.
    pub arrived: Instant,
    /// Engaged by the manager itself (a rate over the limit): its answer answers no
    /// command, and the audit trail says `automatic`.
    pub automatic: bool,
}

/// Agent `agent_id` was deleted: it leaves its halts.
#[derive(Message)]
#[rtype(result = "()")]
pub struct HaltMemberGone {
    pub agent_id: String,
}

pub struct HaltActor {
    deps: Deps,
}

impl HaltActor {
    pub fn new(deps: Deps) -> Self {
        HaltActor { deps }
    }
}

impl Actor for HaltActor {
    type Context = Context<Self>;
}

impl Handler<RunHalt> for HaltActor {
    type Result = AtomicResponse<Self, Result<(), AgentError>>;

    fn handle(&mut self, msg: RunHalt, _ctx: &mut Self::Context) -> Self::Result {
        let deps = self.deps.clone();
        let span = tracing::info_span!("halt command", halt_id = %msg.cmd.halt_id, message_id = %msg.cmd.message_id, command = %msg.cmd.kind);
        let fut = async move { run(&deps, msg).await };
        AtomicResponse::new(Box::pin(
            tracing::Instrument::instrument(fut, span).into_actor(self),
        ))
    }
}

impl Handler<HaltMemberGone> for HaltActor {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, msg: HaltMemberGone, _ctx: &mut Self::Context) -> Self::Result {
        let deps = self.deps.clone();
        let fut = async move {
            for halt in deps.holds.forget_agent(&msg.agent_id) {
                if let Err(e) = deps.halts.save_halt(&halt, None, None).await {
                    tracing::warn!(halt_id = %halt.halt_id, agent_id = %msg.agent_id, error = %e, "could not record that a deleted agent left its halt; the next start does");
                }
            }
        };
        AtomicResponse::new(Box::pin(fut.into_actor(self)))
    }
}

async fn run(deps: &Deps, msg: RunHalt) -> Result<(), AgentError> {
    let cmd = &msg.cmd;
    if cmd.message_id_given {
        if let Some(answer) = deps.records.processed(&cmd.message_id).await? {
            tracing::info!(halt_id = %cmd.halt_id, message_id = %cmd.message_id, "halt command already applied; answering again");
            return Ok(deps.events.publish(&answer).await?);
        }
    }
    let existing = deps.holds.halt(&cmd.halt_id);
    let team = match &cmd.action {
        HaltAction::Engage { scope, .. } => match &scope.target {
            HaltTarget::TeamId(team_id) => deps.teams.load_team(team_id).await?,
            _ => None,
        },
        HaltAction::Release { .. } => None,
    };
    match halt::plan(
        cmd,
        existing.as_ref(),
        &msg.known,
        team.as_ref(),
        chrono::Utc::now(),
    ) {
        HaltPlan::Refuse {
            code,
            message,
            agent_ids,
        } => {
            tracing::warn!(code = code.as_str(), %message, "halt command refused");
            crate::metrics::emit(CommandHandled {
                command: cmd.kind.routing_key(),
                outcome: code.as_str(),
            });
            let event = Event::for_halt(
                EventKind::Error,
                &cmd.halt_id,
                &cmd.customer_id,
                Some(&cmd.message_id),
                "failed",
                (!agent_ids.is_empty()).then_some(agent_ids),
                error_details(Some(cmd.kind.routing_key()), code, &message),
            );
            answer(deps, cmd, event).await
        }
        HaltPlan::Engage { mut halt, again } => {
            halt.automatic |= msg.automatic;
            engage(deps, &msg, halt, again).await
        }
        HaltPlan::Release {
            halt,
            reason,
            requested_by,
        } => release(deps, &msg, halt, &reason, &requested_by).await,
    }
}

/// The halts' gauges, as the registry of holds stands.
fn held(deps: &Deps) {
    crate::metrics::emit(HaltsHeld {
        halts: deps.holds.all().len(),
        agents: deps.holds.held_agents(),
    });
}

/// Remembers `event` as the command's answer, then publishes it.
async fn answer(deps: &Deps, cmd: &HaltCommand, event: Event) -> Result<(), AgentError> {
    let events = [event];
    if cmd.message_id_given {
        deps.records
            .save_processed(Processed {
                message_id: &cmd.message_id,
                answer: &events,
            })
            .await?;
    }
    Ok(deps.events.publish(&events).await?)
}

async fn engage(
    deps: &Deps,
    msg: &RunHalt,
    halt: HaltRecord,
    again: bool,
) -> Result<(), AgentError> {
    let cmd = &msg.cmd;
    // Kept first: a manager that dies from here on is followed by one that holds the
    // same agents (and the command's redelivery engages it again).
    let entry = (!again).then(|| HaltEntry {
        kind: if msg.automatic {
            HaltEventKind::Automatic
        } else {
            HaltEventKind::Engaged
        },
        halt: &halt,
        requested_by: &halt.requested_by,
        reason: &halt.reason,
    });
    deps.halts.save_halt(&halt, entry, None).await?;
    deps.holds.engage(&halt);
    let (cut_failed, cut_ms) = cut(deps, &halt.agent_ids, msg.arrived).await;
    let order = HoldOrder {
        halt_id: halt.halt_id.clone(),
        reason: halt.reason.clone(),
        requested_by: halt.requested_by.clone(),
        arrived: msg.arrived,
        cut_ms,
    };
    let outcomes = each(&msg.actors, &halt.agent_ids, |addr| {
        addr.send(HoldAgent(order.clone()))
    })
    .await;
    let frozen_ms = outcomes
        .iter()
        .filter_map(|(_, o)| match o {
            HaltOutcome::Done { frozen_ms } => *frozen_ms,
            _ => None,
        })
        .max()
        .unwrap_or(cut_ms);
    let mut failed: Vec<serde_json::Value> = cut_failed
        .iter()
        .map(|(id, why)| json!({"agent_id": id, "step": "cut", "message": why}))
        .collect();
    failed.extend(outcomes.iter().filter_map(|(id, o)| match o {
        HaltOutcome::Failed(why) => Some(json!({"agent_id": id, "step": "freeze", "message": why})),
        _ => None,
    }));
    if failed.is_empty() {
        tracing::info!(
            agents = halt.agent_ids.len(),
            cut_ms,
            frozen_ms,
            "halt engaged"
        );
    } else {
        tracing::warn!(
            agents = halt.agent_ids.len(),
            failed = failed.len(),
            cut_ms,
            frozen_ms,
            "halt engaged; some agents could not be taken out fully"
        );
    }
    if !msg.automatic {
        crate::metrics::emit(CommandHandled {
            command: cmd.kind.routing_key(),
            outcome: "ok",
        });
    }
    if !again {
        crate::metrics::emit(HaltEngaged {
            automatic: msg.automatic,
        });
    }
    held(deps);
    let event = Event::for_halt(
        EventKind::HaltEngaged,
        &halt.halt_id,
        &cmd.customer_id,
        (!msg.automatic).then_some(cmd.message_id.as_str()),
        "engaged",
        Some(halt.agent_ids.clone()),
        json!({
            "cut_ms": cut_ms,
            "frozen_ms": frozen_ms,
            "failed": failed,
            "scope": halt.scope.to_json(),
            "reason": halt.reason,
            "requested_by": halt.requested_by,
            "again": again,
            "automatic": msg.automatic,
        }),
    );
    answer(deps, cmd, event).await
}

/// Cuts every agent at once; the ones that could not be, with why, and the time from
/// the command's arrival until it was done.
async fn cut(deps: &Deps, agent_ids: &[String], arrived: Instant) -> (Vec<(String, String)>, u64) {
    let failed = match &deps.credentials {
        Some(issuer) if !agent_ids.is_empty() => issuer
            .cut(agent_ids)
            .await
            .into_iter()
            .map(|(id, e)| (id, e.to_string()))
            .collect(),
        // Shared credentials: nothing of the agent's own to cut (docs/SECURITY.md).
        _ => Vec::new(),
    };
    (failed, arrived.elapsed().as_millis() as u64)
}

/// Sends each agent's actor its order, all at once, and gathers what became of each.
async fn each<F, R>(
    actors: &HashMap<String, Addr<AgentActor>>,
    agent_ids: &[String],
    order: F,
) -> Vec<(String, HaltOutcome)>
where
    F: Fn(&Addr<AgentActor>) -> R,
    R: std::future::Future<Output = Result<HaltOutcome, MailboxError>>,
{
    let sends = agent_ids.iter().map(|id| {
        let sent = actors.get(id).map(&order);
        async move {
            let outcome = match sent {
                Some(sent) => sent.await.unwrap_or_else(|e| {
                    HaltOutcome::Failed(format!("agent actor unavailable: {e}"))
                }),
                None => HaltOutcome::Gone,
            };
            (id.clone(), outcome)
        }
    });
    futures_util::future::join_all(sends).await
}

async fn release(
    deps: &Deps,
    msg: &RunHalt,
    halt: HaltRecord,
    reason: &str,
    requested_by: &str,
) -> Result<(), AgentError> {
    let cmd = &msg.cmd;
    deps.holds.release(&halt.halt_id);
    let outcomes = each(&msg.actors, &halt.agent_ids, |addr| {
        addr.send(ReleaseAgent {
            halt_id: halt.halt_id.clone(),
            reason: reason.to_string(),
            requested_by: requested_by.to_string(),
        })
    })
    .await;
    let still_held: Vec<&String> = halt
        .agent_ids
        .iter()
        .filter(|id| deps.holds.is_held(id))
        .collect();
    let failed: Vec<serde_json::Value> = outcomes
        .iter()
        .filter_map(|(id, o)| match o {
            HaltOutcome::Failed(why) => Some(json!({"agent_id": id, "message": why})),
            _ => None,
        })
        .collect();
    deps.halts
        .delete_halt(
            &halt,
            Some(HaltEntry {
                kind: HaltEventKind::Released,
                halt: &halt,
                requested_by,
                reason,
            }),
            None,
        )
        .await?;
    tracing::info!(
        agents = halt.agent_ids.len(),
        still_held = still_held.len(),
        failed = failed.len(),
        "halt released"
    );
    crate::metrics::emit(CommandHandled {
        command: cmd.kind.routing_key(),
        outcome: "ok",
    });
    held(deps);
    let event = Event::for_halt(
        EventKind::HaltReleased,
        &halt.halt_id,
        &cmd.customer_id,
        Some(&cmd.message_id),
        "released",
        Some(halt.agent_ids.clone()),
        json!({
            "reason": reason,
            "requested_by": requested_by,
            "still_held": still_held,
            "failed": failed,
        }),
    );
    answer(deps, cmd, event).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::fakes::{Fakes, Fault};
    use crate::protocol::{AgentStatus, DesiredState, HaltCommandKind, HaltScope};
    use crate::record::status::{transition, Cause};
    use crate::record::AgentRecord;
    use crate::runtime::spec;

    /// A running agent of customer `c1`, stored, with its actor.
    async fn running_agent(f: &Fakes, id: &str) -> (Addr<AgentActor>, String) {
        let mut record =
            AgentRecord::new(id, crate::protocol::sample_spec(), DesiredState::Running);
        let container = f.runtime.add(spec::build(&record, &f.deps.config), true);
        record.workload_id = Some(container.clone());
        transition(&mut record, Cause::Started);
        f.store.put(record.clone());
        let deps = f.deps.clone();
        let id = id.to_string();
        (
            AgentActor::create(move |_| AgentActor::new(id, Some(record), deps)),
            container,
        )
    }

    /// A halt that meets a Docker error for one agent still takes every other one out,
    /// cuts them all, and says which one failed and at which step.
    #[actix_rt::test]
    async fn a_failure_for_one_agent_leaves_the_others_halted_and_is_named() {
        let f = Fakes::new(Config::defaults(), 0);
        let customer = crate::protocol::sample_spec().customer_id;
        let (a, _) = running_agent(&f, "a1").await;
        let (b, b_container) = running_agent(&f, "a2").await;
        f.runtime.fail_for("pause", &b_container, Fault::Docker);
        let cmd = HaltCommand {
            message_id: "m-halt".into(),
            message_id_given: true,
            kind: HaltCommandKind::Engage,
            halt_id: "h1".into(),
            customer_id: customer.clone(),
            action: HaltAction::Engage {
                scope: HaltScope {
                    target: HaltTarget::CustomerId(customer.clone()),
                    agent_types: None,
                },
                reason: "test".into(),
                requested_by: "ops".into(),
            },
        };
        let agent_type = crate::protocol::sample_spec().agent_type;
        let known = ["a1", "a2"]
            .map(|id| Known {
                agent_id: id.into(),
                customer_id: customer.clone(),
                agent_type,
            })
            .to_vec();
        let actors = HashMap::from([("a1".to_string(), a), ("a2".to_string(), b)]);
        run(
            &f.deps,
            RunHalt {
                cmd,
                known,
                actors,
                arrived: Instant::now(),
                automatic: false,
            },
        )
        .await
        .expect("answered");
        let answer = f
            .sink
            .published()
            .into_iter()
            .find(|e| e.event == EventKind::HaltEngaged)
            .expect("halt.engaged");
        let failed = answer.details["failed"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(failed.len(), 1, "{}", answer.details);
        assert_eq!(failed[0]["agent_id"], "a2");
        assert_eq!(failed[0]["step"], "freeze");
        assert!(f.deps.holds.is_held("a1") && f.deps.holds.is_held("a2"));
        assert_eq!(
            f.store.record("a1").map(|r| r.status()),
            Some(AgentStatus::Halted)
        );
        let cuts: Vec<String> = f
            .journal
            .entries()
            .into_iter()
            .filter(|e| e.starts_with("credentials cut"))
            .collect();
        assert_eq!(cuts.len(), 2, "both cut: {cuts:?}");
    }
}
