// Shared by the npm client programs of scripts/conformance: connection settings from the
// environment, the case runner (one JSON line per case on stdout) and normalisers.
'use strict';
const crypto = require('crypto');
const fs = require('fs');

const env = process.env;
const MODE = env.CONF_MODE || 'ci';
const FULL = MODE === 'full';
const CASE_TIMEOUT_MS = FULL ? 180000 : 15000;

const conn = {
  host: env.CONF_HOST,
  port: Number(env.CONF_PORT),
  user: env.CONF_USER,
  password: env.CONF_PASSWORD,
  database: env.CONF_DB,
  ca: env.CONF_CA,
};

// The error fields clients act on. file/line/routine name PostgreSQL's source location and are
// not compared.
function errorObs(e) {
  if (!e) return null;
  const o = {error: true};
  for (const k
           of ['severity', 'code', 'message', 'detail', 'hint', 'position', 'internalPosition',
               'internalQuery', 'where', 'schema', 'table', 'column', 'dataType', 'constraint']) {
    if (e[k] !== undefined && e[k] !== null && e[k] !== '') o[k] = String(e[k]);
  }
  if (!o.code) o.message = String(e.message || e);
  return o;
}

function sha(data) {
  return crypto.createHash('sha256').update(data).digest('hex');
}

function withTimeout(promise, ms, what) {
  let t;
  return Promise
      .race([
        promise,
        new Promise((_, reject) => {
          t = setTimeout(
              () => reject(new Error(`timeout: no answer within ${ms / 1000} s (${what})`)), ms);
        }),
      ])
      .finally(() => clearTimeout(t));
}

// Runs fn() -> {ok, obs}; an exception is an observation too (ok=false unless expected).
async function runCase(name, fn, opts = {}) {
  if (opts.fullOnly && !FULL) return;
  let r;
  try {
    r = await withTimeout(Promise.resolve().then(fn), opts.timeoutMs || CASE_TIMEOUT_MS, name);
  } catch (e) {
    r = {ok: false, obs: {thrown: errorObs(e)}};
  }
  process.stdout.write(JSON.stringify({case: name, ok: !!r.ok, obs: r.obs}) + '\n');
}

// Every SQL type a client reads, as one row (types.sql: the same for every program).
const TYPES_SQL = fs.readFileSync(__dirname + '/types.sql', 'utf8').trim();

module.exports = {
  env,
  MODE,
  FULL,
  conn,
  errorObs,
  sha,
  runCase,
  withTimeout,
  TYPES_SQL,
  fs
};
