// The Jobs page: one page of jobs at a time, searched, filtered, sorted and
// paged by the server (GET /jobs with q, paused, sort, limit and cursor), so
// a catalog of any size opens as fast as a small one. Each visible row gets
// a chart of its recent runs, fetched when the row scrolls into view. Job
// and run events keep the rows shown current.

import { get, segment } from '../api.js';
import { recentRunsChart } from '../chart.js';
import { h, replace } from '../dom.js';
import { compareRunsNewestFirst, formatTime, newerJob, runInstant, runInstantMs } from '../format.js';
import { isAdmin } from '../session.js';
import {
  dataTable, emptyState, errorAlert, labelled, loading, pageHeading, relativeTime, select, statusWord,
  timeWithRelative,
} from '../ui.js';

const ROWS_PER_PAGE = 100;
const RECENT_RUNS = 20;
const CHART_FETCHES_AT_ONCE = 4;
// Bursts of events refresh the page shown at most this often.
const REFRESH_DELAY_MS = 1000;

// Sort choices: [select value, label, the API's sort].
const SORTS = [
  ['name', 'Name', 'name'],
  ['next', 'Next run', 'next'],
  ['last', 'Last run', '-last_run'],
  ['failures', 'Failures', '-failures'],
];

// The view survives navigation within the tab (back from a job keeps it).
const view = { q: '', state: 'all', sort: 'name', cursors: [null] };

function apiSort(choice) {
  return (SORTS.find(([value]) => value === choice) || SORTS[0])[2];
}

export async function render(ctx) {
  const jobs = new Map(); // the jobs of the page shown, by name
  let order = []; // their names in the server's order
  let more = false;
  let nextCursor = null;
  const recentRuns = new Map(); // name -> runs, newest first, or 'loading'
  const chartQueue = [];
  let chartFetches = 0;
  let loadTimer = null;
  let renderTimer = null;
  let searchTimer = null;
  let loadController = null;

  const search = h('input', { type: 'search', value: view.q, autocomplete: 'off' });
  const stateSelect = select([['all', 'All'], ['active', 'Active'], ['paused', 'Paused']], { value: view.state });
  const sortSelect = select(SORTS.map(([value, text]) => [value, text]), { value: view.sort });
  const listState = h('div', { class: 'list-state' });
  const { wrap, table, tbody } = dataTable('Jobs',
    ['Name', 'Status', 'Next run', 'Last run', 'Failures', 'Last error', 'Recent runs', 'Schedule', 'Time zone']);
  table.classList.add('jobs-table');
  const rangeText = h('p', { class: 'range', 'aria-live': 'polite' });
  const previous = h('button', { type: 'button', class: 'secondary' }, 'Previous');
  const next = h('button', { type: 'button', class: 'secondary' }, 'Next');
  const pager = h('div', { class: 'pager' }, previous, rangeText, next);

  const chartObserver = new IntersectionObserver((entries) => {
    for (const entry of entries) {
      if (!entry.isIntersecting) continue;
      chartObserver.unobserve(entry.target);
      queueChart(entry.target.dataset.job);
    }
  });
  ctx.signal.addEventListener('abort', () => {
    chartObserver.disconnect();
    clearTimeout(loadTimer);
    clearTimeout(renderTimer);
    clearTimeout(searchTimer);
  });

  function chartCell(job) {
    const runs = recentRuns.get(job.name);
    if (!job.last_run && !Array.isArray(runs)) return h('td', {}, h('span', { class: 'muted' }, 'No runs'));
    const cell = h('td', { 'data-job': job.name, class: 'spark-cell' });
    if (Array.isArray(runs)) cell.append(runs.length ? recentRunsChart(runs) : h('span', { class: 'muted' }, 'No runs'));
    else chartObserver.observe(cell);
    return cell;
  }

  function queueChart(name) {
    if (recentRuns.has(name)) return;
    recentRuns.set(name, 'loading');
    chartQueue.push(name);
    pumpCharts();
  }

  // Fetches recent runs for queued rows, a few at a time.
  async function pumpCharts() {
    while (chartFetches < CHART_FETCHES_AT_ONCE && chartQueue.length) {
      const name = chartQueue.shift();
      chartFetches += 1;
      get('/runs', { job: name, limit: RECENT_RUNS }, ctx.signal)
        .then((page) => { recentRuns.set(name, page.items); })
        .catch(() => { recentRuns.delete(name); })
        .finally(() => {
          chartFetches -= 1;
          refreshChartCell(name);
          if (!ctx.signal.aborted) pumpCharts();
        });
    }
  }

  function refreshChartCell(name) {
    const cell = tbody.querySelector(`td[data-job="${CSS.escape(name)}"]`);
    const job = jobs.get(name);
    if (cell && job) cell.replaceWith(chartCell(job));
  }

  // Status: the job's state, and the outcome of its last run under it.
  function statusCell(job) {
    return h('td', { class: 'status-cell' },
      job.paused ? h('span', { class: 'paused' }, 'Paused') : 'Active',
      h('span', { class: 'sub' }, job.last_run ? statusWord(job.last_run.status) : h('span', { class: 'muted' }, 'never run')));
  }

  function lastRunCell(job) {
    const at = job.last_run ? runInstant(job.last_run) : null;
    if (!at) return h('td', {}, h('span', { class: 'muted' }, 'never'));
    // Not a link: a row's one link is the job's name.
    return h('td', {}, h('span', { class: 'when' },
      relativeTime(at),
      h('time', { datetime: at, class: 'absolute' }, formatTime(at))));
  }

  function jobRow(job) {
    const scheduleWords = job.schedule_description || job.schedule;
    const failures = job.consecutive_failures ?? 0;
    return h('tr', { 'data-name': job.name },
      h('th', { scope: 'row' },
        h('a', { href: `#/jobs/${segment(job.name)}` }, job.name),
        job.description ? h('span', { class: 'sub clip' }, job.description) : null),
      statusCell(job),
      h('td', {}, job.paused ? '—' : timeWithRelative(job.next_fire_at, undefined, { future: true })),
      lastRunCell(job),
      h('td', { class: failures ? 'num bad-count' : 'num' }, String(failures)),
      h('td', {}, job.last_error ? h('span', { class: 'clip error-text', title: job.last_error }, job.last_error) : '—'),
      chartCell(job),
      h('td', { title: job.schedule }, scheduleWords, h('code', { class: 'sub' }, job.schedule)),
      h('td', {}, job.timezone));
  }

  // Coalesces bursts of events into one render.
  function scheduleRender() {
    if (renderTimer === null) renderTimer = setTimeout(renderList, 150);
  }

  function renderList() {
    clearTimeout(renderTimer);
    renderTimer = null;
    const shown = order.map((name) => jobs.get(name)).filter(Boolean);
    // Keep keyboard focus on the same job's link across a re-render.
    const focusedName = document.activeElement?.closest?.('tr[data-name]')?.dataset.name;
    chartObserver.disconnect(); // The old rows' cells go away with them.
    replace(tbody, shown.map(jobRow));
    if (focusedName) tbody.querySelector(`tr[data-name="${CSS.escape(focusedName)}"] a`)?.focus();

    const page = view.cursors.length - 1;
    const filtered = view.q.trim() !== '' || view.state !== 'all';
    if (shown.length === 0 && page === 0) {
      replace(listState, filtered
        ? emptyState('No jobs match these filters.')
        : emptyState('No jobs yet. ', isAdmin() ? h('a', { href: '#/jobs/new' }, 'New job') : null));
    } else {
      replace(listState);
    }
    wrap.hidden = shown.length === 0;
    pager.hidden = shown.length === 0 && page === 0;
    const start = page * ROWS_PER_PAGE;
    rangeText.textContent = shown.length
      ? `${start + 1}–${start + shown.length}${more ? '' : ` of ${start + shown.length}`}`
      : '';
    previous.disabled = page === 0;
    next.disabled = !more;
  }

  function query(cursor) {
    return {
      q: view.q.trim(),
      paused: view.state === 'all' ? null : String(view.state === 'paused'),
      sort: apiSort(view.sort) === 'name' ? null : apiSort(view.sort),
      limit: ROWS_PER_PAGE,
      cursor,
    };
  }

  // Loads the page whose cursor is last in view.cursors. `quiet` keeps the
  // rows on screen while it loads (a refresh rather than a new page).
  async function loadPage({ quiet = false } = {}) {
    clearTimeout(loadTimer);
    loadTimer = null;
    loadController?.abort();
    loadController = new AbortController();
    const { signal } = loadController;
    ctx.signal.addEventListener('abort', () => loadController?.abort(), { once: true });
    if (!quiet) replace(listState, loading());
    try {
      const page = await get('/jobs', query(view.cursors[view.cursors.length - 1]), signal);
      jobs.clear();
      for (const job of page.items) jobs.set(job.name, job);
      order = page.items.map((job) => job.name);
      nextCursor = page.next_cursor;
      more = Boolean(nextCursor);
      renderList();
    } catch (error) {
      if (error.name === 'AbortError' || signal.aborted) return;
      replace(listState, errorAlert(error, () => loadPage()));
    }
  }

  // Coalesces bursts of events into one quiet reload of the page shown.
  function scheduleRefresh() {
    if (loadTimer === null) loadTimer = setTimeout(() => loadPage({ quiet: true }), REFRESH_DELAY_MS);
  }

  function restart() {
    view.cursors = [null];
    loadPage();
  }

  search.addEventListener('input', () => {
    view.q = search.value;
    clearTimeout(searchTimer);
    searchTimer = setTimeout(restart, 250);
  });
  stateSelect.addEventListener('change', () => { view.state = stateSelect.value; restart(); });
  sortSelect.addEventListener('change', () => { view.sort = sortSelect.value; restart(); });
  previous.addEventListener('click', () => {
    if (view.cursors.length > 1) view.cursors.pop();
    loadPage();
  });
  next.addEventListener('click', () => {
    if (!nextCursor) return;
    view.cursors.push(nextCursor);
    loadPage();
  });

  ctx.on('job', (event) => {
    if (jobs.has(event.name) && event.job && event.action !== 'deleted' && newerJob(event.job, jobs.get(event.name))) {
      jobs.set(event.name, { ...jobs.get(event.name), ...event.job });
      scheduleRender();
    }
    // Created, deleted or re-ordered jobs: the server says where they go.
    scheduleRefresh();
  });
  ctx.on('run', (run) => {
    const job = jobs.get(run.job);
    if (!job) return;
    if (!job.last_run || job.last_run.id === run.id || runInstantMs(run) >= runInstantMs(job.last_run)) {
      jobs.set(run.job, { ...job, last_run: run });
    }
    const runs = recentRuns.get(run.job);
    if (Array.isArray(runs)) {
      const others = runs.filter((r) => r.id !== run.id);
      recentRuns.set(run.job, [run, ...others].sort(compareRunsNewestFirst).slice(0, RECENT_RUNS));
    }
    scheduleRender();
    // Failure counts, errors and next runs change when a run ends.
    if (run.status !== 'running') scheduleRefresh();
  });
  ctx.on('resync', () => loadPage({ quiet: true }));
  // A next run that has come due is replaced by the following one.
  ctx.every(2000, () => {
    const now = Date.now();
    const due = [...jobs.values()].some((job) => !job.paused && job.next_fire_at &&
      new Date(job.next_fire_at).getTime() < now - 500);
    if (due) scheduleRefresh();
  });

  replace(ctx.main,
    h('div', { class: 'page-head' },
      pageHeading('Jobs'),
      isAdmin() ? h('a', { href: '#/jobs/new', class: 'button primary' }, 'New job') : null),
    h('div', { class: 'toolbar' },
      labelled('Search jobs', search),
      labelled('State', stateSelect),
      labelled('Sort by', sortSelect)),
    listState,
    wrap,
    pager);
  await loadPage();
}
