// Plain SVG charts of runs: a small per-job strip of recent runs and a
// duration-over-time chart. Each is role="img" with an aria-label that
// says in words what the picture shows; colours come from CSS classes and
// outcomes also differ by shape, so colour is never the only signal.

import { h, s } from './dom.js';
import { formatDuration, formatTime, runInstantMs } from './format.js';

// Outcome groups, each drawn in its own colour and shape.
const OUTCOME = {
  succeeded: 'ok',
  failed: 'bad',
  fenced: 'bad',
  lost: 'bad',
  skipped: 'skip',
  missed: 'skip',
  running: 'running',
};

function outcome(run) {
  return OUTCOME[run.status] || 'skip';
}

// "18 succeeded, 2 failed, 1 missed" in a fixed order of statuses.
function countsText(runs) {
  const counts = new Map();
  for (const run of runs) counts.set(run.status, (counts.get(run.status) || 0) + 1);
  return Object.keys(OUTCOME)
    .filter((status) => counts.has(status))
    .map((status) => `${counts.get(status)} ${status}`)
    .join(', ');
}

function durations(runs) {
  return runs.map((r) => r.duration_ms).filter((d) => typeof d === 'number').sort((a, b) => a - b);
}

// A strip of up to `runs.length` bars, oldest on the left: height is the
// duration relative to the longest; failures without a duration are full
// height, skips and misses a stub, a running run an outline.
export function recentRunsChart(runs) {
  const ordered = [...runs].sort((a, b) => runInstantMs(a) - runInstantMs(b));
  const width = 120;
  const height = 24;
  const slot = width / Math.max(ordered.length, 12);
  const times = durations(ordered);
  const longest = times.length ? times[times.length - 1] : 0;
  const bars = ordered.map((run, index) => {
    const kind = outcome(run);
    let barHeight = 3;
    if (typeof run.duration_ms === 'number' && longest > 0) {
      barHeight = Math.max(3, (run.duration_ms / longest) * height);
    } else if (kind === 'bad' || kind === 'running') {
      barHeight = height;
    }
    return s('rect', {
      class: `bar ${kind}`,
      x: (index * slot + 0.5).toFixed(1),
      y: (height - barHeight).toFixed(1),
      width: Math.max(1, slot - 1.5).toFixed(1),
      height: barHeight.toFixed(1),
    });
  });
  const summary = `${ordered.length} recent runs: ${countsText(ordered)}` +
    (longest > 0 ? `; longest ${formatDuration(longest)}` : '');
  return s('svg', {
    class: 'spark',
    role: 'img',
    'aria-label': summary,
    viewBox: `0 0 ${width} ${height}`,
    width,
    height,
  }, bars);
}

const SHAPE_SIZE = 4.5;

function marker(kind, x, y) {
  if (kind === 'bad') {
    // A cross, so failures read without colour.
    const d = SHAPE_SIZE;
    return s('path', {
      class: `mark ${kind}`,
      d: `M${x - d},${y - d}L${x + d},${y + d}M${x - d},${y + d}L${x + d},${y - d}`,
    });
  }
  if (kind === 'skip') {
    return s('rect', {
      class: `mark ${kind}`,
      x: x - SHAPE_SIZE + 1, y: y - SHAPE_SIZE + 1, width: 2 * SHAPE_SIZE - 2, height: 2 * SHAPE_SIZE - 2,
    });
  }
  return s('circle', { class: `mark ${kind}`, cx: x, cy: y, r: SHAPE_SIZE });
}

const LEGEND = [
  ['ok', 'succeeded (dot)'],
  ['bad', 'failed, fenced or lost (cross)'],
  ['skip', 'skipped or missed (square, on the axis)'],
  ['running', 'running (ring)'],
];

// Duration (y) of each run against its instant (x), in a <figure> with a
// legend. Runs without a duration sit on the time axis. Runs that carry
// lag_ms (slot to first request) also get a lag mark (a dash) on the same
// scale.
export function runsOverTimeChart(runs) {
  const width = 640;
  const height = 200;
  const left = 64;
  const right = 16;
  const top = 12;
  const bottom = 28;
  const plotWidth = width - left - right;
  const plotHeight = height - top - bottom;
  const ordered = runs.filter((r) => Number.isFinite(runInstantMs(r)))
    .sort((a, b) => runInstantMs(a) - runInstantMs(b));
  const first = ordered.length ? runInstantMs(ordered[0]) : 0;
  const last = ordered.length ? runInstantMs(ordered[ordered.length - 1]) : 0;
  const times = durations(ordered);
  const longest = times.length ? times[times.length - 1] : 0;
  const median = times.length ? times[Math.floor(times.length / 2)] : 0;
  const lags = ordered.map((r) => r.lag_ms).filter((d) => typeof d === 'number').sort((a, b) => a - b);
  const longestLag = lags.length ? lags[lags.length - 1] : 0;
  const medianLag = lags.length ? lags[Math.floor(lags.length / 2)] : 0;
  const scaleTop = Math.max(longest, longestLag);
  const yMax = scaleTop > 0 ? scaleTop * 1.1 : 1;
  const xOf = (ms) => (last === first ? left + plotWidth / 2 : left + ((ms - first) / (last - first)) * plotWidth);
  const yOf = (ms) => top + plotHeight - (ms / yMax) * plotHeight;

  const axes = [
    s('line', { class: 'axis', x1: left, y1: top + plotHeight, x2: left + plotWidth, y2: top + plotHeight }),
    s('line', { class: 'axis', x1: left, y1: top, x2: left, y2: top + plotHeight }),
    s('line', { class: 'grid', x1: left, y1: yOf(scaleTop), x2: left + plotWidth, y2: yOf(scaleTop) }),
    s('text', { class: 'tick', x: left - 6, y: top + plotHeight, 'text-anchor': 'end' }, '0'),
    scaleTop > 0 ? s('text', { class: 'tick', x: left - 6, y: yOf(scaleTop) + 4, 'text-anchor': 'end' }, formatDuration(scaleTop)) : null,
  ];
  if (ordered.length) {
    axes.push(s('text', { class: 'tick', x: left, y: height - 8, 'text-anchor': 'start' }, formatTime(new Date(first).toISOString())));
    if (last !== first) {
      axes.push(s('text', { class: 'tick', x: left + plotWidth, y: height - 8, 'text-anchor': 'end' }, formatTime(new Date(last).toISOString())));
    }
  }
  const marks = ordered.map((run) => {
    const hasDuration = typeof run.duration_ms === 'number';
    return marker(outcome(run), xOf(runInstantMs(run)), hasDuration ? yOf(run.duration_ms) : top + plotHeight);
  });
  const lagMarks = ordered.filter((run) => typeof run.lag_ms === 'number').map((run) => {
    const x = xOf(runInstantMs(run));
    const y = yOf(run.lag_ms);
    return s('line', { class: 'mark lag', x1: x - SHAPE_SIZE, y1: y, x2: x + SHAPE_SIZE, y2: y });
  });

  const label = ordered.length === 0
    ? 'Run chart: no runs to show.'
    : `Duration and outcome of ${ordered.length} runs from ${formatTime(new Date(first).toISOString())} ` +
      `to ${formatTime(new Date(last).toISOString())}: ${countsText(ordered)}.` +
      (longest > 0 ? ` Median duration ${formatDuration(median)}, longest ${formatDuration(longest)}.` : '') +
      (lags.length ? ` Median lag ${formatDuration(medianLag)}, longest ${formatDuration(longestLag)}.` : '');
  const svg = s('svg', {
    class: 'chart',
    role: 'img',
    'aria-label': label,
    viewBox: `0 0 ${width} ${height}`,
    preserveAspectRatio: 'xMidYMid meet',
  }, axes, marks, lagMarks);
  const legend = h('ul', { class: 'legend' }, LEGEND.map(([kind, text]) => h('li', {},
    s('svg', { class: 'legend-mark', viewBox: '-6 -6 12 12', width: 12, height: 12, 'aria-hidden': 'true' }, marker(kind, 0, 0)),
    ` ${text}`)),
  lags.length ? h('li', {},
    s('svg', { class: 'legend-mark', viewBox: '-6 -6 12 12', width: 12, height: 12, 'aria-hidden': 'true' },
      s('line', { class: 'mark lag', x1: -SHAPE_SIZE, y1: 0, x2: SHAPE_SIZE, y2: 0 })),
    ' lag: slot to first request (dash)') : null);
  return h('figure', { class: 'chart-figure' }, svg, h('figcaption', {}, legend));
}
