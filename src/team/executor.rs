//! Doing what a [`TeamPlan`] says, over [`Deps`]: the team's record is made durable
//! first, then each member is sent its `agent:<agent_id>:team` message (confirmed),
//! then the answer is remembered under the command's message id and published. A
//! redelivered command is answered again from Redis; one cut short is done again (its
//! team found as it left it: members told again, which is harmless).
//!
//! While Redis or RabbitMQ is away nothing is answered: the error goes back to the
//! consumer, which requeues the command.

use std::collections::HashSet;

use serde_json::{json, Map, Value};

use super::plan::{after_loss, plan, AfterLoss, MemberView, TeamPlan};
use crate::context::Deps;
use crate::error::AgentError;
use crate::metrics::events::CommandHandled;
use crate::ports::Processed;
use crate::protocol::team::{routing_key, TeamMessage};
use crate::protocol::{error_details, Event, EventKind, TeamCommand};
use crate::record::team::TeamRecord;

/// The `status` of team events: where the team stands.
const ORCHESTRATED: &str = "orchestrated";
const DISBANDED: &str = "disbanded";
/// The `status` of an `agent.error` answering a team command.
const FAILED: &str = "failed";

/// Applies a team command, with `members` as their agent actors saw them when the
/// command was received. `Ok` when it took effect or was answered with `agent.error`;
/// `Err` only when Redis or RabbitMQ is away and it must be retried.
pub async fn run_command(
    deps: &Deps,
    cmd: &TeamCommand,
    members: &[MemberView],
) -> Result<(), AgentError> {
    if cmd.message_id_given {
        if let Some(answer) = deps.records.processed(&cmd.message_id).await? {
            tracing::info!(team_id = %cmd.team_id, message_id = %cmd.message_id, "team command already applied; answering again");
            return Ok(deps.events.publish(&answer).await?);
        }
    }
    let existing = deps.teams.load_team(&cmd.team_id).await?;
    let decided = plan(cmd, existing.as_ref(), members);
    let outcome = match &decided {
        TeamPlan::Refuse { code, .. } => code.as_str(),
        _ => "ok",
    };
    let result = carry_out(deps, cmd, decided).await;
    crate::metrics::emit(CommandHandled {
        command: cmd.kind.routing_key(),
        outcome: if result.is_ok() { outcome } else { "retry" },
    });
    result
}

async fn carry_out(deps: &Deps, cmd: &TeamCommand, decided: TeamPlan) -> Result<(), AgentError> {
    let correlation = Some(cmd.message_id.as_str());
    match decided {
        TeamPlan::Refuse {
            code,
            message,
            unfit,
        } => {
            tracing::warn!(team_id = %cmd.team_id, message_id = %cmd.message_id, command = %cmd.kind, code = code.as_str(), %message, "team command refused");
            let mut details = error_details(Some(cmd.kind.routing_key()), code, &message);
            if !unfit.is_empty() {
                let named: Map<String, Value> = unfit
                    .iter()
                    .map(|(id, u)| (id.clone(), json!(u.as_str())))
                    .collect();
                details["members"] = Value::Object(named);
            }
            let event = Event::for_team(
                EventKind::Error,
                &cmd.team_id,
                &cmd.customer_id,
                correlation,
                FAILED,
                None,
                details,
            );
            answer(deps, cmd, None, event).await
        }
        TeamPlan::Form { team, existing } => {
            if !existing {
                deps.teams.save_team(&team, None).await?;
            }
            tell(
                deps,
                &team.agent_ids,
                &TeamMessage::formed(&team.team_id, &team.agent_ids, &team.orchestrator_config),
            )
            .await?;
            tracing::info!(team_id = %team.team_id, members = ?team.agent_ids, existing, "team orchestrated");
            let event = Event::for_team(
                EventKind::TeamOrchestrated,
                &team.team_id,
                &team.customer_id,
                correlation,
                ORCHESTRATED,
                Some(team.agent_ids.clone()),
                json!({"existing": existing, "orchestrator_config": team.orchestrator_config}),
            );
            answer(deps, cmd, None, event).await
        }
        TeamPlan::Disband { team } => {
            tell(
                deps,
                &team.agent_ids,
                &TeamMessage::disbanded(&team.team_id),
            )
            .await?;
            let event = Event::for_team(
                EventKind::TeamDisbanded,
                &team.team_id,
                &team.customer_id,
                correlation,
                DISBANDED,
                Some(team.agent_ids.clone()),
                json!({"reason": "disbanded"}),
            );
            tracing::info!(team_id = %team.team_id, "team disbanded");
            answer(deps, cmd, Some(&team), event).await
        }
    }
}

/// Remembers `event` as the command's answer (with the team's removal when `remove`
/// names it, in the same transaction), then publishes it.
async fn answer(
    deps: &Deps,
    cmd: &TeamCommand,
    remove: Option<&TeamRecord>,
    event: Event,
) -> Result<(), AgentError> {
    let events = [event];
    let processed = cmd.message_id_given.then_some(Processed {
        message_id: &cmd.message_id,
        answer: &events,
    });
    match (remove, processed) {
        (Some(team), processed) => deps.teams.delete_team(team, processed).await?,
        (None, Some(p)) => deps.records.save_processed(p).await?,
        (None, None) => {}
    }
    deps.events.publish(&events).await?;
    Ok(())
}

/// Sends `message` to each of `members` (`agent:<agent_id>:team`), each confirmed.
async fn tell(deps: &Deps, members: &[String], message: &TeamMessage) -> Result<(), AgentError> {
    let body = message.to_json();
    for agent_id in members {
        deps.events
            .publish_message(&routing_key(agent_id), &body)
            .await?;
    }
    Ok(())
}

/// Agent `agent_id` of `customer_id` was deleted: it leaves each of the customer's teams
/// it was in. A team left with enough members is kept with the others, who are told
/// the new membership; one left with fewer than two ends (`team.disbanded`, reason
/// `too_few_members`, no correlation id), and the one left is told.
pub async fn member_gone(deps: &Deps, agent_id: &str, customer_id: &str) -> Result<(), AgentError> {
    let gone = [agent_id.to_string()];
    for team in deps.teams.teams(Some(customer_id)).await? {
        lose(deps, &team, &gone).await?;
    }
    Ok(())
}

/// At start, before commands are taken: every team loses the members that are no longer
/// agents (`alive`: every agent the manager adopted), as [`member_gone`] does. Returns
/// how many teams changed.
pub async fn reconcile(deps: &Deps, alive: &HashSet<String>) -> Result<usize, AgentError> {
    let mut changed = 0;
    for team in deps.teams.teams(None).await? {
        let gone: Vec<String> = team
            .agent_ids
            .iter()
            .filter(|a| !alive.contains(*a))
            .cloned()
            .collect();
        if gone.is_empty() {
            continue;
        }
        tracing::info!(team_id = %team.team_id, gone = ?gone, "team members vanished while the manager was down");
        lose(deps, &team, &gone).await?;
        changed += 1;
    }
    Ok(changed)
}

/// What losing `gone` does to `team`, done.
async fn lose(deps: &Deps, team: &TeamRecord, gone: &[String]) -> Result<(), AgentError> {
    match after_loss(team, gone) {
        AfterLoss::Untouched => Ok(()),
        AfterLoss::Shrunk(shrunk) => {
            deps.teams.save_team(&shrunk, None).await?;
            let message = TeamMessage::formed(
                &shrunk.team_id,
                &shrunk.agent_ids,
                &shrunk.orchestrator_config,
            );
            tell(deps, &shrunk.agent_ids, &message).await?;
            tracing::info!(team_id = %shrunk.team_id, gone = ?gone, members = ?shrunk.agent_ids, "members left the team");
            Ok(())
        }
        AfterLoss::Dissolved { remaining } => {
            tell(deps, &remaining, &TeamMessage::disbanded(&team.team_id)).await?;
            deps.teams.delete_team(team, None).await?;
            let event = Event::for_team(
                EventKind::TeamDisbanded,
                &team.team_id,
                &team.customer_id,
                None,
                DISBANDED,
                Some(team.agent_ids.clone()),
                json!({"reason": "too_few_members", "gone": gone}),
            );
            deps.events.publish(&[event]).await?;
            tracing::info!(team_id = %team.team_id, gone = ?gone, "team disbanded: too few members left");
            Ok(())
        }
    }
}
