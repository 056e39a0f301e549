//! The publishing rate of each agent (contract section 10's automatic halt), from the
//! broker's per-channel publish counters, without per-agent polling: one listing of
//! every channel per interval ([`RateWatch::observe`]). Pure: readings and time are
//! given.
//!
//! A channel's counter only grows while the channel lives; what a channel published
//! between two readings is the difference of its counters. The first reading is only a
//! baseline: what channels published before the watch began is not held against
//! anyone. An agent's rate is what its channels published within the last window,
//! divided by the window (so a watch younger than its window, or one that missed
//! readings, errs low, never high).
//!
//! The broker's listing comes from its statistics collector, which lags under load:
//! a channel can be missing from one listing, or listed without its counters, and be
//! back in the next with everything it ever published. None of that may read as a
//! burst (a thousand agents' start showed it: an agent halted for its lifetime's
//! messages). So a channel's highest counter is remembered for a window after it was
//! last listed, a listing without counters changes nothing, and a channel seen for the
//! first time after the baseline (new, or missed until now) is charged what the broker's
//! own rate for it says it published since the last reading, not its whole counter
//! (its whole counter only when the broker gives no rate). A channel that opens,
//! publishes and closes within one statistics interval is never listed: the watch
//! cannot see it.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// One channel as a listing shows it: whose agent (its user's), its publish count and
/// the broker's publish rate for it.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelCount {
    pub agent_id: String,
    /// `None` when the listing has no statistics for the channel (yet).
    pub published: Option<u64>,
    /// Messages per second, as the broker measures it; `None` when not given.
    pub rate: Option<f64>,
}

/// A channel the watch has seen: its agent, its highest counter, when it was last listed.
#[derive(Debug, Clone)]
struct Known {
    agent_id: String,
    published: u64,
    listed_at: Instant,
}

/// The rates of every agent's channels, over a sliding window.
#[derive(Debug, Clone)]
pub struct RateWatch {
    window: Duration,
    /// When the last reading was made; `None` before the first.
    last_at: Option<Instant>,
    /// The channels listed within the last window, by name.
    known: HashMap<String, Known>,
    /// What each agent published between readings, newest last, within the window.
    steps: VecDeque<(Instant, HashMap<String, u64>)>,
}

impl RateWatch {
    pub fn new(window: Duration) -> Self {
        RateWatch {
            window,
            last_at: None,
            known: HashMap::new(),
            steps: VecDeque::new(),
        }
    }

    /// Takes the reading `channels` (by channel name) made at `at`; returns each
    /// agent's rate (messages per second) averaged over the window.
    pub fn observe(
        &mut self,
        at: Instant,
        channels: HashMap<String, ChannelCount>,
    ) -> HashMap<String, f64> {
        let since = self.last_at.map(|last| at.saturating_duration_since(last));
        let mut step: HashMap<String, u64> = HashMap::new();
        for (name, now) in channels {
            let Some(published) = now.published else {
                if let Some(k) = self.known.get_mut(&name) {
                    k.listed_at = at;
                }
                continue;
            };
            let grew = match self.known.get(&name) {
                Some(k) if k.agent_id == now.agent_id => published.saturating_sub(k.published),
                // The baseline: nothing counted.
                _ if since.is_none() => 0,
                // First seen (new, or missed until now; or its name reused by another
                // agent's new channel): what the broker says it published since.
                _ => match (now.rate, since) {
                    (Some(rate), Some(dt)) => {
                        published.min((rate.max(0.0) * dt.as_secs_f64()).ceil() as u64)
                    }
                    _ => published,
                },
            };
            if grew > 0 {
                *step.entry(now.agent_id.clone()).or_default() += grew;
            }
            let highest = match self.known.get(&name) {
                Some(k) if k.agent_id == now.agent_id => k.published.max(published),
                _ => published,
            };
            self.known.insert(
                name,
                Known {
                    agent_id: now.agent_id,
                    published: highest,
                    listed_at: at,
                },
            );
        }
        self.last_at = Some(at);
        // A channel not listed for a window is closed.
        let window = self.window;
        self.known
            .retain(|_, k| at.saturating_duration_since(k.listed_at) < window);
        self.steps.push_back((at, step));
        while self
            .steps
            .front()
            .is_some_and(|(t, _)| at.saturating_duration_since(*t) >= self.window)
        {
            self.steps.pop_front();
        }
        let mut totals: HashMap<String, u64> = HashMap::new();
        for (_, step) in &self.steps {
            for (agent, n) in step {
                *totals.entry(agent.clone()).or_default() += n;
            }
        }
        let secs = self.window.as_secs_f64().max(0.001);
        totals
            .into_iter()
            .map(|(agent, n)| (agent, n as f64 / secs))
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
                        rate: None,
                    },
                )
            })
            .collect()
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
        assert!((rates["a"] - 20.0).abs() < 1e-9, "{rates:?}");
        // A new channel counts from zero; two channels of one agent add up.
        let rates = w.observe(
            t + s(3),
            reading(&[("c1", "a", 1_000_300), ("c2", "a", 50)]),
        );
        assert!((rates["a"] - 35.0).abs() < 1e-9, "{rates:?}");
        // Steps older than the window fall out.
        let rates = w.observe(
            t + s(14),
            reading(&[("c1", "a", 1_000_300), ("c2", "a", 50)]),
        );
        assert!(rates.get("a").is_none_or(|r| *r == 0.0), "{rates:?}");
    }

    #[test]
    fn closed_channels_and_reused_names_never_count_negative() {
        let t = Instant::now();
        let s = Duration::from_secs;
        let mut w = RateWatch::new(s(10));
        w.observe(t, reading(&[("c1", "a", 500)]));
        // c1 closed and its name reused by agent b's new channel.
        let rates = w.observe(t + s(1), reading(&[("c1", "b", 30)]));
        assert_eq!(rates.get("a"), None);
        assert!((rates["b"] - 3.0).abs() < 1e-9);
        let over = over_limit(&rates, |agent| (agent == "b").then_some(2.0));
        assert_eq!(over, vec![("b".to_string(), 3.0, 2.0)]);
        assert!(over_limit(&rates, |_| None).is_empty());
    }

    fn listed(published: Option<u64>, rate: Option<f64>) -> ChannelCount {
        ChannelCount {
            agent_id: "a".into(),
            published,
            rate,
        }
    }

    #[test]
    fn a_lagging_listing_never_reads_as_a_burst() {
        let t = Instant::now();
        let s = Duration::from_secs;
        let mut w = RateWatch::new(s(5));
        let one = |c: ChannelCount| HashMap::from([("c1".to_string(), c)]);
        w.observe(t, one(listed(Some(10_000), Some(1.0))));
        // Missing from a listing, then back with one more message: one message.
        w.observe(t + s(1), HashMap::new());
        let rates = w.observe(t + s(2), one(listed(Some(10_001), Some(1.0))));
        assert!((rates["a"] - 0.2).abs() < 1e-9, "{rates:?}");
        // Listed without its counters, then back: nothing new.
        w.observe(t + s(3), one(listed(None, None)));
        let rates = w.observe(t + s(4), one(listed(Some(10_001), Some(0.0))));
        assert!((rates["a"] - 0.2).abs() < 1e-9, "{rates:?}");
        // A counter that dips and comes back is not counted twice.
        w.observe(t + s(5), one(listed(Some(0), Some(0.0))));
        let rates = w.observe(t + s(6), one(listed(Some(10_001), Some(0.0))));
        assert!((rates["a"] - 0.2).abs() < 1e-9, "{rates:?}");
    }

    #[test]
    fn a_channel_first_seen_late_is_charged_its_rate_not_its_lifetime() {
        let t = Instant::now();
        let s = Duration::from_secs;
        let mut w = RateWatch::new(s(5));
        w.observe(t, HashMap::new());
        // Missed by the baseline: 50,000 published over its life, 2 a second now.
        let late = HashMap::from([("c9".to_string(), listed(Some(50_000), Some(2.0)))]);
        let rates = w.observe(t + s(1), late);
        assert!((rates["a"] - 2.0 / 5.0).abs() < 1e-9, "{rates:?}");
        // A new channel that floods: charged by its rate (capped by its counter), and
        // its growth counts in full from then on.
        let flood = |n| HashMap::from([("c8".to_string(), listed(Some(n), Some(400.0)))]);
        let rates = w.observe(t + s(2), flood(300));
        assert!((rates["a"] - (2.0 + 300.0) / 5.0).abs() < 1e-9, "{rates:?}");
        let rates = w.observe(t + s(3), flood(700));
        assert!((rates["a"] - (2.0 + 700.0) / 5.0).abs() < 1e-9, "{rates:?}");
        // Without a rate from the broker, a first sighting counts its whole counter.
        let mut w = RateWatch::new(s(5));
        w.observe(t, HashMap::new());
        let rates = w.observe(
            t + s(1),
            HashMap::from([("c7".to_string(), listed(Some(40), None))]),
        );
        assert!((rates["a"] - 8.0).abs() < 1e-9, "{rates:?}");
    }
}
