// The Plugins view: one row per instance (/bridge/plugins) with its track (/bridge/mapping/list) and a level meter
// per track from the `levels` frames.
//
// Made for 128 tracks at the plugins' 24 updates a second: rows are created once per instance and updated in place;
// the frames only store numbers, and one requestAnimationFrame callback draws the meters of the rows on screen while
// the view is visible. The sparklines of the last minute are redrawn twice a second.

import {$, el, setData, setText, fmtDb, fmtSeconds, shortId} from './dom.js';

const METER_FLOOR = -60; // dBFS at the left end of a meter
const BAND_FLOOR = -72; // dB at the bottom of a band bar
const SILENCE = -100; // the plugins' own floor
const SILENT_BANDS = [SILENCE, SILENCE, SILENCE, SILENCE];
const PEAK_SLOTS = 8; // peak hold: the highest RMS of the last 8 × 250 ms = 2 s
const SLOT_MS = 250;
const HISTORY_SLOTS = 120; // the last minute, one point per 500 ms (the highest RMS in it)
const HISTORY_EVERY = 2; // slots of 250 ms per history point
const TEXT_MS = 100; // the data-rms and title attributes, for scripts and tests
// Sizes in CSS pixels (style.css gives the canvases the same), colours as in style.css.
const METER_MIN = 200; // the meter takes the width of its column, at least this
const METER_HEIGHT = 12;
const BAND_BAR = 7;
const BAND_GAP = 2;
const BANDS_WIDTH = 4 * BAND_BAR + 3 * BAND_GAP;
const BANDS_HEIGHT = 20;
const SPARK_WIDTH = 180;
const SPARK_HEIGHT = 24;
const TEXT_WIDTH = 56; // the dBFS number right of the meter, in the same canvas
const TEXT_FONT = '12.5px ui-monospace, "SF Mono", Menlo, Consolas, "DejaVu Sans Mono", monospace';
const TEXT_COLOUR = '#e3e7ec';
const TRACK_COLOUR = '#0b0d0f';
const PEAK_COLOUR = '#f8fafc';
const BAND_COLOURS = ['#f59e0b', '#a3e635', '#38bdf8', '#c084fc']; // low, low-mid, high-mid, high
// -60..0 dBFS: green to -18, yellow to -6, red above.
const METER_COLOURS = [[0, '#16a34a'], [0.6, '#4ade80'], [0.7, '#a3e635'], [0.72, '#facc15'], [0.88, '#f59e0b'],
                       [0.9, '#ef4444'], [1, '#f87171']];
const STATE_ORDER = {identified: 0, bound: 1, assigned: 2, requesting: 3, failed: 4, gone: 5};

const fraction = (db, floor) => (db <= floor ? 0 : db >= 0 ? 1 : (db - floor) / -floor);

// What is known of one track id's levels, kept whether or not a row shows it.
class Level {
  constructor() {
    this.rms = SILENCE;
    this.bands = [SILENCE, SILENCE, SILENCE, SILENCE];
    this.peaks = new Float32Array(PEAK_SLOTS).fill(SILENCE);
    this.history = new Float32Array(HISTORY_SLOTS).fill(NaN); // NaN: before this page saw the track
  }

  get peak() {
    let best = SILENCE;
    for (const value of this.peaks) if (value > best) best = value;
    return best;
  }
}

class Meters {
  constructor() {
    this.levels = new Map(); // plugin id -> Level
    this.peakSlot = 0;
    this.historySlot = 0;
    this.ticks = 0;
  }

  // A `levels` frame: every track the bridge has levels for. A track missing from it has none any more.
  receive(rows) {
    const seen = new Set();
    for (const [pluginId, rms, low, lowMid, highMid, high] of rows) {
      let level = this.levels.get(pluginId);
      if (!level) this.levels.set(pluginId, (level = new Level()));
      level.rms = rms ?? SILENCE;
      level.bands[0] = low ?? SILENCE;
      level.bands[1] = lowMid ?? SILENCE;
      level.bands[2] = highMid ?? SILENCE;
      level.bands[3] = high ?? SILENCE;
      if (level.rms > level.peaks[this.peakSlot]) level.peaks[this.peakSlot] = level.rms;
      if (!(level.history[this.historySlot] >= level.rms)) level.history[this.historySlot] = level.rms; // NaN too
      seen.add(pluginId);
    }
    for (const [pluginId, level] of this.levels) {
      if (!seen.has(pluginId)) {
        level.rms = SILENCE;
        level.bands.fill(SILENCE);
      }
    }
  }

  // Every 250 ms: a new peak slot, and every 500 ms a new history point, each starting at the current level (a
  // track whose level stands still sends nothing new, and its history must still go on).
  tick() {
    this.ticks += 1;
    this.peakSlot = (this.peakSlot + 1) % PEAK_SLOTS;
    const newPoint = this.ticks % HISTORY_EVERY === 0;
    if (newPoint) this.historySlot = (this.historySlot + 1) % HISTORY_SLOTS;
    for (const level of this.levels.values()) {
      level.peaks[this.peakSlot] = level.rms;
      if (newPoint) level.history[this.historySlot] = level.rms;
    }
    return newPoint;
  }
}

// A canvas drawn at the screen's pixel density; its 2D context works in CSS pixels.
function sharp(canvas, width, height) {
  const ratio = window.devicePixelRatio || 1;
  canvas.width = width * ratio;
  canvas.height = height * ratio;
  const context = canvas.getContext('2d');
  context.scale(ratio, ratio);
  return context;
}

// One instance's row. Keeps its cells and the values last drawn, so an update touches only what changed. The meter,
// its number and the bands are canvases: drawing them changes no element, so the browser lays out and repaints
// nothing else. Measured with 128 simulated tracks in headless Chromium (software rendering) on a loaded 2-core
// machine: meters made of elements moved by CSS transforms ran at 4-10 frames a second (layerisation and paint of
// some 1,400 layers), the same with left/height at 19-29; canvases, drawn only for the rows on screen, at 50-60
// with no task over 50 ms, the main thread busy 35-60 % of the time (mostly committing the redrawn canvases; the
// page's script is about 5 %).
class PluginRow {
  constructor(template, instanceId) {
    // Imported, not cloned: a canvas still owned by the template's inert document ignores the font it is given.
    this.tr = document.importNode(template.content.firstElementChild, true);
    const q = (selector) => this.tr.querySelector(selector);
    this.cells = {track: q('.track'), name: q('.name'), tr: q('.tr'), port: q('.port'), state: q('.state'),
                  heard: q('.heard'), instance: q('.instance')};
    this.meter = q('canvas.meter');
    this.bands = q('canvas.bands');
    this.canvas = q('canvas.spark');
    this.instanceId = instanceId;
    this.pluginId = '';
    this.drawn = {rms: NaN, peak: NaN, bands: [NaN, NaN, NaN, NaN], text: ''};
    this.onScreen = false; // rows scrolled out of sight are not drawn (IntersectionObserver)
    this.tr.dataset.instance = instanceId;
    this.cells.instance.textContent = shortId(instanceId);
    this.cells.instance.title = instanceId;
    this.resize(meterWidth);
    this.bandsContext = sharp(this.bands, BANDS_WIDTH, BANDS_HEIGHT);
    this.context = sharp(this.canvas, SPARK_WIDTH, SPARK_HEIGHT);
  }

  // The meter follows the width of its column (the number after it keeps TEXT_WIDTH).
  resize(width) {
    this.width = width;
    this.meterContext = sharp(this.meter, width + TEXT_WIDTH, METER_HEIGHT + 4);
    this.meterContext.font = TEXT_FONT;
    this.meterContext.textAlign = 'right';
    this.meterContext.textBaseline = 'middle';
    this.gradient = this.meterContext.createLinearGradient(0, 0, width, 0);
    for (const [at, colour] of METER_COLOURS) this.gradient.addColorStop(at, colour);
    this.drawn.rms = NaN;
    this.drawn.text = null;
  }

  update([, port, state, pluginId, seconds], track) {
    this.pluginId = pluginId;
    setData(this.tr, 'pluginId', pluginId);
    setData(this.tr, 'state', state);
    setData(this.tr, 'port', port);
    setData(this.tr, 'track', track ? track[0] : '');
    setText(this.cells.track, track ? track[0] : '');
    setText(this.cells.name, track ? track[1] : pluginId ? 'no track mapped' : state === 'gone' ? '' : 'no track id yet');
    this.cells.name.classList.toggle('muted', !track);
    setText(this.cells.tr, pluginId || '—');
    setText(this.cells.port, port >= 0 ? port : '—');
    setText(this.cells.state, state);
    setData(this.cells.state, 'state', state);
    setText(this.cells.heard, fmtSeconds(seconds));
  }

  // Draws the meter and the bands for `level` (or empty ones); does nothing when nothing changed.
  draw(level, withText) {
    const rms = level ? level.rms : SILENCE;
    const peak = level ? level.peak : SILENCE;
    const g = this.meterContext;
    if (rms !== this.drawn.rms || peak !== this.drawn.peak) {
      g.fillStyle = TRACK_COLOUR;
      const width = this.width;
      g.fillRect(0, 2, width, METER_HEIGHT);
      g.fillStyle = this.gradient;
      g.fillRect(0, 2, Math.round(fraction(rms, METER_FLOOR) * width), METER_HEIGHT);
      const at = fraction(peak, METER_FLOOR);
      if (at > 0) {
        g.fillStyle = PEAK_COLOUR;
        g.fillRect(Math.max(0, Math.round(at * width) - 2), 2, 2, METER_HEIGHT);
      }
      this.drawn.rms = rms;
      this.drawn.peak = peak;
    }
    const bands = level ? level.bands : SILENT_BANDS;
    if (bands.some((value, i) => value !== this.drawn.bands[i])) {
      const g = this.bandsContext;
      g.clearRect(0, 0, BANDS_WIDTH, BANDS_HEIGHT);
      bands.forEach((value, i) => {
        const x = i * (BAND_BAR + BAND_GAP);
        const lit = Math.round(fraction(value, BAND_FLOOR) * BANDS_HEIGHT);
        g.fillStyle = TRACK_COLOUR;
        g.fillRect(x, 0, BAND_BAR, BANDS_HEIGHT - lit);
        g.fillStyle = BAND_COLOURS[i];
        g.fillRect(x, BANDS_HEIGHT - lit, BAND_BAR, lit);
        this.drawn.bands[i] = value;
      });
    }
    // The number is the peak mark's, which holds still long enough to be read (the RMS itself moves with every
    // beat). It is drawn, not written: text in the document would be laid out and the whole table repainted.
    const text = level ? fmtDb(peak) : '';
    if (text !== this.drawn.text) {
      g.clearRect(this.width, 0, TEXT_WIDTH, METER_HEIGHT + 4);
      g.fillStyle = TEXT_COLOUR;
      g.fillText(text, this.width + TEXT_WIDTH - 2, METER_HEIGHT / 2 + 2);
      this.drawn.text = text;
    }
    if (withText) {
      // For scripts and tests: the numbers shown, rounded as the bridge sends them.
      setData(this.meter, 'rms', level ? rms.toFixed(1) : '');
      setData(this.meter, 'peak', level ? peak.toFixed(1) : '');
      setData(this.bands, 'bands', level ? bands.map((value) => value.toFixed(1)).join(' ') : '');
      this.meter.title = level ? `RMS ${fmtDb(rms)} dBFS, peak ${fmtDb(peak)} dBFS` : '';
      this.bands.title = level ? `bands ${bands.map(fmtDb).join(' / ')} dB` : '';
    }
  }

  // The last minute as a filled line, oldest on the left.
  sparkline(level, meters) {
    const g = this.context;
    const width = SPARK_WIDTH;
    const height = SPARK_HEIGHT;
    g.clearRect(0, 0, width, height);
    if (!level) return;
    let first = 0; // the points before the page saw this track are not drawn
    while (first < HISTORY_SLOTS && Number.isNaN(level.history[(meters.historySlot + 1 + first) % HISTORY_SLOTS])) first += 1;
    if (first === HISTORY_SLOTS) return;
    const x = (i) => (i * width) / (HISTORY_SLOTS - 1);
    g.beginPath();
    g.moveTo(x(first), height);
    for (let i = first; i < HISTORY_SLOTS; i += 1) {
      const value = level.history[(meters.historySlot + 1 + i) % HISTORY_SLOTS];
      g.lineTo(x(i), height - 1 - fraction(value, METER_FLOOR) * (height - 2));
    }
    g.lineTo(width, height);
    g.closePath();
    g.fillStyle = 'rgba(74, 222, 128, 0.28)';
    g.fill();
    g.strokeStyle = 'rgba(134, 239, 172, 0.9)';
    g.lineWidth = 1;
    g.stroke();
  }
}

let meterWidth = METER_MIN;

export function setupPlugins(ctx) {
  const body = $('plugins-body');
  const template = $('plugin-row');
  const meters = new Meters();
  const rows = new Map(); // instance id -> PluginRow
  let order = '';
  let scheduled = false;
  let lastText = 0;
  let visible = ctx.view === 'plugins';
  // Only the rows on screen are drawn: with 128 tracks most are scrolled away, and painting them costs as much as
  // painting the visible ones.
  const views = new WeakMap(); // tr -> PluginRow
  const sight = new IntersectionObserver((entries) => {
    for (const entry of entries) {
      const view = views.get(entry.target);
      if (!view) continue;
      view.onScreen = entry.isIntersecting;
      if (view.onScreen && visible) view.sparkline(view.pluginId ? meters.levels.get(view.pluginId) : undefined, meters);
    }
    schedule();
  }, {rootMargin: '64px'});
  // The meters fill the Level column: its header's width is theirs (the same column, the same padding).
  new ResizeObserver(([entry]) => {
    const width = Math.max(METER_MIN, Math.floor(entry.contentRect.width) - TEXT_WIDTH);
    if (width === meterWidth) return;
    meterWidth = width;
    for (const view of rows.values()) view.resize(width);
    schedule();
  }).observe(document.querySelector('#plugins-table th.meter-col'));

  function tracksByPlugin() {
    const map = new Map();
    for (const row of ctx.state.get('/bridge/mapping/list') || []) map.set(row[2], row);
    return map;
  }

  function render() {
    const plugins = ctx.state.get('/bridge/plugins') || [];
    const tracks = tracksByPlugin();
    const present = new Set();
    for (const row of plugins) {
      let view = rows.get(row[0]);
      if (!view) {
        view = new PluginRow(template, row[0]);
        rows.set(row[0], view);
        views.set(view.tr, view);
        sight.observe(view.tr);
      }
      view.update(row, row[3] ? tracks.get(row[3]) : undefined);
      present.add(row[0]);
    }
    for (const [id, view] of rows) {
      if (!present.has(id)) {
        sight.unobserve(view.tr);
        view.tr.remove();
        rows.delete(id);
      }
    }
    // Track order, then the instances without a track by state and port. Nodes move only when the order changes.
    const sorted = [...rows.values()].sort((a, b) => {
      const ta = a.tr.dataset.track ? Number(a.tr.dataset.track) : Infinity;
      const tb = b.tr.dataset.track ? Number(b.tr.dataset.track) : Infinity;
      if (ta !== tb) return ta - tb;
      const sa = STATE_ORDER[a.tr.dataset.state] ?? 9;
      const sb = STATE_ORDER[b.tr.dataset.state] ?? 9;
      if (sa !== sb) return sa - sb;
      return Number(a.tr.dataset.port) - Number(b.tr.dataset.port) || a.instanceId.localeCompare(b.instanceId);
    });
    const key = sorted.map((view) => view.instanceId).join(' ');
    if (key !== order) {
      body.append(...sorted.map((view) => view.tr));
      order = key;
    }
    $('plugins-empty').hidden = rows.size > 0;
    $('plugins-table').hidden = rows.size === 0;
    schedule();
  }

  function frame(now) {
    scheduled = false;
    if (!visible) return;
    const withText = now - lastText >= TEXT_MS;
    if (withText) lastText = now;
    for (const view of rows.values()) {
      if (view.onScreen) view.draw(view.pluginId ? meters.levels.get(view.pluginId) : undefined, withText);
    }
    if (!withText) schedule(); // the text is due soon
  }

  function schedule() {
    if (!scheduled && visible) {
      scheduled = true;
      requestAnimationFrame(frame);
    }
  }

  function sparklines() {
    if (!visible) return;
    for (const view of rows.values()) {
      if (view.onScreen) view.sparkline(view.pluginId ? meters.levels.get(view.pluginId) : undefined, meters);
    }
  }

  ctx.bus.on('levels', (frameData) => {
    meters.receive(frameData.rows);
    schedule();
  });
  ctx.bus.on('/bridge/plugins', render);
  ctx.bus.on('/bridge/mapping/list', render);
  ctx.bus.on('view', (view) => {
    visible = view === 'plugins';
    if (visible) {
      sparklines();
      schedule();
    }
  });
  setInterval(() => {
    if (meters.tick()) sparklines();
    schedule();
  }, SLOT_MS);

  // The scale above the meters: marks at these dBFS values.
  const scale = $('meter-scale');
  for (const db of [-48, -36, -24, -12, -6, 0]) {
    const mark = el('span', {text: db === 0 ? '0' : String(db).replace('-', '−')});
    mark.style.left = `${fraction(db, METER_FLOOR) * 100}%`;
    scale.append(mark);
  }
  $('plugins-table').hidden = true;
}
