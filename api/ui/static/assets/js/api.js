// The JSON API client: every request goes through api(). A 401 asks the
// user for a token (kept in localStorage), then the request is sent again.

const TOKEN_KEY = 'ordo.apiToken';

export class APIError extends Error {
  constructor(status, code, message, details = []) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details || [];
  }

  // describe is the error as a user reads it: status, code, message. The
  // server's message already names every detail; the details are listed
  // apart only when it does not.
  describe() {
    let s = this.status ? `${this.status} ${this.code}: ${this.message}` : this.message;
    for (const d of this.details) {
      const text = d && (d.field || d.message) ? `${d.field ? d.field + ': ' : ''}${d.message || ''}` : '';
      if (text && !String(this.message).includes(text)) s += `\n• ${text}`;
    }
    return s;
  }
}

export function token() {
  try { return localStorage.getItem(TOKEN_KEY) || ''; } catch { return ''; }
}

export function authHeaders() {
  const t = token();
  return t ? { Authorization: 'Bearer ' + t } : {};
}

// tokenCookies hands the token to what a browser loads without this code's
// requests: River UI's pages, and outputs shown as images or downloaded
// from a link. Only those paths receive it (SameSite=Strict).
export function tokenCookies(t = token()) {
  if (!t) return;
  const secure = location.protocol === 'https:' ? '; Secure' : '';
  for (const path of ['/riverui', '/api/v1/task-runs']) {
    document.cookie = `ordo_api_token=${t}; path=${path}; SameSite=Strict${secure}`;
  }
}

let asking = null;

// askToken shows the token dialog once, however many requests wait for it.
export function askToken(reason) {
  if (asking) return asking;
  const dialog = document.getElementById('token-dialog');
  const form = document.getElementById('token-form');
  const input = document.getElementById('token-input');
  document.getElementById('token-reason').textContent = reason || 'This server asks for an API token.';
  input.value = '';
  asking = new Promise((resolve) => {
    const done = (ev) => {
      ev.preventDefault();
      const t = input.value.trim();
      if (!t) return;
      try { localStorage.setItem(TOKEN_KEY, t); } catch { /* private mode: kept for this page only */ }
      tokenCookies(t);
      form.removeEventListener('submit', done);
      dialog.close();
      asking = null;
      resolve(t);
    };
    form.addEventListener('submit', done);
    dialog.addEventListener('cancel', (ev) => ev.preventDefault()); // a token is needed to go on
    if (!dialog.open) dialog.showModal();
    input.focus();
  });
  return asking;
}

// refused answers a 401 to a request sent with the token sent: when the
// token changed since (the user gave one while that request was under way),
// the request is only sent again; otherwise the user is asked for one.
export async function refused(sent, reason) {
  if (token() !== sent) return;
  await askToken(reason);
}

// errorOf reads the API's error envelope from a failed response.
export async function errorOf(res) {
  let body = null;
  try { body = await res.json(); } catch { /* not JSON */ }
  const e = (body && body.error) || {};
  return new APIError(res.status, e.code || String(res.status), e.message || res.statusText || `HTTP ${res.status}`, e.details);
}

// api sends a request to /api/v1 and returns the decoded JSON body (null for
// 204), or with raw the response itself. Errors are APIError; status 0 means
// the server was not reached.
export async function api(path, { method = 'GET', body, signal, headers: extra, raw } = {}) {
  for (let attempt = 0; ; attempt++) {
    const sent = token();
    const headers = { Accept: 'application/json', ...extra, ...authHeaders() };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let res;
    try {
      res = await fetch('/api/v1' + path, {
        method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (e) {
      if (e.name === 'AbortError') throw e;
      throw new APIError(0, 'network', `Cannot reach the server: ${e.message}`);
    }
    if (res.status === 401 && attempt < 5) {
      const err = await errorOf(res);
      await refused(sent, sent ? `The token was refused: ${err.message}` : `The server asks for an API token: ${err.message}`);
      continue;
    }
    if (!res.ok) throw await errorOf(res);
    if (raw) return res;
    if (res.status === 204) return null;
    const text = await res.text();
    return text ? JSON.parse(text) : null;
  }
}

// query builds a query string from an object, leaving out empty values.
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined || v === null || v === '') continue;
    q.set(k, String(v));
  }
  const s = q.toString();
  return s ? '?' + s : '';
}
