// The Job page: at the top its state (next run, last run, failures in a
// row, last error), actions (admin only: Run now, Pause/Resume, Edit, Clone,
// Delete with a confirmation dialog) and the run history with a chart and a
// status filter; below, the next 5 instants and the configuration
// (collapsible). Run events update the history and, through a fresh read of
// the job, its last and next run; a next run that comes due is replaced.

import { ApiError, get, request, segment } from '../api.js';
import { runsOverTimeChart } from '../chart.js';
import { h, replace, uniqueId } from '../dom.js';
import { formatDuration, formatTime, newerJob } from '../format.js';
import { RUN_STATUSES, createRunsList } from '../runs-list.js';
import { isAdmin } from '../session.js';
import {
  definitionList, errorAlert, labelled, loading, pageHeading, relativeTime, select, statusWord, timeWithRelative,
} from '../ui.js';

const REFRESH_MS = 500;

function configuration(job) {
  const { webhook, retry } = job;
  const headerLines = Object.entries(webhook.headers || {}).map(([name, value]) => `${name}: ${value}`);
  const body = webhook.raw_body ? webhook.body : JSON.stringify(webhook.body, null, 2);
  return definitionList([
    ['Schedule', h('span', {}, job.schedule_description || job.schedule, ' ', h('code', {}, job.schedule))],
    ['Time zone', job.timezone],
    ['Webhook', h('span', {}, `${webhook.method} `, h('code', { class: 'break' }, webhook.url))],
    ['Headers', headerLines.length ? h('pre', {}, headerLines.join('\n')) : 'none'],
    ['Body', webhook.raw_body ? h('pre', {}, `${webhook.content_type}\n${body}`) : h('pre', {}, body)],
    ['Timeout', formatDuration(webhook.timeout_ms)],
    ['Retries', `${retry.attempts} attempts, backoff ${formatDuration(retry.backoff_ms)} up to ${formatDuration(retry.max_backoff_ms)}`],
    ['Overlap', job.overlap],
    ['Starting deadline', formatDuration(job.starting_deadline_ms)],
    ['Catch-up', job.catchup],
    ['Lease', formatDuration(job.lease_ms)],
    ['Signing secret', job.signing_secret_set ? 'its own' : 'the instance default'],
    ['Version', String(job.version)],
    ['Created', formatTime(job.created_at)],
    ['Updated', formatTime(job.updated_at)],
  ]);
}

// What an operator opens the page for: is it firing, did it work.
function summary(job) {
  const last = job.last_run;
  const lastAt = last ? last.scheduled_at || last.started_at : null;
  return definitionList([
    ['Next run', job.paused ? 'none until resumed' : timeWithRelative(job.next_fire_at, undefined, { future: true })],
    ['Last run', last
      ? h('span', {}, statusWord(last.status), ' ',
        h('a', { href: `#/runs/${segment(last.id)}` }, lastAt ? relativeTime(lastAt) : 'open'),
        lastAt ? h('time', { datetime: lastAt, class: 'absolute sub' }, formatTime(lastAt)) : null)
      : 'never'],
    ['Failures in a row', String(job.consecutive_failures ?? 0)],
    ['Last error', job.last_error ? h('span', { class: 'error-text' }, job.last_error) : 'none'],
  ], 'fields summary-fields');
}

// The <dialog> asking to confirm deletion; `onConfirm()` runs on "Delete".
function deleteDialog(name, onConfirm) {
  const titleId = uniqueId('dialog-title');
  const problem = h('div');
  const confirm = h('button', { type: 'button', class: 'danger' }, 'Delete');
  const dialog = h('dialog', { 'aria-labelledby': titleId, class: 'confirm' },
    h('h2', { id: titleId }, `Delete ${name}?`),
    h('p', {}, 'The job stops firing. Its runs stay in history.'),
    problem,
    h('div', { class: 'actions' },
      h('button', { type: 'button', class: 'secondary', onclick: () => dialog.close() }, 'Cancel'),
      confirm));
  confirm.addEventListener('click', async () => {
    confirm.disabled = true;
    try {
      await onConfirm();
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      replace(problem, errorAlert(error));
    } finally {
      confirm.disabled = false;
    }
  });
  return dialog;
}

export async function render(ctx) {
  const { name } = ctx.params;
  const path = `/jobs/${segment(name)}`;
  const badge = h('span'); // Holds "Paused" while the job is paused.
  const body = h('div', {}, loading());
  replace(ctx.main, h('div', { class: 'page-head' }, pageHeading(name), badge), body);

  let job = null;
  const top = h('div');
  const message = h('div', { class: 'action-message' });
  const nextRuns = h('div');
  const config = h('details', { class: 'config', open: true });
  const chartBox = h('div', { class: 'chart-box' });
  const statusSelect = select([['', 'All'], ...RUN_STATUSES]);
  const runs = createRunsList({
    filter: { job: name },
    emptyText: (filter) => (filter.status ? 'No runs match these filters.' : 'No runs yet.'),
    signal: ctx.signal,
    onChange: (list) => replace(chartBox, list.length ? runsOverTimeChart(list) : null),
  });

  // Runs an action, showing its outcome in the message area.
  async function act(fn) {
    replace(message);
    try {
      await fn();
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      replace(message, errorAlert(error));
    }
  }

  const dialog = deleteDialog(name, async () => {
    await request('DELETE', path, { signal: ctx.signal });
    dialog.close();
    ctx.navigate('#/jobs');
  });

  function actions() {
    if (!isAdmin() || !job) return null;
    const toggle = job.paused
      ? h('button', { type: 'button', class: 'secondary', 'data-toggle': '' }, 'Resume')
      : h('button', { type: 'button', class: 'secondary', 'data-toggle': '' }, 'Pause');
    toggle.addEventListener('click', () => act(async () => {
      showJob(await request('POST', `${path}/${job.paused ? 'resume' : 'pause'}`, { signal: ctx.signal }));
      top.querySelector('[data-toggle]')?.focus();
    }));
    const runNow = h('button', { type: 'button', class: 'primary' }, 'Run now');
    runNow.addEventListener('click', () => act(async () => {
      const run = await request('POST', `${path}/trigger`, { signal: ctx.signal });
      runs.applyRun(run);
      replace(message, h('p', { role: 'status', class: 'notice' }, 'Run started. ',
        h('a', { href: `#/runs/${segment(run.id)}` }, 'Open the run')));
    }));
    return h('div', { class: 'actions' },
      runNow,
      toggle,
      h('a', { href: `#${path}/edit`, class: 'button secondary' }, 'Edit'),
      h('a', { href: `#/jobs/new?from=${segment(name)}`, class: 'button secondary' }, 'Clone'),
      h('button', { type: 'button', class: 'danger', onclick: () => dialog.showModal() }, 'Delete'));
  }

  function showJob(next) {
    const scheduleChanged = !job || job.schedule !== next.schedule || job.timezone !== next.timezone ||
      job.paused !== next.paused || job.next_fire_at !== next.next_fire_at;
    job = next;
    replace(badge, job.paused ? h('span', { class: 'paused' }, 'Paused') : null);
    replace(top,
      job.description ? h('p', { class: 'description' }, job.description) : null,
      summary(job),
      actions(),
      message);
    replace(config,
      h('summary', { id: 'config-heading' }, 'Configuration'),
      configuration(job));
    if (scheduleChanged) loadNextRuns().catch(() => {});
  }

  // Reads the job again (its last run, next run and failure count move with
  // every run), at most once per REFRESH_MS.
  let refreshTimer = null;
  function refreshSoon() {
    if (refreshTimer !== null || !job) return;
    refreshTimer = setTimeout(async () => {
      try {
        const fresh = await get(path, {}, ctx.signal);
        if (newerJob(fresh, job)) showJob(fresh);
      } catch {
        // The next event or tick tries again.
      } finally {
        refreshTimer = null;
      }
    }, REFRESH_MS);
  }
  ctx.signal.addEventListener('abort', () => clearTimeout(refreshTimer));

  async function loadNextRuns() {
    replace(nextRuns, loading());
    try {
      const preview = await get('/schedule/preview', { schedule: job.schedule, timezone: job.timezone, count: 5 }, ctx.signal);
      replace(nextRuns,
        job.paused ? h('p', { class: 'muted' }, 'None of these fire until the job is resumed.') : null,
        preview.next.length
          ? h('ol', { class: 'instants' }, preview.next.map((iso) => h('li', {},
            h('time', { datetime: iso }, formatTime(iso, job.timezone)), ` (${job.timezone}); `, formatTime(iso), ' here')))
          : h('p', {}, 'It does not fire in the next 8 years.'));
    } catch (error) {
      if (error instanceof ApiError) replace(nextRuns, errorAlert(error));
      else throw error;
    }
  }

  async function load() {
    try {
      const fresh = await get(path, {}, ctx.signal);
      job = null;
      showJob(fresh);
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      replace(body, errorAlert(error, load));
      return;
    }
    replace(body, top,
      h('section', { 'aria-labelledby': 'runs-heading' },
        h('h2', { id: 'runs-heading' }, 'Runs'),
        chartBox,
        h('div', { class: 'toolbar' }, labelled('Status', statusSelect)),
        runs.element),
      h('section', { 'aria-labelledby': 'next-heading' }, h('h2', { id: 'next-heading' }, 'Next runs'), nextRuns),
      config,
      isAdmin() ? dialog : null);
    await runs.load({ job: name, status: statusSelect.value });
  }

  statusSelect.addEventListener('change', () => runs.load({ job: name, status: statusSelect.value }));
  ctx.on('run', (run) => {
    if (run.job !== name) return;
    runs.applyRun(run);
    refreshSoon();
  });
  // A next run that has come due is replaced by the following one.
  ctx.every(1000, () => {
    if (job && !job.paused && job.next_fire_at && new Date(job.next_fire_at).getTime() < Date.now()) refreshSoon();
  });
  ctx.on('job', (event) => {
    if (event.name !== name) return;
    if (event.action === 'deleted' || !event.job) {
      job = null;
      replace(badge);
      replace(top, errorAlert({ detail: `The job ${name} was deleted. Its runs stay in history.` }));
    } else if (newerJob(event.job, job)) {
      showJob(event.job);
    }
  });
  ctx.on('resync', load);
  await load();
}
