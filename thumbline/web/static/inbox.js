// The inbox: feedback newest first, filtered by the URL's query (the same names as
// GET /v1/feedback and `thumbline inbox`), live on the first page, paged by cursor.

import { get } from './api.js';
import { chip, empty, failure, h, localInput, when } from './dom.js';

/** The URL's filters the inbox passes to GET /v1/feedback (all else is dropped). */
const FILTERS = [
  'label', 'kind', 'name', 'project', 'environment', 'model', 'capability', 'user_id',
  'session_id', 'conversation_id', 'trace_id', 'annotator', 'tag', 'category', 'status',
  'has_comment', 'since', 'from', 'to', 'limit', 'cursor',
];
const LABELS = ['bad', 'good', 'neutral', 'edit'];
const KINDS = ['thumb', 'rating', 'score', 'bool', 'text', 'category', 'signal', 'correction',
  'label'];
const SINCE = [['', 'any time'], ['15m', 'last 15 minutes'], ['1h', 'last hour'],
  ['6h', 'last 6 hours'], ['24h', 'last 24 hours'], ['7d', 'last 7 days'],
  ['30d', 'last 30 days']];
const LIMITS = ['50', '100', '500', '1000'];
const DEFAULT_LIMIT = '100';
const MORE = [
  ['name', 'Name'], ['project', 'Project'], ['environment', 'Environment'], ['model', 'Model'],
  ['capability', 'Capability'], ['user_id', 'User'], ['session_id', 'Session'],
  ['conversation_id', 'Conversation'], ['trace_id', 'Trace'], ['tag', 'Tag'],
  ['category', 'Category'],
];
const LIVE_SECONDS = 3;

/** The page's rows: the URL's limit raised to one of LIMITS, at most the largest (a
 * crafted link cannot make the page ask for 10,000 rows and draw them). */
export function pageLimit(params) {
  const asked = Number(params.get('limit') || DEFAULT_LIMIT);
  if (!Number.isFinite(asked)) return DEFAULT_LIMIT;
  return LIMITS.find((n) => Number(n) >= asked) || LIMITS[LIMITS.length - 1];
}

/** The query of GET /v1/feedback for this page's URL. */
export function query(params) {
  const out = [];
  for (const [name, value] of params) {
    if (FILTERS.includes(name) && name !== 'limit' && value !== '') out.push([name, value]);
  }
  out.push(['limit', pageLimit(params)]);
  return out;
}

/** The inbox URL of a window and its dimensions ("*" or empty: all). */
export function inboxUrl(filters) {
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(filters)) {
    if (value !== undefined && value !== null && value !== '' && value !== '*') {
      params.set(name, value);
    }
  }
  return `/?${params}`;
}

function select(name, label, options, value) {
  return h('label', {}, h('span', {}, label), h('select', { name },
    options.map(([v, text]) => h('option', { value: v, selected: v === value }, text))));
}

function field(name, label, value, attrs = {}) {
  return h('label', {}, h('span', {}, label),
    h('input', { name, value: value ?? '', spellcheck: 'false', autocomplete: 'off', ...attrs }));
}

function filterForm(ctx) {
  const p = ctx.params;
  const locked = ctx.whoami && ctx.whoami.project;
  const moreOpen = MORE.some(([n]) => p.get(n)) || p.has('from') || p.has('to')
    || p.has('annotator') || p.has('status');
  const form = h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter feedback' },
    select('label', 'Label', [['', 'any'], ...LABELS.map((l) => [l, l])], p.get('label') || ''),
    select('kind', 'Kind', [['', 'any'], ...KINDS.map((k) => [k, k])], p.get('kind') || ''),
    select('since', 'Time', SINCE, p.get('since') || ''),
    h('label', { class: 'check' }, h('input', { type: 'checkbox', name: 'has_comment',
      value: 'true', checked: p.get('has_comment') === 'true' }), h('span', {}, 'has a comment')),
    select('limit', 'Rows', LIMITS.map((n) => [n, n]), pageLimit(p)),
    h('details', { open: moreOpen },
      h('summary', {}, 'More filters'),
      h('div', { class: 'more' },
        MORE.map(([name, text]) => (name === 'project' && locked
          ? field(name, text, locked, { readonly: true, title: "the key's project" })
          : field(name, text, p.get(name)))),
        select('annotator', 'Annotator', [['', 'any'], ['end_user', 'end user'],
          ['reviewer', 'reviewer'], ['evaluator', 'evaluator'], ['code', 'code']],
        p.get('annotator') || ''),
        select('status', 'Join', [['', 'any'], ['joined', 'joined'], ['pending', 'pending'],
          ['orphan', 'orphan'], ['corrected', 'corrected']], p.get('status') || ''),
        field('from', 'From', p.get('from') ? localInput(p.get('from')) : '',
          { type: 'datetime-local', step: '1' }),
        field('to', 'To', p.get('to') ? localInput(p.get('to')) : '',
          { type: 'datetime-local', step: '1' }))),
    h('div', { class: 'actions' },
      h('button', { type: 'submit' }, 'Filter'),
      h('a', { href: '/', class: 'clear' }, 'Clear')));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const params = new URLSearchParams();
    for (const [name, value] of new FormData(form)) {
      if (value === '' || (name === 'limit' && value === DEFAULT_LIMIT)) continue;
      if (name === 'project' && locked) continue;
      if (name === 'from' || name === 'to') params.set(name, new Date(value).toISOString());
      else params.set(name, value);
    }
    ctx.navigate(`/?${params}`);
  });
  return form;
}

function valueText(row) {
  if (row.value !== null && row.value !== undefined && row.value !== '') return String(row.value);
  if (row.score !== null && row.score !== undefined) return Number(row.score).toFixed(2);
  return '';
}

function where(row) {
  return [[row.model, row.capability].filter(Boolean).join(' · '),
    h('span', { class: 'sub' }, [row.project, row.environment].filter(Boolean).join(' · '))];
}

function about(row) {
  if (row.trace_id) {
    return h('a', { href: `/trace/${encodeURIComponent(row.trace_id)}`, class: 'trace',
      title: `trace ${row.trace_id}` }, row.trace_id);
  }
  if (row.conversation_id) return `conversation ${row.conversation_id}`;
  if (row.session_id) return `session ${row.session_id}`;
  return '';
}

/** One feedback row of the table (also used by the trace page). */
export function feedbackRow(row) {
  const what = [row.name, row.kind !== row.name ? row.kind : ''].filter(Boolean);
  const tr = h('tr', { class: `row ${row.label === 'bad' ? 'is-bad' : ''}`,
    dataset: { event: row.event_id, trace: row.trace_id || '' }, tabindex: '-1' },
  h('td', { 'data-label': 'Time' }, when(row.ts)),
  h('td', { 'data-label': 'Label' }, chip(row.label)),
  h('td', { 'data-label': 'Feedback' }, h('span', { class: 'what' }, what.join(' · ')),
    valueText(row) ? h('span', { class: 'value' }, valueText(row)) : '',
    row.annotator && row.annotator !== 'end_user' ? h('span', { class: 'tag' }, row.annotator)
      : ''),
  h('td', { 'data-label': 'Comment', class: 'comment' },
    row.comment ? h('p', {}, row.comment) : '',
    row.correction ? h('p', { class: 'correction' }, h('span', {}, 'correction: '),
      row.correction) : ''),
  h('td', { 'data-label': 'User' }, row.user_id || '',
    row.session_id ? h('span', { class: 'sub' }, `session ${row.session_id}`) : ''),
  h('td', { 'data-label': 'Where' }, where(row)),
  h('td', { 'data-label': 'Trace' }, about(row)));
  return tr;
}

export function feedbackTable(rows, caption) {
  return h('table', { class: 'feedback' },
    caption ? h('caption', { class: 'visually-hidden' }, caption) : '',
    h('thead', {}, h('tr', {}, ['Time', 'Label', 'Feedback', 'Comment', 'User', 'Where',
      'Trace'].map((c) => h('th', { scope: 'col' }, c)))),
    h('tbody', {}, rows.map(feedbackRow)));
}

function nothing(ctx) {
  const filtered = [...ctx.params.keys()].some((n) => FILTERS.includes(n) && n !== 'limit');
  if (filtered) {
    return empty(h('p', {}, 'No feedback matches these filters.'),
      h('p', {}, h('a', { href: '/' }, 'Clear the filters'), ' or widen the time range.'));
  }
  return empty(h('p', {}, 'No feedback yet: send some with'),
    h('pre', {}, "thumbline send feedback --trace-id t1 --label bad --comment 'wrong'"),
    h('p', {}, 'or POST it to ', h('code', {}, '/v1/feedback'),
      ' (see the API page); new feedback shows here as it arrives.'));
}

/** Arrow keys move between rows, Enter opens the row's trace. */
function keyboard(table, ctx) {
  table.addEventListener('keydown', (event) => {
    const row = event.target.closest('tr.row');
    if (!row) return;
    if (event.key === 'ArrowDown' || event.key === 'ArrowUp') {
      const next = event.key === 'ArrowDown' ? row.nextElementSibling : row.previousElementSibling;
      if (next) { next.focus(); event.preventDefault(); }
    } else if (event.key === 'Enter' && row.dataset.trace && event.target === row) {
      ctx.navigate(`/trace/${encodeURIComponent(row.dataset.trace)}`);
    }
  });
  const first = table.querySelector('tbody tr');
  if (first) first.tabIndex = 0;
  table.addEventListener('focusin', (event) => {
    const row = event.target.closest('tr.row');
    if (!row) return;
    for (const other of table.querySelectorAll('tr.row[tabindex="0"]')) other.tabIndex = -1;
    row.tabIndex = 0;
  });
}

export function show(ctx) {
  const params = query(ctx.params);
  const paged = ctx.params.has('cursor');
  const status = h('span', { class: 'live', 'aria-live': 'polite' });
  const results = h('div', { class: 'results' }, h('p', { class: 'empty' }, 'Loading…'));
  const pager = h('nav', { class: 'pager', 'aria-label': 'Pages' });
  ctx.view.replaceChildren(
    h('div', { class: 'heading' }, h('h1', {}, 'Inbox'), status),
    filterForm(ctx), results, pager);
  const seen = new Set();
  let timer = null;
  let tbody = null;

  async function load() {
    let answer;
    try {
      answer = await get('/v1/feedback', params, ctx.signal);
    } catch (error) {
      if (error.name === 'AbortError') return;
      if (error.status === 401 || error.status === 403) { ctx.refused(error); return; }
      results.replaceChildren(failure(error));
      ctx.ready(0);
      if (error.retriable) timer = setTimeout(load, LIVE_SECONDS * 1000);
      return;
    }
    const rows = answer.body;
    for (const row of rows) seen.add(row.event_id);
    if (rows.length) {
      const table = feedbackTable(rows, 'Feedback, newest first');
      tbody = table.tBodies[0];
      keyboard(table, ctx);
      results.replaceChildren(table);
    } else results.replaceChildren(nothing(ctx));
    const next = answer.headers.get('X-Next-Cursor');
    pager.replaceChildren(
      paged ? h('a', { href: pageUrl(ctx.params, null) }, '← Newest') : '',
      next ? h('a', { href: pageUrl(ctx.params, next), rel: 'next' }, 'Older →') : '');
    ctx.ready(rows.length);
    if (!paged) {
      status.textContent = 'live';
      timer = setTimeout(poll, LIVE_SECONDS * 1000);
    } else status.textContent = 'older page (not live)';
  }

  async function poll() {
    if (document.hidden) { timer = setTimeout(poll, LIVE_SECONDS * 1000); return; }
    const newest = params.filter(([n]) => n !== 'limit');
    newest.push(['limit', '100']);
    try {
      const rows = (await get('/v1/feedback', newest, ctx.signal)).body;
      const fresh = rows.filter((row) => !seen.has(row.event_id));
      if (fresh.length === rows.length && rows.length === 100) { load(); return; } // a burst
      if (fresh.length) {
        for (const row of fresh) seen.add(row.event_id);
        if (!tbody) { load(); return; }
        const added = fresh.map(feedbackRow);
        for (const tr of added) tr.classList.add('new');
        tbody.prepend(...added);
        const limit = Number(pageLimit(ctx.params));
        while (tbody.rows.length > limit) tbody.lastElementChild.remove();
        status.textContent = `live: ${fresh.length} new`;
      } else status.textContent = 'live';
    } catch (error) {
      if (error.name === 'AbortError') return;
      if (error.status === 401 || error.status === 403) { ctx.refused(error); return; }
      status.textContent = 'live: the gateway did not answer, trying again';
    }
    timer = setTimeout(poll, LIVE_SECONDS * 1000);
  }

  load();
  return { stop: () => clearTimeout(timer) };
}

function pageUrl(params, cursor) {
  const next = new URLSearchParams(params);
  if (cursor) next.set('cursor', cursor);
  else next.delete('cursor');
  return `/?${next}`;
}

