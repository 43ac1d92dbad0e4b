// Small DOM helpers, state badges and formatting shared by the pages.

const SVGNS = 'http://www.w3.org/2000/svg';

function build(el, attrs, children) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.setAttribute('class', Array.isArray(v) ? v.filter(Boolean).join(' ') : v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k === 'text') el.textContent = v;
    else if (k === 'value' && 'value' in el) el.value = v;
    else if (k === 'checked' || k === 'selected' || k === 'disabled') el[k] = !!v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

// h makes an HTML element: h('a', {href: '/'}, 'text', child...).
export function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

// s makes an SVG element.
export function s(tag, attrs, ...children) {
  return build(document.createElementNS(SVGNS, tag), attrs, children);
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

// The state types, in lifecycle order.
export const STATE_TYPES = ['SCHEDULED', 'PENDING', 'RUNNING', 'COMPLETED', 'FAILED', 'CANCELLING', 'CANCELLED', 'CRASHED', 'PAUSED'];
export const TERMINAL = new Set(['COMPLETED', 'FAILED', 'CANCELLED', 'CRASHED']);

function title(s) {
  return s ? s.charAt(0) + s.slice(1).toLowerCase() : '';
}

// stateLabel is the text a state is shown with: its name (Late, Cached,
// Retrying) when it refines the type, else the type.
export function stateLabel(st) {
  if (!st || !st.type) return 'Unknown';
  const name = st.name || '';
  if (!name || name.toLowerCase() === st.type.toLowerCase()) return st.type;
  return `${st.type} · ${name}`;
}

// badge shows a state; the state's name is always written.
export function badge(st) {
  const type = (st && st.type) || 'UNKNOWN';
  const label = stateLabel(st);
  return h('span', {
    class: `badge state-${type}`,
    dataset: { state: type, stateName: (st && st.name) || '' },
    title: st && st.message ? `${label}: ${st.message}` : label,
  }, label);
}

export function tags(list) {
  return (list || []).map((t) => h('span', { class: 'tag' }, t));
}

const dateTime = new Intl.DateTimeFormat(undefined, { year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit' });
const timeOnly = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23' });

export function fmtTime(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  return isNaN(d) ? iso : dateTime.format(d);
}

export function fmtClock(iso) {
  const d = new Date(iso);
  if (isNaN(d)) return '';
  return timeOnly.format(d) + '.' + String(d.getMilliseconds()).padStart(3, '0');
}

// timeEl shows a time with the exact ISO value as a tooltip.
export function timeEl(iso) {
  if (!iso) return h('span', { class: 'muted' }, '—');
  return h('time', { datetime: iso, title: iso }, fmtTime(iso));
}

// fmtDuration shows a duration in milliseconds: 850 ms, 2.4 s, 3 min 5 s, 2 h 10 min.
export function fmtDuration(ms) {
  if (ms === null || ms === undefined || isNaN(ms)) return '—';
  if (ms < 0) ms = 0;
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const sec = ms / 1000;
  if (sec < 60) return `${sec < 10 ? sec.toFixed(1) : Math.round(sec)} s`;
  const m = Math.floor(sec / 60);
  if (m < 60) return `${m} min ${Math.round(sec - m * 60)} s`;
  const hr = Math.floor(m / 60);
  if (hr < 48) return `${hr} h ${m % 60} min`;
  return `${Math.floor(hr / 24)} d ${hr % 24} h`;
}

// runDuration is how long a run (or task run) ran: to its end, or to now.
export function runDuration(r) {
  if (!r || !r.started_at) return null;
  const end = r.ended_at ? new Date(r.ended_at) : new Date();
  return end - new Date(r.started_at);
}

// relTime says how far a time is from now: "in 4 min", "12 s ago".
export function relTime(iso) {
  if (!iso) return '—';
  const diff = new Date(iso) - Date.now();
  const text = fmtDuration(Math.abs(diff));
  return diff >= 0 ? `in ${text}` : `${text} ago`;
}

export function json(value) {
  return h('pre', { class: 'json' }, value === undefined || value === null ? 'null' : JSON.stringify(value, null, 2));
}

// toast shows a short message in the corner.
export function toast(text, kind = '') {
  const box = document.getElementById('toasts');
  const t = h('div', { class: ['toast', kind], role: kind === 'error' ? 'alert' : 'status' }, text);
  box.append(t);
  setTimeout(() => t.remove(), kind === 'error' ? 9000 : 4000);
}

// notice shows a message inline in el (role status or alert).
export function notice(el, text, kind = 'info') {
  el.className = `notice ${kind}`;
  el.setAttribute('role', kind === 'error' ? 'alert' : 'status');
  el.textContent = text;
}

// errorPanel shows why a page could not load.
export function errorPanel(err) {
  const text = err && err.describe ? err.describe() : String(err && err.message ? err.message : err);
  return h('div', { class: 'notice error', role: 'alert' }, text);
}

export function shortID(id) {
  return id ? String(id).slice(0, 8) : '';
}

// setTitle names the page in the tab.
export function setTitle(text) {
  document.title = `${text} · Ordo`;
}

// localInput turns an ISO time into a datetime-local input value, and back.
export function toLocalInput(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  if (isNaN(d)) return '';
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
}

export function fromLocalInput(v) {
  if (!v) return '';
  const d = new Date(v);
  return isNaN(d) ? '' : d.toISOString();
}
