// Runs per minute by status over the last hour: stacked bars in an inline SVG built with DOM
// calls (colours come from the stylesheet's .status-* classes), and a legend with the hour's
// counts.

import { el, setText, svg } from "./dom.js";
import { STATUSES, time } from "./format.js";

const WIDTH = 600;
const HEIGHT = 72;
const AXIS = 14;
const BAR_GAP = 2;

export function renderChart(svgNode, legendNode, noteNode, buckets, complete) {
  const max = Math.max(1, ...buckets.map((b) => total(b.counts)));
  const barWidth = WIDTH / buckets.length;
  const plot = HEIGHT - AXIS;
  const bars = [];
  buckets.forEach((bucket, index) => {
    let top = plot;
    const x = index * barWidth + BAR_GAP / 2;
    const group = svg("g", { class: "bar" });
    const summary = STATUSES.filter((s) => bucket.counts[s])
      .map((s) => `${bucket.counts[s]} ${s}`)
      .join(", ");
    const label = `${time(new Date(bucket.start).toISOString())}: ${total(bucket.counts)} runs`;
    group.append(svg("title", {}, summary ? `${label} (${summary})` : label));
    // An invisible full-height target, so that the tooltip shows on empty minutes too.
    group.append(svg("rect", { x, y: 0, width: barWidth - BAR_GAP, height: plot, class: "hit" }));
    for (const status of STATUSES) {
      const count = bucket.counts[status] || 0;
      if (!count) continue;
      const height = Math.max(1, (count / max) * (plot - 4));
      top -= height;
      group.append(
        svg("rect", {
          x,
          y: top,
          width: barWidth - BAR_GAP,
          height,
          class: `segment status-${status}`,
        }),
      );
    }
    bars.push(group);
  });
  const axis = [
    svg("line", { x1: 0, y1: plot + 0.5, x2: WIDTH, y2: plot + 0.5, class: "axis" }),
    svg("text", { x: 0, y: HEIGHT - 2, class: "tick" }, "−60 min"),
    svg("text", { x: WIDTH / 2, y: HEIGHT - 2, class: "tick middle" }, "−30 min"),
    svg("text", { x: WIDTH, y: HEIGHT - 2, class: "tick end" }, "now"),
    svg("text", { x: 2, y: 10, class: "tick" }, `${max} a minute`),
  ];
  svgNode.setAttribute("viewBox", `0 0 ${WIDTH} ${HEIGHT}`);
  svgNode.replaceChildren(...bars, ...axis);

  const totals = {};
  for (const bucket of buckets) {
    for (const [status, count] of Object.entries(bucket.counts)) {
      totals[status] = (totals[status] || 0) + count;
    }
  }
  legendNode.replaceChildren(
    ...STATUSES.map((status) =>
      el(
        "span",
        { className: "legend-item" },
        el("span", { className: `swatch status-${status}` }),
        `${status.toLowerCase()} ${totals[status] || 0}`,
      ),
    ),
  );
  setText(noteNode, complete ? "" : "Counts only the runs this page has kept in memory.");
}

function total(counts) {
  return Object.values(counts).reduce((sum, n) => sum + n, 0);
}
