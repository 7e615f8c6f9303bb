// The job form, for "New job" (POST), "New job" cloned from another
// (#/jobs/new?from=<name>) and "Edit <name>" (PUT with If-Match). While the
// schedule or time zone is typed it previews the next instants from
// /schedule/preview; errors ({field, message}, the API's or the form's own)
// are shown next to the fields they name in plain language, with
// aria-invalid and aria-describedby wiring. Durations are typed as "30 s",
// "5 min" or "1500 ms" (a bare number is seconds).

import { ApiError, get, request, segment } from '../api.js';
import { h, replace, uniqueId } from '../dom.js';
import { formatTime } from '../format.js';
import { isAdmin } from '../session.js';
import { emptyState, errorAlert, loading, pageHeading, select } from '../ui.js';

const PREVIEW_DELAY_MS = 250;
const STALE_MESSAGE = 'This job was changed elsewhere; reload to see the new version.';

// Every field, keyed by its API path (so API errors find their field).
const DURATION_HINT = 'A duration such as 30 s, 5 min or 1500 ms; a bare number is seconds.';
const NAME_PATTERN = /^[a-z0-9][a-z0-9._-]{0,62}$/;
const NAME_RULE = 'Use 1 to 63 lowercase letters, digits, dots, dashes or underscores, starting with a letter or a digit (for example nightly-report).';
const NOTIFY_STATUSES = ['failed', 'fenced', 'missed', 'lost', 'recovered', 'succeeded'];

const FIELDS = [
  { key: 'name', label: 'Name', hint: 'Lowercase letters, digits, ".", "_" and "-"; cannot change later.' },
  { key: 'description', label: 'Description', kind: 'textarea' },
  { key: 'schedule', label: 'Schedule', hint: 'Cron with 5 or 6 fields, a macro such as @daily, or @every 5m.' },
  { key: 'timezone', label: 'Time zone', hint: 'An IANA zone; type to search.' },
  { key: 'webhook.url', label: 'Webhook URL', type: 'url' },
  { key: 'webhook.method', label: 'Method', options: ['POST', 'GET', 'PUT', 'PATCH', 'DELETE'] },
  { key: 'webhook.headers', label: 'Headers', kind: 'textarea', hint: 'One "Name: value" per line.' },
  { key: 'webhook.body', label: 'Body', kind: 'textarea', hint: 'JSON, sent as "payload"; empty for null. Sent as it is when "Raw body" is checked.' },
  { key: 'webhook.raw_body', label: 'Raw body', type: 'checkbox', hint: 'Send the body verbatim instead of the JSON envelope.' },
  { key: 'webhook.content_type', label: 'Content type', hint: 'Of a raw body, e.g. text/plain or application/xml.' },
  { key: 'webhook.timeout_ms', label: 'Timeout', kind: 'duration', initial: 30000, hint: `Per attempt. ${DURATION_HINT}` },
  { key: 'retry.attempts', label: 'Retry attempts', type: 'number', initial: 3, hint: 'Total attempts, the first included.' },
  { key: 'retry.backoff_ms', label: 'Backoff', kind: 'duration', initial: 1000, hint: `Before the second attempt, doubling after. ${DURATION_HINT}` },
  { key: 'retry.max_backoff_ms', label: 'Max backoff', kind: 'duration', initial: 60000, hint: `The longest wait between attempts. ${DURATION_HINT}` },
  { key: 'overlap', label: 'Overlap', options: ['forbid', 'allow', 'queue'], hint: 'While the previous run is in flight: skip, run anyway, or wait.' },
  { key: 'starting_deadline_ms', label: 'Starting deadline', kind: 'duration', initial: 60000, hint: `How late a run may still start. ${DURATION_HINT}` },
  { key: 'catchup', label: 'Catch-up', options: ['none', 'latest'], hint: 'After downtime: only record missed slots, or also fire the latest.' },
  { key: 'lease_ms', label: 'Lease', kind: 'duration', initial: 30000, hint: DURATION_HINT },
  { key: 'signing_secret', label: 'Signing secret', type: 'password' },
  { key: 'notify.url', label: 'Notify URL', type: 'url', hint: 'Where to post a notice when a run ends as chosen below; empty for none.' },
  { key: 'notify.on', label: 'Notify on', kind: 'checkboxes', options: NOTIFY_STATUSES },
  { key: 'notify.format', label: 'Notify format', options: [['json', 'JSON'], ['slack', 'Slack']] },
];

const GROUPS = [
  ['Job', ['name', 'description']],
  ['When', ['schedule', 'timezone']],
  ['Webhook request', ['webhook.url', 'webhook.method', 'webhook.headers', 'webhook.body', 'webhook.raw_body',
    'webhook.content_type', 'webhook.timeout_ms']],
  ['Delivery', ['retry.attempts', 'retry.backoff_ms', 'retry.max_backoff_ms', 'overlap', 'starting_deadline_ms', 'catchup',
    'lease_ms', 'signing_secret']],
  ['Notifications', ['notify.url', 'notify.on', 'notify.format']],
];

// API fields without a control of their own, shown at the nearest one.
const ERROR_ALIASES = {};

// The API's messages that read as rules for programs, in plain language.
function plainMessage(field, message) {
  if (field === 'name' && /\^|\[a-z0-9/.test(message)) return NAME_RULE;
  return message;
}

// "30 s", "5 min", "1.5 h", "1500 ms" or a bare number of seconds, as
// milliseconds; undefined when empty, NaN when it is not a duration.
export function parseDuration(text) {
  const trimmed = text.trim().toLowerCase();
  if (trimmed === '') return undefined;
  const match = /^(\d+(?:\.\d+)?)\s*(ms|millis(?:econds?)?|s|secs?|seconds?|m|mins?|minutes?|h|hours?)?$/.exec(trimmed);
  if (!match) return NaN;
  const amount = Number(match[1]);
  const unit = match[2] || 's';
  let factor = 1000;
  if (unit === 'ms' || unit.startsWith('milli')) factor = 1;
  else if (unit === 'm' || unit.startsWith('min')) factor = 60000;
  else if (unit.startsWith('h')) factor = 3600000;
  return Math.round(amount * factor);
}

// Milliseconds as the form shows them: whole minutes, whole seconds, else ms.
export function durationText(ms) {
  if (ms === null || ms === undefined) return '';
  if (ms >= 60000 && ms % 60000 === 0) return `${ms / 60000} min`;
  if (ms % 1000 === 0) return `${ms / 1000} s`;
  return `${ms} ms`;
}

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
  if (field.kind === 'checkboxes') {
    // A group named by its label; each status a checkbox named by the status.
    return h('div', { id: props.id, role: 'group', class: 'checkboxes', 'aria-labelledby': `${props.id}-label` },
      field.options.map((option) => h('label', { class: 'inline' },
        h('input', { type: 'checkbox', value: option, name: field.key }), ` ${option}`)));
  }
  if (field.options) return select(field.options, props);
  if (field.type === 'checkbox') return h('input', { ...props, type: 'checkbox' });
  if (field.kind === 'textarea') return h('textarea', { ...props, rows: field.key === 'description' ? 2 : 4, spellcheck: 'false' });
  return h('input', {
    ...props,
    type: field.type || 'text',
    autocomplete: field.type === 'password' ? 'new-password' : 'off',
    spellcheck: 'false',
    inputmode: field.type === 'number' ? 'numeric' : null,
    class: field.kind === 'duration' ? 'duration' : null,
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
  const label = field.kind === 'checkboxes'
    ? h('p', { class: 'label', id: `${control.id}-label` }, field.label)
    : h('label', { for: control.id }, field.label);
  if (field.type === 'checkbox') {
    return h('div', { class: `field field-check field-${field.key.replace('.', '-')}` },
      h('div', { class: 'check' }, control, label), hint, error);
  }
  return h('div', { class: `field field-${field.key.replace('.', '-')}` }, label, control, hint, error);
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
  const from = editing ? null : ctx.query.get('from');
  if (editing || from) {
    try {
      job = await get(`/jobs/${segment(editing ? ctx.params.name : from)}`, {}, ctx.signal);
    } catch (error) {
      if (error instanceof ApiError) replace(ctx.main, pageHeading(title), errorAlert(error));
      else throw error;
      return;
    }
  }
  drawForm(ctx, title, editing ? job : null, editing ? null : job);
}

// The form; `job` is the job edited (null for a new one), `source` the job a
// new one is cloned from (its values, without its name or secret).
function drawForm(ctx, title, job, source = null) {
  const controls = new Map(FIELDS.map((field) => [field.key, buildControl(field)]));
  const wrappers = new Map(FIELDS.map((field) => [field.key, buildField(field, controls.get(field.key), hintFor(field, job))]));
  const control = (key) => controls.get(key);
  const summary = h('div', { class: 'form-summary' });
  const cloneNote = h('div', {}, source ? cloneNotice(source) : null);
  const submit = h('button', { type: 'submit', class: 'primary' }, job ? 'Save' : 'Create job');
  const zoneListId = uniqueId('zones');
  control('timezone').setAttribute('list', zoneListId);
  const zoneList = h('datalist', { id: zoneListId }, timeZoneList().map((zone) => h('option', { value: zone })));
  const preview = h('section', { class: 'preview', 'aria-label': 'Schedule preview', 'aria-live': 'polite' });

  fillControls(controls, job || source);
  if (source) control('name').value = cloneName(source.name);

  function setFieldError(key, rawMessage) {
    const message = rawMessage ? plainMessage(key, rawMessage) : rawMessage;
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
    replace(cloneNote, source ? cloneNotice(source) : null);
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
    cloneNote, summary, groups, zoneList,
    h('div', { class: 'actions' }, submit,
      h('a', { href: job ? `#/jobs/${segment(job.name)}` : '#/jobs', class: 'button secondary' }, 'Cancel')));
  replace(ctx.main, pageHeading(title), form);
  if (job) control('name').readOnly = true;
  // The name's rule is checked as it is typed, in words.
  control('name').addEventListener('change', () => {
    const name = control('name').value.trim();
    setFieldError('name', name && !NAME_PATTERN.test(name) ? NAME_RULE : null);
  });
  runPreview();
}

// "<name>-copy", kept within the 63 characters a name may have.
function cloneName(name) {
  return `${name.slice(0, 63 - 5)}-copy`;
}

function cloneNotice(source) {
  return h('p', { class: 'notice' }, `A copy of ${source.name}. `,
    source.signing_secret_set ? 'Its signing secret is not copied: type one or leave empty for the default.' : '');
}

// The value at a dotted API path ("webhook.url") of a job.
function valueAt(job, path) {
  return path.split('.').reduce((object, key) => object?.[key], job);
}

// Puts the job's values (or the defaults for a new job) into the controls.
// Field keys are API paths; headers and body need turning into text.
function fillControls(controls, job) {
  const fieldOf = new Map(FIELDS.map((field) => [field.key, field]));
  const set = (key, value) => {
    const field = fieldOf.get(key);
    const control = controls.get(key);
    if (field.kind === 'checkboxes') {
      for (const box of control.querySelectorAll('input')) box.checked = (value || []).includes(box.value);
    } else if (field.type === 'checkbox') {
      control.checked = Boolean(value);
    } else if (field.kind === 'duration') {
      control.value = durationText(value);
    } else if (!field.options || (value !== undefined && value !== null)) {
      control.value = value ?? '';
    }
  };
  for (const field of FIELDS) if (field.initial !== undefined) set(field.key, field.initial);
  set('timezone', browserTimeZone());
  set('notify.on', ['failed', 'fenced', 'missed', 'lost']);
  if (!job) return;
  for (const field of FIELDS) {
    if (field.key === 'signing_secret' || (field.key.startsWith('notify.') && !job.notify)) continue;
    set(field.key, valueAt(job, field.key));
  }
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
  const duration = (key) => {
    const ms = parseDuration(controls.get(key).value);
    if (Number.isNaN(ms)) errors.push({ field: key, message: `"${value(key)}" is not a duration. ${DURATION_HINT}` });
    return Number.isNaN(ms) ? undefined : ms;
  };
  const rawBody = controls.get('webhook.raw_body').checked;
  if (!job) {
    const name = value('name');
    if (name === '') errors.push({ field: 'name', message: 'Give the job a name.' });
    else if (!NAME_PATTERN.test(name)) errors.push({ field: 'name', message: NAME_RULE });
  }

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
      timeout_ms: duration('webhook.timeout_ms'),
    },
    retry: {
      attempts: number('retry.attempts'),
      backoff_ms: duration('retry.backoff_ms'),
      max_backoff_ms: duration('retry.max_backoff_ms'),
    },
    overlap: value('overlap'),
    starting_deadline_ms: duration('starting_deadline_ms'),
    catchup: value('catchup'),
    lease_ms: duration('lease_ms'),
  };
  if (rawBody) {
    body.webhook.raw_body = true;
    if (value('webhook.content_type') !== '') body.webhook.content_type = value('webhook.content_type');
  }
  // Notifications go with the job only when a URL is given.
  if (value('notify.url') !== '') {
    body.notify = {
      url: value('notify.url'),
      on: [...controls.get('notify.on').querySelectorAll('input:checked')].map((box) => box.value),
      format: value('notify.format'),
    };
  }
  if (job) {
    body.paused = job.paused;
  } else {
    body.name = value('name');
  }
  const secret = controls.get('signing_secret').value;
  if (secret !== '') body.signing_secret = secret;
  return { body, errors };
}
