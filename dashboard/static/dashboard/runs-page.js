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
  startOrganization();
});
nodes.rule.addEventListener("change", () => {
  state.rule = nodes.rule.value || null;
  startRuns();
});
nodes.status.addEventListener("change", () => {
  state.status = nodes.status.value || null;
  startRuns();
});
nodes.pause.addEventListener("click", () => setPaused(!state.paused));
setInterval(() => drawChart(), CHART_TICK_MS);
let started = false;
socket.start();

function opened() {
  if (!started) {
    started = true;
    boot().catch(showError);
  } else if (state.loaded) {
    refreshAfterReconnect().catch(showError);
  }
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

// Forget the runs shown, subscribe to the organization's runs under the filters, read the
// newest pages. Events that arrive meanwhile are merged by seq (RunStore.put).
async function startRuns() {
  const generation = ++state.generation;
  if (state.stopRuns) state.stopRuns();
  store.clear();
  table.clear();
  state.loaded = false;
  state.waitingUpdates = 0;
  writeUrl();
  render();
  state.stopRuns = subscribe(
    "runsLive",
    () => liveVariables(),
    {
      next: (data) => {
        if (generation !== state.generation) return;
        knowRule(data.automationLogs.rule);
        if (store.put(data.automationLogs)) changed();
      },
      error: streamError,
    },
  );
  await readPages(generation);
}

async function readPages(generation, maxPages = MAX_PAGES) {
  let after = null;
  const hourAgo = Date.now() - HOUR_MS;
  for (let page = 0; page < maxPages; page += 1) {
    const data = await query("logs", {
      organization: state.organization,
      filter: logFilter(),
      first: PAGE_SIZE,
      after,
    });
    if (generation !== state.generation) return;
    const nodesRead = data.logs.edges.map((edge) => edge.node);
    for (const run of nodesRead) store.put(run);
    const oldest = nodesRead[nodesRead.length - 1];
    after = data.logs.pageInfo.endCursor;
    const more = data.logs.pageInfo.hasNextPage;
    state.morePages = more;
    // Read back to an hour ago (the chart), or until the table is full when runs are sparse.
    if (!more || !oldest || Date.parse(oldest.createdAt) < hourAgo) break;
    if (page === maxPages - 1) store.chartComplete = false;
  }
  state.loaded = true;
  changed();
}

// After a dropped connection the subscription is started again by the socket; the runs it
// missed meanwhile are read from the newest pages.
async function refreshAfterReconnect() {
  const generation = state.generation;
  await readPages(generation, 1);
  if (state.selected) refreshDetail(state.selected);
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
  for (const stop of state.stopDetail) stop();
  state.stopDetail = [];
  state.selected = id;
  writeUrl();
  if (!id) {
    detail.clear();
    render();
    return;
  }
  detail.open(id);
  render();
  refreshDetail(id);
}

async function refreshDetail(id) {
  let run;
  try {
    run = (await query("log", { id })).log;
  } catch (error) {
    if (state.selected === id) showError(error);
    return;
  }
  if (state.selected !== id) return;
  if (!state.stopDetail.length && !FINAL.has(run.status)) followRun(run);
  if (detail.putRun(run)) detail.render();
}

// Live events of the open run: its own (through its rule's stream) and its actions'.
function followRun(run) {
  const id = run.id;
  const organization = run.organization.id;
  const done = () => FINAL.has(detail.run && detail.run.status);
  state.stopDetail.push(
    subscribe("runLive", () => ({ organization, rule: run.rule.id }), {
      next: (data) => {
        if (state.selected !== id || data.automationLogs.id !== id) return;
        if (detail.putRun(data.automationLogs)) detail.render();
        if (done()) stopFollowing(id);
      },
      error: streamError,
    }),
    subscribe("actionsLive", () => ({ organization, log: id }), {
      next: (data) => {
        if (state.selected === id && detail.putAction(data.actionUpdates)) detail.render();
      },
      error: streamError,
    }),
  );
}

function stopFollowing(id) {
  if (state.selected !== id) return;
  for (const stop of state.stopDetail) stop();
  state.stopDetail = [() => {}]; // followed once: a refresh must not subscribe again
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
  if (state.paused) return;
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
