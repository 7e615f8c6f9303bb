// The Jobs page with 100,000 jobs (2,000 on the sanitized build, which
// creates them about five times slower): the server sorts and pages them (GET /jobs
// with sort, limit and cursor), so the browser asks for one page of 100 and
// never for the whole catalog; sorting by failures and next run, paging
// forward and back and searching go to the server too. At 375 px the
// status column shows without scrolling sideways.

import { before, test } from 'node:test';
import assert from 'node:assert/strict';

import {
  ADMIN_TOKEN, LIVE_MS, MOBILE, Processes, SANITIZED, SLOW, UI_MS, assertNoProblems, browserSuite, eventually,
  heading, loaded, screenshot, withFailureShots,
} from './harness.mjs';

const JOBS = SANITIZED ? 2000 : 100000;
const PARALLEL = 16;
const procs = new Processes('scale');
let cf;
const suite = browserSuite(procs);

function jobName(i) {
  return `bulk-${String(i).padStart(6, '0')}`;
}

before(async () => {
  cf = await procs.instance({ name: 'cf' });
});

// The GET /api/v1/jobs requests the page makes, as URLSearchParams.
function recordJobLists(page) {
  const seen = [];
  page.on('request', (req) => {
    const url = new URL(req.url());
    if (req.method() === 'GET' && url.pathname === '/api/v1/jobs') seen.push(url.searchParams);
  });
  return seen;
}

test(`${JOBS.toLocaleString('en')} jobs: the Jobs page sorts, pages and searches on the server; status shows at 375 px`, { timeout: 600000 * SLOW }, withFailureShots(async () => {
  const started = Date.now();
  let next = 0;
  async function worker() {
    while (next < JOBS) {
      const i = next++;
      const reply = await cf.api('POST', '/jobs', {
        name: jobName(i), schedule: `${i % 60} ${i % 24} * * *`, timezone: 'UTC', paused: true,
        description: `bulk job ${i} of the scale test`, webhook: { url: 'http://127.0.0.1:9/hook' },
      });
      if (reply.status !== 201) throw new Error(`POST /jobs ${jobName(i)}: ${reply.status} ${reply.text}`);
    }
  }
  await Promise.all(Array.from({ length: PARALLEL }, worker));
  console.log(`# created ${JOBS} jobs through the API in ${Date.now() - started} ms`);

  // One job that fails (nothing listens on the discard port), run twice by
  // hand, and one that fires every minute, so both sorts have a clear first.
  const failing = 'zz-failing';
  const reply = await cf.api('POST', '/jobs', {
    name: failing, schedule: '0 0 1 1 *', retry: { attempts: 1 },
    webhook: { url: 'http://127.0.0.1:9/hook' },
  });
  assert.equal(reply.status, 201, reply.text);
  for (let i = 0; i < 2; i++) {
    const run = (await cf.api('POST', `/jobs/${failing}/trigger`)).json;
    await eventually(async () => {
      assert.equal((await cf.api('GET', `/runs/${encodeURIComponent(run.id)}`)).json.status, 'failed');
    }, { timeout: LIVE_MS, what: `failed run ${i + 1} of ${failing}` });
  }
  const soonest = 'zz-every-minute';
  assert.equal((await cf.api('POST', '/jobs', {
    name: soonest, schedule: '0 * * * * *', webhook: { url: 'http://127.0.0.1:9/hook' },
  })).status, 201);

  const page = await suite.page();
  const lists = recordJobLists(page);
  const loadStart = Date.now();
  await page.goto(`${cf.url}/#token=${ADMIN_TOKEN}`);
  await heading(page, 'Jobs');
  const main = page.locator('main');
  await main.getByText(/^1\s*[–-]\s*100$/).waitFor({ timeout: UI_MS });
  console.log(`# the Jobs page showed its first 100 of ${JOBS + 2} jobs after ${Date.now() - loadStart} ms`);
  // One page asked for, not the catalog.
  assert.equal(lists.length, 1, `the page listed jobs ${lists.length} times`);
  assert.equal(lists[0].get('limit'), '100');

  const table = page.getByRole('table', { name: 'Jobs' });
  const dataRows = table.getByRole('row').filter({ has: page.getByRole('link') });
  const firstName = async () => (await dataRows.first().getByRole('rowheader').getByRole('link').innerText()).trim();
  assert.equal(await dataRows.count(), 100, 'the first page holds 100 rows');
  assert.equal(await firstName(), jobName(0));

  await page.getByRole('button', { name: 'Next', exact: true }).click();
  await main.getByText(/^101\s*[–-]\s*200$/).waitFor({ timeout: UI_MS });
  assert.equal(await dataRows.count(), 100);
  assert.equal(await firstName(), jobName(100));
  assert.ok(lists.at(-1).get('cursor'), 'the second page was asked for with a cursor');
  await page.getByRole('button', { name: 'Previous', exact: true }).click();
  await main.getByText(/^1\s*[–-]\s*100$/).waitFor({ timeout: UI_MS });
  assert.equal(await firstName(), jobName(0));

  const sortBy = page.getByLabel('Sort by', { exact: true });
  await sortBy.selectOption({ label: 'Failures' });
  await eventually(async () => assert.equal(await firstName(), failing), { what: 'the failing job first' });
  assert.equal(lists.at(-1).get('sort'), '-failures');
  const failingRow = dataRows.filter({ hasText: failing });
  assert.equal((await failingRow.getByRole('cell').nth(3).innerText()).trim(), '2', 'two failures in a row');
  assert.match(await failingRow.getByRole('cell').nth(4).innerText(), /\S/, 'the last error is shown');

  // A sorted page goes on from its cursor: the second page by failures is
  // a hundred further jobs, none of the first page.
  const firstPage = new Set(await table.getByRole('rowheader').allInnerTexts());
  await page.getByRole('button', { name: 'Next', exact: true }).click();
  await main.getByText(/^101\s*[–-]\s*200$/).waitFor({ timeout: UI_MS });
  const secondPage = await table.getByRole('rowheader').allInnerTexts();
  assert.equal(secondPage.length, 100);
  assert.equal(secondPage.filter((name) => firstPage.has(name)).length, 0, 'the pages overlap');
  assert.equal(lists.at(-1).get('sort'), '-failures');

  await sortBy.selectOption({ label: 'Next run' });
  await eventually(async () => assert.equal(await firstName(), soonest), { what: 'the soonest job first' });
  await main.getByText(/^1\s*[–-]\s*100$/).waitFor({ timeout: UI_MS });

  // Status at 375 px: the first row's status cell lies inside the viewport.
  await page.setViewportSize(MOBILE);
  const status = dataRows.first().getByRole('cell').first();
  await eventually(async () => {
    const box = await status.boundingBox();
    assert.ok(box && box.x >= 0 && box.x + box.width <= MOBILE.width,
      `the status cell spans ${box?.x}..${box ? box.x + box.width : '?'} px of ${MOBILE.width}`);
    assert.match(await status.innerText(), /Active|Paused/);
  }, { what: 'the status column inside 375 px' });
  console.log(`# screenshot ${await screenshot(page, 'jobs-sorted-375px')}`);
  await page.setViewportSize({ width: 1280, height: 900 });

  await sortBy.selectOption({ label: 'Name' });
  const wanted = jobName(1777);
  await page.getByLabel('Search jobs', { exact: true }).fill(wanted);
  await eventually(async () => {
    assert.equal(await dataRows.count(), 1);
    await table.getByRole('link', { name: wanted, exact: true }).waitFor({ timeout: 1000 });
  }, { timeout: 30000 * SLOW, what: `the search to narrow the list to ${wanted}` });
  assert.equal(lists.at(-1).get('q'), wanted);
  await page.getByLabel('Search jobs', { exact: true }).fill('bulk job 1234 of');
  await table.getByRole('link', { name: jobName(1234), exact: true }).waitFor();
  await eventually(async () => assert.equal(await dataRows.count(), 1), { what: 'one row for the description search' });
  await loaded(page);
  assert.ok(lists.every((params) => params.get('limit') === '100'), 'a list asked for more than a page');
  assertNoProblems(page);
}));
