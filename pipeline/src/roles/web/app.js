// The web page's script: a file of its own so the Content-Security-Policy needs no unsafe-inline.
// Everything the API returns is shown with textContent, never as HTML.
"use strict";
const $ = (id) => document.getElementById(id);
const token = () => sessionStorage.getItem("hunter-token");
let nextCursor = null;
let loading = 0;

function toast(text, kind) {
  const t = $("toast"); t.textContent = text; t.className = kind;
  clearTimeout(toast.timer); toast.timer = setTimeout(() => { t.className = ""; }, 6000);
}
async function api(path, options = {}) {
  const headers = { Authorization: "Bearer " + token() };
  if (options.contentType) headers["Content-Type"] = options.contentType;
  else if (options.body) headers["Content-Type"] = "application/json";
  const response = await fetch("/api/v1" + path, { ...options, headers });
  const body = await response.json().catch(() => ({}));
  if (response.status === 401) { sessionStorage.removeItem("hunter-token"); show(); throw new Error("the token was refused"); }
  if (!response.ok) throw new Error((body.error && body.error.message) || response.statusText);
  return body;
}
// The mail provider as people say it; the API's values (and the filter's option values) stay
// `microsoft365`, `google_workspace`, `other`, `unknown`. A value the page does not know yet is
// shown as it is.
const providerLabels = { microsoft365: "Microsoft 365", google_workspace: "Google Workspace", other: "Other", unknown: "Unknown" };
function providerLabel(value) { return value == null || value === "" ? "" : providerLabels[value] || value; }
function providerCell(value) {
  const td = cell(providerLabel(value));
  if (value) { td.dataset.provider = value; td.title = value; }
  return td;
}
function cell(text, className) { const td = document.createElement("td"); td.textContent = text ?? ""; if (className) td.className = className; return td; }
function when(text) { return text ? text.replace("T", " ").replace("Z", "").slice(0, 16) : ""; }
function money(value, currency) { return value == null ? "" : value.toLocaleString(undefined, { maximumFractionDigits: 2 }) + (currency ? " " + currency : ""); }
// When the referral expires: "estimated" marks Hunter's created + 14 days (docs/leads.md); a
// referral that already passed its expiry, or expires within 48 h, is highlighted.
function expiryCell(lead) {
  const td = cell("", "expires");
  if (!lead.expires_at) return td;
  td.textContent = when(lead.expires_at);
  td.dataset.expiresAt = lead.expires_at;
  const left = (Date.parse(lead.expires_at) - Date.now()) / 3600000;
  if (left < 0) td.classList.add("expired");
  else if (left <= 48) td.classList.add("soon");
  if (lead.expires_at_estimated) {
    const mark = document.createElement("span");
    mark.className = "estimated"; mark.textContent = " estimated";
    mark.title = "Partner Center gave no expirationDateTime: created + 14 days";
    td.append(mark);
  }
  return td;
}
function ago(text) {
  if (!text) return "never";
  const s = Math.max(0, (Date.now() - Date.parse(text)) / 1000);
  return s < 90 ? Math.round(s) + " s ago" : s < 5400 ? Math.round(s / 60) + " min ago" : Math.round(s / 3600) + " h ago";
}
function filterQuery() {
  const params = new URLSearchParams();
  for (const element of $("filters").elements) {
    const value = element.value.trim();
    if (element.name === "country" && value.length !== 2) continue;
    if (element.name && value) params.set(element.name, value);
  }
  return params;
}
async function load(append = false) {
  const params = filterQuery();
  params.set("limit", "50");
  if (append && nextCursor) params.set("cursor", nextCursor);
  const ticket = ++loading;
  // The open actions (waiting, or ended conflict/rejected/failed) of every referral, so a row
  // shows them after a reload too, not only for actions sent from this tab.
  const [body, open] = await Promise.all([
    api("/leads?" + params),
    api("/actions?open=true&limit=1000").catch(() => []),
  ]);
  if (ticket !== loading) return;  // a newer filter won
  openActions.clear();
  for (const view of open) if (!openActions.has(view.referral_id)) openActions.set(view.referral_id, view);
  const rows = $("rows");
  if (!append) rows.replaceChildren();
  for (const lead of body.items) {
    const tr = document.createElement("tr");
    tr.dataset.leadId = lead.lead_id;
    const status = cell(""); const badge = document.createElement("span");
    badge.className = "badge " + (lead.status || ""); badge.textContent = lead.status || ""; status.append(badge);
    tr.append(cell(when(lead.updated_at)), cell(lead.name), status, cell(lead.substatus),
              cell(money(lead.deal_value, lead.currency), "num"), cell(money(lead.deal_value_usd, "USD"), "num"),
              cell(lead.company_name), cell(lead.company_domain), providerCell(lead.email_provider), cell(lead.score, "num"),
              expiryCell(lead), workCell(lead));
    tr.addEventListener("click", () => openDetail(lead.lead_id));
    rows.append(tr);
  }
  if (!rows.children.length) {
    const tr = document.createElement("tr"); const td = cell("No leads match these filters.", "empty"); td.colSpan = 12; tr.append(td); rows.append(tr);
  }
  nextCursor = body.next_cursor || null;
  $("more").hidden = !nextCursor;
  const shown = rows.querySelectorAll("tr[data-lead-id]").length;
  $("summary").textContent = `${shown} of ${body.total} leads`;
}
function reload() { return load(false).catch((e) => toast("Could not load leads: " + e.message, "error")); }

function fill(dl, pairs) {
  dl.replaceChildren();
  for (const [label, value] of pairs) {
    if (value == null || value === "" || (Array.isArray(value) && !value.length)) continue;
    const dt = document.createElement("dt"); dt.textContent = label;
    const dd = document.createElement("dd"); dd.textContent = Array.isArray(value) ? value.join(", ") : String(value);
    dl.append(dt, dd);
  }
}
async function openDetail(id) {
  try {
    const [detail, referral] = await Promise.all([
      api("/leads/" + encodeURIComponent(id)),
      api("/referrals/" + encodeURIComponent(id)).catch(() => null),
    ]);
    const lead = detail.lead;
    $("detail-title").textContent = lead.name || lead.company_name || lead.lead_id;
    fill($("detail-lead"), [
      ["Lead id", lead.lead_id], ["Status", lead.status], ["Substatus", lead.substatus], ["Previous status", lead.previous_status],
      ["Company", lead.company_name], ["Domain", lead.company_domain], ["Mail provider", providerLabel(lead.email_provider)],
      ["Country", lead.country], ["Size", lead.size_band], ["Deal value", money(lead.deal_value, lead.currency)],
      ["USD value", money(lead.deal_value_usd, "USD")], ["Score", lead.score], ["Priority", lead.priority],
      ["Qualification", lead.qualification], ["Direction", lead.direction], ["Type", lead.referral_type],
      ["Products", lead.products], ["Solutions", lead.solutions], ["Tenant", lead.tenant],
      ["Created", when(lead.created_at)], ["Updated", when(lead.updated_at)],
      ["Expires", lead.expires_at ? when(lead.expires_at) + (lead.expires_at_estimated ? " (estimated: created + 14 days)" : "") : null],
      ["Accepted", when(lead.accepted_at)], ["Expected close", when(lead.closing_at)], ["Closed", when(lead.closed_at)],
      ["Partner team", lead.owner_emails],
    ]);
    if (referral) {
      const r = referral.referral || {};
      const customer = r.customerProfile || {};
      const contact = (customer.team || [])[0] || {};
      fill($("detail-referral"), [
        ["Name", r.name], ["Engagement", r.engagementId], ["Customer", customer.name],
        ["Contact", [contact.firstName, contact.lastName].filter(Boolean).join(" ")], ["Contact email", contact.email],
        ["Status reason", r.statusReason], ["Fetched", when(referral.fetched_at)],
      ]);
      $("detail-raw").textContent = JSON.stringify(r, null, 2);
    } else {
      fill($("detail-referral"), [["Referral", "not stored yet"]]);
      $("detail-raw").textContent = "";
    }
    await showActions(lead.referral_id, referral && referral.referral);
    const history = $("detail-history"); history.replaceChildren();
    for (const version of detail.history) {
      const tr = document.createElement("tr");
      tr.append(cell(version.version), cell(when(version.updated_at)), cell(version.status), cell(version.substatus), cell(version.change_type), cell(version.score, "num"));
      history.append(tr);
    }
    $("detail").showModal();
  } catch (e) { toast("Could not open the lead: " + e.message, "error"); }
}

// --- Write-back (docs/writeback.md): Accept/Decline on incoming New, Won/Lost on Active; each
// action is followed until its final state, which shows on the row and in the detail modal.
const actionLabels = { accept: "Accept", decline: "Decline", won: "Won", lost: "Lost" };
const rowActions = new Map();  // referral id -> the newest action this page sent { action, state, message }
const openActions = new Map();  // referral id -> its newest open action, from GET /actions?open=true
function stateBadge(view) {
  const span = document.createElement("span");
  span.className = "action-state " + view.state;
  span.dataset.actionState = view.state;
  span.textContent = `${view.action} ${view.state}`;
  if (view.message) span.title = view.message;
  return span;
}
function workCell(lead) {
  const td = cell("", "work");
  const choices = lead.status === "New" && lead.direction !== "Outgoing" ? ["accept", "decline"]
    : lead.status === "Active" ? ["won", "lost"] : [];
  for (const action of choices) {
    const button = document.createElement("button");
    button.type = "button"; button.className = "plain"; button.dataset.action = action;
    button.textContent = actionLabels[action];
    button.addEventListener("click", (e) => { e.stopPropagation(); openAction(lead, action); });
    td.append(button);
  }
  const last = rowActions.get(lead.referral_id) || openActions.get(lead.referral_id);
  if (last) td.append(stateBadge(last));
  return td;
}
let acting = null;
function openAction(lead, action) {
  acting = { lead, action };
  const name = lead.name || lead.company_name || lead.referral_id;
  $("act-title").textContent = `${actionLabels[action]}: ${name}`;
  $("act-what").textContent = {
    accept: "Accept this incoming referral in Partner Center (New → Active/Accepted).",
    decline: "Decline this incoming referral in Partner Center (New → Closed/Declined). A reason is required.",
    won: "Mark the deal won in Partner Center (Active → Closed/Won).",
    lost: "Mark the deal lost in Partner Center (Active → Closed/Lost). A reason is required.",
  }[action];
  const closing = action === "won" || action === "lost";
  $("act-reason-row").hidden = action === "accept" || action === "won";
  $("act-reason").required = action === "decline" || action === "lost";
  $("act-reason").value = "";
  for (const id of ["act-value-row", "act-currency-row", "act-date-row"]) $(id).hidden = !closing;
  $("act-value").required = action === "won";
  $("act-currency").required = action === "won";
  $("act-value").value = lead.deal_value == null ? "" : String(lead.deal_value);
  $("act-currency").value = lead.currency || "USD";
  $("act-date").value = action === "won" ? new Date().toISOString().slice(0, 10) : "";
  $("act").showModal();
}
$("act-cancel").addEventListener("click", () => { acting = null; $("act").close(); });
$("act-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  if (!acting) return;
  const { lead, action } = acting;
  const body = { action, etag: lead.etag || undefined };
  const add = (key, id) => { const value = $(id).value.trim(); if (value && !$(id).closest("label").hidden) body[key] = value; };
  add("reason", "act-reason"); add("deal_value", "act-value"); add("currency", "act-currency"); add("closing_date", "act-date");
  $("act-submit").disabled = true;
  try {
    const answer = await api("/referrals/" + encodeURIComponent(lead.referral_id) + "/actions", { method: "POST", body: JSON.stringify(body) });
    $("act").close(); acting = null;
    toast(`${actionLabels[action]} queued for Partner Center`, "ok");
    trackAction(lead.referral_id, answer.action_id, action);
  } catch (error) {
    toast(`${actionLabels[action]} refused: ${error.message}`, "error");
  } finally { $("act-submit").disabled = false; }
});
function markRow(referralId, view) {
  rowActions.set(referralId, view);
  const row = [...$("rows").querySelectorAll("tr[data-lead-id]")].find((tr) => tr.dataset.leadId === referralId);
  if (!row) return;
  const work = row.querySelector("td.work");
  work.querySelectorAll(".action-state").forEach((el) => el.remove());
  work.append(stateBadge(view));
}
async function trackAction(referralId, actionId, action) {
  markRow(referralId, { action, state: "queued" });
  const started = Date.now();
  while (Date.now() - started < 180000) {
    const view = await api("/actions/" + encodeURIComponent(actionId)).catch(() => ({ action, state: "queued" }));
    markRow(referralId, view);
    if (view.final) {
      if (view.state === "applied") {
        toast(`${actionLabels[action] || action} applied in Partner Center`, "ok");
        // The new version reaches the lead store within seconds: reload until the row shows it.
        for (let i = 0; i < 20; i++) {
          await reload();
          const row = [...$("rows").querySelectorAll("tr[data-lead-id]")].find((tr) => tr.dataset.leadId === referralId);
          const status = row && row.querySelector(".badge") && row.querySelector(".badge").textContent;
          if (view.to_status && status === view.to_status.split("/")[0]) break;
          await new Promise((resolve) => setTimeout(resolve, 1000));
        }
      } else {
        toast(`${actionLabels[action] || action} ${view.state}: ${view.message || ""}`, "error");
      }
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}
async function showActions(referralId, seen) {
  const body = $("detail-actions"); body.replaceChildren();
  $("detail-conflict").hidden = true;
  const actions = await api("/referrals/" + encodeURIComponent(referralId) + "/actions").catch(() => []);
  for (const view of actions) {
    const tr = document.createElement("tr");
    const state = cell(""); state.append(stateBadge(view));
    tr.append(cell(when(view.requested_at)), cell(view.action), state, cell(`${view.actor_name} (${view.actor_role})`), cell(view.message));
    body.append(tr);
  }
  if (!actions.length) {
    const tr = document.createElement("tr"); const td = cell("No actions yet.", "empty"); td.colSpan = 5; tr.append(td); body.append(tr);
  }
  // The newest conflict: the version the user acted on beside the one Partner Center has now.
  const conflict = actions.find((view) => view.state === "conflict" && view.current_version);
  if (conflict) {
    $("conflict-seen").textContent = JSON.stringify(seen || {}, null, 2);
    $("conflict-now").textContent = JSON.stringify(conflict.current_version, null, 2);
    $("detail-conflict").hidden = false;
  }
}

function showSyncState(state, text) {
  $("sync-status").dataset.state = state;
  $("sync-status-text").textContent = text;
}
function backfillText(run) {
  const of = run.estimate ? `${run.fetched}/~${run.estimate} (${Math.min(99, Math.floor(run.fetched * 100 / run.estimate))}%)` : `${run.fetched}`;
  return `backfill: ${of} referrals read, ${run.published} published, ${run.pages} pages, ${run.elapsed_seconds}s`;
}
async function refreshStatus() {
  if (following) return;
  try {
    const status = await api("/partner-center/sync/status");
    const last = status.tenants.map((t) => t.last_success_at).filter(Boolean).sort().pop();
    const failed = status.tenants.find((t) => t.state === "failed");
    // A running backfill (hunter backfill) shows its progress: referrals read of the estimate.
    const backfill = status.tenants.map((t) => t.last_run)
      .find((r) => r && r.trigger === "backfill" && r.status === "running");
    const text = !status.enabled ? "sync disabled"
      : backfill ? backfillText(backfill)
      : status.state === "running" ? "syncing…"
      : failed ? "sync failed: " + ((failed.last_run && failed.last_run.error_message) || "see the runs")
      : "synced " + ago(last);
    showSyncState(status.state, text);
  } catch (e) { showSyncState("unknown", "sync status unavailable"); }
}
let following = null;
async function follow(taskId) {
  following = taskId;
  const started = Date.now();
  try {
    while (Date.now() - started < 180000) {
      const task = await api("/sync/runs/" + encodeURIComponent(taskId)).catch(() => ({ state: "queued", runs: [] }));
      if (task.state === "expired") {
        // The source picked the trigger up too late (longer than the sync interval): not run.
        showSyncState("failed", "sync trigger expired");
        toast("Sync expired: the trigger waited longer than the sync interval and was not run; the schedule has synced since", "error");
        return;
      }
      if (task.state === "succeeded" || task.state === "failed") {
        const fetched = task.runs.reduce((n, r) => n + r.fetched, 0);
        const published = task.runs.reduce((n, r) => n + r.published, 0);
        if (task.state === "succeeded") {
          showSyncState("idle", "synced just now");
          toast(`Sync finished: ${fetched} referral${fetched === 1 ? "" : "s"} read, ${published} new version${published === 1 ? "" : "s"}`, "ok");
        } else {
          const failed = task.runs.find((r) => r.status === "failed") || {};
          showSyncState("failed", "sync failed");
          toast("Sync failed: " + (failed.error_message || failed.error_class || "unknown error"), "error");
        }
        reload(); loadOverview();
        return;
      }
      showSyncState(task.state, task.state === "queued" ? "sync queued…" : "syncing…");
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
    toast("The sync is still running; its status updates here when it ends", "error");
  } finally {
    following = null;
    $("sync").disabled = false;
    refreshStatus();
  }
}
$("sync").addEventListener("click", async () => {
  $("sync").disabled = true;
  try {
    const body = await api("/partner-center/referrals/sync", { method: "POST" });
    toast((body.joined ? "Sync already queued (task " : "Sync started (task ") + body.task_id.slice(0, 8) + ")", "ok");
    showSyncState("queued", "sync queued…");
    follow(body.task_id);
  } catch (e) {
    toast("Sync failed to start: " + e.message, "error");
    $("sync").disabled = false;
  }
});

// Dead letters: a small view of GET /dlq, and replay through POST /dlq/replay (admin token).
async function loadDeadLetters() {
  const body = await api("/dlq?limit=200");
  const rows = $("dlq-rows"); rows.replaceChildren();
  for (const letter of body.items) {
    const tr = document.createElement("tr");
    tr.dataset.dlqId = letter.id;
    const again = letter.failed_again_as.length ? " as " + letter.failed_again_as.join(", ") : "";
    const action = cell("");
    if (letter.outcome === "pending" && letter.replay_count === 0) {
      const button = document.createElement("button"); button.className = "plain dlq-replay"; button.textContent = "Replay";
      button.addEventListener("click", () => replayDeadLetters({ ids: [letter.id] }, button));
      action.append(button);
    }
    tr.append(cell(letter.id), cell(when(letter.received_at)), cell(letter.stage), cell(letter.error_class),
              cell(letter.error, "wrap"), cell(letter.replay_count, "num"), cell(letter.outcome + again), action);
    rows.append(tr);
  }
  if (!rows.children.length) {
    const tr = document.createElement("tr"); const td = cell("No dead letters.", "empty"); td.colSpan = 8; tr.append(td); rows.append(tr);
  }
}
async function replayDeadLetters(request, button) {
  if (button) button.disabled = true;
  try {
    const result = await api("/dlq/replay", { method: "POST", body: JSON.stringify(request), contentType: "application/json" });
    const reasons = result.items.filter((i) => i.reason).map((i) => i.id + ": " + i.reason);
    toast(`Replayed ${result.replayed}, skipped ${result.skipped}` + (reasons.length ? " (" + reasons[0] + ")" : ""), result.replayed ? "ok" : "error");
    await loadDeadLetters();
  } catch (e) {
    toast("Replay failed: " + e.message, "error");
    if (button) button.disabled = false;
  }
}
$("dlq-open").addEventListener("click", async () => {
  $("dlq").showModal();
  try { await loadDeadLetters(); } catch (e) { toast("Could not load dead letters: " + e.message, "error"); }
});
$("dlq-close").addEventListener("click", () => $("dlq").close());
$("dlq-replay-pending").addEventListener("click", (e) => replayDeadLetters({}, e.target).finally(() => { e.target.disabled = false; }));

// --- The overview (GET /overview): figures above the table; each carries the GET /leads filter
// of the leads it counts, and a click puts exactly that filter on the table.
function usd(value) { return value.toLocaleString("en-US", { style: "currency", currency: "USD", maximumFractionDigits: 0 }); }
// `filter`: the query string a click applies ("" clears every filter); null: not clickable.
function figure(value, label, filter, title) {
  const element = document.createElement(filter != null ? "button" : "span");
  element.className = "figure";
  if (filter != null) { element.type = "button"; element.dataset.filter = filter; element.addEventListener("click", () => applyFilter(filter)); }
  if (title) element.title = title;
  const strong = document.createElement("strong"); strong.className = "value"; strong.textContent = value;
  const small = document.createElement("span"); small.className = "label"; small.textContent = label;
  element.append(strong, small);
  return element;
}
// Sets the filter form to exactly `filter` (a query string), keeping the sort, and reloads.
function applyFilter(filter) {
  const params = new URLSearchParams(filter);
  for (const element of $("filters").elements) {
    if (!element.name || element.name === "sort") continue;
    element.value = params.get(element.name) || "";
  }
  markActiveFigure();
  reload();
}
function currentFilter() {
  const params = filterQuery(); params.delete("sort"); params.sort();
  return params.toString();
}
function markActiveFigure() {
  const current = currentFilter();
  for (const button of document.querySelectorAll("#overview button.figure")) {
    const params = new URLSearchParams(button.dataset.filter); params.sort();
    button.classList.toggle("active", params.toString() === current);
  }
}
async function loadOverview() {
  let o;
  try { o = await api("/overview"); } catch (e) { return; }  // the table says what is wrong
  const statuses = $("ov-status"); statuses.replaceChildren(figure(o.total, "all leads", "", "Every live lead"));
  for (const s of o.by_status) {
    if (!s.filter) continue;
    statuses.append(figure(s.leads, s.status, s.filter, `${s.leads} ${s.status} leads, ${usd(s.value_usd)}`));
  }
  const x = o.expiring_soon;
  $("ov-waiting").replaceChildren(
    figure(o.incoming_waiting.leads, "incoming New", o.incoming_waiting.filter, "Incoming referrals nobody has accepted or declined yet"),
    figure(x.leads, `expiring within ${x.within_hours} h` + (x.estimated ? ` (${x.estimated} estimated)` : ""), x.filter,
      "Partner Center archives these as Expired if nobody answers; estimated: created + 14 days, no date from Partner Center"));
  $("ov-waiting").lastChild.classList.toggle("warn", x.leads > 0);
  const p = o.pipeline;
  $("ov-pipeline").replaceChildren(figure(usd(p.value_usd), `${p.leads} open leads` + (p.leads_without_usd ? `, ${p.leads_without_usd} without a USD value` : ""), p.filter));
  const providers = $("ov-providers"); providers.replaceChildren();
  for (const v of o.providers) {
    providers.append(figure(v.companies, providerLabel(v.provider), v.filter,
      `${v.companies} companies (distinct domains) in ${v.leads_with_domain} leads`));
  }
  const run = o.last_sync.last_run;
  $("ov-sync").replaceChildren(figure(ago(o.last_sync.last_success_at), run ? `last run ${run.status}` : "no run yet", null,
    run ? `${run.trigger} run of ${run.tenant}, started ${when(run.started_at)}` : ""));
  $("overview").hidden = false;
  markActiveFigure();
}

// --- Export: GET /leads.csv with the table's filters and sort, saved as a download. The token
// goes in the Authorization header (never in a URL), so the file is fetched, then saved.
$("export").addEventListener("click", async () => {
  $("export").disabled = true;
  try {
    const response = await fetch("/api/v1/leads.csv?" + filterQuery(), { headers: { Authorization: "Bearer " + token() } });
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      throw new Error((body.error && body.error.message) || response.statusText);
    }
    const blob = await response.blob();
    const disposition = response.headers.get("Content-Disposition") || "";
    const name = (disposition.match(/filename="([^"]+)"/) || [])[1] || "hunter-leads.csv";
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob); link.download = name;
    document.body.append(link); link.click(); link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 60000);
    toast("Exported " + name, "ok");
  } catch (e) {
    toast("Export failed: " + e.message, "error");
  } finally { $("export").disabled = false; }
});

function show() {
  const signedIn = !!token();
  $("login").hidden = signedIn; $("app").hidden = !signedIn;
  if (signedIn) { reload(); refreshStatus(); loadOverview(); }
}
$("token-form").addEventListener("submit", (e) => { e.preventDefault(); sessionStorage.setItem("hunter-token", $("token").value.trim()); show(); });
$("sign-out").addEventListener("click", () => { sessionStorage.removeItem("hunter-token"); show(); });
let typing;
$("filters").addEventListener("input", (e) => {
  clearTimeout(typing);
  typing = setTimeout(() => { markActiveFigure(); reload(); }, e.target.tagName === "SELECT" ? 0 : 300);
});
$("filters").addEventListener("submit", (e) => { e.preventDefault(); reload(); });
$("more").addEventListener("click", () => load(true).catch((e) => toast(e.message, "error")));
$("detail-close").addEventListener("click", () => $("detail").close());
setInterval(() => { if (token()) refreshStatus(); }, 10000);
setInterval(() => { if (token()) loadOverview(); }, 30000);
show();
