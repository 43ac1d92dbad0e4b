// The timeline of a flow run: one row per task run, one bar per attempt,
// over time, computed from the run's audit trail (its events).

import { s, h, fmtDuration, stateLabel } from './dom.js';

// LABEL_CHAR is a generous width of one character of a bar label (11 px,
// semi-bold), so that a label judged to fit does.
const LABEL_CHAR = 7.2;

const ENDS = new Set(['TaskRunCompleted', 'TaskRunFailed', 'TaskRunRetryScheduled', 'TaskRunCancelled']);

// attemptsOf reads task attempts from events: [{task, attempt, start, end,
// state, worker}] (end null while running), and retry waits.
export function attemptsOf(events) {
  const open = new Map();
  const attempts = [];
  const waits = [];
  const tasks = [];
  for (const e of events) {
    if (e.stream_type !== 'task_run') continue;
    const task = e.task_name || e.stream_id;
    if (e.type === 'TaskRunCreated' && !tasks.includes(task)) tasks.push(task);
    const data = e.data || {};
    if (e.type === 'TaskRunStarted') {
      const w = waits.find((x) => x.task === task && x.end === null);
      if (w) w.end = e.recorded_at;
      const a = { task, attempt: data.attempt || 1, start: e.recorded_at, end: null, state: { type: 'RUNNING', name: 'Running' }, worker: data.worker || '' };
      open.set(e.stream_id, a);
      attempts.push(a);
    } else if (ENDS.has(e.type)) {
      const a = open.get(e.stream_id);
      if (a) {
        a.end = e.recorded_at;
        a.state = e.to_state || a.state;
        if (e.type === 'TaskRunRetryScheduled') a.state = { type: 'FAILED', name: 'Failed', message: data.error };
        if (data.error) a.error = data.error;
        open.delete(e.stream_id);
      }
      if (e.type === 'TaskRunRetryScheduled') waits.push({ task, start: e.recorded_at, end: null, until: data.retry_at });
    } else if (e.type === 'TaskRunCached') {
      attempts.push({ task, attempt: 0, start: e.recorded_at, end: e.recorded_at, state: e.to_state || { type: 'COMPLETED', name: 'Cached' } });
    }
  }
  for (const a of attempts) if (!tasks.includes(a.task)) tasks.push(a.task);
  return { tasks, attempts, waits };
}

// renderTimeline draws the attempts; now is the end of open bars (a Date).
export function renderTimeline(events, now = new Date()) {
  const { tasks, attempts, waits } = attemptsOf(events);
  if (!attempts.length) return h('p', { class: 'muted' }, 'No task has started yet.');
  const t = (iso) => (iso ? new Date(iso).getTime() : now.getTime());
  let t0 = Math.min(...attempts.map((a) => t(a.start)));
  let t1 = Math.max(...attempts.map((a) => t(a.end)), ...waits.map((w) => (w.end ? t(w.end) : Math.min(now.getTime(), t(w.until)))));
  if (t1 - t0 < 1000) t1 = t0 + 1000;
  const LABEL = 170;
  const WIDTH = 1000;
  const ROW = 28;
  const TOP = 22;
  const plot = WIDTH - LABEL - 16;
  const x = (ms) => LABEL + ((ms - t0) / (t1 - t0)) * plot;
  const height = TOP + tasks.length * ROW + 6;
  const svg = s('svg', {
    class: 'timeline', viewBox: `0 0 ${WIDTH} ${height}`, preserveAspectRatio: 'xMinYMin meet', role: 'img',
    'aria-label': `Timeline: ${attempts.length} attempts of ${tasks.length} tasks over ${fmtDuration(t1 - t0)}`,
  });
  const axis = s('g', { class: 'axis' });
  for (let i = 0; i <= 5; i++) {
    const ms = t0 + ((t1 - t0) * i) / 5;
    const xx = x(ms);
    axis.append(s('line', { x1: xx, x2: xx, y1: TOP - 4, y2: height }),
      s('text', { x: xx, y: 12, 'text-anchor': i === 0 ? 'start' : i === 5 ? 'end' : 'middle' }, '+' + fmtDuration(ms - t0)));
  }
  svg.append(axis);
  tasks.forEach((task, row) => {
    const y = TOP + row * ROW;
    svg.append(s('text', { x: 0, y: y + ROW / 2 + 4 }, task.length > 24 ? task.slice(0, 23) + '…' : task));
    for (const w of waits.filter((w) => w.task === task)) {
      const end = w.end ? t(w.end) : Math.min(now.getTime(), t(w.until));
      svg.append(s('rect', {
        class: 'fill-SCHEDULED', x: x(t(w.start)), y: y + ROW / 2 - 2, width: Math.max(1, x(end) - x(t(w.start))), height: 4, opacity: 0.7,
      }, s('title', {}, `${task}: waiting to retry`)));
    }
    for (const a of attempts.filter((a) => a.task === task)) {
      const type = a.state.type;
      const x1 = x(t(a.start));
      const width = Math.max(3, x(t(a.end)) - x1);
      const label = a.attempt ? `attempt ${a.attempt}` : 'cached';
      svg.append(s('rect', {
        class: ['attempt', `fill-${type}`], x: x1, y: y + 5, width, height: ROW - 10, rx: 3,
        dataset: { task, attempt: a.attempt, state: type },
      }, s('title', {}, `${task} ${label}: ${stateLabel(a.state)}, ${fmtDuration(t(a.end) - t(a.start))}${a.end ? '' : ' so far'}${a.worker ? ' on ' + a.worker : ''}${a.error ? '\n' + a.error : ''}`)));
      // The label goes in the bar when it fits there, else after the bar (or
      // before it, at the right edge), never across the bar's end.
      const text = `#${a.attempt || '-'} ${stateLabel(a.state)}`;
      const textWidth = text.length * LABEL_CHAR;
      const ly = y + ROW / 2 + 4;
      let at = null;
      if (textWidth + 12 <= width) {
        at = { x: x1 + 6, y: ly, class: 'bar-label' };
      } else if (x1 + width + 4 + textWidth <= WIDTH) {
        at = { x: x1 + width + 4, y: ly, class: ['bar-label', 'outside'] };
      } else if (x1 - 4 - textWidth >= LABEL) {
        at = { x: x1 - 4, y: ly, 'text-anchor': 'end', class: ['bar-label', 'outside'] };
      }
      if (at) svg.append(s('text', { ...at, dataset: { task, attempt: a.attempt } }, text));
    }
  });
  return svg;
}
