//! The automatic halt's watch (contract section 10): every `HALT_WATCH_INTERVAL_MS`, one
//! listing of the broker's channels with their publish counters (no per-agent call),
//! each agent's rate over `HALT_WINDOW_S` ([`crate::halt::rate`]), each publishing
//! agent's own limit (its `resources.max_messages_per_s`, read from its record, else
//! `HALT_MAX_MESSAGES_PER_S`), and an [`AutoHalt`] to the supervisor for each agent over
//! its limit. Runs only with per-agent credentials (an agent is known by its own user)
//! and a limit above 0.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::watch;

use crate::broker::management::Management;
use crate::credentials::agent_of_user;
use crate::halt::rate::{over_limit, ChannelCount, RateWatch};
use crate::store::Store;

/// An agent published more than its limit over the window: the supervisor halts it.
#[derive(Message, Debug, Clone, PartialEq)]
#[rtype(result = "()")]
pub struct AutoHalt {
    pub agent_id: String,
    /// Messages per second, averaged over the window.
    pub rate: f64,
    pub limit: f64,
    pub window_s: u64,
}

/// How long an agent's limit read from its record is trusted.
const LIMIT_TTL: Duration = Duration::from_secs(10);

/// Watches until `shutdown` turns true.
pub async fn run(
    management: Management,
    store: Store,
    default_limit: f64,
    window: Duration,
    every: Duration,
    halts: Recipient<AutoHalt>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut rates = RateWatch::new(window);
    let mut limits: HashMap<String, (Instant, Option<f64>)> = HashMap::new();
    let mut failing = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
        let listed = match management.channel_publish_counts().await {
            Ok(l) => {
                if failing {
                    tracing::info!("the rate watch reads the broker's channels again");
                }
                failing = false;
                l
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "the rate watch cannot list the broker's channels; trying again each interval");
                }
                failing = true;
                continue;
            }
        };
        let channels: HashMap<String, ChannelCount> = listed
            .into_iter()
            .filter_map(|c| {
                let agent_id = agent_of_user(&c.user)?.to_string();
                Some((
                    c.name,
                    ChannelCount {
                        agent_id,
                        published: c.published,
                    },
                ))
            })
            .collect();
        let now = Instant::now();
        let current = rates.observe(now, channels);
        let stale: Vec<String> = current
            .iter()
            .filter(|(_, r)| **r > 0.0)
            .map(|(a, _)| a.clone())
            .filter(|a| {
                limits
                    .get(a)
                    .is_none_or(|(at, _)| now.duration_since(*at) > LIMIT_TTL)
            })
            .collect();
        if !stale.is_empty() {
            match store.resources_of(&stale).await {
                Ok(read) => {
                    for (agent, res) in stale.into_iter().zip(read) {
                        limits.insert(agent, (now, res.and_then(|r| r.max_messages_per_s)));
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the rate watch cannot read the agents' limits")
                }
            }
        }
        limits.retain(|_, (at, _)| now.duration_since(*at) <= LIMIT_TTL * 6);
        let limit_of = |agent: &str| {
            let own = limits.get(agent).and_then(|(_, l)| *l);
            let limit = own.unwrap_or(default_limit);
            (limit > 0.0).then_some(limit)
        };
        for (agent_id, rate, limit) in over_limit(&current, limit_of) {
            tracing::warn!(%agent_id, rate, limit, "an agent publishes over its limit; halting it");
            halts.do_send(AutoHalt {
                agent_id,
                rate,
                limit,
                window_s: window.as_secs(),
            });
        }
    }
}
