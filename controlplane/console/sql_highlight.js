// A small SQL tokenizer for the console's statement view (PostgreSQL lexical rules, enough to
// colour a statement): keywords, identifiers, quoted identifiers, strings (standard, E'',
// dollar-quoted), numbers, comments, operators, parameters ($1), whitespace.
//
// tokenize_sql(text) is pure: the tokens' texts concatenated are exactly `text`, so nothing is
// lost or added. highlight_sql(text) builds DOM nodes with textContent only: the statement is
// untrusted and must never become markup.

const KEYWORDS = new Set(`
  abort alter analyze and any array as asc begin between by call case cast check checkpoint
  close cluster column comment commit constraint copy create cross cte current_date
  current_time current_timestamp current_user cursor deallocate declare default delete desc
  discard distinct do drop else end except execute exists explain false fetch filter for
  foreign from full function grant group having if ilike in index inner insert intersect into
  is join key lateral left like limit listen lock materialized not notify null nulls offset on
  only or order outer over partition policy prepare primary procedure references refresh
  reindex release rename replace reset returning revoke right role rollback row rows savepoint
  schema select sequence session set show similar some table tablespace temp temporary then to
  transaction trigger true truncate type union unique unlisten update user using vacuum values
  view when where window with`.split(/\s+/).filter(Boolean));

export function tokenize_sql(text) {
  const s = String(text);
  const out = [];
  let i = 0;
  const push = (type, end) => {
    out.push({ type, text: s.slice(i, end) });
    i = end;
  };
  while (i < s.length) {
    const c = s[i];
    const rest = s.slice(i);
    let m;
    if (/\s/.test(c)) {
      m = /^\s+/.exec(rest);
      push('space', i + m[0].length);
    } else if (rest.startsWith('--')) {
      const nl = s.indexOf('\n', i);
      push('comment', nl < 0 ? s.length : nl);
    } else if (rest.startsWith('/*')) {
      // Nested block comments, as PostgreSQL allows.
      let depth = 0;
      let j = i;
      while (j < s.length) {
        if (s.startsWith('/*', j)) { depth++; j += 2; }
        else if (s.startsWith('*/', j)) { depth--; j += 2; if (depth === 0) break; }
        else j++;
      }
      push('comment', j);
    } else if (c === "'" || ((c === 'E' || c === 'e') && s[i + 1] === "'")) {
      const escapes = c !== "'";
      let j = escapes ? i + 2 : i + 1;
      while (j < s.length) {
        if (escapes && s[j] === '\\') { j += 2; continue; }
        if (s[j] === "'") {
          if (s[j + 1] === "'") { j += 2; continue; }
          j++;
          break;
        }
        j++;
      }
      push('string', Math.min(j, s.length));
    } else if ((m = /^\$([A-Za-z_][A-Za-z0-9_]*)?\$/.exec(rest))) {
      const close = s.indexOf(m[0], i + m[0].length);
      push('string', close < 0 ? s.length : close + m[0].length);
    } else if ((m = /^\$[0-9]+/.exec(rest))) {
      push('param', i + m[0].length);
    } else if (c === '"') {
      let j = i + 1;
      while (j < s.length) {
        if (s[j] === '"') {
          if (s[j + 1] === '"') { j += 2; continue; }
          j++;
          break;
        }
        j++;
      }
      push('ident', Math.min(j, s.length));
    } else if ((m = /^(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?/.exec(rest))) {
      push('number', i + m[0].length);
    } else if ((m = /^[A-Za-z_\u0080-\uffff][A-Za-z0-9_$\u0080-\uffff]*/.exec(rest))) {
      push(KEYWORDS.has(m[0].toLowerCase()) ? 'keyword' : 'ident', i + m[0].length);
    } else if ((m = /^[+\-*/<>=~!@#%^&|`?]+/.exec(rest))) {
      push('operator', i + m[0].length);
    } else {
      push('punct', i + 1);
    }
  }
  return out;
}

// A <code> element whose children are <span class="sql-TYPE"> with the token text as
// textContent.
export function highlight_sql(text, doc = globalThis.document) {
  const code = doc.createElement('code');
  code.className = 'sql';
  for (const t of tokenize_sql(text)) {
    if (t.type === 'space' || t.type === 'punct') {
      code.appendChild(doc.createTextNode(t.text));
    } else {
      const span = doc.createElement('span');
      span.className = 'sql-' + t.type;
      span.textContent = t.text;
      code.appendChild(span);
    }
  }
  return code;
}
