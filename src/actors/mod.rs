//! The actors: thin shells that order work and hold state between messages; what they
//! do is decided in `lifecycle`, `team` and `health`.
//!
//! - [`agent`]: the AgentActor, one per agent, ordering its commands, looks and heals.
//! - [`team`]: the TeamActor, the one writer of team records, ordering team commands
//!   and the cleanup after a member's deletion.
//! - [`halt`]: the HaltActor, the one writer of halts: cut every agent in scope at
//!   once, then has each frozen by its own actor, and gives them back on release.
//! - [`rate_watch`]: the automatic halt's watch of every agent's publishing rate (one
//!   listing of the broker's channels per interval).
//! - [`supervisor`]: the registry of agent actors, routing commands and events to them
//!   and team commands to the team actor, and every agent's heartbeat, read in one Redis
//!   round trip per check interval.
//! - [`reconcile`]: adopts existing agents at start (not an actor: the start's first
//!   step, and the reissue of a lost login the agent actor runs).
//! - [`readiness`]: pauses consuming while Redis or Docker is unreachable.

pub mod agent;
pub mod halt;
pub mod rate_watch;
pub mod readiness;
pub mod reconcile;
pub mod supervisor;
pub mod team;
