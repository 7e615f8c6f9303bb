// The Jobs page: every job, loaded in pages of 500 (following next_cursor,
// yielding between pages so the page stays responsive), then searched,
// filtered and sorted in memory and shown 100 rows at a time. Each visible
// row gets a chart of its recent runs, fetched when the row scrolls into
// view. Job and run events keep it current.

import { get, segment } from '../api.js';
import { recentRunsChart } from '../chart.js';
import { h, replace } from '../dom.js';
import { compareRunsNewestFirst, newerJob, runInstantMs } from '../format.js';
import { isAdmin } from '../session.js';
import {
  dataTable, emptyState, errorAlert, labelled, loading, pageHeading, select, statusWord, timeWithRelative,
} from '../ui.js';

const FETCH_LIMIT = 500;
const ROWS_PER_PAGE = 100;
const RECENT_RUNS = 20;
const CHART_FETCHES_AT_ONCE = 4;

// The view survives navigation within the tab (back from a job keeps it).
const view = { q: '', state: 'all', sort: 'name', page: 0 };

const SORTS = {
  name: (a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0),
  // Soonest first; paused and never-again jobs last.
  next: (a, b) => timeOr(a.next_fire_at, Infinity) - timeOr(b.next_fire_at, Infinity) || SORTS.name(a, b),
  // Most recent run first; jobs without runs last.
  last: (a, b) => lastRunMs(b) - lastRunMs(a) || SORTS.name(a, b),
};

function timeOr(iso, fallback) {
  return iso ? new Date(iso).getTime() : fallback;
}

function lastRunMs(job) {
  return job.last_run ? runInstantMs(job.last_run) : -Infinity;
}

function matches(job, needle) {
  if (view.state === 'active' && job.paused) return false;
  if (view.state === 'paused' && !job.paused) return false;
  if (!needle) return true;
  return job.name.toLowerCase().includes(needle) || (job.description || '').toLowerCase().includes(needle);
}

export async function render(ctx) {
  const jobs = new Map();
  const recentRuns = new Map(); // name -> runs, newest first, or 'loading'
  const chartQueue = [];
  let chartFetches = 0;
  let loaded = false;
  let renderTimer = null;

  const search = h('input', { type: 'search', value: view.q, autocomplete: 'off' });
  const stateSelect = select([['all', 'All'], ['active', 'Active'], ['paused', 'Paused']], { value: view.state });
  const sortSelect = select([['name', 'Name'], ['next', 'Next run'], ['last', 'Last run']], { value: view.sort });
  const progress = h('p', { 'aria-live': 'polite', class: 'state progress' });
  const listState = h('div', { class: 'list-state' });
  const { wrap, tbody } = dataTable('Jobs', ['Name', 'Schedule', 'Time zone', 'Next run', 'Last run', 'Recent runs', 'State']);
  const rangeText = h('p', { class: 'range' });
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
  ctx.signal.addEventListener('abort', () => chartObserver.disconnect());

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

  function jobRow(job) {
    const scheduleWords = job.schedule_description || job.schedule;
    return h('tr', { 'data-name': job.name },
      h('th', { scope: 'row' },
        h('a', { href: `#/jobs/${segment(job.name)}` }, job.name),
        job.description ? h('span', { class: 'sub clip' }, job.description) : null),
      h('td', { title: job.schedule },
        scheduleWords,
        h('code', { class: 'sub' }, job.schedule)),
      h('td', {}, job.timezone),
      h('td', {}, job.paused ? '—' : timeWithRelative(job.next_fire_at)),
      h('td', {}, job.last_run ? statusWord(job.last_run.status) : h('span', { class: 'muted' }, 'never')),
      chartCell(job),
      h('td', {}, job.paused ? h('span', { class: 'paused' }, 'Paused') : 'Active'));
  }

  function filtered() {
    const needle = view.q.trim().toLowerCase();
    return [...jobs.values()].filter((job) => matches(job, needle)).sort(SORTS[view.sort]);
  }

  function renderList() {
    renderTimer = null;
    if (!loaded && jobs.size === 0) return;
    const list = filtered();
    const pages = Math.max(1, Math.ceil(list.length / ROWS_PER_PAGE));
    view.page = Math.min(view.page, pages - 1);
    const start = view.page * ROWS_PER_PAGE;
    const shown = list.slice(start, start + ROWS_PER_PAGE);
    // Keep keyboard focus on the same job's link across a re-render.
    const focusedName = document.activeElement?.closest?.('tr[data-name]')?.dataset.name;
    chartObserver.disconnect(); // The old rows' cells go away with them.
    replace(tbody, shown.map(jobRow));
    if (focusedName) tbody.querySelector(`tr[data-name="${CSS.escape(focusedName)}"] a`)?.focus();

    if (jobs.size === 0) {
      replace(listState, emptyState('No jobs yet. ', isAdmin() ? h('a', { href: '#/jobs/new' }, 'New job') : null));
    } else if (list.length === 0) {
      replace(listState, emptyState('No jobs match these filters.'));
    } else {
      replace(listState);
    }
    wrap.hidden = list.length === 0;
    pager.hidden = list.length === 0;
    rangeText.textContent = list.length ? `${start + 1}–${start + shown.length} of ${list.length}` : '';
    previous.disabled = view.page === 0;
    next.disabled = view.page >= pages - 1;
  }

  // Coalesces bursts of events and keystrokes into one render.
  function scheduleRender(delayMs = 150) {
    if (renderTimer === null) renderTimer = setTimeout(renderList, delayMs);
  }

  function onFilterChange() {
    view.q = search.value;
    view.state = stateSelect.value;
    view.sort = sortSelect.value;
    view.page = 0;
    scheduleRender();
  }
  search.addEventListener('input', onFilterChange);
  stateSelect.addEventListener('change', onFilterChange);
  sortSelect.addEventListener('change', onFilterChange);
  previous.addEventListener('click', () => { view.page -= 1; renderList(); });
  next.addEventListener('click', () => { view.page += 1; renderList(); });
  ctx.signal.addEventListener('abort', () => clearTimeout(renderTimer));

  async function loadAll() {
    jobs.clear();
    recentRuns.clear();
    loaded = false;
    replace(listState, loading());
    wrap.hidden = true;
    pager.hidden = true;
    let cursor = null;
    try {
      do {
        const page = await get('/jobs', { limit: FETCH_LIMIT, cursor }, ctx.signal);
        for (const job of page.items) jobs.set(job.name, job);
        cursor = page.next_cursor;
        progress.textContent = cursor ? `Loading jobs… ${jobs.size} loaded so far.` : '';
        renderList();
      } while (cursor);
    } catch (error) {
      if (error.name === 'AbortError') return;
      progress.textContent = '';
      replace(listState, errorAlert(error, loadAll));
      return;
    }
    loaded = true;
    renderList();
  }

  // Refreshes visible jobs whose next fire time has passed, so "Next run"
  // and "Last run" stay true even without events.
  async function refreshDue() {
    const now = Date.now() - 1000;
    const due = [...tbody.querySelectorAll('tr[data-name]')]
      .map((row) => jobs.get(row.dataset.name))
      .filter((job) => job && !job.paused && job.next_fire_at && new Date(job.next_fire_at).getTime() < now)
      .slice(0, 10);
    const fresh = await Promise.allSettled(due.map((job) => get(`/jobs/${segment(job.name)}`, {}, ctx.signal)));
    for (const result of fresh) {
      if (result.status === 'fulfilled') jobs.set(result.value.name, result.value);
    }
    if (due.length) scheduleRender();
  }

  ctx.on('job', (event) => {
    if (event.action === 'deleted' || !event.job) jobs.delete(event.name);
    else if (newerJob(event.job, jobs.get(event.name))) jobs.set(event.name, event.job);
    scheduleRender();
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
  });
  ctx.on('resync', loadAll);
  ctx.every(5000, () => { refreshDue().catch(() => {}); });

  replace(ctx.main,
    h('div', { class: 'page-head' },
      pageHeading('Jobs'),
      isAdmin() ? h('a', { href: '#/jobs/new', class: 'button primary' }, 'New job') : null),
    h('div', { class: 'toolbar' },
      labelled('Search jobs', search),
      labelled('State', stateSelect),
      labelled('Sort by', sortSelect)),
    progress,
    listState,
    wrap,
    pager);
  await loadAll();
}
