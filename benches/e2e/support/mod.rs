//! What the scenarios share: their sizes, their results, process probes, a manager
//! process to measure, Docker without the manager, and the agents' own logins.

pub mod docker;
pub mod logins;
pub mod manager;
pub mod probe;
pub mod report;
pub mod sizes;
