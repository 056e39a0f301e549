//! Teams without services: every team command against every kind of member (unknown,
//! foreign, not running, running), redelivery, a foreign team, a member deleted, members
//! that vanished while the manager was down, and Redis or RabbitMQ away — planned
//! ([`plan`]) and carried out over the in-memory fakes.

use std::collections::HashSet;

use serde_json::{json, Value};

use super::executor::{member_gone, reconcile, run_command};
use super::plan::{after_loss, plan, AfterLoss, MemberState, MemberView, TeamPlan, Unfit};
use crate::config::Config;
use crate::fakes::Fakes;
use crate::protocol::{AgentStatus, ErrorCode, Event, TeamAction, TeamCommand, TeamCommandKind};
use crate::record::team::TeamRecord;

const OWNER: &str = "c1";
const INTRUDER: &str = "c-other";
const TEAM: &str = "t-1";

fn ids(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn orchestrate(customer: &str, members: &[&str], message_id: &str) -> TeamCommand {
    TeamCommand {
        message_id: message_id.into(),
        message_id_given: true,
        kind: TeamCommandKind::Orchestrate,
        team_id: TEAM.into(),
        customer_id: customer.into(),
        action: TeamAction::Orchestrate {
            agent_ids: ids(members),
            orchestrator_config: json!({"mode": "round_robin"}),
        },
    }
}

fn disband(customer: &str, message_id: &str) -> TeamCommand {
    TeamCommand {
        message_id: message_id.into(),
        message_id_given: true,
        kind: TeamCommandKind::Disband,
        team_id: TEAM.into(),
        customer_id: customer.into(),
        action: TeamAction::Disband,
    }
}

fn view(id: &str, customer: &str, status: AgentStatus) -> MemberView {
    MemberView {
        agent_id: id.into(),
        state: Some(MemberState {
            customer_id: customer.into(),
            status,
        }),
    }
}

fn running(names: &[&str]) -> Vec<MemberView> {
    names
        .iter()
        .map(|n| view(n, OWNER, AgentStatus::Running))
        .collect()
}

fn team(members: &[&str]) -> TeamRecord {
    TeamRecord::new(TEAM, OWNER, ids(members), json!({"mode": "round_robin"}))
}

fn fakes() -> Fakes {
    Fakes::new(Config::defaults(), 0)
}

fn kinds(events: &[Event]) -> Vec<&'static str> {
    events.iter().map(Event::routing_key).collect()
}

fn refusal(p: &TeamPlan) -> (ErrorCode, Vec<(String, Unfit)>) {
    match p {
        TeamPlan::Refuse { code, unfit, .. } => (*code, unfit.clone()),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

// ---- Planning: pure ----

#[test]
fn every_member_must_exist_belong_to_the_customer_and_run() {
    let cmd = orchestrate(OWNER, &["a", "b", "c"], "m");
    let ok = plan(&cmd, None, &running(&["a", "b", "c"]));
    assert!(
        matches!(ok, TeamPlan::Form { existing: false, ref team } if team.agent_ids == ids(&["a", "b", "c"]))
    );
    // Unhealthy still runs.
    let mut members = running(&["a", "b"]);
    members.push(view("c", OWNER, AgentStatus::Unhealthy));
    assert!(matches!(plan(&cmd, None, &members), TeamPlan::Form { .. }));
    // Every status that is not running is refused, naming the member.
    for status in AgentStatus::ALL {
        if matches!(status, AgentStatus::Running | AgentStatus::Unhealthy) {
            continue;
        }
        let mut members = running(&["a", "b"]);
        members.push(view("c", OWNER, status));
        let (code, unfit) = refusal(&plan(&cmd, None, &members));
        let expected = match status {
            AgentStatus::Halted => ErrorCode::Halted,
            _ => ErrorCode::ValidationFailed,
        };
        assert_eq!(code, expected, "{status:?}");
        assert_eq!(unfit, vec![("c".to_string(), Unfit::NotRunning(status))]);
    }
    // Unknown (no view, or no state) and foreign members; the worst decides the code.
    let members = vec![
        view("a", OWNER, AgentStatus::Running),
        MemberView {
            agent_id: "b".into(),
            state: None,
        },
    ];
    let (code, unfit) = refusal(&plan(&cmd, None, &members));
    assert_eq!(code, ErrorCode::NotFound);
    assert_eq!(
        unfit,
        vec![
            ("b".to_string(), Unfit::NotFound),
            ("c".to_string(), Unfit::NotFound)
        ]
    );
    let mut members = running(&["a", "b"]);
    members.push(view("c", INTRUDER, AgentStatus::Stopped));
    let (code, unfit) = refusal(&plan(&cmd, None, &members));
    assert_eq!(code, ErrorCode::Forbidden);
    assert_eq!(
        unfit,
        vec![("c".to_string(), Unfit::Forbidden)],
        "no status told"
    );
    let TeamPlan::Refuse { message, .. } = plan(&cmd, None, &members) else {
        panic!()
    };
    assert!(
        !message.contains("stopped"),
        "nothing of a foreign agent: {message}"
    );
}

#[test]
fn a_team_id_is_one_customers_and_one_team() {
    let cmd = orchestrate(OWNER, &["a", "b"], "m");
    let foreign = TeamRecord::new(TEAM, INTRUDER, ids(&["theirs-1", "theirs-2"]), json!({}));
    let (code, _) = refusal(&plan(&cmd, Some(&foreign), &running(&["a", "b"])));
    assert_eq!(code, ErrorCode::Forbidden);
    let TeamPlan::Refuse { message, .. } = plan(&cmd, Some(&foreign), &[]) else {
        panic!()
    };
    assert!(
        !message.contains("theirs"),
        "nothing of the owner's team: {message}"
    );
    // The same team again: answered again; another team under the id: already_exists.
    let same = team(&["b", "a"]);
    assert!(matches!(
        plan(&cmd, Some(&same), &running(&["a", "b"])),
        TeamPlan::Form { existing: true, .. }
    ));
    let other = team(&["a", "c"]);
    let (code, _) = refusal(&plan(&cmd, Some(&other), &running(&["a", "b"])));
    assert_eq!(code, ErrorCode::AlreadyExists);
    // Disband: unknown, foreign, own.
    let (code, _) = refusal(&plan(&disband(OWNER, "m"), None, &[]));
    assert_eq!(code, ErrorCode::NotFound);
    let (code, _) = refusal(&plan(&disband(OWNER, "m"), Some(&foreign), &[]));
    assert_eq!(code, ErrorCode::Forbidden);
    assert!(matches!(
        plan(&disband(OWNER, "m"), Some(&same), &[]),
        TeamPlan::Disband { .. }
    ));
}

#[test]
fn losing_members_shrinks_a_team_or_ends_it_below_two() {
    let t = team(&["a", "b", "c"]);
    assert_eq!(after_loss(&t, &ids(&["z"])), AfterLoss::Untouched);
    match after_loss(&t, &ids(&["b"])) {
        AfterLoss::Shrunk(s) => assert_eq!(s.agent_ids, ids(&["a", "c"])),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        after_loss(&t, &ids(&["a", "c"])),
        AfterLoss::Dissolved {
            remaining: ids(&["b"])
        }
    );
}

// ---- Carried out over the fakes ----

#[tokio::test]
async fn orchestrate_keeps_the_team_tells_each_member_then_answers() {
    let f = fakes();
    let cmd = orchestrate(OWNER, &["a", "b"], "m-1");
    run_command(&f.deps, &cmd, &running(&["a", "b"]))
        .await
        .expect("applied");
    let kept = f.store.team(TEAM).expect("kept");
    assert_eq!(kept.agent_ids, ids(&["a", "b"]));
    assert_eq!(kept.customer_id, OWNER);
    let messages = f.sink.messages();
    let keys: Vec<&str> = messages.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["agent:a:team", "agent:b:team"]);
    assert_eq!(
        messages[0].1,
        json!({"team_id": TEAM, "members": ["a", "b"],
               "orchestrator_config": {"mode": "round_robin"}, "disbanded": false})
    );
    let events = f.sink.published();
    assert_eq!(kinds(&events), ["team.orchestrated"]);
    let e = &events[0];
    assert_eq!(e.team_id.as_deref(), Some(TEAM));
    assert_eq!(e.agent_ids, Some(ids(&["a", "b"])));
    assert_eq!(e.correlation_id.as_deref(), Some("m-1"));
    // Durable, then told, then answered.
    let j = f.journal.entries();
    let saved = j.iter().position(|e| e == &format!("save team {TEAM}"));
    let told = j.iter().position(|e| e.starts_with("message "));
    let answered = j
        .iter()
        .position(|e| e.starts_with("publish team.orchestrated"));
    assert!(saved < told && told < answered, "{j:?}");
    // Redelivered: answered again from Redis, nothing sent again.
    f.sink.clear();
    run_command(&f.deps, &cmd, &running(&["a", "b"]))
        .await
        .expect("answered");
    assert_eq!(f.sink.published(), events, "the same answer");
    assert!(f.sink.messages().is_empty());
}

#[tokio::test]
async fn a_refused_team_command_sends_nothing_and_keeps_nothing() {
    let cases: Vec<(&str, TeamCommand, Vec<MemberView>, &str)> = vec![
        (
            "unknown member",
            orchestrate(OWNER, &["a", "b"], "m"),
            running(&["a"]),
            "not_found",
        ),
        (
            "foreign member",
            orchestrate(OWNER, &["a", "b"], "m"),
            vec![
                view("a", OWNER, AgentStatus::Running),
                view("b", INTRUDER, AgentStatus::Running),
            ],
            "forbidden",
        ),
        (
            "member not running",
            orchestrate(OWNER, &["a", "b"], "m"),
            vec![
                view("a", OWNER, AgentStatus::Running),
                view("b", OWNER, AgentStatus::Paused),
            ],
            "validation_failed",
        ),
        ("unknown team", disband(OWNER, "m"), vec![], "not_found"),
    ];
    for (case, cmd, members, code) in cases {
        let f = fakes();
        run_command(&f.deps, &cmd, &members)
            .await
            .expect("answered");
        let events = f.sink.published();
        assert_eq!(kinds(&events), ["agent.error"], "{case}");
        assert_eq!(events[0].details["code"], code, "{case}");
        assert_eq!(events[0].status, "failed", "{case}");
        assert_eq!(events[0].team_id.as_deref(), Some(TEAM), "{case}");
        assert!(f.sink.messages().is_empty(), "{case}: nothing sent");
        assert!(f.store.team(TEAM).is_none(), "{case}: nothing kept");
        assert!(
            f.store.processed_answer("m").is_some(),
            "{case}: remembered"
        );
        if case != "unknown team" {
            let members = &events[0].details["members"];
            assert!(members.get("b").is_some(), "{case}: names b: {members}");
            assert!(members.get("a").is_none(), "{case}: not a: {members}");
        }
    }
}

#[tokio::test]
async fn another_customers_team_is_forbidden_and_left_as_it_was() {
    let f = fakes();
    f.store.put_team(team(&["a", "b"]));
    let before = f.store.team(TEAM);
    for cmd in [
        orchestrate(INTRUDER, &["x", "y"], "m-o"),
        disband(INTRUDER, "m-d"),
    ] {
        f.sink.clear();
        let members = vec![
            view("x", INTRUDER, AgentStatus::Running),
            view("y", INTRUDER, AgentStatus::Running),
        ];
        run_command(&f.deps, &cmd, &members)
            .await
            .expect("answered");
        let events = f.sink.published();
        assert_eq!(events[0].details["code"], "forbidden");
        assert_eq!(events[0].customer_id, INTRUDER);
        assert_eq!(events[0].agent_ids, None, "learns nothing of the members");
        assert!(!events[0].details.to_string().contains("round_robin"));
        assert!(f.sink.messages().is_empty());
        assert_eq!(f.store.team(TEAM), before, "the owner's team as it was");
    }
}

#[tokio::test]
async fn disband_tells_the_members_removes_the_team_and_answers() {
    let f = fakes();
    f.store.put_team(team(&["a", "b"]));
    run_command(&f.deps, &disband(OWNER, "m-d"), &[])
        .await
        .expect("applied");
    assert!(f.store.team(TEAM).is_none());
    let told: Vec<(String, Value)> = f.sink.messages();
    assert_eq!(told.len(), 2);
    assert!(told.iter().all(|(_, b)| b["disbanded"] == true));
    let events = f.sink.published();
    assert_eq!(kinds(&events), ["team.disbanded"]);
    assert_eq!(events[0].correlation_id.as_deref(), Some("m-d"));
    assert_eq!(f.store.processed_answer("m-d"), Some(events));
}

#[tokio::test]
async fn with_redis_or_rabbitmq_away_a_team_command_is_retried_not_answered() {
    let f = fakes();
    f.store.fail_writes(1);
    let cmd = orchestrate(OWNER, &["a", "b"], "m");
    let err = run_command(&f.deps, &cmd, &running(&["a", "b"]))
        .await
        .expect_err("retried");
    assert!(err.is_transient_infrastructure());
    assert!(f.sink.published().is_empty());
    f.sink.set_failing(true);
    let err = run_command(&f.deps, &cmd, &running(&["a", "b"]))
        .await
        .expect_err("retried");
    assert!(err.is_transient_infrastructure());
    f.sink.set_failing(false);
    run_command(&f.deps, &cmd, &running(&["a", "b"]))
        .await
        .expect("applied on retry");
    assert_eq!(kinds(&f.sink.published()), ["team.orchestrated"]);
}

#[tokio::test]
async fn a_deleted_member_leaves_its_teams_and_a_team_of_one_ends() {
    let f = fakes();
    f.store.put_team(team(&["a", "b", "c"]));
    let mut pair = TeamRecord::new("t-2", OWNER, ids(&["a", "b"]), json!({}));
    pair.team_id = "t-2".into();
    f.store.put_team(pair);
    let theirs = TeamRecord::new("t-3", INTRUDER, ids(&["a", "q"]), json!({}));
    f.store.put_team(theirs.clone());
    member_gone(&f.deps, "a", OWNER).await.expect("cleaned up");
    assert_eq!(
        f.store.team(TEAM).map(|t| t.agent_ids),
        Some(ids(&["b", "c"]))
    );
    assert!(f.store.team("t-2").is_none(), "one member left: ended");
    assert_eq!(
        f.store.team("t-3").map(|t| t.agent_ids),
        Some(theirs.agent_ids),
        "another customer's"
    );
    let told: Vec<String> = f.sink.messages().into_iter().map(|(k, _)| k).collect();
    assert!(told.contains(&"agent:b:team".to_string()));
    assert!(told.contains(&"agent:c:team".to_string()));
    assert!(
        !told.contains(&"agent:a:team".to_string()),
        "the deleted one is not told"
    );
    let events = f.sink.published();
    assert_eq!(kinds(&events), ["team.disbanded"]);
    assert_eq!(events[0].team_id.as_deref(), Some("t-2"));
    assert_eq!(events[0].correlation_id, None);
    assert_eq!(events[0].details["reason"], "too_few_members");
}

#[tokio::test]
async fn at_start_teams_lose_the_members_that_vanished_meanwhile() {
    let f = fakes();
    f.store.put_team(team(&["a", "b", "c"]));
    f.store
        .put_team(TeamRecord::new("t-2", OWNER, ids(&["x", "y"]), json!({})));
    f.store
        .put_team(TeamRecord::new("t-3", OWNER, ids(&["a", "b"]), json!({})));
    let alive: HashSet<String> = ids(&["a", "b"]).into_iter().collect();
    let changed = reconcile(&f.deps, &alive).await.expect("reconciled");
    assert_eq!(changed, 2);
    assert_eq!(
        f.store.team(TEAM).map(|t| t.agent_ids),
        Some(ids(&["a", "b"]))
    );
    assert!(f.store.team("t-2").is_none());
    assert!(f.store.team("t-3").is_some(), "untouched");
    assert_eq!(kinds(&f.sink.published()), ["team.disbanded"]);
}
