// Formatting of times, durations and plain values for display.
// Pure functions: no DOM, no state. API times are RFC 3339 UTC strings.

export const DASH = '—';

const absoluteFormat = new Intl.DateTimeFormat(undefined, {
  dateStyle: 'medium',
  timeStyle: 'medium',
});

// "21 Nov 2026, 12:50:00" in the browser's time zone, or in `timeZone`
// when given (falling back to the browser's when the zone is unknown).
export function formatTime(iso, timeZone) {
  if (!iso) return DASH;
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return iso;
  if (!timeZone) return absoluteFormat.format(date);
  try {
    return new Intl.DateTimeFormat(undefined, {
      dateStyle: 'medium',
      timeStyle: 'medium',
      timeZone,
    }).format(date);
  } catch {
    return absoluteFormat.format(date);
  }
}

const RELATIVE_STEPS = [
  { limit: 60, unit: 1, name: 's' },
  { limit: 3600, unit: 60, name: 'min' },
  { limit: 86400, unit: 3600, name: 'h' },
  { limit: Infinity, unit: 86400, name: 'd' },
];

// "in 3 min", "12 s ago", "now". `nowMs` is injectable for tests.
export function formatRelative(iso, nowMs = Date.now()) {
  if (!iso) return DASH;
  const deltaSeconds = Math.round((new Date(iso).getTime() - nowMs) / 1000);
  const size = Math.abs(deltaSeconds);
  if (size < 1) return 'now';
  const step = RELATIVE_STEPS.find((s) => size < s.limit);
  const amount = Math.floor(size / step.unit);
  const text = `${amount} ${step.name}`;
  return deltaSeconds > 0 ? `in ${text}` : `${text} ago`;
}

// "306 ms", "1.2 s", "2 min 5 s", "1 h 4 min".
export function formatDuration(ms) {
  if (ms === null || ms === undefined) return DASH;
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60000) return `${Number((ms / 1000).toFixed(ms < 10000 ? 1 : 0))} s`;
  const totalSeconds = Math.round(ms / 1000);
  const hours = Math.floor(totalSeconds / 3600);
  const minutes = Math.floor((totalSeconds % 3600) / 60);
  const seconds = totalSeconds % 60;
  if (hours > 0) return minutes ? `${hours} h ${minutes} min` : `${hours} h`;
  return seconds ? `${minutes} min ${seconds} s` : `${minutes} min`;
}

// Any scalar from the API as text; null and undefined become a dash.
export function formatValue(value) {
  if (value === null || value === undefined || value === '') return DASH;
  if (typeof value === 'boolean') return value ? 'yes' : 'no';
  return String(value);
}

// The instant a run sorts by in history: its slot, else its start.
export function runInstant(run) {
  return run.scheduled_at || run.started_at || null;
}

// Milliseconds of a run's sort instant, for ordering (unknown sorts last).
export function runInstantMs(run) {
  const iso = runInstant(run);
  return iso ? new Date(iso).getTime() : -Infinity;
}

// How far a run has come, as the server's history ranks states: running,
// then skipped / missed / lost, then a delivered outcome. Events from
// different writers can arrive out of order; a page keeps the further state.
export function runStateRank(status) {
  if (status === 'running') return 0;
  if (status === 'skipped' || status === 'missed' || status === 'lost') return 1;
  return 2;
}

// Whether an incoming copy of a run may replace the one shown.
export function supersedes(incoming, shown) {
  return !shown || runStateRank(incoming.status) >= runStateRank(shown.status);
}

// Whether an incoming job definition may replace the one shown (never an older version).
export function newerJob(incoming, shown) {
  return !shown || incoming.version >= shown.version;
}

// The instant the API orders run history by (and puts in run cursors): a
// scheduled run's slot, a manual run's start.
export function runSortMs(run) {
  const iso = run.trigger !== 'manual' && run.scheduled_at ? run.scheduled_at : run.started_at || run.scheduled_at;
  return iso ? new Date(iso).getTime() : 0;
}

// Newest first, then by id for a stable order of runs of one instant.
export function compareRunsNewestFirst(a, b) {
  const delta = runInstantMs(b) - runInstantMs(a);
  if (delta !== 0) return delta;
  if (a.id === b.id) return 0;
  return a.id < b.id ? 1 : -1;
}

// The short form of a run id used where the scheduled time is unknown.
export function shortRunId(id) {
  return id.length > 12 ? id.slice(0, 12) : id;
}

// A datetime-local input value ("2026-11-21T08:00") as an RFC 3339 UTC
// string for the API, or null when empty or invalid.
export function localInputToIso(value) {
  if (!value) return null;
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? null : date.toISOString();
}

// The reverse of localInputToIso, for filling an input from a query string.
export function isoToLocalInput(iso) {
  if (!iso) return '';
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return '';
  const pad = (n) => String(n).padStart(2, '0');
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}` +
    `T${pad(date.getHours())}:${pad(date.getMinutes())}`;
}
