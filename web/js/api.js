// Fetch wrapper for /api/v1: adds the bearer token, records the role from
// `Cronfence-Access`, and turns every failure into an ApiError carrying the
// problem document's `detail` and `errors`.

import { getToken, setRole } from './session.js';

const BASE = '/api/v1';

// An HTTP or network failure. `status` is 0 when the server was not
// reached; `errors` is the problem's [{field, message}] list.
export class ApiError extends Error {
  constructor(status, detail, errors = []) {
    super(detail);
    this.status = status;
    this.detail = detail;
    this.errors = errors;
  }
}

let unauthorizedHandler = () => {};

// `handler(error)` runs on every 401, before the call rejects.
export function onUnauthorized(handler) {
  unauthorizedHandler = handler;
}

// Builds "/api/v1/path?k=v" leaving out empty parameters.
export function apiUrl(path, query = {}) {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value !== null && value !== undefined && value !== '') params.set(key, String(value));
  }
  const search = params.toString();
  return `${BASE}${path}${search ? `?${search}` : ''}`;
}

export function authHeaders() {
  const token = getToken();
  return token ? { Authorization: `Bearer ${token}` } : {};
}

async function problemFrom(response) {
  let problem = null;
  try {
    problem = await response.json();
  } catch {
    // Not JSON (a proxy's error page): fall back to the status text.
  }
  const detail = problem?.detail || problem?.title ||
    `The server answered ${response.status} ${response.statusText}`.trim();
  return new ApiError(response.status, detail, Array.isArray(problem?.errors) ? problem.errors : []);
}

// Sends one request; resolves with the parsed JSON body (null for 204).
// Options: query, body (sent as JSON), headers, signal.
export async function request(method, path, { query, body, headers = {}, signal } = {}) {
  const init = { method, headers: { Accept: 'application/json', ...authHeaders(), ...headers }, signal };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(apiUrl(path, query), init);
  } catch (error) {
    if (error.name === 'AbortError') throw error;
    throw new ApiError(0, 'Cannot reach the cronfence server. Check the connection and try again.');
  }
  setRole(response.headers.get('Cronfence-Access'));
  if (!response.ok) {
    const error = await problemFrom(response);
    if (response.status === 401) unauthorizedHandler(error);
    throw error;
  }
  if (response.status === 204) return null;
  return response.json();
}

export const get = (path, query, signal) => request('GET', path, { query, signal });

// The path segment for a job name or run id.
export const segment = encodeURIComponent;
