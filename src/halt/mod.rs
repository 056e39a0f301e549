//! What halt commands do (contract section 10), with deciding apart from doing, as
//! [`crate::lifecycle`] does for one agent and [`crate::team`] for teams:
//!
//! - [`plan`]: pure. A halt command, the halt as it stands, the agents the manager
//!   knows and the scope's team → a [`HaltPlan`]: the agents a new halt takes out, or a
//!   refusal naming what does not exist or is another customer's.
//!
//! - [`rate`]: pure. Each agent's publishing rate from the broker's channel counters,
//!   for the automatic halt.
//!
//! The halt actor ([`crate::actors::halt`]) carries a plan out, one halt command at a
//! time: the halt kept (Redis and RabbitMQ) and registered in [`crate::record::holds`],
//! every agent cut at once ([`crate::ports::CredentialIssuer::cut`]), then each agent
//! frozen by its own actor (a lifecycle plan, [`crate::lifecycle::Automatic::Hold`]), then
//! the answer. What a halt means to one agent (its status `halted`, the refusals) is in
//! [`crate::record::status`] and [`crate::lifecycle::plan`].

pub mod plan;
pub mod rate;

pub use plan::{plan, HaltPlan, Known};
