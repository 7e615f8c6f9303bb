// The sign-in form: asks for an API token and keeps it in sessionStorage.

import { h, replace } from '../dom.js';
import { setToken } from '../session.js';
import { errorAlert, labelled, pageHeading } from '../ui.js';

// Draws the form into `main`; `error` (an ApiError or null) explains why
// the user is here; `onSubmit()` runs once a token is stored.
export function renderSignIn(main, { error, onSubmit }) {
  const input = h('input', {
    type: 'password', name: 'token', autocomplete: 'current-password', required: true, spellcheck: 'false',
    'aria-describedby': 'token-hint',
  });
  const form = h('form', { class: 'signin' },
    labelled('API token', input),
    h('p', { class: 'hint', id: 'token-hint' }, 'An admin or viewer token of this cronfence instance: ',
      'the value of its --admin-token or --viewer-token flag (or CRONFENCE_ADMIN_TOKEN, CRONFENCE_VIEWER_TOKEN). ',
      'An instance started without a token prints a sign-in address carrying one on its first start.'),
    h('button', { type: 'submit', class: 'primary' }, 'Sign in'));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const token = input.value.trim();
    if (!token) {
      input.focus();
      return;
    }
    setToken(token);
    onSubmit();
  });
  replace(main, pageHeading('Sign in'), error ? errorAlert(error) : null, form);
  input.focus();
}
