//! What each command does to one agent: plain async functions over the runtime, the
//! store and the publisher. The AgentActor runs them one at a time per agent.
//!
//! Every step makes its effect durable (Docker, then Redis) before the event that
//! reports it is published, and the last step also records the command's message id
//! with its answer, so a redelivered command is answered again and applied once.

use serde_json::{json, Value};

use crate::config::{Config, DeploymentMode};
use crate::context::Deps;

use crate::error::{AgentError, RuntimeError};
use crate::protocol::{
    error_details, Action, AgentSpec, AgentStatus, Command, DesiredState, ErrorCode, Event,
    EventKind,
};
use crate::runtime::spec;
use crate::store::{AgentRecord, Processed};

/// How an update is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdatePlan {
    /// Nothing changes.
    Unchanged,
    /// Only memory or CPU limits change: applied to the running container.
    InPlace,
    /// The environment or image changes: a new container replaces the old one.
    Replace,
}

/// The agent runs as it should: a start has nothing to ask of the runtime.
fn already_running(rec: &AgentRecord) -> bool {
    rec.status == AgentStatus::Running
        && rec.desired_state == DesiredState::Running
        && rec.container_id.is_some()
}

/// Decides how to go from `old` to `new`.
pub fn plan_update(old: &AgentSpec, new: &AgentSpec) -> UpdatePlan {
    if old == new {
        UpdatePlan::Unchanged
    } else if spec::spec_hash(old) == spec::spec_hash(new) {
        UpdatePlan::InPlace
    } else {
        UpdatePlan::Replace
    }
}

/// One command being applied to one agent.
struct Apply<'a> {
    deps: &'a Deps,
    cmd: &'a Command,
    record: Option<AgentRecord>,
    /// Every event published for this command so far, remembered as its answer.
    answer: Vec<Event>,
}

/// Applies `cmd` to the agent whose current record is `record`. Returns the record
/// afterwards (`None` when the agent does not exist) and whether the command is done:
/// `Ok` when it took effect or was answered with `agent.error`; `Err` only when Redis or
/// RabbitMQ is away and the command must be retried.
pub async fn apply(
    deps: &Deps,
    record: Option<AgentRecord>,
    cmd: &Command,
) -> (Option<AgentRecord>, Result<(), AgentError>) {
    if cmd.message_id_given {
        match deps.store.processed(&cmd.message_id).await {
            Ok(Some(answer)) => {
                tracing::info!(agent_id = %cmd.agent_id, message_id = %cmd.message_id, "command already applied; answering again");
                let r = deps
                    .publisher
                    .publish(&answer)
                    .await
                    .map_err(AgentError::from);
                return (record, r);
            }
            Ok(None) => {}
            Err(e) => return (record, Err(e.into())),
        }
    }
    let mut record = record;
    if let Some(r) = record.as_mut() {
        r.generation += 1;
    }
    let mut run = Apply {
        deps,
        cmd,
        record,
        answer: Vec::new(),
    };
    let result = match run.execute().await {
        Ok(()) => Ok(()),
        Err(e) if e.is_transient_infrastructure() => Err(e),
        Err(e) => run.fail(e).await,
    };
    let outcome = match (
        &result,
        run.answer
            .iter()
            .rev()
            .find(|e| e.event == EventKind::Error),
    ) {
        (Err(_), _) => "retry",
        (Ok(()), Some(error)) => error.details["code"].as_str().unwrap_or("error"),
        (Ok(()), None) => "ok",
    };
    crate::metrics::inc(
        "agent_manager_commands_total",
        &[("command", cmd.kind.routing_key()), ("outcome", outcome)],
    );
    (run.record, result)
}

/// Answers a command for an agent this manager does not know.
pub async fn answer_unknown(deps: &Deps, cmd: &Command) -> Result<(), AgentError> {
    apply(deps, None, cmd).await.1
}

impl Apply<'_> {
    fn config(&self) -> &Config {
        &self.deps.config
    }

    /// The record, which the caller has ensured exists.
    fn rec(&mut self) -> Result<&mut AgentRecord, AgentError> {
        self.record
            .as_mut()
            .ok_or_else(|| AgentError::refused(ErrorCode::Internal, "agent record vanished"))
    }

    fn event(&self, kind: EventKind, details: Value) -> Event {
        let (status, container_id, customer) = match &self.record {
            Some(r) => (
                r.status.as_str(),
                r.container_id.as_deref(),
                r.spec.customer_id.as_str(),
            ),
            None => (
                AgentStatus::Failed.as_str(),
                None,
                self.cmd.customer_id.as_str(),
            ),
        };
        Event::new(
            kind,
            &self.cmd.agent_id,
            customer,
            Some(&self.cmd.message_id),
            status,
            container_id,
            details,
        )
    }

    /// Saves the record (and, when `last`, the processed marker), then publishes.
    async fn report(
        &mut self,
        kind: Option<EventKind>,
        details: Value,
        last: bool,
    ) -> Result<(), AgentError> {
        let events: Vec<Event> = kind.map(|k| self.event(k, details)).into_iter().collect();
        self.answer.extend(events.iter().cloned());
        let processed = (last && self.cmd.message_id_given).then_some(Processed {
            message_id: &self.cmd.message_id,
            answer: &self.answer,
        });
        if let Some(rec) = self.record.as_mut() {
            rec.updated_at = chrono::Utc::now();
            if last {
                rec.pending_command.clear();
                rec.pending_message_id.clear();
            } else {
                rec.pending_command = self.cmd.kind.routing_key().to_string();
                rec.pending_message_id = self.cmd.message_id.clone();
            }
        }
        match &self.record {
            Some(rec) => self.deps.store.save(rec, &events, processed).await?,
            None => {
                if let Some(p) = processed {
                    self.deps.store.save_processed(p).await?
                }
            }
        }
        self.deps.publisher.publish(&events).await?;
        Ok(())
    }

    /// Answers a failed command with `agent.error`; the agent (if any) records why.
    async fn fail(&mut self, err: AgentError) -> Result<(), AgentError> {
        let code = err.code();
        let message = err.to_string();
        tracing::warn!(agent_id = %self.cmd.agent_id, message_id = %self.cmd.message_id, command = %self.cmd.kind, code = code.as_str(), %message, "command failed");
        let details = error_details(Some(self.cmd.kind.routing_key()), code, &message);
        if code == ErrorCode::Forbidden {
            // Another customer's command leaves no trace on the owner's agent (record,
            // event stream) and its answer tells nothing about it (docs/SECURITY.md).
            let owner = self.record.take();
            let result = self.report(Some(EventKind::Error), details, true).await;
            self.record = owner;
            return result;
        }
        if let Some(rec) = self.record.as_mut() {
            rec.last_error = message.clone();
        }
        self.report(Some(EventKind::Error), details, true).await
    }

    /// The agent's record if it exists and belongs to the command's customer.
    fn require_owned(&self) -> Result<(), AgentError> {
        match &self.record {
            None => Err(AgentError::refused(
                ErrorCode::NotFound,
                format!("agent {} does not exist", self.cmd.agent_id),
            )),
            Some(r) if r.spec.customer_id != self.cmd.customer_id => Err(AgentError::refused(
                ErrorCode::Forbidden,
                format!("agent {} belongs to another customer", self.cmd.agent_id),
            )),
            Some(_) => Ok(()),
        }
    }

    fn check_gpus(&self, spec: &AgentSpec) -> Result<(), AgentError> {
        if spec.resources.gpus > 0 && self.config().deployment_mode != DeploymentMode::Gpu {
            return Err(AgentError::refused(
                ErrorCode::GpuUnavailable,
                format!(
                    "{} GPU(s) requested but GPU mode is not enabled (DEPLOYMENT_MODE=gpu)",
                    spec.resources.gpus
                ),
            ));
        }
        Ok(())
    }

    async fn execute(&mut self) -> Result<(), AgentError> {
        match &self.cmd.action {
            Action::Create { spec, auto_start } => self.create(spec.clone(), *auto_start).await,
            Action::Update { patch } => {
                self.require_owned()?;
                let next = patch.apply(&self.rec()?.spec);
                crate::quota::reserve(self.deps, &self.cmd.agent_id, &next).await?;
                let result = self.update(next).await;
                if result.is_err() {
                    crate::quota::resync(self.deps, self.record.as_ref()).await;
                }
                result
            }
            Action::Start => {
                self.require_owned()?;
                self.start(EventKind::Started).await
            }
            Action::Stop { timeout_s } => {
                self.require_owned()?;
                self.stop(*timeout_s).await
            }
            Action::Restart { timeout_s } => {
                self.require_owned()?;
                self.restart(*timeout_s).await
            }
            Action::Delete { timeout_s } => {
                self.require_owned()?;
                self.delete(*timeout_s).await
            }
        }
    }

    async fn create(&mut self, spec: AgentSpec, auto_start: bool) -> Result<(), AgentError> {
        self.check_gpus(&spec)?;
        if let Some(existing) = &self.record {
            if existing.spec.customer_id != self.cmd.customer_id {
                return Err(AgentError::refused(
                    ErrorCode::Forbidden,
                    format!("agent {} belongs to another customer", self.cmd.agent_id),
                ));
            }
            if existing.spec != spec {
                return Err(AgentError::refused(
                    ErrorCode::AlreadyExists,
                    format!(
                        "agent {} already exists with a different spec; use agent.update",
                        self.cmd.agent_id
                    ),
                ));
            }
            // Same spec: answer again. A create cut short (no container yet, or created
            // but never started) is finished first.
            // The same create redelivered after a manager died in it (the record names
            // it as pending) is finished even if the agent converged meanwhile.
            let redelivered = existing.pending_message_id == self.cmd.message_id;
            let unfinished = redelivered
                || matches!(existing.status, AgentStatus::Creating)
                || (matches!(existing.status, AgentStatus::Created)
                    && existing.desired_state == DesiredState::Running);
            if !unfinished {
                return self
                    .report(Some(EventKind::Created), json!({"existing": true}), true)
                    .await;
            }
        } else {
            crate::quota::reserve(self.deps, &self.cmd.agent_id, &spec).await?;
            let desired = if auto_start {
                DesiredState::Running
            } else {
                DesiredState::Stopped
            };
            self.record = Some(AgentRecord::new(&self.cmd.agent_id, spec, desired));
            self.report(None, Value::Null, false).await?;
        }

        if let Err(e) = self.ensure_container().await {
            // Nothing of the agent is left behind when its container cannot be made.
            if let Some(rec) = self.record.take() {
                let _ = self
                    .deps
                    .runtime
                    .remove(&spec::container_name(&rec.agent_id), 0)
                    .await;
                self.deps.store.delete(&rec, None).await?;
                crate::quota::release(self.deps, &rec.agent_id, &rec.spec.customer_id).await?;
            }
            return Err(e);
        }
        let rec = self.rec()?;
        rec.status = AgentStatus::Created;
        let desired = rec.desired_state;
        let image = rec.spec.image.clone();
        if desired == DesiredState::Stopped {
            return self
                .report(Some(EventKind::Created), json!({"image": image}), true)
                .await;
        }
        self.report(Some(EventKind::Created), json!({"image": image}), false)
            .await?;
        self.start(EventKind::Started).await
    }

    /// Creates the agent's container if the record has none; keeps its id.
    async fn ensure_container(&mut self) -> Result<String, AgentError> {
        let config = self.deps.config.clone();
        let rec = self.rec()?;
        if let Some(id) = rec.container_id.clone() {
            return Ok(id);
        }
        let cspec = spec::build(rec, &config);
        let id = self.deps.runtime.create(&cspec).await?;
        self.rec()?.container_id = Some(id.clone());
        Ok(id)
    }

    /// Starts the container (creating it if it is gone) and reports `kind`.
    async fn start(&mut self, kind: EventKind) -> Result<(), AgentError> {
        let rec = self.rec()?;
        if already_running(rec) {
            // Nothing for Docker to do (it would answer 304). The actor's record follows
            // every die/oom event and look, which reach its mailbox ahead of any later
            // command; an exit that races this answer is healed like any other crash.
            rec.last_error.clear();
            return self.report(Some(kind), json!({}), true).await;
        }
        rec.desired_state = DesiredState::Running;
        let id = self.ensure_container().await?;
        match self.deps.runtime.start(&id).await {
            Err(RuntimeError::NotFound(_)) => {
                // The container vanished behind our back: make a new one.
                self.rec()?.container_id = None;
                let id = self.ensure_container().await?;
                self.start_or_fail(&id).await?;
            }
            other => self.mark_failed_on(other).await?,
        }
        let rec = self.rec()?;
        rec.status = AgentStatus::Running;
        rec.last_error.clear();
        self.report(Some(kind), json!({}), true).await
    }

    async fn start_or_fail(&mut self, id: &str) -> Result<(), AgentError> {
        let r = self.deps.runtime.start(id).await;
        self.mark_failed_on(r).await
    }

    /// On a runtime failure, marks the agent failed before passing the error on.
    async fn mark_failed_on(&mut self, r: Result<(), RuntimeError>) -> Result<(), AgentError> {
        if let Err(e) = r {
            if let Ok(rec) = self.rec() {
                rec.status = AgentStatus::Failed;
            }
            return Err(e.into());
        }
        Ok(())
    }

    async fn stop(&mut self, timeout_s: u32) -> Result<(), AgentError> {
        let rec = self.rec()?;
        rec.desired_state = DesiredState::Stopped;
        if let Some(id) = rec.container_id.clone() {
            match self.deps.runtime.stop(&id, timeout_s).await {
                Ok(()) => {}
                Err(RuntimeError::NotFound(_)) => self.rec()?.container_id = None,
                Err(e) => return self.mark_failed_on(Err(e)).await,
            }
        }
        let rec = self.rec()?;
        rec.status = AgentStatus::Stopped;
        rec.last_error.clear();
        self.report(
            Some(EventKind::Stopped),
            json!({"timeout_s": timeout_s}),
            true,
        )
        .await
    }

    async fn restart(&mut self, timeout_s: u32) -> Result<(), AgentError> {
        let rec = self.rec()?;
        rec.desired_state = DesiredState::Running;
        let Some(id) = rec.container_id.clone() else {
            return self.start(EventKind::Restarted).await;
        };
        match self.deps.runtime.restart(&id, timeout_s).await {
            Err(RuntimeError::NotFound(_)) => {
                self.rec()?.container_id = None;
                return self.start(EventKind::Restarted).await;
            }
            other => self.mark_failed_on(other).await?,
        }
        let rec = self.rec()?;
        rec.status = AgentStatus::Running;
        rec.last_error.clear();
        self.report(
            Some(EventKind::Restarted),
            json!({"timeout_s": timeout_s}),
            true,
        )
        .await
    }

    async fn update(&mut self, next: AgentSpec) -> Result<(), AgentError> {
        self.check_gpus(&next)?;
        let config = self.deps.config.clone();
        let runtime = self.deps.runtime.clone();
        let rec = self.rec()?;
        let plan = plan_update(&rec.spec, &next);
        let changed = changed_fields(&rec.spec, &next);
        match plan {
            UpdatePlan::Unchanged => {}
            UpdatePlan::InPlace => {
                let mut updated = rec.clone();
                updated.spec = next.clone();
                if let Some(id) = rec.container_id.clone() {
                    let cspec = spec::build(&updated, &config);
                    match runtime.update_resources(&id, &cspec).await {
                        Ok(()) | Err(RuntimeError::NotFound(_)) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                self.rec()?.spec = next;
            }
            UpdatePlan::Replace => {
                if next.image != rec.spec.image {
                    runtime.ensure_image(&next.image).await?;
                }
                let old_id = rec.container_id.clone();
                let desired = rec.desired_state;
                if let Some(id) = old_id {
                    let timeout = config.agents.stop_timeout_s;
                    runtime.remove(&id, timeout).await?;
                }
                let rec = self.rec()?;
                rec.container_id = None;
                rec.spec = next;
                rec.status = AgentStatus::Created;
                let r = self.ensure_container().await.map(|_| ());
                if let Err(e) = r {
                    self.rec()?.status = AgentStatus::Failed;
                    return Err(e);
                }
                if desired == DesiredState::Running {
                    let id = self.ensure_container().await?;
                    self.start_or_fail(&id).await?;
                    self.rec()?.status = AgentStatus::Running;
                } else {
                    self.rec()?.status = AgentStatus::Stopped;
                }
            }
        }
        self.rec()?.last_error.clear();
        let details = json!({
            "changed": changed,
            "replaced": plan == UpdatePlan::Replace,
            "in_place": plan == UpdatePlan::InPlace,
        });
        self.report(Some(EventKind::Updated), details, true).await
    }

    async fn delete(&mut self, timeout_s: u32) -> Result<(), AgentError> {
        let rec = self.rec()?;
        rec.status = AgentStatus::Deleting;
        let id = rec
            .container_id
            .clone()
            .unwrap_or_else(|| spec::container_name(&rec.agent_id));
        self.report(None, Value::Null, false).await?;
        self.deps.runtime.remove(&id, timeout_s).await?;
        let customer = self.rec()?.spec.customer_id.clone();
        crate::quota::release(self.deps, &self.cmd.agent_id, &customer).await?;
        let event = self.event(EventKind::Deleted, json!({"timeout_s": timeout_s}));
        self.answer.push(event.clone());
        let rec = self.rec()?.clone();
        let processed = self.cmd.message_id_given.then_some(Processed {
            message_id: &self.cmd.message_id,
            answer: &self.answer,
        });
        self.deps.store.delete(&rec, processed).await?;
        self.record = None;
        self.deps.publisher.publish(&[event]).await?;
        Ok(())
    }
}

/// Finishes a delete that a manager which died left half done (the record says
/// `deleting`): removes the container and every key, records the answer under the
/// command's message id (so its redelivery is answered, not refused), and publishes
/// `agent.deleted`.
pub async fn finish_delete(deps: &Deps, record: AgentRecord) -> Result<(), AgentError> {
    let id = record
        .container_id
        .clone()
        .unwrap_or_else(|| spec::container_name(&record.agent_id));
    deps.runtime
        .remove(&id, deps.config.agents.stop_timeout_s)
        .await?;
    let correlation =
        (!record.pending_message_id.is_empty()).then_some(record.pending_message_id.as_str());
    let event = Event::new(
        EventKind::Deleted,
        &record.agent_id,
        &record.spec.customer_id,
        correlation,
        AgentStatus::Deleting.as_str(),
        record.container_id.as_deref(),
        json!({"finished_after_restart": true}),
    );
    let answer = [event];
    let processed = correlation.map(|message_id| Processed {
        message_id,
        answer: &answer,
    });
    deps.store.delete(&record, processed).await?;
    deps.publisher.publish(&answer).await?;
    tracing::info!(agent_id = %record.agent_id, "finished a delete left half done");
    Ok(())
}

/// Restarts an agent by itself (it crashed, or stayed unhealthy): starts its container
/// again (a new one if it is gone) and reports `agent.restarted` with no correlation id.
/// On failure the agent is marked failed and `agent.error` (`docker_error`) says why.
pub async fn self_restart(
    deps: &Deps,
    mut record: AgentRecord,
    reason: crate::health::Reason,
) -> (AgentRecord, Result<(), AgentError>) {
    // The exit's last words travel with agent.restarted; read them now if the look
    // that saw the exit could not.
    if record.last_logs.is_empty() {
        if let Some(id) = record.container_id.clone() {
            record.last_logs = crate::health::last_logs(deps, &id).await;
        }
    }
    let outcome: Result<(), AgentError> = async {
        let id = match record.container_id.clone() {
            Some(id) => id,
            None => {
                let id = deps
                    .runtime
                    .create(&spec::build(&record, &deps.config))
                    .await?;
                record.container_id = Some(id.clone());
                id
            }
        };
        let r = match reason {
            crate::health::Reason::Unhealthy => {
                deps.runtime
                    .restart(&id, deps.config.agents.stop_timeout_s)
                    .await
            }
            crate::health::Reason::Crashed => deps.runtime.start(&id).await,
        };
        if let Err(RuntimeError::NotFound(_)) = r {
            let id = deps
                .runtime
                .create(&spec::build(&record, &deps.config))
                .await?;
            record.container_id = Some(id.clone());
            deps.runtime.start(&id).await?;
        } else {
            r?;
        }
        Ok(())
    }
    .await;
    let events = match &outcome {
        Ok(()) => {
            record.status = AgentStatus::Running;
            record.restart_count += 1;
            crate::metrics::inc(
                "agent_manager_restarts_total",
                &[("reason", reason.as_str())],
            );
            tracing::info!(agent_id = %record.agent_id, reason = reason.as_str(), restarts = record.restart_count, "agent restarted by the manager");
            vec![Event::new(
                EventKind::Restarted,
                &record.agent_id,
                &record.spec.customer_id,
                None,
                record.status.as_str(),
                record.container_id.as_deref(),
                json!({
                    "reason": reason.as_str(),
                    "restart_count": record.restart_count,
                    "automatic": true,
                    "last_error": record.last_error,
                    "logs": record.last_logs,
                }),
            )]
        }
        Err(e) => {
            record.status = AgentStatus::Failed;
            record.last_error = format!("automatic restart failed: {e}");
            tracing::warn!(agent_id = %record.agent_id, error = %e, "automatic restart failed");
            vec![Event::new(
                EventKind::Error,
                &record.agent_id,
                &record.spec.customer_id,
                None,
                record.status.as_str(),
                record.container_id.as_deref(),
                error_details(None, e.code(), &record.last_error),
            )]
        }
    };
    record.updated_at = chrono::Utc::now();
    if let Err(e) = deps.store.save(&record, &events, None).await {
        return (record, Err(e.into()));
    }
    if let Err(e) = deps.publisher.publish(&events).await {
        return (record, Err(e.into()));
    }
    (record, outcome)
}

/// Names of the spec fields that differ, for `agent.updated`.
fn changed_fields(old: &AgentSpec, new: &AgentSpec) -> Vec<&'static str> {
    let mut out = Vec::new();
    if old.name != new.name {
        out.push("name");
    }
    if old.config != new.config {
        out.push("config");
    }
    if old.autogen_config != new.autogen_config {
        out.push("autogen_config");
    }
    if old.resources != new.resources {
        out.push("resources");
    }
    if old.image != new.image {
        out.push("image");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::sample_spec as spec;

    #[test]
    fn update_plans() {
        let a = spec();
        assert_eq!(plan_update(&a, &a), UpdatePlan::Unchanged);
        let mut b = a.clone();
        b.resources.memory_mb = 512;
        assert_eq!(plan_update(&a, &b), UpdatePlan::InPlace);
        assert_eq!(changed_fields(&a, &b), vec!["resources"]);
        b.name = "other".into();
        assert_eq!(plan_update(&a, &b), UpdatePlan::Replace);
        let mut c = a.clone();
        c.resources.gpus = 1;
        assert_eq!(plan_update(&a, &c), UpdatePlan::Replace);
        let mut d = a.clone();
        d.image = "autogen-agent:v2".into();
        assert_eq!(plan_update(&a, &d), UpdatePlan::Replace);
    }

    #[test]
    fn only_a_running_agent_with_its_container_skips_the_start_call() {
        let mut rec = AgentRecord::new("a-1", spec(), DesiredState::Running);
        rec.container_id = Some("c".into());
        rec.status = AgentStatus::Running;
        assert!(already_running(&rec));
        for status in [
            AgentStatus::Created,
            AgentStatus::Unhealthy,
            AgentStatus::Restarting,
            AgentStatus::Stopped,
            AgentStatus::Failed,
        ] {
            rec.status = status;
            assert!(!already_running(&rec), "{status:?}");
        }
        rec.status = AgentStatus::Running;
        rec.desired_state = DesiredState::Stopped;
        assert!(!already_running(&rec));
        rec.desired_state = DesiredState::Running;
        rec.container_id = None;
        assert!(!already_running(&rec));
    }
}
