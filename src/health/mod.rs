//! Looking at one agent: `observe` (Docker I/O, skipped while the agent's heartbeat
//! answers for it), `assess` (pure: the heartbeat's verdict ([`judge`]), the new status,
//! numbers and what self-healing should do), and the `agent.health` event.
//!
//! Two sources say whether an agent is healthy. Its **heartbeat** (contract section 8),
//! read for every agent at once by the supervisor each check interval and handed to
//! each actor ([`BeatRead`]): healthy while the key says `ok`, unhealthy when it says
//! `unhealthy`, hung when it expired after the agent had written one since its
//! container started. And **Docker**: the container's state (from events, the relist,
//! and an inspect when the heartbeat cannot answer) and a HEALTHCHECK where one is set.
//! Either one saying unhealthy makes the agent unhealthy; an agent that never wrote a
//! heartbeat is judged by Docker alone, unless its image promises heartbeats (the label
//! `autogen.heartbeat=true`, [`heartbeat::promised_by`]): then it is `starting` for the
//! start period after its container starts ([`judge_silence`]; the supervisor reads its
//! key every second meanwhile, [`first_beat_wait`]), and unhealthy if none came in it.
//!
//! The folder: [`verdict`] (the heartbeat's, pure), [`assess`] (what a look means,
//! pure), [`observe`] (the Docker and Redis I/O of a look, and `check`, which does one).

pub mod assess;
pub mod observe;
#[cfg(test)]
mod tests;
pub mod verdict;

pub use assess::*;
pub use observe::*;
pub use verdict::*;
