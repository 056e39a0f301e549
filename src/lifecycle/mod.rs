//! What commands (and self-healing) do to one agent, with deciding apart from doing:
//!
//! - [`plan`]: pure. `plan(command, record, rules) -> Plan`: the steps and the status
//!   they leave; every refusal (unknown agent, foreign customer, spec conflict, GPUs
//!   outside GPU mode) is decided here.
//! - [`executor`]: runs a plan over the ports in [`crate::context::Deps`] (runtime,
//!   record store, event sink, quota ledger): durable before published, answered once.
//! - [`workload`]: the runtime calls, with a vanished workload made anew in one place.
//! - [`automatic`]: what happens without a command: healing a crashed or unhealthy
//!   agent, finishing a delete a dead manager left half done; plans of their own
//!   ([`plan_automatic`]) run by the same executor.
//!
//! What a failure does (retried, and when, or answered) is said in one place:
//! [`crate::error::AgentError::disposition`].
//!
//! Every status change goes through [`crate::record::status::transition`].
//! The AgentActor runs these one at a time per agent.

pub mod automatic;
pub mod executor;
pub mod plan;
pub mod workload;

#[cfg(test)]
mod tests;

pub use automatic::{finish_delete, heal};
pub use executor::{answer_unknown, run_automatic, run_command, Trigger};
pub use plan::{plan, plan_automatic, plan_with_holds, Automatic, HoldOrder, Plan, Rules, Step};
