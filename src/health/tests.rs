//! Unit tests of the pure parts of a look: verdicts, assessments, reports.

use super::*;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::config::HealthConfig;
use crate::protocol::heartbeat::{self, BeatStatus, Heartbeat, HeartbeatError};
use crate::protocol::DesiredState;
use crate::protocol::{rfc3339, AgentStatus};
use crate::record::status::{transition, Cause};
use crate::record::AgentRecord;
use crate::runtime::Observed;
use AgentStatus::*;

fn obs(running: bool, health: &str) -> Observed {
    Observed {
        running,
        health: health.into(),
        state: if running { "running" } else { "exited" }.into(),
        exit_code: (!running).then_some(3),
        ..Default::default()
    }
}

fn record(status: AgentStatus) -> AgentRecord {
    let mut r = AgentRecord::new("a", crate::protocol::sample_spec(), DesiredState::Running);
    transition(&mut r, Cause::Restored(status));
    r.workload_id = Some("cid".into());
    r
}

fn cfg() -> HealthConfig {
    let mut c = Config::defaults().health;
    c.unhealthy_restart_after = 2;
    c.crash_loop_max_restarts = 2;
    c
}

fn look(o: Observed) -> Observation {
    Observation {
        observed: Some(o),
        ..Default::default()
    }
}

#[test]
fn a_crash_schedules_a_restart_then_a_crash_loop_gives_up() {
    let cfg = cfg();
    let mut w = Watch::new(&cfg);
    let mut r = record(Running);
    let t = Instant::now();
    let heal = assess(&mut r, &mut w, &look(obs(false, "none")), &cfg, t, 0.5);
    assert!(matches!(heal, Heal::RestartAfter(_)));
    assert_eq!(r.status(), Restarting);
    let error = r.last_error.clone().unwrap_or_default();
    assert!(error.contains("code 3"), "{error}");
    // Seen again before the restart happened: nothing new.
    assert_eq!(
        assess(&mut r, &mut w, &look(obs(false, "none")), &cfg, t, 0.5),
        Heal::Nothing
    );
    // Restarted, then crashes again, twice: the second exceeds the limit of 2.
    assess(&mut r, &mut w, &look(obs(true, "none")), &cfg, t, 0.5);
    assert!(matches!(
        assess(&mut r, &mut w, &look(obs(false, "none")), &cfg, t, 0.5),
        Heal::RestartAfter(_)
    ));
    assess(&mut r, &mut w, &look(obs(true, "none")), &cfg, t, 0.5);
    let heal = assess(&mut r, &mut w, &look(obs(false, "none")), &cfg, t, 0.5);
    assert!(
        matches!(heal, Heal::CrashLoop { restarts: 2, .. }),
        "{heal:?}"
    );
    assert_eq!(r.status(), Failed);
    assert!(r
        .last_error
        .as_deref()
        .unwrap_or_default()
        .contains("crash loop"));
    assert_eq!(
        assess(&mut r, &mut w, &look(obs(false, "none")), &cfg, t, 0.5),
        Heal::Nothing
    );
    w.reset(Some(Running), t);
    assert_eq!(w.healing, Healing::Watching);
}

#[test]
fn a_stopped_agent_is_never_restarted() {
    let cfg = cfg();
    let mut w = Watch::new(&cfg);
    let mut r = record(Stopped);
    r.desired_state = DesiredState::Stopped;
    let heal = assess(
        &mut r,
        &mut w,
        &look(obs(false, "none")),
        &cfg,
        Instant::now(),
        0.5,
    );
    assert_eq!(heal, Heal::Nothing);
    assert_eq!(r.status(), Stopped);
}

#[test]
fn unhealthy_for_n_looks_restarts() {
    let cfg = cfg();
    let mut w = Watch::new(&cfg);
    let mut r = record(Running);
    let t = Instant::now();
    assert_eq!(
        assess(&mut r, &mut w, &look(obs(true, "unhealthy")), &cfg, t, 0.5),
        Heal::Nothing
    );
    assert_eq!(r.status(), Unhealthy);
    assert_eq!(
        assess(&mut r, &mut w, &look(obs(true, "unhealthy")), &cfg, t, 0.5),
        Heal::RestartNow(Reason::Unhealthy)
    );
    // A healthy look in between resets the count.
    assess(&mut r, &mut w, &look(obs(true, "unhealthy")), &cfg, t, 0.5);
    assess(&mut r, &mut w, &look(obs(true, "healthy")), &cfg, t, 0.5);
    assert_eq!(
        assess(&mut r, &mut w, &look(obs(true, "unhealthy")), &cfg, t, 0.5),
        Heal::Nothing
    );
}

fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap()
}

fn beat(ts_ms: i64, status: BeatStatus, detail: &str) -> BeatRead {
    BeatRead::Present(Ok(Heartbeat {
        ts_ms,
        status,
        detail: detail.into(),
    }))
}

/// A running container that started at `started_ms`, as Docker inspects it.
fn started(started_ms: i64) -> Observed {
    Observed {
        id: "cid".into(),
        started_at: Some(rfc3339(at(started_ms))),
        ..obs(true, "none")
    }
}

#[test]
fn a_heartbeat_that_says_ok_is_healthy_and_remembered() {
    let read = beat(5_000, BeatStatus::Ok, "");
    let (v, seen) = judge(Some(&read), Some(at(1_000)), None);
    assert_eq!(v, Verdict::Healthy);
    assert_eq!(seen, Some(at(5_000)));
    // An older heartbeat read later never moves the memory back.
    let (_, seen) = judge(Some(&beat(4_000, BeatStatus::Ok, "")), None, seen);
    assert_eq!(seen, Some(at(5_000)));
}

#[test]
fn a_heartbeat_that_says_unhealthy_is_unhealthy_with_its_words() {
    let (v, _) = judge(
        Some(&beat(5_000, BeatStatus::Unhealthy, "db down")),
        None,
        None,
    );
    assert_eq!(
        v,
        Verdict::Unhealthy("the agent says it is unhealthy: db down".into())
    );
    let (v, _) = judge(Some(&beat(5_000, BeatStatus::Unhealthy, "")), None, None);
    assert_eq!(
        v,
        Verdict::Unhealthy("the agent says it is unhealthy".into())
    );
    let garbage = BeatRead::Present(Err(HeartbeatError::NotTheObject("not JSON".into())));
    let (v, seen) = judge(Some(&garbage), None, Some(at(1)));
    assert!(
        matches!(&v, Verdict::Unhealthy(why) if why.contains("does not read: the heartbeat is not the contract's JSON object: not JSON")),
        "{v:?}"
    );
    assert_eq!(seen, Some(at(1)));
}

#[test]
fn an_expired_heartbeat_is_hung_only_if_this_run_wrote_one() {
    let missing = BeatRead::Missing;
    // Seen since the container started: hung.
    assert_eq!(
        judge(Some(&missing), Some(at(1_000)), Some(at(2_000))).0,
        Verdict::Hung
    );
    // Only seen from an earlier run of the container: not this run's business.
    assert_eq!(
        judge(Some(&missing), Some(at(3_000)), Some(at(2_000))).0,
        Verdict::Silent
    );
    // Never heartbeated: the container decides.
    assert_eq!(
        judge(Some(&missing), Some(at(1_000)), None).0,
        Verdict::Silent
    );
    // Not read yet: nothing to say.
    assert_eq!(
        judge(None, Some(at(1_000)), Some(at(2_000))).0,
        Verdict::Silent
    );
    // The start unknown: any heartbeat seen counts.
    assert_eq!(
        judge(Some(&missing), None, Some(at(2_000))).0,
        Verdict::Hung
    );
}

#[test]
fn a_heartbeat_from_before_the_container_started_is_an_earlier_runs() {
    // The key outlives a restart: its unhealthy word is not the new run's.
    let stale = beat(2_000, BeatStatus::Unhealthy, "old");
    let (v, seen) = judge(Some(&stale), Some(at(3_000)), Some(at(2_000)));
    assert_eq!((v, seen), (Verdict::Silent, Some(at(2_000))));
    // ... unless this run wrote one since, and it is gone: hung.
    let (v, _) = judge(Some(&stale), Some(at(3_000)), Some(at(4_000)));
    assert_eq!(v, Verdict::Hung);
}

#[test]
fn health_is_unhealthy_when_either_source_says_so() {
    assert_eq!(combined_health("none", &Verdict::Healthy), "healthy");
    assert_eq!(combined_health("unhealthy", &Verdict::Healthy), "unhealthy");
    assert_eq!(combined_health("healthy", &Verdict::Hung), "unhealthy");
    assert_eq!(
        combined_health("none", &Verdict::Unhealthy("x".into())),
        "unhealthy"
    );
    assert_eq!(combined_health("starting", &Verdict::Silent), "starting");
    assert_eq!(combined_health("none", &Verdict::Silent), "none");
}

#[test]
fn missing_keys_are_believed_only_after_a_grace_from_a_good_read() {
    let grace = Duration::from_secs(11);
    let mut trust = BeatTrust::new(grace);
    let t = Instant::now();
    assert!(
        !trust.restarted("r1"),
        "the first server seen is no restart"
    );
    assert!(!trust.on_read("r1", t), "the manager just started");
    assert!(!trust.on_read("r1", t + Duration::from_secs(5)));
    assert!(trust.on_read("r1", t + grace));
    // Redis away: the agents could not write either.
    trust.on_failure();
    let back = t + Duration::from_secs(60);
    assert!(!trust.restarted("r1"), "away and back is no restart");
    assert!(!trust.on_read("r1", back));
    assert!(trust.on_read("r1", back + grace));
    // Redis restarted (every key lost) between two reads.
    let later = back + Duration::from_secs(60);
    assert!(trust.restarted("r2"));
    assert!(!trust.on_read("r2", later));
    assert!(!trust.restarted("r2"), "told once");
    assert!(trust.on_read("r2", later + grace));
}

#[test]
fn a_hung_agent_is_unhealthy_then_restarted_like_any_unhealthy_one() {
    let cfg = cfg(); // unhealthy_restart_after = 2
    let mut w = Watch::new(&cfg);
    let mut r = record(Running);
    let t = Instant::now();
    let look = look(started(1_000));
    w.beat = Some(beat(2_000, BeatStatus::Ok, ""));
    assert_eq!(assess(&mut r, &mut w, &look, &cfg, t, 0.5), Heal::Nothing);
    assert_eq!((r.status(), r.health.as_str()), (Running, "healthy"));
    assert_eq!(r.last_heartbeat_at, Some(at(2_000)));
    // The key expires.
    w.beat = Some(BeatRead::Missing);
    assert_eq!(assess(&mut r, &mut w, &look, &cfg, t, 0.5), Heal::Nothing);
    assert_eq!((r.status(), r.health.as_str()), (Unhealthy, "unhealthy"));
    assert_eq!(w.verdict, Verdict::Hung);
    assert!(r.last_error.as_deref().unwrap_or_default().contains("hung"));
    assert_eq!(
        assess(&mut r, &mut w, &look, &cfg, t, 0.5),
        Heal::RestartNow(Reason::Unhealthy)
    );
    // The agent writes again: healthy, the count starts over.
    w.beat = Some(beat(9_000, BeatStatus::Ok, ""));
    assess(&mut r, &mut w, &look, &cfg, t, 0.5);
    assert_eq!((r.status(), r.health.as_str()), (Running, "healthy"));
    assert_eq!(w.unhealthy_streak, 0);
}

#[test]
fn an_agent_that_never_heartbeated_is_judged_by_its_container() {
    let cfg = cfg();
    let mut w = Watch::new(&cfg);
    let mut r = record(Running);
    let t = Instant::now();
    w.beat = Some(BeatRead::Missing);
    for _ in 0..3 {
        assert_eq!(
            assess(&mut r, &mut w, &look(started(1_000)), &cfg, t, 0.5),
            Heal::Nothing
        );
    }
    assert_eq!((r.status(), r.health.as_str()), (Running, "none"));
    assert_eq!(w.verdict, Verdict::Silent);
    // Docker's HEALTHCHECK still counts where one is set.
    let sick = Observed {
        health: "unhealthy".into(),
        ..started(1_000)
    };
    assess(&mut r, &mut w, &look(sick), &cfg, t, 0.5);
    assert_eq!(r.status(), Unhealthy);
}

#[test]
fn a_paused_or_exited_container_is_not_judged_by_its_heartbeat() {
    let cfg = cfg();
    let mut w = Watch::new(&cfg);
    let mut r = record(Running);
    r.last_heartbeat_at = Some(at(2_000));
    w.beat = Some(BeatRead::Missing);
    let paused = Observed {
        state: "paused".into(),
        ..started(1_000)
    };
    assess(&mut r, &mut w, &look(paused), &cfg, Instant::now(), 0.5);
    assert_eq!(w.verdict, Verdict::Silent);
    assert_eq!(r.status(), Running);
}

#[test]
fn a_look_reuses_the_last_inspect_only_while_the_heartbeat_answers() {
    let cfg = cfg();
    let mut w = Watch::new(&cfg);
    let r = record(Running);
    assert!(w.reusable(&r).is_none(), "nothing inspected yet");
    w.observed = Some(started(1_000));
    assert!(w.reusable(&r).is_none(), "silent: Docker decides, inspect");
    w.verdict = Verdict::Healthy;
    assert!(w.reusable(&r).is_some());
    w.verdict = Verdict::Hung;
    assert!(
        w.reusable(&r).is_some(),
        "a hung agent is reported without Docker"
    );
    let mut other = r.clone();
    other.workload_id = Some("another".into());
    assert!(w.reusable(&other).is_none(), "a new container");
    w.observed = Some(Observed {
        health: "healthy".into(),
        ..started(1_000)
    });
    assert!(w.reusable(&r).is_none(), "a HEALTHCHECK to poll");
    w.observed = Some(started(1_000));
    w.reset(Some(Running), Instant::now());
    assert!(w.reusable(&r).is_none(), "a command: inspect afresh");
    // The next read's news is what a look would find.
    w.observed = Some(started(1_000));
    let mut r = r;
    r.last_heartbeat_at = Some(at(2_000));
    assert_eq!(
        w.verdict_with(&r, Some(&BeatRead::Missing), &cfg, at(3_000)),
        Verdict::Hung
    );
}

#[test]
fn a_paused_agent_is_neither_crashed_nor_unhealthy_however_long_it_is_looked_at() {
    let cfg = cfg();
    let mut w = Watch::new(&cfg);
    let mut r = record(Running);
    let t = Instant::now();
    // Docker: a paused container is running and paused, and its health check
    // fails (its processes are frozen).
    let frozen = Observed {
        paused: true,
        state: "paused".into(),
        ..obs(true, "unhealthy")
    };
    for _ in 0..(cfg.unhealthy_restart_after * 5) {
        assert_eq!(
            assess(&mut r, &mut w, &look(frozen.clone()), &cfg, t, 0.5),
            Heal::Nothing
        );
        assert_eq!(r.status(), Paused);
        assert_eq!(w.unhealthy_streak, 0);
    }
    // Thawed behind the manager's back: it runs.
    assess(&mut r, &mut w, &look(obs(true, "healthy")), &cfg, t, 0.5);
    assert_eq!(r.status(), Running);
    assert_eq!(w.thawed_at, Some(t));
    // Killed while paused: a crash like any other.
    let mut r = record(Paused);
    assert!(matches!(
        assess(&mut r, &mut w, &look(obs(false, "none")), &cfg, t, 0.5),
        Heal::RestartAfter(_)
    ));
}

/// Docker's `unhealthy` from while the container was frozen (its probes cannot run
/// then) is not held against a thawed agent until Docker could probe it again; after
/// that, an `unhealthy` counts as ever.
#[test]
fn a_thawed_agent_is_not_judged_by_dockers_verdict_from_the_frozen_time() {
    let cfg = cfg();
    let grace = thaw_grace(&cfg);
    let t = Instant::now();
    let stale = obs(true, "unhealthy");
    for thawed_by_command in [true, false] {
        let mut w = Watch::new(&cfg);
        let mut r = record(Paused);
        w.last.status = Some(Paused);
        if thawed_by_command {
            // agent.resume answered; the record says running before any look.
            transition(&mut r, Cause::Resumed);
            w.reset(Some(Running), t);
        }
        for k in 0..(cfg.unhealthy_restart_after * 3) {
            let now = t + grace * k / (cfg.unhealthy_restart_after * 3);
            assert_eq!(
                assess(&mut r, &mut w, &look(stale.clone()), &cfg, now, 0.5),
                Heal::Nothing,
                "within the grace (by command: {thawed_by_command})"
            );
            assert_eq!(r.status(), Running);
            assert_eq!(r.health, "unhealthy", "Docker's word is reported");
            assert_eq!(w.unhealthy_streak, 0);
        }
        // Past the grace: Docker probed again and still says unhealthy.
        let mut heal = Heal::Nothing;
        for k in 0..cfg.unhealthy_restart_after {
            let now = t + grace + Duration::from_millis(u64::from(k));
            heal = assess(&mut r, &mut w, &look(stale.clone()), &cfg, now, 0.5);
            assert_eq!(r.status(), Unhealthy);
        }
        assert_eq!(heal, Heal::RestartNow(Reason::Unhealthy));
    }
}

/// A frozen agent cannot write its heartbeat, so its key may expire while paused:
/// once thawed, that is not held against it for one heartbeat interval (and a
/// second); an agent still silent after that is hung.
#[test]
fn a_thawed_agent_is_not_judged_hung_by_a_key_that_expired_while_frozen() {
    let cfg = cfg();
    let grace = beat_thaw_grace(&cfg);
    assert!(grace > Duration::from_secs(cfg.heartbeat_interval_s));
    let t = Instant::now();
    let look = look(started(1_000));
    let mut w = Watch::new(&cfg);
    let mut r = record(Running);
    w.beat = Some(beat(2_000, BeatStatus::Ok, ""));
    assess(&mut r, &mut w, &look, &cfg, t, 0.5);
    assert_eq!(r.health, "healthy");
    // Paused, then resumed by a command; the key expired meanwhile.
    transition(&mut r, Cause::Paused);
    w.last.status = Some(Paused);
    transition(&mut r, Cause::Resumed);
    w.reset(Some(Running), t);
    w.beat = Some(BeatRead::Missing);
    for k in 0..(cfg.unhealthy_restart_after * 3) {
        let now = t + grace * k / (cfg.unhealthy_restart_after * 3);
        assert_eq!(assess(&mut r, &mut w, &look, &cfg, now, 0.5), Heal::Nothing);
        assert_eq!(r.status(), Running, "within the grace");
        assert_ne!(w.verdict, Verdict::Hung);
    }
    // Past the grace and still no heartbeat: hung.
    assess(&mut r, &mut w, &look, &cfg, t + grace, 0.5);
    assert_eq!((r.status(), w.verdict.clone()), (Unhealthy, Verdict::Hung));
}

/// A running container of an image that promises heartbeats, started at
/// `started_ms`.
fn promising(started_ms: i64) -> Observed {
    let mut o = started(started_ms);
    o.labels
        .insert(heartbeat::PROMISE_LABEL.into(), "true".into());
    o
}

/// A look at `o` made at `wall_ms`.
fn look_at(o: Observed, wall_ms: i64) -> Observation {
    Observation {
        at: Some(at(wall_ms)),
        ..look(o)
    }
}

#[test]
fn a_silence_is_starting_then_overdue_only_where_the_image_promises_heartbeats() {
    let period = Duration::from_secs(60);
    let within = Some(Duration::from_secs(59));
    let over = Some(period);
    let silence = |read, promised, ran| judge_silence(Verdict::Silent, read, promised, ran, period);
    assert_eq!(silence(true, true, within), Verdict::Starting);
    assert_eq!(
        silence(false, true, within),
        Verdict::Starting,
        "not read yet"
    );
    assert_eq!(
        silence(true, true, over),
        Verdict::Overdue(overdue_reason(period))
    );
    assert_eq!(
        silence(false, true, over),
        Verdict::Silent,
        "never read (the manager just started): not blamed"
    );
    assert_eq!(
        silence(true, false, within),
        Verdict::Silent,
        "no promise: Docker decides"
    );
    assert_eq!(silence(true, false, over), Verdict::Silent);
    assert_eq!(silence(true, true, None), Verdict::Silent, "start unknown");
    for other in [
        Verdict::Healthy,
        Verdict::Hung,
        Verdict::Unhealthy("x".into()),
    ] {
        assert_eq!(
            judge_silence(other.clone(), true, true, within, period),
            other
        );
    }
    let why = overdue_reason(period);
    for says in [
        "autogen.heartbeat=true",
        "60 s",
        "AGENT_REDIS_URL",
        "AGENT_RABBITMQ_URL",
    ] {
        assert!(why.contains(says), "{why}");
    }
}

#[test]
fn a_starting_agent_reads_starting_until_a_docker_healthcheck_has_its_word() {
    assert_eq!(combined_health("none", &Verdict::Starting), "starting");
    assert_eq!(combined_health("starting", &Verdict::Starting), "starting");
    assert_eq!(combined_health("healthy", &Verdict::Starting), "healthy");
    assert_eq!(
        combined_health("unhealthy", &Verdict::Starting),
        "unhealthy"
    );
    assert_eq!(
        combined_health("none", &Verdict::Overdue("x".into())),
        "unhealthy"
    );
}

#[test]
fn an_agent_whose_image_promises_heartbeats_is_starting_then_healthy_at_its_first() {
    let cfg = cfg();
    let mut w = Watch::new(&cfg);
    let mut r = record(Running);
    let t = Instant::now();
    let started_ms = 1_000_000;
    // Not read yet, then read and missing, then an earlier run's heartbeat (the key
    // outlives a restart): all within the start period, all `starting`.
    for (beat_read, wall_ms) in [
        (None, started_ms + 500),
        (Some(BeatRead::Missing), started_ms + 5_000),
        (
            Some(beat(started_ms - 1, BeatStatus::Unhealthy, "old")),
            started_ms + 59_000,
        ),
    ] {
        w.beat = beat_read;
        let look = look_at(promising(started_ms), wall_ms);
        assert_eq!(assess(&mut r, &mut w, &look, &cfg, t, 0.5), Heal::Nothing);
        assert_eq!((r.status(), r.health.as_str()), (Running, "starting"));
        assert_eq!(w.verdict, Verdict::Starting);
        assert_eq!(w.unhealthy_streak, 0);
        assert!(r.last_error.is_none(), "{:?}", r.last_error);
        let d = details(&r, &look, None, &w.verdict);
        assert_eq!(d["health"], "starting");
        assert_eq!(d["heartbeat"]["status"], "starting");
    }
    // Its first heartbeat: healthy at once.
    w.beat = Some(beat(started_ms + 4_000, BeatStatus::Ok, "idle"));
    let look = look_at(promising(started_ms), started_ms + 4_100);
    assess(&mut r, &mut w, &look, &cfg, t, 0.5);
    assert_eq!((r.status(), r.health.as_str()), (Running, "healthy"));
    assert_eq!(w.verdict, Verdict::Healthy);
}

#[test]
fn an_agent_whose_image_promises_heartbeats_and_writes_none_is_unhealthy_after_the_period() {
    let cfg = cfg(); // unhealthy_restart_after = 2
    let period_ms = cfg.heartbeat_start_period_s as i64 * 1_000;
    let mut w = Watch::new(&cfg);
    let mut r = record(Running);
    let t = Instant::now();
    let started_ms = 1_000_000;
    w.beat = Some(BeatRead::Missing);
    let late = look_at(promising(started_ms), started_ms + period_ms);
    assert_eq!(assess(&mut r, &mut w, &late, &cfg, t, 0.5), Heal::Nothing);
    assert_eq!((r.status(), r.health.as_str()), (Unhealthy, "unhealthy"));
    let why = overdue_reason(start_period(&cfg));
    assert_eq!(w.verdict, Verdict::Overdue(why.clone()));
    assert_eq!(r.last_error, Some(format!("heartbeat: {why}")));
    let d = details(&r, &late, None, &w.verdict);
    assert_eq!(d["heartbeat"]["status"], "overdue");
    assert_eq!(d["heartbeat"]["detail"], why.as_str());
    // Then like any unhealthy agent: restarted after unhealthy_restart_after looks.
    assert_eq!(
        assess(&mut r, &mut w, &late, &cfg, t, 0.5),
        Heal::RestartNow(Reason::Unhealthy)
    );
    // The same image without the label: judged by its container, as before.
    let mut w = Watch::new(&cfg);
    let mut r = record(Running);
    w.beat = Some(BeatRead::Missing);
    let unlabelled = look_at(started(started_ms), started_ms + period_ms);
    assess(&mut r, &mut w, &unlabelled, &cfg, t, 0.5);
    assert_eq!((r.status(), r.health.as_str()), (Running, "none"));
    let early = look_at(started(started_ms), started_ms + 1_000);
    assess(&mut r, &mut w, &early, &cfg, t, 0.5);
    assert_eq!(r.health, "none", "no `starting` without the promise");
    assert!(details(&r, &early, None, &w.verdict)
        .get("heartbeat")
        .is_none());
}

#[test]
fn a_thawed_agent_is_not_overdue_for_the_time_it_was_frozen() {
    let cfg = cfg();
    let period_ms = cfg.heartbeat_start_period_s as i64 * 1_000;
    let t = Instant::now();
    let mut w = Watch::new(&cfg);
    let mut r = record(Paused);
    w.last.status = Some(Paused);
    transition(&mut r, Cause::Resumed);
    w.reset(Some(Running), t);
    w.beat = Some(BeatRead::Missing);
    let look = look_at(promising(1_000), 1_000 + 2 * period_ms);
    assess(&mut r, &mut w, &look, &cfg, t, 0.5);
    assert_eq!(r.status(), Running, "within the thaw grace");
    assert_eq!(w.verdict, Verdict::Silent);
}

#[test]
fn the_first_beat_read_lasts_while_the_agent_is_starting_and_its_period_lasts() {
    let cfg = cfg();
    let period = start_period(&cfg);
    let mut w = Watch::new(&cfg);
    w.observed = Some(promising(1_000_000));
    assert_eq!(
        first_beat_wait(&w, &cfg, at(1_000_000)),
        None,
        "silent: not read"
    );
    w.verdict = Verdict::Starting;
    assert_eq!(first_beat_wait(&w, &cfg, at(1_000_000)), Some(period));
    assert_eq!(
        first_beat_wait(&w, &cfg, at(1_010_000)),
        Some(period - Duration::from_secs(10))
    );
    assert_eq!(
        first_beat_wait(&w, &cfg, at(1_000_000 + period.as_millis() as i64)),
        None
    );
    w.observed = None;
    assert_eq!(
        first_beat_wait(&w, &cfg, at(1_000_000)),
        None,
        "no container known"
    );
    w.observed = Some(promising(1_000_000));
    w.verdict = Verdict::Healthy;
    assert_eq!(
        first_beat_wait(&w, &cfg, at(1_000_000)),
        None,
        "it heartbeats"
    );
}

#[test]
fn a_first_heartbeat_read_while_starting_is_news() {
    let cfg = cfg();
    let mut w = Watch::new(&cfg);
    let r = record(Running);
    w.observed = Some(promising(1_000_000));
    w.verdict = Verdict::Starting;
    let wall = at(1_002_000);
    assert_eq!(
        w.verdict_with(&r, Some(&BeatRead::Missing), &cfg, wall),
        Verdict::Starting,
        "still none: no news, no look"
    );
    let first = beat(1_001_500, BeatStatus::Ok, "");
    assert_eq!(
        w.verdict_with(&r, Some(&first), &cfg, wall),
        Verdict::Healthy
    );
    let past = at(1_000_000 + cfg.heartbeat_start_period_s as i64 * 1_000);
    assert!(matches!(
        w.verdict_with(&r, Some(&BeatRead::Missing), &cfg, past),
        Verdict::Overdue(_)
    ));
}

#[test]
fn exits_are_classified() {
    assert_eq!(classify_exit(Some(137), true).0, "oom_killed");
    assert_eq!(
        classify_exit(Some(137), false),
        ("signal", Some("SIGKILL".into()))
    );
    assert_eq!(classify_exit(Some(0), false).0, "clean");
    assert_eq!(classify_exit(Some(3), false).0, "error");
}

#[test]
fn report_on_change_and_on_interval() {
    let now = LastReport {
        health: "none".into(),
        state: "running".into(),
        status: Some(Running),
        at: Some(Instant::now()),
    };
    assert!(!report_due(
        &now.clone(),
        &now,
        Duration::from_secs(30),
        true
    ));
    let mut changed = now.clone();
    changed.state = "exited".into();
    assert!(report_due(&changed, &now, Duration::from_secs(30), true));
    assert!(report_due(
        &LastReport::default(),
        &now,
        Duration::from_secs(30),
        true
    ));
    let old = LastReport {
        at: Instant::now().checked_sub(Duration::from_secs(31)),
        ..now.clone()
    };
    assert!(report_due(&old, &now, Duration::from_secs(30), true));
    assert!(!report_due(&old, &now, Duration::from_secs(30), false));
}
