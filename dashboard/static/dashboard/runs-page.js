// The live runs page (/runs/): one organization's runs as they happen, over the GraphQL API.
//
// Everything comes through one graphql-transport-ws connection (graphql-socket.js) as the
// signed-in user: queries for organizations, rules, pages of `logs` and one `log`; the
// subscriptions automationLogs and actionUpdates for what changes. Nothing here sends a
// mutation. The state worth a link (organization, filters, the open run) lives in the URL.

import { api } from "./queries.js";
import { ConnectionLost, GraphQLSocket } from "./graphql-socket.js";
import { el, setText } from "./dom.js";
import { FINAL, STATUSES } from "./format.js";
import { RunDetail } from "./run-detail.js";
import { HOUR_MS, RunStore, TABLE_ROWS } from "./run-store.js";
import { renderChart } from "./runs-chart.js";
import { RunsTable } from "./runs-table.js";

const PAGE_SIZE = 200;
const MAX_PAGES = 5; // at most 1,000 runs read at once; live events add the rest
const RENDER_DELAY_MS = 100;
const CHART_TICK_MS = 15000;
const $ = (id) => document.getElementById(id);

const body = document.body;
const nodes = {
  organization: $("organization"),
  rule: $("rule-filter"),
  status: $("status-filter"),
  pause: $("pause"),
  paused: $("paused-note"),
  connection: $("connection"),
  me: $("me"),
  notice: $("notice"),
  empty: $("empty"),
  more: $("more"),
  chart: $("chart"),
  legend: $("chart-legend"),
  chartNote: $("chart-note"),
};

const state = {
  organization: null, // id
  rule: null, // id or null
  status: null, // a RunStatus or null
  selected: null, // the open run's id
  paused: false,
  waitingUpdates: 0, // events taken in while paused
  generation: 0, // bumped whenever the organization or a filter changes
  loaded: false, // the first pages of the current generation are in
  morePages: false, // runs older than those read exist
  cursor: null, // the last stream cursor the runs subscription saw
  stopRuns: null,
  stopDetail: [],
};

const store = new RunStore();
const table = new RunsTable(document.querySelector("#runs tbody"), {
  onOpen: (id) => openRun(id),
  href: (id) => urlFor({ run: id }),
});
const detail = new RunDetail($("detail"), { onClose: () => openRun(null) });
const socket = new GraphQLSocket(websocketUrl(body.dataset.graphqlPath), {
  onState: showConnection,
  onOpen: () => opened(),
});
const { query, subscribe } = api(socket);

// --- start-up ----------------------------------------------------------------------------------

readUrl();
for (const status of STATUSES) nodes.status.append(el("option", { value: status, text: status }));
nodes.status.value = state.status || "";
nodes.organization.addEventListener("change", () => {
  state.organization = nodes.organization.value || null;
  state.rule = null;
  state.selected = null;
  startOrganization().catch(showError);
});
nodes.rule.addEventListener("change", () => {
  state.rule = nodes.rule.value || null;
  startRuns().catch(showError);
});
nodes.status.addEventListener("change", () => {
  state.status = nodes.status.value || null;
  startRuns().catch(showError);
});
nodes.pause.addEventListener("click", () => setPaused(!state.paused));
setInterval(() => state.paused || drawChart(), CHART_TICK_MS); // the minutes move on
let started = false;
socket.start();

// The socket resumes the subscriptions itself after a reconnection (from their cursors).
function opened() {
  if (started) return;
  started = true;
  boot().catch(showError);
}

async function boot() {
  const organizations = [];
  for (let offset = 0; offset < MAX_PAGES * PAGE_SIZE; offset += PAGE_SIZE) {
    const data = await query("organizations", { offset, limit: PAGE_SIZE });
    setText(nodes.me, data.me ? data.me.username : "");
    organizations.push(...data.organizations);
    if (data.organizations.length < PAGE_SIZE) break;
  }
  nodes.organization.replaceChildren(
    ...organizations.map((org) =>
      el("option", { value: org.id, text: `${org.name} (${org.viewerRole.toLowerCase()})` }),
    ),
  );
  if (!organizations.length) {
    notice("You are not a member of any organization yet.");
    return;
  }
  if (!organizations.some((org) => org.id === state.organization)) {
    state.organization = organizations[0].id;
    state.rule = null;
    state.selected = null;
  }
  nodes.organization.value = state.organization;
  await startOrganization();
}

// --- one organization, one set of filters ------------------------------------------------------

async function startOrganization() {
  const generation = ++state.generation;
  forgetRuns();
  nodes.rule.replaceChildren(el("option", { value: "", text: "All rules" }));
  openRun(state.selected);
  const rules = [];
  for (let offset = 0; offset < MAX_PAGES * PAGE_SIZE; offset += PAGE_SIZE) {
    const data = await query("rules", {
      organization: state.organization,
      offset,
      limit: PAGE_SIZE,
    });
    if (generation !== state.generation) return;
    rules.push(...data.rules);
    if (data.rules.length < PAGE_SIZE) break;
  }
  nodes.rule.append(...rules.map((rule) => el("option", { value: rule.id, text: rule.name })));
  if (state.rule && !rules.some((rule) => rule.id === state.rule)) state.rule = null;
  nodes.rule.value = state.rule || "";
  await startRuns();
}

// Forget the runs shown, read the newest pages under the filters, then follow the runs from the
// stream cursor read with the first page: every event since, then live ones (an event of a run
// already read is dropped by its seq, RunStore.put). The subscription's variables carry the last
// cursor seen: after a dropped connection the socket starts it again from there, so what
// happened meanwhile arrives first, nothing missed and nothing twice.
async function startRuns() {
  const generation = ++state.generation;
  forgetRuns();
  const cursor = await readPages(generation);
  if (generation !== state.generation) return;
  state.cursor = cursor;
  state.stopRuns = subscribe("runsLive", () => ({ ...liveVariables(), after: state.cursor }), {
    next: (data) => {
      if (generation !== state.generation) return;
      const run = data.automationLogs;
      state.cursor = run.cursor;
      knowRule(run.rule);
      if (store.put(run)) changed();
    },
    error: (error) => {
      if (generation !== state.generation) return;
      // Away longer than the stream keeps events: read the runs afresh.
      if (error.code === "CURSOR_EXPIRED") startRuns().catch(showError);
      else streamError(error);
    },
  });
}

function forgetRuns() {
  if (state.stopRuns) state.stopRuns();
  state.stopRuns = null;
  store.clear();
  table.clear();
  Object.assign(state, { loaded: false, morePages: false, waitingUpdates: 0, cursor: null });
  if (state.paused) setText(nodes.paused, "Paused");
  nodes.notice.hidden = true;
  writeUrl();
  render();
}

// The newest pages, back to an hour ago (the chart) or MAX_PAGES; returns the stream cursor
// read before the first page.
async function readPages(generation) {
  let after = null;
  let streamCursor = null;
  const hourAgo = Date.now() - HOUR_MS;
  for (let page = 0; page < MAX_PAGES; page += 1) {
    const data = await query("logs", {
      organization: state.organization,
      filter: logFilter(),
      first: PAGE_SIZE,
      after,
    });
    if (generation !== state.generation) return null;
    if (page === 0) streamCursor = data.logs.streamCursor;
    const runs = data.logs.edges.map((edge) => edge.node);
    for (const run of runs) store.put(run);
    const oldest = runs[runs.length - 1];
    after = data.logs.pageInfo.endCursor;
    state.morePages = data.logs.pageInfo.hasNextPage;
    if (!state.morePages || !oldest || Date.parse(oldest.createdAt) < hourAgo) break;
    if (page === MAX_PAGES - 1) store.chartComplete = false;
  }
  state.loaded = true;
  render(); // asked for (a choice of organization or filter): shown even while paused
  return streamCursor;
}

// A rule created since the filter was filled: offer it too.
function knowRule(rule) {
  if ([...nodes.rule.options].some((option) => option.value === rule.id)) return;
  nodes.rule.append(el("option", { value: rule.id, text: rule.name }));
}

function liveVariables() {
  return {
    organization: state.organization,
    rule: state.rule,
    statuses: state.status ? [state.status] : null,
  };
}

function logFilter() {
  const filter = { dryRun: false };
  if (state.rule) filter.rule = state.rule;
  if (state.status) filter.statuses = [state.status];
  return filter;
}

// --- the open run ------------------------------------------------------------------------------

function openRun(id) {
  stopFollowing();
  state.selected = id;
  writeUrl();
  table.select(id);
  body.classList.toggle("has-detail", Boolean(id));
  if (!id) {
    detail.clear();
    return;
  }
  detail.open(id);
  loadRun(id).catch(showError);
}

// Read the run, then, unless it is over, follow it from its cursor (its latest event).
async function loadRun(id) {
  const run = (await query("log", { id })).log;
  if (state.selected !== id) return;
  if (detail.putRun(run)) detail.render();
  if (!FINAL.has(run.status)) followRun(run);
}

// Live events of the open run: its own (from its rule's stream) and its actions', each from the
// last cursor it saw. A finished run changes no more: its last event ends both.
function followRun(run) {
  const { id } = run;
  const organization = run.organization.id;
  let runCursor = run.cursor;
  let actionsCursor = run.cursor;
  const error = (problem) => {
    if (state.selected !== id) return;
    if (problem.code === "CURSOR_EXPIRED") openRun(id);
    else streamError(problem);
  };
  state.stopDetail.push(
    subscribe("runLive", () => ({ organization, rule: run.rule.id, after: runCursor }), {
      next: (data) => {
        const event = data.automationLogs;
        runCursor = event.cursor;
        if (state.selected !== id || event.id !== id) return;
        if (detail.putRun(event)) detail.render();
        if (FINAL.has(event.status)) stopFollowing();
      },
      error,
    }),
    subscribe("actionsLive", () => ({ organization, log: id, after: actionsCursor }), {
      next: (data) => {
        actionsCursor = data.actionUpdates.cursor;
        if (state.selected === id && detail.putAction(data.actionUpdates)) detail.render();
      },
      error,
    }),
  );
}

function stopFollowing() {
  for (const stop of state.stopDetail) stop();
  state.stopDetail = [];
}

// --- rendering ---------------------------------------------------------------------------------

let renderTimer = null;

function changed() {
  if (state.paused) {
    state.waitingUpdates += 1;
    setText(nodes.paused, `${state.waitingUpdates} updates waiting`);
    return;
  }
  if (renderTimer === null) renderTimer = setTimeout(render, RENDER_DELAY_MS);
}

function render() {
  clearTimeout(renderTimer);
  renderTimer = null;
  store.prune();
  const runs = store.newest(TABLE_ROWS);
  table.render(runs, state.selected, state.loaded);
  nodes.more.hidden = !(state.morePages || store.runs.size > TABLE_ROWS);
  body.classList.toggle("has-detail", Boolean(state.selected));
  nodes.empty.hidden = runs.length > 0 || !state.loaded;
  drawChart();
}

function drawChart() {
  renderChart(nodes.chart, nodes.legend, nodes.chartNote, store.perMinute(), store.chartComplete);
}

function setPaused(paused) {
  state.paused = paused;
  nodes.pause.setAttribute("aria-pressed", String(paused));
  setText(nodes.pause, paused ? "Resume" : "Pause");
  body.classList.toggle("is-paused", paused);
  setText(nodes.paused, paused ? "Paused" : "");
  if (!paused) {
    state.waitingUpdates = 0;
    render();
  }
}

function showConnection({ state: connection, attempt, retryInMs, reason }) {
  nodes.connection.dataset.state = connection;
  if (connection === "open") setText(nodes.connection, "Live");
  else if (connection === "connecting") setText(nodes.connection, "Connecting…");
  else if (connection === "reconnecting") {
    const wait = retryInMs ? `, next try in ${Math.ceil(retryInMs / 1000)} s` : "";
    setText(nodes.connection, `Reconnecting (attempt ${attempt}${wait})…`);
    nodes.connection.title = reason || "";
  } else if (connection === "refused") {
    setText(nodes.connection, "Signed out");
    signInAgain(reason);
  }
}

function streamError(error) {
  if (error.code === "UNAUTHENTICATED") signInAgain(error.message);
  else if (error.code === "NOT_FOUND") {
    notice("This organization or run is not visible to you any more. Reload the page.");
  } else showError(error);
}

function showError(error) {
  if (error instanceof ConnectionLost) return; // the socket says so, and retries
  notice(error.message || String(error));
}

function signInAgain(reason) {
  const link = el("a", { href: body.dataset.loginUrl, text: "Sign in again" });
  notice(`${reason || "You are signed out."} `, link);
}

function notice(...content) {
  nodes.notice.hidden = false;
  nodes.notice.replaceChildren(...content);
}

// --- the URL -----------------------------------------------------------------------------------

function readUrl() {
  const params = new URLSearchParams(location.search);
  const id = (name) => (/^\d+$/.test(params.get(name) || "") ? params.get(name) : null);
  state.organization = id("organization");
  state.rule = id("rule");
  state.selected = id("run");
  state.status = STATUSES.includes(params.get("status")) ? params.get("status") : null;
}

function urlFor(overrides = {}) {
  const values = {
    organization: state.organization,
    rule: state.rule,
    status: state.status,
    run: state.selected,
    ...overrides,
  };
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(values)) if (value) params.set(name, value);
  return `${location.pathname}?${params}`;
}

function writeUrl() {
  history.replaceState(null, "", urlFor());
}

function websocketUrl(path) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}${path}`;
}
