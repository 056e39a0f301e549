//! What this binary was built from: the crate's version and the git commit (`build.rs`
//! sets `AGENT_MANAGER_GIT_COMMIT`; `unknown` when built without git or `GIT_COMMIT`).

/// The crate's version, as in Cargo.toml.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git commit the binary was built from (12 hex digits), or `unknown`.
pub const GIT_COMMIT: &str = env!("AGENT_MANAGER_GIT_COMMIT");

/// What `agent-manager --version` prints after the name: `0.1.0 (commit 1a2b3c4d5e6f)`.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("AGENT_MANAGER_GIT_COMMIT"),
    ")"
);
