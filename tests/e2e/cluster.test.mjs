// The Cluster page: three redis-server nodes and three cronfence instances,
// then one node killed with SIGKILL (the quorum turns "degraded" on the open
// page) and one instance stopped with SIGSTOP (shown down, with when it was
// last seen); and a standalone instance saying so.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';

import {
  ADMIN_TOKEN, LIVE_MS, Processes, SLOW, UI_MS, assertNoProblems, auditPage, browserSuite,
  eventually, go, heading, loaded, screenshot, signIn, withFailureShots,
} from './harness.mjs';

const procs = new Processes('cluster');
const suite = browserSuite(procs);

// The data rows (those with cells) of the table named name.
function dataRows(page, name) {
  return page.getByRole('table', { name }).getByRole('row').filter({ has: page.getByRole('cell') });
}

// The section holding the heading "Quorum" (the heading's parent element).
function quorum(page) {
  return page.locator('main').getByRole('heading', { name: 'Quorum', exact: true }).locator('xpath=..');
}

// The row of a Redis node in "Redis nodes", found by its host:port (the API
// names nodes that way, the page may add the redis:// scheme).
function nodeRow(page, node) {
  return dataRows(page, 'Redis nodes').filter({ hasText: new RegExp(`127\\.0\\.0\\.1:${node.port}(?!\\d)`) });
}

function cell(row, text) {
  return row.getByRole('cell', { name: text, exact: true });
}

describe('cluster page', { timeout: 240000 * SLOW }, () => {
  test('three instances and three Redis nodes, then a node shown down after kill -9', withFailureShots(async () => {
    const nodes = [];
    for (let i = 0; i < 3; i++) nodes.push(await procs.redis(`redis${i}`));
    const redis = nodes.map((node) => node.url).join(',');
    const instances = [];
    for (let i = 0; i < 3; i++) {
      instances.push(await procs.instance({ name: `cf${i}`, args: ['--redis', redis, '--instance-id', `cf${i}`] }));
    }
    // Everyone sees everyone and a trusted quorum before the page is opened.
    for (const instance of instances) {
      await eventually(async () => {
        const view = (await instance.api('GET', '/cluster')).json;
        assert.equal(view.mode, 'cluster');
        assert.equal(view.members.length, 3);
        assert.equal(view.quorum.trusted, 3);
        assert.equal(view.quorum.healthy, true);
      }, { timeout: 30000 * SLOW, what: `${instance.name} to see the whole cluster` });
    }

    const [cf0] = instances;
    const page = await suite.page();
    await signIn(page, cf0, ADMIN_TOKEN);
    await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Cluster', exact: true }).click();
    await heading(page, 'Cluster');
    await loaded(page);
    const main = page.locator('main');
    await main.getByText('Mode: cluster').waitFor({ timeout: UI_MS });

    const instanceRows = dataRows(page, 'Instances');
    const nodeRows = dataRows(page, 'Redis nodes');
    await eventually(async () => {
      assert.equal(await instanceRows.count(), 3);
      for (const instance of instances) {
        const row = instanceRows.filter({ hasText: instance.name });
        assert.equal(await row.count(), 1, `no single row for ${instance.name}`);
        assert.ok((await row.innerText()).includes(instance.url), `the row of ${instance.name} lacks ${instance.url}`);
        assert.equal(await cell(row, 'up').count(), 1, `${instance.name} is not up`);
      }
      assert.equal(await instanceRows.filter({ hasText: '(this instance)' }).count(), 1);
      assert.ok((await instanceRows.filter({ hasText: '(this instance)' }).innerText()).includes('cf0'));

      assert.equal(await nodeRows.count(), 3);
      for (const node of nodes) {
        const row = nodeRow(page, node);
        assert.equal(await row.count(), 1, `no single row for ${node.address}`);
        assert.equal(await cell(row, 'up').count(), 1, `${node.address} is not up`);
        assert.equal(await cell(row, 'yes').count(), 1, `${node.address} is not trusted`);
      }
      const text = await quorum(page).innerText();
      assert.match(text, /3 of 3 nodes trusted, 2 needed: healthy/);
    }, { timeout: LIVE_MS, what: 'three healthy instances and three trusted nodes' });
    const failures = await auditPage(page, 'cluster');
    assert.equal(failures.length, 0, `\n${failures.join('\n\n')}`);
    await page.evaluate(() => { window.__e2eNotReloaded = true; });

    const victim = nodes[1];
    await victim.kill9();
    const victimRow = nodeRow(page, victim);
    await eventually(async () => {
      assert.equal(await cell(victimRow, 'down').count(), 1, `${victim.address} row: ${await victimRow.innerText()}`);
    }, { timeout: LIVE_MS, what: `${victim.address} to show down` });
    const shot = await screenshot(page, 'cluster-node-down-light-desktop');
    console.log(`# screenshot ${shot}`);
    await eventually(async () => {
      const text = await quorum(page).innerText();
      assert.match(text, /2 of 3 nodes trusted, 2 needed: degraded/);
      assert.doesNotMatch(text, /\bhealthy\b/);
    }, { timeout: LIVE_MS, what: 'the quorum line to read degraded with two trusted nodes' });
    for (const node of [nodes[0], nodes[2]]) {
      assert.equal(await cell(nodeRow(page, node), 'up').count(), 1, `${node.address} is not up`);
    }
    assert.equal(await page.evaluate(() => window.__e2eNotReloaded), true, 'the page was reloaded');

    // An instance that stops answering stays listed, as down, with when it was last seen.
    const frozen = instances[2];
    frozen.signal('SIGSTOP');
    const frozenRow = instanceRows.filter({ hasText: frozen.name });
    await eventually(async () => {
      assert.equal(await cell(frozenRow, 'down').count(), 1, `${frozen.name} row: ${await frozenRow.innerText()}`);
    }, { timeout: LIVE_MS * 2, what: `${frozen.name} to show down` });
    const lastSeen = frozenRow.getByRole('cell').nth(1);
    await eventually(async () => {
      const text = await lastSeen.innerText();
      assert.match(text, /\d+ s ago/, `last seen reads "${text}"`);
      const at = Date.parse(await lastSeen.locator('time').getAttribute('datetime'));
      assert.ok(Date.now() - at >= 5000, `last seen ${new Date(at).toISOString()} is not in the past`);
    }, { what: 'the last-seen time of the stopped instance' });
    // It keeps ticking without a reload.
    const before = await lastSeen.locator('.relative').innerText();
    await eventually(async () => assert.notEqual(await lastSeen.locator('.relative').innerText(), before),
      { what: 'the last-seen time to tick' });
    assert.equal(await cell(instanceRows.filter({ hasText: instances[1].name }), 'up').count(), 1);
    await screenshot(page, 'cluster-instance-down-light-desktop');
    frozen.signal('SIGCONT');
    await eventually(async () => assert.equal(await cell(frozenRow, 'up').count(), 1),
      { timeout: LIVE_MS, what: `${frozen.name} to show up again after SIGCONT` });
    assert.equal(await page.evaluate(() => window.__e2eNotReloaded), true, 'the page was reloaded');
    assertNoProblems(page);
  }));

  test('a standalone instance says it runs standalone', withFailureShots(async () => {
    const cf = await procs.instance({ name: 'standalone' });
    const page = await suite.page();
    await signIn(page, cf, ADMIN_TOKEN, '#/cluster');
    await heading(page, 'Cluster');
    await page.locator('main').getByText('This instance runs standalone: no Redis nodes are configured.')
      .waitFor({ timeout: UI_MS });
    assert.equal(await page.locator('main').getByText('Mode: cluster').count(), 0);
    await go(page, cf, '#/jobs');
    await heading(page, 'Jobs');
    assertNoProblems(page);
  }));
});
