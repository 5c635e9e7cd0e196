// The runs table: one row per run, newest at the top. Rows are kept per run and updated in
// place, so a status change repaints one row and a new run is one new row (briefly marked).

import { el, setText } from "./dom.js";
import { duration, record, time, trigger } from "./format.js";

export class RunsTable {
  // onOpen(runId): a row was chosen. href(runId): the link of a run (its detail in the URL).
  constructor(tbody, { onOpen, href }) {
    this.tbody = tbody;
    this.onOpen = onOpen;
    this.href = href;
    this.rows = new Map(); // run id -> {tr, cells, seq}
    this.settled = false; // the runs read at the start are on screen: later ones are new
  }

  clear() {
    this.rows.clear();
    this.tbody.replaceChildren();
    this.settled = false;
  }

  // `loaded`: the runs read at the start are all in `runs`.
  render(runs, selectedId, loaded) {
    const keep = new Set(runs.map((run) => run.id));
    for (const id of this.rows.keys()) if (!keep.has(id)) this.rows.delete(id);
    const trs = runs.map((run) => {
      let row = this.rows.get(run.id);
      if (!row) {
        row = this._row(run);
        // Runs that arrive after the first paint are new: mark them for a moment.
        if (this.settled) row.tr.classList.add("fresh");
        this.rows.set(run.id, row);
      } else if (row.seq !== run.seq) {
        this._fill(row, run);
      }
      row.tr.classList.toggle("selected", run.id === selectedId);
      return row.tr;
    });
    // Moving rows restarts their animations: only when the order changed (a new run).
    const current = this.tbody.children;
    if (current.length !== trs.length || trs.some((tr, index) => current[index] !== tr)) {
      this.tbody.replaceChildren(...trs);
    }
    if (loaded) this.settled = true;
  }

  // Mark the open run's row (without repainting the others: the table may be paused).
  select(selectedId) {
    for (const [id, row] of this.rows) row.tr.classList.toggle("selected", id === selectedId);
  }

  _row(run) {
    const link = el("a", {
      href: this.href(run.id),
      onclick: (event) => {
        if (event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey) return;
        event.preventDefault();
        this.onOpen(run.id);
      },
    });
    const cells = {
      run: el("td", { className: "id" }, link),
      rule: el("td", { className: "rule" }),
      trigger: el("td", { className: "trigger" }),
      record: el("td", { className: "record" }),
      status: el("td", { className: "status" }, el("span", { className: "badge" })),
      duration: el("td", { className: "num duration" }),
      started: el("td", { className: "num started" }),
    };
    const tr = el("tr", { dataset: { runId: run.id } }, ...Object.values(cells));
    tr.addEventListener("click", (event) => {
      if (event.target.closest("a")) return;
      this.onOpen(run.id);
    });
    tr.addEventListener("animationend", () => tr.classList.remove("fresh"));
    const row = { tr, cells, link, seq: null };
    this._fill(row, run);
    return row;
  }

  _fill(row, run) {
    const { cells } = row;
    setText(row.link, `#${run.id}`);
    setText(cells.rule, run.rule ? run.rule.name : "");
    cells.rule.title = run.rule ? run.rule.name : "";
    setText(cells.trigger, trigger(run));
    setText(cells.record, record(run));
    const badge = cells.status.firstChild;
    badge.className = `badge status-${run.status}`;
    setText(badge, run.status);
    setText(cells.duration, duration(run.durationMs));
    const started = run.startedAt || run.createdAt;
    setText(cells.started, time(started));
    cells.started.title = started || "";
    row.tr.dataset.status = run.status;
    row.seq = run.seq;
  }
}
