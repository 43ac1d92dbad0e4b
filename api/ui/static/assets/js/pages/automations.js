// Automations: each automation (trigger, filter, actions, paused) with its
// recent deliveries (status, last response code, attempts, last error) and
// a Retry button on a dead one. Delivery attempts are not events, so the
// page also reads them again every few seconds.

import { api, APIError } from '../api.js';
import { h, clear, tags, timeEl, relTime, errorPanel, notice, shortID } from '../dom.js';
import { onLive, debounce } from '../live.js';
import { deliveryBadge, actionText, statusCode } from '../automations.js';

const RECENT = 20;

export function triggerText(tr) {
  if (!tr) return '';
  const of = tr.of ? tr.of.replace('_', ' ') : 'run';
  switch (tr.type) {
    case 'state': return `a ${of} reaches ${(tr.states || []).join(' or ')}`;
    case 'running_longer_than': return `a ${of} runs longer than ${tr.seconds} s`;
    case 'not_completed_within': return `no completed run within ${tr.seconds} s`;
    case 'consecutive_failures': return `${tr.count} failed runs in a row`;
    default: return [tr.type, tr.seconds && `${tr.seconds} s`, tr.count && `× ${tr.count}`].filter(Boolean).join(' ');
  }
}

export function filterParts(f) {
  const parts = [];
  if (!f) return parts;
  if ((f.deployments || []).length) parts.push(['Deployments', f.deployments.join(', ')]);
  if ((f.tags || []).length) parts.push(['Tags', tags(f.tags)]);
  if (f.work_queue) parts.push(['Work queue', f.work_queue]);
  if (f.flow) parts.push(['Flow', f.flow]);
  return parts;
}

export async function render(main) {
  const msg = h('div', { class: 'notice', id: 'automations-message' });
  const box = h('div', { id: 'automations' });
  clear(main,
    h('div', { class: 'page-head' }, h('div', { class: 'titles' }, h('h1', {}, 'Automations'),
      h('p', { class: 'muted' }, 'What fires when runs reach a state, and where each firing is delivered. Create them with ',
        h('code', {}, 'ordo automations create -f file.yaml'), ' or POST /api/v1/automations.'))),
    msg, box);

  // sections by automation id, kept across reloads so that a button the
  // user is about to press is not rebuilt under the pointer needlessly
  const shown = new Map();
  let available = true;

  async function load() {
    let list;
    try {
      list = (await api('/automations')).items;
    } catch (e) {
      if (e instanceof APIError && (e.status === 404 || e.status === 501)) {
        available = false;
        clear(box, h('p', { class: 'notice info', id: 'automations-unavailable' }, `Automations are not available on this server (GET /api/v1/automations answered ${e.status}).`));
      } else {
        clear(box, errorPanel(e));
      }
      return;
    }
    if (!list.length) {
      shown.clear();
      clear(box, h('p', { class: 'empty' }, 'No automations yet.'));
      return;
    }
    const deliveries = await Promise.all(list.map((a) => api(`/automations/${a.id}/deliveries?limit=${RECENT}`).then((p) => p.items).catch((e) => e)));
    const sections = list.map((a, i) => {
      const key = JSON.stringify([a, deliveries[i] instanceof Error ? String(deliveries[i]) : deliveries[i]]);
      const old = shown.get(a.id);
      if (old && old.key === key) return old.el;
      const el = section(a, deliveries[i]);
      shown.set(a.id, { key, el });
      return el;
    });
    for (const id of [...shown.keys()]) if (!list.some((a) => a.id === id)) shown.delete(id);
    if (sections.some((el, i) => box.children[i] !== el) || box.children.length !== sections.length) clear(box, sections);
  }

  function section(a, dels) {
    const row = (k, v) => [h('dt', {}, k), h('dd', {}, v)];
    const filter = filterParts(a.filter);
    return h('section', { class: 'panel', dataset: { automation: a.name, automationId: a.id }, 'aria-label': `Automation ${a.name}` },
      h('div', { class: 'panel-head' }, h('h2', {}, a.name),
        a.paused ? h('span', { class: 'badge state-PAUSED', dataset: { paused: 'true' } }, 'Paused') : h('span', { class: 'badge ok', dataset: { paused: 'false' } }, 'Active')),
      a.description ? h('p', { class: 'muted' }, a.description) : null,
      h('dl', { class: 'props' },
        row('Trigger', triggerText(a.trigger)),
        row('Filter', filter.length ? h('span', {}, filter.map(([k, v], i) => [i ? ' · ' : '', `${k}: `, v])) : h('span', { class: 'muted' }, 'every run')),
        row('Actions', h('ul', { class: 'plain' }, (a.actions || []).map((x) => h('li', { dataset: { actionType: x.type } }, actionText(x)))))),
      h('h3', { class: 'mt' }, 'Recent deliveries'),
      deliveriesTable(a, dels));
  }

  function deliveriesTable(a, dels) {
    if (dels instanceof Error) return errorPanel(dels);
    if (!dels.length) return h('p', { class: 'empty' }, 'Nothing delivered yet: no firing.');
    return h('div', { class: 'table-wrap' }, h('table', { class: 'deliveries' },
      h('thead', {}, h('tr', {}, ['Status', 'Run', 'Trigger', 'Action', 'Code', 'Attempts', 'Last error', 'Time', ''].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, dels.map((d) => h('tr', { dataset: { firing: d.firing_id, action: d.action, status: d.status } },
        h('td', {}, deliveryBadge(d.status)),
        h('td', {}, d.flow_run_id ? h('a', { href: `/runs/${d.flow_run_id}`, class: 'mono' }, shortID(d.flow_run_id)) : h('span', { class: 'muted' }, d.trigger_type === 'test' ? 'test' : '—')),
        h('td', { class: 'mono small' }, d.trigger_type),
        h('td', { class: 'small' }, `${d.action_type} → ${d.target}`),
        h('td', { class: 'num' }, statusCode(d.last_status_code)),
        h('td', { class: 'num' }, String(d.attempts)),
        h('td', { class: 'small' }, d.last_error || ''),
        h('td', { class: 'nowrap' }, timeEl(d.updated_at), h('div', { class: 'small muted' }, relTime(d.updated_at))),
        h('td', {}, d.status === 'dead' ? retryButton(a, d) : null))))));
  }

  function retryButton(a, d) {
    const b = h('button', { type: 'button', class: 'retry-delivery', 'aria-label': `Retry the delivery of firing ${shortID(d.firing_id)} to ${d.target}` }, 'Retry');
    b.addEventListener('click', async () => {
      b.disabled = true;
      try {
        await api(`/automations/${a.id}/deliveries/${d.firing_id}/${d.action}/retry`, { method: 'POST' });
        notice(msg, `The delivery of firing ${shortID(d.firing_id)} to ${d.target} is queued again.`, 'ok');
      } catch (e) {
        notice(msg, `Retry failed — ${e instanceof APIError ? e.describe() : e.message}`, 'error');
      }
      load();
    });
    return b;
  }

  const reload = debounce(load, 300, 1500);
  onLive((m) => { if (m.type === 'reset' || m.type === 'ready' || m.stream_type === 'automation' || m.type === 'AutomationFired') reload(); });
  setInterval(() => { if (available && !document.hidden) load(); }, 3000);
  await load();
}
