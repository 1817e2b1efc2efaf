// Runs a browser script's phases in Debian's headless Chromium (playwright-core, no browser
// download: scripts/provision-browser.sh installs /usr/bin/chromium and node_modules) with a
// throwaway profile, and prints the `RESULT {json}` line the Rust tests read.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

export const CHROMIUM = '/usr/bin/chromium';

/** Runs `body(ctx)`; records `ok`, `total_ms` and `error` in `results`, prints them, returns `ok`. */
export async function runInChromium(results, t0, body) {
  const profile = mkdtempSync(path.join(tmpdir(), 'zedops-chromium-'));
  let ctx;
  let failed = null;
  try {
    ctx = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      viewport: { width: 1280, height: 800 },
      args: [
        '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync',
        '--no-proxy-server',
      ],
    });
    ctx.setDefaultTimeout(15000);
    await body(ctx);
  } catch (e) {
    failed = e;
  } finally {
    await ctx?.close().catch(() => {});
    rmSync(profile, { recursive: true, force: true });
  }
  results.ok = !failed;
  results.total_ms = Date.now() - t0;
  if (failed) {
    results.error = String(failed.stack ?? failed);
    console.error(`[browser] FAILED: ${results.error}`);
  }
  console.log(`RESULT ${JSON.stringify(results)}`);
  return !failed;
}
