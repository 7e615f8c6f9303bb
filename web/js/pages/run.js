// The Run page: every field of one run, kept current by `run` events.

import { ApiError, get, segment } from '../api.js';
import { h, replace } from '../dom.js';
import { DASH, formatDuration, formatTime, formatValue, supersedes } from '../format.js';
import { definitionList, errorAlert, loading, pageHeading, statusWord } from '../ui.js';

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
    ['Fencing token', run.fencing_token ? String(run.fencing_token) : DASH],
    ['Instance', formatValue(run.instance)],
    ['Attempts', String(run.attempts ?? 0)],
    ['HTTP status', formatValue(run.http_status)],
    ['Lease lost', run.lease_lost ? 'yes' : 'no'],
    ['Error', formatValue(run.error)],
    ['Response excerpt', run.response_excerpt ? h('pre', { class: 'excerpt' }, run.response_excerpt) : DASH],
  ]);
}

export async function render(ctx) {
  const id = ctx.params.name;
  const body = h('div', {}, loading());
  replace(ctx.main, pageHeading(`Run ${id}`), body);

  let shown = null;

  async function load() {
    try {
      const run = await get(`/runs/${segment(id)}`, {}, ctx.signal);
      shown = run;
      replace(body, runFields(run));
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      replace(body, errorAlert(error, load));
    }
  }

  ctx.on('run', (run) => {
    if (run.id !== id || !supersedes(run, shown)) return;
    shown = run;
    replace(body, runFields(run));
  });
  ctx.on('resync', load);
  await load();
}
