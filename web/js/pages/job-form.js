// The job form, for "New job" (POST) and "Edit <name>" (PUT with If-Match).
// While the schedule or time zone is typed it previews the next instants
// from /schedule/preview; API errors ({field, message}) are shown next to
// the fields they name, with aria-invalid and aria-describedby wiring.

import { ApiError, get, request, segment } from '../api.js';
import { h, replace, uniqueId } from '../dom.js';
import { formatTime } from '../format.js';
import { isAdmin } from '../session.js';
import { emptyState, errorAlert, loading, pageHeading, select } from '../ui.js';

const PREVIEW_DELAY_MS = 250;
const STALE_MESSAGE = 'This job was changed elsewhere; reload to see the new version.';

// Every field, keyed by its API path (so API errors find their field).
const FIELDS = [
  { key: 'name', label: 'Name', hint: 'Lowercase letters, digits, ".", "_" and "-"; cannot change later.' },
  { key: 'description', label: 'Description', kind: 'textarea' },
  { key: 'schedule', label: 'Schedule', hint: 'Cron with 5 or 6 fields, a macro such as @daily, or @every 5m.' },
  { key: 'timezone', label: 'Time zone', hint: 'An IANA zone; type to search.' },
  { key: 'webhook.url', label: 'Webhook URL', type: 'url' },
  { key: 'webhook.method', label: 'Method', options: ['POST', 'GET', 'PUT', 'PATCH', 'DELETE'] },
  { key: 'webhook.headers', label: 'Headers', kind: 'textarea', hint: 'One "Name: value" per line.' },
  { key: 'webhook.body', label: 'Body', kind: 'textarea', hint: 'JSON, sent as "payload"; empty for null.' },
  { key: 'webhook.timeout_ms', label: 'Timeout (ms)', type: 'number', initial: 30000 },
  { key: 'retry.attempts', label: 'Retry attempts', type: 'number', initial: 3, hint: 'Total attempts, the first included.' },
  { key: 'retry.backoff_ms', label: 'Backoff (ms)', type: 'number', initial: 1000 },
  { key: 'overlap', label: 'Overlap', options: ['forbid', 'allow', 'queue'], hint: 'While the previous run is in flight: skip, run anyway, or wait.' },
  { key: 'starting_deadline_ms', label: 'Starting deadline (ms)', type: 'number', initial: 60000 },
  { key: 'catchup', label: 'Catch-up', options: ['none', 'latest'], hint: 'After downtime: only record missed slots, or also fire the latest.' },
  { key: 'lease_ms', label: 'Lease (ms)', type: 'number', initial: 30000 },
  { key: 'signing_secret', label: 'Signing secret', type: 'password' },
];

const GROUPS = [
  ['Job', ['name', 'description']],
  ['When', ['schedule', 'timezone']],
  ['Webhook request', ['webhook.url', 'webhook.method', 'webhook.headers', 'webhook.body', 'webhook.timeout_ms']],
  ['Delivery', ['retry.attempts', 'retry.backoff_ms', 'overlap', 'starting_deadline_ms', 'catchup', 'lease_ms', 'signing_secret']],
];

// API fields without a control of their own, shown at the nearest one.
const ERROR_ALIASES = {
  'retry.max_backoff_ms': 'retry.backoff_ms',
  'webhook.raw_body': 'webhook.body',
  'webhook.content_type': 'webhook.body',
};

let timeZones = null;

// IANA zones for the datalist (computed once), with UTC included.
function timeZoneList() {
  if (!timeZones) {
    const zones = typeof Intl.supportedValuesOf === 'function' ? Intl.supportedValuesOf('timeZone') : [];
    timeZones = zones.includes('UTC') ? zones : ['UTC', ...zones];
  }
  return timeZones;
}

function browserTimeZone() {
  return Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';
}

function buildControl(field) {
  const props = { id: `job-${field.key}`, name: field.key };
  if (field.options) return select(field.options, props);
  if (field.kind === 'textarea') return h('textarea', { ...props, rows: field.key === 'description' ? 2 : 4, spellcheck: 'false' });
  return h('input', {
    ...props,
    type: field.type || 'text',
    autocomplete: field.type === 'password' ? 'new-password' : 'off',
    spellcheck: 'false',
    inputmode: field.type === 'number' ? 'numeric' : null,
  });
}

// The signing secret's hint depends on whether the job has its own.
function hintFor(field, job) {
  if (field.key !== 'signing_secret') return field.hint;
  if (!job) return 'At least 16 characters; leave empty to sign with the instance default.';
  return job.signing_secret_set
    ? 'This job has its own secret; leave empty to keep it.'
    : 'Leave empty to sign with the instance default.';
}

// The field's wrapper: label, control, hint and (empty) error element.
function buildField(field, control, hintText) {
  const hint = hintText ? h('p', { class: 'hint', id: uniqueId('hint') }, hintText) : null;
  const error = h('p', { class: 'field-error', id: `field-${field.key}-error`, hidden: true });
  if (hint) control.setAttribute('aria-describedby', hint.id);
  return h('div', { class: `field field-${field.key.replace('.', '-')}` },
    h('label', { for: control.id }, field.label), control, hint, error);
}

function headersToText(headers) {
  return Object.entries(headers || {}).map(([name, value]) => `${name}: ${value}`).join('\n');
}

// Parses "Name: value" lines; returns {headers} or {error}.
function parseHeaders(text) {
  const headers = {};
  const lines = text.split('\n').map((line) => line.trim()).filter(Boolean);
  for (const [index, line] of lines.entries()) {
    const colon = line.indexOf(':');
    if (colon <= 0) return { error: `Line ${index + 1} is not "Name: value".` };
    headers[line.slice(0, colon).trim()] = line.slice(colon + 1).trim();
  }
  return { headers };
}

export async function render(ctx) {
  const editing = ctx.params.mode === 'edit';
  const title = editing ? `Edit ${ctx.params.name}` : 'New job';
  if (!isAdmin()) {
    replace(ctx.main, pageHeading('Read only'),
      emptyState('Your token can only read. ', h('a', { href: '#/jobs' }, 'Back to jobs')));
    return;
  }
  replace(ctx.main, pageHeading(title), loading());
  let job = null;
  if (editing) {
    try {
      job = await get(`/jobs/${segment(ctx.params.name)}`, {}, ctx.signal);
    } catch (error) {
      if (error instanceof ApiError) replace(ctx.main, pageHeading(title), errorAlert(error));
      else throw error;
      return;
    }
  }
  drawForm(ctx, title, job);
}

function drawForm(ctx, title, job) {
  const controls = new Map(FIELDS.map((field) => [field.key, buildControl(field)]));
  const wrappers = new Map(FIELDS.map((field) => [field.key, buildField(field, controls.get(field.key), hintFor(field, job))]));
  const control = (key) => controls.get(key);
  const summary = h('div', { class: 'form-summary' });
  const submit = h('button', { type: 'submit', class: 'primary' }, job ? 'Save' : 'Create job');
  const zoneListId = uniqueId('zones');
  control('timezone').setAttribute('list', zoneListId);
  const zoneList = h('datalist', { id: zoneListId }, timeZoneList().map((zone) => h('option', { value: zone })));
  const preview = h('section', { class: 'preview', 'aria-label': 'Schedule preview', 'aria-live': 'polite' });

  fillControls(controls, job);

  function setFieldError(key, message) {
    const input = control(key);
    const error = document.getElementById(`field-${key}-error`);
    const hintId = input.getAttribute('aria-describedby')?.split(' ').find((id) => id.startsWith('hint-'));
    if (message) {
      error.textContent = message;
      error.hidden = false;
      input.setAttribute('aria-invalid', 'true');
      input.setAttribute('aria-describedby', [hintId, error.id].filter(Boolean).join(' '));
    } else {
      error.textContent = '';
      error.hidden = true;
      input.removeAttribute('aria-invalid');
      if (hintId) input.setAttribute('aria-describedby', hintId);
      else input.removeAttribute('aria-describedby');
    }
  }

  function clearErrors() {
    for (const key of controls.keys()) setFieldError(key, null);
    replace(summary);
  }

  // Shows each {field, message} at its control; returns the ones without one.
  function showFieldErrors(errors) {
    const unplaced = [];
    const messages = new Map();
    for (const { field, message } of errors) {
      const direct = ERROR_ALIASES[field] || field;
      const key = [...controls.keys()].filter((k) => direct === k || direct.startsWith(`${k}.`))
        .sort((a, b) => b.length - a.length)[0];
      if (!key) {
        unplaced.push(`${field}: ${message}`);
        continue;
      }
      const text = direct === key ? message : `${field}: ${message}`;
      messages.set(key, messages.has(key) ? `${messages.get(key)} ${text}` : text);
    }
    for (const [key, text] of messages) setFieldError(key, text);
    return { unplaced, firstKey: [...controls.keys()].find((k) => messages.has(k)) };
  }

  function showSummary(detail, unplaced = []) {
    replace(summary, h('div', { role: 'alert', class: 'alert' },
      h('p', {}, detail),
      unplaced.length ? h('ul', {}, unplaced.map((text) => h('li', {}, text))) : null));
  }

  // ---- schedule preview ----
  let previewTimer = null;
  let previewController = null;

  async function runPreview() {
    const schedule = control('schedule').value.trim();
    const timezone = control('timezone').value.trim();
    previewController?.abort();
    if (!schedule) {
      setFieldError('schedule', null);
      replace(preview, h('p', { class: 'muted' }, 'Type a schedule to see when it fires.'));
      return;
    }
    previewController = new AbortController();
    const { signal } = previewController;
    try {
      const result = await get('/schedule/preview', { schedule, timezone, count: 5 }, signal);
      setFieldError('schedule', null);
      setFieldError('timezone', null);
      replace(preview,
        h('p', { class: 'preview-description' }, result.description),
        result.next.length
          ? h('ol', { class: 'instants' }, result.next.map((iso) => h('li', {},
            h('time', { datetime: iso }, formatTime(iso, result.timezone)), ` (${result.timezone})`)))
          : h('p', { class: 'muted' }, 'It does not fire in the next 8 years.'));
    } catch (error) {
      if (signal.aborted || !(error instanceof ApiError)) return;
      if (error.status === 422) {
        const errors = error.errors.length ? error.errors : [{ field: 'schedule', message: error.detail }];
        setFieldError('schedule', null);
        setFieldError('timezone', null);
        showFieldErrors(errors.filter((e) => e.field === 'schedule' || e.field === 'timezone'));
        replace(preview, h('p', { class: 'muted' }, 'No preview until the schedule is valid.'));
      } else {
        replace(preview, h('p', { class: 'muted' }, `No preview: ${error.detail}`));
      }
    }
  }

  function schedulePreview() {
    clearTimeout(previewTimer);
    previewTimer = setTimeout(runPreview, PREVIEW_DELAY_MS);
  }
  control('schedule').addEventListener('input', schedulePreview);
  control('timezone').addEventListener('input', schedulePreview);
  ctx.signal.addEventListener('abort', () => {
    clearTimeout(previewTimer);
    previewController?.abort();
  });

  // ---- submit ----
  async function onSubmit(event) {
    event.preventDefault();
    clearErrors();
    const { body, errors } = readForm(controls, job);
    if (errors.length) {
      const { firstKey } = showFieldErrors(errors);
      showSummary('Some fields need attention.');
      control(firstKey)?.focus();
      return;
    }
    submit.disabled = true;
    try {
      const saved = job
        ? await request('PUT', `/jobs/${segment(job.name)}`, { body, headers: { 'If-Match': `"${job.version}"` }, signal: ctx.signal })
        : await request('POST', '/jobs', { body, signal: ctx.signal });
      ctx.navigate(`#/jobs/${segment(saved.name)}`);
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      if (error.status === 412) {
        showSummary(STALE_MESSAGE);
      } else {
        const { unplaced, firstKey } = showFieldErrors(error.errors);
        showSummary(error.detail, unplaced);
        if (firstKey) control(firstKey).focus();
      }
    } finally {
      submit.disabled = false;
    }
  }

  const groups = GROUPS.map(([legend, keys]) => h('fieldset', {},
    h('legend', {}, legend),
    keys.map((key) => wrappers.get(key)),
    legend === 'When' ? preview : null));
  const form = h('form', { class: 'job-form', novalidate: true, onsubmit: onSubmit },
    summary, groups, zoneList,
    h('div', { class: 'actions' }, submit,
      h('a', { href: job ? `#/jobs/${segment(job.name)}` : '#/jobs', class: 'button secondary' }, 'Cancel')));
  replace(ctx.main, pageHeading(title), form);
  if (job) control('name').readOnly = true;
  runPreview();
}

// The value at a dotted API path ("webhook.url") of a job.
function valueAt(job, path) {
  return path.split('.').reduce((object, key) => object?.[key], job);
}

// Puts the job's values (or the defaults for a new job) into the controls.
// Field keys are API paths; headers and body need turning into text.
function fillControls(controls, job) {
  const set = (key, value) => { controls.get(key).value = value ?? ''; };
  for (const field of FIELDS) if (field.initial !== undefined) set(field.key, field.initial);
  set('timezone', browserTimeZone());
  if (!job) return;
  for (const field of FIELDS) set(field.key, valueAt(job, field.key));
  const { webhook } = job;
  set('webhook.headers', headersToText(webhook.headers));
  set('webhook.body', webhook.raw_body ? webhook.body : (webhook.body === null ? '' : JSON.stringify(webhook.body, null, 2)));
}

// Reads the controls into a JobWrite body. On edit, the fields the form does
// not show (paused, max backoff, raw body settings) keep the job's values.
// Returns {body, errors} where errors are client-side {field, message}.
function readForm(controls, job) {
  const value = (key) => controls.get(key).value.trim();
  const number = (key) => (value(key) === '' ? undefined : Number(value(key)));
  const errors = [];
  const rawBody = Boolean(job?.webhook.raw_body);

  const { headers, error: headersError } = parseHeaders(controls.get('webhook.headers').value);
  if (headersError) errors.push({ field: 'webhook.headers', message: headersError });

  let payload = null;
  const bodyText = controls.get('webhook.body').value;
  if (rawBody) {
    payload = bodyText;
  } else if (bodyText.trim() !== '') {
    try {
      payload = JSON.parse(bodyText);
    } catch (error) {
      errors.push({ field: 'webhook.body', message: `Not valid JSON: ${error.message}` });
    }
  }

  const body = {
    description: controls.get('description').value,
    schedule: value('schedule'),
    timezone: value('timezone') || 'UTC',
    webhook: {
      url: value('webhook.url'),
      method: value('webhook.method'),
      headers: headers || {},
      body: payload,
      timeout_ms: number('webhook.timeout_ms'),
    },
    retry: { attempts: number('retry.attempts'), backoff_ms: number('retry.backoff_ms') },
    overlap: value('overlap'),
    starting_deadline_ms: number('starting_deadline_ms'),
    catchup: value('catchup'),
    lease_ms: number('lease_ms'),
  };
  if (job) {
    body.paused = job.paused;
    body.retry.max_backoff_ms = job.retry.max_backoff_ms;
    if (rawBody) {
      body.webhook.raw_body = true;
      body.webhook.content_type = job.webhook.content_type;
    }
  } else {
    body.name = value('name');
  }
  const secret = controls.get('signing_secret').value;
  if (secret !== '') body.signing_secret = secret;
  return { body, errors };
}
