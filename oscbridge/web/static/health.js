// The Health view: /bridge/health (every 2 s from the live feed) and the values of /bridge/status, plus what this
// page knows of its own connection. The worst status also colours the dot on the tab.

import {$, el, clear, setData, setText} from './dom.js';

const RANK = {ok: 0, warn: 1, fail: 2};
// /bridge/status: the six values of the contract, then the four of the extension (docs/bridge-api-notes.md).
const STATUS = [
  ['plugins bound', (v) => v], ['plugins with a track id', (v) => v], ['writes queued', (v) => v],
  ['writes in the spool (database down)', (v) => v], ['database', (v) => (v ? 'up' : 'down')],
  ['Ollama', (v) => (v ? 'up' : 'down')], ['free disk', (v) => `${(v / 1024).toFixed(1)} GiB`],
  ['spool not yet in PostgreSQL', (v) => `${v} bytes`], ['writes refused by PostgreSQL', (v) => v],
  ['traffic rows dropped (disk)', (v) => v],
];

function facts(node, pairs) {
  clear(node);
  for (const [name, value, key] of pairs) node.append(el('dt', {text: name}), el('dd', {data: {fact: key || name}, text: value}));
}

export function setupHealth(ctx) {
  ctx.bus.on('/bridge/health', (rows) => {
    const body = $('health-body');
    clear(body);
    let worst = 'ok';
    for (const [name, status, text] of rows) {
      if ((RANK[status] ?? 0) > RANK[worst]) worst = status;
      body.append(el('tr', {data: {name, status}}, el('th', {text: name}),
        el('td', {}, el('span', {class: 'status', data: {status}, text: status})), el('td', {text})));
    }
    setData($('health-dot'), 'status', worst);
    $('health-dot').title = `worst: ${worst}`;
  });
  ctx.bus.on('/bridge/status', (values) => {
    facts($('status-facts'), STATUS.slice(0, values.length).map(([name, show], i) => [name, String(show(values[i])), `status-${i}`]));
  });

  let connection = 'connecting';
  function page() {
    const s = ctx.session;
    facts($('page-facts'), [
      ['bridge', s ? `oscbridge ${s.version}` : '—'],
      ['OSC', s ? `${s.osc.host}:${s.osc.port} (UDP and TCP)` : '—'],
      ['live view', connection],
      ['frames received', ctx.live ? String(ctx.live.frames) : '0'],
      ['connections made', ctx.live ? String(ctx.live.connects) : '0'],
      ['access', ctx.authorized ? 'control (this page holds the key)' : 'read-only (open the page with `oscbridge ui`)'],
    ]);
  }
  ctx.bus.on('session', page);
  ctx.bus.on('access', page);
  ctx.bus.on('connection', (state) => {
    connection = state;
    page();
  });
  ctx.bus.on('view', (view) => {
    if (view === 'health') page();
  });
  setInterval(() => {
    if (ctx.view === 'health') page();
  }, 1000);
  page();
}
