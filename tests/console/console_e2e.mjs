// The web console end to end in a real headless browser: Debian's chromium driven by
// puppeteer-core, against the real pgwarden-cp (HTTPS, console files, OIDC + SAML logins) and
// pgwarden-dp in front of a real PostgreSQL, with real psql clients. Started by
// console_e2e_test (tests/console), which sets up the servers and passes them in:
//   PGW_CONSOLE_URL   https://127.0.0.1:PORT (cp's HTTPS listener; a throwaway certificate)
//   PGW_CONNINFO      libpq conninfo through the gateway (the agent's token)
//   PGW_TABLE         a table with 2 rows the agent may update (approval needed without WHERE)
//   PGW_CHROMIUM      the browser binary (default /usr/bin/chromium)
//   PGW_LOGINS        which SSO logins to exercise: "oidc,saml"
//   PGW_OIDC_URL      the OIDC test IdP (whom it logs in next: /control/user)
//   PGW_CONNINFO_RUNAWAY  conninfo of another agent (svc:runaway) whose session is killed
// Every wait is on an event (a selector, a psql exit), with a generous timeout as a backstop.
// Exit 0 = passed; 77 = skipped (puppeteer-core not installed), with the reason printed.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import assert from 'node:assert/strict';

let puppeteer;
try {
  puppeteer = (await import('puppeteer-core')).default;
} catch (e) {
  console.log(`SKIP: puppeteer-core is not installed (run npm install in tests/console): ${e.message}`);
  process.exit(77);
}

const base = process.env.PGW_CONSOLE_URL;
const conninfo = process.env.PGW_CONNINFO;
const table = process.env.PGW_TABLE || 'public.t_console';
const logins = (process.env.PGW_LOGINS || 'oidc,saml').split(',').filter(Boolean);
const oidc_url = process.env.PGW_OIDC_URL;  // the OIDC test IdP (node trusts its CA: NODE_EXTRA_CA_CERTS)
const runaway_conninfo = process.env.PGW_CONNINFO_RUNAWAY;  // svc:runaway, killed by an operator
const WAIT = { timeout: 60000 };
assert.ok(base && conninfo, 'PGW_CONSOLE_URL and PGW_CONNINFO are required');

// A psql through the gateway; `done` resolves with {code, out} when it exits; `output(re)`
// resolves with the first match of `re` in what it printed so far or prints later (a NOTICE
// arrives while the statement waits).
function psql(sql, info = conninfo) {
  const child = spawn('/usr/bin/psql', ['-X', '-At', '-v', 'ON_ERROR_STOP=1', '-v', 'VERBOSITY=verbose',
    '-d', info, '-c', sql], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const watchers = [];
  const grow = (d) => {
    out += d;
    for (const w of watchers.splice(0)) {
      const m = w.re.exec(out);
      if (m) w.resolve(m); else watchers.push(w);
    }
  };
  child.stdout.on('data', grow);
  child.stderr.on('data', grow);
  const done = once(child, 'exit').then(([code]) => {
    for (const w of watchers.splice(0)) w.reject(new Error(`psql exited (${code}) before printing ${w.re}: ${out}`));
    return { code, out };
  });
  const output = (re) => new Promise((resolve, reject) => {
    const m = re.exec(out);
    if (m) return resolve(m);
    const w = { re, resolve, reject };
    watchers.push(w);
    setTimeout(() => reject(new Error(`psql did not print ${re} in ${WAIT.timeout} ms: ${out}`)), WAIT.timeout).unref();
  });
  return { child, done, output };
}

const browser = await puppeteer.launch({
  executablePath: process.env.PGW_CHROMIUM || '/usr/bin/chromium',
  headless: true,
  // Real TLS with a throwaway certificate the browser does not know.
  acceptInsecureCerts: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--ignore-certificate-errors'],
});

const failures = [];
async function step(name, fn) {
  const t0 = Date.now();
  try {
    await fn();
    console.log(`ok - ${name} (${Date.now() - t0} ms)`);
  } catch (e) {
    failures.push(name);
    console.log(`not ok - ${name}: ${e.stack || e}`);
  }
}

// Signs in through `method` in a fresh browser context, starting at `url`; returns the page
// back on the console (at `url`'s page of it).
async function sign_in(method, url = base + '/console/') {
  const context = await browser.createBrowserContext();
  const page = await context.newPage();
  page.on('dialog', async (d) => {  // an alert() means injected script ran
    failures.push(`dialog opened: ${d.message()}`);
    await d.dismiss();
  });
  page.on('pageerror', (e) => console.log(`page error: ${e.message}`));
  await page.goto(url, { waitUntil: 'domcontentloaded' });
  await page.waitForSelector(`#login-${method}`, WAIT);
  await Promise.all([page.waitForNavigation({ waitUntil: 'domcontentloaded', ...WAIT }).catch(() => {}),
                     page.click(`#login-${method}`)]);
  // The test IdPs consent on their own; we land back on the console, signed in.
  try {
    await page.waitForSelector('#who-name', WAIT);
  } catch (e) {
    const body = await page.evaluate(() => document.body && document.body.innerText).catch(() => '?');
    throw new Error(`not signed in via ${method}: at ${page.url()}: ${String(body).slice(0, 600)}\n${e.message}`);
  }
  return page;
}

// The approval card whose statement is `sql`, once it is in the queue.
async function card_for(page, sql) {
  await page.waitForFunction((text) => [...document.querySelectorAll('article.approval pre.statement')]
    .some((p) => p.textContent === text), WAIT, sql);
  const id = await page.evaluate((text) => [...document.querySelectorAll('article.approval')]
    .find((a) => a.querySelector('pre.statement').textContent === text).dataset.id, sql);
  return `article.approval[data-id="${id}"]`;
}

const hostile = "'<script>alert(1)</script><img src=x onerror=alert(2)>'";

await step('login via OIDC, approve a held psql UPDATE, psql finishes with UPDATE 2', async () => {
  if (!logins.includes('oidc')) return;
  const page = await sign_in('oidc');
  const who = await page.$eval('#who', (e) => e.textContent);
  assert.match(who, /via oidc/);
  const sql = `update ${table} set v = ${hostile}`;
  const client = psql(sql);
  const card = await card_for(page, sql);
  // The statement is text, highlighted token by token: no element came from the data.
  assert.equal(await page.$$eval(`${card} pre.statement img, ${card} pre.statement script`, (n) => n.length), 0);
  assert.equal(await page.$$eval('#main img, #main script', (n) => n.length), 0);
  assert.ok((await page.$$eval(`${card} .sql-keyword`, (n) => n.map((x) => x.textContent))).includes('update'));
  assert.match(await page.$eval(`${card} .why`, (e) => e.textContent), /WHERE|approval/i);
  await page.click(`${card} button.approve-once`);
  const r = await client.done;
  assert.equal(r.code, 0, r.out);
  assert.match(r.out, /UPDATE 2/);
  // The queue no longer shows it.
  await page.waitForFunction((sel) => !document.querySelector(sel), WAIT, card);
  await page.browserContext().close();
});

await step('login via SAML, deny a held psql UPDATE, psql gets 42501 with the reason', async () => {
  if (!logins.includes('saml')) return;
  const page = await sign_in('saml');
  assert.match(await page.$eval('#who', (e) => e.textContent), /via saml/);
  const sql = `update ${table} set v = 'denied'`;
  const client = psql(sql);
  const card = await card_for(page, sql);
  await page.type(`${card} input.reason`, 'change freeze until Monday');
  await page.click(`${card} button.deny`);
  const r = await client.done;
  assert.notEqual(r.code, 0, r.out);
  assert.match(r.out, /ERROR: {2}42501:/);
  assert.match(r.out, /change freeze until Monday/);
  await page.browserContext().close();
});

// The people the OIDC test IdP logs in next (its /control/user endpoint).
async function oidc_user(sub, groups) {
  const r = await fetch(`${oidc_url}/control/user?sub=${sub}&groups=${groups}`);
  assert.equal(r.status, 200, await r.text());
}

await step('the NOTICE link opens the request; approve its shape for 15 minutes; the same shape runs again at once', async () => {
  if (!logins.includes('oidc')) return;
  const sql = `update ${table} set v = v || '+1'`;
  const first = psql(sql);
  // What the held client is told at once: the request id and its console page.
  const [, id, link] = await first.output(/waiting for approval ([\w-]+): (https:\S+)/);
  assert.equal(link, `${base}/approvals/${id}`);
  const page = await sign_in('oidc', link);
  assert.equal(new URL(page.url()).hash, `#approvals/${id}`);
  const card = `#focused article.approval[data-id="${id}"]`;
  await page.waitForSelector(card, WAIT);
  assert.equal(await page.$eval(`${card} pre.statement`, (e) => e.textContent), sql);
  // The rolled-back dry run's exact count (policy dry_run) next to the planner's estimate.
  assert.match(await page.$eval(`${card} .estimate`, (e) => e.textContent), /dry run 2 rows/);
  await page.select(`${card} select.duration`, '900');
  await page.type(`${card} input.reason`, 'batch fix OPS-7');
  await page.click(`${card} button.approve-shape`);
  const r = await first.done;
  assert.equal(r.code, 0, r.out);
  assert.match(r.out, /UPDATE 2/);
  await page.waitForFunction((sel) => /approved by alice: batch fix OPS-7 · this shape is approved until/
    .test(document.querySelector(sel)?.textContent || ''), WAIT, `${card} .decided`);
  // Another statement of the same shape (other literal) runs without waiting.
  const again = await psql(`update ${table} set v = v || '+2'`).done;
  assert.equal(again.code, 0, again.out);
  assert.match(again.out, /UPDATE 2/);
  assert.doesNotMatch(again.out, /waiting for approval/);
  await page.browserContext().close();
});

await step('a cross-site form POST carrying the reviewer\'s cookie is refused (CSRF); the console still decides', async () => {
  if (!logins.includes('oidc')) return;
  const page = await sign_in('oidc');
  const sql = `update ${table} set k = k`;
  const client = psql(sql);
  const card = await card_for(page, sql);
  const id = await page.$eval(card, (e) => e.dataset.id);
  // Another origin (the IdP's, same site: the SameSite=Lax cookie goes along) posts a form.
  await page.goto(`${oidc_url}/jwks`, { waitUntil: 'domcontentloaded' });
  await Promise.all([
    page.waitForNavigation({ waitUntil: 'domcontentloaded', ...WAIT }),
    page.evaluate((action) => {
      const form = document.createElement('form');
      form.method = 'POST';
      form.action = action;
      form.enctype = 'text/plain';
      const input = document.createElement('input');
      input.name = '{"reason":"forged","x":"';
      input.value = '"}';
      form.appendChild(input);
      document.body.appendChild(form);
      form.submit();
    }, `${base}/api/v1/approvals/${id}/deny`),
  ]);
  const answer = await page.evaluate(() => document.body.innerText);
  assert.match(answer, /permission_denied/);
  assert.match(answer, /cross-origin request|CSRF/);
  // Nothing was decided: the console shows it pending and approves it.
  await page.goto(`${base}/console/#approvals/${id}`, { waitUntil: 'domcontentloaded' });
  const focused = `#focused article.approval[data-id="${id}"]`;
  await page.waitForSelector(`${focused} button.approve-once`, WAIT);
  await page.click(`${focused} button.approve-once`);
  const r = await client.done;
  assert.equal(r.code, 0, r.out);
  assert.match(r.out, /UPDATE 2/);
  await page.browserContext().close();
});

await step('an operator kills a live session with a reason; the client gets 57P01 with it', async () => {
  if (!logins.includes('oidc') || !runaway_conninfo) return;
  await oidc_user('olga', 'operators');
  let page;
  try {
    page = await sign_in('oidc', base + '/console/#sessions');
  } finally {
    await oidc_user('alice', 'reviewers');
  }
  assert.match(await page.$eval('#who', (e) => e.textContent), /olga \(operator, via oidc\)/);
  const client = psql('select pg_sleep(120)', runaway_conninfo);
  await page.waitForFunction(() => [...document.querySelectorAll('#main tbody tr')]
    .some((tr) => tr.children[1]?.textContent === 'svc:runaway'), WAIT);
  const id = await page.evaluate(() => [...document.querySelectorAll('#main tbody tr')]
    .find((tr) => tr.children[1].textContent === 'svc:runaway').dataset.id);
  const row = `#main tbody tr[data-id="${id}"]`;
  await page.type(`${row} input`, 'runaway agent 7');
  await page.click(`${row} button.kill`);
  const r = await client.done;
  assert.notEqual(r.code, 0, r.out);
  assert.match(r.out, /57P01/);
  assert.match(r.out, /runaway agent 7/);
  await page.waitForFunction((sel) => !document.querySelector(sel), WAIT, row);
  await page.browserContext().close();
});

await step('a recording replays as the client saw it (masked values) with its verification', async () => {
  if (!logins.includes('oidc')) return;
  const seen = await psql('select email from crm.customers order by id limit 3').done;
  assert.equal(seen.code, 0, seen.out);
  const emails = seen.out.trim().split('\n');
  assert.equal(emails.length, 3, seen.out);
  assert.doesNotMatch(seen.out, /ada@example\.com/);  // masked on the wire
  const page = await sign_in('oidc', base + '/console/#recordings');
  // The newest recording with that statement (the list is newest first).
  await page.waitForSelector('#main tbody tr button.replay-open', WAIT);
  const ids = await page.$$eval('#main tbody tr', (rows) => rows.map((r) => r.dataset.id));
  let found = false;
  for (const id of ids) {
    await page.click(`#main tbody tr[data-id="${id}"] button.replay-open`);
    await page.waitForSelector('p.verify', WAIT);
    const text = await page.$eval('.replay', (e) => e.textContent);
    if (text.includes('select email from crm.customers')) {
      found = true;
      const cells = await page.$$eval('.replay table.rows tbody td', (n) => n.map((x) => x.textContent));
      assert.deepEqual(cells, emails);
      // As psql showed it: the statement once, its rows, then the count.
      const sqls = await page.$$eval('.replay .rec.statement', (n) => n.map((x) => x.textContent));
      assert.equal(sqls.filter((t) => t.includes('select email from crm.customers')).length, 1, sqls.join('\n'));
      assert.match(await page.$eval('.replay .rec.completion', (e) => e.textContent), /^\(3 rows\) · 3 values masked/);
      // The session is sealed once cp saw its end (psql has exited): open the page again until.
      const deadline = Date.now() + WAIT.timeout;
      while (await page.$eval('p.verify', (e) => e.dataset.state) === 'open' && Date.now() < deadline) {
        await page.click('.toolbar button');
        await page.waitForSelector(`#main tbody tr[data-id="${id}"] button.replay-open`, WAIT);
        await page.click(`#main tbody tr[data-id="${id}"] button.replay-open`);
        await page.waitForSelector('p.verify', WAIT);
      }
      assert.match(await page.$eval('p.verify', (e) => e.textContent), /Hash chain verified: \d+ records, sealed/);
      assert.equal(await page.$eval('p.verify', (e) => e.dataset.state), 'sealed');
      break;
    }
    await page.click('.toolbar button');
    await page.waitForSelector('#main tbody tr button.replay-open', WAIT);
  }
  assert.ok(found, 'no recording shows the select');
  await page.browserContext().close();
});

await step('audit search with filters; a statement tested against the rule sets', async () => {
  if (!logins.includes('oidc')) return;
  const page = await sign_in('oidc', base + '/console/#audit');
  await page.waitForSelector('form.filters', WAIT);
  await page.type('form.filters input[name=event]', 'session_kill');
  await page.click('form.filters button[type=submit]');
  await page.waitForFunction(() => document.querySelectorAll('#audit-results tbody tr').length > 0, WAIT);
  const rows = await page.$$eval('#audit-results tbody tr', (n) => n.map((x) => x.textContent));
  assert.ok(rows.every((t) => t.includes('session_kill')), rows.join('\n'));
  assert.ok(rows.some((t) => t.includes('runaway agent 7') && t.includes('olga')), rows.join('\n'));
  // Two filters at once: what was approved for the agent (the decider is in the details).
  await page.evaluate(() => { document.querySelector('form.filters input[name=event]').value = ''; });
  await page.type('form.filters input[name=identity]', 'svc:agent1');
  await page.type('form.filters input[name=decision]', 'approved');
  await page.click('form.filters button[type=submit]');
  await page.waitForFunction(() => [...document.querySelectorAll('#audit-results tbody tr')]
    .some((x) => x.textContent.includes('approval_approved')), WAIT);
  const decided = await page.$$eval('#audit-results tbody tr', (n) => n.map((x) => x.textContent));
  assert.ok(decided.every((t) => t.includes('svc:agent1') && t.includes('approved')), decided.join('\n'));
  assert.ok(decided.some((t) => t.includes('"decider":"alice"')), decided.join('\n'));

  await page.goto(base + '/console/#rules', { waitUntil: 'domcontentloaded' });
  await page.waitForSelector('#rule-test-sql', WAIT);
  await page.type('#rule-test-sql', `delete from ${table}`);
  await page.click('#rule-test');
  await page.waitForSelector('#rule-test-result p.verdict', WAIT);
  const verdict = await page.$eval('#rule-test-result p.verdict', (e) => e.textContent);
  assert.match(verdict, /verdict: approve/);
  assert.ok((await page.$$eval('#rule-test-result li', (n) => n.length)) > 0);
  await page.evaluate(() => { document.querySelector('#rule-test-sql').value = ''; });
  await page.type('#rule-test-sql', `select 1`);
  await page.click('#rule-test');
  await page.waitForFunction(() => /verdict: allow/.test(document.querySelector('#rule-test-result p.verdict')?.textContent || ''), WAIT);
  await page.browserContext().close();
});

await browser.close();
if (failures.length) {
  console.log(`FAILED: ${failures.join('; ')}`);
  process.exit(1);
}
console.log('PASS');
