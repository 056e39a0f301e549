//! End-to-end benchmarks against the real RabbitMQ, Redis and Docker
//! (`bash scripts/services.sh` first).
//!
//!   cargo bench --bench e2e                      # every scenario, full size
//!   E2E=detect cargo bench --bench e2e           # one scenario
//!   cargo test --bench e2e                       # quick smoke (tiny sizes), as CI runs it
//!
//! Scenarios, one file each (its `//!` says what it measures and its sizes' variables),
//! run in this order:
//! - `detect`: `docker kill` → `agent.health` latency.
//! - `monitor`: a manager monitoring running agents: its CPU and RSS, dockerd's CPU.
//! - `lifecycle`: create + start throughput and latency, through the manager (per-agent
//!   and shared credentials) beside straight through bollard.
//! - `burst`: thousands of `agent.start` for running agents: the manager's cost per
//!   command, every command answered once and acked.
//! - `scale`: monitoring at scale, and the memory of each created-but-stopped agent.
//! - `pause`: `agent.pause` → `agent.paused` beside Docker's own pause call.
//! - `recovery`: a manager restart with running agents, in each deployment mode: time to
//!   ready and to the first answer.
//! - `machine`: what monitoring costs the whole machine, bare agents beside managed ones,
//!   and hung agents' reports.
//! - `autogen`: the reference AutoGen agent: create → first answer, task round trips,
//!   idle cost.
//! - `halt`: a customer's halt of running agents whose own connections the bench holds:
//!   connections refused, containers frozen beside Docker's own pause, the release, the
//!   automatic halt, and what the rate watch costs.
//! - `failover`: many managers, one leader: `kill -9` of the leader → the new leader's
//!   first answer, beside a single manager's restart; `SIGTERM` hand-over; a standby's
//!   cost.
//! - `egress`: create throughput with the kernel's egress rules beside without, rule
//!   sets at 1,000 agents (write, update, size, a connection's cost), the proxy's
//!   round trip beside a direct one.
//!
//! What they share is in `support/`. Results are printed and written to
//! `target/bench-results/<scenario>.json`, with the load average before and after each
//! scenario (the figures are only comparable side by side within one run).

#[path = "../../tests/common/mod.rs"]
mod common;

mod autogen;
mod burst;
mod detect;
mod egress;
mod failover;
mod halt;
mod lifecycle;
mod machine;
mod monitor;
mod pause;
mod recovery;
mod scale;
mod support;

use support::sizes::sizes;

fn main() {
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .init();
    }
    let s = sizes();
    let only = std::env::var("E2E").unwrap_or_default();
    let wanted = |name: &str| only.is_empty() || only.split(',').any(|o| o == name);
    actix_rt::System::new().block_on(async {
        if wanted("detect") {
            detect::detect(&s).await;
        }
        if wanted("monitor") {
            monitor::monitor(&s).await;
        }
        if wanted("lifecycle") {
            lifecycle::lifecycle(&s).await;
        }
        if wanted("burst") {
            burst::burst(&s).await;
        }
        if wanted("scale") {
            scale::scale(&s).await;
        }
        if wanted("pause") {
            pause::pause(&s).await;
        }
        if wanted("recovery") {
            for mode in recovery::recovery_modes() {
                recovery::recovery(&s, &mode).await;
            }
        }
        if wanted("machine") {
            machine::machine(&s).await;
        }
        if wanted("autogen") {
            autogen::autogen(&s).await;
        }
        if wanted("halt") {
            halt::halt(&s).await;
        }
        if wanted("failover") {
            failover::failover(&s).await;
        }
        if wanted("egress") {
            egress::egress(&s).await;
        }
    });
}
