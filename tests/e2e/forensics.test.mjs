// What the dashboard shows of a failure and of the cluster's signing secret
// (issue 15 items 3 and 6), against fields and endpoints of DESIGN §5-6: the
// run page's attempt log, lag and "Retry" (run fields attempt_log, lag_ms,
// retry_of; POST /runs/{id}/retry), the job chart's lag, a job's `notify`
// set through the form, and the Settings
// page that reveals, copies and rotates the default signing secret
// (GET /signing-secret, POST /signing-secret/rotate).

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';

import {
  ADMIN_TOKEN, LIVE_MS, SLOW, UI_MS, assertNoProblems, auditPage, createJob,
  definition, eventually, heading, jobBody, loaded, signIn, standaloneSuite, withFailureShots,
} from './harness.mjs';

const suite = standaloneSuite('forensics');

// A 6-field schedule firing once an hour, at a second a few seconds from now.
function soonSchedule(aheadMs = 4000) {
  const at = new Date(Date.now() + aheadMs);
  return `${at.getUTCSeconds()} ${at.getUTCMinutes()} * * * *`;
}

describe('failures and the signing secret', { timeout: 240000 * SLOW }, () => {
  test('a run that needed three attempts shows all three, its lag, and can be retried', withFailureShots(async () => {
    const { cf, receiver } = suite;
    const name = 'three-attempts';
    // The receiver answers 503 to attempts 1 to 3: the run fails after its third.
    await createJob(cf, jobBody(name, receiver.hook('/hook?fail=3'), {
      schedule: soonSchedule(), timezone: 'UTC', retry: { attempts: 3, backoff_ms: 100, max_backoff_ms: 200 },
    }));
    let run = null;
    await eventually(async () => {
      [run] = await cf.runs({ job: name, status: 'failed' });
      assert.ok(run, 'no failed run yet');
    }, { timeout: LIVE_MS * 2, what: 'the scheduled run to fail after three attempts' });
    assert.equal(run.attempts, 3);

    const page = await suite.page();
    await signIn(page, cf, ADMIN_TOKEN, `#/runs/${encodeURIComponent(run.id)}`);
    await heading(page, `Run ${run.id}`);
    await loaded(page);
    const attempts = page.getByRole('table', { name: 'Attempts' });
    const rows = attempts.getByRole('row').filter({ has: page.getByRole('cell') });
    await eventually(async () => assert.equal(await rows.count(), 3), { what: 'three attempts listed' });
    for (let i = 0; i < 3; i++) {
      const text = await rows.nth(i).innerText();
      assert.match(text, new RegExp(`^${i + 1}\\b`), `attempt row ${i + 1} reads "${text}"`);
      assert.match(text, /503/, `attempt row ${i + 1} lacks its HTTP status: "${text}"`);
    }
    assert.match(await definition(page, 'Lag').innerText(), /\d+(\.\d+)? (ms|s)/);
    const failures = await auditPage(page, 'run-attempts');
    assert.equal(failures.length, 0, `\n${failures.join('\n\n')}`);

    await page.getByRole('button', { name: 'Retry', exact: true }).click();
    const notice = page.locator('main').getByRole('status').filter({ hasText: 'Retry started' });
    await notice.waitFor({ timeout: UI_MS });
    const retryLink = notice.getByRole('link');
    const retryId = (await retryLink.innerText()).trim();
    assert.notEqual(retryId, run.id);
    await retryLink.click();
    await heading(page, `Run ${retryId}`);
    await definition(page, 'Retry of').getByRole('link', { name: run.id, exact: true }).waitFor({ timeout: UI_MS });
    await eventually(async () => assert.equal((await definition(page, 'Trigger').innerText()).trim(), 'retry'),
      { what: 'the retry\'s trigger' });

    // The job's chart carries lag beside duration.
    await page.goto(`${cf.url}/#/jobs/${name}`);
    await heading(page, name);
    const chart = page.locator('main').getByRole('img', { name: /^Duration and outcome/ });
    await eventually(async () => assert.match(await chart.getAttribute('aria-label'), /Median lag/),
      { what: 'the chart to describe lag' });
    await cf.api('POST', `/jobs/${name}/pause`);
    assertNoProblems(page);
  }));

  test('the job form sets and shows a job\'s notifications', withFailureShots(async () => {
    const { cf, receiver } = suite;
    const page = await suite.page();
    await signIn(page, cf, ADMIN_TOKEN, '#/jobs/new');
    await heading(page, 'New job');
    const field = (label) => page.getByLabel(label, { exact: true });
    await field('Name').fill('notified');
    await field('Schedule').fill('0 0 1 1 *');
    await field('Time zone').fill('UTC');
    await field('Webhook URL').fill(receiver.hook());
    await field('Notify URL').fill(receiver.hook('/notify'));
    const on = page.getByRole('group', { name: 'Notify on' });
    await on.getByLabel('recovered', { exact: true }).check();
    await on.getByLabel('lost', { exact: true }).uncheck();
    await field('Notify format').selectOption({ label: 'Slack' });
    await page.getByRole('button', { name: 'Create job', exact: true }).click();
    await heading(page, 'notified');
    const stored = (await cf.api('GET', '/jobs/notified')).json;
    assert.deepEqual(stored.notify, {
      url: receiver.hook('/notify'), on: ['failed', 'fenced', 'missed', 'recovered'], format: 'slack',
    });

    // The edit form shows them as stored, and keeps them on save.
    await page.goto(`${cf.url}/#/jobs/notified/edit`);
    await heading(page, 'Edit notified');
    await eventually(async () => assert.equal(await field('Notify URL').inputValue(), receiver.hook('/notify')),
      { what: 'the stored notify URL in the edit form' });
    assert.equal(await on.getByLabel('recovered', { exact: true }).isChecked(), true);
    assert.equal(await on.getByLabel('lost', { exact: true }).isChecked(), false);
    await page.getByRole('button', { name: 'Save', exact: true }).click();
    await heading(page, 'notified');
    assert.deepEqual((await cf.api('GET', '/jobs/notified')).json.notify, stored.notify);
    assertNoProblems(page);
  }));

  test('Settings reveals, copies and rotates the cluster signing secret', withFailureShots(async () => {
    const { cf } = suite;
    const before = (await cf.api('GET', '/signing-secret')).json;
    assert.ok(before.current, 'GET /signing-secret has no current secret');
    const page = await suite.page();
    await page.context().grantPermissions(['clipboard-read', 'clipboard-write'], { origin: cf.url });
    await signIn(page, cf, ADMIN_TOKEN, '#/settings');
    await heading(page, 'Settings');
    await loaded(page);
    const current = definition(page, 'Current');
    assert.doesNotMatch(await current.innerText(), new RegExp(before.current), 'the secret shows before Reveal');
    await page.getByRole('button', { name: 'Reveal current secret', exact: true }).click();
    await current.getByText(before.current).waitFor({ timeout: UI_MS });
    // Shown, the button says what it does next; a second click hides the secret again.
    const hide = current.getByRole('button', { name: 'Hide current secret', exact: true });
    await hide.waitFor({ timeout: UI_MS });
    assert.equal(await current.getByRole('button', { name: 'Reveal current secret', exact: true }).count(), 0);
    assert.equal(await hide.getAttribute('aria-pressed'), null, 'the label carries the state, not aria-pressed');
    await hide.click();
    await current.getByRole('button', { name: 'Reveal current secret', exact: true }).waitFor({ timeout: UI_MS });
    assert.doesNotMatch(await current.innerText(), new RegExp(before.current), 'the secret shows after Hide');
    await current.getByRole('button', { name: 'Reveal current secret', exact: true }).click();
    await current.getByText(before.current).waitFor({ timeout: UI_MS });
    await page.getByRole('button', { name: 'Copy current secret', exact: true }).click();
    await current.getByText('Copied.').waitFor({ timeout: UI_MS });
    assert.equal(await page.evaluate(() => navigator.clipboard.readText()), before.current);
    const failures = await auditPage(page, 'settings-revealed');
    assert.equal(failures.length, 0, `\n${failures.join('\n\n')}`);

    await page.getByRole('button', { name: 'Rotate secret', exact: true }).click();
    const dialog = page.getByRole('dialog', { name: 'Rotate the signing secret?' });
    await dialog.waitFor({ timeout: UI_MS });
    assert.match(await dialog.innerText(), /old one stays valid/);
    await dialog.getByRole('button', { name: 'Rotate', exact: true }).click();
    await page.locator('main').getByText('The signing secret was rotated.').waitFor({ timeout: UI_MS });
    const after = (await cf.api('GET', '/signing-secret')).json;
    assert.notEqual(after.current, before.current);
    assert.equal(after.previous, before.current);
    await page.getByRole('button', { name: 'Reveal previous secret', exact: true }).click();
    await definition(page, 'Previous').getByText(before.current).waitFor({ timeout: UI_MS });
    assertNoProblems(page);
  }));
});
