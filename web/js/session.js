// The signed-in session: the bearer token (kept in sessionStorage, so it
// dies with the tab) and the role the API reports for it.

const TOKEN_KEY = 'cronfence.token';

let role = null;

export function getToken() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(token) {
  sessionStorage.setItem(TOKEN_KEY, token);
}

// Forgets the token and the role.
export function clearSession() {
  sessionStorage.removeItem(TOKEN_KEY);
  role = null;
}

// Called with the `Cronfence-Access` header of every authorised response.
export function setRole(value) {
  if (value === 'admin' || value === 'viewer') role = value;
}

// Write controls are built only when this is true; unknown counts as no.
export function isAdmin() {
  return role === 'admin';
}

// Takes a token from a `#token=...` fragment, stores it and rewrites the
// address to `/#/jobs` so the token does not stay in the address bar or
// the history. Returns whether a token was found.
export function captureFragmentToken() {
  const hash = window.location.hash;
  if (!hash.startsWith('#token=')) return false;
  const raw = hash.slice('#token='.length).split('&')[0];
  let token = raw;
  try {
    token = decodeURIComponent(raw);
  } catch {
    // A malformed escape: use the text as given.
  }
  if (token) setToken(token);
  window.history.replaceState(null, '', '/#/jobs');
  return Boolean(token);
}
