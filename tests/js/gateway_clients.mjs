// Drives pgwarden-dp with the npm clients `pg` (node-postgres) and `postgres` (postgres.js):
// login, SELECT, INSERT in a transaction, a denied statement, a reused prepared statement,
// COPY in/out, cancel of pg_sleep. Prints one "ok <client> <step>" line per step; exits 1 on
// the first failure. Env: PGW_GW_PORT, PGW_TOKEN.
import pg from 'pg';
import copyStreams from 'pg-copy-streams';
import postgres from 'postgres';
import { pipeline } from 'node:stream/promises';
import { Readable, Writable } from 'node:stream';

const port = Number(process.env.PGW_GW_PORT);
const token = process.env.PGW_TOKEN;
const base = { host: '127.0.0.1', port, user: 'agent', database: 'demo', password: token };

function ok(client, step) { console.log(`ok ${client} ${step}`); }
function expect(cond, what) { if (!cond) throw new Error(`expectation failed: ${what}`); }

async function withPg() {
  const cfg = { ...base, ssl: { rejectUnauthorized: false } };
  const c = new pg.Client(cfg);
  await c.connect();
  ok('pg', 'login');
  const r = await c.query('select count(*)::int as n from crm.customers');
  expect(r.rows[0].n > 0, 'customers rows');
  ok('pg', 'select');
  await c.query('begin');
  await c.query("insert into public.kv(k, v) values ('js-pg', '1')");
  await c.query('commit');
  const chk = await c.query("select count(*)::int as n from public.kv where k = 'js-pg'");
  expect(chk.rows[0].n === 1, 'insert committed');
  ok('pg', 'transaction');
  try {
    await c.query("select pg_read_file('/etc/passwd')");
    throw new Error('denied statement succeeded');
  } catch (e) {
    expect(e.code === '42501', `deny code ${e.code}`);
    expect(/deny\.server_file_read/.test(e.message), `deny message ${e.message}`);
  }
  ok('pg', 'deny');
  for (const id of [1, 2, 1]) {
    const p = await c.query({ name: 'by_id', text: 'select full_name from crm.customers where id = $1', values: [id] });
    expect(p.rows.length === 1, 'prepared row');
  }
  ok('pg', 'prepared');
  const out = [];
  await pipeline(c.query(copyStreams.to('copy (select id from crm.customers order by id) to stdout')),
    new Writable({ write(chunk, _e, cb) { out.push(chunk.toString()); cb(); } }));
  expect(out.join('').split('\n').filter(Boolean).length > 0, 'copy out rows');
  await pipeline(Readable.from(['js-copy-1\ta\n', 'js-copy-2\tb\n']),
    c.query(copyStreams.from('copy public.kv(k, v) from stdin')));
  const cc = await c.query("select count(*)::int as n from public.kv where k like 'js-copy-%'");
  expect(cc.rows[0].n === 2, 'copy in rows');
  ok('pg', 'copy');
  const t0 = Date.now();
  const sleepQuery = new pg.Query('select pg_sleep(30)');
  const sleeping = new Promise((resolve, reject) => {
    sleepQuery.on('error', reject);
    sleepQuery.on('end', resolve);
  });
  c.query(sleepQuery);
  await new Promise((res) => setTimeout(res, 500));
  new pg.Client(cfg).cancel(c, sleepQuery);
  try {
    await sleeping;
    throw new Error('pg_sleep was not cancelled');
  } catch (e) {
    expect(e.code === '57014', `cancel code ${e.code}`);
  }
  expect(Date.now() - t0 < 10000, 'cancel was quick');
  ok('pg', 'cancel');
  await c.end();
}

async function withPostgresJs() {
  const sql = postgres({ ...base, username: 'agent', ssl: { rejectUnauthorized: false }, max: 1,
                         onnotice: () => {} });
  const r = await sql`select count(*)::int as n from crm.customers`;
  expect(r[0].n > 0, 'customers rows');
  ok('postgres', 'login');
  ok('postgres', 'select');
  await sql.begin(async (tx) => {
    await tx`insert into public.kv(k, v) values ('js-postgres', '1')`;
  });
  const chk = await sql`select count(*)::int as n from public.kv where k = 'js-postgres'`;
  expect(chk[0].n === 1, 'insert committed');
  ok('postgres', 'transaction');
  try {
    await sql`select pg_read_file('/etc/passwd')`;
    throw new Error('denied statement succeeded');
  } catch (e) {
    expect(e.code === '42501', `deny code ${e.code}`);
  }
  ok('postgres', 'deny');
  for (const id of [1, 2, 1]) {
    const p = await sql`select full_name from crm.customers where id = ${id}`;  // prepared
    expect(p.length === 1, 'prepared row');
  }
  ok('postgres', 'prepared');
  const readable = await sql`copy (select id from crm.customers order by id) to stdout`.readable();
  let text = '';
  for await (const chunk of readable) text += chunk.toString();
  expect(text.split('\n').filter(Boolean).length > 0, 'copy out rows');
  const writable = await sql`copy public.kv(k, v) from stdin`.writable();
  await pipeline(Readable.from(['js-pcopy-1\ta\n', 'js-pcopy-2\tb\n']), writable);
  const cc = await sql`select count(*)::int as n from public.kv where k like 'js-pcopy-%'`;
  expect(cc[0].n === 2, 'copy in rows');
  ok('postgres', 'copy');
  const q = sql`select pg_sleep(30)`;
  const t0 = Date.now();
  const run = q.execute();
  await new Promise((res) => setTimeout(res, 500));
  q.cancel();
  try {
    await run;
    throw new Error('pg_sleep was not cancelled');
  } catch (e) {
    expect(e.code === '57014', `cancel code ${e.code}`);
  }
  expect(Date.now() - t0 < 10000, 'cancel was quick');
  ok('postgres', 'cancel');
  await sql.end();
}

try {
  await withPg();
  await withPostgresJs();
  console.log('all ok');
} catch (e) {
  console.log(`FAIL ${e.stack || e}`);
  process.exit(1);
}
