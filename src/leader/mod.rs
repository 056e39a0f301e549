//! Many managers, one leader (contract section 12). Managers of one installation
//! (`MANAGER_INSTANCE`) share a lease in Redis, `manager:<instance>:leader`; the one
//! holding it acts (consumes commands, watches Docker, heals, reconciles, audits, watches
//! rates), the others stand by, warm, and take over when the lease ends.
//!
//! - `lease.rs` (pure): the lease's clock: when to renew, the leader's own deadline;
//! - `elector.rs`: the loop that takes, renews and releases the lease, and says the role.
//!
//! The scripts themselves are in `store/leader.rs`.

pub mod elector;
pub mod lease;

pub use elector::{
    Backend, Elector, LeaseBackend, OnDeposed, RedisLease, RedisLeaseSpec, Role, EXIT_DEPOSED,
};
pub use lease::Timing;
