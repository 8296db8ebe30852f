// One trace: its spans on a timeline, the question and the answer when stored, and
// every piece of feedback on it, with ids to copy.

import { get } from './api.js';
import { copyable, empty, failure, h, when } from './dom.js';
import { feedbackTable } from './inbox.js';

function duration(ms) {
  if (ms === null || ms === undefined) return '';
  return ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${Math.round(ms)} ms`;
}

/** The question and the answer: the root span's, else the first question and last answer. */
function content(spans) {
  const root = spans.find((s) => !s.parent_span_id) || spans[0];
  let input = root && root.input;
  let output = root && root.output;
  if (!input) input = (spans.find((s) => s.input) || {}).input;
  if (!output) output = ([...spans].reverse().find((s) => s.output) || {}).output;
  return { root, input, output };
}

function timeline(spans) {
  const times = spans.map((s) => {
    const a = Date.parse(s.start_time);
    const b = Date.parse(s.end_time);
    return [a, Number.isFinite(b) || s.latency_ms == null ? b : a + s.latency_ms];
  });
  const start = Math.min(...times.map(([a]) => a).filter(Number.isFinite));
  const end = Math.max(...times.map(([a, b]) => (Number.isFinite(b) ? b : a))
    .filter(Number.isFinite));
  const total = Math.max(end - start, 1);
  const depth = new Map();
  const byId = new Map(spans.map((s) => [s.span_id, s]));
  const level = (span, seen = 0) => {
    if (!span.parent_span_id || !byId.has(span.parent_span_id) || seen > 50) return 0;
    if (!depth.has(span.span_id)) depth.set(span.span_id, 1 + level(byId.get(span.parent_span_id), seen + 1));
    return depth.get(span.span_id);
  };
  return h('ol', { class: 'timeline', 'aria-label': 'Spans' }, spans.map((span, i) => {
    const [a, b] = times[i];
    const bar = h('span', { class: `bar ${span.status === 'error' || span.error ? 'bad' : ''}` });
    const left = Number.isFinite(a) ? ((a - start) / total) * 100 : 0;
    const width = Number.isFinite(a) && Number.isFinite(b) ? Math.max(((b - a) / total) * 100, 0.5) : 0.5;
    bar.style.left = `${left}%`;
    bar.style.width = `${Math.min(width, 100 - left)}%`;
    const name = h('span', { class: 'name' }, span.name || span.span_id || 'trace');
    name.style.paddingLeft = `${level(span) * 1}em`;
    return h('li', {},
      name,
      h('span', { class: 'track' }, bar),
      h('span', { class: 'latency' }, duration(span.latency_ms ?? (b - a))),
      span.error ? h('span', { class: 'sub bad-text' }, span.error) : '',
      h('span', { class: 'sub' }, [span.model, span.step].filter(Boolean).join(' · '),
        span.total_tokens ? ` · ${span.total_tokens} tokens` : '',
        span.span_id ? [' · span ', copyable(span.span_id, 'span id')] : ''));
  }));
}

function facts(root, traceId) {
  const rows = [
    ['Trace', copyable(traceId, 'trace id')],
    ['Project', root && root.project], ['Environment', root && root.environment],
    ['Model', root && root.model], ['Capability', root && root.capability],
    ['User', root && root.user_id && copyable(root.user_id, 'user id')],
    ['Session', root && root.session_id && copyable(root.session_id, 'session id')],
    ['Started', root && when(root.start_time)],
  ];
  return h('dl', { class: 'facts' }, rows.filter(([, v]) => v).map(([k, v]) =>
    [h('dt', {}, k), h('dd', {}, v)]));
}

export function show(ctx, traceId) {
  ctx.view.replaceChildren(h('h1', {}, 'Trace'), h('p', { class: 'empty' }, 'Loading…'));
  (async () => {
    let body;
    try {
      body = (await get(`/v1/traces/${encodeURIComponent(traceId)}`, [], ctx.signal)).body;
    } catch (error) {
      if (error.name === 'AbortError') return;
      if (error.status === 401 || error.status === 403) { ctx.refused(error); return; }
      ctx.view.replaceChildren(h('h1', {}, 'Trace ', h('code', {}, traceId)),
        error.status === 404
          ? empty(h('p', {}, `No trace ${traceId} here yet.`),
            h('p', {}, 'Its spans may still be on their way (the join waits for them), or it'
              + ' belongs to another project than this key’s.'),
            h('p', {}, h('a', { href: '/' }, 'Back to the inbox')))
          : failure(error));
      ctx.ready(0);
      return;
    }
    const spans = body.spans || [];
    const { root, input, output } = content(spans);
    const feedback = body.feedback || [];
    ctx.view.replaceChildren(
      h('h1', {}, 'Trace ', h('code', {}, traceId)),
      facts(root || (feedback[0] && { ...feedback[0], start_time: null }), traceId),
      input || output ? h('section', { class: 'qa', 'aria-label': 'Question and answer' },
        input ? h('div', {}, h('h2', {}, 'Question'), h('pre', { class: 'text' }, input)) : '',
        output ? h('div', {}, h('h2', {}, 'Answer'), h('pre', { class: 'text' }, output)) : '')
        : '',
      h('section', { 'aria-label': 'Spans' }, h('h2', {}, `Spans (${spans.length})`),
        spans.length ? timeline(spans)
          : empty('No span of this trace is stored yet: the feedback below waits for it.')),
      h('section', { 'aria-label': 'Feedback' }, h('h2', {}, `Feedback (${feedback.length})`),
        feedback.length ? feedbackTable(feedback, 'Feedback on this trace')
          : empty('No feedback on this trace.')));
    ctx.ready(feedback.length);
  })();
  return {};
}
