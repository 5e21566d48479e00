// The Conversation view: this session's messages (/bridge/message/recent with session only), the snapshots
// (/bridge/snapshot/list) and context search (/bridge/context/search) with the score and why each row matched.
// Asked every 2.5 s while the view is visible (and on demand); redrawn only when an answer changed.

import {$, el, clear, fmtIso, setText} from './dom.js';

const POLL_MS = 2500;
const MESSAGES = 100;
const SNAPSHOTS = 50;

export function setupConversation(ctx) {
  let timer = null;
  let shownMessages = '';
  let shownSnapshots = '';

  function showError(node, reply) {
    clear(node);
    node.append(el('li', {class: 'placeholder', data: {code: reply.error.code}, text: `error ${reply.error.code}: ${reply.error.message}`}));
  }

  async function poll() {
    if (!ctx.authorized) return;
    const [messages, snapshots] = await Promise.all([
      ctx.request('/bridge/message/recent', [MESSAGES, 1]),
      ctx.request('/bridge/snapshot/list', [SNAPSHOTS]),
    ]);
    const list = $('messages');
    if (!messages.ok) showError(list, messages);
    else if (JSON.stringify(messages.rows) !== shownMessages) {
      shownMessages = JSON.stringify(messages.rows);
      clear(list);
      if (messages.rows.length === 0) list.append(el('li', {class: 'placeholder', text: 'Nothing said in this session yet.'}));
      for (const [id, role, content, model, createdAt, keyDecision] of [...messages.rows].reverse()) {
        list.append(el('li', {class: `message ${role}`, data: {id, role, keyDecision: keyDecision ? 1 : 0}},
          el('div', {class: 'meta'}, el('span', {class: 'role', text: role}), model ? el('span', {class: 'model', text: model}) : null,
            keyDecision ? el('span', {class: 'badge decision', text: 'key decision'}) : null,
            el('time', {text: fmtIso(createdAt), title: createdAt})),
          el('div', {class: 'text', text: content})));
      }
    }
    const body = $('snapshots-body');
    if (!snapshots.ok) {
      clear(body);
      body.append(el('tr', {class: 'placeholder'}, el('td', {colspan: 4, text: `error ${snapshots.error.code}: ${snapshots.error.message}`})));
    } else if (JSON.stringify(snapshots.rows) !== shownSnapshots) {
      shownSnapshots = JSON.stringify(snapshots.rows);
      clear(body);
      if (snapshots.rows.length === 0) body.append(el('tr', {class: 'placeholder'}, el('td', {colspan: 4, text: 'No snapshots yet.'})));
      for (const [id, name, description, createdAt, , count] of snapshots.rows) {
        body.append(el('tr', {data: {id}}, el('td', {text: name}), el('td', {class: 'muted', text: description}),
          el('td', {class: 'num', text: count}), el('td', {text: fmtIso(createdAt), title: createdAt})));
      }
    }
  }

  function schedule() {
    clearTimeout(timer);
    timer = null;
    if (ctx.view !== 'conversation' || !ctx.authorized) return;
    poll().finally(() => {
      if (ctx.view === 'conversation' && !document.hidden) timer = setTimeout(schedule, POLL_MS);
    });
  }

  $('conversation-refresh').addEventListener('click', schedule);
  $('search-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const query = $('search-query').value.trim();
    const message = $('search-message');
    const body = $('search-body');
    if (!query) return;
    $('search').disabled = true;
    const reply = await ctx.request('/bridge/context/search', [query, 20]);
    $('search').disabled = false;
    clear(body);
    message.hidden = reply.ok;
    if (!reply.ok) {
      message.dataset.code = reply.error.code;
      setText(message, `error ${reply.error.code}: ${reply.error.message}`);
      return;
    }
    if (reply.rows.length === 0) body.append(el('tr', {class: 'placeholder'}, el('td', {colspan: 5, text: 'Nothing matched.'})));
    for (const [id, role, content, createdAt, score, why] of reply.rows) {
      const reasons = el('td', {class: 'why'});
      for (const reason of why.split('+')) reasons.append(el('span', {class: 'badge', data: {why: reason}, text: reason}));
      body.append(el('tr', {data: {id}}, el('td', {class: 'num mono', text: score.toFixed(3)}), reasons, el('td', {text: role}),
        el('td', {class: 'text', title: content, text: content.length > 400 ? content.slice(0, 400) + '…' : content}),
        el('td', {text: fmtIso(createdAt), title: createdAt})));
    }
  });

  ctx.bus.on('view', schedule);
  ctx.bus.on('access', schedule);
  document.addEventListener('visibilitychange', schedule);
}
