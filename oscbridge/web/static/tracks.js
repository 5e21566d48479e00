// The Tracks view: the current project's mapping (/bridge/mapping/list), edited through /bridge/mapping/set and
// /bridge/mapping/clear. A row being edited keeps what the person typed while the live feed updates the others; an
// error reply is shown as the API words it.

import {$, el, clear, setData, setText, shortId} from './dom.js';

class TrackRow {
  constructor(pluginId, save) {
    this.pluginId = pluginId;
    this.number = el('input', {type: 'number', min: 1, max: 100000, class: 'number', 'aria-label': 'track number'});
    this.name = el('input', {type: 'text', maxlength: 255, class: 'name', 'aria-label': 'track name'});
    this.port = el('td', {class: 'num mono port'});
    this.instance = el('td', {class: 'mono instance'});
    this.save = el('button', {class: 'control small primary', type: 'button', text: 'Save', data: {action: 'save'}});
    this.revert = el('button', {class: 'control small', type: 'button', text: 'Revert', data: {action: 'revert'}});
    this.tr = el('tr', {data: {pluginId}},
      el('td', {class: 'num'}, this.number), el('td', {}, this.name), el('td', {class: 'mono', text: pluginId}),
      this.port, this.instance, el('td', {class: 'actions'}, this.save, this.revert));
    this.row = null;
    this.dirty = false;
    for (const input of [this.number, this.name]) {
      input.addEventListener('input', () => this.setDirty(true));
      input.addEventListener('keydown', (event) => {
        if (event.key === 'Enter') save(this);
        if (event.key === 'Escape') this.reset();
      });
    }
    this.save.addEventListener('click', () => save(this));
    this.revert.addEventListener('click', () => this.reset());
    this.setDirty(false);
  }

  setDirty(dirty) {
    this.dirty = dirty;
    this.tr.classList.toggle('dirty', dirty);
    this.save.hidden = !dirty;
    this.revert.hidden = !dirty;
  }

  update(row, authorized) {
    const [number, name, , port, instance] = row;
    const changed = !this.row || this.row[0] !== number || this.row[1] !== name || this.row[3] !== port || this.row[4] !== instance;
    this.row = row;
    // What the person is typing stays: a row being edited, or a field with the focus, is not overwritten.
    if (!this.dirty) {
      if (this.number.value !== String(number) && document.activeElement !== this.number) this.number.value = String(number);
      if (this.name.value !== name && document.activeElement !== this.name) this.name.value = name;
    }
    setText(this.port, port >= 0 ? port : '—');
    this.port.title = port >= 0 ? '' : 'no live plugin carries this track id';
    setText(this.instance, shortId(instance) || '—');
    this.instance.title = instance;
    setData(this.tr, 'track', number);
    setData(this.tr, 'name', name);
    this.number.disabled = !authorized;
    this.name.disabled = !authorized;
    // When the page showed this row's current values: tests measure how long a change takes to appear.
    if (changed) setData(this.tr, 'shownAt', Date.now());
  }

  reset() {
    this.setDirty(false);
    if (this.row) this.update(this.row, !this.number.disabled);
  }
}

export function setupTracks(ctx) {
  const body = $('tracks-body');
  const message = $('tracks-message');
  const rows = new Map(); // plugin id -> TrackRow
  let order = '';

  function say(kind, text, code = '') {
    clear(message);
    message.hidden = false;
    message.dataset.kind = kind;
    message.dataset.code = code;
    if (kind === 'error') message.append(el('strong', {text: `error ${code}: `}), el('span', {class: 'verbatim', text}));
    else message.append(el('span', {text}));
  }

  async function change(address, args, done, onOk = () => {}) {
    const reply = await ctx.request(address, args);
    if (!reply.ok) {
      say('error', reply.error.message, reply.error.code);
      return false;
    }
    say('ok', done(reply));
    onOk();
    await ctx.refresh('/bridge/mapping/list');
    return true;
  }

  async function save(view) {
    const number = Number(view.number.value);
    const name = view.name.value;
    await change('/bridge/mapping/set', [number, name, view.pluginId], () => `Track ${number} “${name}” is ${view.pluginId}.`,
                 () => view.setDirty(false));
  }

  function render() {
    const mapping = ctx.state.get('/bridge/mapping/list') || [];
    const present = new Set();
    for (const row of mapping) {
      let view = rows.get(row[2]);
      if (!view) rows.set(row[2], (view = new TrackRow(row[2], save)));
      view.update(row, ctx.authorized);
      present.add(row[2]);
    }
    for (const [pluginId, view] of rows) {
      if (!present.has(pluginId) && !view.dirty) {
        view.tr.remove();
        rows.delete(pluginId);
      }
    }
    const key = mapping.map((row) => row[2]).join(' ');
    if (key !== order) {
      body.append(...mapping.map((row) => rows.get(row[2]).tr));
      order = key;
    }
    $('tracks-empty').hidden = mapping.length > 0;
    $('tracks-table').hidden = mapping.length === 0;
    setText($('clear-question'), `Clear all ${mapping.length} mapping${mapping.length === 1 ? '' : 's'} of this project?`);
    // TR ids that a plugin carries and no track maps yet, offered in the Map form.
    const mapped = new Set(mapping.map((row) => row[2]));
    const free = (ctx.state.get('/bridge/plugins') || []).map((row) => row[3]).filter((id) => id && !mapped.has(id));
    const list = $('tr-ids');
    if (list.dataset.key !== free.join(' ')) {
      clear(list);
      for (const id of free) list.append(el('option', {value: id}));
      list.dataset.key = free.join(' ');
    }
    if (!$('map-number').value && document.activeElement !== $('map-number')) {
      $('map-number').placeholder = String(Math.max(0, ...mapping.map((row) => row[0])) + 1);
    }
  }

  $('map-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const numberText = $('map-number').value || $('map-number').placeholder;
    const number = Number(numberText);
    const name = $('map-name').value;
    const plugin = $('map-plugin').value.trim();
    await change('/bridge/mapping/set', [number, name, plugin], () => `Track ${number} “${name}” is ${plugin}.`,
                 () => ['map-number', 'map-name', 'map-plugin'].forEach((id) => { $(id).value = ''; }));
  });
  $('clear').addEventListener('click', () => {
    $('clear-confirm').hidden = false;
    $('clear').hidden = true;
    $('clear-no').focus();
  });
  const closeConfirm = () => {
    $('clear-confirm').hidden = true;
    $('clear').hidden = false;
  };
  $('clear-no').addEventListener('click', closeConfirm);
  $('clear-yes').addEventListener('click', async () => {
    closeConfirm();
    await change('/bridge/mapping/clear', [], (r) => `Cleared ${r.values[0]} mapping${r.values[0] === 1 ? '' : 's'}.`);
  });

  ctx.bus.on('/bridge/mapping/list', render);
  ctx.bus.on('/bridge/plugins', render);
  ctx.bus.on('access', (authorized) => {
    for (const id of ['map-number', 'map-name', 'map-plugin']) $(id).disabled = !authorized;
    render();
  });
  $('tracks-table').hidden = true;
}
