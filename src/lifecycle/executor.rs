//! Doing what a [`Plan`] says, over the ports in [`Deps`]: each step's effect is made
//! durable (Docker, then Redis) before the event that reports it is published, and the
//! last step also records the command's message id with its answer, so that a
//! redelivered command is answered again and applied once.
//!
//! A failed step is handled by its plan's word ([`OnFailure`]), then the error policy
//! ([`AgentError::disposition`]) says whether it is answered with `agent.error` or
//! retried (a command requeued by the consumer while Redis or RabbitMQ is away).
//!
//! Commands and what the manager does by itself ([`Automatic`]: self-healing, a delete
//! left half done) run through the same executor; [`Trigger`] says which.

use serde_json::{json, Value};

use super::plan::{
    plan_automatic, plan_with_holds, Automatic, OnFailure, Plan, Rules, RuntimeCall, Step,
};
use super::workload;
use crate::context::Deps;
use crate::error::{AgentError, Disposition, Origin};
use crate::metrics::events::{AgentHealed, CommandHandled};
use crate::ports::Processed;
use crate::protocol::{error_details, AgentStatus, Command, ErrorCode, Event, EventKind};
use crate::record::status::{transition, Cause};
use crate::record::{AgentRecord, PendingCommand};

/// What set a plan going.
#[derive(Debug, Clone, Copy)]
pub enum Trigger<'a> {
    /// A command: its events answer it (`correlation_id`), its answer is remembered under
    /// its message id when one was given, and a failure names it.
    Command(&'a Command),
    /// The manager by itself, on the agent whose record it holds. `answers`: the message
    /// id of the command it finishes (a half-done delete's), if any.
    Automatic {
        work: &'a Automatic,
        agent_id: &'a str,
        customer_id: &'a str,
        answers: Option<&'a str>,
    },
}

impl<'a> Trigger<'a> {
    fn agent_id(&self) -> &'a str {
        match self {
            Trigger::Command(cmd) => &cmd.agent_id,
            Trigger::Automatic { agent_id, .. } => agent_id,
        }
    }

    fn customer_id(&self) -> &'a str {
        match self {
            Trigger::Command(cmd) => &cmd.customer_id,
            Trigger::Automatic { customer_id, .. } => customer_id,
        }
    }

    /// The `correlation_id` of its events.
    fn correlation(&self) -> Option<&'a str> {
        match self {
            Trigger::Command(cmd) => Some(&cmd.message_id),
            Trigger::Automatic { answers, .. } => *answers,
        }
    }

    /// The message id its answer is remembered under (a redelivery is answered from it).
    fn remembered_as(&self) -> Option<&'a str> {
        match self {
            Trigger::Command(cmd) => cmd.message_id_given.then_some(cmd.message_id.as_str()),
            Trigger::Automatic { answers, .. } => *answers,
        }
    }

    /// The command an `agent.error` names (`details.command`); `None` for the manager's
    /// own work.
    fn command(&self) -> Option<&'static str> {
        match self {
            Trigger::Command(cmd) => Some(cmd.kind.routing_key()),
            Trigger::Automatic { .. } => None,
        }
    }

    fn origin(&self) -> Origin {
        match self {
            Trigger::Command(_) => Origin::Command,
            Trigger::Automatic { work, .. } => work.origin(),
        }
    }
}

/// Applies `cmd` to the agent whose current record is `record`. Returns the record
/// afterwards (`None` when the agent does not exist) and whether the command is done:
/// `Ok` when it took effect or was answered with `agent.error`; `Err` only when Redis or
/// RabbitMQ (or its management API) is away and the command must be retried: then the
/// record returned is the one the command started from, so that the retry plans from
/// what was stored, not from a half-applied plan (an update's new spec without the
/// workload it never got).
pub async fn run_command(
    deps: &Deps,
    record: Option<AgentRecord>,
    cmd: &Command,
) -> (Option<AgentRecord>, Result<(), AgentError>) {
    if cmd.message_id_given {
        match deps.records.processed(&cmd.message_id).await {
            Ok(Some(answer)) => {
                tracing::info!(agent_id = %cmd.agent_id, message_id = %cmd.message_id, "command already applied; answering again");
                let replayed = deps.events.publish(&answer).await.map_err(AgentError::from);
                return (record, replayed);
            }
            Ok(None) => {}
            Err(e) => return (record, Err(e.into())),
        }
    }
    let mut record = record;
    let holding = deps.holds.holding(&cmd.agent_id);
    let blocking = match &cmd.action {
        crate::protocol::Action::Create { spec, .. } => {
            deps.holds
                .blocking_create(&cmd.agent_id, &spec.customer_id, spec.agent_type)
        }
        _ => None,
    };
    let plan = plan_with_holds(
        cmd,
        record.as_ref(),
        &Rules::of(&deps.config),
        &holding,
        blocking.as_deref(),
    );
    // A refused command changes nothing, not even the generation that fences off
    // work scheduled before it (an automatic restart).
    if !plan.refuses() {
        if let Some(r) = record.as_mut() {
            r.generation += 1;
        }
    }
    let (record, result) = execute(deps, Trigger::Command(cmd), record, &plan).await;
    let outcome = match &result {
        Err(_) => "retry".to_string(),
        Ok(answer) => answer
            .iter()
            .rev()
            .find(|e| e.event == EventKind::Error)
            .map_or("ok".to_string(), |error| {
                error.details["code"]
                    .as_str()
                    .unwrap_or("error")
                    .to_string()
            }),
    };
    crate::metrics::emit(CommandHandled {
        command: cmd.kind.routing_key(),
        outcome: &outcome,
    });
    (record, result.map(|_| ()))
}

/// Does what the manager decided by itself (`work`) to the agent of `record`. Returns
/// the record afterwards (`None`: the agent is gone) and the outcome: `Ok` with the
/// events that reported it when it took effect or was answered with `agent.error`;
/// `Err` when the error policy says to retry (the next look, the next start).
pub async fn run_automatic(
    deps: &Deps,
    record: AgentRecord,
    work: Automatic,
) -> (Option<AgentRecord>, Result<Vec<Event>, AgentError>) {
    let plan = plan_automatic(&work, &record, &Rules::of(&deps.config));
    let (agent_id, customer_id) = (record.agent_id.clone(), record.spec.customer_id.clone());
    let answers = match work {
        Automatic::FinishDelete => record.pending.as_ref().map(|p| p.message_id.clone()),
        _ => None,
    };
    let trigger = Trigger::Automatic {
        work: &work,
        agent_id: &agent_id,
        customer_id: &customer_id,
        answers: answers.as_deref(),
    };
    execute(deps, trigger, Some(record), &plan).await
}

/// Runs `plan` for `trigger` from `record`: the record afterwards and, when done, the
/// events that answered it. On a failure to retry the record returned is the one it
/// started from, so that the retry plans from what was stored, not from a half-applied
/// plan (an update's new spec without the workload it never got).
async fn execute(
    deps: &Deps,
    trigger: Trigger<'_>,
    record: Option<AgentRecord>,
    plan: &Plan,
) -> (Option<AgentRecord>, Result<Vec<Event>, AgentError>) {
    let before = record.clone();
    let mut run = Executor {
        deps,
        trigger,
        record,
        answer: Vec::new(),
        resync_quota: false,
        before_begin: None,
    };
    let result = match run.steps(&plan.steps).await {
        Ok(()) => Ok(()),
        Err(e) => {
            if run.resync_quota {
                if let Some(r) = &run.record {
                    deps.quotas.resync(r).await;
                }
            }
            match e.disposition(trigger.origin()) {
                Disposition::Retry(_) => Err(e),
                Disposition::Answer => run.fail(e).await,
            }
        }
    };
    // Discarded on the way (a create that left nothing behind) stays discarded.
    let record = match &result {
        Err(_) if run.record.is_some() => before,
        _ => run.record,
    };
    (record, result.map(|()| run.answer))
}

/// Answers a command for an agent this manager does not know.
pub async fn answer_unknown(deps: &Deps, cmd: &Command) -> Result<(), AgentError> {
    run_command(deps, None, cmd).await.1
}

/// One plan being carried out.
struct Executor<'a> {
    deps: &'a Deps,
    trigger: Trigger<'a>,
    record: Option<AgentRecord>,
    /// Every event published for this command so far, remembered as its answer.
    answer: Vec<Event>,
    /// Quota was reserved for an existing agent: a failure gives back what its record
    /// does not hold.
    resync_quota: bool,
    /// The status before the last [`Step::Begin`], restored by [`OnFailure::Keep`].
    before_begin: Option<AgentStatus>,
}

impl Executor<'_> {
    /// The record, which the plan only touches where the agent exists.
    fn rec(&mut self) -> Result<&mut AgentRecord, AgentError> {
        self.record
            .as_mut()
            .ok_or_else(|| AgentError::refused(ErrorCode::Internal, "agent record vanished"))
    }

    async fn steps(&mut self, steps: &[Step]) -> Result<(), AgentError> {
        for step in steps {
            self.step(step).await?;
        }
        Ok(())
    }

    async fn step(&mut self, step: &Step) -> Result<(), AgentError> {
        match step {
            Step::Refuse { code, message } => {
                return Err(AgentError::refused(*code, message.clone()))
            }
            Step::ReserveQuota(spec) => {
                self.deps
                    .quotas
                    .reserve(self.trigger.agent_id(), spec)
                    .await?;
                self.resync_quota = self.record.is_some();
            }
            Step::RevokeCredentials => {
                let agent_id = self.rec()?.agent_id.clone();
                workload::revoke(self.deps, &agent_id).await?;
            }
            Step::ReleaseQuota => {
                let customer = self.rec()?.spec.customer_id.clone();
                self.deps
                    .quotas
                    .release(self.trigger.agent_id(), &customer)
                    .await?;
            }
            Step::NewRecord { spec, desired } => {
                self.record = Some(AgentRecord::new(
                    self.trigger.agent_id(),
                    spec.clone(),
                    *desired,
                ));
                self.report(None, Value::Null, false).await?;
            }
            Step::SetDesired(desired) => self.rec()?.desired_state = *desired,
            Step::Begin(operation) => {
                let before = transition(self.rec()?, Cause::Begin(*operation));
                self.before_begin = Some(before);
                self.report(None, Value::Null, false).await?;
            }
            Step::Runtime { call, on_failure } => {
                if let Err(e) = self.runtime(call).await {
                    self.undo(*on_failure).await?;
                    return Err(e);
                }
            }
            Step::ForgetWorkload => self.rec()?.workload_id = None,
            Step::SetSpec(spec) => self.rec()?.spec = spec.clone(),
            Step::Transition(cause) => {
                transition(self.rec()?, *cause);
            }
            Step::ClearError => self.rec()?.last_error = None,
            Step::NoteStop {
                requested_by,
                reason,
            } => {
                let record = self.rec()?;
                record.stopped_by = requested_by.clone();
                record.stop_reason = reason.clone();
            }
            Step::ForgetStop => {
                let record = self.rec()?;
                record.stopped_by = None;
                record.stop_reason = None;
            }
            Step::Report { event, details } => {
                self.report(Some(*event), details.clone(), false).await?
            }
            Step::Answer { event, details } => {
                self.report(Some(*event), details.clone(), true).await?
            }
            Step::Forget { event, details } => self.forget(*event, details.clone()).await?,
            Step::KeepLastLogs => {
                let record = self.rec()?;
                if record.last_logs.is_empty() {
                    if let Some(id) = record.workload_id.clone() {
                        let logs = crate::health::last_logs(self.deps, &id).await;
                        self.rec()?.last_logs = logs;
                    }
                }
            }
            Step::Hold(order) => {
                let record = self.rec()?;
                if !record.halt_ids.contains(&order.halt_id) {
                    record.halt_ids.push(order.halt_id.clone());
                }
                record.halted_by = Some(order.requested_by.clone());
                record.halt_reason = Some(order.reason.clone());
                record.halted_at = Some(chrono::Utc::now());
            }
            Step::Unhold { halt_id } => {
                let record = self.rec()?;
                record.halt_ids.retain(|h| h != halt_id);
                if record.halt_ids.is_empty() {
                    record.halted_by = None;
                    record.halt_reason = None;
                    record.halted_at = None;
                }
            }
            Step::Save => self.report(None, Value::Null, true).await?,
            Step::ReportHalted(order) => {
                let details = json!({
                    "halt_id": order.halt_id,
                    "reason": order.reason,
                    "requested_by": order.requested_by,
                    "cut_ms": order.cut_ms,
                    "frozen_ms": order.arrived.elapsed().as_millis() as u64,
                });
                self.report(Some(EventKind::Halted), details, true).await?
            }
            Step::Healed(reason) => {
                let record = self.rec()?;
                record.restart_count += 1;
                crate::metrics::emit(AgentHealed {
                    reason: reason.as_str(),
                });
                tracing::info!(agent_id = %record.agent_id, reason = reason.as_str(), restarts = record.restart_count, "agent restarted by the manager");
                let details = json!({
                    "reason": reason.as_str(),
                    "restart_count": record.restart_count,
                    "automatic": true,
                    "last_error": record.last_error.as_deref().unwrap_or_default(),
                    "logs": record.last_logs,
                });
                self.report(Some(EventKind::Restarted), details, true)
                    .await?
            }
        }
        Ok(())
    }

    async fn runtime(&mut self, call: &RuntimeCall) -> Result<(), AgentError> {
        let deps = self.deps;
        let runtime = deps.runtime.as_ref();
        match call {
            RuntimeCall::EnsureImage(image) => Ok(runtime.ensure_image(image).await?),
            RuntimeCall::Create => workload::ensure(deps, self.rec()?).await.map(|_| ()),
            RuntimeCall::Start => workload::start(deps, self.rec()?).await,
            RuntimeCall::Stop { timeout_s } => {
                workload::stop(runtime, self.rec()?, *timeout_s).await
            }
            RuntimeCall::Restart { timeout_s } => {
                workload::restart(deps, self.rec()?, *timeout_s).await
            }
            RuntimeCall::UpdateResources(spec) => {
                let mut resized = self.rec()?.clone();
                resized.spec = spec.clone();
                workload::update_resources(deps, &resized).await
            }
            RuntimeCall::Remove { timeout_s } => {
                workload::remove(deps, self.rec()?, *timeout_s).await
            }
            RuntimeCall::Pause => workload::pause(runtime, self.rec()?).await,
            RuntimeCall::Unpause => workload::unpause(runtime, self.rec()?).await,
            RuntimeCall::Freeze => workload::freeze(runtime, self.rec()?).await,
            RuntimeCall::Thaw => workload::thaw(deps, self.rec()?).await,
            RuntimeCall::RestoreLogin => workload::restore_login(deps, self.rec()?).await,
        }
    }

    /// What a failed runtime call leaves behind, as the plan said.
    async fn undo(&mut self, on_failure: OnFailure) -> Result<(), AgentError> {
        match on_failure {
            OnFailure::Keep => {
                if let (Some(before), Some(record)) = (self.before_begin, self.record.as_mut()) {
                    transition(record, Cause::Restored(before));
                }
            }
            OnFailure::MarkFailed => {
                if let Some(record) = self.record.as_mut() {
                    transition(record, Cause::Failed);
                }
            }
            OnFailure::Discard => {
                // Nothing of the agent is left behind when its workload cannot be made.
                if let Some(record) = self.record.take() {
                    let name = crate::runtime::spec::container_name(&record.agent_id);
                    let _ = self.deps.runtime.remove(&name, 0).await;
                    if let Err(e) = self.deps.egress.forget(&record.agent_id).await {
                        tracing::warn!(agent_id = %record.agent_id, error = %e, "could not remove the egress rules of a create that failed; the next start removes them");
                    }
                    // Users whose password went into no workload; one left behind (its
                    // service away) is removed by the next start's reconciliation.
                    if let Err(e) = workload::revoke(self.deps, &record.agent_id).await {
                        tracing::warn!(agent_id = %record.agent_id, error = %e, "could not remove the users of a create that failed; the next start removes them");
                    }
                    self.deps.records.delete(&record, None).await?;
                    self.deps
                        .quotas
                        .release(&record.agent_id, &record.spec.customer_id)
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// An event of this command, with the agent's status and workload as they stand.
    /// Without a record (an unknown agent, or one this command removed or refused to a
    /// foreign customer) the status is `failed` and the customer the command's.
    fn event(&self, kind: EventKind, details: Value) -> Event {
        let correlation = self.trigger.correlation();
        match &self.record {
            Some(r) => r.event(kind, correlation, details),
            None => Event::new(
                kind,
                self.trigger.agent_id(),
                self.trigger.customer_id(),
                correlation,
                AgentStatus::Failed.as_str(),
                None,
                details,
            ),
        }
    }

    /// The processed marker of this command, once its whole answer is known.
    fn processed(&self) -> Option<Processed<'_>> {
        self.trigger.remembered_as().map(|message_id| Processed {
            message_id,
            answer: &self.answer,
        })
    }

    /// Saves the record (with the command pending unless `last`; with the processed
    /// marker when `last`), then publishes the event.
    async fn report(
        &mut self,
        kind: Option<EventKind>,
        details: Value,
        last: bool,
    ) -> Result<(), AgentError> {
        let events: Vec<Event> = kind.map(|k| self.event(k, details)).into_iter().collect();
        self.answer.extend(events.iter().cloned());
        let trigger = self.trigger;
        if let Some(rec) = self.record.as_mut() {
            rec.updated_at = chrono::Utc::now();
            // A command marks itself half done until its last step; the manager's own
            // work leaves the mark of a command a dead manager left half done alone (its
            // redelivery finishes it, and answers it in full).
            if let Trigger::Command(cmd) = trigger {
                rec.pending = (!last).then(|| PendingCommand {
                    command: cmd.kind.routing_key().to_string(),
                    message_id: cmd.message_id.clone(),
                });
            }
        }
        let processed = if last { self.processed() } else { None };
        match &self.record {
            Some(rec) => self.deps.records.save(rec, &events, processed).await?,
            None => {
                if let Some(p) = processed {
                    self.deps.records.save_processed(p).await?
                }
            }
        }
        self.deps.events.publish(&events).await?;
        Ok(())
    }

    /// Removes every key of the agent with the answer remembered, then publishes it.
    async fn forget(&mut self, kind: EventKind, details: Value) -> Result<(), AgentError> {
        let event = self.event(kind, details);
        self.answer.push(event.clone());
        let record = self.rec()?.clone();
        self.deps.records.delete(&record, self.processed()).await?;
        self.record = None;
        self.deps.events.publish(&[event]).await?;
        Ok(())
    }

    /// Answers a failure with `agent.error`; the agent (if any) records why.
    async fn fail(&mut self, err: AgentError) -> Result<(), AgentError> {
        let code = err.code();
        let message = match self.trigger {
            Trigger::Command(cmd) => {
                let message = err.to_string();
                tracing::warn!(agent_id = %cmd.agent_id, message_id = %cmd.message_id, command = %cmd.kind, code = code.as_str(), %message, "command failed");
                message
            }
            Trigger::Automatic { agent_id, work, .. } => {
                tracing::warn!(%agent_id, ?work, error = %err, "the manager's own work on the agent failed");
                match work {
                    Automatic::Heal(_) => format!("automatic restart failed: {err}"),
                    Automatic::Hold(order) => {
                        format!(
                            "halt {}: the agent could not be frozen: {err}",
                            order.halt_id
                        )
                    }
                    Automatic::Release { halt_id, .. } => {
                        format!("halt {halt_id}: the agent could not be given back: {err}")
                    }
                    Automatic::FinishDelete => err.to_string(),
                }
            }
        };
        let details = error_details(self.trigger.command(), code, &message);
        if code == ErrorCode::Forbidden {
            // Another customer's command leaves no trace on the owner's agent (record,
            // event stream) and its answer tells nothing about it (docs/SECURITY.md).
            let owner = self.record.take();
            let answered = self.report(Some(EventKind::Error), details, true).await;
            self.record = owner;
            return answered;
        }
        if let Some(rec) = self.record.as_mut() {
            rec.last_error = Some(message);
        }
        self.report(Some(EventKind::Error), details, true).await
    }
}
