// The pages' entry: who is reading (the key), which page the path names, and moving
// between pages without a reload. Each page is a module with show(ctx, arg) that
// returns {stop()}; ctx.ready() marks the page drawn (document.documentElement's
// data-ready, and a performance mark the benchmarks read).

import { ApiError, forgetKey, get, key, setKey } from './api.js';
import { failure, h } from './dom.js';
import * as alerts from './alerts.js';
import * as inbox from './inbox.js';
import * as rates from './rates.js';
import * as trace from './trace.js';

const ROUTES = [
  [/^\/(?:inbox)?$/, 'inbox', inbox],
  [/^\/trace\/(.+)$/, 'trace', trace],
  [/^\/rates$/, 'rates', rates],
  [/^\/alerts$/, 'alerts', alerts],
];

const view = document.getElementById('view');
let whoami = null;
let current = null;

function route(path) {
  for (const [pattern, name, module] of ROUTES) {
    const match = pattern.exec(path);
    if (match) return { name, module, arg: match[1] ? decoded(match[1]) : undefined };
  }
  return null;
}

/** A path segment decoded; as it is when it holds a '%' that escapes nothing (a typed URL). */
function decoded(segment) {
  try {
    return decodeURIComponent(segment);
  } catch {
    return segment;
  }
}

/** The project a URL asks for when the key reads only another one (else null). */
function elsewhere(params) {
  const asked = params.get('project');
  return whoami && whoami.project && asked && asked !== whoami.project ? asked : null;
}

/** A shared link of another project's view: say so, and offer the same view in the key's. */
function otherProject(asked) {
  const own = new URLSearchParams(window.location.search);
  own.delete('project');
  const query = own.toString();
  const url = `${window.location.pathname}${query ? `?${query}` : ''}`;
  view.replaceChildren(h('h1', {}, 'Another project'),
    failure(`This link asks for project ${asked}; this key reads only project `
      + `${whoami.project}`),
    h('p', {}, h('a', { href: url, class: 'own-project' }, `The same view in project ${
      whoami.project}`), ', or paste a key of that project after “Forget key”.'));
  ready('elsewhere');
}

/** Open a page of this app (a path with its query) without reloading. */
export function navigate(url, { replace = false } = {}) {
  if (replace) window.history.replaceState(null, '', url);
  else window.history.pushState(null, '', url);
  render();
}

function ready(name, rows) {
  performance.mark(`thumbline:ready:${name}`);
  document.documentElement.dataset.ready = name;
  if (rows !== undefined) document.documentElement.dataset.rows = String(rows);
}

function render() {
  if (current) current.stop();
  current = null;
  delete document.documentElement.dataset.ready;
  const found = route(window.location.pathname);
  for (const link of document.querySelectorAll('nav a[data-page]')) {
    if (found && link.dataset.page === (found.name === 'trace' ? 'inbox' : found.name)) {
      link.setAttribute('aria-current', 'page');
    } else link.removeAttribute('aria-current');
  }
  if (!found) {
    view.replaceChildren(h('h1', {}, 'No such page'),
      h('p', {}, 'Try the ', h('a', { href: '/' }, 'inbox'), '.'));
    ready('missing');
    return;
  }
  const asked = elsewhere(new URLSearchParams(window.location.search));
  if (asked) { otherProject(asked); return; }
  const controller = new AbortController();
  const ctx = {
    view,
    whoami,
    params: new URLSearchParams(window.location.search),
    signal: controller.signal,
    navigate,
    ready: (rows) => { if (!controller.signal.aborted) ready(found.name, rows); },
    // a read refused mid-page: the key was revoked or forgotten
    refused: (error) => askKey(error),
  };
  document.title = `${found.name} · thumbline`;
  const page = found.module.show(ctx, found.arg) || {};
  current = { stop: () => { controller.abort(); if (page.stop) page.stop(); } };
}

function showWho() {
  const who = document.getElementById('who');
  const forget = document.getElementById('forget');
  if (!whoami) {
    who.textContent = '';
    forget.hidden = true;
    return;
  }
  who.replaceChildren(whoami.project
    ? h('span', {}, 'project ', h('strong', {}, whoami.project))
    : h('span', {}, whoami.open ? 'all projects (no key needed on loopback)' : 'all projects'));
  forget.hidden = !key();
}

function askKey(error) {
  if (current) current.stop();
  current = null;
  whoami = null;
  showWho();
  const form = document.getElementById('key-form').content.firstElementChild.cloneNode(true);
  const message = form.querySelector('.error');
  if (error && key()) {
    message.textContent = error.status === 403
      ? `This key cannot read (${error.message}). Paste a read key.`
      : `This key was refused (${error.message}). Paste a read key.`;
  }
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const value = form.elements.key.value.trim();
    form.elements.key.value = '';
    if (!value) return;
    setKey(value);
    identify();
  });
  view.replaceChildren(form);
  form.elements.key.focus();
  ready('key');
}

async function identify() {
  try {
    whoami = (await get('/v1/whoami')).body;
  } catch (error) {
    if (error instanceof ApiError && (error.status === 401 || error.status === 403)) {
      askKey(error);
      return;
    }
    view.replaceChildren(failure(error));
    ready('error');
    setTimeout(identify, 3000);
    return;
  }
  showWho();
  render();
}

function isPage(path) {
  return route(path) !== null;
}

document.addEventListener('click', (event) => {
  const link = event.target.closest('a[href]');
  if (!link || event.defaultPrevented || event.button !== 0 || link.target
      || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  const url = new URL(link.href);
  if (url.origin !== window.location.origin || !isPage(url.pathname) || !whoami) return;
  event.preventDefault();
  navigate(url.pathname + url.search);
  view.focus({ preventScroll: true });
  window.scrollTo(0, 0);
});
window.addEventListener('popstate', () => { if (whoami) render(); });
document.getElementById('forget').addEventListener('click', () => {
  forgetKey();
  askKey();
});

identify();
