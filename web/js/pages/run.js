// The Run page: every field of one run, its attempt log (one row per
// attempt: time, duration, HTTP status, error) and, for admins, "Retry"
// on a scheduled run that failed, was fenced, missed or lost (a new firing
// of the same slot, linked once made). Kept current by `run` events. Fields
// a server does not send (lag_ms, attempt_log, retry_of) show as absent.

import { ApiError, get, request, segment } from '../api.js';
import { h, replace } from '../dom.js';
import { DASH, formatDuration, formatTime, formatValue, supersedes } from '../format.js';
import { isAdmin } from '../session.js';
import { dataTable, definitionList, errorAlert, loading, pageHeading, statusWord } from '../ui.js';

const RETRYABLE = new Set(['failed', 'fenced', 'missed', 'lost']);

function runLink(id) {
  return h('a', { href: `#/runs/${segment(id)}` }, id);
}

function runFields(run) {
  return definitionList([
    ['Job', h('a', { href: `#/jobs/${segment(run.job)}` }, run.job)],
    ['Status', statusWord(run.status)],
    ['Reason', formatValue(run.reason)],
    ['Trigger', formatValue(run.trigger)],
    ['Scheduled at', formatTime(run.scheduled_at)],
    ['Started at', formatTime(run.started_at)],
    ['Finished at', formatTime(run.finished_at)],
    ['Duration', formatDuration(run.duration_ms)],
    ['Lag', typeof run.lag_ms === 'number' ? formatDuration(run.lag_ms) : DASH],
    ['Fencing token', run.fencing_token ? String(run.fencing_token) : DASH],
    ['Instance', formatValue(run.instance)],
    ['Attempts', String(run.attempts ?? 0)],
    ['HTTP status', formatValue(run.http_status)],
    ['Lease lost', run.lease_lost ? 'yes' : 'no'],
    ['Retry of', run.retry_of ? runLink(run.retry_of) : DASH],
    ['Error', formatValue(run.error)],
    ['Response excerpt', run.response_excerpt ? h('pre', { class: 'excerpt' }, run.response_excerpt) : DASH],
  ]);
}

// The attempt log as a table, or nothing when the server sends none.
function attemptsSection(run) {
  if (!Array.isArray(run.attempt_log) || run.attempt_log.length === 0) return null;
  const { wrap, table, tbody } = dataTable('Attempts', ['Attempt', 'Started at', 'Duration', 'HTTP status', 'Error']);
  table.classList.add('attempts-table');
  for (const attempt of run.attempt_log) {
    tbody.append(h('tr', {},
      h('th', { scope: 'row' }, String(attempt.attempt)),
      h('td', {}, formatTime(attempt.started_at)),
      h('td', { class: 'num' }, formatDuration(attempt.duration_ms)),
      h('td', { class: 'num' }, formatValue(attempt.http_status)),
      h('td', {}, formatValue(attempt.error),
        attempt.response_excerpt ? h('pre', { class: 'excerpt sub' }, attempt.response_excerpt) : null)));
  }
  return h('section', { 'aria-labelledby': 'attempts-heading' },
    h('h2', { id: 'attempts-heading' }, 'Attempts'), wrap);
}

function retryable(run) {
  return isAdmin() && run.trigger !== 'manual' && RETRYABLE.has(run.status);
}

export async function render(ctx) {
  const id = ctx.params.name;
  const body = h('div', {}, loading());
  const message = h('div', { class: 'action-message' });
  replace(ctx.main, pageHeading(`Run ${id}`), body);

  let shown = null;

  async function retry(button) {
    replace(message);
    button.disabled = true;
    try {
      const fresh = await request('POST', `/runs/${segment(id)}/retry`, { signal: ctx.signal });
      replace(message, h('p', { role: 'status', class: 'notice' }, 'Retry started: ', runLink(fresh.id)));
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      replace(message, errorAlert(error));
    } finally {
      button.disabled = false;
    }
  }

  function show(run) {
    shown = run;
    let actions = null;
    if (retryable(run)) {
      const button = h('button', { type: 'button', class: 'primary' }, 'Retry');
      button.addEventListener('click', () => retry(button));
      actions = h('div', { class: 'actions' }, button,
        h('p', { class: 'hint' }, 'Fires this slot again with a new fencing token and the same idempotency key.'));
    }
    replace(body, actions, message, runFields(run), attemptsSection(run));
  }

  async function load() {
    try {
      show(await get(`/runs/${segment(id)}`, {}, ctx.signal));
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      replace(body, errorAlert(error, load));
    }
  }

  ctx.on('run', (run) => {
    if (run.id !== id || !supersedes(run, shown)) return;
    show(run);
  });
  ctx.on('resync', load);
  await load();
}
