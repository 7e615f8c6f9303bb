// The Runs page: the cluster-wide history, newest first, filtered by job,
// status, instance, trigger and time range (kept in the address,
// `#/runs?job=x&status=failed`),
// with new runs that match appearing live at the top.

import { h, uniqueId } from '../dom.js';
import { get } from '../api.js';
import { isoToLocalInput, localInputToIso } from '../format.js';
import { RUN_STATUSES, createRunsList } from '../runs-list.js';
import { labelled, pageHeading, select } from '../ui.js';

const FILTER_DELAY_MS = 400;

// The filter as the API takes it, from the hash's query string.
function filterFromQuery(query) {
  return {
    job: query.get('job') || '',
    status: query.get('status') || '',
    instance: query.get('instance') || '',
    trigger: query.get('trigger') || '',
    since: query.get('since') || '',
    until: query.get('until') || '',
  };
}

export async function render(ctx) {
  const filter = filterFromQuery(ctx.query);
  const jobNamesId = uniqueId('job-names');
  const jobInput = h('input', { type: 'text', list: jobNamesId, value: filter.job, autocomplete: 'off', spellcheck: 'false' });
  const jobNames = h('datalist', { id: jobNamesId });
  const statusSelect = select([['', 'All'], ...RUN_STATUSES], { value: filter.status });
  const instanceInput = h('input', { type: 'text', value: filter.instance, autocomplete: 'off', spellcheck: 'false' });
  const triggerSelect = select([['', 'All'], 'schedule', 'manual', 'catchup', 'retry'], { value: filter.trigger });
  const fromInput = h('input', { type: 'datetime-local', value: isoToLocalInput(filter.since) });
  const toInput = h('input', { type: 'datetime-local', value: isoToLocalInput(filter.until) });
  const runs = createRunsList({
    filter,
    showJob: true,
    emptyText: (current) => (Object.values(current).some(Boolean) ? 'No runs match these filters.' : 'No runs yet.'),
    signal: ctx.signal,
  });

  function currentFilter() {
    return {
      job: jobInput.value.trim(),
      status: statusSelect.value,
      instance: instanceInput.value.trim(),
      trigger: triggerSelect.value,
      since: localInputToIso(fromInput.value) || '',
      until: localInputToIso(toInput.value) || '',
    };
  }

  // Applies the filters: reloads the list and records them in the address
  // (replaceState, so no hashchange and no new history entry per keystroke).
  function applyFilters() {
    const next = currentFilter();
    const params = new URLSearchParams(Object.entries(next).filter(([, value]) => value));
    const search = params.toString();
    window.history.replaceState(null, '', `#/runs${search ? `?${search}` : ''}`);
    runs.load(next);
  }

  let filterTimer = null;
  function applySoon() {
    clearTimeout(filterTimer);
    filterTimer = setTimeout(applyFilters, FILTER_DELAY_MS);
  }
  jobInput.addEventListener('input', applySoon);
  instanceInput.addEventListener('input', applySoon);
  for (const control of [statusSelect, triggerSelect, fromInput, toInput]) control.addEventListener('change', applyFilters);
  ctx.signal.addEventListener('abort', () => clearTimeout(filterTimer));

  ctx.on('run', (run) => runs.applyRun(run));
  ctx.on('resync', () => runs.load(currentFilter()));

  ctx.main.append(
    pageHeading('Runs'),
    h('form', { class: 'toolbar', role: 'search', 'aria-label': 'Filter runs', onsubmit: (e) => { e.preventDefault(); applyFilters(); } },
      labelled('Job', jobInput),
      labelled('Status', statusSelect),
      labelled('Instance', instanceInput),
      labelled('Trigger', triggerSelect),
      labelled('From', fromInput),
      labelled('To', toInput),
      jobNames),
    runs.element);

  // Suggest job names in the Job filter (the first page is enough to help).
  get('/jobs', { limit: 500 }, ctx.signal)
    .then((page) => jobNames.replaceChildren(...page.items.map((job) => h('option', { value: job.name }))))
    .catch(() => {});
  await runs.load(filter);
}
