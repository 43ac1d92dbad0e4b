// Outputs and metrics of a run: the table of the files its tasks left, with
// a download link and a preview (markdown rendered from a safe subset, CSV
// as a table of its first rows, images as <img>), and its metrics.
//
// Nothing a task wrote is ever parsed as HTML: the markdown renderer builds
// DOM nodes whose text is set as text, links only to http and https.

import { api } from './api.js';
import { h, clear } from './dom.js';

const PREVIEW_BYTES = 256 << 10;
const CSV_ROWS = 20;
const IMAGE_TYPES = new Set(['image/png', 'image/jpeg', 'image/gif', 'image/svg+xml', 'image/webp']);

// outputURL is the API path of one output: each element of its name escaped.
export function outputURL(taskRunID, name) {
  return `/api/v1/task-runs/${taskRunID}/outputs/${name.split('/').map(encodeURIComponent).join('/')}`;
}

export function fmtBytes(n) {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let i = 0;
  for (; v >= 1024 && i < units.length - 1; i++) v /= 1024;
  return `${v.toFixed(1)} ${units[i]}`;
}

// fmtMetric writes a metric value with up to 6 significant digits.
export function fmtMetric(v) {
  if (typeof v !== 'number' || !Number.isFinite(v)) return '—';
  if (v !== 0 && (Math.abs(v) >= 1e6 || Math.abs(v) < 1e-4)) return v.toExponential(3);
  return String(Number(v.toPrecision(6)));
}

// previewKind says how an output is shown: markdown, csv, image or none.
export function previewKind(o) {
  const type = (o.media_type || '').split(';')[0].trim().toLowerCase();
  const ext = (o.name.match(/\.([A-Za-z0-9]+)$/) || ['', ''])[1].toLowerCase();
  if (IMAGE_TYPES.has(type) || (!type && ['png', 'jpg', 'jpeg', 'gif', 'svg'].includes(ext))) return 'image';
  if (type === 'text/markdown' || type === 'text/x-markdown' || ext === 'md' || ext === 'markdown') return 'markdown';
  if (type === 'text/csv' || ext === 'csv') return 'csv';
  return 'none';
}

// runOutputs lists the outputs of a run's task runs, in the flow's order.
export function runOutputs(run) {
  const out = [];
  for (const t of run.task_runs || []) {
    for (const o of t.outputs || []) out.push({ ...o, task_name: t.task_name, task_run_id: t.id, download_url: outputURL(t.id, o.name) });
  }
  return out;
}

// outputsTable shows outputs, each with a download link and, when it can
// be previewed, a button that shows it in previewBox.
export function outputsTable(outputs, previewBox) {
  if (!outputs.length) return h('p', { class: 'empty', id: 'no-outputs' }, 'No outputs: the tasks wrote no files to ORDO_OUTPUT_DIR.');
  return h('div', { class: 'table-wrap' }, h('table', { id: 'outputs-table' },
    h('thead', {}, h('tr', {}, ['Task', 'Name', 'Size', 'Type', ''].map((c) => h('th', { scope: 'col' }, c)))),
    h('tbody', {}, outputs.map((o) => {
      const kind = previewKind(o);
      return h('tr', { dataset: { task: o.task_name, output: o.name, kind } },
        h('td', {}, o.task_name),
        h('td', { class: 'mono small' }, o.name),
        h('td', { class: 'num nowrap' }, fmtBytes(o.size)),
        h('td', { class: 'small' }, o.media_type || '—'),
        h('td', { class: 'nowrap' },
          kind !== 'none' ? [h('button', {
            type: 'button', class: 'link preview-output', 'aria-label': `Preview ${o.name} of ${o.task_name}`,
            onclick: () => showPreview(o, previewBox),
          }, 'Preview'), ' · '] : null,
          h('a', { href: `${o.download_url}?download=1`, class: 'download-output', download: o.name.split('/').pop() }, 'Download')));
    }))));
}

// showPreview fills box with a preview of the output.
export async function showPreview(o, box) {
  const kind = previewKind(o);
  const head = h('div', { class: 'panel-head' }, h('h3', {}, `${o.task_name} / ${o.name}`), h('span', { class: 'spacer' }),
    h('button', { type: 'button', class: 'link', onclick: () => clear(box) }, 'Close'));
  box.dataset.output = o.name;
  box.dataset.kind = kind;
  if (kind === 'image') {
    // an image never runs script, an SVG included
    clear(box, head, h('img', { src: o.download_url, alt: `${o.name} of ${o.task_name}`, class: 'output-image' }));
    return;
  }
  clear(box, head, h('p', { class: 'muted' }, 'Loading…'));
  let text;
  let partial = false;
  try {
    const res = await api(o.download_url.replace(/^\/api\/v1/, ''), { raw: true, headers: { Range: `bytes=0-${PREVIEW_BYTES - 1}`, Accept: '*/*' } });
    text = await res.text();
    partial = res.status === 206 && o.size > PREVIEW_BYTES;
  } catch (e) {
    clear(box, head, h('p', { class: 'notice error' }, `Cannot load ${o.name}: ${e.describe ? e.describe() : e.message}`));
    return;
  }
  const note = partial ? h('p', { class: 'muted small' }, `The first ${fmtBytes(PREVIEW_BYTES)} of ${fmtBytes(o.size)}.`) : null;
  if (kind === 'markdown') {
    clear(box, head, note, h('div', { class: 'markdown' }, renderMarkdown(text)));
  } else {
    const rows = parseCSV(text, partial).slice(0, CSV_ROWS + 1);
    clear(box, head, note, csvTable(rows), h('p', { class: 'muted small' }, `The first ${Math.max(0, rows.length - 1)} rows.`));
  }
}

function csvTable(rows) {
  if (!rows.length) return h('p', { class: 'empty' }, 'Empty file.');
  const [header, ...body] = rows;
  return h('div', { class: 'table-wrap' }, h('table', { class: 'csv' },
    h('thead', {}, h('tr', {}, header.map((c) => h('th', { scope: 'col' }, c)))),
    h('tbody', {}, body.map((r) => h('tr', {}, r.map((c) => h('td', {}, c)))))));
}

// parseCSV reads RFC 4180 CSV; when truncated, the last (partial) record
// is dropped.
export function parseCSV(text, truncated = false) {
  const rows = [];
  let row = [];
  let field = '';
  let quoted = false;
  let i = 0;
  for (; i < text.length; i++) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') { field += '"'; i++; } else if (c === '"') quoted = false;
      else field += c;
    } else if (c === '"' && field === '') quoted = true;
    else if (c === ',') { row.push(field); field = ''; } else if (c === '\n' || c === '\r') {
      if (c === '\r' && text[i + 1] === '\n') i++;
      row.push(field);
      rows.push(row);
      row = [];
      field = '';
    } else field += c;
  }
  if (!truncated && (field !== '' || row.length)) {
    row.push(field);
    rows.push(row);
  }
  return rows;
}

// ---- markdown ------------------------------------------------------------

// safeHref is url when it is an absolute http or https URL, else null.
export function safeHref(url) {
  if (!/^https?:\/\//i.test(url)) return null;
  try {
    const u = new URL(url);
    return u.protocol === 'http:' || u.protocol === 'https:' ? u.href : null;
  } catch { return null; }
}

const INLINE = /(`+)([\s\S]*?)\1|\[([^\]]*)\]\(([^()\s]*)(?:\s+"[^"]*")?\)|\*\*(?=\S)([\s\S]*?\S)\*\*|__(?=\S)([\s\S]*?\S)__|\*(?=[^\s*])([^*]*?[^\s*])?\*|(?<![A-Za-z0-9])_(?=[^\s_])([^_]*?[^\s_])?_(?![A-Za-z0-9])/g;

// inline renders the spans of one block: code, links, strong, emphasis;
// everything else is text.
function inline(text) {
  const out = [];
  let last = 0;
  for (const m of text.matchAll(INLINE)) {
    if (m.index > last) out.push(text.slice(last, m.index));
    last = m.index + m[0].length;
    if (m[1] !== undefined) out.push(h('code', {}, m[2]));
    else if (m[4] !== undefined) {
      const href = safeHref(m[4]);
      out.push(href ? h('a', { href, rel: 'noopener noreferrer nofollow', target: '_blank' }, inline(m[3])) : h('span', { class: 'unsafe-link', title: m[4] }, inline(m[3])));
    } else if (m[5] !== undefined || m[6] !== undefined) out.push(h('strong', {}, inline(m[5] ?? m[6])));
    else out.push(h('em', {}, inline(m[0].slice(1, -1))));
  }
  if (last < text.length) out.push(text.slice(last));
  return out;
}

const TABLE_SEP = /^\s*\|?\s*:?-{1,}:?\s*(\|\s*:?-{1,}:?\s*)*\|?\s*$/;
const splitRow = (line) => line.trim().replace(/^\|/, '').replace(/\|$/, '').split('|').map((c) => c.trim());

// renderMarkdown renders a safe subset of markdown as DOM nodes: headings,
// paragraphs, lists, block quotes, code, rules, tables, and the inline
// spans above. Raw HTML is shown as text.
export function renderMarkdown(src) {
  const lines = src.replace(/\r\n?/g, '\n').split('\n');
  const out = [];
  let para = [];
  const flush = () => {
    if (para.length) out.push(h('p', {}, inline(para.join(' '))));
    para = [];
  };
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    let m;
    if ((m = line.match(/^\s*(```|~~~)(.*)$/))) {
      flush();
      const fence = m[1];
      const code = [];
      for (i++; i < lines.length && !lines[i].trim().startsWith(fence); i++) code.push(lines[i]);
      out.push(h('pre', {}, h('code', {}, code.join('\n'))));
    } else if ((m = line.match(/^(#{1,6})\s+(.*?)\s*#*\s*$/))) {
      flush();
      out.push(h(`h${m[1].length}`, {}, inline(m[2])));
    } else if (/^\s*([-*_])(\s*\1){2,}\s*$/.test(line)) {
      flush();
      out.push(h('hr', {}));
    } else if (line.includes('|') && i + 1 < lines.length && TABLE_SEP.test(lines[i + 1]) && lines[i + 1].includes('-')) {
      flush();
      const header = splitRow(line);
      const rows = [];
      for (i += 2; i < lines.length && lines[i].includes('|') && lines[i].trim(); i++) rows.push(splitRow(lines[i]));
      i--;
      out.push(h('div', { class: 'table-wrap' }, h('table', {},
        h('thead', {}, h('tr', {}, header.map((c) => h('th', { scope: 'col' }, inline(c))))),
        h('tbody', {}, rows.map((r) => h('tr', {}, header.map((_, k) => h('td', {}, inline(r[k] || '')))))))));
    } else if ((m = line.match(/^\s*([-*+]|\d+[.)])\s+(.*)$/))) {
      flush();
      const ordered = /\d/.test(m[1]);
      const items = [];
      for (; i < lines.length; i++) {
        const li = lines[i].match(/^\s*([-*+]|\d+[.)])\s+(.*)$/);
        if (li && /\d/.test(li[1]) === ordered) items.push(li[2]);
        else if (lines[i].trim() && /^\s{2,}/.test(lines[i]) && items.length) items[items.length - 1] += ' ' + lines[i].trim();
        else break;
      }
      i--;
      out.push(h(ordered ? 'ol' : 'ul', {}, items.map((t) => h('li', {}, inline(t)))));
    } else if ((m = line.match(/^\s*>\s?(.*)$/))) {
      flush();
      const quote = [m[1]];
      for (i++; i < lines.length && (m = lines[i].match(/^\s*>\s?(.*)$/)); i++) quote.push(m[1]);
      i--;
      out.push(h('blockquote', {}, renderMarkdown(quote.join('\n'))));
    } else if (!line.trim()) {
      flush();
    } else {
      para.push(line.trim());
    }
  }
  flush();
  return out;
}

// ---- metrics -------------------------------------------------------------

// metricsTable shows a run's metrics, each with the task that reported the
// value shown (the last to complete, as the run's union says).
export function metricsTable(run) {
  const names = Object.keys(run.metrics || {}).sort();
  if (!names.length) return h('p', { class: 'empty', id: 'no-metrics' }, 'No metrics: the tasks wrote none to ORDO_METRICS_PATH.');
  const by = {};
  const done = (run.task_runs || []).filter((t) => t.ended_at && t.metrics).sort((a, b) => new Date(a.ended_at) - new Date(b.ended_at));
  for (const t of done) for (const k of Object.keys(t.metrics)) by[k] = t.task_name;
  return h('div', { class: 'table-wrap' }, h('table', { id: 'metrics-table' },
    h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Metric'), h('th', { scope: 'col', class: 'num' }, 'Value'), h('th', { scope: 'col' }, 'Task'))),
    h('tbody', {}, names.map((k) => h('tr', { dataset: { metric: k } },
      h('td', {}, k), h('td', { class: 'num mono' }, fmtMetric(run.metrics[k])), h('td', { class: 'muted' }, by[k] || '—'))))));
}
