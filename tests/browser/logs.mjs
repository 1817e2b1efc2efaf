#!/usr/bin/env node
// The dashboard's log view (api/assets/logs.js) in Debian's headless Chromium with playwright-core,
// driven by tests/tests/streams.rs:
//
//   node tests/browser/logs.mjs --base http://127.0.0.1:PORT --agent NAME --ticker C --flood C
//
// Token: ZEDOPS_TOKEN (operator). What it checks:
//   follow  the ticker's log view (reached from the agent's container table) shows `tick N` lines
//           in order and gains new ones; unticking Follow stops them; ticking it starts again
//   bound   the flooding container's view keeps at most 1000 lines however much it writes
// The last line is `RESULT {json}`.

import { runInChromium } from './chromium.mjs';

function parseArgs(argv) {
  const o = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (['--base', '--agent', '--ticker', '--flood'].includes(a)) o[a.slice(2)] = argv[++i];
    else throw new Error(`unknown argument ${a}`);
  }
  for (const k of ['base', 'agent', 'ticker', 'flood']) if (!o[k]) throw new Error(`--${k} is required`);
  o.base = o.base.replace(/\/$/, '');
  return o;
}

const args = parseArgs(process.argv.slice(2));
const TOKEN = process.env.ZEDOPS_TOKEN || '';
const results = { phases: [] };
const t0 = Date.now();
const log = (msg) => console.log(`[browser +${((Date.now() - t0) / 1000).toFixed(1)}s] ${msg}`);
function check(cond, msg) {
  if (!cond) throw new Error(`check failed: ${msg}`);
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const lineCount = (page) => page.locator('pre.log .line').count();

async function signIn(ctx, hash) {
  const page = await ctx.newPage();
  page.errors = [];
  page.on('pageerror', (e) => page.errors.push(`uncaught: ${e.message}`));
  await page.goto(`${args.base}/${hash}`);
  await page.locator('#signin').waitFor({ state: 'visible' });
  await page.getByLabel('API token').fill(TOKEN);
  await page.getByRole('button', { name: 'Sign in' }).click();
  return page;
}

async function phaseFollow(ctx) {
  const page = await signIn(ctx, `#/agents/${encodeURIComponent(args.agent)}`);
  await page.getByRole('link', { name: `Logs of ${args.ticker}` }).click();
  await page.locator('.log-status', { hasText: 'Following' }).waitFor();
  await page.waitForFunction(() => document.querySelectorAll('pre.log .line').length >= 10);
  const before = await lineCount(page);
  await sleep(1500);
  const after = await lineCount(page);
  check(after > before, `no new lines while following (${before} → ${after})`);
  const texts = await page.locator('pre.log .line').allTextContents();
  const n = texts.map((t) => Number(t.trim().replace(/^tick /, '')));
  check(n.every((v, i) => i === 0 || v === n[i - 1] + 1), `lines out of order: ${texts.slice(0, 5)}`);

  await page.getByLabel('Follow').uncheck();
  await page.locator('.log-status', { hasText: 'Paused' }).waitFor();
  const paused = await lineCount(page);
  await sleep(1500);
  check(await lineCount(page) === paused, 'lines still arrive while paused');
  await page.getByLabel('Follow').check();
  await page.locator('.log-status', { hasText: 'Following' }).waitFor();
  check(page.errors.length === 0, page.errors.join('; '));
  await page.close();
  results.phases.push('follow');
  log(`follow: ${after} lines in order, paused at ${paused}, followed again`);
}

async function phaseBound(ctx) {
  const page = await signIn(ctx, `#/logs/${encodeURIComponent(args.agent)}/${encodeURIComponent(args.flood)}`);
  await page.locator('.log-status', { hasText: 'Following' }).waitFor();
  await page.waitForFunction(() => document.querySelectorAll('pre.log .line').length >= 1000);
  await sleep(2000);
  const n = await lineCount(page);
  check(n === 1000, `${n} lines kept`);
  check(page.errors.length === 0, page.errors.join('; '));
  await page.close();
  results.phases.push('bound');
  log(`bound: ${n} lines kept of a flood`);
}

const ok = await runInChromium(results, t0, async (ctx) => {
  await phaseFollow(ctx);
  await phaseBound(ctx);
});
process.exit(ok ? 0 : 1);
