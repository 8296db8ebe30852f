// Building the page: elements from data, never HTML from data.
//
// Every text the API returns (comments, names, ids) goes in as a text node, so a
// comment that holds markup shows as the characters it is. Styles are set through
// the DOM (element.style), which the Content-Security-Policy allows; no style
// attribute, no inline script.

/** An element: h('a', {href: '/x', class: 'y'}, 'text', child, [more]). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === 'class') el.className = value;
    else if (name === 'dataset') Object.assign(el.dataset, value);
    else if (name.startsWith('on')) el.addEventListener(name.slice(2), value);
    else if (value === true) el.setAttribute(name, '');
    else el.setAttribute(name, String(value));
  }
  add(el, children);
  return el;
}

function add(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
}

const parts = new Intl.DateTimeFormat('en-CA', {
  year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit',
  second: '2-digit', hourCycle: 'h23', timeZoneName: 'short',
});

/** "2026-11-26 07:12:03 UTC": a time in the reader's zone, the zone named. */
export function timeText(iso) {
  const date = iso instanceof Date ? iso : new Date(iso);
  if (Number.isNaN(date.getTime())) return String(iso ?? '');
  const p = Object.fromEntries(parts.formatToParts(date).map((x) => [x.type, x.value]));
  return `${p.year}-${p.month}-${p.day} ${p.hour}:${p.minute}:${p.second} ${p.timeZoneName}`;
}

/** A <time> element: the reader's zone shown, UTC in its title. */
export function when(iso) {
  if (!iso) return '';
  return h('time', { datetime: iso, title: iso }, timeText(iso));
}

/** A time for a datetime-local input (the reader's zone). */
export function localInput(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return '';
  const pad = (n) => String(n).padStart(2, '0');
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T`
    + `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
}

/** "good" / "bad" / anything else: the colour class of a label. */
export function labelClass(label) {
  return label === 'good' ? 'good' : label === 'bad' ? 'bad' : 'neutral';
}

/** A label as a coloured chip (the word is always there, not only the colour). */
export function chip(label) {
  return label ? h('span', { class: `chip ${labelClass(label)}` }, label) : '';
}

/** A percentage with one decimal: 0.1234 -> "12.3%". */
export function percent(rate) {
  return rate === null || rate === undefined ? '' : `${(rate * 100).toFixed(1)}%`;
}

/** A button that copies text (an id) to the clipboard, and says so. */
export function copyButton(text, what = 'id') {
  const button = h('button', { type: 'button', class: 'copy', title: `Copy the ${what}`,
    'aria-label': `Copy the ${what} ${text}` }, 'copy');
  button.addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText(text);
      button.textContent = 'copied';
    } catch {
      // no clipboard (a page not on https or localhost): select the id to copy by hand
      const code = button.previousElementSibling;
      if (code) window.getSelection().selectAllChildren(code);
      button.textContent = 'select + copy';
    }
    setTimeout(() => { button.textContent = 'copy'; }, 1500);
  });
  return button;
}

/** An id in monospace with its copy button. */
export function copyable(text, what) {
  return h('span', { class: 'copyable' }, h('code', {}, text), copyButton(text, what));
}

/** A message in place of rows: what is (not) there and what to do. */
export function empty(...children) {
  return h('div', { class: 'empty', role: 'status' }, ...children);
}

/** An error the reader can act on. */
export function failure(error) {
  const retry = error && error.retriable ? ' It may be a moment: the page tries again.' : '';
  return h('div', { class: 'error', role: 'alert' }, `${error?.message ?? error}.${retry}`);
}
