// The live-connection indicator: "Live" while the event stream is open; it
// leaves "Live" when the instance goes away and comes back to "Live" when the
// instance returns on the same port, after which live updates flow again.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import {
  ADMIN_TOKEN, LIVE_MS, Processes, SLOW, assertNoProblems, browserSuite, createJob, eventually,
  heading, jobBody, liveIndicator, loaded, screenshot, signIn, withFailureShots,
} from './harness.mjs';

const procs = new Processes('live');
const suite = browserSuite(procs);

async function indicatorText(page) {
  return (await liveIndicator(page).innerText()).trim();
}

test('the indicator leaves "Live" when the instance stops and returns when it is back', { timeout: 300000 * SLOW }, withFailureShots(async () => {
  const receiver = await procs.receiver();
  const cf = await procs.instance({ name: 'cf' });
  const name = 'e2e-reconnect';
  await createJob(cf, jobBody(name, receiver.hook(), { schedule: '0 0 1 1 *' }));

  const page = await suite.page();
  await signIn(page, cf, ADMIN_TOKEN, `#/jobs/${name}`);
  await heading(page, name);
  await loaded(page);
  await eventually(async () => assert.equal(await indicatorText(page), 'Live'),
    { timeout: LIVE_MS, what: 'the indicator to read "Live"' });
  await page.evaluate(() => { window.__e2eNotReloaded = true; });

  page.allowNetworkErrors = true; // connection refused while the instance is away
  await cf.stop();
  await eventually(async () => {
    const text = await indicatorText(page);
    assert.ok(text === 'Connecting…' || text === 'Offline — retrying', `the indicator reads "${text}"`);
  }, { timeout: LIVE_MS, what: 'the indicator to leave "Live"' });
  const file = await screenshot(page, 'job-offline-light-desktop');
  console.log(`# screenshot ${file}`);

  await cf.restart();
  await eventually(async () => assert.equal(await indicatorText(page), 'Live'),
    { timeout: LIVE_MS, what: 'the indicator to come back to "Live"' });

  // The stream works again: a manual run shows up without a reload.
  const run = await cf.api('POST', `/jobs/${name}/trigger`);
  assert.equal(run.status, 202, run.text);
  await page.getByRole('table', { name: 'Runs' }).getByRole('row').filter({ hasText: 'manual' })
    .filter({ hasText: 'succeeded' }).first().waitFor({ timeout: LIVE_MS });
  assert.equal(await page.evaluate(() => window.__e2eNotReloaded), true, 'the page was reloaded');
  assert.ok(receiver.deliveries(name).length >= 1);
  await heading(page, name);
  assert.equal(await page.getByRole('heading', { name: 'Sign in' }).count(), 0, 'the restart signed the user out');
  assertNoProblems(page);
}));
