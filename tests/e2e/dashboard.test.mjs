// The dashboard of one standalone instance, clicked through in headless
// Chromium: sign-in, the job form, live runs, pause/resume, edit, server-side
// errors, delete, the read-only viewer, and hostile content shown as text.

import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';

import {
  ADMIN_TOKEN, LIVE_MS, Processes, SECRET, SLOW, UI_MS, VIEWER_TOKEN, assertNoProblems,
  browserSuite, createJob, eventually, go, heading, jobBody, loaded, signIn, sleep,
  withFailureShots,
} from './harness.mjs';

const procs = new Processes('dashboard');
let cf;
let receiver;
const suite = browserSuite(procs);

// The <dd> that follows the <dt> whose text is term, in main.
function definition(page, term) {
  return page.locator('main').locator(`xpath=.//dt[normalize-space(.)="${term}"]/following-sibling::dd[1]`);
}

// Link or button named name (the contract allows either for "Edit").
function control(page, name) {
  return page.getByRole('link', { name, exact: true }).or(page.getByRole('button', { name, exact: true }));
}

// Marks the document so that a later check can tell it was not reloaded.
async function markDocument(page) {
  await page.evaluate(() => { window.__e2eNotReloaded = true; });
}

async function assertNotReloaded(page) {
  assert.equal(await page.evaluate(() => window.__e2eNotReloaded), true, 'the page was reloaded');
}

before(async () => {
  receiver = await procs.receiver();
  cf = await procs.instance({ name: 'cf' });
});

describe('dashboard', { timeout: 600000 * SLOW }, () => {
  test('sign in through the URL fragment, then sign out', withFailureShots(async () => {
    const page = await suite.page();
    await page.goto(`${cf.url}/#token=${ADMIN_TOKEN}`);
    await heading(page, 'Jobs');
    await eventually(() => {
      assert.ok(!page.url().includes(ADMIN_TOKEN), `token still in the address bar: ${page.url()}`);
      assert.ok(page.url().endsWith('/#/jobs'), `address is ${page.url()}, expected …/#/jobs`);
    }, { what: 'the token to leave the address bar' });
    assert.equal(await page.evaluate(() => sessionStorage.getItem('cronfence.token')), ADMIN_TOKEN);
    const nav = page.getByRole('navigation', { name: 'Main' });
    for (const name of ['Jobs', 'Runs', 'Cluster']) {
      await nav.getByRole('link', { name, exact: true }).waitFor({ timeout: UI_MS });
    }
    assert.equal(await nav.getByRole('link', { name: 'Jobs', exact: true }).getAttribute('aria-current'), 'page');

    await page.getByRole('button', { name: 'Sign out', exact: true }).click();
    await heading(page, 'Sign in');
    assert.equal(await page.evaluate(() => sessionStorage.getItem('cronfence.token')), null);
    assertNoProblems(page);
  }));

  test('the sign-in form refuses a wrong token with an error and accepts the right one', withFailureShots(async () => {
    const page = await suite.page();
    await page.goto(`${cf.url}/`);
    await heading(page, 'Sign in');
    const input = page.getByLabel('API token', { exact: true });
    assert.equal(await input.getAttribute('type'), 'password');
    await input.fill('not-the-token');
    await page.getByRole('button', { name: 'Sign in', exact: true }).click();
    const alert = page.locator('main').getByRole('alert');
    await eventually(async () => {
      assert.ok((await alert.count()) > 0, 'no role=alert');
      assert.notEqual((await alert.first().innerText()).trim(), '', 'the alert is empty');
    }, { what: 'an error after a wrong token' });
    await heading(page, 'Sign in');
    assert.equal(await page.getByRole('heading', { name: 'Jobs', exact: true }).count(), 0);

    // A wrong token in the fragment: the API's 401 leads back to the form, with an error.
    const second = await suite.page();
    await second.goto(`${cf.url}/#token=wrong-token-in-the-fragment`);
    await heading(second, 'Sign in');
    await second.locator('main').getByRole('alert').first().waitFor({ timeout: UI_MS });
    assert.ok(!second.url().includes('wrong-token-in-the-fragment'), `token still in the address bar: ${second.url()}`);
    assertNoProblems(second);

    await page.getByLabel('API token', { exact: true }).fill(ADMIN_TOKEN);
    await page.getByRole('button', { name: 'Sign in', exact: true }).click();
    await heading(page, 'Jobs');
    assertNoProblems(page);
  }));

  test('create a job through the form: an invalid schedule shows the API error, a valid one the preview', withFailureShots(async () => {
    const name = 'e2e-form-job';
    const page = await suite.page();
    await signIn(page, cf, ADMIN_TOKEN);
    await page.getByRole('link', { name: 'New job', exact: true }).first().click();
    await heading(page, 'New job');

    const schedule = page.getByLabel('Schedule', { exact: true });
    const preview = page.getByRole('region', { name: 'Schedule preview' });
    const bad = 'every blue moon';
    const refused = await cf.api('GET', `/schedule/preview?${new URLSearchParams({ schedule: bad, timezone: 'UTC', count: '5' })}`);
    assert.equal(refused.status, 422);
    const apiMessage = refused.json.errors.find((e) => e.field === 'schedule').message;

    await schedule.fill(bad);
    await eventually(async () => {
      assert.equal(await schedule.getAttribute('aria-invalid'), 'true');
      assert.ok(((await schedule.getAttribute('aria-describedby')) || '').split(/\s+/).includes('field-schedule-error'),
        'the Schedule input is not described by field-schedule-error');
      const text = await page.locator('#field-schedule-error').innerText();
      assert.ok(text.includes(apiMessage), `field-schedule-error reads "${text}", expected the API's "${apiMessage}"`);
      assert.equal(await preview.getByRole('listitem').count(), 0, 'the preview lists instants for an invalid schedule');
    }, { what: 'the schedule error next to the field' });

    const good = '* * * * * *';
    const previewed = await cf.api('GET', `/schedule/preview?${new URLSearchParams({ schedule: good, timezone: 'UTC', count: '5' })}`);
    assert.equal(previewed.status, 200);
    await schedule.fill(good);
    await eventually(async () => {
      assert.notEqual(await schedule.getAttribute('aria-invalid'), 'true');
      const text = await preview.innerText();
      assert.ok(text.includes(previewed.json.description), `preview reads "${text}", expected "${previewed.json.description}"`);
      assert.equal(await preview.getByRole('listitem').count(), 5);
      assert.equal(await page.locator('#field-schedule-error:visible').filter({ hasText: apiMessage }).count(), 0,
        'the old schedule error is still shown');
    }, { what: 'the preview of a valid schedule' });
    assert.equal(await preview.getAttribute('aria-live'), 'polite');

    await page.getByLabel('Name', { exact: true }).fill(name);
    await page.getByLabel('Description', { exact: true }).fill('Made through the form');
    await page.getByLabel('Webhook URL', { exact: true }).fill(receiver.hook());
    await page.getByLabel('Time zone', { exact: true }).fill('Europe/Berlin');
    await page.getByLabel('Signing secret', { exact: true }).fill(SECRET);
    await page.getByRole('button', { name: 'Create job', exact: true }).click();

    await heading(page, name);
    await eventually(() => assert.ok(page.url().endsWith(`#/jobs/${name}`), page.url()), { what: 'the job page route' });
    const stored = await cf.api('GET', `/jobs/${name}`);
    assert.equal(stored.status, 200);
    assert.equal(stored.json.schedule, good);
    assert.equal(stored.json.timezone, 'Europe/Berlin');
    assert.equal(stored.json.webhook.url, receiver.hook());
    assert.equal(stored.json.description, 'Made through the form');
    assert.equal(stored.json.signing_secret_set, true);
    // It runs: the form's job reaches the receiver.
    await eventually(() => assert.ok(receiver.deliveries(name).length > 0, 'no delivery yet'),
      { timeout: LIVE_MS, what: 'a delivery of the job made through the form' });
    await cf.api('POST', `/jobs/${name}/pause`);
    assertNoProblems(page);
  }));

  test('runs appear live on the job page; the run page shows token, instance, attempts and HTTP status', withFailureShots(async () => {
    const name = 'e2e-live-runs';
    await createJob(cf, jobBody(name, receiver.hook(), { paused: true }));
    const page = await suite.page();
    await signIn(page, cf, ADMIN_TOKEN, `#/jobs/${name}`);
    await heading(page, name);
    await loaded(page);
    const table = page.getByRole('table', { name: 'Runs' });
    const succeeded = table.getByRole('row').filter({ hasText: 'succeeded' });
    assert.equal(await succeeded.count(), 0, 'a paused job that never ran shows succeeded runs');
    await markDocument(page);

    assert.equal((await cf.api('POST', `/jobs/${name}/resume`)).status, 200);
    await eventually(async () => assert.ok((await succeeded.count()) >= 2, `${await succeeded.count()} succeeded rows`),
      { timeout: LIVE_MS, what: 'succeeded runs to appear on the job page' });
    await assertNotReloaded(page);
    await cf.api('POST', `/jobs/${name}/pause`);

    // The newest row is a run the receiver really got.
    const link = succeeded.first().getByRole('link').first();
    const href = await link.getAttribute('href');
    const match = /#\/runs\/(.+)$/.exec(href || '');
    assert.ok(match, `the run row links to ${href}, expected #/runs/<id>`);
    const runId = decodeURIComponent(match[1]);
    const run = (await cf.api('GET', `/runs/${encodeURIComponent(runId)}`)).json;
    assert.equal(run.job, name);
    assert.equal(run.status, 'succeeded');
    assert.ok(receiver.deliveries(name).some((d) => d.run_id === runId), `the receiver has no delivery of ${runId}`);

    await link.click();
    await heading(page, `Run ${runId}`);
    await eventually(async () => {
      assert.equal((await definition(page, 'Status').innerText()).trim(), 'succeeded');
      assert.ok((await definition(page, 'Fencing token').innerText()).includes(String(run.fencing_token)),
        `Fencing token reads ${await definition(page, 'Fencing token').innerText()}, expected ${run.fencing_token}`);
      assert.equal((await definition(page, 'Instance').innerText()).trim(), run.instance);
      assert.equal((await definition(page, 'Attempts').innerText()).trim(), String(run.attempts));
      assert.equal((await definition(page, 'HTTP status').innerText()).trim(), String(run.http_status));
      assert.ok((await definition(page, 'Response excerpt').locator('pre').innerText()).includes(run.response_excerpt));
      assert.equal((await definition(page, 'Error').innerText()).trim(), '—');
    }, { what: 'the run page fields' });
    await definition(page, 'Job').getByRole('link', { name, exact: true }).waitFor({ timeout: UI_MS });
    assertNoProblems(page);
  }));

  test('new runs appear live on the Runs page filtered by job', withFailureShots(async () => {
    const name = 'e2e-runs-feed';
    await createJob(cf, jobBody(name, receiver.hook(), { schedule: '0 0 1 1 *' }));
    const page = await suite.page();
    await signIn(page, cf, ADMIN_TOKEN, `#/runs?job=${name}`);
    await heading(page, 'Runs');
    await loaded(page);
    const rows = page.getByRole('table', { name: 'Runs' }).getByRole('row').filter({ hasText: 'manual' });
    assert.equal(await rows.count(), 0);
    await markDocument(page);
    const triggered = await cf.api('POST', `/jobs/${name}/trigger`);
    assert.equal(triggered.status, 202);
    await eventually(async () => assert.equal(await rows.filter({ hasText: 'succeeded' }).count(), 1),
      { timeout: LIVE_MS, what: 'the manual run to appear as succeeded on the Runs page' });
    await assertNotReloaded(page);
    assertNoProblems(page);
  }));

  test('run history: status filter and "Load more" on the job page, filters from the Runs route', withFailureShots(async () => {
    const name = 'e2e-history';
    const good = 120;
    const bad = 3;
    await createJob(cf, jobBody(name, receiver.hook(), { schedule: '0 0 1 1 *', overlap: 'allow', retry: { attempts: 1 } }));
    // Manual runs of one job take its lock: one at a time, each awaited.
    const trigger = async () => {
      const reply = await cf.api('POST', `/jobs/${name}/trigger`);
      assert.equal(reply.status, 202, reply.text);
      await eventually(async () => {
        const run = (await cf.api('GET', `/runs/${encodeURIComponent(reply.json.id)}`)).json;
        assert.notEqual(run.status, 'running');
      }, { interval: 10, timeout: LIVE_MS, what: `manual run ${reply.json.id} to finish` });
    };
    for (let i = 0; i < good; i++) await trigger();
    await eventually(async () => assert.equal((await cf.runs({ job: name, status: 'succeeded' })).length, good),
      { timeout: 60000 * SLOW, what: `${good} succeeded runs` });
    const patched = await cf.api('PATCH', `/jobs/${name}`, { webhook: { url: 'http://127.0.0.1:9/refused' } },
      { headers: { 'Content-Type': 'application/merge-patch+json' } });
    assert.equal(patched.status, 200, patched.text);
    for (let i = 0; i < bad; i++) await trigger();
    await eventually(async () => assert.equal((await cf.runs({ job: name, status: 'failed' })).length, bad),
      { timeout: LIVE_MS, what: `${bad} failed runs` });
    const everyId = new Set((await cf.runs({ job: name })).map((run) => run.id));
    assert.equal(everyId.size, good + bad);

    const page = await suite.page();
    await signIn(page, cf, ADMIN_TOKEN, `#/jobs/${name}`);
    await heading(page, name);
    await loaded(page);
    const table = page.getByRole('table', { name: 'Runs' });
    const rows = table.getByRole('row').filter({ has: page.getByRole('link') });
    const shownIds = async () => (await rows.getByRole('link').evaluateAll((links) => links.map((a) => a.getAttribute('href'))))
      .map((href) => decodeURIComponent(href.replace(/^#\/runs\//, '')));
    await rows.first().waitFor({ timeout: UI_MS });
    const more = page.locator('main').getByRole('button', { name: 'Load more', exact: true });
    const firstPage = await rows.count();
    assert.ok(firstPage < good + bad, `the first page shows all ${firstPage} runs: no pagination`);
    for (let clicks = 0; (await shownIds()).length < good + bad; clicks++) {
      assert.ok(clicks < 100, 'Load more never brought every run');
      const before = await rows.count();
      await more.click();
      await eventually(async () => assert.ok((await rows.count()) > before), { what: 'Load more to add rows' });
    }
    const ids = await shownIds();
    assert.equal(ids.length, good + bad);
    assert.deepEqual(new Set(ids), everyId, 'the rows are not the job\'s runs, each once');
    await eventually(async () => assert.equal(await more.count(), 0), { what: '"Load more" to go once all is loaded' });

    await page.getByLabel('Status', { exact: true }).selectOption({ label: 'failed' });
    await eventually(async () => {
      assert.equal(await rows.count(), bad);
      assert.equal(await rows.filter({ hasText: 'failed' }).count(), bad);
    }, { what: 'only the failed runs' });

    await go(page, cf, `#/runs?job=${name}&status=failed`);
    await heading(page, 'Runs');
    await loaded(page);
    await eventually(async () => {
      assert.equal(await rows.count(), bad);
      assert.equal(await rows.filter({ hasText: 'failed' }).count(), bad);
    }, { what: 'the Runs page filtered by the route' });
    assert.equal(await page.getByLabel('Status', { exact: true }).inputValue(), 'failed');
    assertNoProblems(page);
  }));

  test('pause and resume', withFailureShots(async () => {
    const name = 'e2e-pause';
    await createJob(cf, jobBody(name, receiver.hook(), { schedule: '0 0 1 1 *' }));
    const page = await suite.page();
    await signIn(page, cf, ADMIN_TOKEN, `#/jobs/${name}`);
    await heading(page, name);
    const main = page.locator('main');
    await main.getByRole('button', { name: 'Pause', exact: true }).click();
    const pausedShown = main.getByText('Paused', { exact: true }).filter({ visible: true });
    await pausedShown.first().waitFor({ timeout: UI_MS });
    await main.getByRole('button', { name: 'Resume', exact: true }).waitFor({ timeout: UI_MS });
    assert.equal(await main.getByRole('button', { name: 'Pause', exact: true }).count(), 0);
    assert.equal((await cf.api('GET', `/jobs/${name}`)).json.paused, true);

    await main.getByRole('button', { name: 'Resume', exact: true }).click();
    await main.getByRole('button', { name: 'Pause', exact: true }).waitFor({ timeout: UI_MS });
    await eventually(async () => assert.equal(await pausedShown.count(), 0),
      { what: '"Paused" to go away' });
    assert.equal((await cf.api('GET', `/jobs/${name}`)).json.paused, false);
    assertNoProblems(page);
  }));

  test('edit the description', withFailureShots(async () => {
    const name = 'e2e-edit';
    const created = await createJob(cf, jobBody(name, receiver.hook(), { schedule: '0 8 * * *', description: 'Before the edit' }));
    const page = await suite.page();
    await signIn(page, cf, ADMIN_TOKEN, `#/jobs/${name}`);
    await heading(page, name);
    await page.locator('main').getByText('Before the edit', { exact: true }).waitFor({ timeout: UI_MS });
    await control(page.locator('main'), 'Edit').click();
    await heading(page, `Edit ${name}`);
    const description = page.getByLabel('Description', { exact: true });
    await eventually(async () => assert.equal(await description.inputValue(), 'Before the edit'),
      { what: 'the form to hold the current description' });
    assert.equal(await page.getByLabel('Schedule', { exact: true }).inputValue(), '0 8 * * *');
    await description.fill('Changed in the browser');
    await page.getByRole('button', { name: 'Save', exact: true }).click();
    await heading(page, name);
    await page.locator('main').getByText('Changed in the browser', { exact: true }).waitFor({ timeout: UI_MS });
    const stored = (await cf.api('GET', `/jobs/${name}`)).json;
    assert.equal(stored.description, 'Changed in the browser');
    assert.equal(stored.schedule, '0 8 * * *');
    assert.equal(stored.webhook.url, receiver.hook());
    assert.ok(stored.version > created.version);
    assertNoProblems(page);
  }));

  test('editing a job changed elsewhere shows the conflict message', withFailureShots(async () => {
    const name = 'e2e-conflict';
    await createJob(cf, jobBody(name, receiver.hook(), { schedule: '0 8 * * *' }));
    const page = await suite.page();
    await signIn(page, cf, ADMIN_TOKEN, `#/jobs/${name}/edit`);
    await heading(page, `Edit ${name}`);
    const description = page.getByLabel('Description', { exact: true });
    await eventually(async () => assert.equal(await page.getByLabel('Schedule', { exact: true }).inputValue(), '0 8 * * *'),
      { what: 'the edit form to load' });
    const patched = await cf.api('PATCH', `/jobs/${name}`, { description: 'changed through the API' },
      { headers: { 'Content-Type': 'application/merge-patch+json' } });
    assert.equal(patched.status, 200, patched.text);
    await description.fill('changed in the browser');
    await page.getByRole('button', { name: 'Save', exact: true }).click();
    await page.getByText('This job was changed elsewhere; reload to see the new version.').waitFor({ timeout: UI_MS });
    assert.equal((await cf.api('GET', `/jobs/${name}`)).json.description, 'changed through the API');
    assertNoProblems(page);
  }));

  test('a 422 from the API shows next to the field it names', withFailureShots(async () => {
    const name = 'e2e-bad-url';
    const body = jobBody(name, 'ftp://files.example/x');
    const refused = await cf.api('POST', '/jobs', body);
    assert.equal(refused.status, 422);
    const entry = refused.json.errors.find((e) => e.field === 'webhook.url');
    assert.ok(entry, refused.text);

    const page = await suite.page();
    await signIn(page, cf, ADMIN_TOKEN, '#/jobs/new');
    await heading(page, 'New job');
    await page.getByLabel('Name', { exact: true }).fill(name);
    await page.getByLabel('Schedule', { exact: true }).fill('0 8 * * *');
    await page.getByLabel('Time zone', { exact: true }).fill('UTC');
    const url = page.getByLabel('Webhook URL', { exact: true });
    await url.fill('ftp://files.example/x');
    await page.getByRole('button', { name: 'Create job', exact: true }).click();

    const fieldError = page.locator('[id="field-webhook.url-error"]');
    await eventually(async () => {
      assert.equal(await url.getAttribute('aria-invalid'), 'true');
      assert.ok(((await url.getAttribute('aria-describedby')) || '').split(/\s+/).includes('field-webhook.url-error'));
      assert.ok((await fieldError.innerText()).includes(entry.message), `field error reads "${await fieldError.innerText()}"`);
      const alert = page.locator('main form').getByRole('alert').filter({ hasText: refused.json.detail });
      assert.equal(await alert.count(), 1, `no role=alert summary with "${refused.json.detail}"`);
    }, { what: 'the server-side error next to Webhook URL' });
    await heading(page, 'New job');
    assert.equal((await cf.api('GET', `/jobs/${name}`)).status, 404);
    assertNoProblems(page);
  }));

  test('delete through the confirmation dialog', withFailureShots(async () => {
    const name = 'e2e-delete';
    await createJob(cf, jobBody(name, receiver.hook(), { schedule: '0 8 * * *' }));
    const page = await suite.page();
    await signIn(page, cf, ADMIN_TOKEN, `#/jobs/${name}`);
    await heading(page, name);
    const dialog = page.getByRole('dialog', { name: `Delete ${name}?` });

    await page.locator('main').getByRole('button', { name: 'Delete', exact: true }).click();
    await dialog.waitFor({ timeout: UI_MS });
    await dialog.getByRole('button', { name: 'Cancel', exact: true }).click();
    await dialog.waitFor({ state: 'hidden', timeout: UI_MS });
    assert.equal((await cf.api('GET', `/jobs/${name}`)).status, 200);

    await page.locator('main').getByRole('button', { name: 'Delete', exact: true }).click();
    await dialog.waitFor({ timeout: UI_MS });
    await dialog.getByRole('button', { name: 'Delete', exact: true }).click();
    await heading(page, 'Jobs');
    await loaded(page);
    await eventually(async () => assert.equal(await page.getByRole('link', { name, exact: true }).count(), 0),
      { what: 'the deleted job to leave the list' });
    await page.getByRole('link', { name: 'e2e-edit', exact: true }).waitFor({ timeout: UI_MS });
    assert.equal((await cf.api('GET', `/jobs/${name}`)).status, 404);
    assertNoProblems(page);
  }));

  test('a viewer sees every page but no write control', withFailureShots(async () => {
    const name = 'e2e-viewer-job';
    await createJob(cf, jobBody(name, receiver.hook(), { schedule: '0 0 1 1 *' }));
    const run = (await cf.api('POST', `/jobs/${name}/trigger`)).json;
    await eventually(async () => assert.equal((await cf.api('GET', `/runs/${encodeURIComponent(run.id)}`)).json.status, 'succeeded'),
      { timeout: LIVE_MS, what: 'the manual run to finish' });
    await cf.api('POST', `/jobs/${name}/pause`); // shows "Resume" to an admin

    const page = await suite.page();
    await page.goto(`${cf.url}/#token=${VIEWER_TOKEN}`);
    await heading(page, 'Jobs');
    const writeControls = ['New job', 'Run now', 'Pause', 'Resume', 'Edit', 'Delete'];
    const pages = [
      ['#/jobs', 'Jobs', () => page.getByRole('link', { name, exact: true })],
      [`#/jobs/${name}`, name, () => page.getByRole('table', { name: 'Runs' }).getByRole('row').filter({ hasText: 'succeeded' })],
      ['#/runs', 'Runs', () => page.getByRole('table', { name: 'Runs' }).getByRole('row').filter({ hasText: name })],
      [`#/runs/${encodeURIComponent(run.id)}`, `Run ${run.id}`, () => definition(page, 'Status').filter({ hasText: 'succeeded' })],
      ['#/cluster', 'Cluster', () => page.getByRole('table', { name: 'Instances' })],
    ];
    for (const [route, title, content] of pages) {
      await go(page, cf, route);
      await heading(page, title);
      await loaded(page);
      await content().first().waitFor({ timeout: UI_MS });
      for (const control of writeControls) {
        // Not in the DOM at all, hidden or not.
        const count = await page.getByRole('button', { name: control, exact: true, includeHidden: true }).count()
          + await page.getByRole('link', { name: control, exact: true, includeHidden: true }).count();
        assert.equal(count, 0, `${route}: a viewer's page holds "${control}"`);
      }
    }
    await go(page, cf, '#/jobs/new');
    await page.locator('main').getByText('Your token can only read.').waitFor({ timeout: UI_MS });
    assert.equal(await page.getByRole('button', { name: 'Create job', exact: true }).count(), 0);
    assert.equal(await page.getByLabel('Webhook URL', { exact: true }).count(), 0);
    assertNoProblems(page);
  }));

  test('the Jobs page filters by state, sorts and searches', withFailureShots(async () => {
    await createJob(cf, jobBody('zz-last-paused', receiver.hook(), { schedule: '0 0 1 1 *', paused: true }));
    await createJob(cf, jobBody('aa-first-active', receiver.hook(), { schedule: '0 0 1 1 *', description: 'findme by description' }));
    const all = [];
    for (let cursor = null, first = true; first || cursor; first = false) {
      const reply = await cf.api('GET', `/jobs?limit=500${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
      all.push(...reply.json.items);
      cursor = reply.json.next_cursor;
    }
    const paused = all.filter((job) => job.paused).map((job) => job.name).sort();
    const active = all.filter((job) => !job.paused).map((job) => job.name).sort();
    assert.ok(paused.length > 0 && active.length > 0);

    const page = await suite.page();
    await signIn(page, cf, ADMIN_TOKEN);
    await loaded(page);
    const table = page.getByRole('table', { name: 'Jobs' });
    const names = async () => (await table.getByRole('link').allInnerTexts()).map((t) => t.trim());
    await eventually(async () => assert.deepEqual((await names()).slice().sort(), all.map((j) => j.name).sort()),
      { what: 'every job in the list' });
    assert.equal((await names())[0], 'aa-first-active', 'sorted by name by default');

    const state = page.getByLabel('State', { exact: true });
    await state.selectOption({ label: 'Paused' });
    await eventually(async () => assert.deepEqual((await names()).slice().sort(), paused), { what: 'only paused jobs' });
    await state.selectOption({ label: 'Active' });
    await eventually(async () => assert.deepEqual((await names()).slice().sort(), active), { what: 'only active jobs' });
    await state.selectOption({ label: 'All' });

    const sortBy = page.getByLabel('Sort by', { exact: true });
    await sortBy.selectOption({ label: 'Next run' });
    const soonest = Math.min(...all.filter((j) => j.next_fire_at).map((j) => Date.parse(j.next_fire_at)));
    const firstByNextRun = all.filter((j) => j.next_fire_at && Date.parse(j.next_fire_at) === soonest).map((j) => j.name);
    await eventually(async () => {
      const shown = await names();
      assert.ok(firstByNextRun.includes(shown[0]), `sorted by next run, ${shown[0]} comes first, expected one of ${firstByNextRun}`);
      assert.ok(paused.includes(shown[shown.length - 1]), `sorted by next run, a paused job (no next run) comes last, not ${shown[shown.length - 1]}`);
    }, { what: 'the list sorted by next run' });
    await sortBy.selectOption({ label: 'Last run' });
    await sortBy.selectOption({ label: 'Name' });
    await eventually(async () => {
      const shown = await names();
      assert.equal(shown[0], 'aa-first-active');
      assert.equal(shown[shown.length - 1], 'zz-last-paused');
    }, { what: 'the list sorted by name again' });

    await page.getByLabel('Search jobs', { exact: true }).fill('findme by desc');
    await eventually(async () => assert.deepEqual(await names(), ['aa-first-active']), { what: 'the description search' });
    await page.getByLabel('Search jobs', { exact: true }).fill('no job is called like this');
    await page.locator('main').getByText('No jobs match these filters.').waitFor({ timeout: UI_MS });
    assertNoProblems(page);
  }));

  test('a job holding HTML and script is shown as text and runs nothing', withFailureShots(async () => {
    const html = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=1</script>';
    // The name pattern allows no markup; it carries what it can.
    const name = 'e2e-img.src-x.onerror_pwned';
    await createJob(cf, jobBody(name, receiver.hook(), {
      paused: true,
      description: html,
      webhook: {
        url: receiver.hook(),
        headers: { 'X-Html': '<img src=x onerror=window.__pwned=1>' },
        body: { html, note: '</script><script>window.__pwned=1</script>' },
      },
    }));

    // A second job whose run answer (response_excerpt) is hostile HTML, to show a run page with it.
    const echo = http.createServer((req, res) => {
      req.resume();
      req.on('end', () => {
        res.writeHead(200, { 'Content-Type': 'text/html' });
        res.end(`${html}<b>bold</b>`);
      });
    });
    await new Promise((resolve) => echo.listen(0, '127.0.0.1', resolve));
    try {
      const echoName = 'e2e-hostile-answer';
      await createJob(cf, jobBody(echoName, `http://127.0.0.1:${echo.address().port}/`, {
        schedule: '0 0 1 1 *', description: html,
      }));
      const run = (await cf.api('POST', `/jobs/${echoName}/trigger`)).json;
      const finished = await eventually(async () => {
        const current = (await cf.api('GET', `/runs/${encodeURIComponent(run.id)}`)).json;
        assert.equal(current.status, 'succeeded');
        return current;
      }, { timeout: LIVE_MS, what: 'the hostile-answer run to finish' });
      assert.ok(finished.response_excerpt.includes('<img src=x'), finished.response_excerpt);

      const page = await suite.page();
      await signIn(page, cf, ADMIN_TOKEN);
      async function assertInert(where) {
        const state = await page.evaluate(() => ({
          pwned: typeof window.__pwned,
          imgs: document.querySelectorAll('img[src="x"]').length,
          bold: document.querySelectorAll('main b').length,
          scripts: [...document.scripts].filter((s) => s.textContent.includes('__pwned')).length,
        }));
        assert.deepEqual(state, { pwned: 'undefined', imgs: 0, bold: 0, scripts: 0 }, `${where}: markup from the API became DOM`);
      }

      await loaded(page);
      await page.getByRole('link', { name, exact: true }).waitFor({ timeout: UI_MS });
      await page.getByLabel('Search jobs', { exact: true }).fill('onerror');
      await page.getByRole('link', { name, exact: true }).waitFor({ timeout: UI_MS });
      await assertInert('Jobs page');

      await go(page, cf, `#/jobs/${name}`);
      await heading(page, name);
      await page.locator('main').getByText(html, { exact: true }).first().waitFor({ timeout: UI_MS });
      await assertInert('job page');

      await go(page, cf, `#/jobs/${echoName}`);
      await heading(page, echoName);
      await page.locator('main').getByText(html, { exact: true }).first().waitFor({ timeout: UI_MS });
      await assertInert('job page of the hostile answer');

      await go(page, cf, `#/runs/${encodeURIComponent(run.id)}`);
      await heading(page, `Run ${run.id}`);
      await eventually(async () => {
        const text = await definition(page, 'Response excerpt').locator('pre').innerText();
        assert.ok(text.includes(`${html}<b>bold</b>`), `Response excerpt reads "${text}"`);
      }, { what: 'the response excerpt as text' });
      await assertInert('run page');

      await go(page, cf, `#/jobs/${name}/edit`);
      await heading(page, `Edit ${name}`);
      await eventually(async () => assert.equal(await page.getByLabel('Description', { exact: true }).inputValue(), html),
        { what: 'the edit form to hold the description' });
      await assertInert('edit form');
      assertNoProblems(page);
    } finally {
      await new Promise((resolve) => echo.close(resolve));
    }

    // Runs nothing: the paused every-second job gets no run and no delivery.
    await sleep(3000);
    assert.equal(receiver.deliveries(name).length, 0, 'the paused hostile job was delivered');
    assert.equal((await cf.runs({ job: name })).length, 0, 'the paused hostile job has runs');
  }));
});
