// Every page of the dashboard in light and dark, at 1280 px and 375 px:
// axe-core finds no serious or critical violation, the 375 px layout does not
// overflow sideways, and a screenshot of each goes to E2E_ARTIFACTS.

import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import {
  ADMIN_TOKEN, DESKTOP, LIVE_MS, Processes, SLOW, UI_MS, assertNoProblems, auditPage, browserSuite,
  createJob, eventually, go, heading, jobBody, loaded, signIn, withFailureShots,
} from './harness.mjs';

const procs = new Processes('pages');
let cf;
let receiver;
let runId;
let failedRunId;
const suite = browserSuite(procs);

const JOB = 'nightly-report';

before(async () => {
  receiver = await procs.receiver();
  cf = await procs.instance({ name: 'cf' });

  // A job with a history: a few seconds of every-second runs, then paused.
  await createJob(cf, jobBody(JOB, receiver.hook(), {
    description: 'Sends the nightly sales report to the reporting service.',
    timezone: 'Europe/Berlin',
    webhook: { url: receiver.hook(), headers: { 'X-Team': 'sales' }, body: { report: 'sales' } },
  }));
  await eventually(async () => {
    const runs = await cf.runs({ job: JOB, status: 'succeeded' });
    assert.ok(runs.length >= 4);
  }, { timeout: LIVE_MS, what: 'a few runs of the history job' });
  await cf.api('POST', `/jobs/${JOB}/pause`);
  runId = (await cf.runs({ job: JOB, status: 'succeeded' }))[0].id;

  // One that fails (nothing listens on the discard port), and a few more.
  await createJob(cf, jobBody('billing-sync', 'http://127.0.0.1:9/hook', {
    schedule: '*/15 * * * *', description: 'Pushes invoices to the billing system.',
    retry: { attempts: 1 },
  }));
  const failed = (await cf.api('POST', '/jobs/billing-sync/trigger')).json;
  failedRunId = failed.id;
  await eventually(async () => {
    assert.equal((await cf.api('GET', `/runs/${encodeURIComponent(failedRunId)}`)).json.status, 'failed');
  }, { timeout: LIVE_MS, what: 'the failing run to finish' });
  await createJob(cf, jobBody('cache-warmup', receiver.hook(), {
    schedule: '@every 1h30m', timezone: 'America/New_York', paused: true,
  }));
  await createJob(cf, jobBody('weekly-digest', receiver.hook(), {
    schedule: '0 9 * * MON', timezone: 'Asia/Tokyo', description: 'Weekly digest email.',
  }));
});

// Opens a signed-in page (or not, for the sign-in page), lets prepare bring it
// to the state to audit, then audits it in every scheme and size.
async function audit(label, { token = ADMIN_TOKEN, prepare }) {
  const page = await suite.page({ colorScheme: 'light', viewport: DESKTOP });
  if (token) await signIn(page, cf, token);
  else await page.goto(`${cf.url}/`);
  await prepare(page);

  const failures = await auditPage(page, label);
  try {
    assertNoProblems(page, label);
  } catch (error) {
    failures.push(error.message);
  }
  assert.equal(failures.length, 0, `\n${failures.join('\n\n')}`);
}

async function rowsShown(page, tableName, text) {
  await page.getByRole('table', { name: tableName }).getByRole('row').filter({ hasText: text }).first()
    .waitFor({ timeout: UI_MS });
}

describe('every page: axe, 375 px layout, screenshots', { timeout: 600000 * SLOW }, () => {
  test('Sign-in', withFailureShots(() => audit('sign-in', {
    token: null,
    prepare: async (page) => {
      await heading(page, 'Sign in');
    },
  })));

  test('Sign-in with an error', withFailureShots(() => audit('sign-in-error', {
    token: null,
    prepare: async (page) => {
      await heading(page, 'Sign in');
      await page.getByLabel('API token', { exact: true }).fill('wrong-token');
      await page.getByRole('button', { name: 'Sign in', exact: true }).click();
      await page.locator('main').getByRole('alert').first().waitFor({ timeout: UI_MS });
    },
  })));

  test('Jobs', withFailureShots(() => audit('jobs', {
    prepare: async (page) => {
      await heading(page, 'Jobs');
      await loaded(page);
      await page.getByRole('table', { name: 'Jobs' }).getByRole('link', { name: JOB, exact: true }).waitFor({ timeout: UI_MS });
    },
  })));

  test('New job form', withFailureShots(() => audit('job-new', {
    prepare: async (page) => {
      await go(page, cf, '#/jobs/new');
      await heading(page, 'New job');
    },
  })));

  test('New job form with a schedule error', withFailureShots(() => audit('job-new-invalid', {
    prepare: async (page) => {
      await go(page, cf, '#/jobs/new');
      await heading(page, 'New job');
      await page.getByLabel('Schedule', { exact: true }).fill('61 * * * *');
      await eventually(async () => assert.notEqual((await page.locator('#field-schedule-error').innerText()).trim(), ''),
        { what: 'the schedule error' });
    },
  })));

  test('New job form with the preview', withFailureShots(() => audit('job-new-preview', {
    prepare: async (page) => {
      await go(page, cf, '#/jobs/new');
      await heading(page, 'New job');
      await page.getByLabel('Schedule', { exact: true }).fill('0 8 * * MON-FRI');
      await eventually(async () => assert.equal(
        await page.getByRole('region', { name: 'Schedule preview' }).getByRole('listitem').count(), 5),
      { what: 'the preview' });
    },
  })));

  test('Job page', withFailureShots(() => audit('job', {
    prepare: async (page) => {
      await go(page, cf, `#/jobs/${JOB}`);
      await heading(page, JOB);
      await loaded(page);
      await rowsShown(page, 'Runs', 'succeeded');
    },
  })));

  test('Job page with the delete dialog', withFailureShots(() => audit('job-delete-dialog', {
    prepare: async (page) => {
      await go(page, cf, '#/jobs/weekly-digest');
      await heading(page, 'weekly-digest');
      await page.locator('main').getByRole('button', { name: 'Delete', exact: true }).click();
      await page.getByRole('dialog', { name: 'Delete weekly-digest?' }).waitFor({ timeout: UI_MS });
    },
  })));

  test('Edit form', withFailureShots(() => audit('job-edit', {
    prepare: async (page) => {
      await go(page, cf, `#/jobs/${JOB}/edit`);
      await heading(page, `Edit ${JOB}`);
      await eventually(async () => assert.notEqual(await page.getByLabel('Schedule', { exact: true }).inputValue(), ''),
        { what: 'the edit form to load' });
    },
  })));

  test('Runs page', withFailureShots(() => audit('runs', {
    prepare: async (page) => {
      await go(page, cf, '#/runs');
      await heading(page, 'Runs');
      await loaded(page);
      await rowsShown(page, 'Runs', 'failed');
    },
  })));

  test('Run page (succeeded)', withFailureShots(() => audit('run', {
    prepare: async (page) => {
      await go(page, cf, `#/runs/${encodeURIComponent(runId)}`);
      await heading(page, `Run ${runId}`);
      await loaded(page);
      await page.locator('main dl').getByText('succeeded', { exact: true }).waitFor({ timeout: UI_MS });
    },
  })));

  test('Run page (failed)', withFailureShots(() => audit('run-failed', {
    prepare: async (page) => {
      await go(page, cf, `#/runs/${encodeURIComponent(failedRunId)}`);
      await heading(page, `Run ${failedRunId}`);
      await loaded(page);
      await page.locator('main dl').getByText('failed', { exact: true }).waitFor({ timeout: UI_MS });
    },
  })));

  test('Settings page', withFailureShots(() => audit('settings', {
    prepare: async (page) => {
      await go(page, cf, '#/settings');
      await heading(page, 'Settings');
      await loaded(page);
      await page.locator('main').getByText(/Signing secret|does not offer/).first().waitFor({ timeout: UI_MS });
    },
  })));

  test('Cluster page (standalone)', withFailureShots(() => audit('cluster-standalone', {
    prepare: async (page) => {
      await go(page, cf, '#/cluster');
      await heading(page, 'Cluster');
      await loaded(page);
      await page.locator('main').getByText('This instance runs standalone', { exact: false }).waitFor({ timeout: UI_MS });
    },
  })));
});
