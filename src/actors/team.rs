//! The TeamActor: the one writer of team records. Team commands and the news that a
//! member was deleted reach it in the order the supervisor received them, and each runs
//! to completion before the next (`AtomicResponse`), so two commands about one team
//! never interleave. Team commands are rare; one actor for all teams keeps them simple.
//!
//! What the members are is read consistently: the supervisor asks each would-be
//! member's AgentActor for its state when the team command arrives ([`RunTeamCommand`]
//! carries the answers as they come), and an AgentActor answers only after every
//! command it received before, so the check sees each member as the commands sent
//! before the team command left it, and nothing sent after.

use std::time::Duration;

use actix::prelude::*;
use tokio::sync::oneshot;

use crate::context::Deps;
use crate::error::AgentError;
use crate::protocol::{ErrorCode, TeamCommand};
use crate::team::{self, MemberView};

/// How often, and how far apart, the cleanup after a member's deletion is tried while
/// Redis or RabbitMQ is away (reconciliation at the next start finishes it otherwise).
const CLEANUP_ATTEMPTS: u32 = 5;
const CLEANUP_RETRY: Duration = Duration::from_secs(2);

/// Applies one team command, with the would-be members' states as their actors give
/// them. Resolves when the command is done (durable and answered).
#[derive(Message)]
#[rtype(result = "Result<(), AgentError>")]
pub struct RunTeamCommand {
    pub cmd: TeamCommand,
    /// The members' states (orchestrate; empty for disband), taken when the command
    /// arrived.
    pub members: oneshot::Receiver<Vec<MemberView>>,
}

/// Agent `agent_id` of `customer_id` was deleted: it leaves its teams.
#[derive(Message)]
#[rtype(result = "()")]
pub struct MemberGone {
    pub agent_id: String,
    pub customer_id: String,
    /// Tries so far.
    pub attempt: u32,
}

pub struct TeamActor {
    deps: Deps,
}

impl TeamActor {
    pub fn new(deps: Deps) -> Self {
        TeamActor { deps }
    }
}

impl Actor for TeamActor {
    type Context = Context<Self>;
}

impl Handler<RunTeamCommand> for TeamActor {
    type Result = AtomicResponse<Self, Result<(), AgentError>>;

    fn handle(&mut self, msg: RunTeamCommand, _ctx: &mut Self::Context) -> Self::Result {
        let deps = self.deps.clone();
        let RunTeamCommand { cmd, members } = msg;
        let span = tracing::info_span!("team command", team_id = %cmd.team_id, message_id = %cmd.message_id, command = %cmd.kind);
        let fut = async move {
            let members = members.await.map_err(|_| {
                AgentError::refused(
                    ErrorCode::Internal,
                    "the members' states were not delivered; retrying the command",
                )
            })?;
            team::run_command(&deps, &cmd, &members).await
        };
        AtomicResponse::new(Box::pin(
            tracing::Instrument::instrument(fut, span).into_actor(self),
        ))
    }
}

impl Handler<MemberGone> for TeamActor {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, msg: MemberGone, _ctx: &mut Self::Context) -> Self::Result {
        let deps = self.deps.clone();
        let (agent_id, customer_id) = (msg.agent_id.clone(), msg.customer_id.clone());
        let fut = async move { team::member_gone(&deps, &agent_id, &customer_id).await };
        AtomicResponse::new(Box::pin(fut.into_actor(self).map(
            move |result, _act, ctx| {
                let Err(e) = result else { return };
                let attempt = msg.attempt + 1;
                if attempt >= CLEANUP_ATTEMPTS {
                    tracing::warn!(agent_id = %msg.agent_id, error = %e, "could not remove a deleted agent from its teams; the next start does");
                    return;
                }
                tracing::warn!(agent_id = %msg.agent_id, error = %e, attempt, "removing a deleted agent from its teams failed; retrying");
                ctx.notify_later(
                    MemberGone {
                        attempt,
                        ..msg
                    },
                    CLEANUP_RETRY,
                );
            },
        )))
    }
}
