// Server-Sent Events over fetch rather than EventSource: it sends the
// Authorization header, sees the status of the answer (a 404 or 501 is
// reported, not retried forever) and resumes with Last-Event-ID.

import { authHeaders, errorOf, refused, token } from './api.js';

// openStream reads an event stream at url. Callbacks:
//   onOpen()                        the server answered 200
//   onEvent({event, data, id})      one event; data is the raw text
//   onJSON(body)                    the server answered JSON instead of a stream
//   onError(APIError)               the server refused (no retry)
//   onClose()                       the stream ended and will not be reopened
//   onState('live'|'reconnecting')  connection state, for indicators
// reconnect(): whether to reopen after the stream ends (default: always).
// It returns {close()}.
export function openStream(url, opts = {}) {
  const ctrl = new AbortController();
  let lastId = opts.lastEventId || '';
  let retry = 2000;
  let closed = false;

  const run = async () => {
    let failures = 0;
    while (!closed) {
      let res;
      const sent = token();
      try {
        const headers = { Accept: 'text/event-stream', ...authHeaders() };
        if (lastId) headers['Last-Event-ID'] = lastId;
        res = await fetch(url, { headers, signal: ctrl.signal, cache: 'no-store' });
      } catch (e) {
        if (closed || e.name === 'AbortError') return;
        failures++;
        opts.onState?.('reconnecting');
        await sleep(Math.min(retry * failures, 15000));
        continue;
      }
      if (res.status === 401) {
        const err = await errorOf(res);
        await refused(sent, err.message);
        continue;
      }
      if (!res.ok) {
        const err = await errorOf(res);
        if (res.status >= 500 && res.status !== 501 && res.status !== 503 && failures < 5) {
          failures++;
          opts.onState?.('reconnecting');
          await sleep(retry * failures);
          continue;
        }
        closed = true;
        opts.onError?.(err);
        return;
      }
      const type = res.headers.get('Content-Type') || '';
      if (!type.includes('text/event-stream')) {
        let body = null;
        try { body = await res.json(); } catch { /* ignore */ }
        closed = true;
        opts.onJSON?.(body);
        return;
      }
      failures = 0;
      opts.onState?.('live');
      opts.onOpen?.();
      try {
        await readEvents(res.body, (ev) => {
          if (ev.id !== undefined) lastId = ev.id;
          if (ev.retry) retry = ev.retry;
          if (ev.data !== undefined || ev.event) opts.onEvent?.(ev);
        });
      } catch (e) {
        if (closed || e.name === 'AbortError') return;
      }
      if (closed) return;
      if (opts.reconnect && !opts.reconnect()) {
        closed = true;
        opts.onClose?.();
        return;
      }
      opts.onState?.('reconnecting');
      await sleep(retry);
    }
  };
  run();
  return {
    close() {
      closed = true;
      ctrl.abort();
    },
  };
}

function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

// readEvents parses the text/event-stream format from a body stream.
async function readEvents(body, dispatch) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  let ev = {};
  let data = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += decoder.decode(value, { stream: true });
    let i;
    while ((i = buf.search(/\r\n|\r|\n/)) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + (buf[i] === '\r' && buf[i + 1] === '\n' ? 2 : 1));
      if (line === '') {
        if (data.length) ev.data = data.join('\n');
        if (ev.data !== undefined || ev.event || ev.id !== undefined || ev.retry) dispatch(ev);
        ev = {};
        data = [];
        continue;
      }
      if (line.startsWith(':')) continue;
      const c = line.indexOf(':');
      const field = c < 0 ? line : line.slice(0, c);
      let val = c < 0 ? '' : line.slice(c + 1);
      if (val.startsWith(' ')) val = val.slice(1);
      if (field === 'data') data.push(val);
      else if (field === 'event') ev.event = val;
      else if (field === 'id') ev.id = val;
      else if (field === 'retry' && /^\d+$/.test(val)) ev.retry = Number(val);
    }
  }
}
