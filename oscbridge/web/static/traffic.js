// The Traffic view: the live tail of what goes to mission_control_debug (`traffic` frames), filtered here, and
// older rows paged from the database with /bridge/debug/recent.
//
// The page keeps the last 1000 live rows in memory and at most 1000 rows in the table: new rows go on top in one
// insertion per frame and the oldest fall off the bottom. Paging back pauses the live tail (rows keep being
// counted), so what the person reads does not move; Resume shows the live tail again.

import {$, el, clear, fmtClock, setText, splitContent} from './dom.js';

const MAX_ROWS = 1000;
const PAGE = 100;
const SEVERITIES = ['debug', 'info', 'warning', 'error'];
const TYPE_LABEL = {osc_in: 'in', osc_out: 'out'};
const GLOB = /[*?[{]/;
const INSTANCE = /\b[0-9a-f]{32}\b/i; // a plugin's instance id (a JUCE Uuid without dashes)

const literal = (text) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'); // literal text in a regular expression

// An OSC address pattern (`/aiplayer/*`, `/bridge/{ping,status}`) as a regular expression for whole addresses.
function patternRegex(pattern) {
  let source = '';
  for (let i = 0; i < pattern.length; i += 1) {
    const c = pattern[i];
    if (c === '*') source += '[^/]*';
    else if (c === '?') source += '[^/]';
    else if (c === '[') {
      const end = pattern.indexOf(']', i);
      if (end < 0) return null;
      const inner = pattern.slice(i + 1, end).replace(/\\/g, '\\\\');
      source += inner.startsWith('!') ? `[^${inner.slice(1)}]` : `[${inner}]`;
      i = end;
    } else if (c === '{') {
      const end = pattern.indexOf('}', i);
      if (end < 0) return null;
      source += '(?:' + pattern.slice(i + 1, end).split(',').map(literal).join('|') + ')';
      i = end;
    } else source += literal(c);
  }
  try {
    return new RegExp(`^${source}$`);
  } catch {
    return null;
  }
}


export function setupTraffic(ctx) {
  const body = $('traffic-body');
  const textInput = $('traffic-text');
  const senderInput = $('traffic-sender');
  const severityInput = $('traffic-severity');
  const pauseButton = $('traffic-pause');
  const olderButton = $('traffic-older');
  const live = []; // newest last
  let paused = false;
  let waiting = 0; // live rows that arrived while paused
  let skipped = 0;
  let lastSeq = 0;
  let older = null; // {cursor, loaded, done} while paging back
  let filter = () => true;

  function compile() {
    const text = textInput.value.trim();
    const sender = senderInput.value.trim();
    const minimum = SEVERITIES.indexOf(severityInput.value);
    let textTest = () => true;
    if (text.startsWith('/')) {
      const regex = GLOB.test(text) ? patternRegex(text) : null;
      textTest = regex ? (row) => regex.test(splitContent(row.content)[0]) : (row) => row.content.startsWith(text);
    } else if (text) {
      const needle = text.toLowerCase();
      textTest = (row) => `${row.content} ${row.type}`.toLowerCase().includes(needle);
    }
    let senderTest = () => true;
    if (sender) {
      // A TR id stands for its plugin: the port it listens on, its instance id, or the id itself in the content.
      const plugin = /^TR\S+$/i.test(sender) ? (ctx.state.get('/bridge/plugins') || []).find((row) => row[3].toLowerCase() === sender.toLowerCase()) : null;
      const needle = sender.toLowerCase();
      const word = plugin ? new RegExp(`\\b${literal(plugin[3])}\\b`) : null;
      senderTest = (row) => {
        if (plugin) {
          const port = `:${plugin[1]}`;
          if (row.receiver.endsWith(port) || row.sender.endsWith(port) || row.content.includes(plugin[0])) return true;
          return word.test(row.content);
        }
        return row.sender.toLowerCase().includes(needle) || row.receiver.toLowerCase().includes(needle);
      };
    }
    filter = (row) => SEVERITIES.indexOf(row.severity) >= minimum && textTest(row) && senderTest(row);
  }

  // Which plugin a row is about, to name it next to the bare address: the port a plugin listens on (what the
  // bridge sends to it), or the instance id in the content (what it sends from its own, unnamed socket).
  let byPort = new Map();
  let byInstance = new Map();
  function who(endpoint, mentioned) {
    const port = Number(endpoint.slice(endpoint.lastIndexOf(':') + 1));
    const plugin = byPort.get(port) || (mentioned ? byInstance.get(mentioned) : undefined);
    return plugin ? el('span', {class: 'who', text: plugin}) : null;
  }

  function rowNode(row) {
    const [address, rest] = splitContent(row.content);
    const mentioned = (INSTANCE.exec(row.content) || [''])[0].toLowerCase();
    const plugin = row.type === 'osc_in' ? who(row.sender, mentioned) : null;
    const target = row.type === 'osc_out' ? who(row.receiver, mentioned) : null;
    // shownAt: when the row appeared, for tests that measure how long a datagram takes to show.
    return el('tr', {data: {seq: row.seq ?? '', severity: row.severity, type: row.type, source: row.source, shownAt: Date.now()}},
      el('td', {class: 'mono time', text: fmtClock(row.time), title: new Date(row.time * 1000).toISOString()}),
      el('td', {}, el('span', {class: 'type', data: {type: row.type}, text: TYPE_LABEL[row.type] || row.type})),
      el('td', {class: 'mono content', title: row.content}, address ? el('span', {class: 'address', text: address}) : null,
        rest ? el('span', {class: 'args', text: (address ? ' ' : '') + rest}) : null),
      el('td', {class: 'mono', title: row.sender}, row.sender, plugin), el('td', {class: 'mono', title: row.receiver}, row.receiver || 'all', target),
      el('td', {}, el('span', {class: 'severity', data: {severity: row.severity}, text: row.severity})));
  }

  function notice() {
    const parts = [];
    if (paused) parts.push(waiting ? `Paused: ${waiting} new row${waiting === 1 ? '' : 's'} waiting.` : 'Paused.');
    if (skipped) parts.push(`The bridge skipped ${skipped} row${skipped === 1 ? '' : 's'} this page did not keep up with (they are stored: Older pages back to them).`);
    parts.push(`${body.children.length} row${body.children.length === 1 ? '' : 's'} shown.`);
    const node = $('traffic-notice');
    setText(node, parts.join(' '));
    node.dataset.skipped = String(skipped);
    node.dataset.waiting = String(waiting);
  }

  function trimBottom() {
    while (body.children.length > MAX_ROWS) body.lastChild.remove();
  }

  // Shows the live rows again from memory: after Resume, Clear, or a change of filter.
  function redraw() {
    clear(body);
    const fragment = document.createDocumentFragment();
    for (let i = live.length - 1; i >= 0 && fragment.children.length < MAX_ROWS; i -= 1) {
      if (filter(live[i])) fragment.append(rowNode(live[i]));
    }
    body.append(fragment);
    older = null;
    setText($('traffic-older-note'), '');
    notice();
  }

  function setPaused(value) {
    paused = value;
    pauseButton.setAttribute('aria-pressed', String(paused));
    setText(pauseButton, paused ? 'Resume' : 'Pause');
    if (!paused) {
      waiting = 0;
      redraw();
    }
    notice();
  }

  ctx.bus.on('traffic', (frame) => {
    // Each connection starts with the last 100 rows again: after a reconnection only the newer ones are news.
    const newest = frame.rows.length ? frame.rows[frame.rows.length - 1].seq : lastSeq;
    if (newest < lastSeq) lastSeq = 0; // the bridge restarted and counts from 1 again
    const rows = frame.rows.filter((row) => row.seq > lastSeq).map((row) => ({...row, source: 'live'}));
    lastSeq = Math.max(lastSeq, newest);
    skipped += frame.skipped;
    live.push(...rows);
    if (live.length > MAX_ROWS) live.splice(0, live.length - MAX_ROWS);
    if (paused) {
      waiting += rows.length;
    } else {
      const fragment = document.createDocumentFragment();
      for (let i = rows.length - 1; i >= 0; i -= 1) if (filter(rows[i])) fragment.append(rowNode(rows[i]));
      body.prepend(fragment);
      trimBottom();
    }
    notice();
  });
  pauseButton.addEventListener('click', () => setPaused(!paused));
  $('traffic-clear').addEventListener('click', () => {
    live.length = 0;
    skipped = 0;
    waiting = 0;
    redraw();
  });
  const refilter = () => {
    compile();
    if (!paused) redraw();
  };
  for (const input of [textInput, senderInput]) input.addEventListener('input', refilter);
  severityInput.addEventListener('change', refilter);

  olderButton.addEventListener('click', async () => {
    if (!paused) setPaused(true);
    // A live row's id is a cursor too: the database pages from just before that row.
    if (older === null) older = {cursor: live.length ? live[0].id : '', loaded: 0, done: false};
    if (older.done) return;
    const text = textInput.value.trim();
    const contains = text.startsWith('/') && GLOB.test(text) ? text.slice(0, text.search(GLOB)) : text;
    const sender = /^(oscbridge|[\w.:[\]-]+:\d+)$/.test(senderInput.value.trim()) ? senderInput.value.trim() : '';
    olderButton.disabled = true;
    const reply = await ctx.request('/bridge/debug/recent', [PAGE, older.cursor, contains, sender, severityInput.value]);
    olderButton.disabled = false;
    const note = $('traffic-older-note');
    if (!reply.ok) {
      note.dataset.code = reply.error.code;
      setText(note, `error ${reply.error.code}: ${reply.error.message}`);
      return;
    }
    const rows = reply.rows.map(([cursor, createdAt, rowSender, receiver, type, severity, content]) =>
      ({cursor, time: Date.parse(createdAt) / 1000, sender: rowSender, receiver, type, severity, content, source: 'db'}));
    if (rows.length) older.cursor = rows[rows.length - 1].cursor;
    older.loaded += rows.length;
    older.done = rows.length < PAGE;
    const fragment = document.createDocumentFragment();
    for (const row of rows) if (filter(row)) fragment.append(rowNode(row));
    body.append(fragment);
    while (body.children.length > MAX_ROWS) body.firstChild.remove(); // paging back: the newest fall off the top
    setText(note, older.done ? `${older.loaded} older rows loaded; nothing older.` : `${older.loaded} older rows loaded.`);
    notice();
  });

  ctx.bus.on('/bridge/plugins', (rows) => {
    byPort = new Map(rows.filter((row) => row[3] && row[1] >= 0).map((row) => [row[1], row[3]]));
    byInstance = new Map(rows.filter((row) => row[3]).map((row) => [row[0].toLowerCase(), row[3]]));
    const list = $('traffic-senders');
    const key = rows.map((row) => row[3]).join(' ');
    if (list.dataset.key === key) return;
    clear(list);
    for (const row of rows) if (row[3]) list.append(el('option', {value: row[3]}));
    list.dataset.key = key;
  });
  compile();
  notice();
}
