//! The status page in a real browser: headless Chromium (Debian's `chromium`, which
//! `scripts/services.sh` installs) loads `/` from a manager with running agents, its
//! script runs (virtual time), and the DOM it leaves shows the agents, the filter at
//! work, a chart with data points and the agent's events. A screenshot is saved as
//! `target/status-page.png` (README's docs/status-page.png is one).

mod common;

use std::time::{Duration, Instant};

use common::TestEnv;

const TOKEN: &str = "browser-test-token-0123456789abcdef";

/// Headless Chromium on `url` with a profile of its own: `--dump-dom` (the DOM after
/// `budget_ms` of virtual time), or a screenshot into `screenshot`.
fn chromium(url: &str, budget_ms: u32, screenshot: Option<&std::path::Path>) -> String {
    let profile = std::env::temp_dir().join(format!(
        "agent-manager-chromium-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    let mut cmd = std::process::Command::new("sh");
    // Through sh, so that a missing chromium is exit 127 (named below), not a spawn error.
    cmd.arg("-c").arg("exec chromium \"$@\"").arg("sh").args([
        "--headless",
        "--no-sandbox", // tests run as root
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--hide-scrollbars",
        "--window-size=1360,900",
        &format!("--user-data-dir={}", profile.display()),
        &format!("--virtual-time-budget={budget_ms}"),
    ]);
    match screenshot {
        Some(file) => cmd.arg(format!("--screenshot={}", file.display())),
        None => cmd.arg("--dump-dom"),
    };
    cmd.arg(url);
    let out = common::run_bounded(cmd, Duration::from_secs(90), "chromium");
    let _ = std::fs::remove_dir_all(&profile);
    assert_ne!(
        out.code, 127,
        "no chromium: run `bash scripts/services.sh` (it installs Debian's chromium)"
    );
    assert_eq!(out.code, 0, "chromium on {url}: {}", out.stderr);
    out.stdout
}

/// The value of `attr` on the element with id `id` in `dom`.
fn attr_of(dom: &str, id: &str, attr: &str) -> Option<String> {
    let start = dom.find(&format!("id=\"{id}\""))?;
    let open = dom[..start].rfind('<')?;
    let end = start + dom[start..].find('>')?;
    let tag = &dom[open..end];
    let key = format!("{attr}=\"");
    let at = tag.find(&key)? + key.len();
    Some(tag[at..at + tag[at..].find('"')?].to_string())
}

/// The inner text of the element with id `id` (up to its closing `</tag>`).
fn inner_of<'a>(dom: &'a str, id: &str, tag: &str) -> &'a str {
    let Some(start) = dom.find(&format!("id=\"{id}\"")) else {
        return "";
    };
    let rest = &dom[start..];
    let end = rest.find(&format!("</{tag}>")).unwrap_or(rest.len());
    &rest[..end]
}

#[actix_rt::test]
async fn chromium_shows_the_agents_their_charts_and_events() {
    let env = TestEnv::start(&[("ADMIN_TOKEN", TOKEN)]).await;
    let running = env.agent_id("shown");
    let stopped = env.agent_id("stopped");
    env.create_running(&running).await;
    env.create_running(&stopped).await;
    let mid = env
        .command("agent.stop", &stopped, serde_json::json!({}))
        .await;
    env.answer(&mid, "agent.stopped").await;

    // Wait (through the API) until the running agent has two samples to draw.
    let addr = env.admin_addr();
    let auth = format!("Authorization: Bearer {TOKEN}");
    let until = Instant::now() + common::DEADLINE;
    loop {
        let got = common::http_get_with(
            addr,
            &format!("/api/agents/{running}"),
            &[&auth],
            Duration::from_secs(10),
        )
        .await;
        let points = got
            .as_ref()
            .ok()
            .and_then(|(_, _, body)| serde_json::from_str::<serde_json::Value>(body).ok())
            .and_then(|v| v["points"].as_array().map(Vec::len))
            .unwrap_or(0);
        if points >= 2 {
            break;
        }
        assert!(
            Instant::now() < until,
            "no two samples of {running} within {:?}: {got:?}",
            common::DEADLINE
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // The browser gets the token once in the address: the answer keeps it in a cookie
    // and sends the browser on to the same page without it (the filter and the agent to
    // show stay), whose own requests then carry the cookie.
    let page = |query: String| format!("http://{addr}/?token={TOKEN}&{query}");
    let filtered = page(format!(
        "customer={}&status=running&agent={running}",
        env.customer()
    ));
    let dom = tokio::task::spawn_blocking(move || chromium(&filtered, 10000, None))
        .await
        .expect("chromium");
    let agents = inner_of(&dom, "agents", "table");
    assert!(
        agents.contains(&format!("data-agent=\"{running}\"")),
        "the running agent listed:\n{dom}"
    );
    assert!(
        !agents.contains(&format!("data-agent=\"{stopped}\"")),
        "the stopped agent filtered out (status=running):\n{dom}"
    );
    assert!(agents.contains("running") && agents.contains(common::agent_image()));
    let points: usize = attr_of(&dom, "cpu-chart", "data-points")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(points >= 2, "the CPU chart has {points} points:\n{dom}");
    let mem_points: usize = attr_of(&dom, "mem-chart", "data-points")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        mem_points >= 2,
        "the memory chart has {mem_points} points:\n{dom}"
    );
    let chart = inner_of(&dom, "mem-chart", "svg");
    let polyline = chart
        .split("class=\"series\" points=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or("");
    assert!(
        polyline.split_whitespace().count() >= 2,
        "the memory chart's line: {chart}"
    );
    let events = inner_of(&dom, "events", "table");
    assert!(events.contains("agent.started"), "events:\n{events}");
    assert!(
        !dom.contains("BTC-USD") && !dom.contains("gpt-test"),
        "the agent's config on the page:\n{dom}"
    );

    // Without the status filter both are listed, and the manager is ready.
    let all = page(format!("customer={}&agent={running}", env.customer()));
    let dom = {
        let all = all.clone();
        tokio::task::spawn_blocking(move || chromium(&all, 8000, None))
            .await
            .expect("chromium")
    };
    let agents = inner_of(&dom, "agents", "table");
    assert!(
        agents.contains(&format!("data-agent=\"{running}\""))
            && agents.contains(&format!("data-agent=\"{stopped}\"")),
        "both agents listed:\n{dom}"
    );
    assert_eq!(
        attr_of(&dom, "readiness", "data-ready").as_deref(),
        Some("true"),
        "{dom}"
    );

    // A screenshot for people (and README's docs/status-page.png).
    let shot = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/status-page.png");
    let _ = std::fs::remove_file(&shot);
    let url = all;
    let file = shot.clone();
    tokio::task::spawn_blocking(move || chromium(&url, 10000, Some(&file)))
        .await
        .expect("chromium");
    let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 10_000,
        "screenshot {} ({size} bytes)",
        shot.display()
    );
    env.finish().await;
}
