// payhook dashboard, the merchants page: the merchants by name, dialect and health, each
// with its destinations' health, pause / resume, and recovery after an outage. Uses app.js's
// helpers (api, flash, esc, badge, when, percent, guard); loaded after it.
"use strict";

const shown = new Map();        // merchant id -> merchant, as last read
const expanded = new Set();     // merchant ids whose details are open
let merchantsAfter = null;      // cursor of the merchants list
let merchantsLoad = 0;          // the latest load: an older answer arriving late is dropped
const byId = (attr, id) => $(`[${attr}="${CSS.escape(id)}"]`);
const merchantPath = (id, action = "") =>
  `/v1/merchants/${encodeURIComponent(id)}${action && `/${action}`}`;

// The filters the user picked; a key is sent only when it has a value.
function merchantQuery() {
  const params = new URLSearchParams({ limit: PAGE });
  if (merchantsAfter) params.set("after", merchantsAfter);
  for (const key of ["name", "dialect", "health"]) {
    const value = $(`#merchant-${key}`).value.trim();
    if (value) params.set(key, value);
  }
  return params;
}

async function loadMerchants(reset) {
  if (reset) merchantsAfter = null;
  const params = merchantQuery();
  const load = ++merchantsLoad;
  const { data, next_after } = await api("GET", `/v1/merchants?${params}`);
  if (load !== merchantsLoad) return;
  if (reset) { shown.clear(); expanded.clear(); }
  for (const m of data) shown.set(m.id, m);
  merchantsAfter = next_after;
  const html = data.map(merchantRows).join("");
  const body = $("#merchants tbody");
  if (reset) body.innerHTML = html || `<tr><td colspan="6" class="muted">No merchant matches.</td></tr>`;
  else body.insertAdjacentHTML("beforeend", html);
  $("#merchants-more").hidden = data.length < PAGE || !next_after;
}

function merchantActions(m) {
  const toggle = { active: ["pause", "Pause"], paused: ["resume", "Resume"] }[m.state];
  return (toggle ? `<button type="button" data-action="${toggle[0]}">${toggle[1]}</button> ` : "") +
    `<button type="button" class="secondary" data-action="recover">Recover…</button>`;
}

// A merchant's row, and its details row when expanded.
function merchantRows(m) {
  const row = `<tr class="clickable" data-merchant-row="${esc(m.id)}">
    <td class="name">${esc(m.name)}</td><td><code>${esc(m.id)}</code></td><td>${esc(m.dialect)}</td>
    <td class="state">${badge(m.state)}</td><td class="health">${badge(m.health.state)}</td>
    <td class="actions">${merchantActions(m)}</td></tr>`;
  return expanded.has(m.id) ? row + merchantDetails(m) : row;
}

function destinationsTable(health) {
  const rows = health.destinations.map((d) => `<tr>
    <td><code>${esc(d.url)}</code> ${d.disabled ? badge("disabled") : ""}</td>
    <td>${esc(d.consecutive_failures ?? "—")}</td><td>${when(d.failing_since)}</td>
    <td>${when(d.last_success_at)}</td><td>${when(d.last_failure_at)}</td>
    <td>${percent(d.success_rate_1h)}</td><td>${percent(d.success_rate_24h)}</td></tr>`);
  if (!rows.length) return `<p class="muted small">No destination called yet.</p>`;
  return `<table class="destinations"><thead><tr><th>destination</th><th>failures in a row</th>
    <th>failing since</th><th>last success</th><th>last failure</th><th>1 h</th><th>24 h</th>
    </tr></thead><tbody>${rows.join("")}</tbody></table>`;
}

// A `datetime-local` value (the browser's local time, to the minute) for an instant.
function localInput(ms) {
  const d = new Date(ms);
  return new Date(ms - d.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
}

function merchantDetails(m) {
  return `<tr class="details" data-merchant-details="${esc(m.id)}"><td colspan="6">
    <h3>Destinations</h3>${destinationsTable(m.health)}
    <h3>Recover after an outage</h3>
    <form class="row recover" data-recover="${esc(m.id)}">
      <label class="muted">queue again what ended exhausted or cancelled since
        <input type="datetime-local" name="since" value="${localInput(Date.now() - 864e5)}" required></label>
      <button type="submit">Recover</button>
    </form></td></tr>`;
}

// Draws a merchant's rows again, in place.
function redrawMerchant(m) {
  byId("data-merchant-details", m.id)?.remove();
  const row = byId("data-merchant-row", m.id);
  if (!row) return; // the list was loaded again meanwhile
  row.insertAdjacentHTML("afterend", merchantRows(m));
  row.remove();
}

async function refreshMerchant(id) {
  const m = await api("GET", merchantPath(id));
  shown.set(m.id, m);
  redrawMerchant(m);
}

function toggleMerchant(id, open = !expanded.has(id)) {
  if (open) expanded.add(id); else expanded.delete(id);
  redrawMerchant(shown.get(id));
}

async function merchantAction(id, action, button) {
  if (action === "recover") {
    toggleMerchant(id, true);
    byId("data-recover", id).elements.since.focus();
    return;
  }
  button.disabled = true;
  const name = shown.get(id).name;
  try {
    const m = await api("POST", merchantPath(id, action));
    flash(`${name} is ${m.state} now.`);
  } catch (e) {
    flash(`${action} refused for ${name}: ${e.message}`, true);
  }
  await refreshMerchant(id);
}

async function recover(form) {
  const id = form.dataset.recover;
  const since = new Date(form.elements.since.value);
  if (Number.isNaN(since.getTime())) return flash("Pick the time the outage began.", true);
  const name = shown.get(id).name;
  try {
    const { queued } = await api("POST", merchantPath(id, "recover"), { since: since.toISOString() });
    flash(`${name}: queued ${queued} ${queued === 1 ? "delivery" : "deliveries"} again.`);
  } catch (e) {
    flash(`Recover refused for ${name}: ${e.message}`, true);
  }
  await refreshMerchant(id);
}

async function onMerchantsClick(e) {
  const row = e.target.closest("tr[data-merchant-row]");
  if (!row) return;
  const button = e.target.closest("button[data-action]");
  if (button) await merchantAction(row.dataset.merchantRow, button.dataset.action, button);
  else toggleMerchant(row.dataset.merchantRow);
}

document.addEventListener("DOMContentLoaded", () => {
  $("#merchant-filter").addEventListener("submit", guard(async (e) => {
    e.preventDefault();
    await loadMerchants(true);
  }));
  for (const key of ["dialect", "health"]) {
    $(`#merchant-${key}`).addEventListener("change", guard(() => loadMerchants(true)));
  }
  $("#merchants-more").addEventListener("click", guard(() => loadMerchants(false)));
  $("#merchants").addEventListener("click", guard(onMerchantsClick));
  $("#merchants").addEventListener("submit", guard(async (e) => {
    e.preventDefault();
    await recover(e.target);
  }));
});
