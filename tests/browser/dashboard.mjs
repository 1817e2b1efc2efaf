#!/usr/bin/env node
// Drives the zedops dashboard in Debian's headless Chromium with playwright-core (no browser
// download: scripts/provision-browser.sh installs /usr/bin/chromium and node_modules).
//
//   node tests/browser/dashboard.mjs --base http://127.0.0.1:PORT --agent NAME --container NAME \
//        [--screenshot PATH] [--smoke] [--sync]
//
// Tokens come from the environment: ZEDOPS_TOKEN (operator), ZEDOPS_VIEWER_TOKEN, ZEDOPS_BAD_TOKEN.
// Without ZEDOPS_TOKEN the server is expected to run without authentication (no sign-in form).
//
// What it checks (each phase runs in a fresh tab, so sessionStorage starts empty):
//   bad      (ZEDOPS_BAD_TOKEN)    the sign-in form shows the server's error, and no data shows
//   viewer   (ZEDOPS_VIEWER_TOKEN) the container is listed with no action buttons at all
//   operator                      open the agent, container running; Stop, Start and Restart through
//                                 the buttons, each row updated without a reload; a `docker stop`
//                                 outside zedops shows within 2 s; a screenshot of the agent page;
//                                 with --sync, the connection cut by the controller shows the "Live
//                                 updates lost" banner, recovers, and re-fetches a change made meanwhile
//   --smoke                       only: the agent page lists the container with its buttons
//
// --sync hands the Docker side to a controller (tests/tests/dashboard_browser.rs): at each step the
// script prints one line `@@{"step":…}` and waits for a line on stdin, `ok` or an error. Without it
// the script runs the `docker` commands itself. The last line is `RESULT {json}` with timings.

import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { runInChromium } from './chromium.mjs';

const EXTERNAL_LIMIT_MS = 2000;

// ---------------------------------------------------------------------------------------------
// Arguments

function parseArgs(argv) {
  const o = { smoke: false, sync: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--smoke') o.smoke = true;
    else if (a === '--sync') o.sync = true;
    else if (['--base', '--agent', '--container', '--screenshot'].includes(a)) o[a.slice(2)] = argv[++i];
    else throw new Error(`unknown argument ${a}`);
  }
  for (const k of ['base', 'agent', 'container']) {
    if (!o[k]) throw new Error(`--${k} is required`);
  }
  o.base = o.base.replace(/\/$/, '');
  return o;
}

const args = parseArgs(process.argv.slice(2));
const TOKEN = process.env.ZEDOPS_TOKEN || '';
const VIEWER = process.env.ZEDOPS_VIEWER_TOKEN || '';
const BAD = process.env.ZEDOPS_BAD_TOKEN || '';
const { agent: AGENT, container: NAME } = args;
const ROW = `tr[data-agent="${AGENT}"][data-container="${NAME}"]`;
const results = { phases: [], actions: {} };
const t0 = Date.now();

const log = (msg) => console.log(`[browser +${((Date.now() - t0) / 1000).toFixed(1)}s] ${msg}`);
function check(cond, msg) {
  if (!cond) throw new Error(`check failed: ${msg}`);
}

// ---------------------------------------------------------------------------------------------
// The Docker side: the controller (--sync) or the docker CLI.

const stdinLines = [];
const stdinWaiters = [];
if (args.sync) {
  createInterface({ input: process.stdin }).on('line', (line) => {
    const w = stdinWaiters.shift();
    if (w) w(line);
    else stdinLines.push(line);
  });
}
const nextLine = () => (stdinLines.length
  ? Promise.resolve(stdinLines.shift())
  : new Promise((resolve) => stdinWaiters.push(resolve)));

const docker = (...a) => execFileSync('docker', a, { encoding: 'utf8' }).trim();

/** A step the Docker side checks or performs; resolves when it says ok. */
async function step(name, data = {}) {
  if (args.sync) {
    console.log(`@@${JSON.stringify({ step: name, container: NAME, ...data })}`);
    const answer = (await nextLine()).trim();
    check(answer === 'ok', `controller at step ${name}: ${answer}`);
    return;
  }
  const state = () => docker('inspect', '-f', '{{.State.Status}}', NAME);
  switch (name) {
    case 'stop': check(state() === 'exited', `docker says ${state()} after stop`); break;
    case 'start': check(state() === 'running', `docker says ${state()} after start`); break;
    case 'restart': check(state() === 'running', `docker says ${state()} after restart`); break;
    case 'external-stop': docker('stop', '-t', '5', NAME); break;
    default: throw new Error(`unknown step ${name}`);
  }
}

// ---------------------------------------------------------------------------------------------
// The dashboard's SSE parser on its own: chunks split anywhere, CRLF, comments, multi-line data.

async function checkParser() {
  const src = readFileSync(fileURLToPath(new URL('../../api/assets/sse.js', import.meta.url)), 'utf8');
  const { takeEvents } = await import(`data:text/javascript,${encodeURIComponent(src)}`);
  const stream = ': keep-alive\r\n\r\nevent: container\r\ndata: {"a":1}\r\n\r\n'
    + 'event:agent\ndata: one\ndata: two\nid: 7\n\ndata: plain\n\nevent: partial\ndata: x';
  const want = [['container', '{"a":1}'], ['agent', 'one\ntwo'], ['message', 'plain']];
  for (let size = 1; size <= stream.length; size++) {
    const got = [];
    let buf = '';
    for (let i = 0; i < stream.length; i += size) {
      buf = takeEvents(buf + stream.slice(i, i + size), (t, d) => got.push([t, d]));
    }
    check(JSON.stringify(got) === JSON.stringify(want), `SSE parser, chunks of ${size}: ${JSON.stringify(got)}`);
    check(buf === 'event: partial\ndata: x', `SSE parser keeps the incomplete event: ${JSON.stringify(buf)}`);
  }
  results.phases.push('parser');
}

// ---------------------------------------------------------------------------------------------
// Page helpers

async function openPage(ctx) {
  const page = await ctx.newPage();
  page.errors = [];
  page.on('pageerror', (e) => page.errors.push(`uncaught: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error' && /Content Security Policy|Refused to/i.test(m.text())) {
      page.errors.push(`CSP: ${m.text()}`);
    }
  });
  await page.goto(`${args.base}/`);
  return page;
}

function noPageErrors(page, phase) {
  check(page.errors.length === 0, `${phase}: errors in the page: ${page.errors.join('; ')}`);
}

async function signIn(page, token) {
  await page.locator('#signin').waitFor({ state: 'visible', timeout: 10000 });
  await page.getByLabel('API token').fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
}

async function openAgent(page) {
  const link = page.locator(`tr[data-agent="${AGENT}"] a`, { hasText: AGENT });
  await link.waitFor({ timeout: 10000 });
  await link.click();
  await page.waitForFunction((a) => location.hash === `#/agents/${encodeURIComponent(a)}`, AGENT);
  await page.locator(ROW).waitFor({ timeout: 10000 });
}

const rowState = (page) => page.locator(ROW).getAttribute('data-state');

async function waitState(page, state, timeout = 10000) {
  await page.waitForFunction(
    ([sel, s]) => document.querySelector(sel)?.dataset.state === s,
    [ROW, state],
    { timeout, polling: 25 },
  );
}

// ---------------------------------------------------------------------------------------------
// Phases

async function phaseBadToken(ctx) {
  const page = await openPage(ctx);
  await signIn(page, BAD);
  const error = page.locator('#signin-error');
  await page.waitForFunction(() => document.querySelector('#signin-error')?.textContent.trim() !== '');
  const text = (await error.textContent()).trim();
  log(`bad token: the form says "${text}"`);
  check(/token/i.test(text), `the sign-in error names the token problem: ${text}`);
  check(await page.locator('#signin').isVisible(), 'the sign-in form stays');
  check(await page.locator('#view').isHidden(), 'no data view after a wrong token');
  check(await page.locator('tr[data-agent], tr[data-container]').count() === 0, 'no rows after a wrong token');
  check(await page.evaluate(() => sessionStorage.getItem('zedops.token')) === null, 'a wrong token is not kept');
  noPageErrors(page, 'bad');
  await page.close();
  results.phases.push('bad');
}

async function phaseViewer(ctx) {
  const page = await openPage(ctx);
  await signIn(page, VIEWER);
  await page.locator('#who-text', { hasText: 'viewer' }).waitFor();
  await openAgent(page);
  check(await page.locator('button[data-action]').count() === 0, 'a viewer sees no action buttons');
  check(await page.locator('th', { hasText: 'Actions' }).count() === 0, 'a viewer sees no Actions column');
  const status = await page.evaluate(async ([a, c, t]) => {
    const r = await fetch(`/api/v1/agents/${a}/containers/${c}/stop`, {
      method: 'POST', headers: { Authorization: `Bearer ${t}` },
    });
    return r.status;
  }, [AGENT, NAME, VIEWER]);
  check(status === 403, `POST stop with the viewer token: ${status}, want 403`);
  log(`viewer: container listed, no buttons; a POST gets ${status}`);
  noPageErrors(page, 'viewer');
  await page.close();
  results.phases.push('viewer');
}

/** Signs in as operator (or checks that the open server skips the form) and opens the agent. */
async function operatorPage(ctx) {
  const page = await openPage(ctx);
  if (TOKEN) {
    await signIn(page, TOKEN);
  } else {
    await page.locator('#who-text', { hasText: 'No authentication' }).waitFor({ timeout: 10000 });
    check(await page.locator('#signin').isHidden(), 'no sign-in form without authentication');
  }
  await openAgent(page);
  return page;
}

async function phaseSmoke(ctx) {
  const page = await operatorPage(ctx);
  await page.locator(`${ROW} button[data-action]`).first().waitFor();
  const actions = await page.locator(`${ROW} button[data-action]`).evaluateAll((bs) => bs.map((b) => b.dataset.action));
  log(`smoke: ${NAME} is ${await rowState(page)} with buttons ${actions.join(', ')}`);
  noPageErrors(page, 'smoke');
  await page.close();
  results.phases.push('smoke');
}

/** Clicks an action button and waits for the notice and the row's new state, without a reload. */
async function act(page, action, expect) {
  const label = action[0].toUpperCase() + action.slice(1);
  // Records whether the row's buttons were disabled while the action was pending.
  await page.evaluate((sel) => {
    window.sawDisabled = false;
    const seen = () => {
      if (document.querySelector(`${sel} button[data-action]:disabled`)) window.sawDisabled = true;
    };
    window.disabledWatch?.disconnect();
    window.disabledWatch = new MutationObserver(seen);
    window.disabledWatch.observe(document.querySelector('#view'), { subtree: true, childList: true, attributes: true });
  }, ROW);
  const started = Date.now();
  await page.getByRole('button', { name: `${label} ${NAME}`, exact: true }).click();
  const notice = page.locator('.notice.ok', { hasText: `${label} ${NAME} on ${AGENT}: done` });
  await notice.waitFor({ timeout: 30000 });
  await waitState(page, expect);
  const ms = Date.now() - started;
  check(await page.evaluate(() => window.sawDisabled), `${action}: the buttons were disabled while pending`);
  check(await page.evaluate(() => window.loadedOnce === true), `${action}: the page did not reload`);
  await step(action, { expect });
  results.actions[action] = ms;
  log(`${action}: row shows ${expect} after ${ms} ms; Docker agrees`);
}

async function phaseOperator(ctx) {
  const page = await operatorPage(ctx);
  // A marker that a reload would wipe.
  await page.evaluate(() => { window.loadedOnce = true; });
  await waitState(page, 'running');
  log(`operator: ${NAME} listed as running`);

  await act(page, 'stop', 'exited');
  await act(page, 'start', 'running');
  await act(page, 'restart', 'running');

  if (args.screenshot) {
    mkdirSync(path.dirname(args.screenshot), { recursive: true });
    await page.screenshot({ path: args.screenshot, fullPage: true });
    const phone = args.screenshot.replace(/(\.png)?$/, '-phone.png');
    await page.setViewportSize({ width: 390, height: 844 });
    await page.screenshot({ path: phone, fullPage: true });
    await page.setViewportSize({ width: 1280, height: 800 });
    log(`screenshots: ${args.screenshot}, ${phone}`);
    results.screenshot = args.screenshot;
  }

  // A change made outside zedops reaches the open page through the event stream. The clock starts
  // before `docker stop` runs (it includes the stop itself).
  const asked = Date.now();
  await step('external-stop');
  const stopped = Date.now();
  const seenAt = await (await page.waitForFunction(
    (sel) => (document.querySelector(sel)?.dataset.state === 'exited' ? Date.now() : 0),
    ROW,
    { timeout: 10000, polling: 10 },
  )).jsonValue();
  results.external_stop_ms = seenAt - asked;
  results.external_stop_after_docker_ms = Math.max(0, seenAt - stopped);
  log(`external docker stop shown ${results.external_stop_ms} ms after it was started `
    + `(${results.external_stop_after_docker_ms} ms after docker stop returned)`);
  check(results.external_stop_ms < EXTERNAL_LIMIT_MS,
    `the external stop showed after ${results.external_stop_ms} ms (limit ${EXTERNAL_LIMIT_MS} ms)`);
  check(await page.evaluate(() => window.loadedOnce === true), 'external stop: the page did not reload');

  // The connection to the server is cut (the controller's proxy drops every connection and refuses
  // new ones): the page says so, reconnects by itself and re-fetches what it missed meanwhile.
  if (args.sync) {
    await step('cut');
    const banner = page.locator('#live', { hasText: 'Live updates lost — reconnecting…' });
    await banner.waitFor({ state: 'visible', timeout: 10000 });
    log(`cut: "${(await page.locator('#live').textContent()).trim()}"`);
    await step('start-while-cut');
    const back = Date.now();
    await step('restore');
    await waitState(page, 'running', 40000);
    results.recovery_ms = Date.now() - back;
    await page.locator('#live').waitFor({ state: 'hidden', timeout: 10000 });
    check(await page.evaluate(() => window.loadedOnce === true), 'recovery: the page did not reload');
    log(`restored: banner gone; the start made while cut off shows after ${results.recovery_ms} ms`);
  } else {
    log('skipping the connection-loss check (it needs the --sync controller\'s proxy)');
  }

  noPageErrors(page, 'operator');
  await page.close();
  results.phases.push('operator');
}

// ---------------------------------------------------------------------------------------------

const ok = await runInChromium(results, t0, async (ctx) => {
  await checkParser();
  if (args.smoke) {
    await phaseSmoke(ctx);
  } else {
    if (BAD) await phaseBadToken(ctx);
    if (VIEWER) await phaseViewer(ctx);
    await phaseOperator(ctx);
  }
});
process.exit(ok ? 0 : 1);
