// node --test: the console's SQL tokenizer (controlplane/console/sql_highlight.js).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { tokenize_sql } from './sql_highlight.js';

const types = (sql) => tokenize_sql(sql).filter((t) => t.type !== 'space').map((t) => [t.type, t.text]);

test('keywords, identifiers, numbers, strings and operators', () => {
  assert.deepEqual(types("SELECT id, 1.5e3 FROM t WHERE name = 'o''brien'"), [
    ['keyword', 'SELECT'], ['ident', 'id'], ['punct', ','], ['number', '1.5e3'],
    ['keyword', 'FROM'], ['ident', 't'], ['keyword', 'WHERE'], ['ident', 'name'],
    ['operator', '='], ['string', "'o''brien'"]]);
});

test('dollar quoting, escape strings, quoted identifiers, parameters, comments', () => {
  assert.deepEqual(types('select $f$ it\'s $x$ $f$, E\'a\\\'b\', "We""ird", $1 -- c\n/* a /* b */ c */'), [
    ['keyword', 'select'], ['string', "$f$ it's $x$ $f$"], ['punct', ','], ['string', "E'a\\'b'"],
    ['punct', ','], ['ident', '"We""ird"'], ['punct', ','], ['param', '$1'],
    ['comment', '-- c'], ['comment', '/* a /* b */ c */']]);
});

test('markup in a statement stays text inside tokens', () => {
  const sql = "select '<script>alert(1)</script>', '<img src=x onerror=alert(2)>'";
  const toks = tokenize_sql(sql);
  assert.ok(toks.some((t) => t.type === 'string' && t.text === "'<script>alert(1)</script>'"));
});

test('concatenated tokens are the input, also for unterminated and odd input', () => {
  for (const sql of ["select 'open", '"open', '/* open', '$a$ open', 'a<>b!=c', '\u00e9t\u00e9 := 1;',
                     '', '\0\x01', 'E\'\\', "select 1;;\tselect 2"]) {
    assert.equal(tokenize_sql(sql).map((t) => t.text).join(''), sql);
  }
});
