// Alerts: spike episodes firing now and resolved, with their samples, and links to
// the inbox window (the bad feedback of the episode) and to the chart.

import { get } from './api.js';
import { empty, failure, h, percent, timeText, when } from './dom.js';
import { inboxUrl } from './inbox.js';

const RANGES = [['24h', 'last 24 hours'], ['7d', 'last 7 days'], ['30d', 'last 30 days']];
const REFRESH_SECONDS = 10;

function dims(a) {
  return [a.project, a.environment, a.model !== '*' ? a.model : '',
    a.capability !== '*' ? a.capability : ''].filter(Boolean).join(' · ');
}

function episode(alert) {
  // in event time: to the end of the window that resolved it, or now while it fires
  const end = alert.state === 'resolved' ? alert.window_end : new Date().toISOString();
  const inbox = inboxUrl({ project: alert.project, environment: alert.environment,
    model: alert.model, capability: alert.capability, label: 'bad', from: alert.onset, to: end });
  const span = 6 * 3600 * 1000;
  const chart = `/rates?${new URLSearchParams(Object.entries({
    from: new Date(Date.parse(alert.onset) - span / 2).toISOString(),
    to: new Date(Math.min(Date.parse(end) + span / 2, Date.now())).toISOString(),
    project: alert.project, environment: alert.environment,
    ...(alert.model !== '*' ? { model: alert.model } : { by: 'capability' }),
  }).filter(([, v]) => v))}`;
  return h('article', { class: `alert ${alert.state}`, dataset: { alert: alert.alert_id } },
    h('header', {}, h('span', { class: `chip ${alert.state === 'firing' ? 'bad' : 'good'}` },
      alert.state), ' ', h('strong', {}, dims(alert))),
    h('p', {}, `${percent(alert.bad_rate)} bad (${alert.bad} of ${alert.total}) against a `
      + `baseline of ${percent(alert.baseline_rate)}, rule ${alert.rule}, `
      + `${Math.round(alert.window_seconds / 60)}-minute windows.`),
    h('p', { class: 'sub' }, 'from ', when(alert.onset),
      alert.resolved_at ? [' to ', when(alert.resolved_at)] : ' until now'),
    alert.sample_comments && alert.sample_comments.length ? h('blockquote', {},
      h('ul', {}, alert.sample_comments.map((c) => h('li', {}, c)))) : '',
    alert.sample_trace_ids && alert.sample_trace_ids.some(Boolean) ? h('p', { class: 'sub' },
      'sample traces: ', alert.sample_trace_ids.filter(Boolean).map((t, i) => [i ? ', ' : '',
        h('a', { href: `/trace/${encodeURIComponent(t)}` }, t)])) : '',
    h('p', { class: 'links' }, h('a', { href: inbox, class: 'inbox-link' },
      'Its bad feedback in the inbox'), ' · ', h('a', { href: chart }, 'On the chart')));
}

export function show(ctx) {
  const since = ctx.params.get('since') || '7d';
  const form = h('form', { class: 'filters', 'aria-label': 'Alert range' },
    h('label', {}, h('span', {}, 'Range'), h('select', { name: 'since' },
      RANGES.map(([v, t]) => h('option', { value: v, selected: v === since }, t)))),
    h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Show')));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    ctx.navigate(`/alerts?since=${encodeURIComponent(form.elements.since.value)}`);
  });
  const results = h('div', {}, h('p', { class: 'empty' }, 'Loading…'));
  const updated = h('span', { class: 'live', 'aria-live': 'polite' });
  ctx.view.replaceChildren(h('div', { class: 'heading' }, h('h1', {}, 'Alerts'), updated),
    form, results);
  let timer = null;
  let drawn = false;
  const charted = () => drawn;

  async function load() {
    // a hidden tab asks the store nothing; it catches up when shown
    if (document.hidden && charted()) {
      timer = setTimeout(load, REFRESH_SECONDS * 1000);
      return;
    }
    let alerts;
    try {
      alerts = (await get('/v1/alerts', [['since', since], ['limit', '200']], ctx.signal)).body;
    } catch (error) {
      if (error.name === 'AbortError') return;
      if (error.status === 401 || error.status === 403) { ctx.refused(error); return; }
      results.replaceChildren(failure(error));
      ctx.ready(0);
      timer = setTimeout(load, REFRESH_SECONDS * 1000);
      return;
    }
    const firing = alerts.filter((a) => a.state === 'firing');
    const resolved = alerts.filter((a) => a.state !== 'firing');
    results.replaceChildren(
      h('section', { 'aria-label': 'Firing' }, h('h2', {}, `Firing (${firing.length})`),
        firing.length ? firing.map(episode) : empty('Nothing is firing.')),
      h('section', { 'aria-label': 'Resolved' }, h('h2', {}, `Resolved (${resolved.length})`),
        resolved.length ? resolved.map(episode)
          : empty('No alert resolved in this range. Alerts fire when a window’s bad rate '
            + 'spikes above its baseline (rules: THUMBLINE_ALERT_RULES, docs/configuration.md).')));
    updated.textContent = `updated ${timeText(new Date())}`;
    drawn = true;
    ctx.ready(alerts.length);
    timer = setTimeout(load, REFRESH_SECONDS * 1000);
  }

  load();
  return { stop: () => clearTimeout(timer) };
}
