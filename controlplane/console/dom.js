// DOM building for the console. Every piece of data becomes a text node (textContent):
// statements, identities, reasons and recorded values come from agents and databases and are
// untrusted; this file is the only place elements are made, and it has no innerHTML.

// el('div', {class: 'x', onclick: f}, 'text', child, [more, children]) → HTMLElement.
export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') e.addEventListener(k.slice(2), v);
    else if (k === 'class') e.className = v;
    else if (k === 'dataset') Object.assign(e.dataset, v);
    else if (k === 'value') e.value = v;
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  append(e, children);
  return e;
}

function append(parent, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(parent, c);
    else if (c instanceof Node) parent.appendChild(c);
    else parent.appendChild(document.createTextNode(String(c)));
  }
}

// Replaces the children of `parent`.
export function fill(parent, ...children) {
  parent.replaceChildren();
  append(parent, children);
  return parent;
}

export function fmt_time(ms) {
  if (!ms) return '';
  return new Date(Number(ms)).toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
}

// A recorded value for display: null, text, or a summarised large value.
export function fmt_value(v) {
  if (v === null || v === undefined) return 'NULL';
  if (typeof v === 'object') {
    if ('length' in v && 'sha256' in v) {
      return `${v.prefix ?? ''}... (${v.length} bytes, sha256 ${String(v.sha256).slice(0, 12)}…)`;
    }
    return JSON.stringify(v);
  }
  return String(v);
}
