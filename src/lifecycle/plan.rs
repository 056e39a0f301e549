//! Deciding what a command does, without doing it: [`plan`] turns a command, the
//! agent's record and the [`Rules`] into a [`Plan`] — the steps, in order, and the
//! status the agent has when they all succeed. Pure: no I/O, no clock, no actix; every
//! command × status has a unit test (`lifecycle/tests.rs`).
//!
//! What the steps do to Docker, Redis and RabbitMQ is [`super::executor`]'s business,
//! including the runtime's answers that only exist at run time (a workload that
//! vanished is made anew; a stop of a missing workload is done).

use serde_json::{json, Value};

use crate::config::{Config, CredentialMode, DeploymentMode};
use crate::error::Origin;
use crate::health::Reason;
use crate::protocol::{
    Action, AgentSpec, AgentStatus, Command, DesiredState, ErrorCode, EventKind, SpecPatch,
    StopOrder,
};
use crate::record::status::{Cause, Operation};
use crate::record::AgentRecord;

/// What planning needs from the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// GPU or swarm mode: agents may ask for GPUs (device requests, or Swarm's generic
    /// resources).
    pub gpus_enabled: bool,
    /// The configured grace period (`STOP_TIMEOUT_S`): when an update removes the
    /// container it replaces, self-healing restarts an unhealthy agent, or a delete
    /// left half done is finished.
    pub replace_timeout_s: u32,
    /// Each agent has its own users (contract section 7): a delete removes them.
    pub per_agent_credentials: bool,
    /// The runtime can freeze a workload (not swarm mode): else pause and resume are
    /// refused as `unsupported`.
    pub pause_supported: bool,
}

impl Rules {
    pub fn of(config: &Config) -> Rules {
        Rules {
            gpus_enabled: matches!(
                config.deployment_mode,
                DeploymentMode::Gpu | DeploymentMode::Swarm
            ),
            replace_timeout_s: config.agents.stop_timeout_s,
            per_agent_credentials: config.agents.credentials == CredentialMode::PerAgent,
            pause_supported: config.deployment_mode != DeploymentMode::Swarm,
        }
    }
}

/// The steps of one command and where they leave the agent.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// The agent's status once every step has succeeded; `None` when the agent does
    /// not exist afterwards (deleted, or it never existed).
    pub outcome: Option<AgentStatus>,
}

impl Plan {
    /// Whether the command is refused (and so changes nothing).
    pub fn refuses(&self) -> bool {
        self.steps.iter().any(|s| matches!(s, Step::Refuse { .. }))
    }
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Answer `agent.error` with this code and nothing else happens (quota taken by an
    /// earlier step is given back).
    Refuse { code: ErrorCode, message: String },
    /// Reserve the spec's resources in the customer's quota; refused with
    /// `quota_exceeded`, changing nothing.
    ReserveQuota(AgentSpec),
    /// Give back the agent's share of its customer's quota.
    ReleaseQuota,
    /// Remove the agent's own RabbitMQ and Redis users (after its workload is gone).
    RevokeCredentials,
    /// Start the record of a new agent and save it with the command pending.
    NewRecord {
        spec: AgentSpec,
        desired: DesiredState,
    },
    /// What the agent should be doing from now on.
    SetDesired(DesiredState),
    /// An operation that takes time begins: its status is saved (with the command
    /// pending) so operators see it while it runs.
    Begin(Operation),
    /// A call to the runtime, and what a failure of it leaves behind.
    Runtime {
        call: RuntimeCall,
        on_failure: OnFailure,
    },
    /// The record names no workload any more (an update removed it).
    ForgetWorkload,
    /// The agent's spec from now on.
    SetSpec(AgentSpec),
    /// A status change (in memory; the next save writes it).
    Transition(Cause),
    /// The command succeeded: the agent's last error no longer applies.
    ClearError,
    /// Who asked for this stop and why: kept in the record until the agent starts again.
    NoteStop {
        requested_by: Option<String>,
        reason: Option<String>,
    },
    /// The agent starts again: the last stop's `stopped_by` and `stop_reason` go.
    ForgetStop,
    /// Save the record with this event and publish it; the command goes on.
    Report { event: EventKind, details: Value },
    /// Save the record with this event as the command's answer (remembered under its
    /// message id) and publish it: the command is done.
    Answer { event: EventKind, details: Value },
    /// Remove every key of the agent, remember the answer and publish it: the agent is
    /// gone.
    Forget { event: EventKind, details: Value },
    /// Keep the exit's last log lines in the record, read now if the look that saw the
    /// exit could not (they travel with `agent.restarted`).
    KeepLastLogs,
    /// Self-healing restarted the agent: count it and answer `agent.restarted`
    /// (`automatic: true`, the reason, the restart count, the last error and logs).
    Healed(Reason),
    /// A halt holds the agent from now on (its id on the record, who and why).
    Hold(HoldOrder),
    /// A halt no longer holds the agent.
    Unhold { halt_id: String },
    /// Save the record as it stands, no event.
    Save,
    /// Answer `agent.halted` (`halt_id`, `reason`, `requested_by`, `cut_ms`, and
    /// `frozen_ms`: since the halt command arrived, measured now).
    ReportHalted(HoldOrder),
}

/// A halt taking one agent out (section 10): which halt, who and why, and when the
/// halt command arrived and the agent was cut (for `agent.halted`'s figures).
#[derive(Debug, Clone, PartialEq)]
pub struct HoldOrder {
    pub halt_id: String,
    pub reason: String,
    pub requested_by: String,
    /// When the halt command arrived: `frozen_ms` is measured from it.
    pub arrived: std::time::Instant,
    /// Milliseconds from the command's arrival until every agent was cut.
    pub cut_ms: u64,
}

/// What the manager does to an agent by itself, without a command of the agent's.
#[derive(Debug, Clone, PartialEq)]
pub enum Automatic {
    /// Self-healing restarts it: it crashed, or stayed unhealthy.
    Heal(Reason),
    /// A delete that a manager which died left half done (the record says `deleting`).
    FinishDelete,
    /// A halt takes it out (its logins were cut already): frozen, `halted`.
    Hold(HoldOrder),
    /// `halt.release` of `halt_id`: when no other halt holds it, its login comes back
    /// and it returns to its desired state.
    Release {
        halt_id: String,
        reason: String,
        requested_by: String,
    },
}

impl Automatic {
    /// Where a failure of it goes ([`crate::error::AgentError::disposition`]).
    pub fn origin(&self) -> Origin {
        match self {
            Automatic::Heal(_) => Origin::Heal,
            Automatic::FinishDelete => Origin::FinishDelete,
            Automatic::Hold(_) | Automatic::Release { .. } => Origin::Halt,
        }
    }
}

/// The plan of what the manager does by itself. Self-healing: start the workload again
/// (a crash) or restart it with the grace period (unhealthy), a new one if it is gone;
/// a failure marks the agent failed. A half-done delete: remove the workload and the
/// agent's users, then every key, answering the delete's own message id.
pub fn plan_automatic(work: &Automatic, record: &AgentRecord, rules: &Rules) -> Plan {
    match work {
        Automatic::Hold(order) => hold(order, record),
        Automatic::Release {
            halt_id,
            reason,
            requested_by,
        } => release(halt_id, reason, requested_by, record),
        Automatic::Heal(reason) => Plan {
            steps: vec![
                Step::KeepLastLogs,
                Step::Runtime {
                    call: match reason {
                        Reason::Unhealthy => RuntimeCall::Restart {
                            timeout_s: rules.replace_timeout_s,
                        },
                        Reason::Crashed => RuntimeCall::Start,
                    },
                    on_failure: OnFailure::MarkFailed,
                },
                Step::Transition(Cause::Started),
                Step::Healed(*reason),
            ],
            outcome: Some(AgentStatus::Running),
        },
        Automatic::FinishDelete => Plan {
            steps: vec![
                Step::Runtime {
                    call: RuntimeCall::Remove {
                        timeout_s: rules.replace_timeout_s,
                    },
                    on_failure: OnFailure::Keep,
                },
                Step::RevokeCredentials,
                Step::Forget {
                    event: EventKind::Deleted,
                    details: json!({"finished_after_restart": true}),
                },
            ],
            outcome: None,
        },
    }
}

/// What a [`Step::Runtime`] asks of the runtime.
#[derive(Debug, Clone, PartialEq)]
pub enum RuntimeCall {
    /// The image must be on the host (pulled if it can be).
    EnsureImage(String),
    /// Create the workload, unless the record names one.
    Create,
    /// Start the workload; one that is missing (never made, or gone) is made first.
    Start,
    /// SIGTERM, SIGKILL after the grace period; nothing to do without a workload.
    Stop { timeout_s: u32 },
    /// Stop with grace and start again; a missing workload is made and started.
    Restart { timeout_s: u32 },
    /// New memory and CPU limits on the existing workload, if there is one.
    UpdateResources(AgentSpec),
    /// Stop with grace and remove; removing a missing workload succeeds.
    Remove { timeout_s: u32 },
    /// Freeze every process of the workload (Docker pause).
    Pause,
    /// Thaw the workload.
    Unpause,
    /// Take the workload out for a halt: frozen (Docker pause; swarm: scaled to 0);
    /// nothing to do when nothing runs.
    Freeze,
    /// Give a halted workload back: thawed, or started again when it no longer runs.
    Thaw,
    /// The agent's own users made again with the password its workload holds (after a
    /// halt cut them); nothing without a workload.
    RestoreLogin,
}

/// What a failed [`Step::Runtime`] leaves behind before `agent.error` answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// The agent keeps the status it had before the operation began.
    Keep,
    /// The agent is marked `failed`: it is not as asked.
    MarkFailed,
    /// A create that could not make its workload leaves nothing behind: the workload,
    /// the agent's users, the record and the quota reservation are removed.
    Discard,
}

/// How an update reaches the new spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateKind {
    /// Nothing changes.
    Unchanged,
    /// Only memory or CPU limits change: applied to the running workload.
    InPlace,
    /// The environment, image or GPUs change: a new workload replaces the old one.
    Replace,
}

/// Decides how to go from `old` to `new`.
pub fn update_kind(old: &AgentSpec, new: &AgentSpec) -> UpdateKind {
    if old == new {
        return UpdateKind::Unchanged;
    }
    let mut resized = old.clone();
    resized.resources.memory_mb = new.resources.memory_mb;
    resized.resources.cpus = new.resources.cpus;
    // A new publishing limit is the manager's to watch, not the container's.
    resized.resources.max_messages_per_s = new.resources.max_messages_per_s;
    // So is an egress list: the firewall and the proxy change, not the container.
    resized.egress = new.egress.clone();
    if &resized == new {
        UpdateKind::InPlace
    } else {
        UpdateKind::Replace
    }
}

/// Names of the spec fields that differ, for `agent.updated`.
pub fn changed_fields(old: &AgentSpec, new: &AgentSpec) -> Vec<&'static str> {
    [
        ("name", old.name != new.name),
        ("config", old.config != new.config),
        ("autogen_config", old.autogen_config != new.autogen_config),
        ("resources", old.resources != new.resources),
        ("image", old.image != new.image),
        ("egress", old.egress != new.egress),
    ]
    .into_iter()
    .filter_map(|(name, differs)| differs.then_some(name))
    .collect()
}

/// A halt takes the agent out: on the record, frozen, `agent.halted`. A halt that
/// already holds it (engaged again) only freezes it again.
fn hold(order: &HoldOrder, record: &AgentRecord) -> Plan {
    let freeze = Step::Runtime {
        call: RuntimeCall::Freeze,
        on_failure: OnFailure::Keep,
    };
    let steps = if record.halt_ids.contains(&order.halt_id) {
        vec![freeze, Step::Transition(Cause::Halted), Step::Save]
    } else {
        vec![
            Step::Hold(order.clone()),
            freeze,
            Step::Transition(Cause::Halted),
            Step::ReportHalted(order.clone()),
        ]
    };
    Plan {
        steps,
        outcome: Some(AgentStatus::Halted),
    }
}

/// A halt lets go of the agent: still `halted` while another holds it; else its login
/// back (its workload's password), its workload back to the desired state (thawed or
/// started again), `agent.released`.
fn release(halt_id: &str, reason: &str, requested_by: &str, record: &AgentRecord) -> Plan {
    let unhold = Step::Unhold {
        halt_id: halt_id.to_string(),
    };
    if record.halt_ids.iter().any(|h| h != halt_id) {
        return Plan {
            steps: vec![unhold, Step::Save],
            outcome: Some(AgentStatus::Halted),
        };
    }
    let running = record.desired_state == DesiredState::Running;
    let mut steps = vec![
        unhold,
        Step::Runtime {
            call: RuntimeCall::RestoreLogin,
            on_failure: OnFailure::Keep,
        },
    ];
    if running {
        steps.push(Step::Runtime {
            call: RuntimeCall::Thaw,
            on_failure: OnFailure::MarkFailed,
        });
    }
    steps.extend([
        Step::Transition(Cause::Released { running }),
        Step::Report {
            event: EventKind::Released,
            details: json!({
                "halt_id": halt_id,
                "reason": reason,
                "requested_by": requested_by,
            }),
        },
    ]);
    Plan {
        steps,
        outcome: Some(if running {
            AgentStatus::Running
        } else {
            AgentStatus::Stopped
        }),
    }
}

/// The plan of `cmd` while the halts `holding` hold the agent (the shared registry's
/// word, which may come before the agent's record knows) and, for a create of a new
/// agent, while `blocking` is an engaged halt whose scope it falls in (section 10): a
/// start, resume, restart, update, pause, or a create, of a held agent is refused
/// `halted`; stop and delete work. Everything else is [`plan`]'s, which decides first
/// (another customer's command is `forbidden`, whatever holds the agent).
pub fn plan_with_holds(
    cmd: &Command,
    record: Option<&AgentRecord>,
    rules: &Rules,
    holding: &[String],
    blocking: Option<&str>,
) -> Plan {
    let planned = plan(cmd, record, rules);
    // Whose agent it is, and whether it exists, are said first: another customer learns
    // nothing of a halt.
    let answered_first = planned.steps.iter().any(|s| {
        matches!(
            s,
            Step::Refuse {
                code: ErrorCode::Forbidden | ErrorCode::NotFound,
                ..
            }
        )
    });
    if answered_first {
        return planned;
    }
    let mut halts: Vec<String> = record.map(|r| r.halt_ids.clone()).unwrap_or_default();
    for h in holding {
        if !halts.contains(h) {
            halts.push(h.clone());
        }
    }
    let refused = match &cmd.action {
        Action::Stop(_) | Action::Delete { .. } => false,
        Action::Create { .. } if record.is_none() => {
            if let Some(halt) = blocking {
                return refuse(
                    None,
                    ErrorCode::Halted,
                    format!(
                        "agent {} falls in the scope of halt {halt}: nothing in it is created \
                         until halt.release",
                        cmd.agent_id
                    ),
                );
            }
            false
        }
        _ => !halts.is_empty(),
    };
    if refused {
        return refuse(
            record,
            ErrorCode::Halted,
            format!(
                "agent {} is halted ({}): only agent.stop and agent.delete work until \
                 halt.release",
                cmd.agent_id,
                halts.join(", ")
            ),
        );
    }
    planned
}

/// The plan of `cmd` for the agent whose record is `record` (`None`: unknown agent).
pub fn plan(cmd: &Command, record: Option<&AgentRecord>, rules: &Rules) -> Plan {
    // Every command but create needs the agent, owned by the command's customer.
    let for_owned = |then: &dyn Fn(&AgentRecord) -> Plan| match owned(cmd, record) {
        Ok(record) => then(record),
        Err(refusal) => refusal,
    };
    match &cmd.action {
        Action::Create { spec, auto_start } => create(cmd, record, spec, *auto_start, rules),
        Action::Update { patch } => for_owned(&|r| update(r, patch, rules)),
        Action::Start => for_owned(&start),
        Action::Stop(order) => for_owned(&|r| stop(r, order)),
        Action::Restart { timeout_s } => for_owned(&|_| restart(*timeout_s)),
        Action::Delete { timeout_s } => for_owned(&|_| delete(*timeout_s, rules)),
        Action::Pause => for_owned(&|r| pause(cmd, r, rules)),
        Action::Resume => for_owned(&|r| resume(cmd, r, rules)),
    }
}

fn refuse(record: Option<&AgentRecord>, code: ErrorCode, message: String) -> Plan {
    Plan {
        steps: vec![Step::Refuse { code, message }],
        outcome: record.map(AgentRecord::status),
    }
}

/// The record, when the agent exists and belongs to the command's customer.
fn owned<'r>(cmd: &Command, record: Option<&'r AgentRecord>) -> Result<&'r AgentRecord, Plan> {
    match record {
        None => Err(refuse(
            None,
            ErrorCode::NotFound,
            format!("agent {} does not exist", cmd.agent_id),
        )),
        Some(r) if r.spec.customer_id != cmd.customer_id => Err(forbidden(cmd, r)),
        Some(r) => Ok(r),
    }
}

fn forbidden(cmd: &Command, record: &AgentRecord) -> Plan {
    refuse(
        Some(record),
        ErrorCode::Forbidden,
        format!("agent {} belongs to another customer", cmd.agent_id),
    )
}

fn gpus_refused(spec: &AgentSpec, rules: &Rules) -> Option<String> {
    (spec.resources.gpus > 0 && !rules.gpus_enabled).then(|| {
        format!(
            "{} GPU(s) requested but this manager hands out no GPUs (DEPLOYMENT_MODE=gpu, \
             or swarm with GPU nodes)",
            spec.resources.gpus
        )
    })
}

fn create(
    cmd: &Command,
    record: Option<&AgentRecord>,
    spec: &AgentSpec,
    auto_start: bool,
    rules: &Rules,
) -> Plan {
    if let Some(message) = gpus_refused(spec, rules) {
        return refuse(record, ErrorCode::GpuUnavailable, message);
    }
    let mut steps = Vec::new();
    let desired = match record {
        Some(r) if r.spec.customer_id != cmd.customer_id => return forbidden(cmd, r),
        Some(r) if &r.spec != spec => {
            return refuse(
                Some(r),
                ErrorCode::AlreadyExists,
                format!(
                    "agent {} already exists with a different spec; use agent.update",
                    cmd.agent_id
                ),
            )
        }
        Some(r) => {
            // The same create again: answered again. One cut short (no workload yet,
            // or made but never started), or this very create redelivered after its
            // manager died in it, is finished first, even if the agent converged since.
            let unfinished = r.is_pending(&cmd.message_id)
                || r.status() == AgentStatus::Creating
                || (r.status() == AgentStatus::Created && r.desired_state == DesiredState::Running);
            if !unfinished {
                return Plan {
                    steps: vec![Step::Answer {
                        event: EventKind::Created,
                        details: json!({"existing": true}),
                    }],
                    outcome: Some(r.status()),
                };
            }
            r.desired_state
        }
        None => {
            let desired = if auto_start {
                DesiredState::Running
            } else {
                DesiredState::Stopped
            };
            steps.push(Step::ReserveQuota(spec.clone()));
            steps.push(Step::NewRecord {
                spec: spec.clone(),
                desired,
            });
            desired
        }
    };
    steps.push(Step::Runtime {
        call: RuntimeCall::Create,
        on_failure: OnFailure::Discard,
    });
    steps.push(Step::Transition(Cause::ContainerCreated));
    let created = json!({"image": spec.image});
    if desired == DesiredState::Stopped {
        steps.push(Step::Answer {
            event: EventKind::Created,
            details: created,
        });
        return Plan {
            steps,
            outcome: Some(AgentStatus::Created),
        };
    }
    steps.push(Step::Report {
        event: EventKind::Created,
        details: created,
    });
    let mut started = start_steps(EventKind::Started, json!({}));
    steps.append(&mut started);
    Plan {
        steps,
        outcome: Some(AgentStatus::Running),
    }
}

/// Starting an agent and answering `answer`.
fn start_steps(answer: EventKind, details: Value) -> Vec<Step> {
    vec![
        Step::SetDesired(DesiredState::Running),
        Step::Begin(Operation::Start),
        Step::Runtime {
            call: RuntimeCall::Start,
            on_failure: OnFailure::MarkFailed,
        },
        Step::Transition(Cause::Started),
        Step::ForgetStop,
        Step::ClearError,
        Step::Answer {
            event: answer,
            details,
        },
    ]
}

/// An agent that runs as asked is answered without asking the runtime (Docker would
/// answer 304). The actor's record follows every die/oom event and look, which reach
/// its mailbox ahead of any later command; an exit that races the answer is healed
/// like any other crash.
fn start(record: &AgentRecord) -> Plan {
    // A paused agent is started by thawing it: Docker will not start a paused container.
    let steps = if record.status() == AgentStatus::Paused {
        vec![
            Step::SetDesired(DesiredState::Running),
            Step::Runtime {
                call: RuntimeCall::Unpause,
                on_failure: OnFailure::Keep,
            },
            Step::Transition(Cause::Resumed),
            Step::ClearError,
            Step::Answer {
                event: EventKind::Started,
                details: json!({"resumed": true}),
            },
        ]
    } else if record.runs_as_asked() {
        vec![
            Step::ClearError,
            Step::Answer {
                event: EventKind::Started,
                details: json!({}),
            },
        ]
    } else {
        start_steps(EventKind::Started, json!({}))
    };
    Plan {
        steps,
        outcome: Some(AgentStatus::Running),
    }
}

/// A stop (a forced one has no grace period: the decoder made its `timeout_s` 0). Who
/// asked and why go into the record and `agent.stopped`.
fn stop(record: &AgentRecord, order: &StopOrder) -> Plan {
    let mut steps = vec![Step::SetDesired(DesiredState::Stopped)];
    // Stopping a stopped agent is answered again; it never shows `stopping`.
    if !record.is_resting() {
        steps.push(Step::Begin(Operation::Stop));
    }
    steps.extend([
        Step::Runtime {
            call: RuntimeCall::Stop {
                timeout_s: order.timeout_s,
            },
            on_failure: OnFailure::MarkFailed,
        },
        Step::Transition(Cause::Stopped),
        Step::NoteStop {
            requested_by: order.requested_by.clone(),
            reason: order.reason.clone(),
        },
        Step::ClearError,
        Step::Answer {
            event: EventKind::Stopped,
            details: json!({
                "timeout_s": order.timeout_s,
                "force": order.force,
                "reason": order.reason,
                "requested_by": order.requested_by,
            }),
        },
    ]);
    Plan {
        steps,
        outcome: Some(AgentStatus::Stopped),
    }
}

fn restart(timeout_s: u32) -> Plan {
    Plan {
        steps: vec![
            Step::SetDesired(DesiredState::Running),
            Step::Begin(Operation::Restart),
            Step::Runtime {
                call: RuntimeCall::Restart { timeout_s },
                on_failure: OnFailure::MarkFailed,
            },
            Step::Transition(Cause::Started),
            Step::ForgetStop,
            Step::ClearError,
            Step::Answer {
                event: EventKind::Restarted,
                details: json!({"timeout_s": timeout_s}),
            },
        ],
        outcome: Some(AgentStatus::Running),
    }
}

/// Statuses in which the workload runs (frozen or not) as the agent's record says.
fn runs(record: &AgentRecord) -> bool {
    matches!(
        record.status(),
        AgentStatus::Running | AgentStatus::Unhealthy | AgentStatus::Paused
    )
}

/// `unsupported` where the runtime cannot freeze a workload (swarm mode).
fn pause_unsupported(cmd: &Command, record: &AgentRecord, rules: &Rules) -> Option<Plan> {
    (!rules.pause_supported).then(|| {
        refuse(
            Some(record),
            ErrorCode::Unsupported,
            format!(
                "{} is not supported in swarm mode: Swarm services cannot be paused",
                cmd.kind
            ),
        )
    })
}

/// A running agent is frozen; a paused one is answered again (idempotent, as start and
/// stop); any other is refused: only a running agent can be paused.
fn pause(cmd: &Command, record: &AgentRecord, rules: &Rules) -> Plan {
    if let Some(refusal) = pause_unsupported(cmd, record, rules) {
        return refusal;
    }
    let answer = Step::Answer {
        event: EventKind::Paused,
        details: json!({}),
    };
    let steps = match record.status() {
        AgentStatus::Paused => vec![answer],
        _ if runs(record) => vec![
            Step::Runtime {
                call: RuntimeCall::Pause,
                on_failure: OnFailure::Keep,
            },
            Step::Transition(Cause::Paused),
            Step::ClearError,
            answer,
        ],
        status => {
            return refuse(
                Some(record),
                ErrorCode::ValidationFailed,
                format!(
                    "agent {} is {}: only a running agent can be paused",
                    cmd.agent_id,
                    status.as_str()
                ),
            )
        }
    };
    Plan {
        steps,
        outcome: Some(AgentStatus::Paused),
    }
}

/// A paused agent is thawed; a running one is answered again (idempotent); any other is
/// refused: only a paused agent can be resumed.
fn resume(cmd: &Command, record: &AgentRecord, rules: &Rules) -> Plan {
    if let Some(refusal) = pause_unsupported(cmd, record, rules) {
        return refusal;
    }
    let answer = Step::Answer {
        event: EventKind::Resumed,
        details: json!({}),
    };
    let steps = match record.status() {
        AgentStatus::Paused => vec![
            Step::Runtime {
                call: RuntimeCall::Unpause,
                on_failure: OnFailure::Keep,
            },
            Step::Transition(Cause::Resumed),
            Step::ClearError,
            answer,
        ],
        _ if runs(record) => vec![answer],
        status => {
            return refuse(
                Some(record),
                ErrorCode::ValidationFailed,
                format!(
                    "agent {} is {}: only a paused agent can be resumed",
                    cmd.agent_id,
                    status.as_str()
                ),
            )
        }
    };
    let outcome = match record.status() {
        AgentStatus::Unhealthy => AgentStatus::Unhealthy,
        _ => AgentStatus::Running,
    };
    Plan {
        steps,
        outcome: Some(outcome),
    }
}

/// The workload goes first, then the agent's users (a failed removal leaves a running
/// agent that can still log in), then its quota and its keys.
fn delete(timeout_s: u32, rules: &Rules) -> Plan {
    let mut steps = vec![
        Step::Begin(Operation::Delete),
        Step::Runtime {
            call: RuntimeCall::Remove { timeout_s },
            on_failure: OnFailure::Keep,
        },
    ];
    if rules.per_agent_credentials {
        steps.push(Step::RevokeCredentials);
    }
    steps.extend([
        Step::ReleaseQuota,
        Step::Forget {
            event: EventKind::Deleted,
            details: json!({"timeout_s": timeout_s}),
        },
    ]);
    Plan {
        steps,
        outcome: None,
    }
}

fn update(record: &AgentRecord, patch: &SpecPatch, rules: &Rules) -> Plan {
    let old = &record.spec;
    let next = patch.apply(old);
    if let Some(message) = gpus_refused(&next, rules) {
        return refuse(Some(record), ErrorCode::GpuUnavailable, message);
    }
    let kind = update_kind(old, &next);
    let mut outcome = record.status();
    let mut steps = vec![Step::ReserveQuota(next.clone())];
    match kind {
        UpdateKind::Unchanged => {}
        UpdateKind::InPlace => steps.extend([
            Step::Runtime {
                call: RuntimeCall::UpdateResources(next.clone()),
                on_failure: OnFailure::Keep,
            },
            Step::SetSpec(next.clone()),
        ]),
        UpdateKind::Replace => {
            if next.image != old.image {
                steps.push(Step::Runtime {
                    call: RuntimeCall::EnsureImage(next.image.clone()),
                    on_failure: OnFailure::Keep,
                });
            }
            let running = record.desired_state == DesiredState::Running;
            // A paused agent stays paused: its new workload is frozen once started.
            let paused = record.status() == AgentStatus::Paused;
            if running {
                steps.push(Step::Begin(Operation::Restart));
            }
            steps.extend([
                Step::Runtime {
                    call: RuntimeCall::Remove {
                        timeout_s: rules.replace_timeout_s,
                    },
                    on_failure: OnFailure::Keep,
                },
                Step::ForgetWorkload,
                Step::SetSpec(next.clone()),
                Step::Runtime {
                    call: RuntimeCall::Create,
                    on_failure: OnFailure::MarkFailed,
                },
            ]);
            if running {
                steps.push(Step::Runtime {
                    call: RuntimeCall::Start,
                    on_failure: OnFailure::MarkFailed,
                });
                steps.push(Step::Transition(Cause::Started));
                outcome = AgentStatus::Running;
                if paused {
                    steps.push(Step::Runtime {
                        call: RuntimeCall::Pause,
                        on_failure: OnFailure::MarkFailed,
                    });
                    steps.push(Step::Transition(Cause::Paused));
                    outcome = AgentStatus::Paused;
                }
            } else {
                steps.push(Step::Transition(Cause::Stopped));
                outcome = AgentStatus::Stopped;
            }
        }
    }
    steps.push(Step::ClearError);
    steps.push(Step::Answer {
        event: EventKind::Updated,
        details: json!({
            "changed": changed_fields(old, &next),
            "replaced": kind == UpdateKind::Replace,
            "in_place": kind == UpdateKind::InPlace,
        }),
    });
    Plan {
        steps,
        outcome: Some(outcome),
    }
}
