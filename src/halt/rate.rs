//! The publishing rate of each agent (contract section 10's automatic halt), from the
//! broker's per-channel publish counters, without per-agent polling: one listing of
//! every channel per interval ([`RateWatch::observe`]). Pure: readings and time are
//! given.
//!
//! A channel's counter only grows while the channel lives. The first reading is only a
//! baseline: what channels published before the watch began is not held against
//! anyone, and neither is what a channel listed for the first time (new, or missed
//! until now) shows then; from then on its growth counts. An agent's rate is what its
//! channels published within the last window, divided by the window (so a watch
//! younger than its window, or one that missed readings, errs low, never high).
//!
//! The broker's listing comes from its statistics collector, which lags under load: a
//! channel's counter can stand still for half a minute and then catch up at once, a
//! channel can be missing from one listing or listed without its counters. None of
//! that may read as a burst (a thousand agents publishing ten messages a second each
//! were halted for 51 to 63 a second when the counters caught up). So a channel's
//! growth is spread over the time since its counter last moved, not put in one
//! reading; its highest counter is remembered for a window after it was last listed,
//! and a listing without counters changes nothing. What that costs: an agent that
//! starts to flood after a long silence is seen at the broker's second update of its
//! counter, not its first. A channel that opens, publishes and closes within one
//! statistics interval is never listed: the watch cannot see it.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// One channel as a listing shows it: whose agent (its user's) and its publish count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelCount {
    pub agent_id: String,
    /// `None` when the listing has no statistics for the channel (yet).
    pub published: Option<u64>,
}

/// A channel the watch has seen.
#[derive(Debug, Clone)]
struct Known {
    agent_id: String,
    /// Its highest counter.
    published: u64,
    /// When that counter was first read (the channel published it by then).
    moved_at: Instant,
    /// When it was last listed.
    listed_at: Instant,
}

/// Messages one agent's channel published, spread evenly over `from..to`.
#[derive(Debug, Clone)]
struct Spread {
    from: Instant,
    to: Instant,
    agent_id: String,
    messages: u64,
}

impl Spread {
    /// Its messages within `start..end`.
    fn within(&self, start: Instant, end: Instant) -> f64 {
        let span = self.to.saturating_duration_since(self.from).as_secs_f64();
        if span <= 0.0 {
            return if self.to > start && self.to <= end {
                self.messages as f64
            } else {
                0.0
            };
        }
        let from = self.from.max(start);
        let to = self.to.min(end);
        let overlap = to.saturating_duration_since(from).as_secs_f64();
        self.messages as f64 * overlap / span
    }
}

/// The rates of every agent's channels, over a sliding window.
#[derive(Debug, Clone)]
pub struct RateWatch {
    window: Duration,
    /// The channels listed within the last window, by name.
    known: HashMap<String, Known>,
    /// What the channels published, each growth spread over its time, oldest first.
    spreads: VecDeque<Spread>,
}

impl RateWatch {
    pub fn new(window: Duration) -> Self {
        RateWatch {
            window,
            known: HashMap::new(),
            spreads: VecDeque::new(),
        }
    }

    /// Takes the reading `channels` (by channel name) made at `at`; returns each
    /// agent's rate (messages per second) averaged over the window.
    pub fn observe(
        &mut self,
        at: Instant,
        channels: HashMap<String, ChannelCount>,
    ) -> HashMap<String, f64> {
        for (name, now) in channels {
            let Some(published) = now.published else {
                if let Some(k) = self.known.get_mut(&name) {
                    k.listed_at = at;
                }
                continue;
            };
            match self.known.get_mut(&name) {
                Some(k) if k.agent_id == now.agent_id => {
                    k.listed_at = at;
                    if published > k.published {
                        self.spreads.push_back(Spread {
                            from: k.moved_at,
                            to: at,
                            agent_id: now.agent_id,
                            messages: published - k.published,
                        });
                        k.published = published;
                        k.moved_at = at;
                    }
                }
                // First listed (or its name reused by another agent's new channel): a
                // baseline.
                _ => {
                    self.known.insert(
                        name,
                        Known {
                            agent_id: now.agent_id,
                            published,
                            moved_at: at,
                            listed_at: at,
                        },
                    );
                }
            }
        }
        let window = self.window;
        // A channel not listed for a window is closed.
        self.known
            .retain(|_, k| at.saturating_duration_since(k.listed_at) < window);
        let start = at.checked_sub(window).unwrap_or(at);
        self.spreads.retain(|s| s.to > start);
        let mut totals: HashMap<String, f64> = HashMap::new();
        for s in &self.spreads {
            *totals.entry(s.agent_id.clone()).or_default() += s.within(start, at);
        }
        let secs = window.as_secs_f64().max(0.001);
        totals
            .into_iter()
            .filter(|(_, n)| *n > 0.0)
            .map(|(agent, n)| (agent, n / secs))
            .collect()
    }
}

/// The agents whose rate is over their limit (`limit_of`: `None` for no limit), with
/// the rate and the limit, by agent id.
pub fn over_limit(
    rates: &HashMap<String, f64>,
    limit_of: impl Fn(&str) -> Option<f64>,
) -> Vec<(String, f64, f64)> {
    let mut over: Vec<(String, f64, f64)> = rates
        .iter()
        .filter_map(|(agent, rate)| {
            let limit = limit_of(agent)?;
            (*rate > limit).then(|| (agent.clone(), *rate, limit))
        })
        .collect();
    over.sort_by(|a, b| a.0.cmp(&b.0));
    over
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(entries: &[(&str, &str, u64)]) -> HashMap<String, ChannelCount> {
        entries
            .iter()
            .map(|(ch, agent, n)| {
                (
                    ch.to_string(),
                    ChannelCount {
                        agent_id: agent.to_string(),
                        published: Some(*n),
                    },
                )
            })
            .collect()
    }

    fn close(rates: &HashMap<String, f64>, agent: &str, want: f64) -> bool {
        (rates.get(agent).copied().unwrap_or(0.0) - want).abs() < 1e-9
    }

    #[test]
    fn the_first_reading_is_a_baseline_and_rates_are_averaged_over_the_window() {
        let t = Instant::now();
        let s = Duration::from_secs;
        let mut w = RateWatch::new(s(10));
        assert!(w.observe(t, reading(&[("c1", "a", 1_000_000)])).is_empty());
        // 100 messages a second for 2 s: 200 within a 10 s window is 20/s.
        w.observe(t + s(1), reading(&[("c1", "a", 1_000_100)]));
        let rates = w.observe(t + s(2), reading(&[("c1", "a", 1_000_200)]));
        assert!(close(&rates, "a", 20.0), "{rates:?}");
        // A channel listed for the first time is a baseline too; two channels of one
        // agent add up.
        let rates = w.observe(
            t + s(3),
            reading(&[("c1", "a", 1_000_300), ("c2", "a", 50)]),
        );
        assert!(close(&rates, "a", 30.0), "{rates:?}");
        let rates = w.observe(
            t + s(4),
            reading(&[("c1", "a", 1_000_300), ("c2", "a", 60)]),
        );
        assert!(close(&rates, "a", 31.0), "{rates:?}");
        // What is older than the window falls out.
        let rates = w.observe(
            t + s(15),
            reading(&[("c1", "a", 1_000_300), ("c2", "a", 60)]),
        );
        assert!(rates.is_empty(), "{rates:?}");
    }

    #[test]
    fn closed_channels_and_reused_names_never_count_negative() {
        let t = Instant::now();
        let s = Duration::from_secs;
        let mut w = RateWatch::new(s(10));
        w.observe(t, reading(&[("c1", "a", 500)]));
        // c1 closed and its name reused by agent b's new channel: a baseline for b.
        let rates = w.observe(t + s(1), reading(&[("c1", "b", 30)]));
        assert!(rates.is_empty(), "{rates:?}");
        let rates = w.observe(t + s(2), reading(&[("c1", "b", 60)]));
        assert!(close(&rates, "b", 3.0), "{rates:?}");
        let over = over_limit(&rates, |agent| (agent == "b").then_some(2.0));
        assert_eq!(over, vec![("b".to_string(), 3.0, 2.0)]);
        assert!(over_limit(&rates, |_| None).is_empty());
    }

    #[test]
    fn counters_that_stall_and_catch_up_read_at_their_true_rate() {
        let t = Instant::now();
        let s = Duration::from_secs;
        let mut w = RateWatch::new(s(5));
        // Ten messages a second; the broker's counter stands still for 25 s, then
        // catches up at once: 10/s, not 250 in one reading (50/s).
        w.observe(t, reading(&[("c1", "a", 1_000)]));
        for i in 1..25 {
            let rates = w.observe(t + s(i), reading(&[("c1", "a", 1_000)]));
            assert!(rates.is_empty(), "{rates:?}");
        }
        let rates = w.observe(t + s(25), reading(&[("c1", "a", 1_250)]));
        assert!(close(&rates, "a", 10.0), "{rates:?}");
        // A flood after that silence shows at the counter's next move.
        let rates = w.observe(t + s(30), reading(&[("c1", "a", 1_750)]));
        assert!(close(&rates, "a", 100.0), "{rates:?}");
    }

    #[test]
    fn a_lagging_listing_never_reads_as_a_burst() {
        let t = Instant::now();
        let s = Duration::from_secs;
        let mut w = RateWatch::new(s(5));
        let one = |n: Option<u64>| {
            HashMap::from([(
                "c1".to_string(),
                ChannelCount {
                    agent_id: "a".into(),
                    published: n,
                },
            )])
        };
        w.observe(t, one(Some(10_000)));
        // Missing from a listing, then back with two more messages over those 2 s.
        w.observe(t + s(1), HashMap::new());
        let rates = w.observe(t + s(2), one(Some(10_002)));
        assert!(close(&rates, "a", 0.4), "{rates:?}");
        // Listed without its counters, then back: nothing new.
        w.observe(t + s(3), one(None));
        let rates = w.observe(t + s(4), one(Some(10_002)));
        assert!(close(&rates, "a", 0.4), "{rates:?}");
        // A counter that dips and comes back is not counted twice (the 2 messages of
        // t..t+2 are half within t+1..t+6).
        w.observe(t + s(5), one(Some(0)));
        let rates = w.observe(t + s(6), one(Some(10_002)));
        assert!(close(&rates, "a", 0.2), "{rates:?}");
        // A channel first listed late, with everything it ever published: a baseline.
        let late = HashMap::from([(
            "c9".to_string(),
            ChannelCount {
                agent_id: "b".into(),
                published: Some(50_000),
            },
        )]);
        let rates = w.observe(t + s(7), late);
        assert!(!rates.contains_key("b"), "{rates:?}");
    }
}
