// The Cluster page: the mode, the instances (live ones up, those gone in the
// last 10 minutes down with when they were last seen), the Redis lock nodes
// and the quorum's state, refreshed from `cluster` events and by polling
// every 5 s. Relative times tick with the page-wide ticker.

import { ApiError, get } from '../api.js';
import { h, replace } from '../dom.js';
import { DASH, formatTime, formatValue } from '../format.js';
import { dataTable, emptyState, errorAlert, loading, pageHeading, relativeTime } from '../ui.js';

const POLL_MS = 5000;
// Members refresh every second and expire after 5 s; a live member not
// heard of for longer than that is about to be listed as down.
const STALE_AFTER_MS = 5000;

// What the Health column says of a member: up, stale or down.
function health(member) {
  if (member.up === false) return 'down';
  if (!member.last_seen) return 'up'; // Standalone: it answered this request.
  return Date.now() - new Date(member.last_seen).getTime() <= STALE_AFTER_MS ? 'up' : 'stale';
}

const HEALTH_CLASS = { up: 'health-healthy', stale: 'health-warn', down: 'health-stale' };

// The quorum's state: the API's `state`, or derived from older servers' fields.
function quorumState(quorum) {
  if (quorum.state) return quorum.state;
  if (!quorum.healthy) return 'no_quorum';
  return quorum.trusted < quorum.size ? 'degraded' : 'healthy';
}

const QUORUM_TEXT = {
  healthy: ['healthy', 'health-healthy', 'Every lock node answers and is trusted.'],
  degraded: ['degraded', 'health-warn', 'A lock node is down or untrusted. Jobs still fire, but one more failure stops them.'],
  no_quorum: ['no quorum', 'health-stale', 'Too few trusted lock nodes answer: nothing fires, and slots are recorded as missed until the quorum returns.'],
};

function offset(ms) {
  if (ms === null || ms === undefined) return DASH;
  return `${ms > 0 ? '+' : ''}${ms} ms`;
}

function latency(ms) {
  return ms === null || ms === undefined ? DASH : `${Number(ms).toFixed(1)} ms`;
}

function instancesTable(cluster) {
  const { wrap, tbody } = dataTable('Instances',
    ['Instance', 'Health', 'Last seen', 'Firings (last min)', 'URL', 'Clock offset', 'Version', 'Ordinal']);
  const members = cluster.members.length ? cluster.members : [cluster.instance];
  // Live instances first, then those gone, each by id.
  const ordered = [...members].sort((a, b) => (a.up === false) - (b.up === false) ||
    (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  for (const member of ordered) {
    const state = health(member);
    const self = member.self || member.id === cluster.instance.id;
    tbody.append(h('tr', { 'data-member': member.id },
      h('th', { scope: 'row' }, member.id, self ? h('span', { class: 'sub' }, '(this instance)') : null),
      h('td', {}, h('span', { class: `health ${HEALTH_CLASS[state]}` }, state),
        member.warnings?.length ? h('span', { class: 'sub warn' }, member.warnings.join('; ')) : null),
      h('td', {}, member.last_seen && !self
        ? h('span', { class: 'when' }, relativeTime(member.last_seen),
          h('time', { datetime: member.last_seen, class: 'absolute' }, formatTime(member.last_seen)))
        : (self ? 'now' : DASH)),
      h('td', { class: 'num' }, member.firings_last_minute === undefined || member.firings_last_minute === null
        ? DASH : String(member.firings_last_minute)),
      h('td', {}, h('code', { class: 'break' }, member.url)),
      h('td', { class: 'num' }, offset(member.clock_offset_ms)),
      h('td', {}, formatValue(member.version)),
      h('td', { class: 'num' }, String(member.ordinal))));
  }
  return wrap;
}

function nodesTable(cluster) {
  const { wrap, tbody } = dataTable('Redis nodes', ['Node', 'Up', 'Latency', 'Trusted', 'Warnings']);
  for (const node of cluster.nodes) {
    tbody.append(h('tr', {},
      h('th', { scope: 'row' }, h('code', {}, node.url)),
      h('td', {}, h('span', { class: node.up ? 'health health-healthy' : 'health health-stale' }, node.up ? 'up' : 'down')),
      h('td', { class: 'num' }, latency(node.latency_ms)),
      h('td', {}, node.trusted ? 'yes' : 'no'),
      h('td', { class: node.warnings.length ? 'warn' : '' }, node.warnings.length ? node.warnings.join('; ') : 'none')));
  }
  return wrap;
}

function quorumSection(quorum) {
  const [word, className, meaning] = QUORUM_TEXT[quorumState(quorum)];
  return h('section', { 'aria-labelledby': 'quorum-heading' },
    h('h2', { id: 'quorum-heading' }, 'Quorum'),
    h('p', {}, `${quorum.trusted} of ${quorum.size} nodes trusted, ${quorum.needed} needed: `,
      h('strong', { class: `health ${className}`, 'data-quorum': quorumState(quorum) }, word)),
    h('p', {}, meaning));
}

function instancesSection(cluster) {
  return h('section', { 'aria-labelledby': 'instances-heading' },
    h('h2', { id: 'instances-heading' }, 'Instances'),
    instancesTable(cluster),
    h('p', { class: 'hint' },
      'Instances that stopped answering stay listed as down for 10 minutes. ',
      'Ordinal: the number, unique among live instances, that an instance puts in the low bits of the fencing tokens it mints.'));
}

function clusterView(cluster) {
  if (cluster.mode !== 'cluster') {
    return [
      emptyState('This instance runs standalone: no Redis nodes are configured.'),
      instancesSection(cluster),
    ];
  }
  return [
    h('p', {}, 'Mode: cluster'),
    cluster.ordinal_held === false ? h('p', { class: 'warn' }, 'This instance does not hold its ordinal on a quorum yet; it claims nothing until it does.') : null,
    quorumSection(cluster.quorum),
    instancesSection(cluster),
    h('section', { 'aria-labelledby': 'nodes-heading' }, h('h2', { id: 'nodes-heading' }, 'Redis nodes'), nodesTable(cluster)),
  ];
}

export async function render(ctx) {
  const body = h('div', {}, loading());
  const problem = h('div');
  replace(ctx.main, pageHeading('Cluster'), problem, body);
  let shown = false;

  function show(cluster) {
    shown = true;
    replace(problem);
    replace(body, clusterView(cluster));
  }

  // On a failed refresh the last view stays, under an error.
  async function load() {
    try {
      show(await get('/cluster', {}, ctx.signal));
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      replace(shown ? problem : body, errorAlert(error, load));
    }
  }

  // An event carries the coordinator's view without the per-instance
  // firings, which come with GET /cluster: an event triggers a fetch.
  ctx.on('cluster', () => { load().catch(() => {}); });
  ctx.on('resync', load);
  ctx.every(POLL_MS, () => { load().catch(() => {}); });
  await load();
}
