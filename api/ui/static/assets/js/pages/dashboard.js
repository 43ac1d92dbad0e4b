// The dashboard: runs by state over time (a stacked bar chart from
// GET /runs?since=), late runs, failing deployments and workers online.

import { api, query, APIError } from '../api.js';
import { h, s, clear, badge, timeEl, relTime, errorPanel, STATE_TYPES, fmtTime } from '../dom.js';
import { onLive, debounce } from '../live.js';
import { workersOf, onlineBadge } from './queues.js';

const RANGES = {
  '1h': { label: 'Last hour', span: 3600e3, bucket: 5 * 60e3 },
  '24h': { label: 'Last 24 hours', span: 86400e3, bucket: 3600e3 },
  '7d': { label: 'Last 7 days', span: 7 * 86400e3, bucket: 6 * 3600e3 },
};
const MAX_PAGES = 25; // at most 5,000 runs are read for the chart

async function runsBetween(since, until) {
  const runs = [];
  let cursor = '';
  let truncated = false;
  for (let i = 0; i < MAX_PAGES; i++) {
    const page = await api('/runs' + query({ since, until, limit: 200, cursor }));
    runs.push(...page.items);
    if (!page.next_cursor) return { runs, truncated };
    cursor = page.next_cursor;
    truncated = i === MAX_PAGES - 1;
  }
  return { runs, truncated };
}

// chart draws runs per bucket, stacked by state type.
export function chart(runs, from, to, bucketMs) {
  const n = Math.max(1, Math.ceil((to - from) / bucketMs));
  const buckets = Array.from({ length: n }, () => Object.fromEntries(STATE_TYPES.map((t) => [t, 0])));
  for (const r of runs) {
    const i = Math.floor((new Date(r.scheduled_at) - from) / bucketMs);
    if (i >= 0 && i < n && r.state.type in buckets[i]) buckets[i][r.state.type]++;
  }
  const totals = buckets.map((b) => Object.values(b).reduce((a, x) => a + x, 0));
  const max = Math.max(1, ...totals);
  const step = max <= 5 ? 1 : Math.ceil(max / 4 / Math.pow(10, Math.floor(Math.log10(max / 4)))) * Math.pow(10, Math.floor(Math.log10(max / 4)));
  const top = Math.max(step, Math.ceil(max / step) * step);
  const W = 960; const H = 240; const L = 40; const B = 26; const T = 8; const R = 8;
  const plotW = W - L - R; const plotH = H - B - T;
  const bw = plotW / n;
  const svg = s('svg', { class: 'chart', viewBox: `0 0 ${W} ${H}`, role: 'img', id: 'runs-chart', 'aria-label': `Runs by state: ${runs.length} runs in ${n} intervals` });
  const grid = s('g', { class: 'grid' });
  for (let v = 0; v <= top; v += step) {
    const y = T + plotH - (v / top) * plotH;
    grid.append(s('line', { x1: L, x2: W - R, y1: y, y2: y }), s('text', { x: L - 6, y: y + 4, 'text-anchor': 'end' }, String(v)));
  }
  svg.append(grid);
  const fmtLabel = (d) => (bucketMs >= 86400e3 / 4 ? d.toLocaleDateString(undefined, { month: 'short', day: 'numeric' }) + ' ' + d.toLocaleTimeString(undefined, { hour: '2-digit' }) : d.toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit' }));
  const every = Math.ceil(n / 8);
  buckets.forEach((b, i) => {
    const start = new Date(from.getTime() + i * bucketMs);
    let y = T + plotH;
    const g = s('g', { class: 'bar', dataset: { total: totals[i] } });
    for (const t of STATE_TYPES) {
      if (!b[t]) continue;
      const hgt = (b[t] / top) * plotH;
      y -= hgt;
      g.append(s('rect', { class: `fill-${t}`, x: L + i * bw + bw * 0.12, y, width: bw * 0.76, height: hgt, dataset: { state: t, count: b[t] } },
        s('title', {}, `${fmtLabel(start)}: ${b[t]} ${t}`)));
    }
    svg.append(g);
    if (i % every === 0) svg.append(s('text', { x: L + i * bw + bw / 2, y: H - 8, 'text-anchor': 'middle' }, fmtLabel(start)));
  });
  const sums = Object.fromEntries(STATE_TYPES.map((t) => [t, buckets.reduce((a, b) => a + b[t], 0)]));
  const legend = h('div', { class: 'legend', 'aria-label': 'Runs by state in this range' },
    STATE_TYPES.filter((t) => sums[t]).map((t) => h('span', { dataset: { state: t } }, h('i', { class: `fill-${t}`, 'aria-hidden': 'true' }), `${t} ${sums[t]}`)));
  const table = h('details', {}, h('summary', {}, 'Show as a table'), h('div', { class: 'table-wrap' }, h('table', {},
    h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'From'), STATE_TYPES.map((t) => h('th', { scope: 'col', class: 'num' }, t)))),
    h('tbody', {}, buckets.map((b, i) => h('tr', {}, h('td', {}, fmtTime(new Date(from.getTime() + i * bucketMs).toISOString())),
      STATE_TYPES.map((t) => h('td', { class: 'num' }, String(b[t])))))))));
  return [svg, legend, table];
}

export async function render(main) {
  const params = new URLSearchParams(location.search);
  const rangeKey = RANGES[params.get('range')] ? params.get('range') : '24h';
  const range = RANGES[rangeKey];
  const select = h('select', { id: 'range', 'aria-label': 'Time range' },
    Object.entries(RANGES).map(([k, r]) => h('option', { value: k, selected: k === rangeKey }, r.label)));
  select.addEventListener('change', () => { location.search = '?range=' + select.value; });
  const cards = h('div', { class: 'grid cards', id: 'stats' });
  const chartBox = h('div', { id: 'chart' });
  const lateBox = h('div', { id: 'late-runs' });
  const failingBox = h('div', { id: 'failing-deployments' });
  const workersBox = h('div', { id: 'workers-online' });
  const note = h('p', { class: 'muted small' });

  clear(main,
    h('div', { class: 'page-head' }, h('div', { class: 'titles' }, h('h1', {}, 'Dashboard'),
      h('p', { class: 'muted' }, 'What your flows are doing.')), h('div', { class: 'actions' }, h('label', { for: 'range', class: 'sr-only' }, 'Time range'), select)),
    cards,
    h('section', { class: 'panel', 'aria-labelledby': 'h-chart' },
      h('div', { class: 'panel-head' }, h('h2', { id: 'h-chart' }, `Runs by state · ${range.label.toLowerCase()}`), h('span', { class: 'spacer' }),
        h('a', { href: '/runs' + query({ since: new Date(Date.now() - range.span).toISOString(), until: new Date().toISOString() }) }, 'See these runs →')),
      chartBox, note),
    h('div', { class: 'grid two' },
      h('section', { class: 'panel', 'aria-labelledby': 'h-late' }, h('h2', { id: 'h-late' }, 'Late runs'), lateBox),
      h('section', { class: 'panel', 'aria-labelledby': 'h-failing' }, h('h2', { id: 'h-failing' }, 'Failing deployments'), failingBox)),
    h('section', { class: 'panel', 'aria-labelledby': 'h-workers' }, h('h2', { id: 'h-workers' }, 'Workers online'), workersBox));

  const stat = (label, value, href, id) => h('a', { class: 'stat', href, id }, h('div', { class: 'value' }, String(value)), h('div', { class: 'label' }, label));

  async function load() {
    const to = new Date();
    const from = new Date(to - range.span);
    from.setTime(Math.floor(from / range.bucket) * range.bucket);
    let data;
    try {
      const [ranged, active, late] = await Promise.all([
        runsBetween(from.toISOString(), to.toISOString()),
        api('/runs' + query({ state: 'PENDING,RUNNING,CANCELLING', limit: 200 })),
        api('/runs' + query({ state: 'SCHEDULED', until: to.toISOString(), limit: 50 })),
      ]);
      // due and not started: Late once the scheduler says so, or half a minute overdue
      const lateOnes = late.items.filter((r) => r.state.name === 'Late' || to - new Date(r.scheduled_at) > 30e3);
      data = { ...ranged, active: active.items, activeMore: !!active.next_cursor, late: lateOnes };
    } catch (e) {
      clear(chartBox, errorPanel(e));
      return;
    }
    const { runs } = data;
    const failed = runs.filter((r) => r.state.type === 'FAILED' || r.state.type === 'CRASHED');
    const completed = runs.filter((r) => r.state.type === 'COMPLETED');
    const since = from.toISOString();
    const until = to.toISOString();
    clear(cards,
      stat(`Runs due · ${range.label.toLowerCase()}`, runs.length + (data.truncated ? '+' : ''), '/runs' + query({ since, until }), 'stat-total'),
      stat('Running or pending now', data.active.length + (data.activeMore ? '+' : ''), '/runs?state=PENDING,RUNNING', 'stat-active'),
      stat('Completed', completed.length, '/runs' + query({ state: 'COMPLETED', since, until }), 'stat-completed'),
      stat('Failed or crashed', failed.length, '/runs' + query({ state: 'FAILED,CRASHED', since, until }), 'stat-failed'),
      stat('Late', data.late.length, '/runs' + query({ state: 'SCHEDULED', until: new Date().toISOString() }), 'stat-late'));
    clear(chartBox, runs.length ? chart(runs, from, to, range.bucket) : h('p', { class: 'empty' }, 'No runs in this range.'));
    note.textContent = data.truncated ? `Based on the latest ${runs.length} runs of the range.` : '';

    clear(lateBox, data.late.length ? h('div', { class: 'table-wrap' }, h('table', {},
      h('thead', {}, h('tr', {}, ['Run', 'Deployment', 'State', 'Due'].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, data.late.map((r) => h('tr', { dataset: { runId: r.id } },
        h('td', {}, h('a', { href: `/runs/${r.id}` }, r.name)),
        h('td', {}, h('a', { href: `/deployments/${r.deployment_id}` }, r.deployment_name)),
        h('td', {}, badge(r.state)),
        h('td', { class: 'nowrap' }, timeEl(r.scheduled_at), h('div', { class: 'small muted' }, relTime(r.scheduled_at))))))))
      : h('p', { class: 'muted' }, 'No run is late.'));

    const byDeployment = new Map();
    for (const r of runs) {
      let d = byDeployment.get(r.deployment_id);
      if (!d) {
        d = { id: r.deployment_id, name: r.deployment_name, total: 0, failed: 0, last: r, lastFailure: null };
        byDeployment.set(r.deployment_id, d);
      }
      d.total++;
      if (r.state.type === 'FAILED' || r.state.type === 'CRASHED') {
        d.failed++;
        if (!d.lastFailure) d.lastFailure = r;
      }
    }
    const failing = [...byDeployment.values()].filter((d) => d.failed).sort((a, b) => b.failed / b.total - a.failed / a.total || b.failed - a.failed);
    clear(failingBox, failing.length ? h('div', { class: 'table-wrap' }, h('table', {},
      h('thead', {}, h('tr', {}, ['Deployment', 'Failed', 'Latest run', 'Last failure'].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, failing.map((d) => h('tr', { dataset: { deploymentId: d.id } },
        h('td', {}, h('a', { href: `/deployments/${d.id}` }, d.name)),
        h('td', { class: 'num' }, `${d.failed} of ${d.total} (${Math.round((100 * d.failed) / d.total)}%)`),
        h('td', {}, h('a', { href: `/runs/${d.last.id}` }, badge(d.last.state))),
        h('td', {}, h('a', { href: `/runs/${d.lastFailure.id}` }, relTime(d.lastFailure.ended_at || d.lastFailure.scheduled_at))))))))
      : h('p', { class: 'muted' }, `No deployment failed in the ${range.label.toLowerCase()}.`));
  }

  async function loadWorkers() {
    try {
      const body = await api('/work-queues');
      const workers = workersOf(body).filter((w) => w.online);
      clear(workersBox, workers.length
        ? h('ul', { class: 'plain' }, workers.map((w) => h('li', { dataset: { worker: w.name } }, onlineBadge(true), ' ', h('strong', {}, w.name), ` · queues ${w.queues.join(', ')} · heartbeat ${relTime(w.beat)}`)))
        : h('p', { class: 'muted' }, 'No worker is online. Start one with ', h('code', {}, 'ordo worker -q QUEUE'), '.'));
      return true;
    } catch (e) {
      clear(workersBox, e instanceof APIError && (e.status === 404 || e.status === 405 || e.status === 501)
        ? h('p', { class: 'notice info', id: 'workers-unavailable' }, `Workers are not available on this server yet (GET /api/v1/work-queues answered ${e.status}).`)
        : errorPanel(e));
      return false;
    }
  }

  const reload = debounce(load, 1000, 5000);
  onLive((m) => { if (m.type === 'reset' || m.stream_type === 'flow_run') reload(); });
  await Promise.all([load(), loadWorkers().then((ok) => { if (ok) setInterval(loadWorkers, 15000); })]);
}
