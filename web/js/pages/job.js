// The Job page: configuration, the next 5 instants, actions (admin only:
// Run now, Pause/Resume, Edit, Delete with a confirmation dialog) and the
// run history with a status filter, a chart and live updates.

import { ApiError, get, request, segment } from '../api.js';
import { runsOverTimeChart } from '../chart.js';
import { h, replace, uniqueId } from '../dom.js';
import { formatDuration, formatTime, newerJob } from '../format.js';
import { RUN_STATUSES, createRunsList } from '../runs-list.js';
import { isAdmin } from '../session.js';
import {
  definitionList, errorAlert, labelled, loading, pageHeading, select, statusWord, timeWithRelative,
} from '../ui.js';

function configuration(job) {
  const { webhook, retry } = job;
  const headerLines = Object.entries(webhook.headers || {}).map(([name, value]) => `${name}: ${value}`);
  const body = webhook.raw_body ? webhook.body : JSON.stringify(webhook.body, null, 2);
  return definitionList([
    ['Schedule', h('span', {}, job.schedule_description || job.schedule, ' ', h('code', {}, job.schedule))],
    ['Time zone', job.timezone],
    ['Next run', job.paused ? 'none until resumed' : timeWithRelative(job.next_fire_at)],
    ['Last run', job.last_run
      ? h('span', {}, statusWord(job.last_run.status), ' ',
        h('a', { href: `#/runs/${segment(job.last_run.id)}` }, formatTime(job.last_run.scheduled_at || job.last_run.started_at)))
      : 'never'],
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
      h('button', { type: 'button', class: 'danger', onclick: () => dialog.showModal() }, 'Delete'));
  }

  function showJob(next) {
    const scheduleChanged = !job || job.schedule !== next.schedule || job.timezone !== next.timezone || job.paused !== next.paused;
    job = next;
    replace(badge, job.paused ? h('span', { class: 'paused' }, 'Paused') : null);
    replace(top,
      job.description ? h('p', { class: 'description' }, job.description) : null,
      actions(),
      message,
      h('section', { 'aria-labelledby': 'config-heading' },
        h('h2', { id: 'config-heading' }, 'Configuration'),
        configuration(job)));
    if (scheduleChanged) loadNextRuns().catch(() => {});
  }

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
      h('section', { 'aria-labelledby': 'next-heading' }, h('h2', { id: 'next-heading' }, 'Next runs'), nextRuns),
      h('section', { 'aria-labelledby': 'runs-heading' },
        h('h2', { id: 'runs-heading' }, 'Runs'),
        chartBox,
        h('div', { class: 'toolbar' }, labelled('Status', statusSelect)),
        runs.element),
      isAdmin() ? dialog : null);
    await runs.load({ job: name, status: statusSelect.value });
  }

  statusSelect.addEventListener('change', () => runs.load({ job: name, status: statusSelect.value }));
  ctx.on('run', (run) => { if (run.job === name) runs.applyRun(run); });
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
