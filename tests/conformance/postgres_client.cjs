// scripts/conformance client: postgres.js (`postgres`). One JSON line per case (common.cjs).
// postgres.js pipelines by default: queries issued together go out before their answers come.
'use strict';
const {FULL, conn, errorObs, sha, runCase, TYPES_SQL} = require('./common.cjs');
const fs = require('fs');
const postgres = require('postgres');
const {pipeline} = require('stream/promises');
const {Readable, Writable} = require('stream');

const LARGE = FULL ? {timeoutMs: 120000} : {timeoutMs: 3000};

function open(extra = {}) {
  return postgres({
    host: conn.host,
    port: conn.port,
    user: conn.user,
    password: conn.password,
    database: conn.database,
    ssl: {ca: fs.readFileSync(conn.ca), rejectUnauthorized: true},
    max: 1,
    idle_timeout: 0,
    connect_timeout: 10,
    onnotice: () => {},
    ...extra,
  });
}

async function withSql(fn, extra = {}) {
  const sql = open(extra);
  try {
    return await fn(sql);
  } finally {
    await sql.end({timeout: 0}).catch(() => {});
  }
}

async function expectError(p) {
  try {
    await p;
    return {ok: false, obs: 'no error'};
  } catch (e) {
    return {ok: true, obs: errorObs(e)};
  }
}

const plain = (rows) => rows.map((r) => ({...r}));

async function main() {
  const sql = open();

  await runCase('connect.parameters', async () => {
    await sql`select 1`;
    const p = {...sql.parameters};
    return {ok: Object.keys(p).length > 5, obs: p};
  });

  await runCase('simple.tagged', async () => {
    const r = await sql`select 1 as a, ${'x'}::text as b, ${null}::int as c`;
    return {ok: r[0].a === 1, obs: {rows: plain(r), command: r.command, count: r.count}};
  });

  await runCase('simple.unsafe_multi_statement', async () => {
    const r = await sql.unsafe('select 1 as a; select 2 as b');
    return {ok: r.length === 2, obs: r.map(plain)};
  });

  await runCase('simple.simple_protocol', async () => {
    const r = await sql`select 3 as v`.simple();
    return {ok: r[0].v === 3, obs: plain(r)};
  });

  await runCase('types.text_values', async () => {
    const r = await sql.unsafe(TYPES_SQL).values();
    return {
      ok: r.length === 1,
      obs: r[0].map(
          (v) =>
              (Buffer.isBuffer(v)        ? v.toString('hex') :
                   v instanceof Date     ? v.toISOString() :
                   typeof v === 'bigint' ? v.toString() :
                                           v))
    };
  });

  await runCase('types.raw', async () => {
    const r = await sql.unsafe(TYPES_SQL + ' where $1::int = 1', [1]).raw();
    return {ok: r.length === 1, obs: r[0].map((v) => (v === null ? null : v.toString('hex')))};
  });

  await runCase('types.describe', async () => {
    const d = await sql`select ${1}::int as a, ${'t'}::text as b, ${[1, 2]}::int[] as c`.describe();
    return {
      ok: d.types.length === 3,
      obs: {types: d.types, columns: d.columns.map((c) => [c.name, c.type])}
    };
  });

  await runCase('pipeline.concurrent', async () => {
    const qs = Array.from({length: 50}, (_, i) => sql`select ${i}::int * 2 as v`);
    const rs = await Promise.all(qs);
    const vals = rs.map((r) => r[0].v);
    return {ok: vals[49] === 98, obs: vals};
  });

  await runCase('pipeline.error_among_others', async () => {
    const rs = await Promise.allSettled([sql`select 1 as v`, sql`select 1/0`, sql`select 3 as v`]);
    return {
      ok: rs[1].status === 'rejected',
      obs: rs.map((r) => (r.status === 'fulfilled' ? plain(r.value) : errorObs(r.reason)))
    };
  });

  await runCase('prepared.reuse', async () => withSql(async (s) => {
                                    const out = [];
                                    for (let i = 0; i < 5; i++)
                                      out.push((await s`select ${i}::int + 100 as v`)[0].v);
                                    return {ok: out[4] === 104, obs: out};
                                  }));

  await runCase('prepared.off', async () => withSql(async (s) => {
                                  const out = [];
                                  for (let i = 0; i < 3; i++)
                                    out.push((await s`select ${i}::int + 100 as v`)[0].v);
                                  return {ok: out[2] === 102, obs: out};
                                }, {prepare: false}));

  await runCase(
      'transaction.begin_rollback',
      async () => withSql(async (s) => {
        await s`create temp table conf_pj_t (v int)`;
        const e = await expectError(s.begin(async (t) => {
          await t`insert into conf_pj_t values (1)`;
          await t`select 1/0`;
        }));
        await s.begin(async (t) => {
          await t`insert into conf_pj_t values (2)`;
          await t.savepoint(async (sp) => {
            await sp`insert into conf_pj_t values (3)`;
          });
        });
        const r = await s`select coalesce(sum(v), 0)::int as s from conf_pj_t`;
        return {ok: e.ok && r[0].s === 5, obs: {error: e.obs, sum: r[0].s}};
      }));

  for (const [name, q] of [
           ['syntax', 'selec 1'], ['syntax_position', 'select 1 from from t'],
           ['undefined_column', 'select nope from pg_class'], ['division_by_zero', 'select 1/0'], [
             'raise', `do $$ begin raise exception 'custom %', 42 using detail =
                             'the detail', hint = 'the hint', errcode = 'P0042'; end $$`
           ]]) {
    await runCase(`error.${name}`, () => expectError(sql.unsafe(q)));
    await runCase(`error.${name}_simple`, () => expectError(sql.unsafe(q).simple()));
  }
  await runCase(
      'error.unique_violation', async () => withSql(async (s) => {
                                  await s`create temp table conf_pj_u (id int primary key)`;
                                  await s`insert into conf_pj_u values (1)`;
                                  return expectError(s`insert into conf_pj_u values (1)`);
                                }));

  await runCase('empty.unsafe', async () => {
    const r = await sql.unsafe('');
    return {ok: true, obs: {rows: plain(r), command: r.command ?? null, count: r.count ?? null}};
  });
  await runCase('empty.simple', async () => {
    const r = await sql.unsafe(';').simple();
    return {ok: true, obs: {rows: plain(r), command: r.command ?? null}};
  });

  await runCase('notify.listen', async () => withSql(async (s) => {
                                   let resolve;
                                   const got = new Promise((r) => {
                                     resolve = r;
                                   });
                                   await s.listen('conf_pj_chan', (payload) => resolve(payload));
                                   await s.notify('conf_pj_chan', 'pj');
                                   const payload = await got;
                                   return {ok: payload === 'pj', obs: payload};
                                 }));

  await runCase(
      'cancel.query',
      async () => withSql(async (s) => {
        const q = s`select pg_sleep(30), 'conf_pj_cancel' as tag`;
        q.execute();
        for (;;) {
          const r = await sql`select count(*)::int as n from pg_stat_activity
                          where query = 'select pg_sleep(30), ''conf_pj_cancel'' as tag' and state = 'active'`;
          if (r[0].n > 0) break;
        }
        q.cancel();
        const e = await expectError(q);
        const after = await s`select 1 as after`;
        return {ok: e.obs.code === '57014', obs: {error: e.obs, after: plain(after)}};
      }));

  await runCase('cursor.batches', async () => {
    const sizes = [];
    await sql`select g from generate_series(1, 100) g`.cursor(30, (rows) => {
      sizes.push(rows.length);
    });
    return {ok: sizes.join() === '30,30,30,10', obs: sizes};
  });

  await runCase('stream.foreach', async () => {
    const n = FULL ? 1000000 : 20000;
    let count = 0;
    let sum = 0;
    await sql`select g from generate_series(1, ${n}) g`.forEach((row) => {
      count++;
      sum += row.g;
    });
    return {ok: count === n, obs: {count, sum}};
  });

  const rowsN = FULL ? 1000000 : 10000;
  for (const [fmt, opt] of [['text', ''], ['csv', '(format csv)'], ['binary', '(format binary)']]) {
    await runCase(
        `copy.roundtrip_${fmt}`,
        async () => withSql(async (s) => {
          const chunks = [];
          const readable =
              await s
                  .unsafe(`copy (select g, 'v' || g from generate_series(1, ${rowsN}) g)
                                       to stdout ${opt}`)
                  .readable();
          await pipeline(readable, new Writable({
                           write(c, _, cb) {
                             chunks.push(c);
                             cb();
                           }
                         }));
          const all = Buffer.concat(chunks);
          await s`create temp table conf_pj_c (a int, b text)`;
          const writable = await s.unsafe(`copy conf_pj_c from stdin ${opt}`).writable();
          await pipeline(Readable.from([all]), writable);
          const r = await s`select count(*)::int as n, sum(a)::text as s from conf_pj_c`;
          return {ok: r[0].n === rowsN, obs: {bytes: all.length, sha256: sha(all), rows: plain(r)}};
        }));
  }

  await runCase(
      'startup.connection_params', async () => withSql(async (s) => {
                                     const r =
                                         await s`select current_setting('application_name') as app,
      current_setting('search_path') as sp, current_setting('conf.var', true) as cv,
      current_setting('statement_timeout') as st`;
                                     return {ok: r[0].cv === 'pj', obs: plain(r)};
                                   }, {
                                     connection: {
                                       application_name: 'conf-pj',
                                       search_path: 'pg_catalog,public',
                                       'conf.var': 'pj',
                                       statement_timeout: 7777
                                     }
                                   }));

  await runCase(
      'startup.bad_value',
      async () =>
          expectError(withSql((s) => s`select 1`, {connection: {statement_timeout: 'nope'}})));

  await runCase('auth.wrong_password', async () => {
    const e = await expectError(withSql((s) => s`select 1`, {password: 'wrong-password'}));
    return {ok: e.obs.code === '28P01', obs: {code: e.obs.code}};
  });

  await runCase(
      'tls.disable',
      () => withSql(async (s) => ({ok: true, obs: plain(await s`select 1 as v`)}), {ssl: false}));
  await runCase(
      'tls.prefer',
      () =>
          withSql(async (s) => ({ok: true, obs: plain(await s`select 1 as v`)}), {ssl: 'prefer'}));

  await runCase('params.65533', async () => {
    // postgres.js refuses 65,534 and more parameters itself (MAX_PARAMETERS_EXCEEDED)
    const vals = Array.from({length: 65533}, (_, i) => i);
    const r = await sql.unsafe(
        'select array_length(array[' + vals.map((_, i) => `$${i + 1}::int`).join(',') +
            '], 1) as n',
        vals);
    return {ok: r[0].n === 65533, obs: plain(r)};
  });

  const m2 = 2 * 1024 * 1024;
  await runCase(
      'large.result_2mib', () => withSql(async (s) => {
                             const r = await s`select repeat('x', ${m2}) as v`;
                             return {ok: r[0].v.length === m2, obs: {length: r[0].v.length}};
                           }),
      LARGE);
  await runCase(
      'large.param_2mib', () => withSql(async (s) => {
                            const r = await s`select length(${'y'.repeat(m2)}::text) as n`;
                            return {ok: r[0].n === m2, obs: plain(r)};
                          }),
      LARGE);
  await runCase(
      'large.bytea_100mb',
      () => withSql(async (s) => {
        const r = await s`select length(${Buffer.alloc(100 * 1024 * 1024, 7)}::bytea) as n`;
        return {ok: r[0].n === 100 * 1024 * 1024, obs: plain(r)};
      }),
      {fullOnly: true, timeoutMs: 120000});

  await sql.end({timeout: 0});
}

main().then(() => process.exit(0), (e) => {
  process.stderr.write(`postgres_client: ${e.stack || e}\n`);
  process.exit(1);
});
