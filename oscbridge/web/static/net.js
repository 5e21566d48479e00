// Talking to the bridge: the token, POST /api/request, and the live WebSocket (docs/web.md).

const TOKEN_KEY = 'oscbridge.token';

// `oscbridge ui` opens the page as http://127.0.0.1:8998/#token=... The fragment never leaves the browser; the
// token is kept in this tab's session storage and taken out of the address bar, so it is not bookmarked, shared
// with a screenshot of the URL, or kept in the history.
export function takeToken() {
  const params = new URLSearchParams(location.hash.slice(1));
  const fromUrl = params.get('token');
  if (fromUrl) {
    sessionStorage.setItem(TOKEN_KEY, fromUrl);
    params.delete('token');
    const rest = params.toString();
    history.replaceState(null, '', location.pathname + location.search + (rest ? '#' + rest : ''));
  }
  return sessionStorage.getItem(TOKEN_KEY) || '';
}

export function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

// One /bridge/* request. Resolves to {ok: true, values} or {ok: true, rows}, or {ok: false, error: {code, message},
// status}: the API's own code and words, which the views show as they are.
export async function request(token, address, args = []) {
  const headers = {'Content-Type': 'application/json'};
  if (token) headers.Authorization = `Bearer ${token}`;
  let response;
  try {
    response = await fetch('/api/request', {method: 'POST', headers, body: JSON.stringify({address, args}),
                                             cache: 'no-store'});
  } catch (error) {
    return {ok: false, status: 0, error: {code: 'unreachable', message: `the bridge did not answer (${error.message})`}};
  }
  try {
    const body = await response.json();
    return {...body, status: response.status};
  } catch {
    return {ok: false, status: response.status,
            error: {code: `http_${response.status}`, message: `the bridge answered HTTP ${response.status} without JSON`}};
  }
}

export async function session(token) {
  const headers = token ? {Authorization: `Bearer ${token}`} : {};
  const response = await fetch('/api/session', {headers, cache: 'no-store'});
  if (!response.ok) throw new Error(`HTTP ${response.status}`);
  return response.json();
}

// The live frames. Reconnects by itself, waiting 0.5 s, 1 s, 2 s ... up to 10 s between tries (a bridge being
// restarted by launchd is back within a few seconds; a page left open on a stopped bridge costs one try every 10 s).
export class Live {
  constructor(token, onFrame, onState) {
    this.token = token;
    this.onFrame = onFrame;
    this.onState = onState; // (state, detail): connecting, live, waiting
    this.delay = 0.5;
    this.socket = null;
    this.timer = null;
    this.frames = 0;
    this.connects = 0;
  }

  connect() {
    clearTimeout(this.timer);
    this.onState('connecting', '');
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const socket = new WebSocket(`${scheme}://${location.host}/api/live`);
    this.socket = socket;
    socket.onopen = () => socket.send(JSON.stringify({token: this.token}));
    socket.onmessage = (event) => {
      let frames;
      try {
        frames = JSON.parse(event.data);
      } catch {
        return;
      }
      for (const frame of frames) {
        if (frame.type === 'hello') {
          this.delay = 0.5;
          this.connects += 1;
          this.onState('live', '');
        }
        this.frames += 1;
        this.onFrame(frame);
      }
    };
    socket.onclose = (event) => {
      if (this.socket !== socket) return;
      const why = event.code === 1013 ? 'the page fell behind' : event.reason || '';
      this.onState('waiting', {seconds: this.delay, why});
      this.timer = setTimeout(() => this.connect(), this.delay * 1000);
      this.delay = Math.min(10, this.delay * 2);
    };
  }
}

// A minimal publish/subscribe between the live feed and the views.
export class Bus {
  constructor() {
    this.handlers = new Map();
  }

  on(topic, handler) {
    if (!this.handlers.has(topic)) this.handlers.set(topic, []);
    this.handlers.get(topic).push(handler);
  }

  emit(topic, value) {
    for (const handler of this.handlers.get(topic) || []) {
      try {
        handler(value);
      } catch (error) {
        console.error(`handler of ${topic} failed`, error); // one broken view must not stop the others
      }
    }
  }
}
