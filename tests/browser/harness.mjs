// What the browser scripts of the end-to-end tests share: headless Chromium (Debian's, or
// $CHROMIUM, through playwright-core) in a throw-away profile, a log of the steps, a bound on the
// whole script, and on failure a report of what the page showed (its text, a screenshot, the
// browser's console and network errors).
//
//   await drive('name.mjs', { screenshot }, async ({ page, context, log, say }) => { … });
//
// `drive` exits the process: 0 when the body returns, 1 when it throws or outlives `totalMs`.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

/** How long one page action may take. */
export const STEP_MS = 20_000;

export async function drive(name, { screenshot, totalMs = 60_000, viewport = { width: 1000, height: 900 } }, body) {
  const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
  const userDataDir = mkdtempSync(join(tmpdir(), 'runbook-chromium-'));
  const log = [];
  let context = null;
  let page = null;
  let step = 'starting';
  let ended = false;

  const say = (what) => {
    step = what;
    console.log(`${name}: ${what}`);
  };

  async function cleanup() {
    try { if (context) await context.close(); } catch { /* already gone */ }
    try { rmSync(userDataDir, { recursive: true, force: true }); } catch { /* best effort */ }
  }

  async function fail(error) {
    if (ended) return;
    ended = true;
    console.error(`${name}: FAILED while ${step}: ${error && error.stack || error}`);
    if (page) {
      try {
        console.error(`--- page at ${page.url()} ---`);
        console.error(await page.locator('body').innerText({ timeout: 2000 }));
        await page.screenshot({ path: screenshot, fullPage: true, timeout: 5000 });
        console.error(`--- screenshot of the failure: ${screenshot} ---`);
      } catch (e) {
        console.error(`(could not read the page: ${e.message})`);
      }
    }
    if (log.length) console.error(`--- browser console and network ---\n${log.join('\n')}`);
    await cleanup();
    process.exit(1);
  }

  const watchdog = setTimeout(() => fail(new Error(`the whole test took longer than ${totalMs / 1000} s`)), totalMs);
  try {
    say(`launching ${executablePath}`);
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath,
      headless: true,
      timeout: STEP_MS,
      viewport,
      args: [
        '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync',
      ],
    });
    context.setDefaultTimeout(STEP_MS);
    page = context.pages()[0] || await context.newPage();
    page.on('console', (m) => log.push(`console.${m.type()}: ${m.text()}`));
    page.on('pageerror', (e) => log.push(`page error: ${e.message}`));
    await body({ page, context, log, say });
  } catch (e) {
    clearTimeout(watchdog);
    await fail(e);
    return;
  }
  clearTimeout(watchdog);
  if (ended) return;
  ended = true;
  await cleanup();
  console.log(`${name}: ok`);
  process.exit(0);
}
