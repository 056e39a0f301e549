//! The lifecycle core without services: every command × every status, planned
//! ([`plan`]) and carried out ([`run_command`]) over the in-memory fakes of
//! [`crate::fakes`], with redelivery, a foreign customer, a quota refusal, a runtime
//! failure at each step, and Redis or RabbitMQ away.

use serde_json::json;

use super::automatic::{finish_delete, heal};
use super::executor::run_command;
use super::plan::{plan, plan_automatic, Automatic, OnFailure, Rules, RuntimeCall, Step};
use crate::config::{Config, CredentialMode, DeploymentMode};
use crate::fakes::{Fakes, Fault};
use crate::health::Reason;
use crate::ports::QuotaLedger;
use crate::protocol::{
    sample_spec, Action, AgentSpec, AgentStatus, Command, CommandKind, DesiredState, ErrorCode,
    Event, EventKind, ResourceChanges, SpecPatch, StopOrder,
};
use crate::record::status::{transition, Cause, Operation};
use crate::record::{AgentRecord, PendingCommand};
use crate::runtime::spec;

const AGENT: &str = "a-1";
const OWNER: &str = "c1";
const INTRUDER: &str = "c-other";

fn rules() -> Rules {
    Rules::of(&Config::defaults())
}

fn kind_of(action: &Action) -> CommandKind {
    match action {
        Action::Create { .. } => CommandKind::Create,
        Action::Update { .. } => CommandKind::Update,
        Action::Start => CommandKind::Start,
        Action::Stop(_) => CommandKind::Stop,
        Action::Restart { .. } => CommandKind::Restart,
        Action::Delete { .. } => CommandKind::Delete,
        Action::Pause => CommandKind::Pause,
        Action::Resume => CommandKind::Resume,
    }
}

fn command(action: Action, customer: &str, message_id: &str) -> Command {
    Command {
        message_id: message_id.into(),
        message_id_given: true,
        kind: kind_of(&action),
        agent_id: AGENT.into(),
        customer_id: customer.into(),
        action,
    }
}

fn create(spec: AgentSpec, auto_start: bool) -> Action {
    Action::Create { spec, auto_start }
}

fn resize() -> Action {
    Action::Update {
        patch: SpecPatch {
            resources: ResourceChanges {
                memory_mb: Some(512),
                ..Default::default()
            },
            ..Default::default()
        },
    }
}

fn reconfigure() -> Action {
    Action::Update {
        patch: SpecPatch {
            config: Some(json!({"symbol": "ETH"})),
            ..Default::default()
        },
    }
}

/// Every command kind, as the Core Engine would send it for the sample agent.
fn every_action() -> Vec<(&'static str, Action)> {
    vec![
        ("create", create(sample_spec(), true)),
        ("resize", resize()),
        ("reconfigure", reconfigure()),
        ("start", Action::Start),
        ("stop", Action::Stop(StopOrder::graceful(3))),
        ("restart", Action::Restart { timeout_s: 3 }),
        ("delete", Action::Delete { timeout_s: 3 }),
        ("force-stop", Action::Stop(forced())),
        ("pause", Action::Pause),
        ("resume", Action::Resume),
    ]
}

/// A forced stop with a reason, as an operator sends it.
fn forced() -> StopOrder {
    StopOrder {
        timeout_s: 0,
        force: true,
        reason: Some("runaway loop".into()),
        requested_by: Some("ops-alice".into()),
    }
}

/// Statuses whose workload runs (frozen or not): the ones pause and resume act on.
fn runs(status: AgentStatus) -> bool {
    matches!(
        status,
        AgentStatus::Running | AgentStatus::Unhealthy | AgentStatus::Paused
    )
}

/// Whether `name` on an agent in `status` is refused for the agent's state (only pause
/// and resume are: a workload that does not run cannot be frozen or thawed).
fn refused_in(name: &str, status: AgentStatus) -> bool {
    matches!(name, "pause" | "resume") && !runs(status)
}

/// What the agent should be doing in each status, as the manager leaves it.
fn desired_in(status: AgentStatus) -> DesiredState {
    match status {
        AgentStatus::Stopped | AgentStatus::Stopping => DesiredState::Stopped,
        _ => DesiredState::Running,
    }
}

/// A record in `status` without any workload (for planning).
fn record(status: AgentStatus) -> AgentRecord {
    let mut r = AgentRecord::new(AGENT, sample_spec(), desired_in(status));
    transition(&mut r, Cause::Restored(status));
    r
}

/// A record in `status` with a workload as that status implies (none while creating),
/// stored in the fakes.
fn stored(f: &Fakes, status: AgentStatus) -> AgentRecord {
    let mut r = record(status);
    if status != AgentStatus::Creating {
        let running = matches!(
            status,
            AgentStatus::Running | AgentStatus::Unhealthy | AgentStatus::Stopping
        );
        let id = f.runtime.add(spec::build(&r, &f.deps.config), running);
        if status == AgentStatus::Paused {
            f.runtime.freeze(&id);
        }
        r.workload_id = Some(id);
    }
    f.store.put(r.clone());
    r
}

fn fakes() -> Fakes {
    Fakes::new(Config::defaults(), 0)
}

fn kinds(events: &[Event]) -> Vec<&'static str> {
    events.iter().map(Event::routing_key).collect()
}

fn error_code(events: &[Event]) -> Option<String> {
    events
        .iter()
        .find(|e| e.event == EventKind::Error)
        .and_then(|e| e.details["code"].as_str().map(str::to_string))
}

// ---- Planning: pure ----

#[test]
fn every_command_on_every_status_is_planned_to_the_status_it_promises() {
    for status in AgentStatus::ALL {
        let r = record(status);
        for (name, action) in every_action() {
            let p = plan(&command(action.clone(), OWNER, "m"), Some(&r), &rules());
            if refused_in(name, status) {
                assert!(
                    matches!(
                        p.steps.as_slice(),
                        [Step::Refuse {
                            code: ErrorCode::ValidationFailed,
                            ..
                        }]
                    ),
                    "{name} on {status:?} is refused for the agent's state: {p:?}"
                );
                assert_eq!(p.outcome, Some(status), "{name} on {status:?}: unchanged");
                continue;
            }
            assert!(!p.refuses(), "{name} on {status:?} is not refused: {p:?}");
            let expected = match name {
                "create" => {
                    let unfinished = status == AgentStatus::Creating
                        || (status == AgentStatus::Created
                            && r.desired_state == DesiredState::Running);
                    if unfinished {
                        Some(AgentStatus::Running)
                    } else {
                        Some(status)
                    }
                }
                "resize" => Some(status),
                "reconfigure" if status == AgentStatus::Paused => Some(AgentStatus::Paused),
                "reconfigure" if r.desired_state == DesiredState::Running => {
                    Some(AgentStatus::Running)
                }
                "reconfigure" => Some(AgentStatus::Stopped),
                "start" | "restart" => Some(AgentStatus::Running),
                "stop" | "force-stop" => Some(AgentStatus::Stopped),
                "delete" => None,
                "pause" => Some(AgentStatus::Paused),
                "resume" if status == AgentStatus::Unhealthy => Some(AgentStatus::Unhealthy),
                "resume" => Some(AgentStatus::Running),
                other => panic!("{other}"),
            };
            assert_eq!(p.outcome, expected, "{name} on {status:?}");
            assert!(
                matches!(
                    p.steps.last(),
                    Some(Step::Answer { .. } | Step::Forget { .. })
                ),
                "{name} on {status:?} ends with its answer"
            );
        }
    }
}

#[test]
fn operations_that_take_time_announce_their_status_before_the_runtime_call() {
    let begins = |p: &super::Plan| -> Vec<Operation> {
        p.steps
            .iter()
            .filter_map(|s| match s {
                Step::Begin(op) => Some(*op),
                _ => None,
            })
            .collect()
    };
    let stopped = record(AgentStatus::Stopped);
    let running = {
        let mut r = record(AgentStatus::Running);
        r.workload_id = Some("c".into());
        r
    };
    let at = |action, r: &AgentRecord| plan(&command(action, OWNER, "m"), Some(r), &rules());
    assert_eq!(begins(&at(Action::Start, &stopped)), [Operation::Start]);
    assert_eq!(
        begins(&at(Action::Stop(StopOrder::graceful(1)), &running)),
        [Operation::Stop]
    );
    assert_eq!(
        begins(&at(Action::Restart { timeout_s: 1 }, &running)),
        [Operation::Restart]
    );
    assert_eq!(
        begins(&at(Action::Delete { timeout_s: 1 }, &running)),
        [Operation::Delete]
    );
    assert_eq!(begins(&at(reconfigure(), &running)), [Operation::Restart]);
    // Nothing to announce: already running, already stopped, a resize.
    assert!(begins(&at(Action::Start, &running)).is_empty());
    assert!(begins(&at(Action::Stop(StopOrder::graceful(1)), &stopped)).is_empty());
    assert!(begins(&at(resize(), &running)).is_empty());
    // Each Begin comes before the runtime call it announces.
    let p = at(Action::Delete { timeout_s: 1 }, &running);
    let begin = p.steps.iter().position(|s| matches!(s, Step::Begin(_)));
    let call = p
        .steps
        .iter()
        .position(|s| matches!(s, Step::Runtime { .. }));
    assert!(begin < call);
}

#[test]
fn refusals_are_decided_before_anything_is_done() {
    let refusal = |p: super::Plan| match p.steps.as_slice() {
        [Step::Refuse { code, .. }] => *code,
        other => panic!("expected a lone refusal, got {other:?}"),
    };
    for status in AgentStatus::ALL {
        let r = record(status);
        for (name, action) in every_action() {
            let foreign = plan(&command(action.clone(), INTRUDER, "m"), Some(&r), &rules());
            assert_eq!(refusal(foreign), ErrorCode::Forbidden, "{name} {status:?}");
        }
        let mut other = sample_spec();
        other.name = "Beta".into();
        let conflict = plan(
            &command(create(other, true), OWNER, "m"),
            Some(&r),
            &rules(),
        );
        assert_eq!(refusal(conflict), ErrorCode::AlreadyExists, "{status:?}");
    }
    for (name, action) in every_action() {
        let p = plan(&command(action, OWNER, "m"), None, &rules());
        if name == "create" {
            assert_eq!(p.outcome, Some(AgentStatus::Running));
            assert!(matches!(p.steps[0], Step::ReserveQuota(_)));
        } else {
            assert_eq!(refusal(p), ErrorCode::NotFound, "{name}");
        }
    }
    // GPUs outside GPU mode: refused before any quota is taken, in create and update.
    let mut gpu = sample_spec();
    gpu.resources.gpus = 1;
    let p = plan(&command(create(gpu, true), OWNER, "m"), None, &rules());
    assert_eq!(refusal(p), ErrorCode::GpuUnavailable);
    let add_gpu = Action::Update {
        patch: SpecPatch {
            resources: ResourceChanges {
                gpus: Some(1),
                ..Default::default()
            },
            ..Default::default()
        },
    };
    let running = record(AgentStatus::Running);
    let p = plan(
        &command(add_gpu.clone(), OWNER, "m"),
        Some(&running),
        &rules(),
    );
    assert_eq!(refusal(p), ErrorCode::GpuUnavailable);
    let mut config = Config::defaults();
    config.deployment_mode = DeploymentMode::Gpu;
    let p = plan(
        &command(add_gpu, OWNER, "m"),
        Some(&running),
        &Rules::of(&config),
    );
    assert_eq!(p.outcome, Some(AgentStatus::Running), "GPU mode: replaced");
    // Swarm mode hands out GPUs too (the swarm's generic resources).
    config.deployment_mode = DeploymentMode::Swarm;
    assert!(Rules::of(&config).gpus_enabled);
}

#[test]
fn a_create_cut_short_or_redelivered_is_finished_else_answered_again() {
    let again = |r: &AgentRecord, mid: &str| {
        plan(
            &command(create(sample_spec(), true), OWNER, mid),
            Some(r),
            &rules(),
        )
    };
    let answered_again = |p: &super::Plan| matches!(p.steps.as_slice(), [Step::Answer { event: EventKind::Created, details }] if details["existing"] == true);
    let mut running = record(AgentStatus::Running);
    assert!(answered_again(&again(&running, "m2")));
    // The same create redelivered after its manager died in it: finished.
    running.pending = Some(PendingCommand {
        command: "agent.create".into(),
        message_id: "m1".into(),
    });
    let finish = again(&running, "m1");
    assert!(!answered_again(&finish));
    assert!(finish.steps.contains(&Step::Runtime {
        call: RuntimeCall::Create,
        on_failure: OnFailure::Discard
    }));
    assert!(!again(&record(AgentStatus::Creating), "m2").steps.is_empty());
    assert!(!answered_again(&again(
        &record(AgentStatus::Creating),
        "m2"
    )));
    let mut created = record(AgentStatus::Created);
    assert!(!answered_again(&again(&created, "m2")), "never started");
    created.desired_state = DesiredState::Stopped;
    assert!(answered_again(&again(&created, "m2")), "created stopped");
}

// ---- Carrying plans out over the fakes ----

/// Every command on an agent in every status: answered once with its success event,
/// the record and the runtime left as the plan promised.
#[tokio::test]
async fn every_command_on_every_status_does_what_its_plan_promises() {
    for status in AgentStatus::ALL {
        for (name, action) in every_action() {
            let f = fakes();
            let before = stored(&f, status);
            let cmd = command(action.clone(), OWNER, "m-1");
            let promised = plan(&cmd, Some(&before), &rules()).outcome;
            let (after, result) = run_command(&f.deps, Some(before.clone()), &cmd).await;
            let case = format!("{name} on {status:?}");
            assert!(result.is_ok(), "{case}: {result:?}");
            let events = f.sink.published();
            if refused_in(name, status) {
                assert_eq!(
                    error_code(&events).as_deref(),
                    Some("validation_failed"),
                    "{case}"
                );
                assert!(
                    f.journal.matching("runtime ").is_empty(),
                    "{case}: no Docker call"
                );
                assert_eq!(after.map(|a| a.status()), Some(status), "{case}: unchanged");
                continue;
            }
            assert_eq!(error_code(&events), None, "{case}: {events:?}");
            assert!(
                events
                    .iter()
                    .all(|e| e.correlation_id.as_deref() == Some("m-1")),
                "{case}: every event answers the command"
            );
            let answer = match name {
                "create" => "agent.created",
                "resize" | "reconfigure" => "agent.updated",
                "start" => "agent.started",
                "stop" | "force-stop" => "agent.stopped",
                "restart" => "agent.restarted",
                "delete" => "agent.deleted",
                "pause" => "agent.paused",
                "resume" => "agent.resumed",
                other => panic!("{other}"),
            };
            let last = kinds(&events).last().copied();
            let create_finished = name == "create"
                && promised == Some(AgentStatus::Running)
                && status != AgentStatus::Running;
            if create_finished {
                assert_eq!(kinds(&events), ["agent.created", "agent.started"], "{case}");
            } else {
                assert_eq!(last, Some(answer), "{case}: {:?}", kinds(&events));
            }
            assert_eq!(
                after.as_ref().map(AgentRecord::status),
                promised,
                "{case}: the status the plan promised"
            );
            // Durable: what the store holds is what the actor holds.
            let kept = f.store.record(AGENT);
            assert_eq!(
                kept.as_ref().map(AgentRecord::status),
                promised,
                "{case}: stored"
            );
            assert_eq!(
                kept.as_ref().and_then(|r| r.pending.clone()),
                None,
                "{case}: done"
            );
            assert!(
                f.store.processed_answer("m-1").is_some(),
                "{case}: remembered"
            );
            // The workload is as asked.
            match after {
                None => assert!(f.runtime.names().is_empty(), "{case}: removed"),
                Some(r) => {
                    let running = r
                        .workload_id
                        .as_deref()
                        .and_then(|id| f.runtime.running(id))
                        .unwrap_or(false);
                    let expect_running = match promised {
                        Some(AgentStatus::Running) => true,
                        Some(AgentStatus::Stopped | AgentStatus::Created) => false,
                        _ => running,
                    };
                    assert_eq!(running, expect_running, "{case}: workload");
                    let frozen = r
                        .workload_id
                        .as_deref()
                        .and_then(|id| f.runtime.paused(id))
                        .unwrap_or(false);
                    assert_eq!(
                        frozen,
                        promised == Some(AgentStatus::Paused),
                        "{case}: frozen exactly when paused"
                    );
                    assert!(r.last_error.is_none(), "{case}: no error left");
                }
            }
        }
    }
}

#[tokio::test]
async fn a_status_is_saved_before_the_runtime_call_it_announces() {
    let cases = [
        (AgentStatus::Stopped, Action::Start, "starting", "start"),
        (
            AgentStatus::Running,
            Action::Stop(StopOrder::graceful(1)),
            "stopping",
            "stop",
        ),
        (
            AgentStatus::Running,
            Action::Restart { timeout_s: 1 },
            "restarting",
            "restart",
        ),
        (
            AgentStatus::Running,
            Action::Delete { timeout_s: 1 },
            "deleting",
            "remove",
        ),
    ];
    for (status, action, announced, call) in cases {
        let f = fakes();
        let r = stored(&f, status);
        f.journal.clear();
        run_command(&f.deps, Some(r), &command(action, OWNER, "m"))
            .await
            .1
            .expect("applied");
        let saved = f
            .journal
            .position(&format!("save {AGENT} {announced}"))
            .unwrap_or_else(|| panic!("{announced} saved: {:?}", f.journal.entries()));
        let called = f
            .journal
            .entries()
            .iter()
            .position(|e| e.starts_with(&format!("runtime {call} ")))
            .expect("the runtime call");
        assert!(saved < called, "{announced} before {call}");
        // And every event is published after the save that makes it durable.
        let entries = f.journal.entries();
        let published = entries
            .iter()
            .position(|e| e.starts_with("publish "))
            .unwrap();
        assert!(entries[..published]
            .iter()
            .any(|e| e.starts_with("save ") || e.starts_with("delete ")));
    }
}

#[tokio::test]
async fn a_redelivered_command_is_answered_again_and_applied_once() {
    for (name, action) in every_action() {
        let f = fakes();
        let r = stored(&f, AgentStatus::Running);
        let cmd = command(action, OWNER, "m-once");
        let (after, first) = run_command(&f.deps, Some(r), &cmd).await;
        first.expect("applied");
        let answer = f.sink.published();
        f.sink.clear();
        f.journal.clear();
        let (_, second) = run_command(&f.deps, after, &cmd).await;
        second.expect("answered");
        let replayed = f.sink.published();
        assert_eq!(replayed, answer, "{name}: the same events, same ids");
        assert!(
            f.journal.matching("runtime ").is_empty(),
            "{name}: no Docker call"
        );
        assert!(f.journal.matching("save ").is_empty(), "{name}: no write");
        assert!(
            f.journal.matching("credentials ").is_empty(),
            "{name}: no user made or removed"
        );
    }
}

#[tokio::test]
async fn another_customers_command_is_forbidden_and_leaves_no_trace() {
    for (name, action) in every_action() {
        let f = fakes();
        let r = stored(&f, AgentStatus::Running);
        let stream_before = f.store.stream(AGENT).len();
        f.journal.clear();
        let (after, result) =
            run_command(&f.deps, Some(r.clone()), &command(action, INTRUDER, "m-x")).await;
        result.expect("answered");
        let events = f.sink.published();
        assert_eq!(error_code(&events).as_deref(), Some("forbidden"), "{name}");
        let e = &events[0];
        assert_eq!(events.len(), 1, "{name}");
        assert_eq!(
            (e.customer_id.as_str(), e.status.as_str()),
            (INTRUDER, "failed"),
            "{name}: tells nothing of the agent"
        );
        assert!(e.container_id.is_none(), "{name}");
        assert!(f.journal.matching("runtime ").is_empty(), "{name}");
        assert!(f.journal.matching("save ").is_empty(), "{name}");
        assert_eq!(f.store.stream(AGENT).len(), stream_before, "{name}");
        let after = after.expect("the record stays");
        assert_eq!(after.status(), r.status(), "{name}");
        assert_eq!(after.generation, r.generation, "{name}: fences nothing off");
        assert!(f.store.processed_answer("m-x").is_some(), "{name}");
    }
}

#[tokio::test]
async fn an_unknown_agent_is_not_found() {
    for (name, action) in every_action().into_iter().skip(1) {
        let f = fakes();
        let (after, result) = run_command(&f.deps, None, &command(action, OWNER, "m")).await;
        result.expect("answered");
        assert!(after.is_none());
        let events = f.sink.published();
        assert_eq!(error_code(&events).as_deref(), Some("not_found"), "{name}");
        assert_eq!(events[0].status, "failed");
        assert!(f.runtime.names().is_empty());
    }
}

#[tokio::test]
async fn a_quota_refusal_creates_nothing() {
    let f = Fakes::new(Config::defaults(), 1);
    let mut other = sample_spec();
    other.name = "first".into();
    f.quota
        .reserve("a-0", &other)
        .await
        .expect("the first agent fits");
    create_refused(&f, "m", "quota_exceeded").await;
}

/// Runs a create of a new agent that must be answered with `agent.error` `code`, not
/// retried, and leave no record, workload or quota reservation; returns the events.
async fn create_refused(f: &Fakes, message_id: &str, code: &str) -> Vec<Event> {
    let cmd = command(create(sample_spec(), true), OWNER, message_id);
    let (after, result) = run_command(&f.deps, None, &cmd).await;
    result.expect("answered, not retried");
    assert!(after.is_none());
    let events = f.sink.published();
    assert_eq!(error_code(&events).as_deref(), Some(code));
    assert!(f.store.record(AGENT).is_none(), "no record");
    assert!(f.runtime.names().is_empty(), "no workload");
    assert_eq!(f.quota.holding(OWNER, AGENT), None, "no quota");
    events
}

/// Runs a create of a new agent (started) that must be applied; returns its record.
async fn created(f: &Fakes, message_id: &str) -> AgentRecord {
    let cmd = command(create(sample_spec(), true), OWNER, message_id);
    let (after, result) = run_command(&f.deps, None, &cmd).await;
    result.expect("created");
    after.expect("the agent")
}

/// One runtime failure: the command, the status before (`None`: a new agent), the call
/// that fails and how, the `agent.error` code, the status after (`None`: gone).
struct FailureCase {
    case: &'static str,
    status: Option<AgentStatus>,
    action: Action,
    call: &'static str,
    fault: Fault,
    code: &'static str,
    after_status: Option<AgentStatus>,
}

fn fails(
    case: &'static str,
    status: Option<AgentStatus>,
    action: Action,
    call: &'static str,
    fault: Fault,
    code: &'static str,
    after_status: Option<AgentStatus>,
) -> FailureCase {
    FailureCase {
        case,
        status,
        action,
        call,
        fault,
        code,
        after_status,
    }
}

/// A runtime failure at each step of each command: answered with `agent.error`, and
/// the agent left as the plan's `OnFailure` says.
#[tokio::test]
async fn a_runtime_failure_at_each_step_is_answered_and_leaves_what_the_plan_says() {
    let mut new_image = sample_spec();
    new_image.image = "autogen-agent:v2".into();
    use AgentStatus::{Failed, Paused, Running, Stopped};
    let new_image = Action::Update {
        patch: SpecPatch {
            image: Some("autogen-agent:v2".into()),
            ..Default::default()
        },
    };
    let stop = Action::Stop(StopOrder::graceful(1));
    let restart = Action::Restart { timeout_s: 1 };
    let delete = Action::Delete { timeout_s: 1 };
    let new_agent = || create(sample_spec(), true);
    let cases = [
        fails(
            "create: the container",
            None,
            new_agent(),
            "create",
            Fault::Docker,
            "docker_error",
            None,
        ),
        fails(
            "create: the image",
            None,
            new_agent(),
            "create",
            Fault::ImageNotFound,
            "image_not_found",
            None,
        ),
        fails(
            "create: the start",
            None,
            new_agent(),
            "start",
            Fault::Docker,
            "docker_error",
            Some(Failed),
        ),
        fails(
            "start",
            Some(Stopped),
            Action::Start,
            "start",
            Fault::Docker,
            "docker_error",
            Some(Failed),
        ),
        fails(
            "stop",
            Some(Running),
            stop,
            "stop",
            Fault::Docker,
            "docker_error",
            Some(Failed),
        ),
        fails(
            "restart",
            Some(Running),
            restart,
            "restart",
            Fault::Docker,
            "docker_error",
            Some(Failed),
        ),
        fails(
            "delete",
            Some(Running),
            delete,
            "remove",
            Fault::Docker,
            "docker_error",
            Some(Running),
        ),
        fails(
            "resize",
            Some(Running),
            resize(),
            "update_resources",
            Fault::Docker,
            "docker_error",
            Some(Running),
        ),
        fails(
            "replace: the removal",
            Some(Running),
            reconfigure(),
            "remove",
            Fault::Docker,
            "docker_error",
            Some(Running),
        ),
        fails(
            "replace: the new container",
            Some(Running),
            reconfigure(),
            "create",
            Fault::Docker,
            "docker_error",
            Some(Failed),
        ),
        fails(
            "replace: its start",
            Some(Running),
            reconfigure(),
            "start",
            Fault::Docker,
            "docker_error",
            Some(Failed),
        ),
        fails(
            "pause",
            Some(Running),
            Action::Pause,
            "pause",
            Fault::Docker,
            "docker_error",
            Some(Running),
        ),
        fails(
            "pause: the workload vanished",
            Some(Running),
            Action::Pause,
            "pause",
            Fault::NotFound,
            "not_found",
            Some(Running),
        ),
        fails(
            "resume",
            Some(Paused),
            Action::Resume,
            "unpause",
            Fault::Docker,
            "docker_error",
            Some(Paused),
        ),
        fails(
            "start a paused agent",
            Some(Paused),
            Action::Start,
            "unpause",
            Fault::Docker,
            "docker_error",
            Some(Paused),
        ),
        fails(
            "replace a paused agent: its pause",
            Some(Paused),
            reconfigure(),
            "pause",
            Fault::Docker,
            "docker_error",
            Some(Failed),
        ),
        fails(
            "replace: the new image",
            Some(Running),
            new_image,
            "ensure_image",
            Fault::ImageNotFound,
            "image_not_found",
            Some(Running),
        ),
    ];
    for FailureCase {
        case,
        status,
        action,
        call,
        fault,
        code,
        after_status,
    } in cases
    {
        let f = fakes();
        let before = status.map(|s| stored(&f, s));
        let is_update = matches!(action, Action::Update { .. });
        f.runtime.fail(call, fault);
        let (after, result) =
            run_command(&f.deps, before.clone(), &command(action, OWNER, "m")).await;
        assert!(result.is_ok(), "{case}: answered, not retried: {result:?}");
        let events = f.sink.published();
        assert_eq!(
            error_code(&events).as_deref(),
            Some(code),
            "{case}: {events:?}"
        );
        assert_eq!(
            after.as_ref().map(AgentRecord::status),
            after_status,
            "{case}"
        );
        assert_eq!(
            f.store.record(AGENT).map(|r| r.status()),
            after_status,
            "{case}: stored"
        );
        match &after {
            None => {
                assert!(f.runtime.names().is_empty(), "{case}: no container left");
                assert_eq!(f.quota.holding(OWNER, AGENT), None, "{case}: no quota held");
            }
            Some(r) => {
                assert!(r.last_error.is_some(), "{case}: the record says why");
                assert!(r.pending.is_none(), "{case}: the command is over");
            }
        }
        if is_update && after_status != Some(AgentStatus::Failed) {
            let before = before.expect("an existing agent");
            assert_eq!(
                after.map(|r| r.spec),
                Some(before.spec),
                "{case}: spec kept"
            );
            assert!(
                !f.journal.matching("quota resync").is_empty(),
                "{case}: quota follows the record"
            );
        }
    }
}

#[tokio::test]
async fn a_workload_that_vanished_is_made_anew() {
    for action in [Action::Start, Action::Restart { timeout_s: 1 }] {
        let f = fakes();
        let r = stored(&f, AgentStatus::Failed);
        let old = r.workload_id.clone().expect("a container");
        f.runtime.vanish(&old);
        let (after, result) = run_command(&f.deps, Some(r), &command(action, OWNER, "m")).await;
        result.expect("applied");
        let after = after.expect("the agent");
        let new = after.workload_id.clone().expect("a new container");
        assert_ne!(new, old);
        assert_eq!(f.runtime.running(&new), Some(true));
        assert_eq!(after.status(), AgentStatus::Running);
    }
    // A stop of a vanished workload is done, and the record forgets it.
    let f = fakes();
    let r = stored(&f, AgentStatus::Running);
    f.runtime
        .vanish(r.workload_id.as_deref().unwrap_or_default());
    let (after, result) = run_command(
        &f.deps,
        Some(r),
        &command(Action::Stop(StopOrder::graceful(1)), OWNER, "m"),
    )
    .await;
    result.expect("applied");
    let after = after.expect("the agent");
    assert_eq!(after.status(), AgentStatus::Stopped);
    assert_eq!(after.workload_id, None);
}

#[tokio::test]
async fn with_redis_or_rabbitmq_away_nothing_is_answered_and_the_retry_applies_it() {
    let f = fakes();
    let r = stored(&f, AgentStatus::Stopped);
    f.store.fail_writes(1);
    let cmd = command(Action::Start, OWNER, "m");
    let (after, result) = run_command(&f.deps, Some(r.clone()), &cmd).await;
    let error = result.expect_err("retried");
    assert!(error.is_transient_infrastructure());
    assert!(f.sink.published().is_empty(), "nothing answered");
    let (after, retried) = run_command(&f.deps, after, &cmd).await;
    retried.expect("applied on retry");
    assert_eq!(kinds(&f.sink.published()), ["agent.started"]);
    assert_eq!(after.map(|a| a.status()), Some(AgentStatus::Running));

    let f = fakes();
    let r = stored(&f, AgentStatus::Running);
    f.sink.set_failing(true);
    let cmd = command(Action::Stop(StopOrder::graceful(1)), OWNER, "m");
    let (after, result) = run_command(&f.deps, Some(r), &cmd).await;
    assert!(result.expect_err("retried").is_transient_infrastructure());
    f.sink.set_failing(false);
    let (_, retried) = run_command(&f.deps, after, &cmd).await;
    retried.expect("answered on retry");
    assert_eq!(kinds(&f.sink.published()), ["agent.stopped"]);
}

#[tokio::test]
async fn a_redelivered_create_of_a_new_agent_finds_its_own_container() {
    // The manager died after making the container, before recording it.
    let f = Fakes::new(shared_credentials(), 0);
    let cmd = command(create(sample_spec(), true), OWNER, "m");
    let orphan = AgentRecord::new(AGENT, sample_spec(), DesiredState::Running);
    let made = f.runtime.add(spec::build(&orphan, &f.deps.config), false);
    let (after, result) = run_command(&f.deps, None, &cmd).await;
    result.expect("applied");
    let after = after.expect("the agent");
    assert_eq!(after.workload_id.as_deref(), Some(made.as_str()));
    assert_eq!(f.runtime.names().len(), 1, "no second container");
    assert_eq!(
        kinds(&f.sink.published()),
        ["agent.created", "agent.started"]
    );
}

// ---- The agent's own credentials (contract section 7) ----

fn shared_credentials() -> Config {
    let mut config = Config::defaults();
    config.agents.credentials = CredentialMode::Shared;
    config
}

/// The password in the agent's workload's environment (its RABBITMQ_URL and REDIS_URL
/// carry the same one, as user `agent-<id>`).
fn password_in(f: &Fakes, workload: &str) -> String {
    let spec = f.runtime.spec_of(workload).expect("the workload");
    let var = |name: &str| {
        spec.env
            .iter()
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")).map(str::to_string))
            .unwrap_or_default()
    };
    crate::credentials::own_password(AGENT, &var("RABBITMQ_URL"), &var("REDIS_URL"))
        .map(|p| p.expose().to_string())
        .expect("the workload holds the agent's own login")
}

#[tokio::test]
async fn credentials_are_issued_before_the_workload_and_only_go_into_it() {
    let f = fakes();
    let after = created(&f, "m").await;
    let issued = f
        .journal
        .position(&format!("credentials issue {AGENT}"))
        .expect("issued");
    let created = f
        .journal
        .position(&format!("runtime create agent-{AGENT}"))
        .expect("created");
    assert!(issued < created, "{:?}", f.journal.entries());
    let workload = after.workload_id.clone().expect("a workload");
    let password = password_in(&f, &workload);
    assert_eq!(f.issuer.password_of(AGENT), Some(password.clone()));
    assert!(password.len() >= 22, "at least 128 bits");
    // Nowhere else: not in the record, the events, the processed answer.
    let stored = f.store.record(AGENT).expect("stored");
    assert!(!format!("{stored:?}").contains(&password));
    let events = serde_json::to_string(&f.sink.published()).unwrap();
    assert!(!events.contains(&password));
    let answer = serde_json::to_string(&f.store.processed_answer("m")).unwrap();
    assert!(!answer.contains(&password));
}

#[tokio::test]
async fn a_failure_to_make_the_credentials_answers_and_leaves_nothing() {
    let f = fakes();
    f.issuer.fail("issue");
    let events = create_refused(&f, "m", "internal").await;
    assert!(events[0].details["message"]
        .as_str()
        .is_some_and(|m| m.contains("credentials")));
    assert!(
        f.journal.matching("runtime create").is_empty(),
        "no workload made"
    );
    assert!(f.issuer.agents().is_empty(), "no users");
    assert!(
        !f.journal.matching("credentials revoke").is_empty(),
        "what may have been made is removed"
    );
    // The same create later works.
    f.issuer.heal();
    assert_eq!(created(&f, "m2").await.status(), AgentStatus::Running);
}

#[tokio::test]
async fn with_the_management_api_away_a_create_is_retried_and_leaves_nothing_meanwhile() {
    let f = fakes();
    f.issuer.away("issue");
    let cmd = command(create(sample_spec(), true), OWNER, "m");
    let (after, result) = run_command(&f.deps, None, &cmd).await;
    assert!(result.expect_err("retried").is_transient_infrastructure());
    assert!(after.is_none());
    assert!(f.sink.published().is_empty(), "nothing answered");
    assert!(f.runtime.names().is_empty());
    assert!(f.store.record(AGENT).is_none());
    assert_eq!(f.quota.holding(OWNER, AGENT), None);
    assert!(f.issuer.agents().is_empty());
    f.issuer.heal();
    let (after, retried) = run_command(&f.deps, None, &cmd).await;
    retried.expect("applied on retry");
    assert_eq!(after.map(|a| a.status()), Some(AgentStatus::Running));
    assert_eq!(
        kinds(&f.sink.published()),
        ["agent.created", "agent.started"]
    );
}

#[tokio::test]
async fn an_update_whose_new_workload_waits_for_the_management_api_is_retried_whole() {
    let f = fakes();
    let r = stored(&f, AgentStatus::Running);
    f.issuer.away("issue");
    let cmd = command(reconfigure(), OWNER, "m");
    let (after, result) = run_command(&f.deps, Some(r.clone()), &cmd).await;
    assert!(result.expect_err("retried").is_transient_infrastructure());
    let after = after.expect("the agent");
    assert_eq!(after.spec, r.spec, "the retry plans from the stored spec");
    f.issuer.heal();
    let (after, retried) = run_command(&f.deps, Some(after), &cmd).await;
    retried.expect("applied on retry");
    let after = after.expect("the agent");
    assert_eq!(after.status(), AgentStatus::Running);
    assert_eq!(after.spec.config, json!({"symbol": "ETH"}));
    let workload = after.workload_id.clone().expect("a new workload");
    assert_eq!(f.runtime.running(&workload), Some(true));
    assert_eq!(
        f.issuer.password_of(AGENT),
        Some(password_in(&f, &workload))
    );
    let updated = f.sink.published();
    assert_eq!(kinds(&updated), ["agent.updated"]);
    assert_eq!(updated[0].details["replaced"], true);
}

#[tokio::test]
async fn a_workload_that_cannot_be_made_takes_its_new_users_with_it() {
    let f = fakes();
    f.runtime.fail("create", Fault::Docker);
    create_refused(&f, "m", "docker_error").await;
    assert!(f.issuer.agents().is_empty(), "no users left");
}

#[tokio::test]
async fn every_workload_made_gets_a_new_password_and_a_resize_keeps_it() {
    let f = fakes();
    let r = created(&f, "m1").await;
    let first = password_in(&f, r.workload_id.as_deref().unwrap_or_default());

    // A resize changes the workload in place: same password.
    let (after, result) = run_command(&f.deps, Some(r), &command(resize(), OWNER, "m2")).await;
    result.expect("resized");
    let r = after.expect("the agent");
    assert_eq!(
        password_in(&f, r.workload_id.as_deref().unwrap_or_default()),
        first
    );

    // An update that replaces the workload: a new password.
    let (after, result) = run_command(&f.deps, Some(r), &command(reconfigure(), OWNER, "m3")).await;
    result.expect("replaced");
    let r = after.expect("the agent");
    let second = password_in(&f, r.workload_id.as_deref().unwrap_or_default());
    assert_ne!(second, first);
    assert_eq!(f.issuer.password_of(AGENT), Some(second.clone()));

    // A workload that vanished, made anew by a start: a new password.
    f.runtime
        .vanish(r.workload_id.as_deref().unwrap_or_default());
    let mut r = r;
    transition(&mut r, Cause::Failed);
    let (after, result) = run_command(&f.deps, Some(r), &command(Action::Start, OWNER, "m4")).await;
    result.expect("started");
    let r = after.expect("the agent");
    let third = password_in(&f, r.workload_id.as_deref().unwrap_or_default());
    assert!(third != second && third != first);

    // Self-healing that makes the workload anew: a new password too.
    f.runtime
        .vanish(r.workload_id.as_deref().unwrap_or_default());
    let (r, healed) = heal(&f.deps, r, Reason::Crashed).await;
    healed.expect("healed");
    let fourth = password_in(&f, r.workload_id.as_deref().unwrap_or_default());
    assert!(![first, second, third].contains(&fourth));
    assert_eq!(f.issuer.password_of(AGENT), Some(fourth));
    assert_eq!(f.runtime.names().len(), 1, "one workload");
}

#[tokio::test]
async fn a_stale_workload_with_an_old_password_is_replaced_not_adopted() {
    // A dead manager made a workload with a password it issued; the redelivered create
    // issues a new one, so that workload could no longer log in: it is replaced.
    let f = fakes();
    let cmd = command(create(sample_spec(), true), OWNER, "m");
    let (first, _) = run_command(&f.deps, None, &cmd).await;
    let old = first.expect("the agent").workload_id.expect("made");
    let mut lost = f.store.record(AGENT).expect("stored");
    lost.workload_id = None;
    lost.pending = Some(PendingCommand {
        command: "agent.create".into(),
        message_id: "m-again".into(),
    });
    f.store.put(lost.clone());
    let (after, result) = run_command(
        &f.deps,
        Some(lost),
        &command(create(sample_spec(), true), OWNER, "m-again"),
    )
    .await;
    result.expect("applied");
    let new = after.expect("the agent").workload_id.expect("made");
    assert_ne!(new, old);
    assert_eq!(f.runtime.names().len(), 1, "the stale one is gone");
    assert_eq!(f.issuer.password_of(AGENT), Some(password_in(&f, &new)));
}

#[tokio::test]
async fn delete_removes_the_users_after_the_workload() {
    let f = fakes();
    let after = created(&f, "m1").await;
    f.journal.clear();
    let (after, result) = run_command(
        &f.deps,
        Some(after),
        &command(Action::Delete { timeout_s: 1 }, OWNER, "m2"),
    )
    .await;
    result.expect("deleted");
    assert!(after.is_none());
    let removed = f
        .journal
        .entries()
        .iter()
        .position(|e| e.starts_with("runtime remove"))
        .expect("removed");
    let revoked = f
        .journal
        .position(&format!("credentials revoke {AGENT}"))
        .expect("revoked");
    let forgotten = f
        .journal
        .position(&format!("delete {AGENT}"))
        .expect("forgotten");
    assert!(
        removed < revoked && revoked < forgotten,
        "{:?}",
        f.journal.entries()
    );
    assert!(f.issuer.agents().is_empty());
    // Redelivered: answered again, nothing touched.
    f.journal.clear();
    let (_, again) = run_command(
        &f.deps,
        None,
        &command(Action::Delete { timeout_s: 1 }, OWNER, "m2"),
    )
    .await;
    again.expect("answered again");
    assert!(f.journal.matching("credentials ").is_empty());
}

#[tokio::test]
async fn a_delete_that_cannot_remove_the_users_says_so_and_is_finished_later() {
    let f = fakes();
    let r = stored(&f, AgentStatus::Running);
    f.issuer.put(AGENT, "pw");
    f.issuer.fail("revoke");
    let cmd = command(Action::Delete { timeout_s: 1 }, OWNER, "m");
    let (after, result) = run_command(&f.deps, Some(r), &cmd).await;
    result.expect("answered");
    assert_eq!(error_code(&f.sink.published()).as_deref(), Some("internal"));
    let after = after.expect("the agent is not gone while its users are there");
    assert_eq!(after.status(), AgentStatus::Deleting);
    assert!(f.runtime.names().is_empty(), "its workload is");
    assert_eq!(f.issuer.agents(), [AGENT]);
    // A manager start finishes it.
    f.issuer.heal();
    finish_delete(&f.deps, after).await.expect("finished");
    assert!(f.issuer.agents().is_empty());
    assert!(f.store.record(AGENT).is_none());
}

#[tokio::test]
async fn a_delete_left_half_done_removes_the_users_too() {
    let f = fakes();
    let mut r = stored(&f, AgentStatus::Deleting);
    f.issuer.put(AGENT, "pw");
    r.pending = Some(PendingCommand {
        command: "agent.delete".into(),
        message_id: "m-del".into(),
    });
    finish_delete(&f.deps, r).await.expect("finished");
    assert!(f.issuer.agents().is_empty());
}

#[tokio::test]
async fn shared_credentials_make_no_users() {
    let f = Fakes::new(shared_credentials(), 0);
    assert!(f.deps.credentials.is_none());
    let after = created(&f, "m1").await;
    let workload = after.workload_id.clone().expect("made");
    let env = f.runtime.spec_of(&workload).expect("made").env;
    let config = &f.deps.config;
    assert!(env.contains(&format!("RABBITMQ_URL={}", config.agent_rabbitmq_url())));
    assert!(env.contains(&format!("REDIS_URL={}", config.agent_redis_url())));
    let (_, result) = run_command(
        &f.deps,
        Some(after),
        &command(Action::Delete { timeout_s: 1 }, OWNER, "m2"),
    )
    .await;
    result.expect("deleted");
    assert!(f.journal.matching("credentials ").is_empty());
    let delete = plan(
        &command(Action::Delete { timeout_s: 1 }, OWNER, "m"),
        Some(&record(AgentStatus::Running)),
        &Rules::of(&shared_credentials()),
    );
    assert!(!delete.steps.contains(&Step::RevokeCredentials));
}

#[test]
fn a_delete_is_planned_to_revoke_after_removing_the_workload() {
    let p = plan(
        &command(Action::Delete { timeout_s: 1 }, OWNER, "m"),
        Some(&record(AgentStatus::Running)),
        &rules(),
    );
    let remove = p.steps.iter().position(|s| {
        matches!(
            s,
            Step::Runtime {
                call: RuntimeCall::Remove { .. },
                ..
            }
        )
    });
    let revoke = p.steps.iter().position(|s| *s == Step::RevokeCredentials);
    let forget = p
        .steps
        .iter()
        .position(|s| matches!(s, Step::Forget { .. }));
    assert!(
        remove.is_some() && remove < revoke && revoke < forget,
        "{p:?}"
    );
    // No other command removes users.
    for (name, action) in every_action() {
        if name != "delete" {
            let p = plan(
                &command(action, OWNER, "m"),
                Some(&record(AgentStatus::Running)),
                &rules(),
            );
            assert!(!p.steps.contains(&Step::RevokeCredentials), "{name}");
        }
    }
}

// ---- Without a command ----

#[tokio::test]
async fn healing_restarts_a_crashed_agent_and_counts_it() {
    let f = fakes();
    let r = stored(&f, AgentStatus::Failed);
    let (after, result) = heal(&f.deps, r, Reason::Crashed).await;
    result.expect("healed");
    assert_eq!(after.status(), AgentStatus::Running);
    assert_eq!(after.restart_count, 1);
    let events = f.sink.published();
    assert_eq!(kinds(&events), ["agent.restarted"]);
    assert_eq!(events[0].correlation_id, None);
    assert_eq!(events[0].details["automatic"], true);
    assert!(
        !after.last_logs.is_empty(),
        "the exit's last words travel with it"
    );
    assert_eq!(
        f.store.record(AGENT).map(|r| r.status()),
        Some(AgentStatus::Running)
    );
}

#[tokio::test]
async fn healing_that_fails_marks_the_agent_failed_and_says_why() {
    let f = fakes();
    let r = stored(&f, AgentStatus::Running);
    f.runtime.fail("restart", Fault::Docker);
    let (after, result) = heal(&f.deps, r, Reason::Unhealthy).await;
    // Answered (the error policy: a Docker failure is the agent's, not a service away).
    result.expect("answered with agent.error, not retried");
    assert_eq!(after.status(), AgentStatus::Failed);
    let events = f.sink.published();
    assert_eq!(error_code(&events).as_deref(), Some("docker_error"));
    assert!(events[0].details["command"].is_null());
    assert!(after
        .last_error
        .as_deref()
        .is_some_and(|e| e.starts_with("automatic restart failed")));
}

#[tokio::test]
async fn a_delete_left_half_done_is_finished_and_answered() {
    let f = fakes();
    let mut r = stored(&f, AgentStatus::Deleting);
    r.pending = Some(PendingCommand {
        command: "agent.delete".into(),
        message_id: "m-del".into(),
    });
    finish_delete(&f.deps, r).await.expect("finished");
    assert!(f.store.record(AGENT).is_none());
    assert!(f.runtime.names().is_empty());
    let events = f.sink.published();
    assert_eq!(kinds(&events), ["agent.deleted"]);
    assert_eq!(events[0].correlation_id.as_deref(), Some("m-del"));
    assert_eq!(f.store.processed_answer("m-del"), Some(events));
}

/// What the manager does by itself is a plan like a command's, a table without
/// services: self-healing starts (a crash) or restarts with the grace period
/// (unhealthy), marking the agent failed when that fails; a half-done delete removes
/// the workload and the users, then forgets the agent.
#[test]
fn the_manager_s_own_work_is_planned_like_a_command() {
    let rules = Rules::of(&Config::defaults());
    let healed = |reason, call| crate::lifecycle::Plan {
        steps: vec![
            Step::KeepLastLogs,
            Step::Runtime {
                call,
                on_failure: OnFailure::MarkFailed,
            },
            Step::Transition(Cause::Started),
            Step::Healed(reason),
        ],
        outcome: Some(AgentStatus::Running),
    };
    assert_eq!(
        plan_automatic(
            &Automatic::Heal(Reason::Crashed),
            &record(AgentStatus::Failed),
            &rules
        ),
        healed(Reason::Crashed, RuntimeCall::Start)
    );
    assert_eq!(
        plan_automatic(
            &Automatic::Heal(Reason::Unhealthy),
            &record(AgentStatus::Running),
            &rules
        ),
        healed(
            Reason::Unhealthy,
            RuntimeCall::Restart {
                timeout_s: rules.replace_timeout_s
            }
        )
    );
    let finish = plan_automatic(
        &Automatic::FinishDelete,
        &record(AgentStatus::Deleting),
        &rules,
    );
    assert_eq!(finish.outcome, None);
    assert_eq!(
        finish.steps[..2],
        [
            Step::Runtime {
                call: RuntimeCall::Remove {
                    timeout_s: rules.replace_timeout_s
                },
                on_failure: OnFailure::Keep,
            },
            Step::RevokeCredentials,
        ]
    );
    assert!(matches!(
        finish.steps[2],
        Step::Forget {
            event: EventKind::Deleted,
            ..
        }
    ));
}

/// A create cut short by a dead manager (its record `starting`, pending) that
/// self-healing restarts first is still answered in full by its redelivery: healing
/// leaves the command's half-done mark alone.
#[tokio::test]
async fn healing_leaves_a_half_done_command_s_mark_for_its_redelivery() {
    let f = fakes();
    let mut r = stored(&f, AgentStatus::Failed);
    r.pending = Some(PendingCommand {
        command: "agent.create".into(),
        message_id: "m-create".into(),
    });
    let (after, result) = heal(&f.deps, r, Reason::Crashed).await;
    result.expect("healed");
    assert!(after.is_pending("m-create"), "the mark stays");
    assert!(f
        .store
        .record(AGENT)
        .is_some_and(|r| r.is_pending("m-create")));
}

/// Self-healing that meets Redis away is not answered: the next look decides again.
#[tokio::test]
async fn healing_that_meets_redis_away_is_retried_at_the_next_look() {
    let f = fakes();
    let r = stored(&f, AgentStatus::Failed);
    f.runtime.fail("start", Fault::Store);
    let (after, result) = heal(&f.deps, r.clone(), Reason::Crashed).await;
    assert!(result.expect_err("retried").is_transient_infrastructure());
    assert!(f.sink.published().is_empty(), "nothing answered");
    assert_eq!(after.status(), r.status(), "the record it started from");
}

// ---- Pause, resume, forced stop (contract section 9) ----

#[tokio::test]
async fn swarm_mode_answers_pause_and_resume_unsupported_without_touching_anything() {
    let mut config = Config::defaults();
    config.deployment_mode = DeploymentMode::Swarm;
    let rules = Rules::of(&config);
    for (status, action) in [
        (AgentStatus::Running, Action::Pause),
        (AgentStatus::Paused, Action::Resume),
    ] {
        let p = plan(
            &command(action.clone(), OWNER, "m"),
            Some(&record(status)),
            &rules,
        );
        assert!(
            matches!(
                p.steps.as_slice(),
                [Step::Refuse {
                    code: ErrorCode::Unsupported,
                    ..
                }]
            ),
            "{p:?}"
        );
        // A foreign customer is still told `forbidden` first.
        let foreign = plan(
            &command(action.clone(), INTRUDER, "m"),
            Some(&record(status)),
            &rules,
        );
        assert!(matches!(
            foreign.steps.as_slice(),
            [Step::Refuse {
                code: ErrorCode::Forbidden,
                ..
            }]
        ));
        let f = Fakes::new(config.clone(), 0);
        let r = stored(&f, status);
        f.journal.clear();
        let (after, result) = run_command(&f.deps, Some(r), &command(action, OWNER, "m")).await;
        result.expect("answered");
        assert_eq!(
            error_code(&f.sink.published()).as_deref(),
            Some("unsupported")
        );
        assert!(f.journal.matching("runtime ").is_empty());
        assert_eq!(after.map(|a| a.status()), Some(status));
    }
}

#[tokio::test]
async fn pause_then_resume_freezes_and_thaws_the_workload_and_says_so() {
    let f = fakes();
    let r = stored(&f, AgentStatus::Running);
    let id = r.workload_id.clone().expect("a container");
    let (after, result) =
        run_command(&f.deps, Some(r), &command(Action::Pause, OWNER, "m-p")).await;
    result.expect("paused");
    let after = after.expect("the agent");
    assert_eq!(after.status(), AgentStatus::Paused);
    assert_eq!(
        after.desired_state,
        DesiredState::Running,
        "it should still run"
    );
    assert_eq!(f.runtime.paused(&id), Some(true));
    let events = f.sink.published();
    assert_eq!(kinds(&events), ["agent.paused"]);
    assert_eq!(events[0].status, "paused");
    assert_eq!(
        f.store.record(AGENT).map(|r| r.status()),
        Some(AgentStatus::Paused)
    );
    // Paused again: answered again, no Docker call.
    f.journal.clear();
    let (after, result) =
        run_command(&f.deps, Some(after), &command(Action::Pause, OWNER, "m-p2")).await;
    result.expect("answered");
    assert!(f.journal.matching("runtime ").is_empty());
    f.sink.clear();
    let (after, result) = run_command(&f.deps, after, &command(Action::Resume, OWNER, "m-r")).await;
    result.expect("resumed");
    assert_eq!(after.map(|a| a.status()), Some(AgentStatus::Running));
    assert_eq!(f.runtime.paused(&id), Some(false));
    assert_eq!(kinds(&f.sink.published()), ["agent.resumed"]);
}

#[tokio::test]
async fn stop_restart_delete_and_update_work_on_a_paused_agent() {
    let actions = [
        (
            "stop",
            Action::Stop(StopOrder::graceful(1)),
            Some(AgentStatus::Stopped),
        ),
        (
            "force-stop",
            Action::Stop(forced()),
            Some(AgentStatus::Stopped),
        ),
        (
            "restart",
            Action::Restart { timeout_s: 1 },
            Some(AgentStatus::Running),
        ),
        ("start", Action::Start, Some(AgentStatus::Running)),
        ("resize", resize(), Some(AgentStatus::Paused)),
        ("reconfigure", reconfigure(), Some(AgentStatus::Paused)),
        ("delete", Action::Delete { timeout_s: 1 }, None),
    ];
    for (name, action, outcome) in actions {
        let f = fakes();
        let r = stored(&f, AgentStatus::Paused);
        let (after, result) = run_command(&f.deps, Some(r), &command(action, OWNER, "m")).await;
        result.expect("applied");
        assert_eq!(error_code(&f.sink.published()), None, "{name}");
        assert_eq!(after.as_ref().map(|a| a.status()), outcome, "{name}");
        if let Some(id) = after.as_ref().and_then(|a| a.workload_id.clone()) {
            assert_eq!(
                f.runtime.paused(&id),
                Some(outcome == Some(AgentStatus::Paused)),
                "{name}: the container as the status says"
            );
        }
    }
}

#[tokio::test]
async fn a_forced_stop_kills_at_once_and_the_record_keeps_who_and_why_until_a_start() {
    let f = fakes();
    let r = stored(&f, AgentStatus::Running);
    let p = plan(
        &command(Action::Stop(forced()), OWNER, "m"),
        Some(&r),
        &rules(),
    );
    assert!(p.steps.contains(&Step::Runtime {
        call: RuntimeCall::Stop { timeout_s: 0 },
        on_failure: OnFailure::MarkFailed
    }));
    let (after, result) = run_command(
        &f.deps,
        Some(r),
        &command(Action::Stop(forced()), OWNER, "m-f"),
    )
    .await;
    result.expect("stopped");
    let events = f.sink.published();
    let stopped = events.last().expect("answered");
    assert_eq!(stopped.routing_key(), "agent.stopped");
    assert_eq!(stopped.details["force"], true);
    assert_eq!(stopped.details["timeout_s"], 0);
    assert_eq!(stopped.details["reason"], "runaway loop");
    assert_eq!(stopped.details["requested_by"], "ops-alice");
    let kept = f.store.record(AGENT).expect("stored");
    assert_eq!(kept.stopped_by.as_deref(), Some("ops-alice"));
    assert_eq!(kept.stop_reason.as_deref(), Some("runaway loop"));
    // Stopped again without a reason: the record says so.
    let (after, _) = run_command(
        &f.deps,
        after,
        &command(Action::Stop(StopOrder::graceful(1)), OWNER, "m-s"),
    )
    .await;
    let again = after.clone().expect("the agent");
    assert_eq!((again.stopped_by, again.stop_reason), (None, None));
    // A forced stop, then a start: the note goes.
    let (after, _) = run_command(
        &f.deps,
        after,
        &command(Action::Stop(forced()), OWNER, "m-f2"),
    )
    .await;
    assert!(after.as_ref().is_some_and(|a| a.stop_reason.is_some()));
    let (after, result) = run_command(&f.deps, after, &command(Action::Start, OWNER, "m-go")).await;
    result.expect("started");
    let started = after.expect("the agent");
    assert_eq!((started.stopped_by, started.stop_reason), (None, None));
    assert_eq!(f.store.record(AGENT).and_then(|r| r.stop_reason), None);
}

// ---- Halt (contract section 10) ----

fn order(halt_id: &str) -> crate::lifecycle::HoldOrder {
    crate::lifecycle::HoldOrder {
        halt_id: halt_id.into(),
        reason: "runaway".into(),
        requested_by: "ops".into(),
        arrived: std::time::Instant::now(),
        cut_ms: 3,
    }
}

/// A hold freezes the agent and reports it once; a release gives it back (login, then
/// thaw) only when no other halt holds it.
#[test]
fn a_hold_freezes_and_a_release_thaws_only_the_last_halt() {
    let rules = Rules::of(&Config::defaults());
    let running = record(AgentStatus::Running);
    let hold = plan_automatic(&Automatic::Hold(order("h1")), &running, &rules);
    assert!(matches!(hold.steps[0], Step::Hold(_)));
    assert!(hold.steps.contains(&Step::Runtime {
        call: RuntimeCall::Freeze,
        on_failure: OnFailure::Keep
    }));
    assert!(matches!(hold.steps.last(), Some(Step::ReportHalted(_))));
    assert_eq!(hold.outcome, Some(AgentStatus::Halted));
    let mut held = running.clone();
    held.halt_ids = vec!["h1".into()];
    let again = plan_automatic(&Automatic::Hold(order("h1")), &held, &rules);
    assert!(
        !again
            .steps
            .iter()
            .any(|s| matches!(s, Step::ReportHalted(_) | Step::Hold(_))),
        "engaged again: frozen again, not reported again"
    );
    let release = |record: &AgentRecord| {
        plan_automatic(
            &Automatic::Release {
                halt_id: "h1".into(),
                reason: "fixed".into(),
                requested_by: "ops".into(),
            },
            record,
            &rules,
        )
    };
    let last = release(&held);
    let calls: Vec<&RuntimeCall> = last
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::Runtime { call, .. } => Some(call),
            _ => None,
        })
        .collect();
    assert_eq!(calls, [&RuntimeCall::RestoreLogin, &RuntimeCall::Thaw]);
    assert_eq!(last.outcome, Some(AgentStatus::Running));
    held.halt_ids.push("h2".into());
    let not_last = release(&held);
    assert_eq!(
        not_last.steps,
        [
            Step::Unhold {
                halt_id: "h1".into()
            },
            Step::Save
        ]
    );
    let mut stopped = held.clone();
    stopped.halt_ids = vec!["h1".into()];
    stopped.desired_state = DesiredState::Stopped;
    let quiet = release(&stopped);
    assert!(!quiet.steps.contains(&Step::Runtime {
        call: RuntimeCall::Thaw,
        on_failure: OnFailure::MarkFailed
    }));
    assert_eq!(quiet.outcome, Some(AgentStatus::Stopped));
}

/// While a halt holds it (the record, or the registry before the record knows), an
/// agent's start, resume, restart, update and pause are refused `halted`; stop and
/// delete work; another customer is told `forbidden` first; a create in an engaged
/// halt's scope is refused.
#[test]
fn a_held_agent_refuses_what_would_give_it_back() {
    let rules = Rules::of(&Config::defaults());
    let r = record(AgentStatus::Running);
    let holding = vec!["h1".to_string()];
    let code = |action: Action, customer: &str, holding: &[String]| {
        let p = crate::lifecycle::plan_with_holds(
            &command(action, customer, "m"),
            Some(&r),
            &rules,
            holding,
            None,
        );
        p.steps.iter().find_map(|s| match s {
            Step::Refuse { code, .. } => Some(*code),
            _ => None,
        })
    };
    for action in [
        Action::Start,
        Action::Resume,
        Action::Restart { timeout_s: 1 },
        Action::Pause,
        Action::Update {
            patch: Default::default(),
        },
    ] {
        assert_eq!(
            code(action.clone(), OWNER, &holding),
            Some(ErrorCode::Halted),
            "{action:?}"
        );
        assert_eq!(
            code(action.clone(), "c9", &holding),
            Some(ErrorCode::Forbidden),
            "{action:?}"
        );
        assert_ne!(code(action, OWNER, &[]), Some(ErrorCode::Halted));
    }
    for action in [
        Action::Stop(StopOrder {
            timeout_s: 1,
            force: false,
            reason: None,
            requested_by: None,
        }),
        Action::Delete { timeout_s: 1 },
    ] {
        assert_eq!(code(action, OWNER, &holding), None);
    }
    let create = command(
        Action::Create {
            spec: crate::protocol::sample_spec(),
            auto_start: true,
        },
        OWNER,
        "m",
    );
    let p = crate::lifecycle::plan_with_holds(&create, None, &rules, &[], Some("h9"));
    assert!(matches!(
        p.steps.as_slice(),
        [Step::Refuse {
            code: ErrorCode::Halted,
            ..
        }]
    ));
}

/// A halt's order through the executor: frozen (the fake pauses it), halted, reported
/// with its figures; the release gives the login back and thaws it.
#[tokio::test]
async fn a_hold_and_its_release_run_over_the_ports() {
    let f = fakes();
    let r = stored(&f, AgentStatus::Running);
    let (after, result) =
        crate::lifecycle::run_automatic(&f.deps, r, Automatic::Hold(order("h1"))).await;
    let events = result.expect("held");
    let after = after.expect("the record");
    assert_eq!(after.status(), AgentStatus::Halted);
    assert_eq!(after.halt_ids, vec!["h1".to_string()]);
    assert_eq!(kinds(&events), ["agent.halted"]);
    assert_eq!(events[0].details["cut_ms"], 3);
    let id = after.workload_id.clone().unwrap();
    assert_eq!(f.runtime.paused(&id), Some(true));
    let (after, result) = crate::lifecycle::run_automatic(
        &f.deps,
        after,
        Automatic::Release {
            halt_id: "h1".into(),
            reason: "fixed".into(),
            requested_by: "ops".into(),
        },
    )
    .await;
    let events = result.expect("released");
    let after = after.expect("the record");
    assert_eq!(kinds(&events), ["agent.released"]);
    assert_eq!(after.status(), AgentStatus::Running);
    assert!(after.halt_ids.is_empty() && after.halted_by.is_none());
    assert_eq!(f.runtime.paused(&id), Some(false));
}

#[test]
fn a_new_egress_list_changes_the_agent_in_place() {
    use super::plan::{changed_fields, update_kind, UpdateKind};
    let old = sample_spec();
    let mut new = old.clone();
    new.egress = vec!["api.example-exchange.com:443".into()];
    assert_eq!(update_kind(&old, &new), UpdateKind::InPlace);
    assert_eq!(changed_fields(&old, &new), vec!["egress"]);
    new.image = "autogen-agent:other".into();
    assert_eq!(update_kind(&old, &new), UpdateKind::Replace);
}

#[actix_rt::test]
async fn egress_rules_come_before_the_workload_follow_an_update_and_go_after_it() {
    let f = fakes();
    let after = created(&f, "m1").await;
    let entries = f.journal.entries();
    let allowed = entries
        .iter()
        .position(|e| e.starts_with(&format!("egress allow {AGENT}")))
        .expect("rules made");
    let made = entries
        .iter()
        .position(|e| e.starts_with("runtime create"))
        .expect("workload made");
    assert!(allowed < made, "no unfiltered moment: {entries:#?}");

    f.journal.clear();
    let patch = crate::protocol::SpecPatch {
        egress: Some(vec!["10.20.0.0/16:9878".into()]),
        ..Default::default()
    };
    let (after, result) = run_command(
        &f.deps,
        Some(after),
        &command(Action::Update { patch }, OWNER, "m2"),
    )
    .await;
    result.expect("updated");
    assert_eq!(
        f.journal.matching("egress "),
        vec![format!("egress allow {AGENT} 10.20.0.0/16:9878")]
    );
    assert!(f.journal.matching("runtime create").is_empty(), "in place");

    f.journal.clear();
    let (_, result) = run_command(
        &f.deps,
        after,
        &command(Action::Delete { timeout_s: 1 }, OWNER, "m3"),
    )
    .await;
    result.expect("deleted");
    let removed = f
        .journal
        .entries()
        .iter()
        .position(|e| e.starts_with("runtime remove"))
        .expect("removed");
    let forgotten = f
        .journal
        .position(&format!("egress forget {AGENT}"))
        .expect("rules removed");
    assert!(removed < forgotten);
}
