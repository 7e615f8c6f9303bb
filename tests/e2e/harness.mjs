// Harness for the end-to-end tests: the real cronfence, cronfence-receiver and
// redis-server processes on free loopback ports, and Debian's headless Chromium
// driven through playwright-core, clicking the dashboard like a person would.
//
// Environment:
//   CRONFENCE_BIN_DIR   folder holding cronfence and cronfence-receiver (default <repo>/build)
//   E2E_ARTIFACTS       where screenshots go (default <repo>/build/e2e-artifacts)
//   E2E_WEB_DIR         when set, instances serve this folder (--web-dir) instead of
//                       the dashboard built into the binary
//   CRONFENCE_SANITIZED when set, the binaries are the ASan/UBSan build: timeouts are
//                       stretched and a non-zero exit after SIGTERM fails the test
//
// Processes are started by the harness only and stopped by their pid (SIGTERM,
// then SIGKILL after a timeout), also when a test fails and when this test
// process exits. Any sanitizer report on a cronfence process's stderr fails the
// test during which it appeared.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';
import { after, afterEach, before } from 'node:test';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
export const REPO = path.resolve(here, '..', '..');
export const BIN_DIR = path.resolve(process.env.CRONFENCE_BIN_DIR || path.join(REPO, 'build'));
export const ARTIFACTS = path.resolve(
  process.env.E2E_ARTIFACTS || path.join(REPO, 'build', 'e2e-artifacts'));
export const WEB_DIR = process.env.E2E_WEB_DIR ? path.resolve(process.env.E2E_WEB_DIR) : null;
export const SANITIZED = Boolean(process.env.CRONFENCE_SANITIZED);
export const CHROMIUM = process.env.E2E_CHROMIUM || '/usr/bin/chromium';
export const REDIS_SERVER = process.env.E2E_REDIS_SERVER || '/usr/bin/redis-server';

export const ADMIN_TOKEN = 'admin-token-for-e2e-0123456789abc';
export const VIEWER_TOKEN = 'viewer-token-for-e2e-0123456789ab';
export const SECRET = 'receiver-secret-for-e2e-0123456789';

// Sanitized binaries start and answer slower; every wait is stretched by this.
export const SLOW = SANITIZED ? 3 : 1;
// How long a live update (SSE event or periodic refresh) may take to show.
export const LIVE_MS = 15000 * SLOW;
// How long any ordinary element may take to appear.
export const UI_MS = 10000 * SLOW;

const SANITIZER_MARKERS = ['ERROR: AddressSanitizer', 'ERROR: LeakSanitizer', 'runtime error:'];

export const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// Calls check() until it returns without throwing (its value is returned);
// after timeoutMs the last error is thrown, prefixed with what was awaited.
export async function eventually(check, { timeout = UI_MS, interval = 100, what = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  let lastError;
  for (;;) {
    try {
      return await check();
    } catch (error) {
      lastError = error;
    }
    if (Date.now() > deadline) {
      const wrapped = new Error(`timed out after ${timeout} ms waiting for ${what}: ${lastError?.message}`);
      wrapped.cause = lastError;
      throw wrapped;
    }
    await sleep(interval);
  }
}

// ---------------------------------------------------------------- processes

const live = new Set(); // every child started and not yet reaped

function killAllNow() {
  for (const child of live) {
    try {
      process.kill(child.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

// Whatever ends this test file, nothing it started outlives it.
process.on('exit', killAllNow);
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(signal, () => {
    killAllNow();
    process.exit(128 + os.constants.signals[signal]);
  });
}

export function makeTempDir(prefix) {
  return fs.mkdtempSync(path.join(os.tmpdir(), `cf-e2e-${prefix}-`));
}

// A loopback port nobody listens on right now (for redis-server, which cannot
// report the port it picked).
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

// One child process; stdout is scanned for 'listening on HOST:PORT', stderr
// goes to <dir>/<name>.stderr.
export class Proc {
  constructor({ name, argv, dir, announcesPort = true }) {
    this.name = name;
    this.argv = argv;
    this.dir = dir;
    this.announcesPort = announcesPort;
    this.stderrPath = path.join(dir, `${name}.stderr`);
    this.stdoutLines = [];
    this.child = null;
    this.port = null;
    this.exitCode = undefined;
    this.exitSignal = undefined;
  }

  get pid() {
    return this.child?.pid;
  }

  alive() {
    return this.child !== null && this.child.exitCode === null && this.child.signalCode === null;
  }

  async start(timeoutMs = 15000 * SLOW) {
    const stderrFd = fs.openSync(this.stderrPath, 'a');
    const child = spawn(this.argv[0], this.argv.slice(1), {
      cwd: this.dir, stdio: ['ignore', 'pipe', stderrFd], env: process.env,
    });
    fs.closeSync(stderrFd);
    this.child = child;
    this.exitCode = undefined;
    this.exitSignal = undefined;
    live.add(child);
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        live.delete(child);
        this.exitCode = code;
        this.exitSignal = signal;
        resolve();
      });
    });
    let buffered = '';
    let announce;
    const announced = new Promise((resolve) => { announce = resolve; });
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk) => {
      buffered += chunk;
      let newline;
      while ((newline = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, newline);
        buffered = buffered.slice(newline + 1);
        this.stdoutLines.push(line);
        const match = /^listening on (.+):(\d+)$/.exec(line.trim());
        if (match) {
          this.port = Number(match[2]);
          announce();
        }
      }
    });
    if (!this.announcesPort) return this;
    let timer;
    const outcome = await Promise.race([
      announced.then(() => 'ready'),
      this.exited.then(() => 'exited'),
      new Promise((resolve) => { timer = setTimeout(() => resolve('timeout'), timeoutMs); }),
    ]);
    clearTimeout(timer);
    if (outcome !== 'ready') {
      await this.stop();
      throw new Error(`${this.name} did not start (${outcome}, exit ${this.exitCode}): ${this.stderr().slice(-4000)}`);
    }
    return this;
  }

  stderr() {
    try {
      return fs.readFileSync(this.stderrPath, 'utf8');
    } catch {
      return '';
    }
  }

  // Sends signal to the pid; without wait it returns at once.
  signal(signal) {
    if (this.alive()) process.kill(this.child.pid, signal);
  }

  // SIGTERM (or signal), then SIGKILL after timeoutMs; resolves when reaped.
  async stop({ signal = 'SIGTERM', timeoutMs = 30000 * SLOW } = {}) {
    if (!this.child) return;
    if (this.alive()) {
      try {
        process.kill(this.child.pid, 'SIGCONT'); // in case a test left it stopped
        process.kill(this.child.pid, signal);
      } catch {
        // exited meanwhile
      }
      let timer;
      const killed = await Promise.race([
        this.exited.then(() => false),
        new Promise((resolve) => { timer = setTimeout(() => resolve(true), timeoutMs); }),
      ]);
      clearTimeout(timer);
      if (killed) {
        try {
          process.kill(this.child.pid, 'SIGKILL');
        } catch {
          // gone
        }
        await this.exited;
        this.stopProblem = `${this.name} did not stop within ${timeoutMs} ms of ${signal}`;
      }
    }
    await this.exited;
    this.child = null;
  }

  kill9() {
    return this.stop({ signal: 'SIGKILL' });
  }

  // Error messages for sanitizer reports on stderr (empty when clean).
  sanitizerReports() {
    const text = this.stderr();
    if (SANITIZER_MARKERS.some((marker) => text.includes(marker))) {
      return [`${this.name}: sanitizer report on stderr:\n${text.slice(-6000)}`];
    }
    return [];
  }
}

export class Instance extends Proc {
  // With https, args must carry --tls-cert and --tls-key (the API helpers here speak HTTP only).
  constructor({ dir, name = 'cronfence', args = [], https = false }) {
    const db = path.join(dir, `${name}.db`);
    const argv = [path.join(BIN_DIR, 'cronfence'), '--listen', '127.0.0.1:0', '--db', db,
      '--admin-token', ADMIN_TOKEN, '--viewer-token', VIEWER_TOKEN, '--signing-secret', SECRET,
      ...(WEB_DIR ? ['--web-dir', WEB_DIR] : []), ...args];
    super({ name, argv, dir });
    this.db = db;
    this.scheme = https ? 'https' : 'http';
  }

  get url() {
    return `${this.scheme}://127.0.0.1:${this.port}`;
  }

  // Restarts on the same port (the database is kept), for the reconnect test.
  async restart() {
    await this.stop();
    const port = this.port;
    const listen = this.argv.indexOf('--listen');
    this.argv[listen + 1] = `127.0.0.1:${port}`;
    await this.start();
    return this;
  }

  api(method, apiPath, body, { token = ADMIN_TOKEN, headers = {} } = {}) {
    return request(method, this.url + '/api/v1' + apiPath, body, {
      ...headers, ...(token ? { Authorization: `Bearer ${token}` } : {}),
    });
  }

  // Every run (following cursors), newest first.
  async runs(query = {}) {
    const items = [];
    let cursor = null;
    do {
      const params = new URLSearchParams({ limit: '500', ...query });
      if (cursor) params.set('cursor', cursor);
      const reply = await this.api('GET', `/runs?${params}`);
      if (reply.status !== 200) throw new Error(`GET /runs: ${reply.status} ${reply.text}`);
      items.push(...reply.json.items);
      cursor = reply.json.next_cursor;
    } while (cursor);
    return items;
  }
}

export class Receiver extends Proc {
  constructor({ dir, name = 'receiver', secret = SECRET }) {
    const log = path.join(dir, `${name}.jsonl`);
    const argv = [path.join(BIN_DIR, 'cronfence-receiver'), '--listen', '127.0.0.1:0',
      '--db', path.join(dir, `${name}.db`), '--secret', secret, '--log', log];
    super({ name, argv, dir });
    this.log = log;
  }

  hook(suffix = '/hook') {
    return `http://127.0.0.1:${this.port}${suffix}`;
  }

  // The accepted deliveries (one JSON object per line of --log), for job if given.
  deliveries(job) {
    let text = '';
    try {
      text = fs.readFileSync(this.log, 'utf8');
    } catch {
      return [];
    }
    return text.split('\n').filter(Boolean).map((line) => JSON.parse(line))
      .filter((delivery) => job === undefined || delivery.job === job);
  }
}

export class RedisNode extends Proc {
  constructor({ dir, name, port }) {
    const dataDir = path.join(dir, name);
    fs.mkdirSync(dataDir, { recursive: true });
    const argv = [REDIS_SERVER, '--port', String(port), '--bind', '127.0.0.1',
      '--appendonly', 'yes', '--appendfsync', 'always', '--maxmemory-policy', 'noeviction',
      '--save', '', '--dir', dataDir, '--daemonize', 'no', '--logfile', path.join(dataDir, 'redis.log')];
    super({ name, argv, dir, announcesPort: false });
    this.port = port;
  }

  get url() {
    return `redis://127.0.0.1:${this.port}`;
  }

  get address() {
    return `127.0.0.1:${this.port}`;
  }

  // Starts the server and waits until it answers PING.
  async start() {
    await super.start();
    const deadline = Date.now() + 10000 * SLOW;
    for (;;) {
      if (!this.alive()) throw new Error(`redis-server ${this.name} exited: ${this.exitCode}`);
      if (await redisPing(this.port)) return this;
      if (Date.now() > deadline) throw new Error(`redis-server ${this.name} did not answer on ${this.port}`);
      await sleep(50);
    }
  }

  sanitizerReports() {
    return []; // not ours
  }
}

function redisPing(port) {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    let reply = '';
    socket.setTimeout(1000, () => { socket.destroy(); resolve(false); });
    socket.on('error', () => resolve(false));
    socket.on('connect', () => socket.write('PING\r\n'));
    socket.on('data', (chunk) => {
      reply += chunk;
      if (reply.includes('\r\n')) {
        socket.end();
        resolve(reply.startsWith('+PONG'));
      }
    });
  });
}

// Tracks the processes of one suite. Use with node:test hooks:
//   const procs = new Processes('dashboard');
//   afterEach(() => procs.checkClean()); after(() => procs.stopAll());
export class Processes {
  constructor(prefix) {
    this.dir = makeTempDir(prefix);
    this.list = [];
    this.reported = new Set();
  }

  async add(proc) {
    this.list.push(proc);
    return proc.start();
  }

  instance(options = {}) {
    return this.add(new Instance({ dir: this.dir, ...options }));
  }

  receiver(options = {}) {
    return this.add(new Receiver({ dir: this.dir, ...options }));
  }

  async redis(name) {
    return this.add(new RedisNode({ dir: this.dir, name, port: await freePort() }));
  }

  // Throws when a process wrote a sanitizer report not yet reported.
  checkClean() {
    const problems = [];
    for (const proc of this.list) {
      for (const report of proc.sanitizerReports()) {
        if (!this.reported.has(proc)) problems.push(report);
        this.reported.add(proc);
      }
    }
    if (problems.length) throw new Error(problems.join('\n\n'));
  }

  // Stops everything by pid (cronfence instances first, then the rest) and
  // throws on sanitizer reports, hung processes or, sanitized, unclean exits.
  async stopAll() {
    const problems = [];
    const order = [...this.list.filter((p) => p instanceof Instance),
      ...this.list.filter((p) => !(p instanceof Instance))];
    for (const proc of order) {
      const wasAlive = proc.alive();
      await proc.stop();
      if (proc.stopProblem) problems.push(proc.stopProblem);
      if (!this.reported.has(proc)) problems.push(...proc.sanitizerReports());
      if (SANITIZED && wasAlive && proc instanceof Instance && proc.exitCode !== 0) {
        problems.push(`${proc.name} exited ${proc.exitCode ?? proc.exitSignal} after SIGTERM: ${proc.stderr().slice(-4000)}`);
      }
    }
    if (problems.length || failed || process.env.E2E_KEEP_TMP) {
      console.log(`# kept ${this.dir} (databases, stderr of every process)`);
    } else {
      fs.rmSync(this.dir, { recursive: true, force: true });
    }
    if (problems.length) throw new Error(problems.join('\n\n'));
  }
}

// --------------------------------------------------------------------- HTTP

// Keep-alive agent so that thousands of API calls reuse a few connections.
export const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });

// One HTTP request; body is a JSON-able value or a string. Resolves with
// { status, headers, text, json }.
export function request(method, url, body, headers = {}) {
  return new Promise((resolve, reject) => {
    let payload = null;
    const allHeaders = { ...headers };
    if (body !== undefined && body !== null) {
      payload = typeof body === 'string' ? body : JSON.stringify(body);
      if (typeof body !== 'string') allHeaders['Content-Type'] = 'application/json';
      allHeaders['Content-Length'] = Buffer.byteLength(payload);
    }
    const req = http.request(url, { method, headers: allHeaders, agent, timeout: 30000 * SLOW }, (res) => {
      const chunks = [];
      res.on('data', (chunk) => chunks.push(chunk));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json;
        try {
          json = text ? JSON.parse(text) : null;
        } catch {
          json = undefined;
        }
        resolve({ status: res.statusCode, headers: res.headers, text, json });
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${url}: timed out`)));
    req.on('error', reject);
    if (payload !== null) req.write(payload);
    req.end();
  });
}

// A job definition delivering to url, signed with the receiver's secret.
export function jobBody(name, url, fields = {}) {
  return {
    name, schedule: '* * * * * *', timezone: 'UTC', webhook: { url }, signing_secret: SECRET,
    ...fields,
  };
}

export async function createJob(instance, body) {
  const reply = await instance.api('POST', '/jobs', body);
  if (reply.status !== 201) throw new Error(`POST /jobs ${body.name}: ${reply.status} ${reply.text}`);
  return reply.json;
}

// ------------------------------------------------------------------ browser

export function launchBrowser() {
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
}

export const DESKTOP = { width: 1280, height: 900 };
export const MOBILE = { width: 375, height: 812 };

// Console messages the browser writes for API answers with a 4xx status
// ("Failed to load resource: the server responded with a status of 422").
// They are the network log, not the dashboard's: the tests that provoke them
// check the dashboard shows the error. 5xx and failures of any other URL count.
function expectedNetworkLog(message) {
  const url = message.location()?.url || '';
  return /Failed to load resource: the server responded with a status of 4\d\d/.test(message.text())
    && url.includes('/api/v1/');
}

// A fresh browser context and page with problem collectors: console errors
// and warnings, uncaught exceptions, CSP violations (reported from the page
// through a CDP binding, which the page's CSP does not govern).
// Resolves with { context, page, problems }.
export async function openPage(browser, { colorScheme = 'light', viewport = DESKTOP, ignoreHTTPSErrors = false } = {}) {
  const context = await browser.newContext({ colorScheme, viewport, bypassCSP: false, ignoreHTTPSErrors });
  const page = await context.newPage();
  openPages.add(page);
  page.on('close', () => openPages.delete(page));
  const problems = [];
  page.problems = problems;
  page.allowNetworkErrors = false; // set by tests that stop the server on purpose
  page.on('console', (message) => {
    if (message.type() !== 'error' && message.type() !== 'warning') return;
    if (expectedNetworkLog(message)) return;
    if (page.allowNetworkErrors && /net::ERR_|Failed to fetch|network/i.test(message.text())) return;
    problems.push(`console ${message.type()}: ${message.text()} (${message.location()?.url || '?'})`);
  });
  page.on('pageerror', (error) => problems.push(`uncaught exception: ${error.stack || error.message}`));
  await page.exposeBinding('__e2eCspViolation', (_source, report) => {
    problems.push(`CSP violation: ${report}`);
  });
  await page.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (event) => {
      window.__e2eCspViolation(`${event.violatedDirective} blocked ${event.blockedURI || 'inline'} `
        + `at ${event.sourceFile || '?'}:${event.lineNumber} sample=${JSON.stringify(event.sample)}`);
    });
  });
  return { context, page, problems };
}

// The hooks every browser test file needs: one browser for the file; the
// pages a test opened through suite.page(options) (see openPage) closed after
// it, and its processes checked for sanitizer reports; the browser and every
// process stopped after the file.
export function browserSuite(procs) {
  const contexts = [];
  const suite = {
    browser: null,
    async page(options) {
      const opened = await openPage(suite.browser, options);
      contexts.push(opened.context);
      return opened.page;
    },
  };
  before(async () => {
    suite.browser = await launchBrowser();
  });
  afterEach(async () => {
    while (contexts.length) await contexts.pop().close();
    procs.checkClean();
  });
  after(async () => {
    await suite.browser?.close();
    await procs.stopAll();
  });
  return suite;
}

// browserSuite for a file whose tests share one standalone instance and one
// receiver: after the file's first before hook, suite.cf is the instance
// (named "cf") and suite.receiver the receiver; suite.procs holds both.
export function standaloneSuite(prefix) {
  const procs = new Processes(prefix);
  const suite = browserSuite(procs);
  suite.procs = procs;
  before(async () => {
    suite.receiver = await procs.receiver();
    suite.cf = await procs.instance({ name: 'cf' });
  });
  return suite;
}

const openPages = new Set();
let failed = false; // a test of this file failed: keep the temp dirs for a post-mortem

// Wraps a test body: when it fails, every open page is screenshotted as
// FAILED-<test name>-<n>.png into E2E_ARTIFACTS before the error propagates.
export function withFailureShots(body) {
  return async (t) => {
    try {
      await body(t);
    } catch (error) {
      failed = true;
      let n = 0;
      for (const page of openPages) {
        try {
          const file = await screenshot(page, `FAILED-${t.name}-${n++}`);
          console.log(`# failure screenshot ${file}`);
        } catch {
          // the page may be gone
        }
      }
      throw error;
    }
  };
}

// Throws when the page collected any problem.
export function assertNoProblems(page, where = '') {
  if (page.problems.length) {
    throw new Error(`browser problems${where ? ` on ${where}` : ''}:\n  ${page.problems.join('\n  ')}`);
  }
}

// Opens the dashboard of instance signed in with token (through the URL
// fragment), then goes to route (a hash route such as '#/cluster').
export async function signIn(page, instance, token, route = null) {
  await page.goto(`${instance.url}/#token=${token}`);
  await page.getByRole('heading', { level: 1, name: 'Jobs', exact: true }).waitFor({ timeout: UI_MS });
  if (route) await go(page, instance, route);
}

export async function go(page, instance, route) {
  await page.goto(`${instance.url}/${route}`);
}

// The main heading (h1) of the page once it reads name.
export async function heading(page, name) {
  const locator = page.getByRole('heading', { level: 1, name, exact: true });
  await locator.waitFor({ timeout: UI_MS });
  return locator;
}

// Resolves when the main element no longer shows the "Loading…" status.
export async function loaded(page) {
  await eventually(async () => {
    const count = await page.locator('main').getByRole('status').filter({ hasText: 'Loading…' }).count();
    if (count) throw new Error('still loading');
  }, { what: 'loading to finish' });
}

// The <dd> that follows the <dt> whose text is term, in main.
export function definition(page, term) {
  return page.locator('main').locator(`xpath=.//dt[normalize-space(.)="${term}"]/following-sibling::dd[1]`);
}

// The live-connection indicator: the role=status in the header.
export function liveIndicator(page) {
  return page.locator('header').getByRole('status');
}

// ------------------------------------------------------------- axe and shots

const require = createRequire(import.meta.url);
const axeSource = fs.readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');

// Runs axe-core on the page; resolves with readable lines for every
// violation whose impact is serious or critical (empty when none).
export async function axeViolations(page) {
  // Evaluated through CDP: the page's CSP (script-src 'self') does not apply.
  await page.evaluate(axeSource);
  const violations = await page.evaluate(async () => {
    const result = await window.axe.run(document, { resultTypes: ['violations'] });
    return result.violations.map((v) => ({
      id: v.id, impact: v.impact, help: v.help,
      nodes: v.nodes.map((n) => ({
        target: n.target.join(' '), summary: n.failureSummary, html: n.html.slice(0, 200),
      })),
    }));
  });
  const where = (n) => `      at ${n.target}: ${n.html}\n        ${String(n.summary).replace(/\n/g, '\n        ')}`;
  return violations.filter((v) => v.impact === 'serious' || v.impact === 'critical')
    .map((v) => `[${v.impact}] ${v.id}: ${v.help}\n${v.nodes.map(where).join('\n')}`);
}

export function artifactPath(name) {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  return path.join(ARTIFACTS, `${name.replace(/[^a-zA-Z0-9._-]+/g, '-')}.png`);
}

export async function screenshot(page, name) {
  const file = artifactPath(name);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}

// Throws when the document is wider than the viewport (horizontal overflow).
export async function assertNoHorizontalOverflow(page, where) {
  const { scrollWidth, innerWidth } = await page.evaluate(() => ({
    scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth,
  }));
  if (scrollWidth > innerWidth) {
    throw new Error(`${where}: the document is ${scrollWidth} px wide in a ${innerWidth} px viewport`);
  }
}

// Screenshots the page at 1280 px and 375 px in light and dark, runs axe-core
// on each, and checks the 375 px layout for sideways overflow. Resolves with
// readable failures (empty when all is well). Leaves the page at 1280 px, light.
export async function auditPage(page, label) {
  const failures = [];
  for (const [sizeName, viewport] of [['desktop', DESKTOP], ['mobile', MOBILE]]) {
    await page.setViewportSize(viewport);
    for (const scheme of ['light', 'dark']) {
      await page.emulateMedia({ colorScheme: scheme });
      const where = `${label} (${scheme}, ${viewport.width} px)`;
      const file = await screenshot(page, `${label}-${scheme}-${sizeName}`);
      console.log(`# screenshot ${file}`);
      const violations = await axeViolations(page);
      if (violations.length) failures.push(`${where}: axe found\n  ${violations.join('\n  ')}`);
      if (sizeName === 'mobile') {
        try {
          await assertNoHorizontalOverflow(page, where);
        } catch (error) {
          failures.push(error.message);
        }
      }
    }
  }
  await page.setViewportSize(DESKTOP);
  await page.emulateMedia({ colorScheme: 'light' });
  return failures;
}
