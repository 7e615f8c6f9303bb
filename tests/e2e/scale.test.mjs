// The Jobs page with 10,000 jobs: it loads them all, pages them, searches
// them, and the page keeps answering while it loads.

import { before, test } from 'node:test';
import assert from 'node:assert/strict';

import {
  ADMIN_TOKEN, Processes, SLOW, assertNoProblems, browserSuite, eventually, heading,
  withFailureShots,
} from './harness.mjs';

const JOBS = 10000;
const PARALLEL = 16;
const procs = new Processes('scale');
let cf;
const suite = browserSuite(procs);

function jobName(i) {
  return `bulk-${String(i).padStart(5, '0')}`;
}

before(async () => {
  cf = await procs.instance({ name: 'cf' });
});

test('10,000 jobs: the Jobs page loads them all, pages, searches and stays responsive', { timeout: 600000 * SLOW }, withFailureShots(async () => {
  const started = Date.now();
  let next = 0;
  async function worker() {
    while (next < JOBS) {
      const i = next++;
      const reply = await cf.api('POST', '/jobs', {
        name: jobName(i), schedule: `${i % 60} ${i % 24} * * *`, timezone: 'UTC', paused: true,
        description: `bulk job number ${i}`, webhook: { url: 'http://127.0.0.1:9/hook' },
      });
      if (reply.status !== 201) throw new Error(`POST /jobs ${jobName(i)}: ${reply.status} ${reply.text}`);
    }
  }
  await Promise.all(Array.from({ length: PARALLEL }, worker));
  console.log(`# created ${JOBS} jobs through the API in ${Date.now() - started} ms`);

  const page = await suite.page();
  const loadStart = Date.now();
  await page.goto(`${cf.url}/#token=${ADMIN_TOKEN}`);
  await heading(page, 'Jobs');

  // While the list loads, the page must keep answering evaluations.
  let slowest = 0;
  let probes = 0;
  const total = page.locator('main').getByText(/1\s*[–-]\s*100 of 10000\b/).first();
  while ((await total.count()) === 0) {
    const before = Date.now();
    await page.evaluate(() => document.title);
    slowest = Math.max(slowest, Date.now() - before);
    probes += 1;
    if (Date.now() - loadStart > 120000 * SLOW) throw new Error('the Jobs page never showed "of 10000"');
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const loadMs = Date.now() - loadStart;
  console.log(`# Jobs page showed "of 10000" after ${loadMs} ms; slowest of ${probes} page evaluations while loading: ${slowest} ms`);

  const table = page.getByRole('table', { name: 'Jobs' });
  const dataRows = table.getByRole('row').filter({ has: page.getByRole('link') });
  assert.equal(await dataRows.count(), 100, 'the first page holds 100 rows');

  await page.getByRole('button', { name: 'Next', exact: true }).click();
  await page.locator('main').getByText(/101\s*[–-]\s*200 of 10000/).first().waitFor();
  assert.equal(await dataRows.count(), 100);
  await page.getByRole('button', { name: 'Previous', exact: true }).click();
  await page.locator('main').getByText(/1\s*[–-]\s*100 of 10000/).first().waitFor();

  const wanted = jobName(7777);
  const searchStart = Date.now();
  await page.getByLabel('Search jobs', { exact: true }).fill(wanted);
  await eventually(async () => {
    assert.equal(await dataRows.count(), 1);
    await table.getByRole('link', { name: wanted, exact: true }).waitFor({ timeout: 1000 });
  }, { timeout: 30000 * SLOW, what: `the search to narrow the list to ${wanted}` });
  console.log(`# search narrowed 10000 jobs to one in ${Date.now() - searchStart} ms`);

  // Search covers descriptions too.
  await page.getByLabel('Search jobs', { exact: true }).fill('bulk job number 4242');
  await table.getByRole('link', { name: jobName(4242), exact: true }).waitFor();
  await eventually(async () => assert.equal(await dataRows.count(), 1), { what: 'one row for the description search' });

  const probeStart = Date.now();
  await page.evaluate(() => document.querySelectorAll('tr').length);
  console.log(`# one page evaluation after loading took ${Date.now() - probeStart} ms`);
  assertNoProblems(page);
}));
