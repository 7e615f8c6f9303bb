// The Cluster page: the mode, the live instances, the Redis lock nodes and
// the quorum, refreshed from `cluster` events and by polling every 5 s.

import { ApiError, get } from '../api.js';
import { h, replace } from '../dom.js';
import { DASH, formatRelative, formatTime, formatValue } from '../format.js';
import { dataTable, emptyState, errorAlert, loading, pageHeading } from '../ui.js';

const POLL_MS = 5000;
// Members refresh every second and expire after 5 s; older is stale.
const STALE_AFTER_MS = 5000;

function health(member) {
  if (!member.last_seen) return 'healthy'; // Standalone: it answered this request.
  return Date.now() - new Date(member.last_seen).getTime() <= STALE_AFTER_MS ? 'healthy' : 'stale';
}

function offset(ms) {
  if (ms === null || ms === undefined) return DASH;
  return `${ms > 0 ? '+' : ''}${ms} ms`;
}

function latency(ms) {
  return ms === null || ms === undefined ? DASH : `${Number(ms).toFixed(1)} ms`;
}

function instancesTable(cluster) {
  const { wrap, tbody } = dataTable('Instances', ['Instance', 'URL', 'Health', 'Last seen', 'Clock offset', 'Version', 'Ordinal']);
  const members = cluster.members.length ? cluster.members : [cluster.instance];
  const byId = [...members].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  for (const member of byId) {
    const state = health(member);
    const self = member.self || member.id === cluster.instance.id;
    tbody.append(h('tr', {},
      h('th', { scope: 'row' }, member.id, self ? h('span', { class: 'sub' }, '(this instance)') : null),
      h('td', {}, h('code', { class: 'break' }, member.url)),
      h('td', {}, h('span', { class: `health health-${state}` }, state),
        member.warnings?.length ? h('span', { class: 'sub warn' }, member.warnings.join('; ')) : null),
      h('td', {}, member.last_seen
        ? h('span', { title: formatTime(member.last_seen) }, formatRelative(member.last_seen))
        : DASH),
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
  return h('section', { 'aria-labelledby': 'quorum-heading' },
    h('h2', { id: 'quorum-heading' }, 'Quorum'),
    h('p', {}, `${quorum.trusted} of ${quorum.size} nodes trusted, ${quorum.needed} needed: `,
      h('strong', { class: quorum.healthy ? 'health health-healthy' : 'health health-stale' },
        quorum.healthy ? 'healthy' : 'not healthy')),
    quorum.healthy ? null : h('p', {}, 'Without a quorum of trusted nodes nothing fires; slots are recorded as missed.'));
}

function clusterView(cluster) {
  if (cluster.mode !== 'cluster') {
    return [
      emptyState('This instance runs standalone: no Redis nodes are configured.'),
      h('section', { 'aria-labelledby': 'instances-heading' }, h('h2', { id: 'instances-heading' }, 'Instances'), instancesTable(cluster)),
    ];
  }
  return [
    h('p', {}, 'Mode: cluster'),
    cluster.ordinal_held === false ? h('p', { class: 'warn' }, 'This instance does not hold its ordinal on a quorum yet; it claims nothing until it does.') : null,
    quorumSection(cluster.quorum),
    h('section', { 'aria-labelledby': 'instances-heading' }, h('h2', { id: 'instances-heading' }, 'Instances'), instancesTable(cluster)),
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

  ctx.on('cluster', show);
  ctx.on('resync', load);
  ctx.every(POLL_MS, () => { load().catch(() => {}); });
  await load();
}
