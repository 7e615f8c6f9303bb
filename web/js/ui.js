// Small shared pieces of the pages: states (loading, error, empty),
// headings, tables, definition lists, status words and live relative times.

import { h, uniqueId } from './dom.js';
import { DASH, formatRelative, formatTime } from './format.js';

// The one h1 of a page; focusable so navigation can move focus to it.
export function pageHeading(text) {
  return h('h1', { tabindex: '-1' }, text);
}

export function loading(text = 'Loading…') {
  return h('p', { role: 'status', class: 'state' }, text);
}

// An alert carrying the API's problem detail, with an optional retry action.
export function errorAlert(error, retry) {
  const message = error?.detail || error?.message || 'Something went wrong.';
  return h('div', { role: 'alert', class: 'alert' },
    h('p', {}, message),
    retry ? h('button', { type: 'button', class: 'secondary', onclick: retry }, 'Try again') : null);
}

export function emptyState(...children) {
  return h('p', { class: 'state empty' }, ...children);
}

// A run status as a coloured word (the word carries the meaning).
export function statusWord(status) {
  if (!status) return DASH;
  return h('span', { class: `status status-${status}` }, status);
}

// A table with a (visually hidden) caption naming it, inside a wrapper
// that scrolls horizontally on narrow screens. The wrapper is focusable
// so keyboard users can scroll it. Returns {wrap, table, tbody}.
export function dataTable(name, columns) {
  const tbody = h('tbody');
  const table = h('table', {},
    h('caption', { class: 'visually-hidden' }, name),
    h('thead', {}, h('tr', {}, columns.map((c) => h('th', { scope: 'col' }, c)))),
    tbody);
  const wrap = h('div', { class: 'table-wrap', tabindex: '0', role: 'region', 'aria-label': `${name} table` }, table);
  return { wrap, table, tbody };
}

// A <dl> from [term, description] pairs; descriptions may be nodes.
export function definitionList(pairs, className = 'fields') {
  return h('dl', { class: className },
    pairs.map(([term, value]) => h('div', {}, h('dt', {}, term), h('dd', {}, value ?? DASH))));
}

// "in 3 min" / "12 s ago", kept current by the ticker below. A `future`
// instant (a next run) never reads as past: once it has passed it says
// "due now" until the page replaces it with the next one.
export function relativeTime(iso, { future = false } = {}) {
  return h('span', { class: 'relative', 'data-at': iso, 'data-future': future ? '' : null }, relativeText(iso, future));
}

function relativeText(iso, future, nowMs = Date.now()) {
  if (future && new Date(iso).getTime() <= nowMs) return 'due now';
  return formatRelative(iso, nowMs);
}

// A relative time and the absolute time in a <time> element. With no
// instant, a dash.
export function timeWithRelative(iso, timeZone, { future = false } = {}) {
  if (!iso) return DASH;
  return h('span', { class: 'when' },
    relativeTime(iso, { future }),
    ' ',
    h('time', { datetime: iso, class: 'absolute' }, formatTime(iso, timeZone)));
}

// Refreshes every relative time in the document every second, so that
// none goes stale.
export function startRelativeTicker() {
  setInterval(() => {
    const now = Date.now();
    for (const span of document.querySelectorAll('[data-at]')) {
      const text = relativeText(span.getAttribute('data-at'), span.hasAttribute('data-future'), now);
      if (span.textContent !== text) span.textContent = text;
    }
  }, 1000);
}

// A labelled form control: <div class=field><label>…</label>control</div>.
export function labelled(labelText, control) {
  const id = control.id || uniqueId('control');
  control.id = id;
  return h('div', { class: 'field' }, h('label', { for: id }, labelText), control);
}

// A <select> with [value, text] options (or plain strings).
export function select(options, props = {}) {
  return h('select', props, options.map((option) => {
    const [value, text] = Array.isArray(option) ? option : [option, option];
    return h('option', { value }, text);
  }));
}
