// One run, opened from the table: its facts, condition trace and each action's status, attempt,
// duration, result and error, kept current by live events.
//
// Merging: a log event carries the whole run at its `seq` (actions included); an action update
// carries one action at its `seq`. Each action keeps the seq it was last set at, so whichever
// arrives late, the newest state of the run and of each action wins.

import { el } from "./dom.js";
import { duration, json, record, time, trigger } from "./format.js";

const MAX_WAITING = 500;

export class RunDetail {
  constructor(panel, { onClose }) {
    this.panel = panel;
    this.onClose = onClose;
    this.clear();
  }

  // Show run `id` (its data comes through putRun / putAction).
  open(id) {
    this.clear();
    this.id = id;
  }

  clear() {
    this.id = null;
    this.run = null;
    this.actionSeqs = [];
    this.waiting = []; // action updates that came before the run
    this.openResults = new Set(); // actions whose result the reader unfolded
    this.panel.hidden = true;
    this.panel.replaceChildren();
  }

  // A whole run (the `log` query or a log event). Returns whether it changed anything.
  putRun(run) {
    if (run.id !== this.id || (this.run && this.run.seq >= run.seq)) return false;
    const kept = (this.run && this.run.actionLogs) || [];
    const actions = (run.actionLogs || []).map((action, index) => {
      if (kept[index] && this.actionSeqs[index] > run.seq) return kept[index];
      this.actionSeqs[index] = run.seq;
      return action;
    });
    this.run = { ...(this.run || {}), ...run, actionLogs: actions };
    const waiting = this.waiting;
    this.waiting = [];
    for (const update of waiting) this.putAction(update);
    return true;
  }

  // An action update {logId, seq, action}. Returns whether it changed anything.
  putAction(update) {
    if (update.logId !== this.id) return false;
    if (!this.run) {
      if (this.waiting.length < MAX_WAITING) this.waiting.push(update);
      return false;
    }
    const index = update.action.order;
    if (this.actionSeqs[index] !== undefined && this.actionSeqs[index] >= update.seq) return false;
    const actions = [...(this.run.actionLogs || [])];
    actions[index] = update.action;
    this.actionSeqs[index] = update.seq;
    this.run = { ...this.run, actionLogs: actions };
    return true;
  }

  render() {
    const run = this.run;
    if (!run) return;
    this.panel.hidden = false;
    const close = el("button", {
      type: "button",
      className: "close",
      "aria-label": "Close",
      onclick: () => this.onClose(),
      text: "×",
    });
    const header = el(
      "header",
      {},
      el("h2", {}, `Run #${run.id}`),
      el("span", { className: `badge status-${run.status}`, text: run.status }),
      close,
    );
    const facts = el("dl", { className: "facts" });
    const fact = (name, value) => {
      if (value === "" || value === null || value === undefined) return;
      facts.append(el("dt", { text: name }), el("dd", { text: value }));
    };
    fact("Rule", run.rule ? `${run.rule.name} (revision ${run.ruleRevision})` : "");
    fact("Trigger", trigger(run));
    fact("Record", record(run));
    fact("Triggered by", run.triggeredBy ? run.triggeredBy.username : "");
    fact("Dry run", run.dryRun ? "yes" : "");
    fact("Chain depth", run.depth ? String(run.depth) : "");
    fact("Retry of", run.retryOf ? `#${run.retryOf.id}` : "");
    fact("Created", time(run.createdAt));
    fact("Started", time(run.startedAt));
    fact("Finished", time(run.finishedAt));
    fact("Duration", duration(run.durationMs));
    fact("Conditions met", run.conditionsMet === null ? "" : run.conditionsMet ? "yes" : "no");
    fact(run.status === "WAITING" ? "Resumes at" : "Last resumed", time(run.resumeAt));
    fact("Held for", held(run.hold));

    const parts = [header, facts];
    if (run.error) parts.push(el("p", { className: "error", text: run.error }));
    parts.push(el("h3", { text: "Conditions" }), this._conditions(run));
    if (run.hold && run.hold.checkedAt) {
      parts.push(el("h3", { text: "Conditions after the hold" }), traceTable(run.hold.trace));
    }
    parts.push(el("h3", { text: "Actions" }), this._actions(run.actionLogs || []));
    this.panel.replaceChildren(...parts);
  }

  _result(action, index) {
    const details = el(
      "details",
      {},
      el("summary", { text: `result ${summary(action.result)}` }),
      el("pre", { text: json(action.result) }),
    );
    details.open = this.openResults.has(index);
    details.addEventListener("toggle", () => {
      if (details.open) this.openResults.add(index);
      else this.openResults.delete(index);
    });
    return details;
  }

  _conditions(run) {
    const trace = run.conditionTrace || [];
    if (!trace.length) {
      const text =
        run.conditionsMet === null || run.conditionsMet === undefined
          ? "Not evaluated yet."
          : "The rule has no conditions.";
      return el("p", { className: "muted", text });
    }
    return traceTable(trace);
  }

  // One block per action: what it is and how it went on one line, then its error and result.
  _actions(actions) {
    if (!actions.length) return el("p", { className: "muted", text: "No action has run yet." });
    return el(
      "ol",
      { className: "actions" },
      ...actions.map((action, index) => {
        const order = action.order ?? index;
        return el(
          "li",
          { className: "action", dataset: { order: String(order) } },
          el(
            "div",
            { className: "action-head" },
            el("span", { className: "order", text: `#${order}` }),
            el("strong", { text: action.actionType }),
            el("span", { className: `badge status-${action.status}`, text: action.status }),
            el("span", { className: "attempt", text: `attempt ${action.attempt}` }),
            el("span", { className: "num", text: duration(action.durationMs) }),
          ),
          action.error ? el("p", { className: "error", text: action.error }) : null,
          action.result === null || action.result === undefined ? null : this._result(action, order),
        );
      }),
    );
  }
}

function table(headings, rows) {
  return el(
    "table",
    { className: "inner" },
    el("thead", {}, el("tr", {}, ...headings.map((h) => el("th", { text: h })))),
    el("tbody", {}, ...rows),
  );
}

// A one-line hint of a result: its keys, or its type.
function summary(result) {
  if (result && typeof result === "object" && !Array.isArray(result)) {
    const keys = Object.keys(result);
    return keys.length > 4 ? `{${keys.slice(0, 4).join(", ")}, …}` : `{${keys.join(", ")}}`;
  }
  return Array.isArray(result) ? `[${result.length} items]` : json(result);
}

// A condition trace, one row per condition (the first check, or the one after a hold).
function traceTable(trace) {
  const rows = (trace || []).map((entry) =>
    el(
      "tr",
      { className: entry.passed ? "passed" : "not-passed" },
      el("td", { className: "mark", text: entry.passed ? "✓" : "✗" }),
      el("td", { className: "mono", text: entry.path }),
      el("td", { className: "mono", text: entry.field }),
      el("td", { text: entry.operator }),
      el("td", {}, el("code", { text: json(entry.expected) })),
      el("td", {}, el("code", { text: json(entry.actual) })),
      el("td", { className: "error", text: entry.error || "" }),
    ),
  );
  return table(["", "Path", "Field", "Operator", "Expected", "Actual", "Error"], rows);
}

// A hold in a word: how long, and how its second check went (or when it comes).
function held(hold) {
  if (!hold) return "";
  if (hold.note) return `${hold.holdFor} (dry run: not held)`;
  if (!hold.checkedAt) return `${hold.holdFor}, checked again at ${time(hold.until)}`;
  return `${hold.holdFor}, then ${hold.met ? "still met" : "no longer met"} at ${time(hold.checkedAt)}`;
}
