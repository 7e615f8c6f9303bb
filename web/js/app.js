// Entry point: sign-in, the header (navigation, live indicator, sign-out)
// and the hash router that shows one page at a time in <main>.
//
// A page module exports render(ctx), which draws into ctx.main. ctx:
//   params   route captures (decoded), query  URLSearchParams of the hash,
//   signal   aborted when the page is left,
//   on(type, fn)     subscribes to an SSE event type for the page's life,
//   every(ms, fn)    an interval for the page's life,
//   navigate(hash)   goes to another route.

import { ApiError, get, onUnauthorized } from './api.js';
import { onEvent, onStateChange, startEvents, stopEvents } from './events.js';
import { replace } from './dom.js';
import { captureFragmentToken, clearSession, getToken, isAdmin } from './session.js';
import { errorAlert, loading, pageHeading, startRelativeTicker } from './ui.js';
import * as clusterPage from './pages/cluster.js';
import * as jobFormPage from './pages/job-form.js';
import * as jobPage from './pages/job.js';
import * as jobsPage from './pages/jobs.js';
import * as runPage from './pages/run.js';
import * as runsPage from './pages/runs.js';
import * as settingsPage from './pages/settings.js';
import { renderSignIn } from './pages/signin.js';

const main = document.querySelector('main');
const signedInParts = document.querySelectorAll('[data-signed-in]');
const navLinks = document.querySelectorAll('nav a[data-section]');
const liveIndicator = document.getElementById('live');
const signOutButton = document.getElementById('sign-out');

// [pattern over the path, page module, nav section, extra params]
const ROUTES = [
  [/^\/(?:jobs)?$/, jobsPage, 'jobs'],
  [/^\/jobs\/new$/, jobFormPage, 'jobs', { mode: 'new' }],
  [/^\/jobs\/([^/]+)\/edit$/, jobFormPage, 'jobs', { mode: 'edit' }],
  [/^\/jobs\/([^/]+)$/, jobPage, 'jobs'],
  [/^\/runs$/, runsPage, 'runs'],
  [/^\/runs\/([^/]+)$/, runPage, 'runs'],
  [/^\/cluster$/, clusterPage, 'cluster'],
  [/^\/settings$/, settingsPage, 'settings'],
];

const LIVE_TEXT = { open: 'Live', connecting: 'Connecting…', offline: 'Offline — retrying' };

let signedIn = false;
let current = null;

function showChrome(visible) {
  for (const part of signedInParts) part.hidden = !visible;
  // Settings are for admins only.
  for (const part of document.querySelectorAll('[data-admin]')) part.hidden = !visible || !isAdmin();
}

function markNav(section) {
  for (const link of navLinks) {
    if (link.dataset.section === section) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
}

function leavePage() {
  if (!current) return;
  current.controller.abort();
  for (const dispose of current.disposers) dispose();
  current = null;
}

function parseHash() {
  const raw = window.location.hash.replace(/^#/, '') || '/jobs';
  const [path, search = ''] = raw.split('?');
  return { path, query: new URLSearchParams(search) };
}

function decode(text) {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

function renderNotFound(ctx) {
  replace(ctx.main, pageHeading('Not found'), errorAlert({ detail: 'There is no page at this address.' }));
}

// Shows the page for the current hash; `focusHeading` moves focus to its
// h1 (after in-app navigation, so screen readers announce the new page).
function route(focusHeading) {
  if (!signedIn) return;
  leavePage();
  const { path, query } = parseHash();
  const match = ROUTES.map(([pattern, page, section, extra]) => ({ found: pattern.exec(path), page, section, extra }))
    .find((candidate) => candidate.found);
  const controller = new AbortController();
  const disposers = [];
  current = { controller, disposers };
  const ctx = {
    main,
    query,
    params: match ? { ...match.extra, name: match.found[1] ? decode(match.found[1]) : undefined } : {},
    signal: controller.signal,
    on: (type, listener) => disposers.push(onEvent(type, listener)),
    every: (ms, fn) => {
      const timer = setInterval(fn, ms);
      disposers.push(() => clearInterval(timer));
    },
    navigate: (hash) => { window.location.hash = hash; },
  };
  markNav(match ? match.section : null);
  replace(main);
  const rendering = match ? match.page.render(ctx) : renderNotFound(ctx);
  const heading = main.querySelector('h1');
  if (heading) {
    document.title = `${heading.textContent} · cronfence`;
    if (focusHeading) heading.focus({ preventScroll: false });
  }
  Promise.resolve(rendering).catch((error) => {
    if (error.name === 'AbortError' || controller.signal.aborted) return;
    main.append(errorAlert(error));
  });
}

function showSignIn(error) {
  signedIn = false;
  leavePage();
  stopEvents();
  showChrome(false);
  markNav(null);
  document.title = 'Sign in · cronfence';
  renderSignIn(main, { error, onSubmit: () => enter() });
}

// Checks the stored token with a first API call (which also tells the
// role through Cronfence-Access), then opens the event stream and routes.
async function enter() {
  leavePage();
  replace(main, loading());
  try {
    await get('/cluster');
  } catch (error) {
    if (error.status === 401) return; // onUnauthorized has shown the sign-in form.
    replace(main, pageHeading('cronfence'), errorAlert(error, () => enter()));
    return;
  }
  signedIn = true;
  showChrome(true);
  await startEvents({
    onUnauthorized: () => {
      clearSession();
      showSignIn(new ApiError(401, 'The server no longer accepts this token. Sign in again.'));
    },
  });
  route(false);
}

onUnauthorized((error) => {
  clearSession();
  showSignIn(new ApiError(401, `The API did not accept this token: ${error.detail}`));
});

onStateChange((state) => {
  liveIndicator.textContent = LIVE_TEXT[state];
  liveIndicator.setAttribute('aria-label', LIVE_TEXT[state]);
  liveIndicator.dataset.state = state;
});

signOutButton.addEventListener('click', () => {
  clearSession();
  showSignIn(null);
});

window.addEventListener('hashchange', () => {
  if (captureFragmentToken()) {
    enter();
    return;
  }
  route(true);
});

startRelativeTicker();
captureFragmentToken();
if (getToken()) enter();
else showSignIn(null);
