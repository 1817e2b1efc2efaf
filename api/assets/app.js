// The zedops dashboard: a plain ES module, no dependencies, no build step.
//
// Data comes from the HTTP API (/api/v1, DESIGN §4) with `Authorization: Bearer <token>`; the token
// lives in sessionStorage only. Live updates come from GET /api/v1/events through sse.js (fetch()
// and a small Server-Sent Events parser, because EventSource cannot send an Authorization header).
//
// Views (location.hash): #/ agents, #/agents/NAME one agent's containers, #/search/TEXT a
// fleet-wide search by container name, #/logs/AGENT/CONTAINER a container's log (logs.js). The DOM is built with createElement only (no innerHTML), so
// names from the fleet can never inject markup.

import { follow } from './sse.js';
import { actionsPanel } from './actions.js';
import { LogView } from './logs.js';

const API = '/api/v1';
const TOKEN_KEY = 'zedops.token';
/** Which actions fit which state, in button order; their labels, and which ask first. All from
 *  the server's action table (GET /api/v1/container-actions), see setActions. */
let ACTIONS = {};
let LABELS = {};
let DANGER = new Set();

function setActions(list) {
  ACTIONS = {};
  LABELS = {};
  DANGER = new Set();
  for (const a of list) {
    LABELS[a.name] = a.name[0].toUpperCase() + a.name.slice(1);
    if (a.danger) DANGER.add(a.name);
    for (const state of a.applies_to) (ACTIONS[state] ??= []).push(a.name);
  }
}

/** Who the token is, after the action table is loaded. */
async function whoami() {
  const [me, actions] = await Promise.all([api('/whoami'), api('/container-actions')]);
  setActions(actions);
  return me;
}

const $ = (sel) => document.querySelector(sel);

/** Everything the page knows; reset on sign-out. */
let S = fresh();
function fresh() {
  return {
    token: sessionStorage.getItem(TOKEN_KEY) ?? '',
    me: null, // GET /whoami
    agents: null, // Map name → AgentInfo, once loaded
    lists: new Map(), // agent → ContainerListing
    listErrors: new Map(), // agent → message
    overrides: new Map(), // "agent/container" → {state, time}: event states newer than the cached list
    search: null, // {q, rows, error}
    pending: new Map(), // "agent/container" → action in flight
    lastStates: new Map(), // "agent/container" → state last rendered (to flash changed rows)
    route: { view: 'fleet' },
    live: 'connecting', // connecting | open | lost
    events: null, // AbortController of the event stream
    timers: [],
    refreshSoon: new Map(), // agent → timeout id
    defined: new Map(), // agent → its operator-defined actions (GET /agents/{a}/actions)
    // What the action forms keep across re-renders (actions.js).
    actionState: { values: new Map(), outputs: new Map(), pending: new Set() },
    logView: null, // the LogView of the #/logs view
  };
}

// ---------------------------------------------------------------------------------------------
// HTTP

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function headers() {
  const h = { Accept: 'application/json' };
  if (S.token) h.Authorization = `Bearer ${S.token}`;
  return h;
}

/** Turns a failed response into an ApiError with the server's `{code, message}`. */
async function failure(res) {
  let body = null;
  try {
    body = await res.json();
  } catch {
    // not JSON: fall back to the status line
  }
  return new ApiError(
    res.status,
    body?.code ?? `http_${res.status}`,
    body?.message ?? `${res.status} ${res.statusText}`.trim(),
  );
}

async function api(path, { method = 'GET', body } = {}) {
  let res;
  const hs = headers();
  if (body !== undefined) hs['Content-Type'] = 'application/json';
  try {
    res = await fetch(API + path, {
      method, headers: hs, cache: 'no-store', body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    throw new ApiError(0, 'network', `cannot reach the server (${e.message})`);
  }
  if (!res.ok) {
    const err = await failure(res);
    // A token revoked while the page is open: back to the sign-in form.
    if (res.status === 401 && S.me?.auth_required) signOut(err.message);
    throw err;
  }
  return res.json();
}

const enc = encodeURIComponent;

// ---------------------------------------------------------------------------------------------
// Sign-in

async function boot() {
  $('#signin-form').addEventListener('submit', onSignIn);
  $('#sign-out').addEventListener('click', () => signOut(''));
  $('#search-form').addEventListener('submit', onSearchSubmit);
  $('#search').addEventListener('input', onSearchInput);
  $('#view').addEventListener('click', onViewClick);
  window.addEventListener('hashchange', () => onRoute(true));
  try {
    start(await whoami());
  } catch (e) {
    if (e.status === 401) showSignIn(S.token ? e.message : '');
    else showUnreachable(e.message);
  }
}

function showUnreachable(message) {
  const p = $('#loading');
  p.replaceChildren(
    `Cannot load the dashboard: ${message}. `,
    h('button', { type: 'button', onclick: () => location.reload() }, 'Try again'),
  );
  p.hidden = false;
}

function showSignIn(error) {
  $('#loading').hidden = true;
  $('#view').hidden = true;
  $('#view').replaceChildren();
  $('#search-form').hidden = true;
  $('#who').hidden = true;
  $('#live').hidden = true;
  $('#signin').hidden = false;
  $('#signin-error').textContent = error;
  $('#token').setAttribute('aria-invalid', error ? 'true' : 'false');
  $('#token').focus();
}

async function onSignIn(ev) {
  ev.preventDefault();
  const input = $('#token');
  const token = input.value.trim();
  const button = ev.target.querySelector('button[type=submit]');
  if (!token) {
    $('#signin-error').textContent = 'Enter an API token.';
    input.focus();
    return;
  }
  button.disabled = true;
  $('#signin-error').textContent = '';
  S.token = token;
  try {
    const me = await whoami();
    sessionStorage.setItem(TOKEN_KEY, token);
    input.value = '';
    start(me);
  } catch (e) {
    S.token = '';
    showSignIn(e.message);
  } finally {
    button.disabled = false;
  }
}

function signOut(error) {
  S.events?.abort();
  S.logView?.stop();
  S.timers.forEach(clearInterval);
  S.refreshSoon.forEach(clearTimeout);
  sessionStorage.removeItem(TOKEN_KEY);
  S = fresh();
  S.token = '';
  showSignIn(error);
}

function start(me) {
  S.me = me;
  $('#loading').hidden = true;
  $('#signin').hidden = true;
  $('#view').hidden = false;
  $('#search-form').hidden = false;
  const who = $('#who-text');
  if (me.auth_required) {
    who.replaceChildren(
      h('span', { class: 'badge role' }, me.role),
      ' ',
      me.token_name ?? '',
      canAct() ? '' : ' · read-only',
    );
  } else {
    who.replaceChildren('No authentication (every caller is admin)');
  }
  $('#sign-out').hidden = !me.auth_required;
  $('#who').hidden = false;
  onRoute(false);
  loadAgents();
  followEvents();
  S.timers.push(setInterval(updateTimes, 10000));
  // last_seen moves with heartbeats, which are not events: refresh the agents now and then.
  S.timers.push(setInterval(loadAgents, 30000));
}

const canAct = () => S.me && (S.me.role === 'operator' || S.me.role === 'admin');

// ---------------------------------------------------------------------------------------------
// Routing and loading

function parseRoute() {
  const hash = location.hash.replace(/^#\/?/, '');
  const [head, ...rest] = hash.split('/');
  const arg = decodeURIComponent(rest.join('/'));
  if (head === 'agents' && arg) return { view: 'agent', agent: arg };
  if (head === 'search' && arg) return { view: 'search', q: arg };
  if (head === 'logs' && rest.length >= 2) {
    return { view: 'logs', agent: decodeURIComponent(rest[0]), container: decodeURIComponent(rest[1]) };
  }
  return { view: 'fleet' };
}

function onRoute(moveFocus) {
  if (!S.me) return;
  S.route = parseRoute();
  const r = S.route;
  const search = $('#search');
  const typing = document.activeElement === search;
  const q = r.view === 'search' ? r.q : '';
  if (!typing || search.value.trim() !== q) search.value = q;
  if (r.view === 'agent') loadList(r.agent);
  if (r.view === 'agent') loadDefined(r.agent);
  if (r.view === 'search') loadSearch(r.q);
  routeLogs(r);
  render();
  // Screen readers follow a new view from its heading; typing in the search box keeps its focus.
  if (moveFocus && !typing) $('#view h1')?.focus();
}

/** Starts the log view of a #/logs route (operators only), and stops any other. */
function routeLogs(r) {
  const same = r.view === 'logs' && S.logView
    && S.logView.agent === r.agent && S.logView.container === r.container;
  if (same) return;
  S.logView?.stop();
  S.logView = null;
  if (r.view !== 'logs' || !canAct()) return;
  S.logView = new LogView(h, { agent: r.agent, container: r.container, headers, toError: failure });
  S.logView.start();
}

// Each loader drops its answer when the user signed out meanwhile (S was replaced).

async function loadAgents() {
  const s = S;
  try {
    const list = await api('/agents');
    if (s !== S) return;
    S.agents = new Map(list.map((a) => [a.name, a]));
  } catch (e) {
    if (s !== S || e.status === 401) return;
    if (!S.agents) notify('error', `Could not load the agents: ${e.message}`);
  }
  render();
}

async function loadDefined(agent) {
  const s = S;
  try {
    const listing = await api(`/agents/${enc(agent)}/actions`);
    if (s !== S) return;
    S.defined.set(agent, listing.actions);
  } catch (e) {
    if (s !== S || e.status === 401) return;
    S.defined.set(agent, []);
  }
  render();
}

async function loadList(agent) {
  const s = S;
  try {
    const listing = await api(`/agents/${enc(agent)}/containers`);
    if (s !== S) return;
    setListing(agent, listing);
    S.listErrors.delete(agent);
  } catch (e) {
    if (s !== S) return;
    S.listErrors.set(agent, e.message);
  }
  render();
}

async function loadSearch(q) {
  const s = S;
  let result;
  try {
    result = { q, rows: await api(`/containers?name=${enc(q)}`) };
  } catch (e) {
    result = { q, rows: [], error: e.message };
  }
  if (s !== S || S.route.view !== 'search' || S.route.q !== q) return;
  S.search = result;
  render();
}

/** Stores a listing, keeping container states from events newer than the listing. */
function setListing(agent, listing) {
  const taken = listing.taken_at ? Date.parse(listing.taken_at) : Infinity;
  // Two fetches can answer out of order: never go back to an older list.
  const current = S.lists.get(agent)?.taken_at;
  if (current && taken < Date.parse(current)) return;
  listing.containers = listing.containers.filter((c) => {
    const key = `${agent}/${c.name}`;
    const o = S.overrides.get(key);
    if (!o) return true;
    if (o.time <= taken) {
      S.overrides.delete(key);
      return true;
    }
    if (o.state === 'removed') return false;
    c.state = o.state;
    c.status = '';
    return true;
  });
  S.lists.set(agent, listing);
}

/** Everything the current view shows, again (after a reconnect). */
function refreshAll() {
  loadAgents();
  const r = S.route;
  if (r.view === 'agent') loadList(r.agent);
  if (r.view === 'search') loadSearch(r.q);
}

/** Re-fetches what shows `agent` soon, once for a burst of events. */
function refreshAgent(agent) {
  clearTimeout(S.refreshSoon.get(agent));
  S.refreshSoon.set(agent, setTimeout(() => {
    S.refreshSoon.delete(agent);
    const r = S.route;
    loadAgents();
    if (r.view === 'agent' && r.agent === agent) loadList(agent);
    if (r.view === 'agent' && r.agent === agent) loadDefined(agent);
    if (r.view === 'search') loadSearch(r.q);
    // A list of another agent, cached from an earlier visit, is dropped rather than kept stale.
    if (!(r.view === 'agent' && r.agent === agent)) S.lists.delete(agent);
  }, 120));
}

// ---------------------------------------------------------------------------------------------
// Live updates: GET /api/v1/events (see sse.js).

function followEvents() {
  S.events = new AbortController();
  follow(`${API}/events`, {
    signal: S.events.signal,
    headers,
    toError: failure,
    onOpen() {
      setLive('open');
      // Whatever happened while we were not listening (or loading): fetch it again.
      refreshAll();
    },
    onEvent,
    onError(e, retryInMs) {
      if (e.status === 401) {
        signOut(e.message);
        return false;
      }
      setLive('lost', e.message, retryInMs);
      return true;
    },
  });
}

function onEvent(type, data) {
  let ev;
  try {
    ev = JSON.parse(data);
  } catch {
    return;
  }
  if (type === 'container' && ev.container && ev.state) {
    S.overrides.set(`${ev.agent}/${ev.container}`, { state: ev.state, time: Date.parse(ev.time) });
    patchState(ev.agent, ev.container, ev.state);
  } else if (type === 'action' && ev.ok && ev.container && ev.state) {
    patchState(ev.agent, ev.container, ev.state);
  }
  // Container events follow every real change (the agent publishes its fresh list first), so they
  // and agent events trigger a re-fetch; an action event alone only patches the row.
  if (type === 'agent' || type === 'container') refreshAgent(ev.agent);
  render();
}

function setLive(live, why = '', retryMs = 0) {
  S.live = live;
  const banner = $('#live');
  if (live === 'lost') {
    banner.textContent = `Live updates lost — reconnecting… (${why}; next try in ${Math.ceil(retryMs / 1000)} s)`;
    banner.hidden = false;
  } else if (!banner.hidden) {
    banner.textContent = 'Live updates restored.';
    setTimeout(() => {
      if (S.live === 'open') banner.hidden = true;
    }, 3000);
  }
}

// ---------------------------------------------------------------------------------------------
// Actions

function onViewClick(ev) {
  const b = ev.target.closest('button[data-action]');
  if (b) runAction(b.dataset.agent, b.dataset.container, b.dataset.action);
}

async function runAction(agent, name, action) {
  const key = `${agent}/${name}`;
  if (S.pending.has(key)) return;
  if (DANGER.has(action) && !confirm(`${LABELS[action]} ${name} on ${agent}? This cannot be undone gracefully.`)) return;
  S.pending.set(key, action);
  render();
  const what = `${LABELS[action]} ${name} on ${agent}`;
  try {
    const r = await api(`/agents/${enc(agent)}/containers/${enc(name)}/${action}`, { method: 'POST' });
    replaceContainer(agent, r.container);
    notify('ok', r.changed
      ? `${what}: done, now ${r.container.state}.`
      : `${what}: nothing to do, it is already ${r.container.state}.`);
  } catch (e) {
    notify('error', `${what} failed: ${e.message}`);
  } finally {
    S.pending.delete(key);
    const focusLost = !document.activeElement || document.activeElement === document.body;
    render();
    // The clicked button was disabled (and so lost focus): give keyboard users a place to stay.
    if (focusLost) {
      const row = document.querySelector(`tr[data-key="${CSS.escape(key)}"]`);
      (row?.querySelector('button') ?? $('#view h1'))?.focus();
    }
  }
}

/** Runs an operator-defined action (after asking, when it says `confirm`); its output stays shown. */
async function runDefined(agent, a, params) {
  const key = `${agent}/${a.name}`;
  const st = S.actionState;
  if (st.pending.has(key)) return;
  if (a.confirm && !confirm(`Run ${a.name} on ${agent}?${a.description ? `\n\n${a.description}` : ''}`)) return;
  st.pending.add(key);
  render();
  try {
    const result = await api(`/agents/${enc(agent)}/actions/${enc(a.name)}`, { method: 'POST', body: { params } });
    st.outputs.set(key, { result });
    if (result.exit_code === 0) notify('ok', `${a.name} on ${agent}: done.`);
    else notify('error', `${a.name} on ${agent}: ${result.timed_out ? 'killed at its deadline' : `exit ${result.exit_code}`}.`);
  } catch (e) {
    st.outputs.set(key, { error: e.message });
    notify('error', `${a.name} on ${agent} failed: ${e.message}`);
  } finally {
    st.pending.delete(key);
    render();
  }
}

/** A container's new state from an event, in the lists and the search results. */
function patchState(agent, name, state) {
  const touch = (c) => {
    if (c.name === name && c.state !== state) {
      c.state = state;
      c.status = '';
    }
  };
  const list = S.lists.get(agent);
  if (list) {
    if (state === 'removed') list.containers = list.containers.filter((c) => c.name !== name);
    else list.containers.forEach(touch);
  }
  S.search?.rows.filter((r) => r.agent === agent).forEach((r) => touch(r.container));
}

/** A container as an action returned it. */
function replaceContainer(agent, c) {
  S.overrides.delete(`${agent}/${c.name}`);
  const list = S.lists.get(agent);
  if (list) list.containers = list.containers.map((x) => (x.id === c.id ? c : x));
  S.search?.rows.forEach((r) => {
    if (r.agent === agent && r.container.id === c.id) r.container = c;
  });
}

// ---------------------------------------------------------------------------------------------
// Notices

function notify(kind, text) {
  const box = $('#notices');
  const close = h('button', { type: 'button', 'aria-label': 'Dismiss' }, '×');
  const n = h('div', { class: `notice ${kind}`, role: kind === 'error' ? 'alert' : null },
    h('p', {}, text), close);
  close.addEventListener('click', () => n.remove());
  box.append(n);
  while (box.children.length > 4) box.firstElementChild.remove();
  if (kind === 'ok') setTimeout(() => n.remove(), 8000);
}

// ---------------------------------------------------------------------------------------------
// Search

let searchTimer = 0;
function onSearchInput() {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(() => goSearch(true), 300);
}

function onSearchSubmit(ev) {
  ev.preventDefault();
  clearTimeout(searchTimer);
  goSearch(false);
}

function goSearch(typing) {
  const q = $('#search').value.trim();
  const target = q ? `#/search/${enc(q)}` : '#/';
  if (location.hash === target) return;
  // While typing, replace the history entry instead of adding one per keystroke.
  if (typing && S.route.view === 'search') location.replace(target);
  else location.hash = target;
}

// ---------------------------------------------------------------------------------------------
// Rendering

/** Creates an element: attributes (null/false skipped, on* are listeners) and children. */
function h(tag, attrs = {}, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const kid of kids.flat(Infinity)) {
    if (kid != null && kid !== false) el.append(kid);
  }
  return el;
}

function render() {
  if (!S.me) return;
  const view = $('#view');
  const focusKey = document.activeElement?.dataset?.key;
  const r = S.route;
  let content;
  if (r.view === 'agent') content = agentView(r.agent);
  else if (r.view === 'search') content = searchView(r.q);
  else if (r.view === 'logs') content = logsView(r);
  else content = fleetView();
  view.replaceChildren(...content);
  if (focusKey) view.querySelector(`[data-key="${CSS.escape(focusKey)}"]`)?.focus();
  document.title = r.view === 'agent' ? `${r.agent} — zedops` : 'zedops';
}

function fleetView() {
  const out = [h('h1', { tabindex: '-1' }, 'Agents')];
  if (!S.agents) return [...out, h('p', { class: 'muted' }, 'Loading agents…')];
  const agents = [...S.agents.values()];
  if (!agents.length) {
    return [...out, h('p', { class: 'empty' },
      'No agents yet. Start one with `zedops agent --name NAME --broker URL`.')];
  }
  const online = agents.filter((a) => a.online).length;
  const head = ['Agent', 'State', 'Host', 'Containers', 'Docker', 'Last seen'];
  const rows = agents.map((a) => h('tr', { 'data-agent': a.name },
    h('td', { class: 'name', 'data-label': head[0] },
      h('a', { href: `#/agents/${enc(a.name)}`, 'data-key': `agent:${a.name}` }, a.name)),
    h('td', { 'data-label': head[1] }, badge(a.online ? 'online' : 'offline')),
    h('td', { 'data-label': head[2] }, a.hostname ?? '—'),
    h('td', { 'data-label': head[3] }, counts(a.counts)),
    h('td', { 'data-label': head[4] }, docker(a.docker)),
    h('td', { 'data-label': head[5] }, when(a.last_seen)),
  ));
  return [...out, table(`${plural(agents.length, 'agent')}, ${online} online`, head, rows)];
}

function agentView(name) {
  const a = S.agents?.get(name);
  const out = [
    h('p', { class: 'crumbs' }, h('a', { href: '#/' }, '← All agents')),
    h('h1', { tabindex: '-1' }, name, a ? badge(a.online ? 'online' : 'offline') : null),
  ];
  if (S.agents && !a) {
    return [...out, h('p', { class: 'empty' }, `No agent named ${name} is known to this server.`)];
  }
  if (a) {
    out.push(h('dl', { class: 'facts' },
      fact('Host', a.hostname ?? '—'),
      fact('Containers', counts(a.counts)),
      fact('Docker', docker(a.docker)),
      fact('Agent version', a.version ?? '—'),
      fact('Last seen', when(a.last_seen)),
      fact('Started', a.started_at ? when(a.started_at) : '—')));
  }
  out.push(h('h2', {}, 'Containers'), ...containersPart(name, a));
  // The actions show whatever became of the list: host actions work while Docker is down.
  out.push(h('h2', {}, 'Actions'), ...actionsPanel(h, {
    agent: name,
    actions: S.defined.get(name),
    role: S.me.role,
    online: a ? a.online : Boolean(S.lists.get(name)?.agent_online),
    st: S.actionState,
    onRun: runDefined,
  }));
  return out;
}

/** The agent view's container list, or why it is not there. */
function containersPart(name, a) {
  const list = S.lists.get(name);
  const err = S.listErrors.get(name);
  if (err && !list) return [h('p', { class: 'empty' }, `Could not load the containers: ${err}`)];
  if (!list) return [h('p', { class: 'muted' }, 'Loading containers…')];
  const offline = a ? !a.online : !list.agent_online;
  const out = [];
  if (offline) {
    out.push(h('p', { class: 'muted' },
      'The agent is offline: this is its last known list',
      list.taken_at ? [' (taken ', when(list.taken_at), ')'] : '',
      '. Actions come back when it does.'));
  }
  const rows = list.containers.map((c) => ({ agent: name, container: c }));
  out.push(containerTable(rows, false, !offline, list.taken_at));
  return out;
}

function logsView(r) {
  const out = [
    h('p', { class: 'crumbs' }, h('a', { href: `#/agents/${enc(r.agent)}` }, `← ${r.agent}`)),
    h('h1', { tabindex: '-1' }, `Logs of ${r.container}`),
  ];
  if (!S.logView) return [...out, h('p', { class: 'empty' }, 'Logs need the operator role.')];
  return [...out, S.logView.el];
}

function searchView(q) {
  const out = [h('h1', { tabindex: '-1' }, `Containers matching “${q}”`)];
  const s = S.search;
  if (!s || s.q !== q) return [...out, h('p', { class: 'muted' }, 'Searching…')];
  if (s.error) return [...out, h('p', { class: 'empty' }, `The search failed: ${s.error}`)];
  const offline = new Set([...(S.agents?.values() ?? [])].filter((a) => !a.online).map((a) => a.name));
  const rows = s.rows.map((r) => ({ ...r, actions: r.agent_online && !offline.has(r.agent) }));
  return [...out, containerTable(rows, true, true)];
}

/** Containers with their actions; `takenAt` (the cached list's time) dates the status texts. */
function containerTable(rows, showAgent, actionsOk, takenAt) {
  const acting = canAct();
  const head = [
    ...(showAgent ? ['Agent'] : []),
    'Name', 'Image', 'State', 'Status', 'Ports', 'Created', ...(acting ? ['Actions'] : []),
  ];
  if (!rows.length) return h('p', { class: 'empty' }, 'No containers.');
  const trs = rows.map(({ agent, container: c, actions }) => {
    const key = `${agent}/${c.name}`;
    const changed = S.lastStates.has(key) && S.lastStates.get(key) !== c.state;
    S.lastStates.set(key, c.state);
    const pending = S.pending.get(key);
    const cells = [];
    if (showAgent) {
      cells.push(h('td', { 'data-label': 'Agent' }, h('a', { href: `#/agents/${enc(agent)}` }, agent)));
    }
    cells.push(
      h('td', { class: 'name', 'data-label': 'Name' }, c.name, acting ? [' ', h('a', {
        href: `#/logs/${enc(agent)}/${enc(c.name)}`, class: 'log-link', 'aria-label': `Logs of ${c.name}`,
      }, 'logs')] : ''),
      h('td', { class: 'image', 'data-label': 'Image' }, c.image),
      h('td', { 'data-label': 'State' }, badge(c.state)),
      h('td', { class: 'status', 'data-label': 'Status' },
        c.status || '…', c.health ? ` (${c.health})` : ''),
      h('td', { class: 'ports', 'data-label': 'Ports' }, ports(c.ports)),
      h('td', { 'data-label': 'Created' }, when(c.created_at)),
    );
    if (acting) {
      const can = actions ?? actionsOk;
      const buttons = can ? (ACTIONS[c.state] ?? []).map((act) => h('button', {
        type: 'button',
        class: DANGER.has(act) ? 'danger' : null,
        'data-action': act,
        'data-agent': agent,
        'data-container': c.name,
        'data-key': `act:${key}:${act}`,
        'aria-label': `${LABELS[act]} ${c.name}`,
        disabled: Boolean(pending),
      }, pending === act ? `${LABELS[act]}…` : LABELS[act])) : [];
      cells.push(h('td', { class: 'actions-cell', 'data-label': 'Actions' },
        buttons.length ? h('div', { class: 'actions' }, buttons) : h('span', { class: 'muted' }, '—')));
    }
    return h('tr', {
      'data-key': key,
      'data-agent': agent,
      'data-container': c.name,
      'data-state': c.state,
      'aria-busy': pending ? 'true' : null,
      class: changed ? 'changed' : null,
    }, cells);
  });
  const caption = [plural(rows.length, 'container'), takenAt ? [' · listed ', when(takenAt)] : ''];
  return table(caption, head, trs);
}

function table(caption, head, rows) {
  return h('div', { class: 'table-wrap' }, h('table', {},
    h('caption', {}, caption),
    h('thead', {}, h('tr', {}, head.map((t) => h('th', { scope: 'col' }, t)))),
    h('tbody', {}, rows)));
}

const plural = (n, what) => `${n} ${what}${n === 1 ? '' : 's'}`;

function badge(state) {
  return h('span', { class: `badge state-${state}`, 'data-state': state }, state);
}

function fact(label, value) {
  return h('div', {}, h('dt', {}, label), h('dd', {}, value));
}

function counts(c) {
  if (!c) return '—';
  const extra = [c.paused && `${c.paused} paused`, c.stopped && `${c.stopped} stopped`].filter(Boolean);
  return `${c.running} of ${c.total} running${extra.length ? `, ${extra.join(', ')}` : ''}`;
}

function docker(d) {
  if (!d) return '—';
  if (d.state === 'available') return `Docker ${d.version ?? ''}`.trim();
  return `${d.state}${d.error ? `: ${d.error}` : ''}`;
}

function ports(list) {
  const seen = new Set();
  for (const p of list ?? []) {
    seen.add(p.public_port ? `${p.public_port}→${p.private_port}/${p.protocol}` : `${p.private_port}/${p.protocol}`);
  }
  return seen.size ? [...seen].join(', ') : '—';
}

/** A <time> showing "5 min ago", kept current by updateTimes(). */
function when(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  return h('time', { datetime: iso, title: d.toLocaleString(), 'data-rel': '' }, ago(d));
}

function ago(d) {
  const s = Math.round((Date.now() - d.getTime()) / 1000);
  if (s < 5) return 'just now';
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

function updateTimes() {
  for (const t of document.querySelectorAll('time[data-rel]')) t.textContent = ago(new Date(t.dateTime));
}

boot();
