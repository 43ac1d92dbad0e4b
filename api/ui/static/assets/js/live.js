// Live updates for every page: messages {stream_id, stream_type, type,
// flow_run_id, position} from /ui/live, and {type: 'ready'} when the
// stream (re)starts, or {type: 'reset'} after a burst and once the read
// models have caught up with events they lacked when a page could have
// read them: then listeners reload what they show. When the server offers no live stream, listeners get
// 'reset' every few seconds.
//
// A browser opens at most six connections to one HTTP/1.1 server, so the
// tabs of one browser share one stream: the tab that holds the Web Lock
// "ordo-live" reads it and passes every message to the others on a
// BroadcastChannel; when that tab closes, another takes over.

import { openStream } from './sse.js';

const listeners = new Set();
let started = false;
let pollTimer = null;
// the checkpoint of the last event any tab read: a tab that takes the
// stream over resumes after it, so that no event falls between two leaders
let checkpoint = '';
const channel = 'BroadcastChannel' in window ? new BroadcastChannel('ordo-live') : null;

function setStatus(status, text) {
  const el = document.getElementById('live-status');
  if (!el) return;
  el.dataset.status = status;
  el.textContent = text;
}

function emit(msg) {
  for (const fn of listeners) {
    try { fn(msg); } catch (e) { console.error('live listener', e); }
  }
}

// publish hands a message to this tab's listeners and to the other tabs.
function publish(msg) {
  emit(msg);
  channel?.postMessage(msg);
}

const STATUS = { live: ['live', 'Live'], reconnecting: ['reconnecting', 'Reconnecting…'], polling: ['polling', 'Refreshing every 5 s'] };

function status(s) {
  setStatus(...STATUS[s]);
  channel?.postMessage({ type: 'status', status: s });
}

// lead reads the stream for every tab until it fails for good; the
// returned promise never resolves while it reads, which keeps the lock.
function lead() {
  return new Promise((resolve) => {
    openStream('/ui/live', {
      lastEventId: checkpoint,
      onState(s) { status(s === 'live' ? 'live' : 'reconnecting'); },
      onEvent(ev) {
        if (ev.id) {
          checkpoint = ev.id;
          channel?.postMessage({ type: 'checkpoint', id: ev.id });
        }
        if (ev.event === 'ready') {
          publish({ type: 'ready' });
          return;
        }
        if (!ev.data) return;
        try { publish(JSON.parse(ev.data)); } catch { /* not for us */ }
      },
      onError() { poll(); resolve(); },
      onJSON() { poll(); resolve(); },
    });
  });
}

function poll() {
  status('polling');
  if (!pollTimer) pollTimer = setInterval(() => emit({ type: 'reset' }), 5000);
}

function start() {
  started = true;
  if (channel) {
    channel.onmessage = (ev) => {
      const msg = ev.data;
      if (msg && msg.type === 'status') setStatus(...(STATUS[msg.status] || STATUS.live));
      else if (msg && msg.type === 'checkpoint') checkpoint = msg.id;
      else if (msg) emit(msg);
    };
  }
  if (channel && navigator.locks) {
    setStatus('live', 'Live');
    // this tab reads the stream once it holds the lock; until then another tab does
    navigator.locks.request('ordo-live', () => lead());
    // events may have come between the page's first read and now
    setTimeout(() => emit({ type: 'ready' }), 0);
  } else {
    lead();
  }
}

// onLive adds a listener; it returns a function that removes it.
export function onLive(fn) {
  listeners.add(fn);
  if (!started) start();
  return () => listeners.delete(fn);
}

// debounce calls fn at most once per wait, after the calls stop coming
// for wait or after maxWait at the latest.
export function debounce(fn, wait = 150, maxWait = 600) {
  let t = null;
  let first = 0;
  return (...args) => {
    const now = Date.now();
    if (!t) first = now;
    clearTimeout(t);
    const delay = Math.max(0, Math.min(wait, first + maxWait - now));
    t = setTimeout(() => { t = null; fn(...args); }, delay);
  };
}
