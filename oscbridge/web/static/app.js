// Mission Control: the bridge's web page (docs/web.md). Plain modules, no build step, nothing from elsewhere.
//
// The page reads and changes state only through the /bridge/* requests (POST /api/request) and the live frames of
// /api/live, so it shows exactly what an OSC client would get. app.js owns the token, the tabs, the header and the
// live connection; each view is a module that subscribes to the frames it needs.

import {$, setText} from './dom.js';
import {Bus, Live, forgetToken, request, session, takeToken} from './net.js';
import {setupPlugins} from './plugins.js';
import {setupCalibration} from './calibration.js';
import {setupTracks} from './tracks.js';
import {setupTraffic} from './traffic.js';
import {setupConversation} from './conversation.js';
import {setupHealth} from './health.js';

const VIEWS = ['plugins', 'calibration', 'tracks', 'traffic', 'conversation', 'health'];

const ctx = {
  token: takeToken(),
  authorized: false,
  bus: new Bus(),
  session: null,
  live: null,
  view: 'plugins',
  // The latest answers of the state requests the feed sends: /bridge/plugins rows, /bridge/mapping/list rows, ...
  state: new Map(),
  request(address, args = []) {
    return request(ctx.token, address, args);
  },
  // After a change the page asks again at once instead of waiting up to half a second for the next state frame.
  async refresh(address) {
    const reply = await ctx.request(address);
    if (reply.ok) receive({type: 'state', address, rows: reply.rows, values: reply.values});
  },
};

function receive(frame) {
  if (frame.type === 'state') {
    const value = frame.rows !== undefined ? frame.rows : frame.values;
    ctx.state.set(frame.address, value);
    ctx.bus.emit(frame.address, value);
  } else if (frame.type === 'hello') {
    // A (re)connection: the bridge may have restarted with another key, or been down when the page loaded.
    if (ctx.token && !frame.authorized) dropToken('the bridge did not accept the key this page holds');
    else if (frame.authorized !== ctx.authorized) applyAccess(frame.authorized);
    if (!ctx.session) loadSession().catch(() => {}); // the Health view shows '—' until it answers
  } else {
    ctx.bus.emit(frame.type, frame);
  }
}

// ---- access -------------------------------------------------------------------------------------------------

function applyAccess(authorized, reason = '') {
  ctx.authorized = authorized;
  document.body.dataset.authorized = String(authorized);
  $('readonly-banner').hidden = authorized;
  setText($('readonly-reason'), reason);
  const chip = $('access');
  chip.dataset.access = authorized ? 'control' : 'read-only';
  setText(chip, authorized ? 'control' : 'read-only');
  chip.title = authorized ? 'this page holds the key: it may change the bridge' : 'open the page with `oscbridge ui` to change anything';
  for (const node of document.querySelectorAll('button[data-needs-token]')) node.disabled = !authorized;
  for (const tab of document.querySelectorAll('[data-key-tab]')) {
    tab.classList.toggle('locked-tab', !authorized);
    tab.title = authorized ? '' : 'needs the key: open the page with `oscbridge ui`';
  }
  for (const node of document.querySelectorAll('[data-locked]')) node.hidden = authorized;
  for (const node of document.querySelectorAll('[data-unlocked]')) node.hidden = !authorized;
  ctx.bus.emit('access', authorized);
}

function dropToken(reason) {
  forgetToken();
  ctx.token = '';
  if (ctx.live) ctx.live.token = '';
  applyAccess(false, `(${reason}; was the key changed? Open the page again with \`oscbridge ui\`.)`);
}

// ---- tabs ---------------------------------------------------------------------------------------------------

function show(view) {
  if (!VIEWS.includes(view)) view = 'plugins';
  ctx.view = view;
  for (const section of document.querySelectorAll('section.view')) section.hidden = section.dataset.view !== view;
  for (const tab of document.querySelectorAll('#tabs [role=tab]')) {
    tab.setAttribute('aria-selected', String(tab.dataset.view === view));
  }
  if (location.hash !== '#' + view) history.replaceState(null, '', location.pathname + location.search + '#' + view);
  ctx.bus.emit('view', view);
}

// ---- header -------------------------------------------------------------------------------------------------

function connectionState(state, detail) {
  const chip = $('connection');
  chip.dataset.state = state;
  if (state === 'live') setText(chip, 'live');
  else if (state === 'connecting') setText(chip, 'connecting…');
  else setText(chip, `offline · retrying in ${detail.seconds < 1 ? detail.seconds.toFixed(1) : detail.seconds} s`);
  chip.title = state === 'waiting' && detail.why ? detail.why : '';
  ctx.bus.emit('connection', state);
}

function counts() {
  const plugins = ctx.state.get('/bridge/plugins') || [];
  const mapping = ctx.state.get('/bridge/mapping/list') || [];
  const live = plugins.filter((row) => row[2] !== 'gone').length;
  const chip = $('counts');
  chip.dataset.plugins = String(live);
  setText(chip, `${live} plugin${live === 1 ? '' : 's'} · ${mapping.length} track${mapping.length === 1 ? '' : 's'}`);
}

// Versions and where OSC listens (/api/session), for the Health view.
async function loadSession() {
  ctx.session = await session(ctx.token);
  ctx.bus.emit('session', ctx.session);
}

async function start() {
  for (const tab of document.querySelectorAll('#tabs [role=tab]')) tab.addEventListener('click', () => show(tab.dataset.view));
  ctx.bus.on('/bridge/project/current', (values) => setText($('project'), values[0] || '—'));
  ctx.bus.on('/bridge/plugins', counts);
  ctx.bus.on('/bridge/mapping/list', counts);

  setupPlugins(ctx);
  setupCalibration(ctx);
  setupTracks(ctx);
  setupTraffic(ctx);
  setupConversation(ctx);
  setupHealth(ctx);

  // Nothing may be changed until the bridge has said whether this page's key is right.
  for (const node of document.querySelectorAll('button[data-needs-token]')) node.disabled = true;
  show(location.hash.slice(1));
  try {
    await loadSession();
    if (ctx.token && !ctx.session.authorized) dropToken('the bridge did not accept the key this page holds');
    else applyAccess(ctx.session.authorized);
  } catch (error) {
    applyAccess(false, `(the bridge did not answer: ${error.message})`);
  }
  ctx.live = new Live(ctx.token, receive, connectionState);
  ctx.live.connect();
  document.body.dataset.ready = 'true';
}

start();
