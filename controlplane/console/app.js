// pgwarden web console: approvals, live sessions, recordings, audit search, rule sets.
// Plain ES modules, no build step, no third-party code. All data is rendered as text (dom.js).
import { api, enc, ApiError } from './api.js';
import { el, fill, fmt_time, fmt_value } from './dom.js';
import { highlight_sql } from './sql_highlight.js';

const main = document.getElementById('main');
const status_line = document.getElementById('status');
let me = null;
let poll = null;

function flash(text, kind = 'info') {
  fill(status_line, el('span', { class: 'flash ' + kind, role: kind === 'error' ? 'alert' : 'status' }, text));
}

function show_error(e) {
  if (e instanceof ApiError && e.status === 401) return login_view();
  flash(e.message || String(e), 'error');
}

async function run(action, done_text) {
  try {
    const r = await action();
    if (done_text) flash(done_text, 'ok');
    return r;
  } catch (e) {
    show_error(e);
    return undefined;
  }
}

// --- login ---------------------------------------------------------------------------------

async function login_view() {
  stop_poll();
  fill(document.getElementById('who'));
  document.getElementById('nav').hidden = true;
  const logins = await api.logins();
  const here = location.pathname + location.hash;
  const links = [];
  if (logins.oidc) links.push(el('a', { class: 'button', id: 'login-oidc', href: '/auth/oidc/login?return_to=' + enc(here) }, 'Sign in with OIDC'));
  if (logins.saml) links.push(el('a', { class: 'button', id: 'login-saml', href: '/auth/saml/login?return_to=' + enc(here) }, 'Sign in with SAML'));
  if (!links.length) links.push(el('p', {}, 'No single sign-on is configured on this gateway (docs/console.md).'));
  fill(main, el('section', { class: 'login' }, el('h2', {}, 'Sign in'), ...links));
}

// --- approvals -----------------------------------------------------------------------------

const DURATIONS = [[900, '15 minutes'], [3600, '1 hour'], [14400, '4 hours'], [86400, '1 day']];

function approval_card(a, focus = '') {
  const reason_input = el('input', { type: 'text', class: 'reason', placeholder: 'reason (required to deny)', 'aria-label': 'reason' });
  const duration = el('select', { class: 'duration', 'aria-label': 'grant duration' },
    DURATIONS.map(([s, label]) => el('option', { value: String(s) }, label)));
  const decide = (verb, body, text) => run(async () => {
    await api.post(`/api/v1/approvals/${enc(a.id)}/${verb}`, body);
    await approvals_view(focus);
  }, text);
  const estimate = [];
  if (a.estimated_rows !== null && a.estimated_rows !== undefined) estimate.push(`planner estimate ${a.estimated_rows} rows`);
  if (a.dry_run_rows !== null && a.dry_run_rows !== undefined) estimate.push(`dry run ${a.dry_run_rows} rows`);
  if (a.estimate_note) estimate.push(a.estimate_note);
  if (a.dry_run_note) estimate.push(a.dry_run_note);
  return el('article', { class: 'card approval', dataset: { id: a.id } },
    el('header', {},
      el('strong', { class: 'identity' }, a.identity),
      ' on ', el('span', { class: 'target' }, a.target),
      el('span', { class: 'muted' }, ` · ${a.id} · requested ${fmt_time(a.created_ms)}`,
        a.deadline_ms ? ` · expires ${fmt_time(a.deadline_ms)}` : '')),
    el('pre', { class: 'statement' }, highlight_sql(a.sql || '')),
    el('dl', {},
      el('dt', {}, 'Why'), el('dd', { class: 'why' }, [a.request_reason, a.rule && `rule ${a.rule}`, ...(a.effect || [])].filter(Boolean).join(' · ') || '—'),
      el('dt', {}, 'Effect'), el('dd', { class: 'estimate' }, estimate.join(' · ') || 'no estimate'),
      el('dt', {}, 'Groups'), el('dd', {}, (a.groups || []).join(', ') || '—'),
      a.required_approvals > 1 ? [el('dt', {}, 'Votes'), el('dd', { class: 'votes' },
        `${(a.votes || []).length} of ${a.required_approvals} approvals`,
        (a.votes || []).length ? ` (${a.votes.map((v) => v.decider).join(', ')})` : '')] : null,
      a.approver_groups && a.approver_groups.length ? [el('dt', {}, 'Approvers'), el('dd', {}, a.approver_groups.join(', '))] : null),
    a.state === 'pending' ? el('div', { class: 'actions' },
      el('button', { class: 'approve-once', onclick: () => decide('approve', { scope: 'once', reason: reason_input.value }, `approved ${a.id} once`) }, 'Approve once'),
      el('span', { class: 'group' },
        el('button', { class: 'approve-shape', onclick: () => decide('approve', { scope: 'shape', for_s: Number(duration.value), reason: reason_input.value }, `approved the shape of ${a.id}`) }, 'Approve shape for'),
        duration),
      reason_input,
      el('button', { class: 'deny danger', onclick: () => {
        if (!reason_input.value.trim()) { flash('a denial needs a reason', 'error'); reason_input.focus(); return; }
        decide('deny', { reason: reason_input.value }, `denied ${a.id}`);
      } }, 'Deny'))
      : el('p', { class: 'decided' }, `${a.state} by ${a.decider || '—'}${a.decision_reason ? ': ' + a.decision_reason : ''}`,
        a.state === 'approved' && a.scope === 'shape' && a.grant_expires_ms ? ` · this shape is approved until ${fmt_time(a.grant_expires_ms)}` : ''));
}

// `focus`: the id of '#approvals/ID' (the link in the held client's NOTICE and in chat): that
// request is shown first, whatever its state, above the queue.
async function approvals_view(focus = '') {
  const state = document.getElementById('approval-state')?.value || 'pending';
  const [r, focused] = await Promise.all([
    api.get('/api/v1/approvals?state=' + enc(state)),
    focus ? api.get('/api/v1/approvals/' + enc(focus)).catch((e) => ({ missing: e.message })) : null,
  ]);
  const picker = el('select', { id: 'approval-state', onchange: () => run(() => approvals_view(focus)) },
    ['pending', 'approved', 'denied', 'expired', 'all'].map((s) => el('option', { value: s, selected: s === state }, s)));
  const list = (r.approvals || []).filter((a) => !focused || a.id !== focused.id);
  // Keep what the reviewer is typing: re-render only when the queue changed.
  const key = state + JSON.stringify([focused && [focused.id, focused.state, (focused.votes || []).length],
    list.map((a) => [a.id, a.state, (a.votes || []).length])]);
  if (main.dataset.view === 'approvals' && main.dataset.key === key) return;
  main.dataset.view = 'approvals';
  main.dataset.key = key;
  fill(main,
    el('div', { class: 'toolbar' }, el('h2', {}, 'Approvals'), el('label', {}, 'Show ', picker)),
    focused ? el('section', { id: 'focused' }, focused.missing
      ? el('p', { class: 'flash error' }, `Approval ${focus}: ${focused.missing}`)
      : approval_card(focused, focus)) : null,
    list.length ? el('div', { id: 'approvals' }, list.map((a) => approval_card(a, focus)))
      : el('p', { class: 'empty' }, `No ${state === 'all' ? '' : state + ' '}approvals.`));
}

// --- live sessions -------------------------------------------------------------------------

async function sessions_view() {
  const r = await api.get('/api/v1/sessions');
  const live = r.live || [];
  // Keep a reason being typed: re-render only when the sessions changed.
  const key = JSON.stringify(live.map((s) => s.session_id));
  if (main.dataset.view === 'sessions' && main.dataset.key === key) return;
  main.dataset.view = 'sessions';
  main.dataset.key = key;
  fill(main, el('h2', {}, 'Live sessions'),
    live.length ? el('table', {},
      el('thead', {}, el('tr', {}, ['Session', 'Identity', 'Groups', 'Target', 'Policy', 'Client', ''].map((h) => el('th', {}, h)))),
      el('tbody', {}, live.map((s) => {
        const reason = el('input', { type: 'text', placeholder: 'reason', 'aria-label': 'kill reason' });
        return el('tr', { dataset: { id: s.session_id } },
          el('td', { class: 'mono' }, s.session_id), el('td', {}, s.identity),
          el('td', {}, (s.groups || []).join(', ')), el('td', {}, s.target), el('td', {}, s.policy || ''),
          el('td', {}, s.client_addr || ''),
          el('td', {}, reason, el('button', { class: 'danger kill', onclick: () => {
            if (!reason.value.trim()) { flash('killing a session needs a reason', 'error'); return; }
            run(async () => { await api.post(`/api/v1/sessions/${enc(s.session_id)}/kill`, { reason: reason.value }); await sessions_view(); }, `killed ${s.session_id}: ${reason.value}`);
          } }, 'Kill')));
      }))) : el('p', { class: 'empty' }, 'No live sessions.'));
}

// --- recordings ----------------------------------------------------------------------------

function replay_record(rec) {
  switch (rec.kind) {
    case 'session_start':
      return el('div', { class: 'rec start' }, `-- session of ${rec.identity} (${(rec.groups || []).join(', ')}) to ${rec.target} from ${rec.client_addr || '?'} at ${fmt_time(rec.ts)}`);
    case 'statement':
      // A statement is recorded before it runs, its rows while they stream, and its completion
      // (phase end) after: shown like psql shows them, the statement once, then the rows, then
      // the count or the error.
      if (rec.phase === 'end') {
        return el('div', { class: 'rec completion' + (rec.error ? ' pg-error' : '') },
          rec.error ? `ERROR:  ${rec.error.message} (${rec.error.sqlstate})`
            : `(${rec.rows ?? 0} ${rec.rows === 1 ? 'row' : 'rows'})`,
          rec.masked_cells ? el('span', { class: 'muted' }, ` · ${rec.masked_cells} values masked`) : null);
      }
      return el('div', { class: 'rec statement' },
        el('span', { class: 'prompt' }, `${rec.target || ''}=> `), highlight_sql(rec.sql || ''),
        el('div', { class: 'verdict ' + (rec.verdict || '') }, `-- ${rec.verdict || ''}${rec.rule ? ' by ' + rec.rule : ''}${rec.tag ? ' · ' + rec.tag : ''}${rec.approval_id ? ' · approval ' + rec.approval_id : ''}`),
        rec.verdict === 'deny' ? el('div', { class: 'pg-error' }, `ERROR:  ${rec.message || 'statement denied by policy'}`) : null,
        rec.error ? el('div', { class: 'pg-error' }, `ERROR:  ${rec.error.message} (${rec.error.sqlstate})`) : null);
    case 'rows': {
      const cols = (rec.columns || []).map((c) => (typeof c === 'string' ? c : c.name));
      return el('table', { class: 'rec rows' },
        el('thead', {}, el('tr', {}, cols.map((c) => el('th', {}, c)))),
        el('tbody', {}, (rec.rows || []).map((row) => el('tr', {}, row.map((v) => el('td', { class: v === null ? 'null' : '' }, fmt_value(v)))))),
        rec.truncated ? el('caption', {}, `${rec.truncated} more rows not recorded`) : null);
    }
    case 'error':
      return el('div', { class: 'rec pg-error' }, `ERROR:  ${rec.message} (${rec.sqlstate})`);
    case 'recording_gap':
      return el('div', { class: 'rec gap' }, `-- RECORDING GAP: ${rec.records} records missing (${rec.reason})`);
    case 'session_end':
      return el('div', { class: 'rec end' }, `-- session ended: ${rec.reason || ''}`);
    default:
      return el('div', { class: 'rec other muted' }, `-- ${rec.kind}`);
  }
}

// The hash-chain verification of a recording (sessions.verify: state sealed | open | unsealed |
// truncated | tampered, docs/recording.md).
function verify_line(v) {
  if (v.ok === undefined) return el('p', { class: 'verify bad', dataset: { state: 'error' } }, `Not verified: ${v.error}`);
  const state = v.state || (v.ok ? 'intact' : 'tampered');
  const good = v.ok === true && (state === 'sealed' || state === 'open');
  let text = good
    ? `Hash chain verified: ${v.records} records, ${state === 'sealed' ? 'sealed' : 'still recording'}`
    : `Verification FAILED (${state})${v.bad_seq ? ` at record ${v.bad_seq}` : ''}${v.reason ? ': ' + v.reason : ''}`;
  if (v.ok === true && state === 'unsealed') text = `Hash chain intact: ${v.records} records, never sealed (the session ended in a crash)`;
  return el('p', { class: 'verify ' + (good ? 'good' : 'bad'), dataset: { state } }, text,
    v.detail ? el('span', { class: 'muted' }, ` · ${v.detail}`) : null,
    v.gaps ? el('span', {}, ` · ${v.gaps} recording gaps (${v.missing_records} records missing)`) : null);
}

async function replay_view(id) {
  const [r, v] = await Promise.all([
    api.get(`/api/v1/sessions/${enc(id)}/replay`),
    api.get(`/api/v1/sessions/${enc(id)}/verify`).catch((e) => ({ error: e.message })),
  ]);
  main.dataset.view = 'replay';
  fill(main,
    el('div', { class: 'toolbar' }, el('h2', {}, 'Recording ', el('span', { class: 'mono' }, id)),
      el('button', { onclick: () => run(recordings_view) }, 'Back')),
    verify_line(v),
    el('div', { class: 'replay' }, (r.records || []).filter((x) => x.kind !== 'seal').map(replay_record)));
}

async function recordings_view() {
  const r = await api.get('/api/v1/sessions');
  main.dataset.view = 'recordings';
  const list = (r.sessions || []).slice().sort((a, b) => (b.start_ms || 0) - (a.start_ms || 0));
  fill(main, el('h2', {}, 'Recordings'),
    list.length ? el('table', {},
      el('thead', {}, el('tr', {}, ['Session', 'Identity', 'Target', 'Start', 'End', 'Statements', 'Verified', ''].map((h) => el('th', {}, h)))),
      el('tbody', {}, list.map((s) => el('tr', { dataset: { id: s.session_id } },
        el('td', { class: 'mono' }, s.session_id), el('td', {}, s.identity), el('td', {}, s.target),
        el('td', {}, fmt_time(s.start_ms)), el('td', {}, s.live ? 'live' : fmt_time(s.end_ms)),
        el('td', {}, String(s.statements ?? '')), el('td', {}, s.verified ? 'yes' : 'no'),
        el('td', {}, el('button', { class: 'replay-open', onclick: () => run(() => replay_view(s.session_id)) }, 'Replay'))))))
      : el('p', { class: 'empty' }, 'No recordings.'));
}

// --- audit ---------------------------------------------------------------------------------

async function audit_view(filters = {}) {
  main.dataset.view = 'audit';
  const field = (name, label, type = 'text') => el('label', {}, label, el('input', { name, type, value: filters[name] || '' }));
  const results = el('div', { id: 'audit-results' });
  const form = el('form', { class: 'filters', onsubmit: (ev) => {
    ev.preventDefault();
    const f = Object.fromEntries(new FormData(form).entries());
    run(() => audit_view(f));
  } },
    field('event', 'Event'), field('identity', 'Identity'), field('decision', 'Decision'),
    field('session_id', 'Session'), field('text', 'Text'), field('since', 'Since', 'datetime-local'), field('limit', 'Limit', 'number'),
    el('button', { type: 'submit' }, 'Search'));
  fill(main, el('h2', {}, 'Audit log'), form, results);
  const q = new URLSearchParams();
  for (const k of ['event', 'identity', 'decision', 'session_id', 'text']) if (filters[k]) q.set(k, filters[k]);
  if (filters.since) q.set('since_ms', String(Date.parse(filters.since)));
  q.set('limit', filters.limit || '200');
  const r = await api.get('/api/v1/audit?' + q.toString());
  const events = r.records || [];
  const cols = ['ts', 'event', 'decision', 'identity', 'principal', 'session_id', 'rule', 'reason'];
  // ts is an ISO string in the audit log.
  fill(results, events.length ? el('table', {},
    el('thead', {}, el('tr', {}, cols.map((c) => el('th', {}, c)), el('th', {}, 'details'))),
    el('tbody', {}, events.map((e) => el('tr', {},
      cols.map((c) => el('td', {}, fmt_value(e[c] ?? ''))),
      el('td', { class: 'details' }, JSON.stringify(Object.fromEntries(Object.entries(e).filter(([k]) => !cols.includes(k))))))))) :
    el('p', { class: 'empty' }, 'No matching audit events.'));
}

// --- rule sets -----------------------------------------------------------------------------

async function rules_view() {
  const r = await api.get('/api/v1/rules');
  main.dataset.view = 'rules';
  const sets = r.sets || r.rule_sets || [];
  const sql = el('textarea', { id: 'rule-test-sql', rows: 4, placeholder: 'DELETE FROM orders', 'aria-label': 'statement to test' });
  const out = el('div', { id: 'rule-test-result' });
  fill(main, el('h2', {}, 'Rule sets'),
    el('table', {}, el('thead', {}, el('tr', {}, ['Set', 'Rules', 'Used by'].map((h) => el('th', {}, h)))),
      el('tbody', {}, sets.map((s) => el('tr', {}, el('td', {}, s.name), el('td', {}, s.error ? `error: ${s.error}` : String(s.rules ?? '')),
        el('td', {}, (s.used_by || []).join(', ')))))),
    el('h3', {}, 'Test a statement'), sql,
    el('button', { id: 'rule-test', onclick: () => run(async () => {
      const t = await api.post('/api/v1/rules/test', { sql: sql.value, sets: sets.filter((x) => !x.error).map((x) => x.name) });
      const matches = t.matches || [];
      fill(out, el('p', { class: 'verdict ' + (t.verdict || '') }, `verdict: ${t.verdict || (matches.length ? 'match' : 'no match')}`),
        el('pre', { class: 'statement' }, highlight_sql(sql.value)),
        matches.length ? el('ul', {}, matches.map((m) => el('li', {}, `${m.action || ''} ${m.id || ''} (${m.severity || ''}, line ${m.line ?? '?'}): ${m.message || ''}`)))
          : el('p', { class: 'empty' }, 'No rule matches.'));
    }) }, 'Test'), out);
}

// --- shell ---------------------------------------------------------------------------------

const VIEWS = { approvals: approvals_view, sessions: sessions_view, recordings: recordings_view,
                audit: () => audit_view(), rules: rules_view };

function stop_poll() {
  if (poll) clearInterval(poll);
  poll = null;
}

async function route() {
  stop_poll();
  // '#approvals/ID' opens one request (the link a held client's NOTICE and chat carry).
  const [name, arg = ''] = (location.hash.replace(/^#/, '') || 'approvals').split('/');
  const view = VIEWS[name] || approvals_view;
  for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('active', a.getAttribute('href') === '#' + name);
  delete main.dataset.key;
  if (view === sessions_view) {
    await run(view);
    poll = setInterval(() => run(view), 2000);
    return;
  }
  if (view !== approvals_view) return run(view);
  const focus = decodeURIComponent(arg);
  await run(() => approvals_view(focus));
  poll = setInterval(() => run(() => approvals_view(focus)), 2000);
}

async function start() {
  try {
    me = await api.session();
  } catch (e) {
    if (e instanceof ApiError && (e.status === 401 || e.status === 403)) return login_view();
    return show_error(e);
  }
  document.getElementById('nav').hidden = false;
  fill(document.getElementById('who'),
    el('span', { id: 'who-name' }, me.name), ` (${me.role}, via ${me.via}) `,
    el('button', { id: 'logout', onclick: () => run(async () => { await api.post('/auth/logout'); location.reload(); }) }, 'Sign out'));
  window.addEventListener('hashchange', route);
  await route();
}

start();
