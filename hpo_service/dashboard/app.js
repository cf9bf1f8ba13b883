/* hpo-service dashboard: core (API calls, DOM helpers, formatting, live events, routing).
 * Plain scripts sharing the HPO namespace; pages register themselves in HPO.pages. */
'use strict';

const HPO = (window.HPO = { pages: {}, state: {} });

/* The chart library loads asynchronously (index.html), so a page's API calls do not wait for it
 * to be parsed; anything that draws a chart awaits this first. */
HPO.chartsReady = new Promise((resolve, reject) => {
  if (window.echarts) { resolve(); return; }
  const script = document.getElementById('echarts-lib');
  script.addEventListener('load', () => resolve());
  script.addEventListener('error', () => reject(new Error('The chart library could not be loaded; reload the page.')));
});
HPO.chartsReady.catch(() => {}); // reported by the loaders that await it

/* ---------- API ---------- */

class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}
HPO.ApiError = ApiError;

HPO.api = async function api(path, options = {}) {
  let response;
  try {
    response = await fetch('/api/v1' + path, {
      credentials: 'same-origin', headers: { Accept: 'application/json' }, ...options,
    });
  } catch (error) {
    throw new ApiError(0, 'unreachable', 'Cannot reach the server: ' + error.message);
  }
  let body = null;
  try { body = await response.json(); } catch (_) { body = null; }
  if (response.status === 401) HPO.signIn(body && body.message);
  if (!response.ok) {
    const message = body && body.message ? body.message : `${response.status} ${response.statusText}`;
    throw new ApiError(response.status, body && body.error ? body.error : 'http_' + response.status, message);
  }
  return body;
};

HPO.query = function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value === null || value === undefined || value === '') continue;
    if (Array.isArray(value)) value.forEach((v) => search.append(key, v));
    else search.append(key, value);
  }
  const text = search.toString();
  return text ? '?' + text : '';
};

/* ---------- DOM ---------- */

HPO.h = function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
    else if (key === 'class') el.className = value;
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else el.setAttribute(key, value === true ? '' : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
};
const h = HPO.h;

HPO.card = (title, tools, ...body) =>
  h('section', { class: 'card' }, h('header', {}, h('h2', {}, title), h('span', { class: 'spacer' }), tools),
    h('div', { class: 'body' }, body));

HPO.errorBox = (error) => h('div', { class: 'message error', role: 'alert' },
  error instanceof ApiError && error.status ? `${error.message} (HTTP ${error.status})` : String(error.message || error));

HPO.empty = (title, hint) => h('div', { class: 'empty' }, h('strong', {}, title), hint ? h('span', {}, hint) : null);

HPO.badge = (state) => h('span', { class: 'badge ' + state }, state);

HPO.fill = function fill(el, ...children) { el.replaceChildren(...children.flat(Infinity).filter((c) => c != null)); };

/* Runs a loader into a container; shows its error as a message instead of throwing. */
HPO.load = async function load(el, loader) {
  try {
    await loader();
  } catch (error) {
    if (!(error instanceof ApiError)) console.warn(error); // eslint-disable-line no-console
    HPO.fill(el, HPO.errorBox(error));
  }
};

/* ---------- formatting ---------- */

/* Intl formatters are costly to build: one per kind, reused (a table formats hundreds of numbers). */
const formatters = new Map();
const formatter = (key, make) => { if (!formatters.has(key)) formatters.set(key, make()); return formatters.get(key); };

const fmt = (HPO.fmt = {
  num(v, digits = 4) {
    if (v === null || v === undefined || Number.isNaN(v)) return '—';
    if (!Number.isFinite(v)) return v > 0 ? '∞' : '−∞';
    const a = Math.abs(v);
    if (a !== 0 && (a >= 1e7 || a < 1e-3)) return v.toExponential(Math.max(0, digits - 2));
    return formatter('n' + digits, () => new Intl.NumberFormat('en-US', { maximumSignificantDigits: digits })).format(v);
  },
  int(v) { return v === null || v === undefined ? '—' : formatter('int', () => new Intl.NumberFormat('en-US')).format(Math.round(v)); },
  budget(v) { return v === null || v === undefined ? '—' : fmt.num(v, 5); },
  param(v) {
    if (typeof v === 'number') return fmt.num(v, 4);
    if (v === null || v === undefined) return '—';
    return String(v);
  },
  time(iso) {
    if (!iso) return '—';
    return formatter('time', () => new Intl.DateTimeFormat('en-GB', {
      year: 'numeric', month: 'short', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit',
    })).format(new Date(iso));
  },
  clock(iso) { return iso ? formatter('clock', () => new Intl.DateTimeFormat('en-GB', { timeStyle: 'medium' })).format(new Date(iso)) : '—'; },
  age(seconds) {
    if (seconds === null || seconds === undefined) return '—';
    const s = Math.max(0, seconds);
    if (s < 60) return `${Math.round(s)} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
    return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
  },
  ago(iso) { return iso ? fmt.age((Date.now() - new Date(iso).getTime()) / 1000) + ' ago' : '—'; },
});

HPO.stateOrder = ['running', 'pending', 'paused', 'completed', 'stopped', 'failed'];
const stateColors = new Map();  // per theme: reading computed styles in a loop forces style recalculations
HPO.stateColor = (state) => {
  const key = HPO.theme() + '/' + state;
  if (!stateColors.has(key)) {
    stateColors.set(key, getComputedStyle(document.documentElement).getPropertyValue('--s-' + state).trim() || '#888');
  }
  return stateColors.get(key);
};

HPO.stateBar = function stateBar(counts) {
  const total = Object.values(counts).reduce((a, b) => a + b, 0);
  const bar = h('div', { class: 'statebar', title: HPO.stateOrder.filter((s) => counts[s]).map((s) => `${s}: ${counts[s]}`).join(', ') });
  for (const state of HPO.stateOrder) {
    if (!counts[state]) continue;
    const part = h('span', {});
    part.style.width = (100 * counts[state]) / total + '%';
    part.style.background = HPO.stateColor(state);
    bar.append(part);
  }
  return h('div', {}, h('div', { class: 'counts' },
    total ? HPO.stateOrder.filter((s) => counts[s]).map((s) => `${fmt.int(counts[s])} ${s}`).join(' · ') : 'no trials yet'),
  total ? bar : null);
};

/* ---------- live events ---------- */

/* Subscribes to a server-sent event stream; returns a function that closes it.
 * The server ends each stream after a while and the browser reconnects (Last-Event-ID),
 * so `error` between streams is expected and only shown when it lasts. */
HPO.subscribe = function subscribe(path, handlers) {
  const indicator = document.getElementById('live');
  const source = new EventSource('/api/v1' + path);
  let failing = null;
  const mark = (cls) => { indicator.className = 'live ' + cls; };
  source.addEventListener('open', () => { clearTimeout(failing); mark('on'); });
  source.addEventListener('error', () => {
    clearTimeout(failing);
    failing = setTimeout(() => { if (source.readyState !== EventSource.OPEN) mark('error'); }, 5000);
  });
  for (const [kind, handler] of Object.entries(handlers)) {
    source.addEventListener(kind, (event) => handler(JSON.parse(event.data)));
  }
  mark('off');  // until the stream is open
  return () => { clearTimeout(failing); source.close(); mark('off'); };
};

/* Calls fn at most once per `wait` ms, trailing: bursts of live events cost one reload. */
HPO.throttle = function throttle(fn, wait) {
  let timer = null;
  let last = 0;
  return function throttled() {
    if (timer) return;
    const delay = Math.max(0, wait - (Date.now() - last));
    timer = setTimeout(() => { timer = null; last = Date.now(); fn(); }, delay);
  };
};

/* ---------- signing in ---------- */

/* The API answers 401 without a token: ask for one and keep it in the server's HttpOnly
 * session cookie (POST /api/v1/session); the page never stores the token itself. */
HPO.signIn = function signIn(reason) {
  if (document.getElementById('sign-in')) return;
  cleanup.forEach((fn) => { try { fn(); } catch (_) { /* leaving anyway */ } });
  cleanup = [];
  const input = h('input', { type: 'password', id: 'token', autocomplete: 'off', placeholder: 'hpo_…', 'aria-label': 'API token' });
  const message = h('div', {});
  const submit = async (event) => {
    event.preventDefault();
    try {
      await HPO.api('/session', { method: 'POST', headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
        body: JSON.stringify({ token: input.value.trim() }) });
      HPO.render();
    } catch (error) {
      HPO.fill(message, HPO.errorBox(error));
    }
  };
  HPO.fill(document.getElementById('main'), h('section', { class: 'card sign-in', id: 'sign-in' },
    h('header', {}, h('h2', {}, 'Sign in')),
    h('form', { class: 'body', onsubmit: submit },
      h('p', {}, reason || 'This server needs an API token.'),
      h('p', { class: 'muted' }, 'A read token is enough: ', h('code', {}, 'hpo token create --scope read'),
        '. A server started on 127.0.0.1 wrote its admin token to ', h('code', {}, '.hpo/admin-token'), '.'),
      h('div', { class: 'toolbar' }, input, h('button', { type: 'submit', class: 'primary' }, 'Sign in')), message)));
  input.focus();
};

HPO.signOut = async function signOut() {
  try { await fetch('/api/v1/session', { method: 'DELETE', credentials: 'same-origin' }); } catch (_) { /* offline */ }
  HPO.signIn('Signed out.');
};

/* ---------- theme ---------- */

HPO.theme = () => document.documentElement.dataset.theme;
function applyTheme(theme) {
  document.documentElement.dataset.theme = theme;
  const button = document.getElementById('theme');
  if (button) button.textContent = theme === 'dark' ? 'Light' : 'Dark';
}
applyTheme(localStorage.getItem('hpo-theme') ||
  (window.matchMedia && window.matchMedia('(prefers-color-scheme: dark)').matches ? 'dark' : 'light'));

/* ---------- routing ---------- */

let cleanup = [];
HPO.onLeave = (fn) => cleanup.push(fn);

function parseRoute() {
  const [path, search] = (location.hash.replace(/^#/, '') || '/').split('?');
  const parts = path.split('/').filter(Boolean);
  const params = Object.fromEntries(new URLSearchParams(search || ''));
  if (parts[0] === 'study' && parts[1]) return { page: 'study', id: Number(parts[1]), params };
  if (parts[0] === 'trial' && parts[1]) return { page: 'trial', id: Number(parts[1]), params };
  if (parts[0] === 'workers') return { page: 'workers', params };
  if (parts.length === 0) return { page: 'studies', params };
  return { page: 'missing', params };
}

HPO.render = function render() {
  cleanup.forEach((fn) => { try { fn(); } catch (error) { console.warn(error); } }); // eslint-disable-line no-console
  cleanup = [];
  const route = parseRoute();
  document.querySelectorAll('[data-nav]').forEach((a) => {
    a.classList.toggle('active', a.dataset.nav === route.page || (a.dataset.nav === 'studies' && route.page !== 'workers'));
  });
  const main = document.getElementById('main');
  const page = HPO.pages[route.page];
  if (!page) {
    HPO.fill(main, HPO.empty('No such page', h('a', { href: '#/' }, 'Back to the studies')));
    return;
  }
  HPO.fill(main);
  window.scrollTo(0, 0);
  page(main, route);
};

document.addEventListener('DOMContentLoaded', () => {
  document.getElementById('sign-out').addEventListener('click', HPO.signOut);
  document.getElementById('theme').addEventListener('click', () => {
    const next = HPO.theme() === 'dark' ? 'light' : 'dark';
    localStorage.setItem('hpo-theme', next);
    applyTheme(next);
    HPO.render(); // charts take their colours from the theme when created
  });
  window.addEventListener('hashchange', HPO.render);
  HPO.render();
});
