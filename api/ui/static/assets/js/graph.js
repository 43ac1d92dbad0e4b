// The task graph of a flow run as SVG: tasks layered by dependency depth,
// left to right, each node coloured by its state with the state written in
// it, and an arrow for each dependency.

import { s, stateLabel } from './dom.js';

const W = 196;
const H = 56;
const GAP_X = 72;
const GAP_Y = 22;
const PAD = 18;
const MIN_SCALE = 0.6;
let uid = 0;

// graphFromTaskRuns builds nodes and edges from task runs (each with
// depends_on task names), as the history endpoint gives them.
export function graphFromTaskRuns(taskRuns) {
  const byName = new Map(taskRuns.map((t) => [t.task_name, t.id]));
  const edges = [];
  for (const t of taskRuns) {
    for (const dep of t.depends_on || []) {
      if (byName.has(dep)) edges.push({ from: byName.get(dep), to: t.id, from_task: dep, to_task: t.task_name });
    }
  }
  return { nodes: taskRuns, edges };
}

// layers groups node ids by depth: a node sits one layer right of its
// deepest dependency; within a layer, nodes follow their dependencies'
// order to keep edges from crossing.
export function layers(nodes, edges) {
  const preds = new Map(nodes.map((n) => [n.id, []]));
  const succs = new Map(nodes.map((n) => [n.id, []]));
  for (const e of edges) {
    if (preds.has(e.to) && succs.has(e.from)) {
      preds.get(e.to).push(e.from);
      succs.get(e.from).push(e.to);
    }
  }
  const depth = new Map();
  const indeg = new Map(nodes.map((n) => [n.id, preds.get(n.id).length]));
  const queue = nodes.filter((n) => indeg.get(n.id) === 0).map((n) => n.id);
  for (const id of queue) depth.set(id, 0);
  while (queue.length) {
    const id = queue.shift();
    for (const next of succs.get(id)) {
      depth.set(next, Math.max(depth.get(next) || 0, depth.get(id) + 1));
      indeg.set(next, indeg.get(next) - 1);
      if (indeg.get(next) === 0) queue.push(next);
    }
  }
  for (const n of nodes) if (!depth.has(n.id)) depth.set(n.id, 0); // a cycle: cannot happen, shown anyway
  const out = [];
  const order = new Map(nodes.map((n, i) => [n.id, i]));
  for (const n of nodes) {
    const d = depth.get(n.id);
    (out[d] ||= []).push(n.id);
  }
  const pos = new Map();
  out.forEach((layer, li) => {
    if (li > 0) {
      const bary = (id) => {
        const p = preds.get(id);
        return p.length ? p.reduce((a, x) => a + (pos.get(x) ?? 0), 0) / p.length : order.get(id);
      };
      layer.sort((a, b) => bary(a) - bary(b) || order.get(a) - order.get(b));
    }
    layer.forEach((id, i) => pos.set(id, i));
  });
  return out.filter(Boolean);
}

function truncate(t, n) {
  return t.length > n ? t.slice(0, n - 1) + '…' : t;
}

// renderGraph returns the SVG of a graph. opts.selected is a task name;
// opts.onSelect(taskName) is called when a node is clicked.
export function renderGraph(graph, opts = {}) {
  const nodes = graph.nodes || [];
  const edges = graph.edges || [];
  const ls = layers(nodes, edges);
  const tallest = Math.max(1, ...ls.map((l) => l.length));
  const width = PAD * 2 + Math.max(1, ls.length) * W + Math.max(0, ls.length - 1) * GAP_X;
  const height = PAD * 2 + tallest * H + (tallest - 1) * GAP_Y;
  const at = new Map();
  ls.forEach((layer, li) => {
    const offset = ((tallest - layer.length) * (H + GAP_Y)) / 2;
    layer.forEach((id, i) => at.set(id, { x: PAD + li * (W + GAP_X), y: PAD + offset + i * (H + GAP_Y) }));
  });
  const byID = new Map(nodes.map((n) => [n.id, n]));
  const marker = `arrow-${++uid}`;
  // The SVG scales down to the width of its box, so that a chain of a few
  // tasks fits a window without scrolling; past MIN_SCALE it scrolls, as
  // smaller text would no longer be legible.
  const svg = s('svg', {
    class: 'graph', width, height, viewBox: `0 0 ${width} ${height}`, role: 'group',
    'aria-label': `Task graph: ${nodes.length} tasks, ${edges.length} dependencies`,
    dataset: { nodes: nodes.length, edges: edges.length },
  }, s('defs', {}, s('marker', {
    id: marker, viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse',
  }, s('path', { d: 'M0,0 L10,5 L0,10 z', class: 'arrowhead' }))));

  // through the CSSOM: the page's Content-Security-Policy refuses style attributes
  svg.style.maxWidth = `${width}px`;
  svg.style.minWidth = `${Math.ceil(width * MIN_SCALE)}px`;

  const edgeGroup = s('g', { class: 'edges' });
  for (const e of edges) {
    const a = at.get(e.from);
    const b = at.get(e.to);
    if (!a || !b) continue;
    const x1 = a.x + W;
    const y1 = a.y + H / 2;
    const x2 = b.x - 1;
    const y2 = b.y + H / 2;
    const dx = Math.max(24, (x2 - x1) / 2);
    const from = byID.get(e.from);
    const to = byID.get(e.to);
    edgeGroup.append(s('path', {
      class: ['edge', from && from.state && from.state.type === 'COMPLETED' && 'done'],
      d: `M${x1},${y1} C${x1 + dx},${y1} ${x2 - dx},${y2} ${x2},${y2}`,
      'marker-end': `url(#${marker})`,
      dataset: { from: from ? from.task_name : '', to: to ? to.task_name : '' },
    }, s('title', {}, `${from ? from.task_name : '?'} → ${to ? to.task_name : '?'}`)));
  }
  svg.append(edgeGroup);

  const nodeGroup = s('g', { class: 'nodes' });
  for (const n of nodes) {
    const p = at.get(n.id);
    const type = (n.state && n.state.type) || 'PENDING';
    let label = stateLabel(n.state);
    if (n.run_count > 1) label += ` · attempt ${n.run_count}`;
    const kind = n.kind === 'deployment' ? ' (sub-flow)' : '';
    const g = s('g', {
      class: ['node', opts.selected === n.task_name && 'selected'],
      transform: `translate(${p.x},${p.y})`,
      tabindex: 0, role: 'button',
      'aria-label': `Task ${n.task_name}${kind}: ${label}. Show its logs.`,
      dataset: { task: n.task_name, state: type, id: n.id },
    },
    s('title', {}, `${n.task_name}${kind}\n${label}${n.state && n.state.message ? '\n' + n.state.message : ''}`),
    s('rect', { class: ['box', `soft-${type}`], width: W, height: H, rx: 8 }),
    s('rect', { class: `fill-${type}`, width: 6, height: H - 2, x: 1, y: 1, rx: 3 }),
    s('text', { x: 16, y: 23 }, truncate(n.task_name + kind, 24)),
    s('text', { x: 16, y: 43, class: ['state', `ink-${type}`] }, truncate(label, 28)));
    if (opts.onSelect) {
      g.addEventListener('click', () => opts.onSelect(n.task_name));
      g.addEventListener('keydown', (ev) => {
        if (ev.key === 'Enter' || ev.key === ' ') {
          ev.preventDefault();
          opts.onSelect(n.task_name);
        }
      });
    }
    nodeGroup.append(g);
  }
  svg.append(nodeGroup);
  return svg;
}
