// Flow runs: a filtered, keyset-paged table whose rows change state live.
// The filters and the page cursor live in the URL, so a view can be
// reloaded and shared. Two tabs: the runs that started or are due, newest
// first, and the upcoming ones (?upcoming=true: SCHEDULED for later,
// soonest first), which a schedule creates ahead and which would otherwise
// bury the runs that happened. A metric the runs report can be shown as a
// column (?metric=NAME; every run of the list carries its metrics).

import { api, query } from '../api.js';
import { h, clear, badge, tags, timeEl, fmtDuration, runDuration, errorPanel, STATE_TYPES, toLocalInput, fromLocalInput } from '../dom.js';
import { onLive, debounce } from '../live.js';
import { fmtMetric } from '../outputs.js';

const FILTERS = ['name', 'state', 'deployment', 'tag', 'work_queue', 'since', 'until'];
const PAGE_SIZE = 50;

// runRow is one row of a runs table (also used by other pages).
export function runRow(r, { showDeployment = true, metric = '' } = {}) {
  return h('tr', { dataset: { runId: r.id, state: r.state.type } },
    h('td', {}, h('a', { href: `/runs/${r.id}`, class: 'run-name' }, r.name || r.id),
      r.parent_flow_run_id ? h('span', { class: 'muted small' }, ' (sub-flow)') : null),
    showDeployment ? h('td', {}, h('a', { href: `/deployments/${r.deployment_id}` }, r.deployment_name)) : null,
    h('td', {}, r.work_queue),
    h('td', {}, tags(r.tags)),
    h('td', { class: 'state-cell' }, badge(r.state)),
    h('td', { class: 'nowrap' }, timeEl(r.scheduled_at)),
    h('td', { class: 'num nowrap' }, fmtDuration(runDuration(r))),
    metric ? h('td', { class: 'num mono metric-cell' }, fmtMetric((r.metrics || {})[metric])) : null);
}

export function runsTable(runs, { showDeployment = true, caption, metric = '' } = {}) {
  return h('div', { class: 'table-wrap' }, h('table', { class: 'runs' },
    caption ? h('caption', { class: 'sr-only' }, caption) : null,
    h('thead', {}, h('tr', {},
      h('th', { scope: 'col' }, 'Name'),
      showDeployment ? h('th', { scope: 'col' }, 'Deployment') : null,
      h('th', { scope: 'col' }, 'Work queue'),
      h('th', { scope: 'col' }, 'Tags'),
      h('th', { scope: 'col' }, 'State'),
      h('th', { scope: 'col' }, 'Scheduled'),
      h('th', { scope: 'col', class: 'num' }, 'Duration'),
      metric ? h('th', { scope: 'col', class: 'num', id: 'metric-column' }, metric) : null)),
    h('tbody', {}, runs.map((r) => runRow(r, { showDeployment, metric })))));
}

// liveRows keeps the rows of a runs table up to date: rows of runs that
// change are read again; onNew is called when a run is created. metric
// returns the metric shown as a column, if any.
export function liveRows(container, { onNew, showDeployment = true, metric = () => '' } = {}) {
  const pending = new Set();
  const refresh = debounce(async () => {
    const ids = [...pending];
    pending.clear();
    await Promise.all(ids.map(async (id) => {
      const row = container.querySelector(`tr[data-run-id="${id}"]`);
      if (!row) return;
      try {
        const r = await api(`/runs/${id}`);
        const fresh = runRow(r, { showDeployment, metric: metric() });
        if (row.dataset.state !== r.state.type) fresh.classList.add('flash');
        row.replaceWith(fresh);
      } catch { /* deleted or unreachable: keep the row */ }
    }));
  }, 100, 400);
  return onLive((m) => {
    if (m.type === 'ready' || m.type === 'reset') {
      onNew?.();
      return;
    }
    if (m.stream_type !== 'flow_run') return;
    if (m.type === 'FlowRunCreated') {
      onNew?.();
      return;
    }
    if (container.querySelector(`tr[data-run-id="${m.stream_id}"]`)) {
      pending.add(m.stream_id);
      refresh();
    }
  });
}

function filtersFromURL() {
  const q = new URLSearchParams(location.search);
  const f = {};
  for (const k of [...FILTERS, 'cursor', 'metric']) f[k] = q.get(k) || '';
  f.upcoming = q.get('upcoming') === 'true' ? 'true' : '';
  return f;
}

const RANGES = [
  ['', 'Any time'], ['1h', 'Last hour'], ['24h', 'Last 24 hours'], ['7d', 'Last 7 days'], ['30d', 'Last 30 days'],
];
const RANGE_MS = { '1h': 3600e3, '24h': 86400e3, '7d': 7 * 86400e3, '30d': 30 * 86400e3 };

export async function render(main) {
  let f = filtersFromURL();
  const status = h('p', { class: 'muted small', role: 'status', id: 'runs-status' });
  const tableBox = h('div', { id: 'runs-table' });
  const pager = h('div', { class: 'pager' });

  const field = (name, label, input) => h('div', { class: 'field' }, h('label', { for: `f-${name}` }, label), input);
  const text = (name, placeholder, attrs = {}) => h('input', { id: `f-${name}`, name, type: 'search', placeholder, value: f[name], ...attrs });
  const stateSelect = h('select', { id: 'f-state', name: 'state' },
    h('option', { value: '' }, 'Any state'),
    STATE_TYPES.map((t) => h('option', { value: t }, t)),
    h('option', { value: 'FAILED,CRASHED' }, 'FAILED or CRASHED'),
    h('option', { value: 'PENDING,RUNNING' }, 'PENDING or RUNNING'));
  if (f.state && ![...stateSelect.options].some((o) => o.value === f.state.toUpperCase())) {
    stateSelect.append(h('option', { value: f.state.toUpperCase() }, f.state.toUpperCase()));
  }
  stateSelect.value = f.state.toUpperCase();
  const since = h('input', { id: 'f-since', name: 'since', type: 'datetime-local', value: toLocalInput(f.since) });
  const until = h('input', { id: 'f-until', name: 'until', type: 'datetime-local', value: toLocalInput(f.until) });
  const range = h('select', { id: 'f-range', 'aria-label': 'Quick time range' }, RANGES.map(([v, l]) => h('option', { value: v }, l)));
  range.addEventListener('change', () => {
    const ms = RANGE_MS[range.value];
    since.value = ms ? toLocalInput(new Date(Date.now() - ms).toISOString()) : '';
    until.value = '';
  });
  const deployments = h('datalist', { id: 'deployment-names' });
  const form = h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter flow runs' },
    field('name', 'Name', text('name', 'part of the name')),
    field('state', 'State', stateSelect),
    field('deployment', 'Deployment', text('deployment', 'name or id', { list: 'deployment-names' })),
    field('tag', 'Tags', text('tag', 'tag, tag')),
    field('work_queue', 'Work queue', text('work_queue', 'queue')),
    field('range', 'Time range', range),
    field('since', 'Scheduled from', since),
    field('until', 'Scheduled before', until),
    h('div', { class: 'buttons' },
      h('button', { type: 'submit', class: 'primary' }, 'Apply filters'),
      h('button', { type: 'button', id: 'clear-filters', onclick: () => navigate({ upcoming: f.upcoming, metric: f.metric }) }, 'Clear')),
    deployments);

  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const data = new FormData(form);
    const next = {};
    for (const k of FILTERS) next[k] = String(data.get(k) || '').trim();
    next.upcoming = f.upcoming;
    next.metric = f.metric;
    next.since = fromLocalInput(next.since);
    next.until = fromLocalInput(next.until);
    navigate(next);
  });

  function navigate(next) {
    history.pushState(null, '', '/runs' + query(next));
    f = filtersFromURL();
    syncForm();
    syncTabs();
    load();
  }

  // the metric column: the names the runs shown report, and the one chosen
  const metricSelect = h('select', { id: 'f-metric', 'aria-label': 'Show a metric as a column' });
  metricSelect.addEventListener('change', () => navigate({ ...f, metric: metricSelect.value }));
  const metricNames = new Set();
  function syncMetrics(items) {
    for (const r of items) for (const k of Object.keys(r.metrics || {})) metricNames.add(k);
    if (f.metric) metricNames.add(f.metric);
    clear(metricSelect, h('option', { value: '' }, 'No metric column'), [...metricNames].sort().map((k) => h('option', { value: k }, k)));
    metricSelect.value = f.metric;
  }

  function syncForm() {
    for (const k of ['name', 'deployment', 'tag', 'work_queue']) form.elements[k].value = f[k];
    stateSelect.value = f.state.toUpperCase();
    since.value = toLocalInput(f.since);
    until.value = toLocalInput(f.until);
  }

  window.addEventListener('popstate', () => {
    f = filtersFromURL();
    syncForm();
    syncTabs();
    load();
  });

  const intro = h('p', { class: 'muted', id: 'runs-intro' });
  const tab = (id, label, upcoming) => h('a', {
    id, href: '/runs' + (upcoming ? '?upcoming=true' : ''), role: 'tab',
    onclick: (ev) => { ev.preventDefault(); navigate({ ...f, cursor: '', upcoming }); },
  }, label);
  const runsTab = tab('tab-runs', 'Runs', '');
  const upcomingTab = tab('tab-upcoming', 'Upcoming', 'true');
  function syncTabs() {
    runsTab.setAttribute('aria-selected', String(!f.upcoming));
    upcomingTab.setAttribute('aria-selected', String(!!f.upcoming));
    intro.textContent = f.upcoming
      ? 'Runs scheduled for later, soonest first. A run leaves this list when it is due.'
      : 'Every run that started or is due, newest first. Rows change state live. Runs scheduled for later are under Upcoming.';
  }
  syncTabs();

  clear(main,
    h('div', { class: 'page-head' }, h('div', { class: 'titles' }, h('h1', {}, 'Flow runs'), intro)),
    h('div', { class: 'tabs', role: 'tablist', 'aria-label': 'Which runs' }, runsTab, upcomingTab),
    h('section', { class: 'panel', 'aria-label': 'Filters' }, form),
    h('section', { class: 'panel', 'aria-label': 'Runs' },
      h('div', { class: 'panel-head' }, status, h('span', { class: 'spacer' }), h('label', { for: 'f-metric', class: 'sr-only' }, 'Metric column'), metricSelect),
      tableBox, pager));

  api('/deployments?limit=200').then((page) => {
    for (const d of page.items) deployments.append(h('option', { value: d.name }));
  }).catch(() => {});

  let loading = 0;
  async function load() {
    const seq = ++loading;
    const params = { limit: PAGE_SIZE, cursor: f.cursor, upcoming: f.upcoming };
    for (const k of FILTERS) params[k] = f[k];
    let page;
    try {
      page = await api('/runs' + query(params));
    } catch (e) {
      if (seq !== loading) return;
      clear(tableBox, errorPanel(e));
      clear(pager);
      status.textContent = '';
      return;
    }
    if (seq !== loading) return;
    const active = FILTERS.filter((k) => f[k]);
    status.textContent = `${page.items.length}${page.next_cursor ? '+' : ''} run${page.items.length === 1 ? '' : 's'}` +
      (active.length ? ` matching ${active.map((k) => `${k.replace('_', ' ')} “${k === 'since' || k === 'until' ? new Date(f[k]).toLocaleString() : f[k]}”`).join(', ')}` : '') +
      (f.upcoming ? ' scheduled for later' : '') + (f.cursor ? (f.upcoming ? ' (later page)' : ' (older page)') : '');
    const none = active.length ? 'No run matches these filters.'
      : f.upcoming ? 'No runs scheduled for later.' : 'No runs yet. Start one from a deployment.';
    syncMetrics(page.items);
    clear(tableBox, page.items.length ? runsTable(page.items, { metric: f.metric }) : h('p', { class: 'empty' }, none));
    clear(pager,
      f.cursor ? h('button', { type: 'button', onclick: () => navigate({ ...f, cursor: '' }) }, f.upcoming ? '« Soonest' : '« Newest') : null,
      f.cursor ? h('button', { type: 'button', onclick: () => history.back() }, '‹ Previous') : null,
      h('button', {
        type: 'button', id: 'next-page', disabled: !page.next_cursor,
        onclick: () => navigate({ ...f, cursor: page.next_cursor }), 'aria-label': f.upcoming ? 'Next page: later runs' : 'Next page: older runs',
      }, 'Next ›'));
  }

  // new runs appear on the first page; changed rows are read again
  const reloadFirst = debounce(() => { if (!f.cursor) load(); }, 300, 1500);
  liveRows(tableBox, { onNew: reloadFirst, metric: () => f.metric });
  await load();
}
