// agent-manager's status page: polls /api/agents (and /api/agents/<id> for the agent
// shown below the list) every REFRESH_MS and draws the charts as SVG. Hand-written, no
// library, served by the manager itself (works offline). Every value goes into the
// page as text (textContent), never as markup.
//
// Its only writes: the Halt buttons (an agent, a customer, the platform) and Release
// (an engaged halt). Each opens the confirmation dialog, which names what will be
// halted or released and asks for the reason, then POSTs JSON with the header
// X-Agent-Manager: 1 (the server refuses a write without it: see src/admin/halts.rs),
// shows the answer and refreshes.
"use strict";

const REFRESH_MS = 5000;
const SVG = "http://www.w3.org/2000/svg";
const W = 640, H = 180, PAD_L = 52, PAD_R = 8, PAD_T = 10, PAD_B = 22;

const params = new URLSearchParams(location.search);
const state = {
  customer: params.get("customer") || "",
  status: params.get("status") || "",
  agent: params.get("agent") || "",
};

const $ = (id) => document.getElementById(id);

const WRITES_OFF = "set ADMIN_TOKEN to allow writes from the status page";
const OPERATOR_KEY = "agent-manager-operator";
// The last /api/agents answer (the confirmations count agents from it).
let last = null;

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function svg(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = String(text);
  return e;
}

function bytes(n) {
  if (!n) return "0";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (n >= 100 || i === 0 ? n.toFixed(0) : n.toFixed(1)) + " " + units[i];
}

function pct(n) { return (Number(n) || 0).toFixed(1); }

function syncAddress() {
  const q = new URLSearchParams();
  for (const k of ["customer", "status", "agent"]) if (state[k]) q.set(k, state[k]);
  const s = q.toString();
  history.replaceState(null, "", s ? "?" + s : location.pathname);
}

async function getJSON(path) {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), 10000);
  try {
    const r = await fetch(path, { credentials: "same-origin", cache: "no-store", signal: ctl.signal });
    if (r.status === 401) throw new Error("401: the endpoint asks for ADMIN_TOKEN (open /?token=<token> once)");
    const body = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(body.error || ("HTTP " + r.status));
    return body;
  } finally {
    clearTimeout(timer);
  }
}

function showError(text) {
  const e = $("error");
  e.hidden = !text;
  e.textContent = text || "";
}

function fillSelect(select, values, current) {
  const have = Array.from(select.options).map((o) => o.value).slice(1).join("\u001f");
  if (have !== values.join("\u001f")) {
    while (select.options.length > 1) select.remove(1);
    for (const v of values) select.add(new Option(v, v));
  }
  select.value = values.includes(current) ? current : "";
}

function renderReadiness(list) {
  const b = $("readiness");
  const checks = list.checks || {};
  if (list.ready) {
    b.dataset.ready = "true";
    b.textContent = "ready (leader)";
  } else if (checks.role === "standby" && checks.redis_and_docker) {
    // Contract section 12: healthy, not acting; another manager leads.
    b.dataset.ready = "standby";
    b.textContent = "standby";
  } else {
    b.dataset.ready = "false";
    const failing = Object.entries(checks).filter(([, ok]) => ok === false).map(([k]) => k);
    if (checks.role && checks.role !== "leader") failing.unshift(checks.role);
    b.textContent = "not ready: " + (failing.join(", ") || "?");
  }
  const l = list.leader;
  $("leader").textContent = !l ? "no manager has led yet"
    : l.live ? "leader: " + l.id + " (term " + l.term + ", since " + l.since + ")"
    : "no leader now (last: " + l.id + ", term " + l.term + ")";
}

function renderList(list) {
  renderReadiness(list);
  fillSelect($("customer"), list.customers, state.customer);
  fillSelect($("status"), list.statuses, state.status);
  $("updated").textContent = "updated " + new Date(list.now).toLocaleTimeString();
  $("count").textContent = list.agents.length + " of " + list.total + " agents";
  if (list.error) showError(list.error);
  const body = $("agents").tBodies[0];
  const rows = [];
  for (const a of list.agents) {
    const tr = el("tr");
    tr.dataset.agent = a.agent_id;
    tr.dataset.status = a.status;
    if (a.agent_id === state.agent) tr.classList.add("selected");
    if (a.status === "halted") tr.classList.add("halted");
    const statusCell = el("td", a.status, "status status-" + a.status);
    if (a.halt_ids && a.halt_ids.length) {
      const ids = el("span", " " + a.halt_ids.join(", "), "halt-ids");
      ids.title = "held by " + a.halt_ids.join(", ") + (a.halt_reason ? ": " + a.halt_reason : "") +
        (a.halted_by ? " (" + a.halted_by + ")" : "");
      statusCell.append(ids);
    }
    const haltCell = el("td");
    haltCell.append(writeButton("Halt", "halt-agent", () => confirmAgent(a)));
    tr.append(
      el("td", a.agent_id),
      el("td", a.customer_id),
      el("td", a.agent_type),
      el("td", a.name),
      statusCell,
      haltCell,
      el("td", a.health, "health health-" + a.health),
      el("td", a.restarts, "num restarts"),
      el("td", pct(a.cpu_percent), "num"),
      el("td", bytes(a.memory_bytes), "num"),
      el("td", a.image),
    );
    tr.addEventListener("click", () => select(a.agent_id));
    rows.push(tr);
  }
  body.replaceChildren(...rows);
  $("empty").hidden = list.agents.length > 0;
  renderHalts(list);
  renderCustomers(list);
}

function plural(n, what) {
  return n + " " + what + (n === 1 ? "" : "s");
}

// A button that writes: disabled (and saying why) while the server allows no writes.
function writeButton(label, cls, onClick) {
  const b = el("button", label, cls + " danger");
  b.type = "button";
  const writes = !!(last && last.writes);
  b.disabled = !writes;
  if (!writes) b.title = WRITES_OFF;
  b.addEventListener("click", (e) => { e.stopPropagation(); onClick(); });
  return b;
}

function renderHalts(list) {
  const rows = (list.halts || []).map((h) => {
    const tr = el("tr");
    tr.dataset.halt = h.halt_id;
    const release = el("td");
    release.append(writeButton("Release", "release", () => confirmRelease(h)));
    tr.append(
      el("td", h.halt_id + (h.automatic ? " (automatic)" : "")),
      el("td", h.scope),
      el("td", h.agents, "num"),
      el("td", h.customer_id),
      el("td", h.requested_by),
      el("td", h.engaged_at ? new Date(h.engaged_at).toLocaleString() : ""),
      el("td", h.reason, "reason"),
      release,
    );
    return tr;
  });
  $("halt-list").tBodies[0].replaceChildren(...rows);
  $("no-halts").hidden = rows.length > 0;
  if (list.halts_error) showError(list.halts_error);
  $("writes-off").hidden = !!list.writes;
  const platform = $("halt-platform");
  platform.disabled = !list.writes;
  platform.title = list.writes ? "" : WRITES_OFF;
}

function renderCustomers(list) {
  const rows = (list.customer_rows || []).map((c) => {
    const tr = el("tr");
    tr.dataset.customer = c.customer_id;
    const halt = el("td");
    halt.append(writeButton("Halt customer", "halt-customer", () => confirmCustomer(c)));
    tr.append(el("td", c.customer_id), el("td", c.agents, "num"), el("td", c.halted, "num"), halt);
    return tr;
  });
  $("customer-list").tBodies[0].replaceChildren(...rows);
}

// ---- Halting and releasing: confirm, POST, show the answer ----

let pending = null;

// Opens the confirmation. `ask`: { what(type) -> text, note, ok, types (type -> count,
// or null: no narrowing), send(reason, by, type) -> Promise of the POST's answer }.
function confirmAction(ask) {
  pending = ask;
  const typeLabel = $("confirm-type-label");
  const select = $("confirm-type");
  while (select.options.length > 1) select.remove(1);
  if (ask.types) {
    for (const t of Object.keys(ask.types)) select.add(new Option(t, t));
  }
  select.value = "";
  typeLabel.hidden = !ask.types;
  $("confirm-what").textContent = ask.what("");
  $("confirm-note").textContent = ask.note || "";
  $("confirm-ok").textContent = ask.ok;
  $("confirm-ok").disabled = false;
  $("confirm-reason").value = "";
  $("confirm-by").value = localStorage.getItem(OPERATOR_KEY) || "";
  const err = $("confirm-error");
  err.hidden = true;
  err.textContent = "";
  $("confirm").showModal();
  $("confirm-reason").focus();
}

function confirmAgent(a) {
  const held = a.halt_ids && a.halt_ids.length;
  confirmAction({
    what: () => "Halt agent " + a.agent_id + " (customer " + a.customer_id + ")?",
    note: "Its logins are cut and its container frozen until the halt is released." +
      (held ? " It is held already by " + a.halt_ids.join(", ") + "." : ""),
    ok: "Halt",
    types: null,
    send: (reason, by) => postJSON("/api/halts", { scope: { agent_ids: [a.agent_id] }, reason, requested_by: by }),
  });
}

function confirmCustomer(c) {
  confirmAction({
    what: (t) => "Halt all " + plural(t ? c.by_type[t] || 0 : c.agents, (t ? t + " " : "") + "agent") +
      " of customer " + c.customer_id + "?",
    note: "Their logins are cut and their containers frozen until the halt is released; a new agent of the customer is refused meanwhile.",
    ok: "Halt customer",
    types: c.by_type,
    send: (reason, by, t) => postJSON("/api/halts", {
      scope: Object.assign({ customer_id: c.customer_id }, t ? { agent_types: [t] } : {}), reason, requested_by: by,
    }),
  });
}

function confirmPlatform() {
  const p = (last && last.platform) || { agents: 0, by_type: {} };
  confirmAction({
    what: (t) => "Halt EVERY " + (t ? t + " " : "") + "agent of the platform (" +
      plural(t ? p.by_type[t] || 0 : p.agents, "agent") + ")?",
    note: "Every agent of this installation, of every customer: logins cut, containers frozen, new agents refused, until the halt is released.",
    ok: "Halt platform",
    types: p.by_type,
    send: (reason, by, t) => postJSON("/api/halts", {
      scope: Object.assign({ platform: true }, t ? { agent_types: [t] } : {}), reason, requested_by: by,
    }),
  });
}

function confirmRelease(h) {
  confirmAction({
    what: () => "Release halt " + h.halt_id + " (" + h.scope + "; " + plural(h.agents, "agent") + ")?",
    note: "Each of its agents held by no other halt gets its logins back and returns to what it was asked to be.",
    ok: "Release",
    types: null,
    send: (reason, by) => postJSON("/api/halts/" + encodeURIComponent(h.halt_id) + "/release", { reason, requested_by: by }),
  });
}

async function postJSON(path, body) {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), 30000);
  try {
    const r = await fetch(path, {
      method: "POST",
      credentials: "same-origin",
      cache: "no-store",
      signal: ctl.signal,
      headers: { "Content-Type": "application/json", "X-Agent-Manager": "1" },
      body: JSON.stringify(body),
    });
    const raw = await r.text();
    let data;
    try { data = JSON.parse(raw); } catch (_) { data = { error: raw.trim() }; }
    return { status: r.status, data };
  } finally {
    clearTimeout(timer);
  }
}

function showResult(outcome, text) {
  const r = $("result");
  r.hidden = false;
  r.dataset.outcome = outcome;
  r.textContent = text;
}

function resultOf(answer) {
  const d = answer.data || {};
  if (answer.status === 200) return ["ok", d.text || ("done: " + (d.halt_id || ""))];
  if (answer.status === 202) return ["pending", "sent (halt " + (d.halt_id || "?") + ") but not answered within 10 s: it may still be applied; " + (d.error || "")];
  if (answer.status === 409) return ["failed", "refused: " + (d.code || "") + ": " + (d.message || d.error || "")];
  return ["failed", "HTTP " + answer.status + ": " + (d.error || "")];
}

$("confirm-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  if (!pending) return;
  const reason = $("confirm-reason").value.trim();
  const err = $("confirm-error");
  if (!reason) {
    err.hidden = false;
    err.textContent = "a reason is required";
    $("confirm-reason").focus();
    return;
  }
  const by = $("confirm-by").value.trim();
  if (by) localStorage.setItem(OPERATOR_KEY, by); else localStorage.removeItem(OPERATOR_KEY);
  const ask = pending;
  $("confirm-ok").disabled = true;
  showResult("pending", "sending…");
  try {
    const answer = await ask.send(reason, by || undefined, $("confirm-type").value);
    const [outcome, text] = resultOf(answer);
    showResult(outcome, text);
  } catch (x) {
    showResult("failed", "not sent: " + x.message);
  }
  pending = null;
  $("confirm").close();
  refresh();
});
$("confirm-reason").addEventListener("input", () => { $("confirm-error").hidden = true; });
$("confirm-cancel").addEventListener("click", () => { pending = null; $("confirm").close(); });
$("confirm-type").addEventListener("change", (e) => {
  if (pending) $("confirm-what").textContent = pending.what(e.target.value);
});
$("halt-platform").addEventListener("click", confirmPlatform);

// The time the charts span: the last hour, or less while the agent has been sampled
// for less (at least two minutes), so that a young agent's line is not a dot.
function spanOf(points, nowS, windowS) {
  const first = points.length ? points[0][0] : nowS;
  return Math.min(windowS, Math.max(120, nowS - first));
}

function ago(s) {
  return s >= 120 ? "-" + Math.round(s / 60) + " min" : "-" + Math.round(s) + " s";
}

// One chart: `points` are [unix s, value]; x spans `windowS` up to `nowS`.
function drawChart(node, points, nowS, windowS, fmt, floorMax) {
  const plotW = W - PAD_L - PAD_R, plotH = H - PAD_T - PAD_B;
  const max = Math.max(floorMax, ...points.map((p) => p[1])) * 1.15 || 1;
  const x = (t) => PAD_L + ((t - (nowS - windowS)) / windowS) * plotW;
  const y = (v) => PAD_T + plotH - (v / max) * plotH;
  const parts = [];
  for (let i = 0; i <= 4; i++) {
    const v = (max * i) / 4;
    parts.push(svg("line", { class: "grid", x1: PAD_L, x2: W - PAD_R, y1: y(v), y2: y(v) }));
    parts.push(svg("text", { class: "axis", x: PAD_L - 4, y: y(v) + 4, "text-anchor": "end" }, fmt(v)));
  }
  for (const [label, t] of [[ago(windowS), nowS - windowS], [ago(windowS / 2), nowS - windowS / 2], ["now", nowS]]) {
    parts.push(svg("text", { class: "axis", x: x(t), y: H - 6, "text-anchor": t === nowS ? "end" : (t === nowS - windowS ? "start" : "middle") }, label));
  }
  if (points.length > 0) {
    const coords = points.map((p) => x(p[0]).toFixed(1) + "," + y(p[1]).toFixed(1));
    const first = x(points[0][0]).toFixed(1), last = x(points[points.length - 1][0]).toFixed(1);
    const base = y(0).toFixed(1);
    parts.push(svg("polygon", { class: "area", points: first + "," + base + " " + coords.join(" ") + " " + last + "," + base }));
    parts.push(svg("polyline", { class: "series", points: coords.join(" ") }));
    const lastP = points[points.length - 1];
    parts.push(svg("circle", { class: "point", cx: x(lastP[0]), cy: y(lastP[1]), r: 3 }));
  } else {
    parts.push(svg("text", { class: "axis", x: W / 2, y: H / 2, "text-anchor": "middle" }, "no samples yet (taken while the agent runs)"));
  }
  node.replaceChildren(...parts);
  node.dataset.points = String(points.length);
}

function renderDetail(d) {
  const a = d.agent;
  $("detail").hidden = false;
  $("detail-title").textContent = a.agent_id + " — " + a.status + ", " + a.health;
  $("detail-facts").textContent =
    "customer " + a.customer_id + " · " + a.agent_type + " · image " + a.image +
    " · " + a.cpus + " CPUs, " + bytes(a.memory_limit_bytes) + " · restarts " + a.restarts +
    (a.container_id ? " · container " + a.container_id.slice(0, 12) : "");
  const err = $("detail-error");
  const why = d.events_error || a.last_error;
  err.hidden = !why;
  err.textContent = why || "";
  const nowS = Math.floor(Date.now() / 1000);
  const lastS = d.points.length ? d.points[d.points.length - 1][0] : nowS;
  const endS = Math.max(nowS, lastS);
  const span = spanOf(d.points, endS, d.window_s);
  drawChart($("cpu-chart"), d.points.map((p) => [p[0], p[1]]), endS, span, (v) => v.toFixed(v < 10 ? 1 : 0), 1);
  drawChart($("mem-chart"), d.points.map((p) => [p[0], p[2]]), endS, span, bytes, 1024 * 1024);
  const rows = d.events.map((e) => {
    const tr = el("tr");
    tr.append(
      el("td", e.timestamp ? new Date(e.timestamp).toLocaleString() : ""),
      el("td", e.event),
      el("td", e.status),
      el("td", e.summary),
    );
    return tr;
  });
  $("events").tBodies[0].replaceChildren(...rows);
}

async function refresh() {
  try {
    const q = new URLSearchParams();
    if (state.customer) q.set("customer", state.customer);
    if (state.status) q.set("status", state.status);
    const list = await getJSON("/api/agents" + (q.toString() ? "?" + q : ""));
    last = list;
    showError(null);
    renderList(list);
    if (state.agent) {
      try {
        renderDetail(await getJSON("/api/agents/" + encodeURIComponent(state.agent)));
      } catch (e) {
        $("detail").hidden = true;
        showError(state.agent + ": " + e.message);
      }
    } else {
      $("detail").hidden = true;
    }
  } catch (e) {
    showError("cannot reach the manager: " + e.message);
    const b = $("readiness");
    b.dataset.ready = "false";
    b.textContent = "unreachable";
  }
}

function select(agent) {
  state.agent = agent;
  syncAddress();
  refresh();
}

$("customer").addEventListener("change", (e) => { state.customer = e.target.value; syncAddress(); refresh(); });
$("status").addEventListener("change", (e) => { state.status = e.target.value; syncAddress(); refresh(); });
$("filters").addEventListener("submit", (e) => e.preventDefault());

let timer = null;
async function loop() {
  await refresh();
  timer = setTimeout(loop, REFRESH_MS);
}
loop();
document.addEventListener("visibilitychange", () => {
  if (!document.hidden && timer !== null) { clearTimeout(timer); loop(); }
});
