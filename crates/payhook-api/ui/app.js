// payhook dashboard: plain JS against the JSON API. The admin token lives in sessionStorage
// (this tab only) and is sent as a Bearer token; nothing else is stored.
"use strict";

const TOKEN_KEY = "payhook.adminToken";
const PAGE = 50;
const $ = (sel) => document.querySelector(sel);
let merchants = {};   // id -> name, from the stats table
let nextAfter = 0;    // cursor of the operations list
let currentOp = null; // the operation shown in the timeline

function esc(value) {
  return String(value ?? "").replace(/[&<>"']/g, (c) =>
    ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

function badge(text) {
  return text ? `<span class="badge ${esc(text)}">${esc(text)}</span>` : "";
}

function when(iso) {
  return iso ? esc(iso.replace("T", " ").replace(/\.\d+Z$/, "Z")) : "—";
}

function percent(rate) {
  return typeof rate === "number" ? `${(rate * 100).toFixed(1)}%` : "—";
}

function age(seconds) {
  if (seconds == null) return "—";
  if (seconds < 60) return `${seconds}s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m ${seconds % 60}s`;
  return `${Math.floor(seconds / 3600)}h ${Math.floor((seconds % 3600) / 60)}m`;
}

class ApiError extends Error {
  constructor(status, body) {
    super(body?.error?.message || `HTTP ${status}`);
    this.status = status;
  }
}

// Calls the JSON API with the admin token; `body`, when given, is sent as JSON.
async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${sessionStorage.getItem(TOKEN_KEY)}` };
  const init = { method, headers };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const resp = await fetch(path, init);
  const answer = await resp.json().catch(() => null);
  if (resp.status === 401) logout("The token was refused.");
  if (!resp.ok) throw new ApiError(resp.status, answer);
  return answer;
}

function flash(text, bad) {
  const el = $("#flash");
  el.textContent = text;
  el.className = bad ? "flash bad" : "flash";
  el.hidden = false;
}

function show(loggedIn) {
  $("#login-view").hidden = loggedIn;
  $("#app-view").hidden = !loggedIn;
  $("#logout").hidden = !loggedIn;
}

function logout(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  show(false);
  const err = $("#login-error");
  err.hidden = !message;
  err.textContent = message || "";
}

async function login(event) {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("#token").value.trim());
  try {
    await start();
  } catch (e) {
    const why = { 401: "The token was refused.",
      403: "That is a merchant key; the dashboard needs the admin token." }[e.status];
    logout(why || e.message);
  }
}

async function start() {
  await loadStats();
  show(true);
  selectTab("deliveries");
  await loadOperations(true);
}

async function loadStats() {
  const { data } = await api("GET", "/v1/stats/deliveries");
  const select = $("#search-merchant");
  const chosen = select.value;
  select.innerHTML = `<option value="">all merchants</option>`;
  merchants = {};
  $("#stats tbody").innerHTML = data.map((s) => {
    merchants[s.merchant_id] = s.merchant_name;
    select.insertAdjacentHTML("beforeend",
      `<option value="${esc(s.merchant_id)}">${esc(s.merchant_name)}</option>`);
    return `<tr data-merchant="${esc(s.merchant_id)}">
      <td>${esc(s.merchant_name)}<div class="muted small"><code>${esc(s.merchant_id)}</code></div></td>
      <td>${s.delivered}</td><td>${s.pending}</td><td>${s.exhausted + s.cancelled}</td>
      <td class="rate">${percent(s.success_rate)}</td><td>${age(s.oldest_pending_age_seconds)}</td></tr>`;
  }).join("") || `<tr><td colspan="6" class="muted">No merchants yet.</td></tr>`;
  select.value = chosen;
}

function opRow(op) {
  return `<tr class="clickable" data-op="${esc(op.id)}">
    <td>${op.number}</td><td><code>${esc(op.external_id)}</code></td>
    <td>${esc(merchants[op.merchant_id] || op.merchant_id)}</td><td>${esc(op.dialect)}</td>
    <td>${esc(op.amount)} ${esc(op.currency)}</td><td>${badge(op.status)}</td>
    <td>${when(op.updated_at)}</td></tr>`;
}

async function loadOperations(reset) {
  if (reset) { nextAfter = 0; $("#ops tbody").innerHTML = ""; }
  const merchant = $("#search-merchant").value;
  const params = new URLSearchParams({ after: nextAfter, limit: PAGE });
  if (merchant) params.set("merchant_id", merchant);
  const { data, next_after } = await api("GET", `/v1/operations?${params}`);
  nextAfter = next_after;
  $("#ops tbody").insertAdjacentHTML("beforeend", data.map(opRow).join(""));
  $("#more").hidden = data.length < PAGE;
  if (reset && data.length === 0) {
    $("#ops tbody").innerHTML = `<tr><td colspan="7" class="muted">No operations.</td></tr>`;
  }
}

async function search(event) {
  event.preventDefault();
  const external = $("#search-external").value.trim();
  if (!external) return loadOperations(true);
  const ids = $("#search-merchant").value ? [$("#search-merchant").value] : Object.keys(merchants);
  const found = [];
  for (const id of ids) {
    const params = new URLSearchParams({ merchant_id: id, external_id: external });
    try {
      found.push(await api("GET", `/v1/operations?${params}`));
    } catch (e) {
      if (e.status !== 404) throw e;
    }
  }
  $("#more").hidden = true;
  $("#ops tbody").innerHTML = found.map(opRow).join("") ||
    `<tr><td colspan="7" class="muted">No operation with order id <code>${esc(external)}</code>.</td></tr>`;
  if (found.length === 1) openTimeline(found[0].id);
}

function attemptsTable(attempts) {
  if (!attempts.length) return `<p class="muted small">No attempt yet.</p>`;
  return `<table class="attempts"><thead><tr><th>#</th><th>started</th><th>request</th>
    <th>response</th><th>latency</th><th>outcome</th><th>error</th></tr></thead><tbody>
    ${attempts.map((a) => `<tr><td>${a.number}</td><td>${when(a.started_at)}</td>
      <td class="small"><code>${esc(a.request)}</code></td>
      <td>${a.response_status ?? "—"}${a.response_body ? `<pre class="muted">${esc(a.response_body.slice(0, 300))}</pre>` : ""}</td>
      <td>${a.duration_ms} ms</td><td>${badge(a.outcome)}</td>
      <td>${a.error_kind ? `<code>${esc(a.error_kind)}</code> ` : ""}${esc(a.error)}</td></tr>`).join("")}
    </tbody></table>`;
}

function deliveryCard(d) {
  const resend = d.state === "superseded" ? "" :
    `<button class="resend" data-delivery="${esc(d.id)}">Resend</button>`;
  return `<div class="delivery" data-delivery-card="${esc(d.id)}"><header>
      <code>${esc(d.id)}</code> ${badge(d.state)} <span>seq ${d.seq}</span>
      <span class="muted">${esc(d.dialect)} · ${esc(d.kind)} → <code>${esc(d.url)}</code></span>
      <span class="muted">${d.attempt_count} attempt(s)${d.next_attempt_at ? `, next ${when(d.next_attempt_at)}` : ""}</span>
      ${resend}</header>${attemptsTable(d.attempts || [])}</div>`;
}

async function polls(opId) {
  try {
    return await api("GET", `/v1/operations/${encodeURIComponent(opId)}/polls`);
  } catch (e) {
    if (e.status === 404) return null;
    throw e;
  }
}

function pollsSection(watch) {
  if (!watch) return "";
  return `<h3>Re-polls (${esc(watch.state)}, ${watch.polls_made}/${watch.poll_budget})</h3>
    <table><thead><tr><th>#</th><th>started</th><th>response</th><th>read</th><th>outcome</th><th>error</th></tr></thead><tbody>
    ${watch.data.map((p) => `<tr><td>${p.number}</td><td>${when(p.started_at)}</td>
      <td>${p.response_status ?? "—"}</td><td>${esc(p.read)} ${badge(p.mapped_status)}</td>
      <td>${badge(p.outcome)}</td><td>${esc(p.error)}</td></tr>`).join("")}
    </tbody></table>`;
}

async function openTimeline(opId) {
  currentOp = opId;
  const id = encodeURIComponent(opId);
  const [op, events, deliveries, watch] = await Promise.all([
    api("GET", `/v1/operations/${id}`),
    api("GET", `/v1/operations/${id}/events`),
    api("GET", `/v1/operations/${id}/deliveries`),
    polls(opId),
  ]);
  const el = $("#timeline");
  el.innerHTML = `<h2>Operation <code>${esc(op.id)}</code> ${badge(op.status)}</h2>
    <p class="muted">order <code>${esc(op.external_id)}</code> · ${esc(merchants[op.merchant_id] || op.merchant_id)}
      · ${esc(op.amount)} ${esc(op.currency)} · ${esc(op.kind)} · dialect ${esc(op.dialect)} · #${op.number}</p>
    <h3>Events</h3>
    <table id="events"><thead><tr><th>seq</th><th>change</th><th>at</th><th>event</th></tr></thead><tbody>
    ${events.data.map((e) => `<tr><td>${e.seq}</td>
      <td>${e.seq === 0 ? `registered ${badge(e.status)}` : `${badge(e.previous_status)} → ${badge(e.status)}`}</td>
      <td>${when(e.created_at)}</td><td><code>${esc(e.id)}</code></td></tr>`).join("")}
    </tbody></table>
    <h3>Deliveries</h3>
    ${deliveries.data.map(deliveryCard).join("") || `<p class="muted">No callback owed (yet).</p>`}
    ${pollsSection(watch)}`;
  el.hidden = false;
  el.scrollIntoView({ behavior: "instant", block: "start" });
}

async function resend(deliveryId) {
  try {
    const d = await api("POST", `/v1/deliveries/${encodeURIComponent(deliveryId)}/resend`);
    flash(`Resent ${d.id}: a new attempt series starts now (state ${d.state}).`);
  } catch (e) {
    flash(`Resend refused: ${e.message}`, true);
  }
  if (currentOp) await openTimeline(currentOp);
  await loadStats();
}

// The tabs: the deliveries view (stats, operations, timeline) and the merchants page
// (merchants.js).
function selectTab(name) {
  for (const tab of document.querySelectorAll("nav.tabs [data-tab]")) {
    tab.classList.toggle("active", tab.dataset.tab === name);
    $(`#${tab.dataset.tab}-view`).hidden = tab.dataset.tab !== name;
  }
}

async function openTab(name) {
  selectTab(name);
  await (name === "merchants" ? loadMerchants(true) : loadStats());
}

function guard(fn) {
  return (...args) => fn(...args).catch((e) => flash(e.message, true));
}

document.addEventListener("DOMContentLoaded", () => {
  $("#login-form").addEventListener("submit", login);
  $("#logout").addEventListener("click", () => logout());
  $("#search-form").addEventListener("submit", guard(search));
  $("#search-clear").addEventListener("click", guard(async () => {
    $("#search-external").value = "";
    await loadOperations(true);
  }));
  $("#search-merchant").addEventListener("change", guard(() => loadOperations(true)));
  $("#more").addEventListener("click", guard(() => loadOperations(false)));
  $("#ops").addEventListener("click", guard(async (e) => {
    const row = e.target.closest("tr[data-op]");
    if (row) await openTimeline(row.dataset.op);
  }));
  $("#timeline").addEventListener("click", guard(async (e) => {
    const button = e.target.closest("button.resend");
    if (button) await resend(button.dataset.delivery);
  }));
  for (const tab of document.querySelectorAll("nav.tabs [data-tab]")) {
    tab.addEventListener("click", guard(() => openTab(tab.dataset.tab)));
  }
  if (sessionStorage.getItem(TOKEN_KEY)) {
    start().catch(() => logout("Please log in again."));
  } else {
    show(false);
  }
});
