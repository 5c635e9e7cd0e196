// The runs the page knows of, newest first, merged from pages of `logs` and live events.
//
// A run's events can arrive out of order (distributed mode) or twice (a page read and an event
// of the same moment): the copy with the highest `seq` wins. Memory is bounded: the newest
// TABLE_ROWS runs are always kept, older ones only while they are within the chart's hour, and
// never more than MAX_RUNS; when a run of the last hour had to go, `chartComplete` turns false
// so the chart can say that it counts only part of the hour.

export const TABLE_ROWS = 100;
export const MAX_RUNS = 2000;
export const HOUR_MS = 60 * 60 * 1000;

export class RunStore {
  constructor() {
    this.clear();
  }

  clear() {
    this.runs = new Map();
    this.chartComplete = true;
    this.version = 0;
  }

  // Keep `run` unless a copy as new or newer is here. Returns whether anything changed.
  put(run) {
    const known = this.runs.get(run.id);
    if (known && known.seq >= run.seq) return false;
    this.runs.set(run.id, known ? { ...known, ...run } : run);
    this.version += 1;
    return true;
  }

  get(id) {
    return this.runs.get(id);
  }

  newest(count = TABLE_ROWS) {
    return this.sorted().slice(0, count);
  }

  sorted() {
    return [...this.runs.values()].sort((a, b) => Number(b.id) - Number(a.id));
  }

  prune(now = Date.now()) {
    if (this.runs.size <= TABLE_ROWS) return;
    const hourAgo = now - HOUR_MS;
    const runs = this.sorted();
    runs.forEach((run, index) => {
      if (index < TABLE_ROWS) return;
      const recent = Date.parse(run.createdAt) >= hourAgo;
      if (recent && index < MAX_RUNS) return;
      if (recent) this.chartComplete = false;
      this.runs.delete(run.id);
    });
  }

  // Runs per minute by status over the hour before `now`: 60 buckets, oldest first.
  perMinute(now = Date.now()) {
    const end = Math.floor(now / 60000) * 60000 + 60000;
    const start = end - HOUR_MS;
    const buckets = Array.from({ length: 60 }, (_, i) => ({ start: start + i * 60000, counts: {} }));
    for (const run of this.runs.values()) {
      const created = Date.parse(run.createdAt);
      if (!(created >= start && created < end)) continue;
      const bucket = buckets[Math.floor((created - start) / 60000)];
      bucket.counts[run.status] = (bucket.counts[run.status] || 0) + 1;
    }
    return buckets;
  }
}
