// scripts/conformance client: node-postgres (`pg`) with pg-cursor, pg-query-stream and
// pg-copy-streams. One JSON line per case (common.cjs).
'use strict';
const {FULL, conn, errorObs, sha, runCase, TYPES_SQL} = require('./common.cjs');
const fs = require('fs');
const pg = require('pg');
const Cursor = require('pg-cursor');
const QueryStream = require('pg-query-stream');
const {from: copyFrom, to: copyTo} = require('pg-copy-streams');
const {pipeline} = require('stream/promises');
const {Readable, Writable} = require('stream');

// Every result type as text: no client-side parsing (what the server sent is compared).
const rawTypes = {
  getTypeParser: () => (v) => v
};

function config(extra = {}) {
  return {
    host: conn.host,
    port: conn.port,
    user: conn.user,
    password: conn.password,
    database: conn.database,
    ssl: {ca: fs.readFileSync(conn.ca), rejectUnauthorized: true},
    ...extra,
  };
}

async function withClient(fn, extra = {}) {
  const c = new pg.Client(config(extra));
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end().catch(() => {});
  }
}

// A case on a connection of its own that is destroyed afterwards, so a hang (no answer) in one
// case cannot stall the cases after it.
async function isolated(fn, extra = {}) {
  const v = new pg.Client(config(extra));
  v.on('error', () => {});  // the destroy below ends it: not an error of the case
  await v.connect();
  try {
    return await fn(v);
  } finally {
    v.connection.stream.destroy();
  }
}

async function expectError(c, q) {
  try {
    await c.query(q);
    return {ok: false, obs: 'no error'};
  } catch (e) {
    return {ok: true, obs: errorObs(e)};
  }
}

function fields(r) {
  return r.fields.map((f) => [f.name, f.dataTypeID, f.format]);
}

async function main() {
  const c = new pg.Client(config());
  const params = {};
  c.connection.on('parameterStatus', (m) => {
    params[m.parameterName] = m.parameterValue;
  });
  await c.connect();

  await runCase('connect.parameters', async () => {
    // ParameterStatus messages of the login, in arrival order is not compared (a map).
    const keys = Object.keys(params).sort();
    const obs = {};
    for (const k of keys) obs[k] = params[k];
    return {ok: keys.length > 5, obs};
  });

  await runCase('simple.select', async () => {
    const r = await c.query('select 1 as a, \'x\'::text as b');
    return {
      ok: r.rows[0].a === 1 && r.rows[0].b === 'x',
      obs: {rows: r.rows, fields: fields(r), command: r.command, rowCount: r.rowCount}
    };
  });

  await runCase('simple.multi_statement', async () => {
    const r = await c.query('select 1 as a; select 2 as b, 3 as c; ');
    return {
      ok: Array.isArray(r) && r.length === 2,
      obs: r.map((x) => ({rows: x.rows, command: x.command}))
    };
  });

  await runCase('types.text', async () => {
    const r = await c.query({text: TYPES_SQL, types: rawTypes});
    return {ok: r.rows.length === 1, obs: {row: r.rows[0], fields: fields(r)}};
  });

  await runCase('types.text_extended', async () => {
    const r = await c.query({text: TYPES_SQL + ' where $1::int = 1', values: [1], types: rawTypes});
    return {ok: r.rows.length === 1, obs: {row: r.rows[0], fields: fields(r)}};
  });

  await runCase('types.binary', async () => {
    const r = await c.query({
      text: TYPES_SQL + ' where $1::int = 1',
      values: [1],
      binary: true,
      types: {getTypeParser: () => (v) => v}
    });
    const row = {};
    for (const [k, v] of Object.entries(r.rows[0])) {
      row[k] = v === null ? null : Buffer.from(v).toString('hex');
    }
    return {ok: r.rows.length === 1, obs: {row, fields: fields(r)}};
  });

  await runCase('extended.params', async () => {
    const r = await c.query(
        'select $1::int + 1 as n, $2::text as t, $3::bytea as b, $4::int as z',
        [41, 'ünï', Buffer.from([0, 1, 2, 255]), null]);
    return {
      ok: r.rows[0].n === 42 && r.rows[0].t === 'ünï',
      obs: {n: r.rows[0].n, t: r.rows[0].t, b: r.rows[0].b.toString('hex'), z: r.rows[0].z}
    };
  });

  await runCase('extended.row_mode_array', async () => {
    const r = await c.query({text: 'select 1 as a, 2 as a', rowMode: 'array'});
    return {ok: r.rows[0][1] === 2, obs: {rows: r.rows, fields: fields(r)}};
  });

  await runCase('prepared.named_reused', async () => {
    const out = [];
    for (const v of [1, 2, 3]) {
      const r = await c.query({name: 'conf_s1', text: 'select $1::int * 10 as v', values: [v]});
      out.push(r.rows[0].v);
    }
    return {ok: out.join() === '10,20,30', obs: out};
  });

  await runCase('prepared.parse_error_then_reuse', async () => {
    const e = await expectError(c, {name: 'conf_bad', text: 'select nope_col', values: []});
    const r = await c.query('select 5 as v');
    return {ok: e.ok && r.rows[0].v === 5, obs: {error: e.obs, after: r.rows}};
  });

  await runCase('empty.simple', async () => {
    const r = await c.query('');
    return {ok: true, obs: {command: r.command, rows: r.rows, rowCount: r.rowCount}};
  });

  await runCase('empty.extended', async () => {
    const r = await c.query({text: '', values: []});
    return {ok: true, obs: {command: r.command, rows: r.rows, rowCount: r.rowCount}};
  });

  await runCase('empty.semicolon', async () => {
    const r = await c.query(';');
    return {ok: true, obs: {command: r.command, rows: r.rows}};
  });

  await runCase('error.syntax', () => expectError(c, 'selec 1'));
  await runCase('error.syntax_position', () => expectError(c, 'select 1 from from t'));
  await runCase(
      'error.syntax_extended', () => expectError(c, {text: 'select $1 frm x', values: [1]}));
  await runCase('error.undefined_column', () => expectError(c, 'select nope from pg_class'));
  await runCase('error.undefined_table', () => expectError(c, 'select * from no_such_table'));
  await runCase('error.division_by_zero', () => expectError(c, 'select 1/0'));
  await runCase(
      'error.raise_with_detail_hint',
      () => expectError(
          c,
          `do $$ begin raise exception 'custom %', 42 using detail = 'the detail', hint = 'the hint',
       errcode = 'P0042'; end $$`));
  await runCase('error.unique_violation_detail', async () => {
    await c.query('create temp table conf_u (id int primary key)');
    await c.query('insert into conf_u values (1)');
    const e = await expectError(c, 'insert into conf_u values (1)');
    await c.query('drop table conf_u');
    return e;
  });
  await runCase(
      'error.invalid_text_representation',
      () => expectError(c, {text: 'select $1::int', values: ['abc']}));

  await runCase('transaction.failed_then_rollback', async () => {
    await c.query('begin');
    const e1 = await expectError(c, 'select 1/0');
    const e2 = await expectError(c, 'select 1');
    await c.query('rollback');
    const r = await c.query('select 7 as v');
    return {ok: e2.obs.code === '25P02' && r.rows[0].v === 7, obs: [e1.obs, e2.obs, r.rows]};
  });

  await runCase('transaction.commit_visible', async () => {
    await c.query('create temp table conf_tx (v int)');
    await c.query('begin');
    await c.query('insert into conf_tx values (1), (2)');
    await c.query('commit');
    const r = await c.query('select sum(v)::int as s from conf_tx');
    await c.query('drop table conf_tx');
    return {ok: r.rows[0].s === 3, obs: r.rows};
  });

  await runCase('session.temp_table_select', async () => {
    await c.query('create temp table conf_tt (id int, name text)');
    await c.query('insert into conf_tt values (1, \'a\'), (2, \'b\')');
    const r = await c.query('select * from conf_tt order by id');
    await c.query('drop table conf_tt');
    return {ok: r.rows.length === 2, obs: r.rows};
  });

  await runCase('session.set_show', async () => {
    await c.query('set datestyle = \'German\'');
    const r = await c.query({text: 'select \'2024-01-02\'::date::text as d', types: rawTypes});
    await c.query('reset datestyle');
    return {ok: r.rows[0].d === '02.01.2024', obs: r.rows};
  });

  await runCase('notify.pid_matches_backend', async () => {
    await c.query('listen conf_pg_chan');
    const got = new Promise((resolve) => c.once('notification', resolve));
    await c.query('notify conf_pg_chan, \'hello\'');
    const n = await got;
    const pid = (await c.query('select pg_backend_pid() as p')).rows[0].p;
    await c.query('unlisten conf_pg_chan');
    const same = n.processId === c.processID && pid === c.processID;
    return {
      ok: same,
      obs: {
        channel: n.channel,
        payload: n.payload,
        pid_is_backend_key_pid: n.processId === c.processID,
        backend_pid_is_key_pid: pid === c.processID
      }
    };
  });

  await runCase('notify.from_other_session', async () => {
    await c.query('listen conf_pg_chan2');
    const got = new Promise((resolve) => c.once('notification', resolve));
    await withClient((o) => o.query('select pg_notify(\'conf_pg_chan2\', \'from other\')'));
    const n = await got;
    await c.query('unlisten conf_pg_chan2');
    return {
      ok: n.payload === 'from other' && n.processId !== c.processID,
      obs: {channel: n.channel, payload: n.payload}
    };
  });

  await runCase(
      'cancel.running_query',
      async () => withClient(async (v) => {
        const q = v.query('select pg_sleep(30)');
        // The statement is running once pg_stat_activity shows it (an event, not a clock).
        for (;;) {
          const r = await c.query(
              `select count(*)::int as n from pg_stat_activity
                               where pid = $1 and state = 'active'`,
              [v.processID]);
          if (r.rows[0].n === 1) break;
        }
        const canceller = new pg.Client(config());
        canceller.cancel(v, v.activeQuery);  // pg's API for a cancel request (key of `v`)
        try {
          await q;
          return {ok: false, obs: 'not cancelled'};
        } catch (e) {
          const r = await v.query('select 1 as after');
          return {ok: e.code === '57014', obs: {error: errorObs(e), after: r.rows}};
        }
      }));

  await runCase('cursor.pg_cursor', async () => {
    const cur = c.query(new Cursor('select g, md5(g::text) from generate_series(1, 100) g'));
    const chunks = [];
    for (;;) {
      const rows = await new Promise((res, rej) => cur.read(30, (e, r) => e ? rej(e) : res(r)));
      chunks.push(rows.length);
      if (rows.length === 0) break;
    }
    await new Promise((res) => cur.close(res));
    const r = await c.query('select 1 as after');
    return {ok: chunks.join() === '30,30,30,10,0', obs: {chunks, after: r.rows}};
  });

  await runCase('cursor.sql_declare_fetch', async () => {
    await c.query('begin');
    await c.query('declare conf_cur cursor for select g from generate_series(1, 10) g');
    const a = await c.query('fetch 4 from conf_cur');
    const b = await c.query('fetch all from conf_cur');
    await c.query('close conf_cur');
    await c.query('commit');
    return {
      ok: a.rows.length === 4 && b.rows.length === 6,
      obs: [a.rows, b.rows, a.command, b.command]
    };
  });

  const streamRows = FULL ? 1000000 : 20000;
  await runCase('stream.pg_query_stream', async () => {
    const s = c.query(new QueryStream(
        'select g, repeat(\'x\', 20) as p from generate_series(1, $1) g', [streamRows],
        {batchSize: 500}));
    let n = 0;
    let sum = 0;
    for await (const row of s) {
      n++;
      sum += row.g;
    }
    return {ok: n === streamRows, obs: {n, sum}};
  });

  const copyRows = FULL ? 1000000 : 10000;
  for (const [fmt, opt] of [
           ['text', ''], ['csv', 'with (format csv)'], ['binary', 'with (format binary)']]) {
    await runCase(`copy.out_${fmt}`, async () => {
      const chunks = [];
      await pipeline(
          c.query(copyTo(`copy (select g, 'v' || g, g * 1.5 from
          generate_series(1, ${copyRows}) g) to stdout ${opt}`)),
          new Writable({
            write(ch, _, cb) {
              chunks.push(ch);
              cb();
            }
          }));
      const all = Buffer.concat(chunks);
      return {ok: all.length > copyRows, obs: {bytes: all.length, sha256: sha(all)}};
    });
    await runCase(`copy.in_${fmt}`, async () => {
      const chunks = [];
      await pipeline(
          c.query(copyTo(`copy (select g, 'v' || g from generate_series(1, ${copyRows})
          g) to stdout ${opt}`)),
          new Writable({
            write(ch, _, cb) {
              chunks.push(ch);
              cb();
            }
          }));
      await c.query('create temp table conf_copy (a int, b text)');
      const w = c.query(copyFrom(`copy conf_copy from stdin ${opt}`));
      await pipeline(Readable.from(chunks), w);
      const r = await c.query(
          'select count(*)::int as n, sum(a)::text as s, md5(string_agg(b, \',\' order by a)) as h from conf_copy');
      await c.query('drop table conf_copy');
      return {ok: r.rows[0].n === copyRows, obs: {rows: r.rows, command_rows: w.rowCount}};
    });
  }

  await runCase('copy.in_error', async () => {
    await c.query('create temp table conf_copy_e (a int)');
    const w = c.query(copyFrom('copy conf_copy_e from stdin'));
    let err = null;
    try {
      await pipeline(Readable.from([Buffer.from('1\nnot_a_number\n')]), w);
    } catch (e) {
      err = errorObs(e);
    }
    const r = await c.query('select count(*)::int as n from conf_copy_e');
    await c.query('drop table conf_copy_e');
    return {ok: err !== null && err.code === '22P02', obs: {err, after: r.rows}};
  });

  await runCase('params.65535', async () => {
    const n = 65535;
    const values = Array.from({length: n}, (_, i) => i);
    const text = 'select ' + values.map((_, i) => `$${i + 1}::int`).join(' + ') + ' as s';
    const r = await c.query({
      text: 'select array_length(array[' + values.map((_, i) => `$${i + 1}::int`).join(',') +
          '], 1) as n',
      values
    });
    void text;
    return {ok: r.rows[0].n === n, obs: r.rows};
  });

  await runCase('params.65536_refused_by_client', async () => {
    const values = Array.from({length: 65536}, (_, i) => i);
    try {
      await c.query({text: 'select ' + values.map((_, i) => `$${i + 1}::int`).join(','), values});
      return {ok: false, obs: 'accepted'};
    } catch (e) {
      const r = await c.query('select 1 as after');
      return {ok: true, obs: {error: errorObs(e), after: r.rows}};
    }
  });

  const twoMiB = 2 * 1024 * 1024;
  // Direct, a 2 MiB value takes milliseconds: a short timeout keeps a hang cheap in CI.
  const LARGE = FULL ? {timeoutMs: 120000} : {timeoutMs: 3000};
  await runCase(
      'large.result_2mib',
      () => isolated(async (c) => {
        const r = await c.query(`select repeat('x', ${twoMiB}) as v`);
        return {ok: r.rows[0].v.length === twoMiB, obs: {length: r.rows[0].v.length}};
      }),
      LARGE);
  await runCase(
      'large.param_2mib',
      () => isolated(async (c) => {
        const v = 'y'.repeat(twoMiB);
        const r = await c.query('select length($1::text) as n, md5($1::text) as h', [v]);
        return {ok: r.rows[0].n === twoMiB, obs: r.rows};
      }),
      LARGE);
  await runCase(
      'large.query_text_2mib', () => isolated(async (c) => {
                                 const r =
                                     await c.query(`select length('${'z'.repeat(twoMiB)}') as n`);
                                 return {ok: r.rows[0].n === twoMiB, obs: r.rows};
                               }),
      LARGE);
  await runCase(
      'large.bytea_100mb',
      () => isolated(async (c) => {
        const n = 100 * 1024 * 1024;
        const r = await c.query({
          text: 'select length(b) as n, md5(b) as h from (select $1::bytea as b) s',
          values: [Buffer.alloc(n, 7)]
        });
        return {ok: r.rows[0].n === n, obs: r.rows};
      }),
      {fullOnly: true, timeoutMs: 120000});
  await c.end();

  await runCase(
      'startup.application_name_and_options',
      async () => withClient(async (v) => {
        const r = await v.query(`select current_setting('application_name') as app,
        current_setting('search_path') as sp, current_setting('conf.var', true) as cv,
        current_setting('statement_timeout') as st`);
        return {ok: r.rows[0].cv === 'abc', obs: r.rows};
      }, {
        application_name: 'conf-app',
        options: '-c search_path=pg_catalog,public -c conf.var=abc ' +
            '-c statement_timeout=12345'
      }));

  await runCase(
      'tls.disable',
      () => withClient(async (v) => {
        const r = await v.query('select 1 as v');
        return {ok: true, obs: {rows: r.rows, encrypted: !!v.connection.stream.encrypted}};
      }, {ssl: false}));
  await runCase(
      'tls.require_no_verify',
      () => withClient(async (v) => {
        const r = await v.query('select 1 as v');
        return {ok: true, obs: {rows: r.rows, encrypted: !!v.connection.stream.encrypted}};
      }, {ssl: {rejectUnauthorized: false}}));

  await runCase('auth.wrong_password', async () => {
    const v = new pg.Client(config({password: 'wrong-password-for-conformance'}));
    try {
      await v.connect();
      await v.end();
      return {ok: false, obs: 'connected'};
    } catch (e) {
      return {ok: e.code === '28P01', obs: {code: e.code, severity: e.severity}};
    }
  });
}

main().then(() => process.exit(0), (e) => {
  process.stderr.write(`pg_client: ${e.stack || e}\n`);
  process.exit(1);
});
