// The job page stays true while it is open (issue 15): its last run and next
// run follow new runs for 10 s, the next run never reads as past, relative
// times tick; and the job form: "Clone", the webhook and retry fields it
// lacked (raw body, content type, max backoff), durations typed in seconds
// or minutes, and the name rule in plain words.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';

import {
  ADMIN_TOKEN, LIVE_MS, MOBILE, SLOW, UI_MS, assertNoProblems, createJob, eventually,
  definition, go, heading, jobBody, loaded, screenshot, signIn, sleep, standaloneSuite, withFailureShots,
} from './harness.mjs';

const suite = standaloneSuite('job-page');

// Throws unless the table named "Runs" fits its wrapper and the page fits the viewport.
async function assertRunsTableFits(page, where) {
  const sizes = await page.getByRole('region', { name: 'Runs table' }).evaluate((wrap) => ({
    scrollWidth: wrap.scrollWidth, clientWidth: wrap.clientWidth,
    tableWidth: wrap.querySelector('table').getBoundingClientRect().width,
    documentWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth,
  }));
  assert.ok(sizes.scrollWidth <= sizes.clientWidth,
    `${where}: the runs table scrolls sideways: ${sizes.scrollWidth} px of content in ${sizes.clientWidth} px`);
  assert.ok(sizes.tableWidth <= sizes.clientWidth,
    `${where}: the runs table is ${sizes.tableWidth} px wide in ${sizes.clientWidth} px`);
  assert.ok(sizes.documentWidth <= sizes.innerWidth,
    `${where}: the page is ${sizes.documentWidth} px wide in a ${sizes.innerWidth} px viewport`);
}

describe('job page and form', { timeout: 240000 * SLOW }, () => {
  test('an open job page follows new runs: last and next run move on, next is never past', withFailureShots(async () => {
    const { cf, receiver } = suite;
    const name = 'every-two-seconds';
    await createJob(cf, jobBody(name, receiver.hook(), { schedule: '*/2 * * * * *' }));
    const page = await suite.page();
    await signIn(page, cf, ADMIN_TOKEN, `#/jobs/${name}`);
    await heading(page, name);
    await loaded(page);
    await page.evaluate(() => { window.__e2eNotReloaded = true; });

    const lastRun = definition(page, 'Last run');
    const nextRun = definition(page, 'Next run');
    const lastRuns = new Set();
    const nextRuns = new Set();
    const until = Date.now() + 10000;
    while (Date.now() < until) {
      const href = await lastRun.getByRole('link').getAttribute('href').catch(() => null);
      if (href) lastRuns.add(href);
      const text = await nextRun.innerText();
      assert.doesNotMatch(text, /\bago\b/, `"Next run" reads "${text}"`);
      const at = await nextRun.locator('time').getAttribute('datetime');
      nextRuns.add(at);
      // A next run more than a few seconds in the past is stale, whatever it says.
      assert.ok(Date.parse(at) > Date.now() - 3000 * SLOW, `"Next run" shows ${at}, in the past`);
      await sleep(250);
    }
    // Over 10 s an every-2-s job runs about five times; the page must have followed several.
    assert.ok(lastRuns.size >= 3, `"Last run" showed only ${[...lastRuns].join(', ')}`);
    assert.ok(nextRuns.size >= 3, `"Next run" showed only ${[...nextRuns].join(', ')}`);
    // The history above shows the same latest run as the summary.
    const latest = (await cf.runs({ job: name }))[0];
    await eventually(async () => {
      const table = page.getByRole('table', { name: 'Runs' });
      assert.ok(await table.locator(`a[href="#/runs/${encodeURIComponent(latest.id)}"]`).count() >= 1);
    }, { timeout: LIVE_MS, what: 'the newest run in the history' });

    // Paused, the last run's relative time keeps ticking by itself.
    await cf.api('POST', `/jobs/${name}/pause`);
    await definition(page, 'Next run').getByText('none until resumed').waitFor({ timeout: LIVE_MS });
    const relative = lastRun.locator('.relative');
    const first = await relative.innerText();
    await eventually(async () => assert.notEqual(await relative.innerText(), first),
      { what: 'the last run\'s relative time to tick' });
    assert.equal(await page.evaluate(() => window.__e2eNotReloaded), true, 'the page was reloaded');
    assertNoProblems(page);
  }));

  test('at 375 px the runs table fits: neither it nor the page scrolls sideways', withFailureShots(async () => {
    const { cf } = suite;
    const name = 'narrow-runs';
    // Nothing listens on the discard port: each run fails with an error, the widest row there is.
    await createJob(cf, jobBody(name, 'http://127.0.0.1:9/hook', { schedule: '0 0 1 1 *', retry: { attempts: 1 } }));
    for (let i = 0; i < 2; i++) {
      const run = (await cf.api('POST', `/jobs/${name}/trigger`)).json;
      await eventually(async () => {
        assert.equal((await cf.api('GET', `/runs/${encodeURIComponent(run.id)}`)).json.status, 'failed');
      }, { timeout: LIVE_MS, what: `failed run ${i + 1} of ${name}` });
    }
    const page = await suite.page({ viewport: MOBILE });
    await signIn(page, cf, ADMIN_TOKEN, `#/jobs/${name}`);
    await heading(page, name);
    await loaded(page);
    const table = page.getByRole('table', { name: 'Runs' });
    const rows = table.getByRole('row').filter({ has: page.getByRole('cell') });
    await eventually(async () => assert.equal(await rows.count(), 2), { what: 'both runs in the table' });

    await assertRunsTableFits(page, 'the job page');
    // What a row still says at this width: its time (a link to the run), status, error and duration.
    const first = rows.first();
    const cells = first.getByRole('cell');
    assert.match(await cells.nth(1).innerText(), /^failed\s*\n\s*\S/, 'the error under the status');
    for (let i = 0; i < await cells.count(); i++) {
      const box = await cells.nth(i).boundingBox();
      if (box) assert.ok(box.x >= 0 && box.x + box.width <= MOBILE.width, `cell ${i} spans ${box.x}..${box.x + box.width} px`);
    }
    assert.match(await first.getByRole('cell').last().innerText(), /\d+(\.\d+)? (ms|s)|—/, 'the duration shows');
    console.log(`# screenshot ${await screenshot(page, 'job-runs-375px')}`);

    // The Runs page's table (it adds the job) fits too.
    await go(page, cf, `#/runs?job=${name}`);
    await heading(page, 'Runs');
    await eventually(async () => assert.equal(await rows.count(), 2), { what: 'both runs on the Runs page' });
    await assertRunsTableFits(page, 'the Runs page');
    await rows.first().getByRole('link', { name, exact: true }).waitFor({ timeout: UI_MS });
    console.log(`# screenshot ${await screenshot(page, 'runs-375px')}`);
    assertNoProblems(page);
  }));

  test('Clone fills a new job from another; new fields, durations and plain-language errors', withFailureShots(async () => {
    const { cf, receiver } = suite;
    const source = 'report-source';
    await createJob(cf, jobBody(source, receiver.hook(), {
      schedule: '0 7 * * *', timezone: 'Europe/Berlin', paused: true, description: 'The source job',
      webhook: { url: receiver.hook(), headers: { 'X-Team': 'ops' } },
    }));
    const page = await suite.page();
    await signIn(page, cf, ADMIN_TOKEN, `#/jobs/${source}`);
    await heading(page, source);
    await page.getByRole('link', { name: 'Clone', exact: true }).click();
    await heading(page, 'New job');
    const field = (label) => page.getByLabel(label, { exact: true });
    await eventually(async () => assert.equal(await field('Name').inputValue(), `${source}-copy`),
      { what: 'the cloned name' });
    assert.equal(await field('Schedule').inputValue(), '0 7 * * *');
    assert.equal(await field('Time zone').inputValue(), 'Europe/Berlin');
    assert.equal(await field('Webhook URL').inputValue(), receiver.hook());
    assert.match(await field('Headers').inputValue(), /X-Team: ops/);
    assert.equal(await field('Timeout').inputValue(), '30 s');
    assert.equal(await field('Max backoff').inputValue(), '1 min');

    // The name rule in words, not as a regular expression.
    await field('Name').fill('Bad Name!');
    await page.getByRole('button', { name: 'Create job', exact: true }).click();
    const nameError = page.locator('#field-name-error');
    await nameError.waitFor({ timeout: UI_MS });
    const said = await nameError.innerText();
    assert.match(said, /lowercase letters, digits/);
    assert.doesNotMatch(said, /\[a-z0-9|\^|\$/, `the name error reads "${said}"`);
    assert.equal(await field('Name').getAttribute('aria-invalid'), 'true');

    // A duration that is not one is refused in words too.
    await field('Name').fill('report-copy');
    await field('Timeout').fill('soon');
    await page.getByRole('button', { name: 'Create job', exact: true }).click();
    await page.locator('#field-webhook\\.timeout_ms-error').getByText(/is not a duration/).waitFor({ timeout: UI_MS });

    await field('Timeout').fill('45 s');
    await field('Backoff').fill('1500 ms');
    await field('Max backoff').fill('2 min');
    await field('Starting deadline').fill('90');
    await field('Raw body').check();
    await field('Content type').fill('text/plain');
    await field('Body').fill('hello, target');
    await page.getByRole('button', { name: 'Create job', exact: true }).click();
    await heading(page, 'report-copy');

    const stored = (await cf.api('GET', '/jobs/report-copy')).json;
    assert.equal(stored.schedule, '0 7 * * *');
    assert.equal(stored.timezone, 'Europe/Berlin');
    assert.equal(stored.paused, false);
    assert.equal(stored.webhook.timeout_ms, 45000);
    assert.equal(stored.retry.backoff_ms, 1500);
    assert.equal(stored.retry.max_backoff_ms, 120000);
    assert.equal(stored.starting_deadline_ms, 90000);
    assert.equal(stored.webhook.raw_body, true);
    assert.equal(stored.webhook.content_type, 'text/plain');
    assert.equal(stored.webhook.body, 'hello, target');
    assert.deepEqual(stored.webhook.headers, { 'X-Team': 'ops' });
    await cf.api('POST', '/jobs/report-copy/pause');

    // Editing shows the stored durations in seconds and minutes, and keeps them.
    await go(page, cf, '#/jobs/report-copy/edit');
    await heading(page, 'Edit report-copy');
    await eventually(async () => assert.equal(await field('Max backoff').inputValue(), '2 min'),
      { what: 'the stored max backoff in the edit form' });
    assert.equal(await field('Backoff').inputValue(), '1500 ms');
    assert.equal(await field('Raw body').isChecked(), true);
    await page.getByRole('button', { name: 'Save', exact: true }).click();
    await heading(page, 'report-copy');
    const saved = (await cf.api('GET', '/jobs/report-copy')).json;
    assert.equal(saved.retry.max_backoff_ms, 120000);
    assert.equal(saved.webhook.raw_body, true);
    assertNoProblems(page);
  }));
});
