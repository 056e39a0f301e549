//! What team commands (contract section 9) and a member's deletion do to teams, with
//! deciding apart from doing, as [`crate::lifecycle`] does for one agent:
//!
//! - [`plan`]: pure. A team command, the team's record and the members' states as
//!   their agent actors hold them ([`MemberView`]) → a [`TeamPlan`]; every refusal
//!   (foreign team or member, unknown, not running, a different team under the same id)
//!   is decided here. Also what losing members leaves of a team ([`plan::after_loss`]).
//! - [`executor`]: carries a plan out over [`crate::context::Deps`]: the team's record
//!   (durable first), the `agent:<agent_id>:team` message to each member, then the
//!   answer, remembered under the command's message id.
//!
//! The team actor ([`crate::actors::team`]) runs these one at a time: it is the only
//! writer of team records.

pub mod executor;
pub mod plan;

#[cfg(test)]
mod tests;

pub use executor::{member_gone, reconcile, run_command};
pub use plan::{MemberState, MemberView, TeamPlan};
