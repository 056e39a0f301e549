//! The AgentActor: owns one agent. Its mailbox orders that agent's commands (each runs
//! to completion before the next starts, so they never interleave), and its timer
//! looks at the container between commands.

use std::time::Duration;

use actix::prelude::*;
use tracing::Instrument;

use crate::error::AgentError;
use crate::health::{self, LastReport};
use crate::lifecycle::{self, Deps};
use crate::protocol::Command;
use crate::store::AgentRecord;

/// Applies one command; answers whether the agent still exists afterwards.
#[derive(Message)]
#[rtype(result = "Result<Applied, AgentError>")]
pub struct Apply(pub Command);

/// The outcome of [`Apply`] for the supervisor.
#[derive(Debug, Clone, Copy)]
pub struct Applied {
    /// False once the agent is deleted (or its create failed): the actor can retire.
    pub exists: bool,
}

/// Stops the actor (sent by the supervisor once the agent is gone and idle).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Retire;

pub struct AgentActor {
    /// The agent's id, fixed for the actor's life.
    agent_id: String,
    /// The agent's record; `None` before a create and after a delete.
    record: Option<AgentRecord>,
    deps: Deps,
    /// What the last `agent.health` said.
    last_report: LastReport,
}

impl AgentActor {
    pub fn new(agent_id: String, record: Option<AgentRecord>, deps: Deps) -> Self {
        AgentActor {
            agent_id,
            record,
            deps,
            last_report: LastReport::default(),
        }
    }

    /// Looks at the container; runs in `wait` so no command interleaves with it.
    fn check_health(&mut self, ctx: &mut Context<Self>) {
        let Some(record) = self.record.clone() else {
            return;
        };
        let deps = self.deps.clone();
        let last = self.last_report.clone();
        let fut = async move { health::check(&deps, record, last).await };
        ctx.wait(fut.into_actor(self).map(|(record, last, result), act, _| {
            if let Err(e) = result {
                tracing::warn!(agent_id = %act.agent_id, error = %e, "health check failed");
            }
            // A command cannot have run meanwhile (wait), so the record is current.
            if act.record.is_some() {
                act.record = Some(record);
                act.last_report = last;
            }
        }));
    }
}

impl Actor for AgentActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let every = Duration::from_secs(self.deps.config.health.check_interval_s);
        ctx.run_interval(every, |act, ctx| act.check_health(ctx));
    }
}

impl Handler<Apply> for AgentActor {
    type Result = AtomicResponse<Self, Result<Applied, AgentError>>;

    fn handle(&mut self, msg: Apply, _ctx: &mut Self::Context) -> Self::Result {
        let deps = self.deps.clone();
        let record = self.record.clone();
        let cmd = msg.0;
        let span = tracing::info_span!("command", agent_id = %cmd.agent_id, message_id = %cmd.message_id, command = %cmd.kind);
        let fut = async move { lifecycle::apply(&deps, record, &cmd).await }.instrument(span);
        AtomicResponse::new(Box::pin(fut.into_actor(self).map(
            |(record, result), act, _| {
                act.record = record;
                // The next health check reports whatever changed.
                act.last_report.status = act.record.as_ref().map(|r| r.status);
                result.map(|()| Applied {
                    exists: act.record.is_some(),
                })
            },
        )))
    }
}

impl Handler<Retire> for AgentActor {
    type Result = ();

    fn handle(&mut self, _: Retire, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
