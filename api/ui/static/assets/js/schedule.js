// Schedules in words: {interval_seconds} and {cron, timezone} as a person
// would say them. Cron is the standard five fields (and @hourly & co).

const DAYS = ['Sunday', 'Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday'];
const MONTHS = ['January', 'February', 'March', 'April', 'May', 'June', 'July', 'August', 'September', 'October', 'November', 'December'];
const DAY_NAMES = { SUN: 0, MON: 1, TUE: 2, WED: 3, THU: 4, FRI: 5, SAT: 6 };
const MONTH_NAMES = { JAN: 1, FEB: 2, MAR: 3, APR: 4, MAY: 5, JUN: 6, JUL: 7, AUG: 8, SEP: 9, OCT: 10, NOV: 11, DEC: 12 };

const MACROS = {
  '@yearly': '0 0 1 1 *', '@annually': '0 0 1 1 *', '@monthly': '0 0 1 * *',
  '@weekly': '0 0 * * 0', '@daily': '0 0 * * *', '@midnight': '0 0 * * *', '@hourly': '0 * * * *',
};

function plural(n, unit) {
  return `${n} ${unit}${n === 1 ? '' : 's'}`;
}

// describeInterval: 300 -> "every 5 minutes", 5400 -> "every 1 hour 30 minutes".
export function describeInterval(seconds) {
  if (!(seconds > 0)) return 'never';
  if (seconds < 1 || !Number.isInteger(seconds)) {
    if (seconds < 60) return `every ${+seconds.toFixed(3)} seconds`;
  }
  const units = [['day', 86400], ['hour', 3600], ['minute', 60], ['second', 1]];
  let rest = Math.round(seconds);
  const parts = [];
  for (const [name, size] of units) {
    const n = Math.floor(rest / size);
    if (n > 0) {
      parts.push(plural(n, name));
      rest -= n * size;
    }
  }
  if (parts.length === 1 && parts[0].startsWith('1 ')) return `every ${parts[0].slice(2)}`;
  return `every ${parts.join(' ')}`;
}

function pad(n) {
  return String(n).padStart(2, '0');
}

function list(items) {
  if (items.length <= 1) return items.join('');
  return items.slice(0, -1).join(', ') + ' and ' + items[items.length - 1];
}

// parseField reads one cron field into {any, step, values: [...], ranges: [[a,b]...]}.
function parseField(text, names) {
  const f = { any: false, step: 0, parts: [] };
  for (const raw of text.split(',')) {
    let [range, step] = raw.split('/');
    const value = (v) => {
      const up = v.toUpperCase();
      if (names && up in names) return names[up];
      if (!/^\d+$/.test(v)) throw new Error(`bad cron value ${v}`);
      return Number(v);
    };
    const part = { step: step ? Number(step) : 0 };
    if (range === '*' || range === '?') {
      part.any = true;
    } else if (range.includes('-')) {
      const [a, b] = range.split('-');
      part.from = value(a);
      part.to = value(b);
    } else {
      part.from = part.to = value(range);
      if (step) part.to = null; // "5/10": from 5 on, every 10
    }
    f.parts.push(part);
  }
  if (f.parts.length === 1 && f.parts[0].any) {
    f.any = !f.parts[0].step;
    f.step = f.parts[0].step;
  }
  return f;
}

function single(f) {
  return f.parts.length === 1 && !f.parts[0].any && !f.parts[0].step && f.parts[0].from === f.parts[0].to ? f.parts[0].from : null;
}

function describeParts(f, fmt) {
  return list(f.parts.map((p) => {
    if (p.any) return p.step ? `every ${p.step}` : 'every';
    if (p.step) return `every ${p.step} from ${fmt(p.from)}${p.to !== null && p.to !== undefined ? ' to ' + fmt(p.to) : ''}`;
    if (p.from === p.to) return fmt(p.from);
    return `${fmt(p.from)} to ${fmt(p.to)}`;
  }));
}

// describeCron: "*/5 * * * *" -> "every 5 minutes"; "30 2 * * 1-5" -> "at 02:30, Monday to Friday".
export function describeCron(expr) {
  let text = String(expr || '').trim();
  if (MACROS[text.toLowerCase()]) text = MACROS[text.toLowerCase()];
  const fields = text.split(/\s+/);
  if (fields.length !== 5) return `cron ${expr}`;
  let min, hour, dom, mon, dow;
  try {
    min = parseField(fields[0]);
    hour = parseField(fields[1]);
    dom = parseField(fields[2]);
    mon = parseField(fields[3], MONTH_NAMES);
    dow = parseField(fields[4], DAY_NAMES);
  } catch {
    return `cron ${expr}`;
  }
  const m1 = single(min);
  const h1 = single(hour);
  let when;
  if (m1 !== null && h1 !== null) {
    when = `at ${pad(h1)}:${pad(m1)}`;
  } else if (min.any && hour.any) {
    when = 'every minute';
  } else if (min.step && hour.any && min.parts[0].any) {
    when = `every ${plural(min.step, 'minute').replace(/^1 /, '')}`;
  } else if (m1 !== null && hour.any) {
    when = m1 === 0 ? 'every hour, on the hour' : `every hour at ${pad(m1)} minutes past`;
  } else if (m1 !== null && hour.step && hour.parts[0].any) {
    when = `every ${plural(hour.step, 'hour').replace(/^1 /, '')} at ${pad(m1)} minutes past`;
  } else {
    const minutes = min.any ? 'every minute' : min.step && min.parts[0].any ? `every ${plural(min.step, 'minute')}` : `at minute ${describeParts(min, String)}`;
    const hours = hour.any ? '' : hour.step && hour.parts[0].any ? ` of every ${plural(hour.step, 'hour')}` : ` during hour ${describeParts(hour, pad)}`;
    when = minutes + hours;
  }
  const days = [];
  if (!dom.any) days.push(`on day ${describeParts(dom, String)} of the month`);
  if (!dow.any) days.push(`on ${describeParts(dow, (d) => DAYS[d % 7])}`);
  let out = when;
  if (days.length) out += ', ' + days.join(' or ');
  else if (m1 !== null && h1 !== null) out += ' every day';
  if (!mon.any) out += `, in ${describeParts(mon, (m) => MONTHS[m - 1] || m)}`;
  return out;
}

// describeSchedule says a deployment's schedule in words, with its time zone.
export function describeSchedule(s) {
  if (!s) return 'No schedule (runs start only when asked)';
  if (s.cron) {
    const tz = s.timezone && s.timezone !== 'UTC' ? s.timezone : 'UTC';
    return `${capitalize(describeCron(s.cron))} (${tz})`;
  }
  if (s.interval_seconds) {
    let text = capitalize(describeInterval(s.interval_seconds));
    if (s.anchor) text += ` from ${new Date(s.anchor).toISOString().replace('.000Z', 'Z')}`;
    return text;
  }
  return 'No schedule';
}

function capitalize(t) {
  return t ? t.charAt(0).toUpperCase() + t.slice(1) : t;
}
