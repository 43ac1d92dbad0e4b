// Work queues: depth, running, concurrency limit, the paused toggle, and
// the workers that serve them with their last heartbeat. Read from
// GET /api/v1/work-queues; when the server does not have it yet, the page
// says so.

import { api, APIError } from '../api.js';
import { h, clear, timeEl, relTime, errorPanel, notice } from '../dom.js';
import { onLive, debounce } from '../live.js';

// The API's exact field names are read defensively: a few spellings of
// each are accepted.
function pick(o, ...names) {
  for (const n of names) if (o && o[n] !== undefined && o[n] !== null) return o[n];
  return undefined;
}

export function queuesOf(body) {
  const items = Array.isArray(body) ? body : (body && (body.items || body.work_queues || body.queues)) || [];
  return items.map((q) => ({
    name: pick(q, 'name', 'work_queue'),
    depth: pick(q, 'depth', 'queued', 'pending', 'available'),
    running: pick(q, 'running', 'active'),
    scheduled: pick(q, 'scheduled'),
    limit: pick(q, 'concurrency_limit', 'limit'),
    paused: !!pick(q, 'paused'),
    workers: Array.isArray(q.workers) ? q.workers : [],
    workersOnline: pick(q, 'workers_online', 'online_workers'),
  }));
}

export function workersOf(body) {
  const seen = new Map();
  const top = body && !Array.isArray(body) && Array.isArray(body.workers) ? body.workers : [];
  const all = [...top, ...queuesOf(body).flatMap((q) => q.workers.map((w) => (typeof w === 'string' ? { name: w, queues: [q.name] } : { queues: [q.name], ...w })))];
  for (const w of all) {
    const key = pick(w, 'id', 'name');
    const prev = seen.get(key);
    const queues = [...new Set([...(prev ? prev.queues || [] : []), ...(w.queues || [])])];
    seen.set(key, { ...prev, ...w, queues });
  }
  return [...seen.values()].map((w) => {
    const beat = pick(w, 'last_heartbeat_at', 'last_heartbeat', 'heartbeat_at');
    const online = pick(w, 'online') ?? (beat ? Date.now() - new Date(beat) < 30000 && !w.stopped_at : false);
    return { name: pick(w, 'name', 'id'), queues: w.queues || [], host: pick(w, 'hostname', 'host') || '', beat, online: !!online, started: w.started_at, running: w.running };
  });
}

export function onlineBadge(online) {
  return online ? h('span', { class: 'badge ok' }, 'Online') : h('span', { class: 'badge state-CANCELLED' }, 'Offline');
}

export async function render(main) {
  const box = h('div', { id: 'queues' });
  const workersBox = h('div', { id: 'workers' });
  const msg = h('div', { class: 'notice', id: 'queues-message' });
  clear(main,
    h('div', { class: 'page-head' }, h('div', { class: 'titles' }, h('h1', {}, 'Work queues'),
      h('p', { class: 'muted' }, 'Workers take task runs only from the queues they are started with (', h('code', {}, 'ordo worker -q ml'), ').'))),
    msg,
    h('section', { class: 'panel', 'aria-labelledby': 'h-queues' }, h('h2', { id: 'h-queues' }, 'Queues'), box),
    h('section', { class: 'panel', 'aria-labelledby': 'h-workers' }, h('h2', { id: 'h-workers' }, 'Workers'), workersBox));

  let available = true;
  async function load() {
    let body;
    try {
      body = await api('/work-queues');
    } catch (e) {
      if (e instanceof APIError && (e.status === 404 || e.status === 405 || e.status === 501)) {
        available = false;
        const text = `Work queues are not available on this server yet (GET /api/v1/work-queues answered ${e.status}).`;
        clear(box, h('p', { class: 'notice info', id: 'queues-unavailable' }, text));
        clear(workersBox, h('p', { class: 'muted' }, 'Not available.'));
      } else {
        clear(box, errorPanel(e));
      }
      return;
    }
    const queues = queuesOf(body);
    const num = (v) => (v === undefined ? '—' : String(v));
    clear(box, queues.length ? h('div', { class: 'table-wrap' }, h('table', {},
      h('thead', {}, h('tr', {}, ['Queue', 'Status', 'Depth', 'Scheduled later', 'Running', 'Concurrency limit', 'Workers online', ''].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, queues.map((q) => {
        const toggle = h('button', {
          type: 'button', 'aria-pressed': String(q.paused), 'aria-label': `${q.paused ? 'Resume' : 'Pause'} work queue ${q.name}`,
        }, q.paused ? 'Resume' : 'Pause');
        toggle.addEventListener('click', async () => {
          toggle.disabled = true;
          try {
            await api(`/work-queues/${encodeURIComponent(q.name)}/${q.paused ? 'resume' : 'pause'}`, { method: 'POST' });
            notice(msg, `Work queue ${q.name} ${q.paused ? 'resumed' : 'paused'}.`, 'ok');
          } catch (e) {
            notice(msg, e instanceof APIError ? e.describe() : e.message, 'error');
          }
          load();
        });
        const online = q.workersOnline ?? workersOf({ items: [q] }).filter((w) => w.online).length;
        return h('tr', { dataset: { queue: q.name } },
          h('td', {}, h('a', { href: `/runs?work_queue=${encodeURIComponent(q.name)}` }, q.name)),
          h('td', {}, q.paused ? h('span', { class: 'badge state-PAUSED' }, 'Paused') : h('span', { class: 'badge ok' }, 'Active')),
          h('td', { class: 'num', title: 'Task runs due and waiting for a worker' }, num(q.depth)),
          h('td', { class: 'num', title: 'Task runs queued for later (retry delays, scheduled runs)' }, num(q.scheduled)),
          h('td', { class: 'num' }, num(q.running)),
          h('td', { class: 'num' }, q.limit ? String(q.limit) : 'none'),
          h('td', { class: 'num' }, num(online)),
          h('td', {}, toggle));
      })))) : h('p', { class: 'empty' }, 'No work queues yet: a queue appears when a deployment or a worker names it.'));

    const workers = workersOf(body);
    clear(workersBox, workers.length ? h('div', { class: 'table-wrap' }, h('table', {},
      h('thead', {}, h('tr', {}, ['Worker', 'Status', 'Queues', 'Host', 'Running', 'Started', 'Last heartbeat'].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, workers.map((w) => h('tr', { dataset: { worker: w.name } },
        h('td', {}, w.name),
        h('td', {}, onlineBadge(w.online)),
        h('td', {}, w.queues.join(', ')),
        h('td', {}, w.host),
        h('td', { class: 'num' }, w.running === undefined ? '—' : String(w.running)),
        h('td', { class: 'nowrap' }, timeEl(w.started)),
        h('td', { class: 'nowrap' }, w.beat ? [timeEl(w.beat), h('div', { class: 'small muted' }, relTime(w.beat))] : '—')))))) : h('p', { class: 'empty' }, 'No workers have reported.'));
  }
  const reload = debounce(load, 500, 3000);
  onLive((m) => { if (m.type === 'reset' || m.stream_type === 'task_run' || m.stream_type === 'flow_run') reload(); });
  setInterval(() => { if (available) load(); }, 10000); // heartbeats are not events
  await load();
}
