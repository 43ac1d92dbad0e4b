// What the automation views share: a delivery's status badge and an
// action in words. Any action type is shown the same way (its type and its
// target), so that new types need nothing here.

import { h } from './dom.js';

const STATUS_CLASS = { delivered: 'ok', pending: 'warn', dead: 'state-FAILED' };

export function deliveryBadge(status) {
  return h('span', { class: `badge ${STATUS_CLASS[status] || 'plain'}`, dataset: { status } }, status || 'unknown');
}

// actionTarget is where an action goes: the first of the fields that name
// a target, else its other settings (never a secret's variable).
export function actionTarget(a) {
  for (const k of ['url', 'to', 'target', 'channel', 'deployment']) {
    const v = a && a[k];
    if (v !== undefined && v !== null && v !== '') return Array.isArray(v) ? v.join(', ') : String(v);
  }
  const rest = Object.entries(a || {}).filter(([k]) => k !== 'type' && !k.startsWith('secret'));
  return rest.length ? rest.map(([k, v]) => `${k}: ${typeof v === 'object' ? JSON.stringify(v) : v}`).join(', ') : '';
}

export function actionText(a) {
  const target = actionTarget(a);
  return target ? `${a.type} → ${target}` : a.type;
}

// statusCode shows an answer's HTTP status, or a dash when none came.
export function statusCode(code) {
  return code === null || code === undefined ? h('span', { class: 'muted' }, '—') : String(code);
}
