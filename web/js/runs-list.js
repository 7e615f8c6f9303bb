// A paged, live table of runs, shared by the Job page and the Runs page:
// loads GET /api/v1/runs with a filter and cursor ("Load more"), and takes
// `run` events, updating a known run in place and inserting a new one that
// matches the filter at its place (newest first).

import { ApiError, get, segment } from './api.js';
import { h, replace } from './dom.js';
import {
  compareRunsNewestFirst, formatDuration, formatTime, formatValue, runInstantMs, runSortMs, shortRunId,
  supersedes,
} from './format.js';
import { dataTable, emptyState, errorAlert, loading, statusWord } from './ui.js';

const PAGE_SIZE = 50;

// Every run status, in the order the filters offer them.
export const RUN_STATUSES = ['running', 'succeeded', 'failed', 'fenced', 'skipped', 'missed', 'lost'];

// The table columns; `showJob` adds the Job column (Runs page). Columns
// marked `detail` hide on narrow screens (style.css), where a row keeps its
// time (with the job on a second line), status (with the error on a second
// line) and duration; the rest is one tap away on the run page.
function columns(showJob) {
  const list = [
    { name: 'Scheduled' }, { name: 'Status' }, { name: 'Trigger', detail: true }, { name: 'Token', detail: true },
    { name: 'Instance', detail: true }, { name: 'Attempts', detail: true }, { name: 'HTTP', detail: true },
    { name: 'Duration' }, { name: 'Error', detail: true },
  ];
  if (showJob) list.splice(1, 0, { name: 'Job', detail: true });
  return list;
}

// A class list for a cell of a `detail` column.
function detail(className = '') {
  return `${className} detail`.trim();
}

function runRow(run, showJob) {
  const linkText = run.scheduled_at ? formatTime(run.scheduled_at) : `run ${shortRunId(run.id)}`;
  const problem = run.error || run.reason;
  const jobHref = `#/jobs/${segment(run.job)}`;
  const cells = [
    h('td', {}, h('a', { href: `#/runs/${segment(run.id)}` }, linkText),
      showJob ? h('span', { class: 'sub narrow-only' }, h('a', { href: jobHref }, run.job)) : null),
    h('td', {}, statusWord(run.status),
      problem ? h('span', { class: 'sub clip narrow-only', title: problem }, problem) : null),
    h('td', { class: detail() }, formatValue(run.trigger)),
    h('td', { class: detail('num') }, run.fencing_token ? String(run.fencing_token) : '—'),
    h('td', { class: detail() }, formatValue(run.instance)),
    h('td', { class: detail('num') }, String(run.attempts ?? 0)),
    h('td', { class: detail('num') }, formatValue(run.http_status)),
    h('td', { class: 'num' }, formatDuration(run.duration_ms)),
    h('td', { class: detail() }, problem
      ? h('span', { class: 'clip error-text', title: problem }, problem)
      : '—'),
  ];
  if (showJob) cells.splice(1, 0, h('td', { class: detail() }, h('a', { href: jobHref }, run.job)));
  return h('tr', { 'data-run': run.id }, cells);
}

// Whether a run belongs in a list with this filter ({job, status, instance, trigger, since, until}).
export function runMatches(run, filter) {
  if (filter.job && run.job !== filter.job) return false;
  if (filter.status && run.status !== filter.status) return false;
  if (filter.instance && run.instance !== filter.instance) return false;
  if (filter.trigger && run.trigger !== filter.trigger) return false;
  const at = runInstantMs(run);
  if (filter.since && at < new Date(filter.since).getTime()) return false;
  if (filter.until && at >= new Date(filter.until).getTime()) return false;
  return true;
}

// Creates the list. Options: filter, showJob, emptyText(filter) (the
// empty state's words), signal (aborts
// loads when the page goes away), onChange(runs) after every change.
// Returns {element, load(filter), applyRun(run), runs()}.
export function createRunsList({ filter: initialFilter, showJob = false, emptyText, signal, onChange = () => {} }) {
  let filter = initialFilter;
  let runs = [];
  let cursor = null;
  let generation = 0;
  // Rows kept while live runs arrive: what the loads brought, at least a
  // page. Past it the oldest rows go ("Load more" brings them back), so a
  // page left open for hours neither grows without bound nor slows down.
  let keep = PAGE_SIZE;
  const columnList = columns(showJob);
  const { wrap, table, tbody } = dataTable('Runs', columnList.map((c) => c.name));
  table.classList.add('runs-table');
  table.querySelectorAll('thead th').forEach((th, i) => {
    if (columnList[i].detail) th.classList.add('detail');
  });
  const stateArea = h('div', { class: 'list-state' });
  const moreButton = h('button', { type: 'button', class: 'secondary', hidden: true }, 'Load more');
  const element = h('div', { class: 'runs-list' }, stateArea, wrap, moreButton);

  function renderRows() {
    replace(tbody, runs.map((run) => runRow(run, showJob)));
    wrap.hidden = runs.length === 0;
    moreButton.hidden = cursor === null;
  }

  function showError(error, retry) {
    replace(stateArea, errorAlert(error, retry));
  }

  async function fetchPage(reset) {
    const mine = generation;
    const page = await get('/runs', { ...filter, limit: PAGE_SIZE, cursor: reset ? null : cursor }, signal);
    if (mine !== generation) return; // A newer load replaced this one.
    const known = new Set(runs.map((r) => r.id));
    // Live runs may have arrived while the page loaded: keep newest first.
    runs = runs.concat(page.items.filter((r) => !known.has(r.id))).sort(compareRunsNewestFirst);
    cursor = page.next_cursor;
    keep = Math.max(keep, runs.length);
    replace(stateArea, runs.length === 0 ? emptyState(emptyText(filter)) : null);
    renderRows();
    onChange(runs);
  }

  async function load(nextFilter = filter) {
    filter = nextFilter;
    generation += 1;
    runs = [];
    cursor = null;
    keep = PAGE_SIZE;
    renderRows();
    replace(stateArea, loading());
    try {
      await fetchPage(true);
    } catch (error) {
      if (error instanceof ApiError) showError(error, () => load());
      else if (error.name !== 'AbortError') throw error;
    }
  }

  moreButton.addEventListener('click', async () => {
    moreButton.disabled = true;
    try {
      await fetchPage(false);
    } catch (error) {
      if (error instanceof ApiError) showError(error);
      else if (error.name !== 'AbortError') throw error;
    } finally {
      moreButton.disabled = false;
    }
  });

  function applyRun(run) {
    const index = runs.findIndex((r) => r.id === run.id);
    if (index !== -1) {
      if (!supersedes(run, runs[index])) return;
      runs[index] = run;
      const row = tbody.querySelector(`tr[data-run="${CSS.escape(run.id)}"]`);
      if (row) row.replaceWith(runRow(run, showJob));
      onChange(runs);
      return;
    }
    if (!runMatches(run, filter)) return;
    // Older than everything loaded while more pages remain: "Load more" brings it.
    const oldest = runs[runs.length - 1];
    if (cursor !== null && oldest && compareRunsNewestFirst(run, oldest) > 0) return;
    runs.push(run);
    runs.sort(compareRunsNewestFirst);
    if (runs.length > keep) {
      runs.length = keep;
      const oldest = runs[runs.length - 1];
      // The API's cursor (openapi: "<sort instant in epoch ms>~<run id>").
      cursor = `${runSortMs(oldest)}~${oldest.id}`;
    }
    replace(stateArea);
    renderRows();
    onChange(runs);
  }

  return { element, load, applyRun, runs: () => runs };
}
