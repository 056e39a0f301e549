//! The status page in a real browser: headless Chromium (Debian's `chromium`, which
//! `scripts/services.sh` installs) loads `/` from a manager with running agents, its
//! script runs (virtual time), and the DOM it leaves shows the agents, the filter at
//! work, a chart with data points and the agent's events. A screenshot is saved as
//! `target/status-page.png` (README's docs/status-page.png is one).
//!
//! The halt buttons are clicked in a real browser too: Chromium driven over the
//! DevTools protocol ([`Browser`]), against a manager with `ADMIN_TOKEN` set.

mod common;

use std::time::{Duration, Instant};

use common::TestEnv;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

/// Headless Chromium driven over the DevTools protocol on a pipe
/// (`--remote-debugging-pipe`: commands in on its fd 3, answers and events out on its
/// fd 4, each a JSON text ended by a NUL byte), with a profile of its own: one page whose
/// buttons the test clicks with real mouse events and whose fields it types into.
/// Killed, and its profile removed, in Drop.
struct Browser {
    child: tokio::process::Child,
    commands: tokio::process::ChildStdin,
    messages: tokio::sync::mpsc::UnboundedReceiver<Value>,
    last_id: u64,
    /// The page's session (empty: the browser itself).
    session: String,
    profile: std::path::PathBuf,
}

impl Browser {
    async fn start() -> Browser {
        let profile = std::env::temp_dir().join(format!(
            "agent-manager-chromium-cdp-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        let mut cmd = tokio::process::Command::new("sh");
        // Our stdin becomes its fd 3 and our stdout its fd 4; its own stdout is dropped.
        cmd.arg("-c")
            .arg("exec chromium \"$@\" 3<&0 4>&1 </dev/null >/dev/null")
            .arg("sh")
            .args([
                "--headless",
                "--no-sandbox", // tests run as root
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--hide-scrollbars",
                "--window-size=1360,900",
                "--remote-debugging-pipe",
                &format!("--user-data-dir={}", profile.display()),
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .expect("sh (chromium: run `bash scripts/services.sh`)");
        let commands = child.stdin.take().expect("chromium's fd 3");
        let mut out = child.stdout.take().expect("chromium's fd 4");
        let (tx, messages) = tokio::sync::mpsc::unbounded_channel();
        actix_rt::spawn(async move {
            let mut buf = Vec::new();
            let mut chunk = vec![0u8; 64 * 1024];
            loop {
                let n = match out.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                buf.extend_from_slice(&chunk[..n]);
                while let Some(end) = buf.iter().position(|b| *b == 0) {
                    let message: Vec<u8> = buf.drain(..=end).collect();
                    if let Ok(v) = serde_json::from_slice::<Value>(&message[..end]) {
                        if tx.send(v).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        let mut browser = Browser {
            child,
            commands,
            messages,
            last_id: 0,
            session: String::new(),
            profile,
        };
        let target = browser
            .call("Target.createTarget", json!({"url": "about:blank"}))
            .await;
        let target_id = target["targetId"].as_str().expect("targetId").to_string();
        let attached = browser
            .call(
                "Target.attachToTarget",
                json!({"targetId": target_id, "flatten": true}),
            )
            .await;
        browser.session = attached["sessionId"]
            .as_str()
            .expect("sessionId")
            .to_string();
        browser.call("Page.enable", json!({})).await;
        browser
            .call(
                "Emulation.setDeviceMetricsOverride",
                json!({"width": 1360, "height": 900, "deviceScaleFactor": 1, "mobile": false}),
            )
            .await;
        browser
    }

    /// Sends `method` (to the page once attached) and waits for its answer's result.
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.last_id += 1;
        let id = self.last_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            message["sessionId"] = json!(self.session);
        }
        let mut bytes = serde_json::to_vec(&message).expect("JSON");
        bytes.push(0);
        let sent = async {
            self.commands.write_all(&bytes).await?;
            self.commands.flush().await
        };
        if let Err(e) = sent.await {
            panic!(
                "chromium does not take {method} ({e}); is it installed? run `bash scripts/services.sh`"
            );
        }
        let until = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let next = tokio::time::timeout_at(until, self.messages.recv())
                .await
                .unwrap_or_else(|_| panic!("chromium did not answer {method} within 30 s"));
            let Some(v) = next else {
                panic!("chromium went away during {method}");
            };
            if v["id"] == json!(id) {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    /// The value of the JavaScript expression `js` in the page.
    async fn eval(&mut self, js: &str) -> Value {
        let got = self
            .call(
                "Runtime.evaluate",
                json!({"expression": js, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        assert!(got.get("exceptionDetails").is_none(), "{js}: {got}");
        got["result"]["value"].clone()
    }

    async fn open(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url})).await;
    }

    /// Waits until `js` is true in the page (polled); panics after `deadline` naming
    /// `what` and what `show` says of the page then.
    async fn wait_for(&mut self, what: &str, js: &str, show: &str) {
        let until = Instant::now() + common::DEADLINE;
        loop {
            if self.eval(js).await == json!(true) {
                return;
            }
            if Instant::now() >= until {
                let seen = self.eval(show).await;
                panic!(
                    "{what}: not within {:?}; the page: {seen}",
                    common::DEADLINE
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A real click (mouse pressed and released) on the middle of the element `selector`.
    async fn click(&mut self, selector: &str) {
        let q = serde_json::to_string(selector).expect("JSON");
        let at = self
            .eval(&format!(
                "(() => {{ const e = document.querySelector({q}); if (!e) return null; \
                 e.scrollIntoView({{block: 'center'}}); const r = e.getBoundingClientRect(); \
                 return {{x: r.left + r.width / 2, y: r.top + r.height / 2, disabled: !!e.disabled}}; }})()"
            ))
            .await;
        assert!(at.is_object(), "no {selector} to click");
        assert_eq!(at["disabled"], json!(false), "{selector} is disabled");
        for kind in ["mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({"type": kind, "x": at["x"], "y": at["y"], "button": "left", "clickCount": 1}),
            )
            .await;
        }
    }

    /// Types `text` into the element `selector` (focused first).
    async fn type_into(&mut self, selector: &str, text: &str) {
        let q = serde_json::to_string(selector).expect("JSON");
        let found = self
            .eval(&format!(
                "(() => {{ const e = document.querySelector({q}); if (!e) return false; e.focus(); return true; }})()"
            ))
            .await;
        assert_eq!(found, json!(true), "no {selector} to type into");
        self.call("Input.insertText", json!({ "text": text })).await;
    }

    /// The text of the element `selector` ("" when there is none).
    async fn text(&mut self, selector: &str) -> String {
        let q = serde_json::to_string(selector).expect("JSON");
        self.eval(&format!(
            "(() => {{ const e = document.querySelector({q}); return e ? e.textContent : ''; }})()"
        ))
        .await
        .as_str()
        .unwrap_or("")
        .to_string()
    }

    /// A PNG of the page into `file`.
    async fn screenshot(&mut self, file: &std::path::Path) {
        use base64::Engine;
        let shot = self
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap_or(""))
            .expect("base64");
        std::fs::write(file, png).expect("write the screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

fn paused(c: &bollard::models::ContainerInspectResponse) -> Option<bool> {
    c.state.as_ref().and_then(|s| s.paused)
}

#[actix_rt::test]
async fn chromium_halts_an_agent_by_its_button_and_releases_it() {
    let env = TestEnv::start(&[("ADMIN_TOKEN", TOKEN)]).await;
    let agent = env.agent_id("clicked");
    let customer = env.customer();
    env.create_running(&agent).await;
    let addr = env.admin_addr();

    let mut browser = Browser::start().await;
    browser
        .open(&format!("http://{addr}/?token={TOKEN}&customer={customer}"))
        .await;
    let row = format!("#agents tr[data-agent=\"{agent}\"]");
    let halt_button = format!("{row} button.halt-agent");
    let listed = format!("(() => {{ const b = document.querySelector('{halt_button}'); return !!b && !b.disabled; }})()");
    let page = "document.body ? document.body.innerText : ''";
    browser
        .wait_for(
            "the agent listed with its Halt button enabled",
            &listed,
            page,
        )
        .await;

    // The confirmations name what would be halted: the customer's agents, the platform.
    let is_open = "document.getElementById('confirm').open";
    let customer_button =
        format!("#customer-list tr[data-customer=\"{customer}\"] button.halt-customer");
    browser.click(&customer_button).await;
    browser
        .wait_for("the customer's confirmation", is_open, page)
        .await;
    assert_eq!(
        browser.text("#confirm-what").await,
        format!("Halt all 1 agent of customer {customer}?")
    );
    let type_shown =
        "getComputedStyle(document.getElementById('confirm-type-label')).display !== 'none'";
    assert_eq!(
        browser.eval(type_shown).await,
        json!(true),
        "a customer's halt may be narrowed by type"
    );
    browser.click("#confirm-cancel").await;
    browser
        .wait_for("the confirmation closed", &format!("!{is_open}"), page)
        .await;
    browser.click("#halt-platform").await;
    browser
        .wait_for("the platform's confirmation", is_open, page)
        .await;
    assert_eq!(
        browser.text("#confirm-what").await,
        "Halt EVERY agent of the platform (1 agent)?"
    );
    browser.click("#confirm-cancel").await;
    browser
        .wait_for("the confirmation closed", &format!("!{is_open}"), page)
        .await;

    // The agent's Halt: its confirmation names it and its owner, and wants a reason.
    browser.click(&halt_button).await;
    browser
        .wait_for("the agent's confirmation", is_open, page)
        .await;
    assert_eq!(
        browser.text("#confirm-what").await,
        format!("Halt agent {agent} (customer {customer})?")
    );
    assert_eq!(
        browser.eval(type_shown).await,
        json!(false),
        "one agent: no type to choose"
    );
    browser.click("#confirm-ok").await;
    assert_eq!(
        browser.eval(is_open).await,
        json!(true),
        "no reason, still asking"
    );
    assert_eq!(browser.text("#confirm-error").await, "a reason is required");
    browser
        .type_into("#confirm-reason", "runaway strategy (browser test)")
        .await;
    assert_eq!(
        browser
            .eval("document.getElementById('confirm-error').hidden")
            .await,
        json!(true),
        "typing a reason clears the complaint"
    );
    let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    browser
        .screenshot(&target.join("status-page-confirm.png"))
        .await;
    browser.click("#confirm-ok").await;

    // The page shows it halted, under a halt it lists; Redis and Docker agree.
    let halted = format!(
        "(() => {{ const r = document.querySelector('{row}'); \
         return !!r && r.dataset.status === 'halted' && r.classList.contains('halted') \
         && document.querySelectorAll('#halt-list tbody tr').length === 1 \
         && document.getElementById('result').dataset.outcome === 'ok'; }})()"
    );
    browser
        .wait_for("the agent shown halted", &halted, page)
        .await;
    let result = browser.text("#result").await;
    assert!(result.starts_with("halt.engaged halt-"), "{result}");
    let halt_id = browser
        .eval("document.querySelector('#halt-list tbody tr').dataset.halt")
        .await
        .as_str()
        .expect("a halt id")
        .to_string();
    assert!(
        browser
            .text(&format!("{row} .halt-ids"))
            .await
            .contains(&halt_id),
        "the row names its halt"
    );
    let record = env.record(&agent).await;
    assert_eq!(
        record.get("status").map(String::as_str),
        Some("halted"),
        "{record:?}"
    );
    assert!(
        record
            .get("halt_ids")
            .is_some_and(|ids| ids.contains(&halt_id)),
        "{record:?}"
    );
    let container = env.inspect(&agent).await.expect("the container");
    assert_eq!(
        paused(&container),
        Some(true),
        "frozen: {:?}",
        container.state
    );
    let halt = env.hash(&format!("halt:{halt_id}")).await;
    assert_eq!(
        halt.get("requested_by").map(String::as_str),
        Some("status-page")
    );
    assert_eq!(halt.get("customer_id"), Some(&customer));
    assert!(
        env.events_of(&agent)
            .iter()
            .any(|e| e.routing_key() == "agent.halted"),
        "agent.halted published"
    );
    let shot =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/status-page-halted.png");
    browser.screenshot(&shot).await;

    // Release: its confirmation names the halt and its reach; the agent runs again.
    let release = format!("#halt-list tr[data-halt=\"{halt_id}\"] button.release");
    browser.click(&release).await;
    browser
        .wait_for("the release's confirmation", is_open, page)
        .await;
    assert_eq!(
        browser.text("#confirm-what").await,
        format!("Release halt {halt_id} (agents {agent}; 1 agent)?")
    );
    browser
        .type_into("#confirm-reason", "fixed (browser test)")
        .await;
    browser.click("#confirm-ok").await;
    let running = format!(
        "(() => {{ const r = document.querySelector('{row}'); \
         return !!r && r.dataset.status === 'running' \
         && document.querySelectorAll('#halt-list tbody tr').length === 0 \
         && document.getElementById('result').textContent.startsWith('halt.released'); }})()"
    );
    browser
        .wait_for("the agent shown running again", &running, page)
        .await;
    let record = env.record(&agent).await;
    assert_eq!(
        record.get("status").map(String::as_str),
        Some("running"),
        "{record:?}"
    );
    let container = env.inspect(&agent).await.expect("the container");
    assert_eq!(
        paused(&container),
        Some(false),
        "thawed: {:?}",
        container.state
    );
    assert_eq!(container.state.and_then(|s| s.running), Some(true));
    assert!(env.hash(&format!("halt:{halt_id}")).await.is_empty());
    drop(browser);
    env.finish().await;
}
