// Rates over time: the bad rate of each project/environment/model (or capability)
// per window from feedback_rates, the volume beside it, alert episodes shaded on the
// chart. Clicking a point opens the inbox filtered to that window and those
// dimensions; the worst windows are listed as links too (for the keyboard).

import { get } from './api.js';
import { empty, failure, h, localInput, percent, timeText } from './dom.js';
import { inboxUrl } from './inbox.js';

const RANGES = [['1h', 'last hour'], ['6h', 'last 6 hours'], ['24h', 'last 24 hours'],
  ['7d', 'last 7 days'], ['30d', 'last 30 days']];
const WINDOWS = [['60', '1 minute'], ['300', '5 minutes'], ['3600', '1 hour']];
const COLORS = ['#2563eb', '#d97706', '#059669', '#7c3aed', '#db2777', '#0891b2', '#65a30d',
  '#dc2626', '#4b5563', '#9333ea'];
const REFRESH_SECONDS = 30;
const WORST = 10;

function color(i) {
  return i < COLORS.length ? COLORS[i] : `hsl(${(i * 47) % 360} 65% 45%)`;
}

function defaultWindow(since) {
  return since === '30d' ? '3600' : '60';
}

/** The query of GET /v1/rates for this page's URL. */
function query(params) {
  const out = [];
  const since = params.get('since') || (params.has('from') ? '' : '24h');
  if (since) out.push(['since', since]);
  // the store keeps rates per model or per capability: filter on the one charted
  const by = params.get('by') === 'capability' ? 'capability' : 'model';
  for (const name of ['from', 'to', 'by', 'project', 'environment', by]) {
    if (params.get(name)) out.push([name, params.get(name)]);
  }
  out.push(['window', params.get('window') || defaultWindow(since)]);
  return out;
}

function controls(ctx) {
  const p = ctx.params;
  const since = p.get('since') || (p.has('from') ? '' : '24h');
  const locked = ctx.whoami && ctx.whoami.project;
  const pick = (name, label, options, value) => h('label', {}, h('span', {}, label),
    h('select', { name }, options.map(([v, text]) =>
      h('option', { value: v, selected: v === value }, text))));
  const text = (name, label) => h('label', {}, h('span', {}, label),
    h('input', { name, value: name === 'project' && locked ? locked : (p.get(name) || ''),
      readonly: name === 'project' && locked, spellcheck: 'false', autocomplete: 'off' }));
  const ranges = [...RANGES, ['', 'from … to …']];
  const moment = (name, label) => h('label', {}, h('span', {}, label),
    h('input', { name, type: 'datetime-local', step: '1',
      value: p.get(name) ? localInput(p.get(name)) : '' }));
  const form = h('form', { class: 'filters', 'aria-label': 'Chart range and dimensions' },
    pick('since', 'Range', ranges, since),
    moment('from', 'From'), moment('to', 'To'),
    pick('window', 'Window', WINDOWS, p.get('window') || defaultWindow(since)),
    pick('by', 'Per', [['model', 'model'], ['capability', 'capability']],
      p.get('by') || 'model'),
    text('project', 'Project'), text('environment', 'Environment'),
    p.get('by') === 'capability' ? text('capability', 'Capability') : text('model', 'Model'),
    h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Show')));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const params = new URLSearchParams();
    const data = new FormData(form);
    const custom = data.get('from') !== '' && data.get('since') === '';
    for (const [name, value] of data) {
      if (value === '' || (name === 'project' && locked)) continue;
      if (name === 'by' && value === 'model') continue;
      if (name === 'from' || name === 'to') {
        if (custom) params.set(name, new Date(value).toISOString());
      } else params.set(name, value);
    }
    if (!params.get('since') && !custom) params.set('since', '24h');
    ctx.navigate(`/rates?${params}`);
  });
  return form;
}

function seriesName(s, projects) {
  const dims = [projects > 1 ? s.project : '', s.environment,
    s.capability && s.capability !== '*' ? s.capability : s.model];
  return dims.filter(Boolean).join(' · ');
}

/** All series on one time axis (gaps are null): [xs, [rates...], [totals...]]. */
export function align(series) {
  const all = new Set();
  for (const s of series) for (const t of s.t) all.add(t);
  const xs = Float64Array.from(all).sort();
  const at = new Map();
  xs.forEach((t, i) => at.set(t, i));
  const rates = [];
  const totals = [];
  for (const s of series) {
    const rate = new Array(xs.length).fill(null);
    const total = new Array(xs.length).fill(null);
    for (let j = 0; j < s.t.length; j += 1) {
      const i = at.get(s.t[j]);
      rate[i] = s.bad_rate[j] * 100;
      total[i] = s.total[j];
    }
    rates.push(rate);
    totals.push(total);
  }
  return [Array.from(xs), rates, totals];
}

function bands(alerts, seconds, openFrom) {
  return {
    hooks: {
      drawClear: [(u) => {
        const { ctx } = u;
        ctx.save();
        if (openFrom) { // windows still open: their counts so far
          const x0 = Math.max(u.valToPos(openFrom, 'x', true), u.bbox.left);
          ctx.fillStyle = 'rgba(128, 128, 128, 0.12)';
          ctx.fillRect(x0, u.bbox.top, u.bbox.left + u.bbox.width - x0, u.bbox.height);
        }
        ctx.fillStyle = 'rgba(220, 38, 38, 0.13)';
        for (const alert of alerts) {
          const from = Date.parse(alert.onset) / 1000;
          const to = alert.until ? Date.parse(alert.until) / 1000 : seconds;
          // within the plot: an episode may begin before the range drawn
          const x0 = Math.max(u.valToPos(from, 'x', true), u.bbox.left);
          const x1 = Math.min(u.valToPos(Math.max(to, from + 60), 'x', true),
            u.bbox.left + u.bbox.width);
          if (x1 > x0) ctx.fillRect(x0, u.bbox.top, Math.max(x1 - x0, 2), u.bbox.height);
        }
        ctx.restore();
      }],
    },
  };
}

function chart(el, title, xs, columns, series, options) {
  const width = Math.max(el.clientWidth, 280);
  const u = new window.uPlot({
    title,
    width,
    height: Math.round(Math.min(Math.max(width * 0.35, 180), 320)),
    cursor: { sync: { key: 'rates' }, focus: { prox: 24 }, drag: { x: false, y: false } },
    focus: { alpha: 0.35 },
    legend: { live: true },
    // to the range's end: a series that stopped shows its silence
    scales: { x: { time: true, range: (u, min, max) => [min, Math.max(max, options.end)] },
      ...(options.scales || {}) },
    axes: [{}, { label: options.axis, size: 60, values: options.values }],
    plugins: options.plugins || [],
    series: [{ label: 'time', value: (u, v) => (v == null ? '' : timeText(new Date(v * 1000))) },
      ...series.map((s, i) => ({
        label: s.label, stroke: color(i), width: 1.5, spanGaps: false,
        value: options.value,
      }))],
  }, [xs, ...columns], el);
  el.uplot = u;
  return u;
}

/** The series and window under the cursor: the one nearest it, or null. */
function pointAt(u, series, seconds) {
  const i = u.cursor.idx;
  if (i === null || i === undefined || u.cursor.top === undefined) return null;
  let best = null;
  for (let k = 1; k < u.series.length; k += 1) {
    const value = u.data[k][i];
    if (value === null || value === undefined || !u.series[k].show) continue;
    const distance = Math.abs(u.valToPos(value, 'y') - u.cursor.top);
    if (best === null || distance < best.distance) best = { distance, k };
  }
  if (!best) return null;
  const s = series[best.k - 1];
  const start = u.data[0][i];
  return { s, start, end: start + seconds };
}

function windowLink(s, start, end, text) {
  return h('a', { href: inboxUrl({ project: s.project, environment: s.environment,
    model: s.model, capability: s.capability, label: 'bad',
    from: new Date(start * 1000).toISOString(), to: new Date(end * 1000).toISOString() }) },
  text);
}

function worst(series, seconds) {
  const windows = [];
  for (const s of series) {
    for (let j = 0; j < s.t.length; j += 1) {
      if (s.bad[j] > 0) windows.push({ s, start: s.t[j], rate: s.bad_rate[j], bad: s.bad[j], total: s.total[j] });
    }
  }
  windows.sort((a, b) => b.rate * Math.sqrt(b.total) - a.rate * Math.sqrt(a.total));
  return windows.slice(0, WORST).map(({ s, start, rate, bad, total }) => h('li', {},
    windowLink(s, start, start + seconds, `${percent(rate)} bad (${bad} of ${total})`),
    ` · ${s.label} · ${timeText(new Date(start * 1000))}`));
}

export function show(ctx) {
  const results = h('div', { class: 'charts' }, h('p', { class: 'empty' }, 'Loading…'));
  ctx.view.replaceChildren(h('div', { class: 'heading' }, h('h1', {}, 'Rates')),
    controls(ctx), results);
  let timer = null;
  let charts = [];
  const charted = () => charts.length > 0;
  const resize = () => {
    for (const u of charts) {
      const width = Math.max(u.root.parentElement.clientWidth, 280);
      u.setSize({ width, height: Math.round(Math.min(Math.max(width * 0.35, 180), 320)) });
    }
  };
  window.addEventListener('resize', resize);

  async function load() {
    // a hidden tab asks the store nothing; it catches up when shown
    if (document.hidden && charted()) {
      timer = setTimeout(load, REFRESH_SECONDS * 1000);
      return;
    }
    let body;
    try {
      body = (await get('/v1/rates', query(ctx.params), ctx.signal)).body;
    } catch (error) {
      if (error.name === 'AbortError') return;
      if (error.status === 401 || error.status === 403) { ctx.refused(error); return; }
      results.replaceChildren(failure(error));
      ctx.ready(0);
      return;
    }
    for (const u of charts) u.destroy();
    charts = [];
    const series = body.series || [];
    const projects = new Set(series.map((s) => s.project)).size;
    for (const s of series) s.label = seriesName(s, projects);
    if (!series.length) {
      results.replaceChildren(empty(
        h('p', {}, 'No rates in this range yet.'),
        h('p', {}, `Rates are written as each ${body.window_seconds || 60}-second window closes, `
          + 'a little after its end; send feedback and they appear here. Or widen the range.')));
      ctx.ready(0);
      timer = setTimeout(load, REFRESH_SECONDS * 1000);
      return;
    }
    const seconds = body.window_seconds;
    const [xs, rates, totals] = align(series);
    const rateEl = h('figure', { class: 'chart', id: 'rate-chart',
      'aria-label': 'Bad rate per window; click a point for its feedback' });
    const volumeEl = h('figure', { class: 'chart', id: 'volume-chart',
      'aria-label': 'Feedback per window' });
    const alerts = body.alerts || [];
    const zone = Intl.DateTimeFormat().resolvedOptions().timeZone || 'local time';
    results.replaceChildren(
      h('p', { class: 'hint' }, `Times in ${zone}. Red: alert episodes. Click a point `
        + 'to see its bad feedback.',
      body.open_from ? ` Grey, from ${timeText(new Date(body.open_from * 1000))}: windows still `
        + 'open, their counts so far.' : '',
      body.more_series ? ` ${body.more_series} smaller series are not drawn: filter to see them.`
        : ''),
      rateEl, volumeEl,
      h('section', { 'aria-label': 'Worst windows' }, h('h2', {}, 'Worst windows'),
        h('ol', { class: 'worst' }, worst(series, seconds))),
      alerts.length ? h('section', { 'aria-label': 'Alert episodes' },
        h('h2', {}, 'Alerts in this range'),
        h('ul', {}, alerts.map((a) => h('li', {}, h('span', { class: `chip ${a.state === 'firing' ? 'bad' : 'neutral'}` }, a.state),
          ' ', windowLink(a, Date.parse(a.onset) / 1000,
            (a.until ? Date.parse(a.until) : Date.now()) / 1000,
            [a.environment, a.model !== '*' ? a.model : a.capability].filter(Boolean).join(' · ')),
          ` from ${timeText(a.onset)}`, a.until ? ` to ${timeText(a.until)}` : ' (firing)'))))
        : '');
    const end = Date.parse(body.to) / 1000;
    const rate = chart(rateEl, 'Bad rate (%)', xs, rates, series, {
      axis: 'bad %', value: (u, v) => (v == null ? '' : `${v.toFixed(1)}%`),
      scales: { y: { range: [0, 100] } }, plugins: [bands(alerts, end, body.open_from)], end,
    });
    const volume = chart(volumeEl, 'Feedback per window', xs, totals, series, {
      axis: 'feedback', value: (u, v) => (v == null ? '' : String(v)),
      plugins: [bands([], end, body.open_from)], end,
    });
    charts = [rate, volume];
    rate.over.addEventListener('click', () => {
      const point = pointAt(rate, series, seconds);
      if (!point) return;
      const { s, start, end: stop } = point;
      ctx.navigate(inboxUrl({ project: s.project, environment: s.environment, model: s.model,
        capability: s.capability, label: 'bad', from: new Date(start * 1000).toISOString(),
        to: new Date(stop * 1000).toISOString() }));
    });
    ctx.ready(xs.length);
    timer = setTimeout(load, REFRESH_SECONDS * 1000);
  }

  load();
  return { stop: () => { clearTimeout(timer); window.removeEventListener('resize', resize);
    for (const u of charts) u.destroy(); } };
}
