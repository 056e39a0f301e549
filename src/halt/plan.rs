//! Deciding what a halt command does, without doing it (section 10): [`plan`] takes the
//! command, the halt as it stands (if engaged), the agents the manager knows
//! ([`Known`]) and, for a team scope, the team; it resolves the scope to agents and
//! decides every refusal (an agent that does not exist or is another customer's, a
//! team that does not exist or is another's, another customer's scope, a different
//! halt under the same id, a release by another customer). Pure.

use chrono::{DateTime, Utc};

use crate::protocol::{AgentType, ErrorCode, HaltAction, HaltCommand, HaltScope, HaltTarget};
use crate::record::halt::HaltRecord;
use crate::record::team::TeamRecord;

/// An agent the manager knows, as a halt's scope sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Known {
    pub agent_id: String,
    pub customer_id: String,
    pub agent_type: AgentType,
}

/// What a halt command does.
#[derive(Debug, Clone, PartialEq)]
pub enum HaltPlan {
    /// Answered with `agent.error`; nothing is halted or released. `agent_ids`: the
    /// agents the refusal names.
    Refuse {
        code: ErrorCode,
        message: String,
        agent_ids: Vec<String>,
    },
    /// Take these agents out: record the halt, cut, freeze, answer `halt.engaged`.
    /// `again`: the same halt engaged again (answered again, its enforcement applied
    /// again).
    Engage { halt: HaltRecord, again: bool },
    /// Give the halt's agents back (those no other halt holds), forget it, answer
    /// `halt.released`.
    Release {
        halt: HaltRecord,
        reason: String,
        requested_by: String,
    },
}

fn refuse(code: ErrorCode, message: String, agent_ids: Vec<String>) -> HaltPlan {
    HaltPlan::Refuse {
        code,
        message,
        agent_ids,
    }
}

/// The plan of `cmd`. `existing`: the halt under its id, if engaged; `known`: every
/// agent of the installation; `team`: the scope's team when the scope names one.
pub fn plan(
    cmd: &HaltCommand,
    existing: Option<&HaltRecord>,
    known: &[Known],
    team: Option<&TeamRecord>,
    now: DateTime<Utc>,
) -> HaltPlan {
    match &cmd.action {
        HaltAction::Engage {
            scope,
            reason,
            requested_by,
        } => {
            if let Some(halt) = existing {
                if halt.customer_id == cmd.customer_id && &halt.scope == scope {
                    return HaltPlan::Engage {
                        halt: halt.clone(),
                        again: true,
                    };
                }
                return refuse(
                    ErrorCode::AlreadyExists,
                    format!(
                        "halt {} is engaged with another scope or customer; release it first",
                        cmd.halt_id
                    ),
                    Vec::new(),
                );
            }
            match agents_in(cmd, scope, known, team) {
                Ok(agent_ids) => HaltPlan::Engage {
                    halt: HaltRecord {
                        halt_id: cmd.halt_id.clone(),
                        customer_id: cmd.customer_id.clone(),
                        scope: scope.clone(),
                        reason: reason.clone(),
                        requested_by: requested_by.clone(),
                        engaged_at: now,
                        agent_ids,
                        automatic: false,
                    },
                    again: false,
                },
                Err(refusal) => *refusal,
            }
        }
        HaltAction::Release {
            reason,
            requested_by,
        } => match existing {
            None => refuse(
                ErrorCode::NotFound,
                format!("halt {} is not engaged", cmd.halt_id),
                Vec::new(),
            ),
            Some(halt) if halt.customer_id != cmd.customer_id && !halt.is_platform() => refuse(
                ErrorCode::Forbidden,
                format!(
                    "halt {} was engaged by another customer: only it may release it",
                    cmd.halt_id
                ),
                Vec::new(),
            ),
            Some(halt) => HaltPlan::Release {
                halt: halt.clone(),
                reason: reason.clone(),
                requested_by: requested_by.clone(),
            },
        },
    }
}

/// The agents `scope` names, narrowed by its types; a refusal when it names what does
/// not exist or is not the sender's.
fn agents_in(
    cmd: &HaltCommand,
    scope: &HaltScope,
    known: &[Known],
    team: Option<&TeamRecord>,
) -> Result<Vec<String>, Box<HaltPlan>> {
    let of_type = |k: &&Known| scope.admits_type(k.agent_type);
    let ids = |it: &mut dyn Iterator<Item = &Known>| -> Vec<String> {
        let mut v: Vec<String> = it.filter(of_type).map(|k| k.agent_id.clone()).collect();
        v.sort();
        v
    };
    match &scope.target {
        HaltTarget::AgentIds(wanted) => {
            let mut missing = Vec::new();
            let mut foreign = Vec::new();
            let mut found = Vec::new();
            for id in wanted {
                match known.iter().find(|k| &k.agent_id == id) {
                    None => missing.push(id.clone()),
                    Some(k) if k.customer_id != cmd.customer_id => foreign.push(id.clone()),
                    Some(k) => found.push(k),
                }
            }
            if !foreign.is_empty() {
                return Err(Box::new(refuse(
                    ErrorCode::Forbidden,
                    format!(
                        "agents of another customer in the scope: {}",
                        foreign.join(", ")
                    ),
                    foreign,
                )));
            }
            if !missing.is_empty() {
                return Err(Box::new(refuse(
                    ErrorCode::NotFound,
                    format!("agents in the scope do not exist: {}", missing.join(", ")),
                    missing,
                )));
            }
            Ok(ids(&mut found.into_iter()))
        }
        HaltTarget::TeamId(team_id) => match team {
            None => Err(Box::new(refuse(
                ErrorCode::NotFound,
                format!("team {team_id} does not exist"),
                Vec::new(),
            ))),
            Some(t) if t.customer_id != cmd.customer_id => Err(Box::new(refuse(
                ErrorCode::Forbidden,
                format!("team {team_id} belongs to another customer"),
                Vec::new(),
            ))),
            Some(t) => Ok(ids(&mut known
                .iter()
                .filter(|k| t.agent_ids.contains(&k.agent_id)))),
        },
        HaltTarget::CustomerId(customer) if customer != &cmd.customer_id => Err(Box::new(refuse(
            ErrorCode::Forbidden,
            format!("a customer may halt only its own agents, not customer {customer}'s"),
            Vec::new(),
        ))),
        HaltTarget::CustomerId(customer) => Ok(ids(&mut known
            .iter()
            .filter(|k| &k.customer_id == customer))),
        HaltTarget::Platform => Ok(ids(&mut known.iter())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::HaltCommandKind;

    fn known(id: &str, customer: &str, t: AgentType) -> Known {
        Known {
            agent_id: id.into(),
            customer_id: customer.into(),
            agent_type: t,
        }
    }

    fn fleet() -> Vec<Known> {
        vec![
            known("a1", "c1", AgentType::Trading),
            known("a2", "c1", AgentType::Analysis),
            known("b1", "c2", AgentType::Trading),
        ]
    }

    fn engage(target: HaltTarget, types: Option<Vec<AgentType>>) -> HaltCommand {
        HaltCommand {
            message_id: "m".into(),
            message_id_given: true,
            kind: HaltCommandKind::Engage,
            halt_id: "h1".into(),
            customer_id: "c1".into(),
            action: HaltAction::Engage {
                scope: HaltScope {
                    target,
                    agent_types: types,
                },
                reason: "runaway".into(),
                requested_by: "ops".into(),
            },
        }
    }

    fn engaged(plan: HaltPlan) -> Vec<String> {
        match plan {
            HaltPlan::Engage { halt, again: false } => halt.agent_ids,
            other => panic!("{other:?}"),
        }
    }

    fn refused(plan: HaltPlan) -> (ErrorCode, Vec<String>) {
        match plan {
            HaltPlan::Refuse {
                code, agent_ids, ..
            } => (code, agent_ids),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn each_scope_resolves_to_its_agents_narrowed_by_type() {
        let now = Utc::now();
        let p = |t, types| plan(&engage(t, types), None, &fleet(), None, now);
        assert_eq!(
            engaged(p(HaltTarget::AgentIds(vec!["a2".into()]), None)),
            ["a2"]
        );
        assert_eq!(
            engaged(p(HaltTarget::CustomerId("c1".into()), None)),
            ["a1", "a2"]
        );
        assert_eq!(
            engaged(p(HaltTarget::Platform, Some(vec![AgentType::Trading]))),
            ["a1", "b1"]
        );
        let team = TeamRecord::new(
            "t1",
            "c1",
            vec!["a1".into(), "a2".into()],
            serde_json::json!({}),
        );
        let teamed = plan(
            &engage(
                HaltTarget::TeamId("t1".into()),
                Some(vec![AgentType::Analysis]),
            ),
            None,
            &fleet(),
            Some(&team),
            now,
        );
        assert_eq!(engaged(teamed), ["a2"]);
        assert!(engaged(p(
            HaltTarget::CustomerId("c1".into()),
            Some(vec![AgentType::Custom])
        ))
        .is_empty());
    }

    #[test]
    fn unknown_and_foreign_agents_teams_and_customers_are_refused_by_name() {
        let now = Utc::now();
        let p = |t| plan(&engage(t, None), None, &fleet(), None, now);
        assert_eq!(
            refused(p(HaltTarget::AgentIds(vec!["a1".into(), "zz".into()]))),
            (ErrorCode::NotFound, vec!["zz".to_string()])
        );
        assert_eq!(
            refused(p(HaltTarget::AgentIds(vec!["b1".into(), "zz".into()]))),
            (ErrorCode::Forbidden, vec!["b1".to_string()])
        );
        assert_eq!(
            refused(p(HaltTarget::CustomerId("c2".into()))).0,
            ErrorCode::Forbidden
        );
        assert_eq!(
            refused(p(HaltTarget::TeamId("t9".into()))).0,
            ErrorCode::NotFound
        );
        let theirs = TeamRecord::new("t2", "c2", vec!["b1".into()], serde_json::json!({}));
        assert_eq!(
            refused(plan(
                &engage(HaltTarget::TeamId("t2".into()), None),
                None,
                &fleet(),
                Some(&theirs),
                now
            ))
            .0,
            ErrorCode::Forbidden
        );
    }

    #[test]
    fn an_engaged_halt_is_answered_again_and_released_only_by_its_customer_unless_platform() {
        let now = Utc::now();
        let cmd = engage(HaltTarget::CustomerId("c1".into()), None);
        let HaltPlan::Engage { halt, .. } = plan(&cmd, None, &fleet(), None, now) else {
            panic!()
        };
        assert!(matches!(
            plan(&cmd, Some(&halt), &fleet(), None, now),
            HaltPlan::Engage { again: true, .. }
        ));
        let other = engage(HaltTarget::Platform, None);
        assert_eq!(
            refused(plan(&other, Some(&halt), &fleet(), None, now)).0,
            ErrorCode::AlreadyExists
        );
        let release = |customer: &str| HaltCommand {
            kind: HaltCommandKind::Release,
            customer_id: customer.into(),
            action: HaltAction::Release {
                reason: "fixed".into(),
                requested_by: "ops".into(),
            },
            ..cmd.clone()
        };
        assert!(matches!(
            plan(&release("c1"), Some(&halt), &fleet(), None, now),
            HaltPlan::Release { .. }
        ));
        assert_eq!(
            refused(plan(&release("c2"), Some(&halt), &fleet(), None, now)).0,
            ErrorCode::Forbidden
        );
        assert_eq!(
            refused(plan(&release("c1"), None, &fleet(), None, now)).0,
            ErrorCode::NotFound
        );
        let mut platform = halt.clone();
        platform.scope.target = HaltTarget::Platform;
        assert!(matches!(
            plan(&release("c2"), Some(&platform), &fleet(), None, now),
            HaltPlan::Release { .. }
        ));
    }
}
