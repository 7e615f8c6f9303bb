// The dashboard over HTTPS (--tls-cert, --tls-key): a throwaway CA and a
// server certificate made with the openssl CLI at test time; the browser
// context ignores that Chromium does not know the CA, while the test's own
// API client verifies against it. Signed in over https://, the jobs list
// loads, the event stream goes "Live", and a run triggered meanwhile shows up
// without a reload.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import https from 'node:https';
import path from 'node:path';

import {
  ADMIN_TOKEN, LIVE_MS, Processes, SLOW, UI_MS, assertNoProblems, browserSuite, eventually,
  heading, jobBody, liveIndicator, loaded, signIn, withFailureShots,
} from './harness.mjs';

const procs = new Processes('https');
const suite = browserSuite(procs);

// A CA and a certificate for localhost and 127.0.0.1 signed by it, in dir.
function makeCertificates(dir) {
  const openssl = (...args) => execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' });
  openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.crt',
    '-days', '2', '-subj', '/CN=cronfence e2e ca');
  openssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'server.key', '-out', 'server.csr',
    '-subj', '/CN=localhost');
  fs.writeFileSync(path.join(dir, 'san.cnf'), 'subjectAltName=DNS:localhost,IP:127.0.0.1\n');
  openssl('x509', '-req', '-in', 'server.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key',
    '-CAcreateserial', '-out', 'server.crt', '-days', '2', '-extfile', 'san.cnf');
  return {
    ca: fs.readFileSync(path.join(dir, 'ca.crt')),
    cert: path.join(dir, 'server.crt'),
    key: path.join(dir, 'server.key'),
  };
}

// One API request over HTTPS, verified against ca. Resolves with { status, json }.
function api(instance, ca, method, apiPath, body) {
  const data = body === undefined ? null : Buffer.from(JSON.stringify(body));
  return new Promise((resolve, reject) => {
    const req = https.request(`${instance.url}/api/v1${apiPath}`, {
      method,
      ca,
      timeout: 30000 * SLOW,
      headers: {
        Authorization: `Bearer ${ADMIN_TOKEN}`,
        ...(data ? { 'Content-Type': 'application/json', 'Content-Length': data.length } : {}),
      },
    }, (res) => {
      const chunks = [];
      res.on('data', (chunk) => chunks.push(chunk));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString();
        resolve({ status: res.statusCode, text, json: text ? JSON.parse(text) : null });
      });
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${apiPath}: timed out`)));
    req.on('error', reject);
    req.end(data);
  });
}

test('the dashboard works over HTTPS, live updates included', { timeout: 180000 * SLOW }, withFailureShots(async () => {
  const files = makeCertificates(procs.dir);
  const receiver = await procs.receiver();
  const cf = await procs.instance({
    name: 'cf', https: true, args: ['--tls-cert', files.cert, '--tls-key', files.key],
  });
  assert.match(cf.url, /^https:/);
  const name = 'e2e-https';
  const created = await api(cf, files.ca, 'POST', '/jobs',
    jobBody(name, receiver.hook(), { schedule: '0 0 1 1 *' }));
  assert.equal(created.status, 201, created.text);

  const page = await suite.page({ ignoreHTTPSErrors: true });
  await signIn(page, cf, ADMIN_TOKEN);
  assert.match(page.url(), /^https:\/\/127\.0\.0\.1:/);
  await page.getByRole('table', { name: 'Jobs' }).getByRole('link', { name, exact: true })
    .waitFor({ timeout: UI_MS });

  await page.getByRole('table', { name: 'Jobs' }).getByRole('link', { name, exact: true }).click();
  await heading(page, name);
  await loaded(page);
  await eventually(async () => assert.equal((await liveIndicator(page).innerText()).trim(), 'Live'),
    { timeout: LIVE_MS, what: 'the indicator to read "Live" over HTTPS' });
  await page.evaluate(() => { window.__e2eNotReloaded = true; });

  const run = await api(cf, files.ca, 'POST', `/jobs/${name}/trigger`);
  assert.equal(run.status, 202, run.text);
  await page.getByRole('table', { name: 'Runs' }).getByRole('row').filter({ hasText: 'manual' })
    .filter({ hasText: 'succeeded' }).first().waitFor({ timeout: LIVE_MS });
  assert.equal(await page.evaluate(() => window.__e2eNotReloaded), true, 'the page was reloaded');
  assert.ok(receiver.deliveries(name).length >= 1);
  assertNoProblems(page, 'the dashboard over HTTPS');
}));
