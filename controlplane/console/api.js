// The console's calls to pgwarden-cp's HTTPS API (docs/api.md). Same origin, the session
// cookie goes along; every mutating call carries the CSRF token (X-CSRF-Token, the value of
// the pgw_csrf cookie, or the one /auth/session returned).

let csrf = '';

function csrf_cookie() {
  const m = /(?:^|;\s*)pgw_csrf=([^;]+)/.exec(document.cookie);
  return m ? decodeURIComponent(m[1]) : '';
}

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function call(method, path, body) {
  const headers = { Accept: 'application/json' };
  if (method !== 'GET' && method !== 'HEAD') {
    headers['X-CSRF-Token'] = csrf_cookie() || csrf;
    headers['Content-Type'] = 'application/json';
  }
  const resp = await fetch(path, {
    method, headers, credentials: 'same-origin',
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  try { data = await resp.json(); } catch { /* not JSON: handled below */ }
  if (!resp.ok || !data || data.ok === false) {
    const err = (data && data.error) || {};
    throw new ApiError(resp.status, err.code || String(resp.status),
                       err.message || `${method} ${path}: HTTP ${resp.status}`);
  }
  return data.result !== undefined ? data.result : data;
}

export const api = {
  get: (path) => call('GET', path),
  post: (path, body = {}) => call('POST', path, body),
  async session() {
    const s = await call('GET', '/auth/session');
    if (s && s.csrf_token) csrf = s.csrf_token;
    return s;
  },
  // Which SSO logins this gateway offers: {oidc: bool, saml: bool}. Public endpoints.
  async logins() {
    const probe = async (path) => {
      try { return (await fetch(path, { credentials: 'same-origin' })).ok; } catch { return false; }
    };
    const [oidc, saml] = await Promise.all([probe('/auth/oidc/config'), probe('/auth/saml/config')]);
    return { oidc, saml };
  },
};

export const enc = encodeURIComponent;
