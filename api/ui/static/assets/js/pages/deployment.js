// One deployment: its schedule in words, next runs, queue, tags, the
// paused toggle, its flow, a Run form (built from parameters_schema when
// it has one), a chart of each metric across its last runs and its recent
// runs, live.

import { api, APIError } from '../api.js';
import { h, clear, tags, timeEl, relTime, json, errorPanel, notice, setTitle, fromLocalInput } from '../dom.js';
import { describeSchedule } from '../schedule.js';
import { onLive, debounce } from '../live.js';
import { pausedBadge } from './deployments.js';
import { runsTable, liveRows } from './runs.js';
import { metricCharts } from '../chart.js';

function deploymentID() {
  const m = location.pathname.match(/^\/deployments\/([^/]+)/);
  return m ? decodeURIComponent(m[1]) : '';
}

// schemaFields lists the form fields of a JSON Schema of an object whose
// properties are all strings, numbers, integers or booleans; null when the
// schema is something a simple form cannot express.
export function schemaFields(schema) {
  if (!schema || typeof schema !== 'object' || schema.type !== 'object' || !schema.properties) return null;
  const required = new Set(schema.required || []);
  const fields = [];
  for (const [name, p] of Object.entries(schema.properties)) {
    let type = Array.isArray(p.type) ? p.type.find((t) => t !== 'null') : p.type;
    if (!type && p.enum) type = typeof p.enum[0] === 'number' ? 'number' : 'string';
    if (!['string', 'number', 'integer', 'boolean'].includes(type)) return null;
    fields.push({ name, type, title: p.title || name, description: p.description || '', enum: p.enum, default: p.default, required: required.has(name), minimum: p.minimum, maximum: p.maximum });
  }
  return fields;
}

function parametersForm(d) {
  const schema = d.spec && d.spec.parameters_schema;
  const fields = schemaFields(schema);
  const defaults = d.parameters || {};
  const inputs = [];
  let body;
  if (fields) {
    body = h('div', { class: 'form-grid' }, fields.map((f) => {
      const id = `param-${f.name}`;
      const value = f.name in defaults ? defaults[f.name] : f.default;
      let input;
      if (f.type === 'boolean') {
        input = h('input', { type: 'checkbox', id, name: f.name, checked: !!value });
        inputs.push({ f, input });
        return h('div', {}, h('label', { class: 'check', for: id }, input, f.title), f.description ? h('div', { class: 'small muted' }, f.description) : null);
      }
      if (f.enum) {
        input = h('select', { id, name: f.name, required: f.required }, f.required ? null : h('option', { value: '' }, '(default)'),
          f.enum.map((v) => h('option', { value: String(v), selected: v === value }, String(v))));
      } else {
        input = h('input', {
          id, name: f.name, type: f.type === 'string' ? 'text' : 'number', step: f.type === 'integer' ? '1' : 'any',
          value: value === undefined || value === null ? '' : String(value), required: f.required, min: f.minimum, max: f.maximum,
        });
      }
      inputs.push({ f, input });
      return h('div', {}, h('label', { for: id, class: f.required ? 'required' : '' }, `${f.title} (${f.type})`), input,
        f.description ? h('div', { class: 'small muted' }, f.description) : null);
    }));
  } else {
    const area = h('textarea', { id: 'param-json', name: 'parameters', spellcheck: 'false', 'aria-describedby': 'param-json-help' }, JSON.stringify(defaults, null, 2));
    inputs.push({ json: area });
    body = h('div', {}, h('label', { for: 'param-json' }, 'Parameters (JSON object: overrides of the defaults)'), area,
      h('p', { class: 'small muted', id: 'param-json-help' }, schema ? 'This deployment\'s parameters schema is too rich for a form: edit the JSON.' : 'Keys you leave out keep their default.'));
  }
  const when = h('input', { type: 'datetime-local', id: 'run-at', name: 'scheduled_at' });
  const values = () => {
    const out = {};
    for (const x of inputs) {
      if (x.json) {
        const text = x.json.value.trim();
        if (!text) return {};
        let v;
        try { v = JSON.parse(text); } catch (e) { throw new Error(`The parameters are not valid JSON: ${e.message}`); }
        if (!v || typeof v !== 'object' || Array.isArray(v)) throw new Error('The parameters must be a JSON object.');
        return v;
      }
      const { f, input } = x;
      if (f.type === 'boolean') out[f.name] = input.checked;
      else if (input.value === '') continue;
      else if (f.type === 'number' || f.type === 'integer') out[f.name] = Number(input.value);
      else out[f.name] = input.value;
    }
    return out;
  };
  return {
    body: [body, h('div', { class: 'form-grid' }, h('div', {}, h('label', { for: 'run-at' }, 'Start at (empty: now)'), when))],
    values,
    scheduledAt: () => fromLocalInput(when.value),
  };
}

export async function render(main) {
  const id = deploymentID();
  let d;
  try {
    d = await api(`/deployments/${id}`);
  } catch (e) {
    clear(main, h('h1', {}, 'Deployment'), errorPanel(e), h('p', {}, h('a', { href: '/deployments' }, '← Deployments')));
    return;
  }
  const head = h('div', { class: 'page-head' });
  const msg = h('div', { class: 'notice', id: 'deployment-message' });
  const info = h('dl', { class: 'props', id: 'deployment-details' });
  const nextRuns = h('div', { id: 'next-runs' });
  const flow = h('div', { id: 'flow' });
  const runForm = h('form', { id: 'run-form', 'aria-labelledby': 'h-run' });
  const runMsg = h('div', { class: 'notice', id: 'run-message' });
  const recent = h('div', { id: 'recent-runs' });
  const charts = h('div', { id: 'metric-charts' });

  clear(main,
    h('p', { class: 'small' }, h('a', { href: '/deployments' }, '← Deployments')),
    head, msg,
    h('div', { class: 'grid two' },
      h('section', { class: 'panel', 'aria-labelledby': 'h-info' }, h('h2', { id: 'h-info' }, 'Deployment'), info),
      h('section', { class: 'panel', 'aria-labelledby': 'h-next' }, h('h2', { id: 'h-next' }, 'Next runs'), nextRuns)),
    h('section', { class: 'panel', 'aria-labelledby': 'h-run' }, h('h2', { id: 'h-run' }, 'Run now'), runForm, runMsg),
    h('section', { class: 'panel', 'aria-labelledby': 'h-flow' }, h('h2', { id: 'h-flow' }, 'Flow'), flow),
    h('section', { class: 'panel', 'aria-labelledby': 'h-metrics' },
      h('div', { class: 'panel-head' }, h('h2', { id: 'h-metrics' }, 'Metrics'),
        h('span', { class: 'muted small' }, 'Each metric across the last 100 runs that reported any; click a point to open its run.')),
      charts),
    h('section', { class: 'panel', 'aria-labelledby': 'h-recent' },
      h('div', { class: 'panel-head' }, h('h2', { id: 'h-recent' }, 'Recent runs'), h('span', { class: 'spacer' }),
        h('a', { href: `/runs?deployment=${encodeURIComponent(d.id)}`, id: 'all-runs' }, 'All runs of this deployment →')),
      recent));

  function renderInfo() {
    setTitle(d.name);
    const toggle = h('button', {
      type: 'button', id: 'pause-toggle', 'aria-pressed': String(d.paused),
      'aria-label': d.paused ? 'Resume the schedule' : 'Pause the schedule', disabled: !d.schedule && !d.paused,
      title: d.schedule ? '' : 'This deployment has no schedule',
    }, d.paused ? 'Resume schedule' : 'Pause schedule');
    toggle.addEventListener('click', async () => {
      toggle.disabled = true;
      try {
        d = await api(`/deployments/${d.id}/${d.paused ? 'resume' : 'pause'}`, { method: 'POST' });
        notice(msg, d.paused ? 'The schedule is paused: it creates no new runs.' : 'The schedule is active again.', 'ok');
      } catch (e) {
        notice(msg, e instanceof APIError ? e.describe() : e.message, 'error');
      }
      renderInfo();
    });
    clear(head,
      h('div', { class: 'titles' }, h('h1', {}, h('span', { id: 'deployment-name' }, d.name), pausedBadge(d)),
        d.description ? h('p', { class: 'muted' }, d.description) : null),
      h('div', { class: 'actions' }, toggle));
    const row = (k, v) => [h('dt', {}, k), h('dd', {}, v)];
    clear(info,
      row('Schedule', h('span', { id: 'schedule-words' }, describeSchedule(d.schedule))),
      d.schedule && d.schedule.cron ? row('Cron', h('code', {}, d.schedule.cron)) : null,
      row('Work queue', h('a', { href: '/work-queues' }, d.work_queue)),
      row('Tags', d.tags.length ? tags(d.tags) : h('span', { class: 'muted' }, 'none')),
      row('Version', String(d.version)),
      row('Created', timeEl(d.created_at)),
      row('Updated', timeEl(d.updated_at)),
      row('Default parameters', json(d.parameters)),
      row('Id', h('span', { class: 'mono' }, d.id)));
    const next = d.next_runs || [];
    clear(nextRuns, next.length
      ? h('ul', { class: 'plain' }, next.map((r) => h('li', {}, h('a', { href: `/runs/${r.id}` }, timeEl(r.scheduled_at)), ' ', h('span', { class: 'muted small' }, relTime(r.scheduled_at)))))
      : h('p', { class: 'muted' }, d.paused ? 'None: the schedule is paused.' : d.schedule ? 'None scheduled yet.' : 'No schedule: runs start only when asked.'));
    clear(flow, h('p', {}, 'Flow ', h('strong', {}, d.flow.name), `: ${d.flow.tasks.length} task${d.flow.tasks.length === 1 ? '' : 's'}.`),
      h('div', { class: 'table-wrap' }, h('table', {},
        h('thead', {}, h('tr', {}, ['Task', 'Runs', 'Depends on', 'Retries', 'Timeout'].map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', {}, d.flow.tasks.map((t) => h('tr', {},
          h('td', {}, t.name),
          h('td', { class: 'mono small' }, t.command ? t.command.join(' ') : t.handler ? `handler ${t.handler}` : t.deployment ? `sub-flow: deployment ${t.deployment}` : ''),
          h('td', {}, (t.depends_on || []).join(', ') || '—'),
          h('td', { class: 'num' }, String(t.retries || 0)),
          h('td', { class: 'num' }, t.timeout_seconds ? `${t.timeout_seconds} s` : '—')))))));
  }

  function renderForm() {
    const form = parametersForm(d);
    clear(runForm, form.body, h('button', { type: 'submit', class: 'primary', id: 'run-submit' }, 'Run'));
    runForm.onsubmit = async (ev) => {
      ev.preventDefault();
      let body;
      try {
        body = { parameters: form.values() };
        const at = form.scheduledAt();
        if (at) body.scheduled_at = at;
      } catch (e) {
        notice(runMsg, e.message, 'error');
        return;
      }
      const btn = runForm.querySelector('#run-submit');
      btn.disabled = true;
      try {
        const r = await api(`/deployments/${d.id}/runs`, { method: 'POST', body });
        clear(runMsg, 'Run created: ', h('a', { href: `/runs/${r.id}`, id: 'created-run' }, r.name));
        runMsg.className = 'notice ok';
        loadRecent();
      } catch (e) {
        notice(runMsg, e instanceof APIError ? e.describe() : e.message, 'error');
      } finally {
        btn.disabled = false;
      }
    };
  }

  async function loadRecent() {
    try {
      // runs due by now (the next scheduled ones are listed above); a minute of slack for clock skew
      const until = new Date(Date.now() + 60e3).toISOString();
      const page = await api(`/runs?deployment=${encodeURIComponent(d.id)}&until=${encodeURIComponent(until)}&limit=10`);
      clear(recent, page.items.length ? runsTable(page.items, { showDeployment: false }) : h('p', { class: 'empty' }, 'No runs yet.'));
    } catch (e) {
      clear(recent, errorPanel(e));
    }
  }

  async function loadCharts() {
    try {
      const page = await api(`/deployments/${d.id}/metrics?limit=100`);
      clear(charts, metricCharts(page.items));
    } catch (e) {
      clear(charts, errorPanel(e));
    }
  }
  const reloadCharts = debounce(loadCharts, 500, 3000);

  const reloadDeployment = debounce(async () => {
    try {
      d = await api(`/deployments/${d.id}`);
      renderInfo();
    } catch { /* deleted: keep what is shown */ }
  }, 300, 1500);
  const reloadRecent = debounce(loadRecent, 300, 1500);
  liveRows(recent, { showDeployment: false, onNew: reloadRecent });
  onLive((m) => {
    if (m.type === 'reset' || m.stream_id === d.id || m.type === 'FlowRunCreated' || m.type === 'FlowRunPending') reloadDeployment();
    if (m.type === 'reset' || (m.stream_type === 'task_run' && (m.type === 'TaskRunCompleted' || m.type === 'TaskRunCached'))) reloadCharts();
  });

  renderInfo();
  renderForm();
  await Promise.all([loadRecent(), loadCharts()]);
}
