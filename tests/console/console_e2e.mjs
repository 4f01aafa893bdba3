// The web console end to end in a real headless browser: Debian's chromium driven by
// puppeteer-core, against the real pgwarden-cp (HTTPS, console files, OIDC + SAML logins) and
// pgwarden-dp in front of a real PostgreSQL, with real psql clients. Started by
// console_e2e_test (tests/console), which sets up the servers and passes them in:
//   PGW_CONSOLE_URL   https://127.0.0.1:PORT (cp's HTTPS listener; a throwaway certificate)
//   PGW_CONNINFO      libpq conninfo through the gateway (the agent's token)
//   PGW_TABLE         a table with 2 rows the agent may update (approval needed without WHERE)
//   PGW_CHROMIUM      the browser binary (default /usr/bin/chromium)
//   PGW_LOGINS        which SSO logins to exercise: "oidc,saml"
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
const WAIT = { timeout: 60000 };
assert.ok(base && conninfo, 'PGW_CONSOLE_URL and PGW_CONNINFO are required');

// A psql through the gateway; resolves with {code, out} when it exits.
function psql(sql) {
  const child = spawn('/usr/bin/psql', ['-X', '-At', '-v', 'ON_ERROR_STOP=1', '-v', 'VERBOSITY=verbose',
    '-d', conninfo, '-c', sql], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d) => { out += d; });
  child.stderr.on('data', (d) => { out += d; });
  const done = once(child, 'exit').then(([code]) => ({ code, out }));
  return { child, done };
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

// Signs in through `method` in a fresh browser context; returns the page on the console.
async function sign_in(method) {
  const context = await browser.createBrowserContext();
  const page = await context.newPage();
  page.on('dialog', async (d) => {  // an alert() means injected script ran
    failures.push(`dialog opened: ${d.message()}`);
    await d.dismiss();
  });
  page.on('pageerror', (e) => console.log(`page error: ${e.message}`));
  await page.goto(base + '/console/', { waitUntil: 'domcontentloaded' });
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

await browser.close();
if (failures.length) {
  console.log(`FAILED: ${failures.join('; ')}`);
  process.exit(1);
}
console.log('PASS');
