// Line charts of a deployment's metrics across its runs, as SVG: one chart
// per metric, runs in order along x, each point a link to its run.

import { h, s, fmtTime } from './dom.js';
import { fmtMetric } from './outputs.js';

const W = 640;
const H = 190;
const PAD = { left: 64, right: 18, top: 14, bottom: 30 };

// metricNames lists the metrics any point has, by name.
export function metricNames(points) {
  const names = new Set();
  for (const p of points) for (const k of Object.keys(p.metrics || {})) names.add(k);
  return [...names].sort();
}

// metricCharts draws a chart per metric of the series' points (oldest first).
export function metricCharts(points) {
  const names = metricNames(points);
  if (!names.length) return h('p', { class: 'empty', id: 'no-metric-series' }, 'No run of this deployment has metrics yet.');
  return h('div', { class: 'metric-charts' }, names.map((name) => metricChart(name, points)));
}

function metricChart(name, points) {
  const xs = W - PAD.left - PAD.right;
  const ys = H - PAD.top - PAD.bottom;
  const have = points.map((p, i) => ({ p, i, v: p.metrics[name] })).filter((d) => typeof d.v === 'number');
  let lo = Math.min(...have.map((d) => d.v));
  let hi = Math.max(...have.map((d) => d.v));
  if (lo === hi) {
    const d = Math.abs(lo) * 0.1 || 1;
    lo -= d;
    hi += d;
  } else {
    const d = (hi - lo) * 0.08;
    lo -= d;
    hi += d;
  }
  const n = points.length;
  const x = (i) => PAD.left + (n === 1 ? xs / 2 : (i * xs) / (n - 1));
  const y = (v) => PAD.top + ys - ((v - lo) / (hi - lo)) * ys;
  const ticks = [0, 0.5, 1].map((f) => lo + f * (hi - lo));
  const latest = have[have.length - 1];
  const svg = s('svg', {
    class: 'metric-chart', viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': `${name} across the last ${n} runs`, dataset: { metric: name },
  },
  ticks.map((v) => [
    s('line', { class: 'grid', x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v) }),
    s('text', { class: 'tick', x: PAD.left - 6, y: y(v) + 4, 'text-anchor': 'end' }, fmtMetric(v)),
  ]),
  s('text', { class: 'tick', x: PAD.left, y: H - 8, 'text-anchor': 'start' }, fmtTime(points[0].time)),
  n > 1 ? s('text', { class: 'tick', x: W - PAD.right, y: H - 8, 'text-anchor': 'end' }, fmtTime(points[n - 1].time)) : null,
  s('polyline', { class: 'line', points: have.map((d) => `${x(d.i).toFixed(1)},${y(d.v).toFixed(1)}`).join(' ') }),
  have.map((d) => s('a', { href: `/runs/${d.p.run_id}`, class: 'point', dataset: { runId: d.p.run_id } },
    s('circle', { cx: x(d.i).toFixed(1), cy: y(d.v).toFixed(1), r: 4.5, class: `state-${d.p.state.type}` },
      s('title', {}, `${d.p.run_name}: ${name} = ${fmtMetric(d.v)} (${fmtTime(d.p.time)})`)))));
  return h('figure', { class: 'metric', dataset: { metric: name } },
    h('figcaption', {}, h('strong', {}, name), ' ', h('span', { class: 'muted small' }, `latest ${fmtMetric(latest.v)} · ${have.length} run${have.length === 1 ? '' : 's'}`)),
    svg);
}
