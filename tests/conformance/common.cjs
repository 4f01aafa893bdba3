// Shared by the npm client programs of scripts/conformance: connection settings from the
// environment, the case runner (one JSON line per case on stdout) and normalisers.
'use strict';
const crypto = require('crypto');
const fs = require('fs');

const env = process.env;
const MODE = env.CONF_MODE || 'ci';
const FULL = MODE === 'full';
const CASE_TIMEOUT_MS = FULL ? 900000 : 15000;

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
  for (const k of ['severity', 'code', 'message', 'detail', 'hint', 'position',
                   'internalPosition', 'internalQuery', 'where', 'schema', 'table', 'column',
                   'dataType', 'constraint']) {
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
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      t = setTimeout(() => reject(new Error(`timeout: no answer within ${ms / 1000} s (${what})`)),
                     ms);
    }),
  ]).finally(() => clearTimeout(t));
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

// Every SQL type a client reads, as one row (the same literal set in every program).
const TYPES_SQL = `select 1::int2 as i2, 2147483647::int4 as i4, 9007199254740993::int8 as i8,
  1.5::float4 as f4, 3.141592653589793::float8 as f8, 'NaN'::float8 as nan,
  123456789.123456789::numeric as num, true as b, 'héllo'::text as t, 'v'::varchar(3) as vc,
  'c'::char(3) as ch, '\\x00ff10'::bytea as by, '2024-02-29'::date as d,
  '2024-02-29 13:14:15.123456'::timestamp as ts, '2024-02-29 13:14:15.5+02'::timestamptz as tstz,
  '13:14:15'::time as tm, '1 year 2 mons 3 days 04:05:06.7'::interval as iv,
  'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid as u, '{"a": [1, 2]}'::json as j,
  '{"b": {"c": null}}'::jsonb as jb, array[1, null, 3]::int[] as ai,
  array['a', 'b c', null]::text[] as at, '192.168.0.1/24'::inet as ip, '(1,2)'::point as pt,
  12.34::money as mo, 'a & b'::tsquery as tq, B'101'::bit(3) as bits, null::int as nul,
  'infinity'::timestamp as inf, '{1,2}'::int8[] as a8, int4range(1, 5) as r,
  '<a>x</a>'::xml as x, 'ab'::name as nm, 26::oid as o`;

module.exports = {env, MODE, FULL, conn, errorObs, sha, runCase, withTimeout, TYPES_SQL, fs};
