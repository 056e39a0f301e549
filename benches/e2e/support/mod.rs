//! What the scenarios share: their sizes, their results, process probes, a manager
//! process to measure, and Docker without the manager.

pub mod docker;
pub mod manager;
pub mod probe;
pub mod report;
pub mod sizes;
