//! Deciding what a team command does, without doing it: [`plan`] turns a team command,
//! the team's record and the members' states into a [`TeamPlan`]; [`after_loss`] says
//! what a team is once some members are gone. Pure: no I/O, no clock beyond a new
//! record's timestamps; unit tests in `team/tests.rs`.

use std::fmt;

use crate::protocol::{AgentStatus, ErrorCode, TeamAction, TeamCommand, TEAM_MIN_MEMBERS};
use crate::record::status;
use crate::record::team::TeamRecord;

/// What the agent actor of a would-be member knows of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberState {
    pub customer_id: String,
    pub status: AgentStatus,
}

/// One would-be member as its agent actor saw it, after every command received before
/// the team command (`None`: no such agent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    pub agent_id: String,
    pub state: Option<MemberState>,
}

/// Why an agent cannot be a member. A foreign agent is named as such and nothing else
/// is said of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unfit {
    NotFound,
    /// Belongs to another customer.
    Forbidden,
    /// Exists but does not run (its status).
    NotRunning(AgentStatus),
}

impl Unfit {
    /// How `agent.error`'s `details.members` names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Unfit::NotFound => "not_found",
            Unfit::Forbidden => "forbidden",
            Unfit::NotRunning(_) => "not_running",
        }
    }
}

impl fmt::Display for Unfit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unfit::NotFound => f.write_str("does not exist"),
            Unfit::Forbidden => f.write_str("belongs to another customer"),
            Unfit::NotRunning(status) => write!(f, "is {}, not running", status.as_str()),
        }
    }
}

/// What a team command does.
#[derive(Debug, Clone, PartialEq)]
pub enum TeamPlan {
    /// Answer `agent.error`; nothing is saved or sent. `unfit` names the members that
    /// are not as required.
    Refuse {
        code: ErrorCode,
        message: String,
        unfit: Vec<(String, Unfit)>,
    },
    /// Keep `team` (saved unless `existing`), tell every member, answer
    /// `team.orchestrated`.
    Form { team: TeamRecord, existing: bool },
    /// Tell every member, remove `team`, answer `team.disbanded`.
    Disband { team: TeamRecord },
}

/// The plan of `cmd` for the team whose record is `existing`, with the would-be
/// members as `members` (orchestrate; ignored by disband).
pub fn plan(cmd: &TeamCommand, existing: Option<&TeamRecord>, members: &[MemberView]) -> TeamPlan {
    let team_id = &cmd.team_id;
    if existing.is_some_and(|t| t.customer_id != cmd.customer_id) {
        // Nothing of the team is told: not its members, not its config.
        return refuse(
            ErrorCode::Forbidden,
            format!("team {team_id} belongs to another customer"),
        );
    }
    match &cmd.action {
        TeamAction::Disband => match existing {
            None => refuse(
                ErrorCode::NotFound,
                format!("team {team_id} does not exist"),
            ),
            Some(team) => TeamPlan::Disband { team: team.clone() },
        },
        TeamAction::Orchestrate {
            agent_ids,
            orchestrator_config,
        } => {
            let unfit = unfit_members(&cmd.customer_id, agent_ids, members);
            if !unfit.is_empty() {
                return refuse_members(team_id, unfit);
            }
            match existing {
                Some(team) if team.same_as(agent_ids, orchestrator_config) => TeamPlan::Form {
                    team: team.clone(),
                    existing: true,
                },
                Some(_) => refuse(
                    ErrorCode::AlreadyExists,
                    format!(
                        "team {team_id} already exists with other members or another \
                         orchestrator_config; disband it first"
                    ),
                ),
                None => TeamPlan::Form {
                    team: TeamRecord::new(
                        team_id,
                        &cmd.customer_id,
                        agent_ids.clone(),
                        orchestrator_config.clone(),
                    ),
                    existing: false,
                },
            }
        }
    }
}

fn refuse(code: ErrorCode, message: String) -> TeamPlan {
    TeamPlan::Refuse {
        code,
        message,
        unfit: Vec::new(),
    }
}

/// Each of `agent_ids` that is not an existing, running agent of `customer_id`, in the
/// order given. A member the views do not cover counts as unknown.
pub fn unfit_members(
    customer_id: &str,
    agent_ids: &[String],
    members: &[MemberView],
) -> Vec<(String, Unfit)> {
    agent_ids
        .iter()
        .filter_map(|id| {
            let state = members
                .iter()
                .find(|m| &m.agent_id == id)
                .and_then(|m| m.state.as_ref());
            let unfit = match state {
                None => Unfit::NotFound,
                Some(s) if s.customer_id != customer_id => Unfit::Forbidden,
                Some(s) if status::row(s.status).serves => return None,
                Some(s) => Unfit::NotRunning(s.status),
            };
            Some((id.clone(), unfit))
        })
        .collect()
}

/// The refusal naming every unfit member: `forbidden` when one is another customer's,
/// else `not_found` when one does not exist, else `halted` when a halt holds one
/// (section 10), else `validation_failed` (not running).
fn refuse_members(team_id: &str, unfit: Vec<(String, Unfit)>) -> TeamPlan {
    let code = if unfit.iter().any(|(_, u)| *u == Unfit::Forbidden) {
        ErrorCode::Forbidden
    } else if unfit.iter().any(|(_, u)| *u == Unfit::NotFound) {
        ErrorCode::NotFound
    } else if unfit
        .iter()
        .any(|(_, u)| *u == Unfit::NotRunning(AgentStatus::Halted))
    {
        ErrorCode::Halted
    } else {
        ErrorCode::ValidationFailed
    };
    let named: Vec<String> = unfit.iter().map(|(id, u)| format!("{id} {u}")).collect();
    TeamPlan::Refuse {
        code,
        message: format!(
            "team {team_id} not formed, nothing was sent: every member must be a running \
             agent of the customer, and {}",
            named.join(", ")
        ),
        unfit,
    }
}

/// What is left of a team once the members `gone` are no more.
#[derive(Debug, Clone, PartialEq)]
pub enum AfterLoss {
    /// Not a member: nothing changes.
    Untouched,
    /// Enough members left: the team with them.
    Shrunk(TeamRecord),
    /// Fewer than two left: the team ends; the members left are told.
    Dissolved { remaining: Vec<String> },
}

/// The team `team` without `gone`.
pub fn after_loss(team: &TeamRecord, gone: &[String]) -> AfterLoss {
    if !team.agent_ids.iter().any(|a| gone.contains(a)) {
        return AfterLoss::Untouched;
    }
    let remaining: Vec<String> = team
        .agent_ids
        .iter()
        .filter(|a| !gone.contains(a))
        .cloned()
        .collect();
    if remaining.len() < TEAM_MIN_MEMBERS {
        return AfterLoss::Dissolved { remaining };
    }
    let mut shrunk = team.clone();
    shrunk.agent_ids = remaining;
    shrunk.updated_at = chrono::Utc::now();
    AfterLoss::Shrunk(shrunk)
}
