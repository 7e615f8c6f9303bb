// The one Server-Sent Events stream of the app: GET /api/v1/events read
// with fetch() and a ReadableStream (EventSource cannot send the bearer
// token), parsed here, reconnected with backoff and `Last-Event-ID`.
//
// Listeners subscribe per event type ('run', 'job', 'cluster', 'resync')
// and to connection state ('connecting', 'open', 'offline').

import { apiUrl, authHeaders } from './api.js';

// Reconnect delays double from the server's `retry` up to this cap; a
// dashboard on its own instance should come back soon after a restart.
const MAX_BACKOFF_MS = 5000;

// Splits an SSE byte stream (already decoded to text) into events, as the
// HTML standard's event-stream interpretation does: lines end in CRLF, LF
// or CR; `:` starts a comment; `data` lines join with "\n"; a blank line
// dispatches. `onDispatch({type, data})`, `onRetry(ms)`, `onId(id)`.
// An `id` counts only once its event is complete (at the blank line), so a
// stream cut inside an event does not make the reconnect skip that event.
export function createSseParser({ onDispatch, onRetry, onId }) {
  let buffer = '';
  let type = '';
  let data = [];
  let id = null;

  function dispatch() {
    if (id !== null) onId(id);
    id = null;
    if (data.length > 0) onDispatch({ type: type || 'message', data: data.join('\n') });
    type = '';
    data = [];
  }

  function field(line) {
    const colon = line.indexOf(':');
    const name = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (name === 'event') type = value;
    else if (name === 'data') data.push(value);
    else if (name === 'id' && !value.includes('\0')) id = value;
    else if (name === 'retry' && /^\d+$/.test(value)) onRetry(Number(value));
  }

  return function feed(text) {
    buffer += text;
    for (;;) {
      const match = /\r\n|\r|\n/.exec(buffer);
      // A lone CR at the very end may be the first half of a CRLF.
      if (!match || (match[0] === '\r' && match.index === buffer.length - 1)) return;
      const line = buffer.slice(0, match.index);
      buffer = buffer.slice(match.index + match[0].length);
      if (line === '') dispatch();
      else if (!line.startsWith(':')) field(line);
    }
  };
}

const listeners = new Map();
const stateListeners = new Set();
let state = 'offline';
let controller = null;
let lastEventId = null;
let retryBaseMs = 2000;
let reconnectTimer = null;
let unauthorized = () => {};
let firstAttemptDone = null; // resolves startEvents()'s promise

// A listener that throws must neither end the stream (the reconnect would
// then skip the event) nor keep the event from the other listeners.
function emit(type, payload) {
  for (const listener of listeners.get(type) || []) {
    try {
      listener(payload);
    } catch (error) {
      setTimeout(() => { throw error; });
    }
  }
}

function setState(next) {
  if (state === next) return;
  state = next;
  for (const listener of stateListeners) listener(state);
}

// Subscribes to one event type; returns the unsubscribe function.
export function onEvent(type, listener) {
  if (!listeners.has(type)) listeners.set(type, new Set());
  listeners.get(type).add(listener);
  return () => listeners.get(type).delete(listener);
}

// Subscribes to state changes and calls the listener once with the current state.
export function onStateChange(listener) {
  stateListeners.add(listener);
  listener(state);
  return () => stateListeners.delete(listener);
}

function deliver({ type, data }) {
  let payload;
  try {
    payload = JSON.parse(data);
  } catch {
    return; // Not JSON: no event of this API looks like that.
  }
  emit(type, payload);
}

async function readStream(signal) {
  const headers = { Accept: 'text/event-stream', ...authHeaders() };
  if (lastEventId !== null) headers['Last-Event-ID'] = lastEventId;
  const response = await fetch(apiUrl('/events'), { headers, signal, cache: 'no-store' });
  if (response.status === 401) {
    unauthorized();
    return false;
  }
  if (!response.ok || !response.body) throw new Error(`events: status ${response.status}`);
  setState('open');
  const hadId = lastEventId !== null;
  const feed = createSseParser({
    onDispatch: deliver,
    onRetry: (ms) => { retryBaseMs = ms; },
    onId: (id) => { lastEventId = id; },
  });
  return { response, feed, hadId };
}

async function connect(attempt, reconnecting) {
  controller = new AbortController();
  const { signal } = controller;
  setState('connecting');
  let opened = null;
  try {
    try {
      opened = await readStream(signal);
    } finally {
      firstAttemptDone?.();
      firstAttemptDone = null;
    }
    if (opened === false) return; // 401: the app signs out.
    // Without a Last-Event-ID the server cannot replay what was missed
    // while we were away, so the pages reload what they show.
    if (reconnecting && !opened.hadId) emit('resync', { reason: 'reconnected' });
    const reader = opened.response.body.pipeThrough(new TextDecoderStream()).getReader();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      opened.feed(value);
    }
  } catch {
    if (signal.aborted) return;
  }
  if (signal.aborted) return;
  // The stream ended or failed: back off (reset after a stream that opened).
  const nextAttempt = opened ? 1 : attempt + 1;
  setState(opened ? 'connecting' : 'offline');
  const delay = Math.min(MAX_BACKOFF_MS, retryBaseMs * 2 ** (nextAttempt - 1));
  const jitter = Math.random() * 0.2 * delay;
  reconnectTimer = setTimeout(() => connect(nextAttempt, true), delay + jitter);
}

// Opens the stream (once per sign-in). `onUnauthorized` runs on a 401.
// Resolves once the first attempt has opened the stream or failed: a new
// stream gets only changes made after it opened, so pages load their data
// after this, and miss nothing in between.
export function startEvents({ onUnauthorized }) {
  stopEvents();
  unauthorized = onUnauthorized;
  const done = new Promise((resolve) => { firstAttemptDone = resolve; });
  connect(0, false);
  return done;
}

// Closes the stream and forgets the position (on sign-out).
export function stopEvents() {
  clearTimeout(reconnectTimer);
  if (controller) controller.abort();
  controller = null;
  lastEventId = null;
  setState('offline');
}
