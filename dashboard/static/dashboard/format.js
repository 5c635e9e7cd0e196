// How values read on the page: times in the browser's zone, durations, records, triggers.

export const STATUSES = [
  "PENDING",
  "RUNNING",
  "WAITING",
  "SUCCEEDED",
  "PARTIAL",
  "FAILED",
  "SKIPPED",
];
export const FINAL = new Set(["SUCCEEDED", "PARTIAL", "FAILED", "SKIPPED"]);

const pad = (n) => String(n).padStart(2, "0");

export function time(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return "";
  const clock = `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
  const today = new Date();
  if (date.toDateString() === today.toDateString()) return clock;
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ${clock}`;
}

export function duration(ms) {
  if (ms === null || ms === undefined) return "";
  if (ms < 1000) return `${ms < 10 ? ms.toFixed(1) : Math.round(ms)} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
  const minutes = Math.floor(ms / 60000);
  return `${minutes} min ${Math.round((ms % 60000) / 1000)} s`;
}

export function record(run) {
  if (!run.objectType) return "";
  return run.objectId ? `${run.objectType} #${run.objectId}` : run.objectType;
}

export function trigger(run) {
  return run.event ? `${run.trigger} · ${run.event}` : run.trigger;
}

// JSON for reading: stored values (webhook answers, records) as indented text.
export function json(value) {
  if (value === undefined) return "";
  try {
    return JSON.stringify(value, null, 2);
  } catch {
    return String(value);
  }
}
