// Small DOM and formatting helpers shared by the views. No framework: elements are made once and updated in place.

export const $ = (id) => document.getElementById(id);

// el('td', {class: 'num', data: {track: 3}, title: '...'}, 'text', child, ...). Never sets a style attribute (the
// Content-Security-Policy forbids inline styles; views set element.style from script where they must).
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key === 'data') for (const [k, v] of Object.entries(value)) node.dataset[k] = String(v);
    else if (key === 'text') node.textContent = value;
    else node.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

// Sets textContent only when it changed: cheaper for the browser, and stable for a person selecting text.
export function setText(node, text) {
  const value = String(text);
  if (node.textContent !== value) node.textContent = value;
}

export function setData(node, key, value) {
  const text = String(value);
  if (node.dataset[key] !== text) node.dataset[key] = text;
}

export function clear(node) {
  while (node.firstChild) node.firstChild.remove();
}

export function fmtDb(value) {
  if (value === null || value === undefined || Number.isNaN(value)) return '—';
  if (value <= -99.95) return '−∞';
  return (value < 0 ? '−' : '') + Math.abs(value).toFixed(1);
}

export function fmtSeconds(seconds) {
  if (seconds === null || seconds === undefined || seconds < 0) return 'never';
  if (seconds < 1) return 'now';
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  return `${Math.round(seconds / 3600)} h`;
}

const two = (n) => String(n).padStart(2, '0');

// Seconds since 1970 (the live tail's `time`) as local hh:mm:ss.mmm.
export function fmtClock(epochSeconds) {
  const d = new Date(epochSeconds * 1000);
  return `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}.${String(d.getMilliseconds()).padStart(3, '0')}`;
}

// An ISO-8601 time from the database as local time: hh:mm:ss today, else the date too.
export function fmtIso(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  const time = `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
  const today = new Date();
  if (d.toDateString() === today.toDateString()) return time;
  return `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())} ${time}`;
}

export function shortId(id) {
  return id && id.length > 12 ? id.slice(0, 8) + '…' : id || '';
}

// A debug row's content `/aiplayer/rms_response ,ssf a b 0.07`: the address and the rest, to show them apart.
export function splitContent(content) {
  if (!content.startsWith('/')) return ['', content];
  const space = content.indexOf(' ');
  return space < 0 ? [content, ''] : [content.slice(0, space), content.slice(space + 1)];
}
