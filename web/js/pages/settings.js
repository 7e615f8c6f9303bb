// The Settings page (admins): the cluster's default signing secret (DESIGN
// §6 GET /signing-secret), hidden until revealed, with a copy button, and
// its rotation (POST /signing-secret/rotate) behind a confirmation that
// says what it means for webhook targets. A server without these
// endpoints gets a plain sentence instead.

import { ApiError, get, request } from '../api.js';
import { h, replace, uniqueId } from '../dom.js';
import { formatTime } from '../format.js';
import { isAdmin } from '../session.js';
import { definitionList, emptyState, errorAlert, loading, pageHeading } from '../ui.js';

const ROTATION_MEANING = 'Rotating makes a new secret current; the old one stays valid for the overlap ' +
  '(24 hours unless --secret-overlap-hours says otherwise), and deliveries carry a signature by each, ' +
  'so give every target that verifies with the old secret the new one before the overlap ends.';

const SECRET_MASK = '••••••••••••••••';

// A secret shown as dots until "Reveal", with "Copy". While the secret
// shows, the button reads "Hide" (its label carries the state, so it is
// not also a pressed/unpressed toggle).
function secretValue(label, secret) {
  const text = h('span', { class: 'secret-value' }, SECRET_MASK);
  const reveal = h('button', { type: 'button', class: 'secondary' }, `Reveal ${label}`);
  const copy = h('button', { type: 'button', class: 'secondary' }, `Copy ${label}`);
  const status = h('span', { role: 'status', class: 'muted' });
  let shown = false;
  reveal.addEventListener('click', () => {
    shown = !shown;
    text.textContent = shown ? secret : SECRET_MASK;
    reveal.textContent = `${shown ? 'Hide' : 'Reveal'} ${label}`;
  });
  copy.addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText(secret);
      status.textContent = 'Copied.';
    } catch {
      status.textContent = 'The browser did not allow copying; reveal it and copy by hand.';
    }
  });
  return h('span', { class: 'secret' }, text, h('span', { class: 'actions' }, reveal, copy, status));
}

function rotateDialog(onConfirm) {
  const titleId = uniqueId('dialog-title');
  const problem = h('div');
  const confirm = h('button', { type: 'button', class: 'danger' }, 'Rotate');
  const dialog = h('dialog', { 'aria-labelledby': titleId, class: 'confirm' },
    h('h2', { id: titleId }, 'Rotate the signing secret?'),
    h('p', {}, ROTATION_MEANING),
    problem,
    h('div', { class: 'actions' },
      h('button', { type: 'button', class: 'secondary', onclick: () => dialog.close() }, 'Cancel'),
      confirm));
  confirm.addEventListener('click', async () => {
    confirm.disabled = true;
    try {
      await onConfirm();
      dialog.close();
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      replace(problem, errorAlert(error));
    } finally {
      confirm.disabled = false;
    }
  });
  return dialog;
}

export async function render(ctx) {
  if (!isAdmin()) {
    replace(ctx.main, pageHeading('Settings'), emptyState('Your token can only read.'));
    return;
  }
  const body = h('div', {}, loading());
  const message = h('div');
  replace(ctx.main, pageHeading('Settings'), body);

  const dialog = rotateDialog(async () => {
    const fresh = await request('POST', '/signing-secret/rotate', { signal: ctx.signal });
    show(fresh);
    replace(message, h('p', { role: 'status', class: 'notice' }, 'The signing secret was rotated.'));
  });

  function show(secret) {
    replace(body,
      h('section', { 'aria-labelledby': 'secret-heading' },
        h('h2', { id: 'secret-heading' }, 'Signing secret'),
        h('p', {}, 'Jobs without a secret of their own sign their deliveries with this one.'),
        message,
        definitionList([
          ['Current', secretValue('current secret', secret.current)],
          ['Previous', secret.previous ? secretValue('previous secret', secret.previous) : 'none'],
          ['Rotated at', secret.rotated_at ? formatTime(secret.rotated_at) : 'never'],
        ]),
        h('p', { class: 'hint' }, ROTATION_MEANING),
        h('div', { class: 'actions' },
          h('button', { type: 'button', class: 'danger', onclick: () => dialog.showModal() }, 'Rotate secret'))),
      dialog);
  }

  try {
    show(await get('/signing-secret', {}, ctx.signal));
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    if (error.status === 404 || error.status === 405) {
      replace(body, emptyState('This server does not offer the cluster signing secret.'));
    } else {
      replace(body, errorAlert(error));
    }
  }
}
