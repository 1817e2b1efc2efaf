#!/usr/bin/env node
// The dashboard's operator-defined actions (docs/actions.md) in Debian's headless Chromium with
// playwright-core, driven by tests/tests/actions.rs:
//
//   node tests/browser/actions.mjs --base http://127.0.0.1:PORT --agent NAME --path PATH
//
// Tokens: ZEDOPS_TOKEN (operator), ZEDOPS_VIEWER_TOKEN. The agent serves the actions of
// tests/tests/actions.rs. What it checks, each phase in a fresh tab:
//   viewer    the actions are listed, and their Run buttons are disabled ("needs the operator role")
//   operator  `say` with a parameter: the confirm dialog is asked (and accepted), the output shows
//             the message as one literal argument; `hostfile` with PATH as its parameter runs
//             without a dialog (the Rust side checks the file exists); `fail` shows exit 7 and stderr
// The last line is `RESULT {json}`.

import { runInChromium } from './chromium.mjs';

function parseArgs(argv) {
  const o = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (['--base', '--agent', '--path'].includes(a)) o[a.slice(2)] = argv[++i];
    else throw new Error(`unknown argument ${a}`);
  }
  for (const k of ['base', 'agent', 'path']) if (!o[k]) throw new Error(`--${k} is required`);
  o.base = o.base.replace(/\/$/, '');
  return o;
}

const args = parseArgs(process.argv.slice(2));
const TOKEN = process.env.ZEDOPS_TOKEN || '';
const VIEWER = process.env.ZEDOPS_VIEWER_TOKEN || '';
const AGENT = args.agent;
const results = { phases: [], dialogs: [] };
const t0 = Date.now();
const log = (msg) => console.log(`[browser +${((Date.now() - t0) / 1000).toFixed(1)}s] ${msg}`);
function check(cond, msg) {
  if (!cond) throw new Error(`check failed: ${msg}`);
}

const card = (page, name) => page.locator(`section[data-action="${AGENT}/${name}"]`);

async function openAgent(ctx, token) {
  const page = await ctx.newPage();
  page.errors = [];
  page.on('pageerror', (e) => page.errors.push(`uncaught: ${e.message}`));
  await page.goto(`${args.base}/#/agents/${encodeURIComponent(AGENT)}`);
  await page.locator('#signin').waitFor({ state: 'visible' });
  await page.getByLabel('API token').fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await card(page, 'say').waitFor();
  return page;
}

async function phaseViewer(ctx) {
  const page = await openAgent(ctx, VIEWER);
  const run = card(page, 'say').getByRole('button', { name: 'Run say' });
  check(await run.isDisabled(), 'a viewer can press Run');
  check((await card(page, 'say').textContent()).includes('needs the operator role'), 'no reason shown');
  check(page.errors.length === 0, page.errors.join('; '));
  await page.close();
  results.phases.push('viewer');
  log('viewer: actions listed, Run disabled');
}

async function runAndWait(page, name) {
  await card(page, name).getByRole('button', { name: `Run ${name}` }).click();
  const out = card(page, name).locator('.action-output');
  await out.waitFor();
  return out;
}

async function phaseOperator(ctx) {
  const page = await openAgent(ctx, TOKEN);
  page.on('dialog', (d) => {
    results.dialogs.push(d.message());
    d.accept();
  });
  const evil = 'hello; $(id) && rm -rf /';
  await card(page, 'say').getByLabel('message').fill(evil);
  let out = await runAndWait(page, 'say');
  check(results.dialogs.length === 1 && results.dialogs[0].includes('Run say'), `confirm: ${results.dialogs}`);
  check((await out.locator('pre.stdout').textContent()) === `${evil}\n`, 'say printed something else');
  check((await out.locator('.exit').textContent()).startsWith('exit 0'), 'say did not exit 0');

  await card(page, 'hostfile').getByLabel('path').fill(args.path);
  out = await runAndWait(page, 'hostfile');
  check(results.dialogs.length === 1, 'hostfile asked for confirmation');
  check((await out.locator('.exit').textContent()).startsWith('exit 0'), 'hostfile did not exit 0');

  out = await runAndWait(page, 'fail');
  check((await out.locator('.exit').textContent()).startsWith('exit 7'), 'fail did not show exit 7');
  check((await out.locator('pre.stderr').textContent()) === 'failing\n', 'no stderr shown');
  check(page.errors.length === 0, page.errors.join('; '));
  await page.close();
  results.phases.push('operator');
  log('operator: say (confirmed), hostfile and fail ran, output shown');
}

const ok = await runInChromium(results, t0, async (ctx) => {
  if (VIEWER) await phaseViewer(ctx);
  await phaseOperator(ctx);
});
process.exit(ok ? 0 : 1);
