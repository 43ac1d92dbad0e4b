// Deployments: every deployment with its schedule in words, next run,
// queue, tags and whether its schedule is paused.

import { api, query } from '../api.js';
import { h, clear, tags, timeEl, relTime, errorPanel } from '../dom.js';
import { describeSchedule } from '../schedule.js';
import { onLive, debounce } from '../live.js';

export function pausedBadge(d) {
  return d.paused
    ? h('span', { class: 'badge state-PAUSED', dataset: { paused: 'true' } }, 'Paused')
    : h('span', { class: 'badge ok', dataset: { paused: 'false' } }, d.schedule ? 'Active' : 'Manual');
}

export async function render(main) {
  const params = new URLSearchParams(location.search);
  let cursor = params.get('cursor') || '';
  const name = params.get('name') || '';
  const box = h('div', { id: 'deployments' });
  const pager = h('div', { class: 'pager' });
  const search = h('input', { type: 'search', name: 'name', id: 'f-name', value: name, placeholder: 'part of the name' });
  clear(main,
    h('div', { class: 'page-head' },
      h('div', { class: 'titles' }, h('h1', {}, 'Deployments'),
        h('p', { class: 'muted' }, 'A deployment is a flow with its default parameters, schedule, work queue and tags. Create them with ',
          h('code', {}, 'ordo deploy -f file.yaml'), ' or POST /api/v1/deployments.'))),
    h('section', { class: 'panel' },
      h('form', { class: 'filters', role: 'search', method: 'get', action: '/deployments' },
        h('div', { class: 'field' }, h('label', { for: 'f-name' }, 'Name'), search),
        h('div', { class: 'buttons' }, h('button', { type: 'submit', class: 'primary' }, 'Search'))),
    ),
    h('section', { class: 'panel', 'aria-label': 'Deployments' }, box, pager));

  async function load() {
    let page;
    try {
      page = await api('/deployments' + query({ name, limit: 100, cursor }));
    } catch (e) {
      clear(box, errorPanel(e));
      return;
    }
    if (!page.items.length) {
      clear(box, h('p', { class: 'empty' }, name ? 'No deployment matches.' : 'No deployments yet.'));
      clear(pager);
      return;
    }
    clear(box, h('div', { class: 'table-wrap' }, h('table', {},
      h('thead', {}, h('tr', {}, ['Name', 'Schedule', 'Status', 'Next run', 'Work queue', 'Tags', 'Version', 'Updated'].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, page.items.map((d) => {
        const next = (d.next_runs || [])[0];
        return h('tr', { dataset: { deploymentId: d.id } },
          h('td', {}, h('a', { href: `/deployments/${d.id}` }, d.name), d.description ? h('div', { class: 'small muted' }, d.description) : null),
          h('td', {}, describeSchedule(d.schedule)),
          h('td', {}, pausedBadge(d)),
          h('td', { class: 'nowrap' }, next ? [timeEl(next.scheduled_at), h('div', { class: 'small muted' }, relTime(next.scheduled_at))] : h('span', { class: 'muted' }, '—')),
          h('td', {}, d.work_queue),
          h('td', {}, tags(d.tags)),
          h('td', { class: 'num' }, String(d.version)),
          h('td', { class: 'nowrap' }, timeEl(d.updated_at)));
      })))));
    clear(pager, cursor ? h('a', { href: '/deployments' + query({ name }), class: 'button' }, '« First') : null,
      page.next_cursor ? h('a', { class: 'button', href: '/deployments' + query({ name, cursor: page.next_cursor }) }, 'Next ›') : null);
  }
  const reload = debounce(load, 300, 1500);
  onLive((m) => {
    if (m.type === 'reset' || m.stream_type === 'deployment' || m.type === 'FlowRunCreated' || m.type === 'FlowRunPending') reload();
  });
  await load();
}
