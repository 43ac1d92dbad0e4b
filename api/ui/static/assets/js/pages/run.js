// One flow run: state, timings, parameters, result, the task graph, its
// metrics and outputs (with previews), the timeline of attempts, live
// logs, the audit trail, parent and child runs, the automations it fired,
// Cancel and Retry, and a history slider that shows the run as it was at
// any of its events.

import { api, APIError } from '../api.js';
import { openStream } from '../sse.js';
import {
  h, clear, badge, tags, timeEl, fmtDuration, fmtClock, runDuration, json, errorPanel, notice, setTitle, stateLabel, TERMINAL, shortID,
} from '../dom.js';
import { onLive, debounce } from '../live.js';
import { renderGraph, graphFromTaskRuns } from '../graph.js';
import { renderTimeline } from '../timeline.js';
import { metricsTable, outputsTable, runOutputs } from '../outputs.js';
import { deliveryBadge, statusCode } from '../automations.js';

const RETRYABLE = new Set(['FAILED', 'CRASHED', 'CANCELLED']);
const MAX_LOG_LINES = 5000;

function runID() {
  const m = location.pathname.match(/^\/runs\/([^/]+)/);
  return m ? decodeURIComponent(m[1]) : new URLSearchParams(location.search).get('id') || '';
}

export async function render(main) {
  const id = runID();
  let run; let graph; let events;
  try {
    [run, graph, events] = await Promise.all([api(`/runs/${id}`), api(`/runs/${id}/graph`), api(`/runs/${id}/events`).then((p) => p.items)]);
  } catch (e) {
    clear(main, h('h1', {}, 'Flow run'), errorPanel(e), h('p', {}, h('a', { href: '/runs' }, '← All flow runs')));
    return;
  }

  // history: null shows the run now; otherwise the index of the last event shown
  let at = null;
  let historic = null;
  let selectedTask = '';

  const titleBadge = h('span', { id: 'run-state' });
  const heading = h('h1', {}, h('span', { id: 'run-name' }), titleBadge);
  const subtitle = h('p', { class: 'muted' });
  const cancelBtn = h('button', { type: 'button', class: 'danger', id: 'cancel-run', 'aria-label': 'Cancel this flow run' }, 'Cancel');
  const retryBtn = h('button', { type: 'button', id: 'retry-run', 'aria-label': 'Retry the failed part of this flow run' }, 'Retry');
  const actionMsg = h('div', { id: 'action-message', class: 'notice', role: 'status' });
  const details = h('dl', { class: 'props', id: 'run-details' });
  const params = h('div', { id: 'run-parameters' });
  const result = h('div', { id: 'run-result' });
  const relations = h('section', { class: 'panel', id: 'run-relations', 'aria-label': 'Related runs' });
  const firingsBox = h('div', { id: 'run-firings' });
  const firingsPanel = h('section', { class: 'panel', 'aria-labelledby': 'h-firings', hidden: true },
    h('h2', { id: 'h-firings' }, 'Automations fired'), firingsBox);
  const banner = h('div', { class: 'history-banner', id: 'history-banner', hidden: true, role: 'status' });
  const graphBox = h('div', { class: 'graph-wrap', id: 'graph' });
  const slider = h('input', { type: 'range', id: 'history-slider', min: 1, max: Math.max(1, events.length), value: Math.max(1, events.length), step: 1, 'aria-describedby': 'history-where' });
  const where = h('span', { class: 'where', id: 'history-where', 'aria-live': 'polite' });
  const liveBtn = h('button', { type: 'button', id: 'history-live', disabled: true }, 'Back to now');
  const tasksBox = h('div', { id: 'task-runs' });
  const metricsBox = h('div', { id: 'run-metrics' });
  const outputsBox = h('div', { id: 'run-outputs' });
  const previewBox = h('div', { id: 'output-preview', class: 'preview', 'aria-live': 'polite' });
  const timelineBox = h('div', { id: 'timeline' });
  const logFilter = h('select', { id: 'log-task', 'aria-label': 'Show the logs of' }, h('option', { value: '' }, 'All tasks'));
  const logFollow = h('input', { type: 'checkbox', id: 'log-follow', checked: true });
  const logStatus = h('span', { class: 'muted small', id: 'log-status', role: 'status' }, 'Connecting…');
  const logBox = h('div', { class: 'logs', id: 'logs', tabindex: 0, role: 'log', 'aria-label': 'Task logs', 'aria-live': 'off' });
  const auditBox = h('div', { id: 'audit' });

  clear(main,
    h('p', { class: 'small' }, h('a', { href: '/runs' }, '← Flow runs')),
    h('div', { class: 'page-head' },
      h('div', { class: 'titles' }, heading, subtitle),
      h('div', { class: 'actions' }, cancelBtn, retryBtn)),
    actionMsg,
    h('div', { class: 'grid two' },
      h('section', { class: 'panel', 'aria-labelledby': 'h-details' }, h('h2', { id: 'h-details' }, 'Details'), details),
      h('section', { class: 'panel', 'aria-labelledby': 'h-params' },
        h('h2', { id: 'h-params' }, 'Parameters'), params, h('h2', { class: 'mt' }, 'Result'), result)),
    relations,
    firingsPanel,
    h('section', { class: 'panel', 'aria-labelledby': 'h-graph' },
      h('div', { class: 'panel-head' }, h('h2', { id: 'h-graph' }, 'Task graph'), h('span', { class: 'muted small' }, 'Click a task to see its logs.')),
      banner, graphBox,
      h('div', { class: 'history' }, h('label', { for: 'history-slider' }, 'History'), slider, where, liveBtn)),
    h('section', { class: 'panel', 'aria-labelledby': 'h-tasks' }, h('h2', { id: 'h-tasks' }, 'Task runs'), tasksBox),
    h('section', { class: 'panel', 'aria-labelledby': 'h-metrics' }, h('h2', { id: 'h-metrics' }, 'Metrics'), metricsBox),
    h('section', { class: 'panel', 'aria-labelledby': 'h-outputs' }, h('h2', { id: 'h-outputs' }, 'Outputs'), outputsBox, previewBox),
    h('section', { class: 'panel', 'aria-labelledby': 'h-timeline' }, h('h2', { id: 'h-timeline' }, 'Timeline'), timelineBox),
    h('section', { class: 'panel', 'aria-labelledby': 'h-logs' },
      h('div', { class: 'panel-head' }, h('h2', { id: 'h-logs' }, 'Logs'), logStatus, h('span', { class: 'spacer' }),
        h('label', { for: 'log-task', class: 'sr-only' }, 'Task'), logFilter,
        h('label', { class: 'inline-check', for: 'log-follow' }, logFollow, 'Follow')),
      logBox),
    h('section', { class: 'panel', 'aria-labelledby': 'h-audit' },
      h('h2', { id: 'h-audit' }, 'Audit trail'),
      h('p', { class: 'muted small' }, 'Every event of the run and its task runs, in log order, read from the event log.'),
      auditBox));

  // ---- rendering --------------------------------------------------------

  function renderHeader() {
    setTitle(run.name || 'Flow run');
    document.getElementById('run-name').textContent = run.name || run.id;
    clear(titleBadge, badge(run.state));
    clear(subtitle, `Flow ${run.flow_name || ''} · deployment `, h('a', { href: `/deployments/${run.deployment_id}` }, run.deployment_name),
      ` v${run.deployment_version} · `, h('span', { class: 'mono', title: run.id }, shortID(run.id)));
    // only the action that applies is shown: Cancel while the run is not
    // over, Retry once it failed, crashed or was cancelled
    cancelBtn.hidden = TERMINAL.has(run.state.type);
    retryBtn.hidden = !RETRYABLE.has(run.state.type);
  }

  function renderDetails() {
    const row = (k, v) => [h('dt', {}, k), h('dd', {}, v)];
    clear(details,
      row('State', [badge(run.state), run.state.message ? h('div', { class: 'small muted' }, run.state.message) : null]),
      row('Work queue', h('a', { href: '/work-queues' }, run.work_queue)),
      row('Tags', run.tags.length ? tags(run.tags) : h('span', { class: 'muted' }, 'none')),
      row('Scheduled', timeEl(run.scheduled_at)),
      row('Started', timeEl(run.started_at)),
      row('Ended', timeEl(run.ended_at)),
      row('Duration', h('span', { id: 'run-duration' }, fmtDuration(runDuration(run)))),
      row('Run count', String(run.run_count)),
      row('Created by', run.auto_scheduled ? 'the schedule' : 'a user or the API'),
      row('Id', h('span', { class: 'mono' }, run.id)));
    clear(params, json(run.parameters));
    clear(result, run.result === null || run.result === undefined ? h('p', { class: 'muted' }, TERMINAL.has(run.state.type) ? 'No result.' : 'Not finished yet.') : json(run.result));
  }

  async function renderRelations() {
    const children = (run.task_runs || []).filter((t) => t.child_flow_run_id);
    if (!run.parent_flow_run_id && !children.length) {
      relations.hidden = true;
      return;
    }
    relations.hidden = false;
    const parts = [h('h2', {}, 'Related runs')];
    if (run.parent_flow_run_id) {
      const link = h('a', { href: `/runs/${run.parent_flow_run_id}`, id: 'parent-run' }, `parent run ${shortID(run.parent_flow_run_id)}`);
      parts.push(h('p', {}, 'This is a sub-flow of ', link, '.'));
      api(`/runs/${run.parent_flow_run_id}`).then((p) => { link.textContent = `${p.name} (${stateLabel(p.state)})`; }).catch(() => {});
    }
    if (children.length) {
      const list = h('ul', { class: 'plain', id: 'child-runs' });
      for (const t of children) {
        const state = h('span');
        list.append(h('li', {}, h('a', { href: `/runs/${t.child_flow_run_id}` }, `Sub-flow of task ${t.task_name}`), ' ', state));
        api(`/runs/${t.child_flow_run_id}`).then((c) => clear(state, badge(c.state), ' ', c.name)).catch(() => {});
      }
      parts.push(h('h3', {}, 'Child runs'), list);
    }
    clear(relations, parts);
  }

  function selectTask(name) {
    selectedTask = selectedTask === name ? '' : name;
    logFilter.value = selectedTask;
    renderLogs();
    renderGraphPart();
    if (selectedTask) logBox.scrollIntoView({ behavior: 'smooth', block: 'nearest' });
  }

  function renderGraphPart() {
    const g = historic ? graphFromTaskRuns(historic.run.task_runs) : graph;
    clear(graphBox, g.nodes.length ? renderGraph(g, { selected: selectedTask, onSelect: selectTask }) : h('p', { class: 'empty' }, 'This flow has no tasks.'));
  }

  function renderTasks() {
    const list = historic ? historic.run.task_runs : run.task_runs || [];
    clear(tasksBox, list.length ? h('div', { class: 'table-wrap' }, h('table', {},
      h('thead', {}, h('tr', {}, ['Task', 'State', 'Attempts', 'Started', 'Ended', 'Duration', 'Depends on', 'Error'].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, list.map((t) => h('tr', { dataset: { task: t.task_name, state: t.state.type } },
        h('td', {}, h('button', { type: 'button', class: 'link', onclick: () => selectTask(t.task_name), 'aria-label': `Show the logs of ${t.task_name}` }, t.task_name),
          t.child_flow_run_id ? [' ', h('a', { href: `/runs/${t.child_flow_run_id}`, class: 'small' }, 'sub-flow run')] : null),
        h('td', {}, badge(t.state)),
        h('td', { class: 'num' }, String(t.run_count)),
        h('td', { class: 'nowrap' }, timeEl(t.started_at)),
        h('td', { class: 'nowrap' }, timeEl(t.ended_at)),
        h('td', { class: 'num nowrap' }, fmtDuration(runDuration(t))),
        h('td', {}, (t.depends_on || []).join(', ') || h('span', { class: 'muted' }, '—')),
        h('td', { class: 'small' }, t.error || ''))))))
      : h('p', { class: 'empty' }, 'No task runs.'));
    // the log filter lists the tasks
    const names = (run.task_runs || []).map((t) => t.task_name);
    const have = [...logFilter.options].map((o) => o.value);
    for (const n of names) if (!have.includes(n)) logFilter.append(h('option', { value: n }, n));
  }

  // rebuilt only when they change: a live refresh keeps a button the user
  // is about to click
  let shownOutputs = null;
  function renderOutputs() {
    const outputs = runOutputs(run);
    const key = JSON.stringify([run.metrics, outputs, (run.task_runs || []).map((t) => t.metrics)]);
    if (key === shownOutputs) return;
    shownOutputs = key;
    clear(metricsBox, metricsTable(run));
    clear(outputsBox, outputsTable(outputs, previewBox));
  }

  function renderTimelinePart() {
    if (at !== null) {
      const shown = events.slice(0, at);
      clear(timelineBox, renderTimeline(shown, new Date(shown[shown.length - 1].recorded_at)));
    } else {
      clear(timelineBox, renderTimeline(events, TERMINAL.has(run.state.type) && run.ended_at ? new Date(run.ended_at) : new Date()));
    }
  }

  function renderAudit() {
    if (!events.length) {
      clear(auditBox, h('p', { class: 'empty' }, 'No events.'));
      return;
    }
    clear(auditBox, h('div', { class: 'table-wrap' }, h('table', { class: 'audit' },
      h('thead', {}, h('tr', {}, ['Position', 'Time', 'Of', 'Event', 'Transition', 'Actor', 'Reason'].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, events.map((e, i) => h('tr', { dataset: { position: e.position, type: e.type }, class: at !== null && i + 1 === at ? 'current' : '' },
        h('td', { class: 'num' }, h('button', {
          type: 'button', class: 'link mono', title: 'Show the run as it was after this event', onclick: () => showAt(i + 1),
          'aria-label': `Show the run as it was after event ${e.position}`,
        }, String(e.position))),
        h('td', { class: 'nowrap' }, fmtClock(e.recorded_at)),
        h('td', {}, e.stream_type === 'flow_run' ? 'flow run' : e.task_name || shortID(e.stream_id)),
        h('td', { class: 'mono small' }, e.type),
        h('td', { class: 'nowrap' }, e.from_state ? [badge(e.from_state), ' → '] : null, e.to_state ? badge(e.to_state) : '—'),
        h('td', {}, e.metadata.actor || '—'),
        h('td', { class: 'small' }, e.metadata.reason || (e.data && (e.data.error || e.data.message)) || '')))))));
  }

  function renderHistoryControls() {
    const n = events.length;
    slider.max = String(Math.max(1, n));
    if (at === null && slid === null) slider.value = String(n);
    const k = at === null ? n : at;
    const e = events[k - 1];
    where.textContent = e ? `Event ${k} of ${n}: ${e.type}${e.task_name ? ' (' + e.task_name + ')' : ''} at ${fmtClock(e.recorded_at)}${at === null ? ' — now' : ''}` : 'No events';
    liveBtn.disabled = at === null;
    if (historic) {
      banner.hidden = false;
      clear(banner, h('strong', {}, 'History:'), ` the run as it was at ${new Date(historic.at).toLocaleString()} (position ${historic.position}), `,
        h('span', { id: 'history-state' }, badge(historic.run.state)), ' ',
        h('button', { type: 'button', class: 'link', onclick: () => showAt(null) }, 'back to now'));
    } else {
      banner.hidden = true;
    }
  }

  function renderAll() {
    renderHeader();
    renderDetails();
    renderRelations();
    renderGraphPart();
    renderTasks();
    renderOutputs();
    renderTimelinePart();
    renderAudit();
    renderHistoryControls();
  }

  // ---- automations fired ------------------------------------------------

  // Shown once something fired; deliveries under way are read again until
  // they end (their attempts are not events).
  let firingsShown = '';
  let firingsPoll = null;
  async function loadFirings() {
    let items;
    try {
      items = (await api(`/runs/${id}/firings`)).items;
    } catch (e) {
      if (!(e instanceof APIError && (e.status === 404 || e.status === 501))) clear(firingsBox, errorPanel(e));
      return;
    }
    const rows = items.flatMap((f) => f.deliveries.map((d) => ({ f, d })));
    const key = JSON.stringify(rows);
    if (key !== firingsShown) {
      firingsShown = key;
      firingsPanel.hidden = !items.length;
      clear(firingsBox, items.length ? h('div', { class: 'table-wrap' }, h('table', {},
        h('thead', {}, h('tr', {}, ['Automation', 'Trigger', 'Action', 'Status', 'Code', 'Attempts', 'Fired'].map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', {}, rows.map(({ f, d }) => h('tr', { dataset: { firing: f.firing_id, automation: f.automation_name, status: d.status } },
          h('td', {}, h('a', { href: '/automations' }, f.automation_name || shortID(f.automation_id))),
          h('td', { class: 'mono small' }, f.trigger_type),
          h('td', { class: 'small' }, `${d.action_type} → ${d.target}`),
          h('td', {}, deliveryBadge(d.status), d.last_error ? h('div', { class: 'small muted' }, d.last_error) : null),
          h('td', { class: 'num' }, statusCode(d.last_status_code)),
          h('td', { class: 'num' }, String(d.attempts)),
          h('td', { class: 'nowrap' }, timeEl(f.created_at))))))) : null);
    }
    const pending = rows.some(({ d }) => d.status === 'pending');
    if (pending && !firingsPoll) firingsPoll = setInterval(loadFirings, 3000);
    if (!pending && firingsPoll) { clearInterval(firingsPoll); firingsPoll = null; }
  }
  const reloadFirings = debounce(loadFirings, 300, 1500);

  // ---- history ----------------------------------------------------------

  let historySeq = 0;
  async function showAt(k) {
    if (k !== null && k >= events.length) k = null;
    const seq = ++historySeq;
    if (k === null) {
      at = null;
      historic = null;
      renderAll();
      return;
    }
    try {
      const hist = await api(`/runs/${id}/history?at=${encodeURIComponent(events[k - 1].cursor || events[k - 1].position)}`);
      if (seq !== historySeq) return;
      hist.run.task_runs = hist.run.task_runs || []; // none before the task runs were created
      at = k;
      historic = hist;
      slider.value = String(k);
      renderGraphPart();
      renderTasks();
      renderTimelinePart();
      renderAudit();
      renderHistoryControls();
    } catch (e) {
      notice(actionMsg, `Could not load the history: ${e.describe ? e.describe() : e.message}`, 'error');
    }
  }
  let slid = null; // the position asked for, kept from the input event: a live refresh may move the slider meanwhile
  const onSlide = debounce(() => { const k = slid; slid = null; showAt(k); }, 120, 400);
  slider.addEventListener('input', () => { slid = Number(slider.value); onSlide(); });
  liveBtn.addEventListener('click', () => showAt(null));

  // ---- actions ----------------------------------------------------------

  async function act(button, path, done) {
    button.disabled = true;
    notice(actionMsg, `${button.textContent}…`, 'info');
    try {
      const r = await api(`/runs/${id}/${path}`, { method: 'POST' });
      run = r;
      notice(actionMsg, `${done}: the run is now ${stateLabel(r.state)}.`, 'ok');
      if (at === null) {
        renderDetails();
        renderTasks();
      }
      refresh();
    } catch (e) {
      notice(actionMsg, `${button.textContent} failed — ${e instanceof APIError ? e.describe() : e.message}`, 'error');
    } finally {
      renderHeader();
    }
  }
  cancelBtn.addEventListener('click', () => act(cancelBtn, 'cancel', 'Cancel requested'));
  retryBtn.addEventListener('click', () => act(retryBtn, 'retry', 'Retry started'));

  // ---- logs -------------------------------------------------------------

  const lines = [];
  const seen = new Set();
  const taskNames = () => new Map((run.task_runs || []).map((t) => [t.id, t.task_name]));

  function addLines(list) {
    let added = false;
    for (const l of list) {
      if (!l || typeof l !== 'object' || l.message === undefined) continue;
      const key = l.id !== undefined ? `id:${l.id}` : `${l.timestamp}|${l.task_run_id}|${l.stream}|${l.message}`;
      if (seen.has(key)) continue;
      seen.add(key);
      lines.push(l);
      added = true;
    }
    if (lines.length > MAX_LOG_LINES) lines.splice(0, lines.length - MAX_LOG_LINES);
    if (added) renderLogs();
  }

  function renderLogs() {
    const names = taskNames();
    const shown = lines.filter((l) => !selectedTask || (l.task_name || names.get(l.task_run_id)) === selectedTask);
    const follow = logFollow.checked;
    clear(logBox, shown.length ? shown.map((l) => {
      const task = l.task_name || names.get(l.task_run_id) || shortID(l.task_run_id);
      return h('div', { class: ['line', l.stream], dataset: { task } },
        h('span', { class: 'ts' }, fmtClock(l.timestamp)),
        h('span', { class: 'task', title: task }, task),
        h('span', { class: 'msg' }, l.level && l.stream === 'system' ? `${l.message}` : l.message));
    }) : h('div', { class: 'empty' }, emptyLogs()));
    if (follow) logBox.scrollTop = logBox.scrollHeight;
  }
  // a Go handler that logs nothing and succeeds leaves no lines: its
  // attempts are in the timeline
  function emptyLogs() {
    const yet = logsDone || TERMINAL.has(run.state.type) ? '' : ' yet';
    return selectedTask ? `No log lines from ${selectedTask}${yet}.` : `No log lines${yet}.`;
  }
  logFilter.addEventListener('change', () => {
    selectedTask = logFilter.value;
    renderLogs();
    renderGraphPart();
  });

  // a run that has not started has no logs: its stream opens when it starts
  let logsStarted = false;
  function maybeStartLogs() {
    if (logsStarted) return;
    if (run.state.type === 'SCHEDULED' || run.state.type === 'PENDING') {
      logStatus.textContent = 'Waiting for the run to start';
      return;
    }
    logsStarted = true;
    startLogs();
  }

  let logsDone = false; // the log stream said the run ended
  function logsEnded() {
    logsDone = true;
    logStatus.textContent = 'The run ended; all its logs are shown.';
    if (!lines.length) renderLogs(); // no longer "yet"
  }

  let pollLogs = null;
  function startLogs() {
    openStream(`/api/v1/runs/${id}/logs?follow=true`, {
      onOpen() { logStatus.textContent = 'Streaming live'; },
      onEvent(ev) {
        if (['end', 'done', 'eof', 'close'].includes(ev.event)) {
          logsEnded();
          return;
        }
        if (!ev.data) return;
        let d;
        try { d = JSON.parse(ev.data); } catch { return; }
        if (ev.event === 'error') {
          logStatus.textContent = `The log stream failed: ${(d.error && d.error.message) || ev.data}`;
          return;
        }
        addLines(Array.isArray(d) ? d : d && Array.isArray(d.items) ? d.items : [d]);
      },
      onJSON(body) {
        addLines(Array.isArray(body) ? body : (body && body.items) || []);
        logStatus.textContent = 'Refreshed every 2 s';
        if (!pollLogs) {
          pollLogs = setInterval(async () => {
            try {
              const b = await api(`/runs/${id}/logs`);
              addLines(Array.isArray(b) ? b : (b && b.items) || []);
            } catch { /* keep what we have */ }
            if (TERMINAL.has(run.state.type)) { clearInterval(pollLogs); logsEnded(); }
          }, 2000);
        }
      },
      onError(err) {
        const text = err.status === 404 || err.status === 405
          ? `Logs are not available on this server (GET /api/v1/runs/{id}/logs answered ${err.status}).`
          : `Logs are not available: ${err.describe()}`;
        logStatus.textContent = '';
        clear(logBox, h('div', { class: 'empty', id: 'logs-unavailable' }, text));
      },
      onClose() { logsEnded(); },
      reconnect: () => !TERMINAL.has(run.state.type),
    });
  }

  // ---- live updates -----------------------------------------------------

  const refresh = debounce(async () => {
    try {
      const [r, g, ev] = await Promise.all([api(`/runs/${id}`), api(`/runs/${id}/graph`), api(`/runs/${id}/events`).then((p) => p.items)]);
      run = r;
      graph = g;
      events = ev;
    } catch { return; }
    maybeStartLogs();
    if (at === null) renderAll();
    else {
      renderHeader();
      renderDetails();
      renderAudit();
      renderHistoryControls();
    }
  }, 120, 500);

  onLive((m) => {
    if (m.type === 'AutomationFired') { reloadFirings(); return; }
    if (m.type === 'ready' || m.type === 'reset') { refresh(); reloadFirings(); return; }
    const ours = m.stream_id === id || m.flow_run_id === id ||
      (run.task_runs || []).some((t) => t.id === m.stream_id || t.child_flow_run_id === m.stream_id);
    if (ours) refresh();
  });

  // a running run's duration and open timeline bars grow between events
  setInterval(() => {
    if (at !== null || TERMINAL.has(run.state.type) || !run.started_at) return;
    const d = document.getElementById('run-duration');
    if (d) d.textContent = fmtDuration(runDuration(run));
    renderTimelinePart();
  }, 1000);

  renderAll();
  renderLogs();
  maybeStartLogs();
  loadFirings();
}
