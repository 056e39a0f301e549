//! `agent-manager halt` as an operator runs it: the built binary, configured from the
//! environment, engages a halt with `--wait` against a real manager (the harness's,
//! in-process) through the real RabbitMQ and Redis, reads it back with `halt list` and
//! `halt show` (the agents cut and frozen, with the figures of their `agent.halted`),
//! is refused by the manager (`agent.error`, exit 1) and by itself (an unknown agent
//! or halt: exit 1 before anything is sent; a platform halt without `--customer-id`:
//! exit 2), and releases the halt.

mod common;

use std::time::Duration;

use agent_manager::Config;
use common::{CommandOut as Out, TestEnv, DEADLINE};
use serde_json::Value;

/// Bound on one CLI run: above `--wait`'s default (60 s).
const CLI_DEADLINE: Duration = Duration::from_secs(90);
/// Who the CLI says asks.
const OPERATOR: &str = "ops-cli-test";

/// Runs the CLI to its end (bounded, off the test's async thread so that the manager
/// keeps working meanwhile), as operator [`OPERATOR`].
async fn cli(config: &Config, args: &[&str]) -> Out {
    let cmd = common::cli_command(config, args, &[("AGENT_MANAGER_OPERATOR", OPERATOR)]);
    let what = format!("agent-manager {}", args.join(" "));
    tokio::task::spawn_blocking(move || common::run_bounded(cmd, CLI_DEADLINE, &what))
        .await
        .expect("cli thread")
}

fn json_of(out: &Out) -> Value {
    assert_eq!(out.code, 0, "{out:#?}");
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {out:#?}"))
}

/// A halt id the CLI made: `halt-<yyyymmdd>T<hhmmss>-<4 hex>`.
fn is_made_halt_id(id: &str) -> bool {
    let parts: Vec<&str> = id.split('-').collect();
    matches!(parts.as_slice(), ["halt", time, hex]
        if time.len() == 15
            && time.as_bytes()[8] == b'T'
            && time.chars().filter(char::is_ascii_digit).count() == 14
            && hex.len() == 4
            && hex.chars().all(|c| c.is_ascii_hexdigit()))
}

#[actix_rt::test]
async fn an_operator_engages_reads_and_releases_a_halt_from_the_cli() {
    let env = TestEnv::start(&[]).await;
    let cfg = env.config.clone();
    let (a1, a2) = (env.agent_id("ch-a1"), env.agent_id("ch-a2"));
    env.create_running(&a1).await;
    env.create_running(&a2).await;
    let agents = format!("{a1},{a2}");

    // Refused by the CLI itself, nothing sent: an unknown agent (exit 1), a platform
    // halt without the customer it is sent as (exit 2).
    let unknown = cli(
        &cfg,
        &[
            "halt",
            "engage",
            "--agent",
            "nobody-here",
            "--reason",
            "x",
            "--wait",
        ],
    )
    .await;
    assert_eq!(unknown.code, 1, "{unknown:#?}");
    assert!(
        unknown.stderr.contains("no such agent: nobody-here"),
        "{unknown:#?}"
    );
    let platform = cli(&cfg, &["halt", "engage", "--platform", "--reason", "x"]).await;
    assert_eq!(platform.code, 2, "{platform:#?}");
    assert!(platform.stderr.contains("--customer-id"), "{platform:#?}");

    // Engage, waiting for halt.engaged: the made halt id, both agents, the figures.
    let engaged = cli(
        &cfg,
        &[
            "halt",
            "engage",
            "--agent",
            &agents,
            "--reason",
            "runaway strategy",
            "--wait",
        ],
    )
    .await;
    assert_eq!(engaged.code, 0, "{engaged:#?}");
    let first = engaged
        .stdout
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    let halt_id = first
        .strip_prefix("halt.engaged ")
        .and_then(|rest| rest.split(':').next())
        .unwrap_or_else(|| panic!("{engaged:#?}"))
        .to_string();
    assert!(is_made_halt_id(&halt_id), "{halt_id}");
    assert!(
        first.contains("2 agents cut in ") && first.contains(" ms, frozen in "),
        "{first}"
    );
    for id in [&a1, &a2] {
        assert!(
            engaged.stdout.lines().any(|l| l.trim() == id.as_str()),
            "{engaged:#?}"
        );
        let r = env.record(id).await;
        assert_eq!(r["status"], "halted");
        assert_eq!(r["halted_by"], OPERATOR);
        assert_eq!(r["halt_reason"], "runaway strategy");
    }

    // The manager refuses another scope under the same id: agent.error, exit 1.
    let clash = cli(
        &cfg,
        &[
            "halt",
            "engage",
            "--customer",
            &env.customer(),
            "--reason",
            "other",
            "--halt-id",
            &halt_id,
            "--wait=30s",
        ],
    )
    .await;
    assert_eq!(clash.code, 1, "{clash:#?}");
    assert!(
        clash.stderr.contains("agent.error already_exists"),
        "{clash:#?}"
    );

    // list: the halt, as JSON and for people.
    let listed = json_of(&cli(&cfg, &["halt", "list", "-o", "json"]).await);
    let halts = listed.as_array().expect("an array of halts");
    assert_eq!(halts.len(), 1, "{listed:#}");
    let h = &halts[0];
    assert_eq!(h["halt_id"], halt_id.as_str());
    assert_eq!(h["customer_id"], env.customer());
    assert_eq!(h["requested_by"], OPERATOR);
    let mut ids: Vec<&str> = h["scope"]["agent_ids"]
        .as_array()
        .expect("the scope's agent_ids")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    ids.sort();
    let mut want = vec![a1.as_str(), a2.as_str()];
    want.sort();
    assert_eq!(ids, want);
    let table = cli(&cfg, &["halt", "list"]).await;
    assert_eq!(table.code, 0, "{table:#?}");
    assert!(table.stdout.starts_with("HALT ID"), "{table:#?}");
    let row = table
        .stdout
        .lines()
        .nth(1)
        .unwrap_or_else(|| panic!("{table:#?}"));
    assert!(row.contains(OPERATOR) && row.contains("runaway"), "{row}");

    // show: each agent halted, with when it was cut and frozen; the audit trail.
    let shown = json_of(&cli(&cfg, &["halt", "show", &halt_id, "-o", "json"]).await);
    let held = shown["agents"].as_array().expect("agents");
    assert_eq!(held.len(), 2, "{shown:#}");
    for a in held {
        assert_eq!(a["status"], "halted", "{a}");
        assert!(a["halted_at"].is_string(), "{a}");
        let (cut, frozen) = (a["cut_ms"].as_u64(), a["frozen_ms"].as_u64());
        assert!(cut.is_some() && frozen >= cut, "{a}");
    }
    let trail = shown["events"].as_array().expect("events");
    assert_eq!(trail.len(), 1, "{shown:#}");
    assert_eq!(trail[0]["kind"], "engaged");
    assert_eq!(trail[0]["requested_by"], OPERATOR);
    let text = cli(&cfg, &["halt", "show", &halt_id]).await;
    assert_eq!(text.code, 0, "{text:#?}");
    for needle in ["Halt:", "CUT MS", "FROZEN MS", "halts:events:", "engaged"] {
        assert!(text.stdout.contains(needle), "{needle}: {text:#?}");
    }

    // Release: both agents given back.
    let released = cli(
        &cfg,
        &[
            "halt",
            "release",
            &halt_id,
            "--reason",
            "strategy fixed",
            "--wait",
        ],
    )
    .await;
    assert_eq!(released.code, 0, "{released:#?}");
    assert!(
        released
            .stdout
            .starts_with(&format!("halt.released {halt_id}: 2 agents given back")),
        "{released:#?}"
    );
    for id in [&a1, &a2] {
        common::wait_until("the agent runs again", DEADLINE, || async {
            env.record(id).await.get("status").map(String::as_str) == Some("running")
        })
        .await;
    }

    // Gone: show and release say so at once (exit 1), list is empty.
    let gone = cli(&cfg, &["halt", "show", &halt_id]).await;
    assert_eq!(gone.code, 1, "{gone:#?}");
    assert!(
        gone.stderr.contains("is not engaged") && gone.stderr.contains("released"),
        "{gone:#?}"
    );
    let again = cli(&cfg, &["halt", "release", &halt_id, "--reason", "x"]).await;
    assert_eq!(again.code, 1, "{again:#?}");
    assert!(again.stderr.contains("is not engaged"), "{again:#?}");
    let empty = json_of(&cli(&cfg, &["halt", "list", "-o", "json"]).await);
    assert_eq!(empty, Value::Array(vec![]));
    env.finish().await;
}
