// The Calibration view: tone on/off, probe, assign a TR id and track to an instance, and a log of each step as it
// happens: the request sent, the reply (or the API's error, word for word) and the /bridge/event/* events that
// follow from the live feed.

import {$, el, clear, fmtClock, fmtDb, fmtSeconds, shortId} from './dom.js';

const LOG_LIMIT = 300;

export function setupCalibration(ctx) {
  const log = $('calibration-log');
  const select = $('assign-instance');
  const pluginInput = $('assign-plugin');
  const numberInput = $('assign-number');
  const nameInput = $('assign-name');
  let probeRows = [];
  let lastEvent = null; // the sequence number of the newest event looked at (null: none yet)
  let since = Date.now() / 1000; // events before this moment are not news
  let suggested = {plugin: '', number: ''};

  // One line of the log, oldest first; the log follows the newest line unless the person scrolled up to read.
  function entry(kind, text, detail) {
    const following = log.scrollTop + log.clientHeight >= log.scrollHeight - 8;
    const what = el('span', {class: 'what', text}, detail);
    const item = el('li', {data: {kind}}, el('time', {text: fmtClock(Date.now() / 1000)}), what);
    log.append(item);
    while (log.children.length > LOG_LIMIT) log.firstChild.remove();
    if (following) log.scrollTop = log.scrollHeight;
    return item;
  }

  // One request with its steps in the log: what was sent, then what came back.
  async function step(address, args, describe) {
    entry('request', `→ ${address} ${args.map((a) => JSON.stringify(a)).join(' ')}`.trim(), null).dataset.address = address;
    const reply = await ctx.request(address, args);
    if (reply.ok) {
      entry('ok', `← ${describe(reply)}`).dataset.address = address;
    } else {
      const item = entry('error', `← error ${reply.error.code}: `, el('span', {class: 'verbatim', text: reply.error.message}));
      item.dataset.address = address;
      item.dataset.code = reply.error.code;
    }
    return reply;
  }

  async function busy(button, work) {
    button.disabled = true;
    button.classList.add('busy');
    try {
      return await work();
    } finally {
      button.classList.remove('busy');
      button.disabled = !ctx.authorized;
    }
  }

  function unassigned() {
    return (ctx.state.get('/bridge/plugins') || []).filter((row) => !row[3] && row[2] !== 'gone');
  }

  // The next free TR id and track number, offered until the person types their own.
  function suggest() {
    const plugins = ctx.state.get('/bridge/plugins') || [];
    const mapping = ctx.state.get('/bridge/mapping/list') || [];
    const numbers = [...plugins.map((row) => row[3]), ...mapping.map((row) => row[2])]
      .map((id) => /^TR(\d+)$/.exec(id || '')).filter(Boolean).map((m) => Number(m[1]));
    const plugin = `TR${Math.max(0, ...numbers) + 1}`;
    const number = String(Math.max(0, ...mapping.map((row) => row[0])) + 1);
    if (pluginInput.value === '' || pluginInput.value === suggested.plugin) pluginInput.value = plugin;
    if (numberInput.value === '' || numberInput.value === suggested.number) numberInput.value = number;
    suggested = {plugin, number};
  }

  function renderInstances() {
    const rows = unassigned();
    const body = $('unassigned-body');
    clear(body);
    if (rows.length === 0) body.append(el('tr', {class: 'placeholder'}, el('td', {colspan: 4, text: 'Every plugin has a track id.'})));
    for (const [id, port, state, , seconds] of rows) {
      body.append(el('tr', {data: {instance: id, state}},
        el('td', {class: 'mono', title: id, text: shortId(id)}), el('td', {class: 'num mono', text: port >= 0 ? port : '—'}),
        el('td', {}, el('span', {class: 'state', data: {state}, text: state})), el('td', {class: 'num', text: fmtSeconds(seconds)})));
    }
    // The choices: probe results first (loudest first), then the other instances without a track id.
    const chosen = select.value;
    const ids = [...probeRows.map((row) => row[0]), ...rows.map((row) => row[0])].filter((id, i, all) => all.indexOf(id) === i);
    const key = ids.join(' ');
    if (select.dataset.key !== key) {
      clear(select);
      if (ids.length === 0) select.append(el('option', {value: '', text: 'no instance without a track'}));
      for (const id of ids) {
        const probed = probeRows.find((row) => row[0] === id);
        const plugin = rows.find((row) => row[0] === id);
        const where = probed ? `port ${probed[1]}, ${fmtDb(probed[2])} dBFS` : plugin ? `port ${plugin[1]}, ${plugin[2]}` : '';
        select.append(el('option', {value: id, text: `${shortId(id)} · ${where}`}));
      }
      select.dataset.key = key;
      if (ids.includes(chosen)) select.value = chosen;
    }
    suggest();
  }

  function renderProbe() {
    const body = $('probe-body');
    clear(body);
    if (probeRows.length === 0) body.append(el('tr', {class: 'placeholder'}, el('td', {colspan: 5, text: 'No bound plugin without a track answered.'})));
    probeRows.forEach(([id, port, rms], index) => {
      const use = el('button', {class: 'small', type: 'button', data: {instance: id}, text: 'use'});
      use.addEventListener('click', () => {
        select.value = id;
        nameInput.focus();
      });
      use.disabled = !ctx.authorized;
      body.append(el('tr', {data: {instance: id}},
        el('td', {class: 'num', text: index + 1}), el('td', {class: 'mono', title: id, text: shortId(id)}),
        el('td', {class: 'num mono', text: port}), el('td', {class: 'num mono', text: fmtDb(rms)}), el('td', {}, use)));
    });
  }

  $('tone-on').addEventListener('click', (event) => busy(event.currentTarget, () => {
    const frequency = Number($('tone-frequency').value || 137);
    const level = Number($('tone-level').value || -10);
    return step('/bridge/calibrate/tone', [true, frequency, level], (r) => `ok: ${r.values[0]} plugin${r.values[0] === 1 ? '' : 's'} started the tone`);
  }));
  $('tone-off').addEventListener('click', (event) => busy(event.currentTarget, () =>
    step('/bridge/calibrate/tone', [false], (r) => `ok: ${r.values[0]} plugin${r.values[0] === 1 ? '' : 's'} stopped the tone`)));
  $('probe').addEventListener('click', (event) => busy(event.currentTarget, async () => {
    const reply = await step('/bridge/calibrate/probe', [], (r) => `ok: ${r.rows.length} plugin${r.rows.length === 1 ? '' : 's'} answered` +
      (r.rows.length ? `, loudest ${shortId(r.rows[0][0])} at ${fmtDb(r.rows[0][2])} dBFS` : ''));
    if (reply.ok) {
      probeRows = reply.rows;
      renderProbe();
      renderInstances();
      if (probeRows.length) select.value = probeRows[0][0];
    }
  }));
  $('assign-form').addEventListener('submit', (event) => {
    event.preventDefault();
    busy($('assign'), async () => {
      const args = [select.value, pluginInput.value.trim(), Number(numberInput.value), nameInput.value];
      entry('note', 'waiting for the plugin to confirm its track id…');
      const reply = await step('/bridge/calibrate/assign', args, () => `ok: ${shortId(args[0])} carries ${args[1]} on track ${args[2]}` +
        (args[3] ? ` “${args[3]}”` : ''));
      if (reply.ok) {
        probeRows = probeRows.filter((row) => row[0] !== args[0]);
        renderProbe();
        nameInput.value = '';
        await Promise.all([ctx.refresh('/bridge/plugins'), ctx.refresh('/bridge/mapping/list')]);
      }
    });
  });
  $('log-clear').addEventListener('click', () => clear(log));

  // Events from the live feed. A page that connects first gets the last 100 events again: only those after the
  // page opened (or, after a reconnection, after the newest one shown) go into the log.
  ctx.bus.on('events', (frame) => {
    const events = frame.events;
    if (events.length === 0) return;
    if (lastEvent !== null && events[events.length - 1][0] < lastEvent) { // the bridge restarted: new numbers
      lastEvent = null;
      since = Date.now() / 1000;
    }
    for (const [seq, time, address, args] of events) {
      if (lastEvent !== null ? seq <= lastEvent : time < since) continue;
      lastEvent = seq;
      if (address === '/bridge/event/plugin') {
        const [instance, port, state, plugin] = args;
        entry('event', `event ${address}: ${shortId(instance)} on port ${port} is ${state}${plugin ? ` (${plugin})` : ''}`).title = fmtClock(time);
      } else if (address === '/bridge/event/assigned') {
        const [instance, plugin, number, name] = args;
        entry('event', `event ${address}: ${shortId(instance)} carries ${plugin}, track ${number}${name ? ` “${name}”` : ''}`).title = fmtClock(time);
      }
    }
    if (frame.skipped) entry('note', `${frame.skipped} events were skipped (this page fell behind)`);
  });
  ctx.bus.on('/bridge/plugins', renderInstances);
  ctx.bus.on('/bridge/mapping/list', suggest);
  ctx.bus.on('access', () => {
    for (const button of document.querySelectorAll('#probe-body button')) button.disabled = !ctx.authorized;
    for (const input of [select, pluginInput, numberInput, nameInput, $('tone-frequency'), $('tone-level')]) input.disabled = !ctx.authorized;
  });
  renderInstances();
}
