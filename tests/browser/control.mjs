// Drives the run control of the web page of `runbook serve` in headless Chromium (Debian's,
// through playwright-core) the way an operator would.
//
//   node control.mjs retry URL TOKEN RUN_ID STEP SCREENSHOT_PATH
//   node control.mjs skip URL TOKEN RUN_ID STEP SCREENSHOT_PATH
//   node control.mjs pause URL TOKEN RUN_ID READY_FILE SCREENSHOT_PATH
//
// Both open the run by its address and enter the token.
//
// retry: the run has failed at STEP; the page must offer "Retry STEP"; a comment is typed and the
// button clicked; the page must then show the run `succeeded` without a reload.
//
// skip: the run needs attention at STEP (in flight when its process died); the page must offer
// "Retry STEP" and "Skip STEP" and neither Pause nor Unpause; a comment is typed and Skip clicked;
// the page must then show the run `succeeded` without a reload.
//
// pause: the run is executing; Pause is clicked and the page must show the run `paused` with an
// Unpause button; then READY_FILE is created (what the run waits for), a comment typed, Unpause
// clicked, and the page must show the run `succeeded` without a reload.
//
// The page must work within serve's strict Content-Security-Policy. Exits 0 when all of it
// happened; otherwise prints what the page showed and exits 1. Everything is bounded (60 s).

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const TOTAL_MS = 60_000;
const STEP_MS = 20_000;

const argv = process.argv.slice(2);
if (argv.length !== 6 || !['retry', 'skip', 'pause'].includes(argv[0])) {
  console.error('usage: node control.mjs retry|skip|pause URL TOKEN RUN_ID STEP|READY_FILE SCREENSHOT_PATH');
  process.exit(2);
}
const [mode, url, token, runId, extra, screenshot] = argv;
const base = url.replace(/\/+$/, '');

const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const userDataDir = mkdtempSync(join(tmpdir(), 'runbook-chromium-'));
const log = [];
let context = null;
let page = null;
let step = 'starting';

function say(what) {
  step = what;
  console.log(`control.mjs: ${what}`);
}

async function cleanup() {
  try { if (context) await context.close(); } catch { /* already gone */ }
  try { rmSync(userDataDir, { recursive: true, force: true }); } catch { /* best effort */ }
}

async function fail(error) {
  console.error(`control.mjs: FAILED while ${step}: ${error && error.stack || error}`);
  if (page) {
    try {
      console.error(`--- page at ${page.url()} ---`);
      console.error(await page.locator('body').innerText({ timeout: 2000 }));
      await page.screenshot({ path: screenshot, fullPage: true, timeout: 5000 });
    } catch (e) {
      console.error(`(could not read the page: ${e.message})`);
    }
  }
  if (log.length) console.error(`--- browser console and network ---\n${log.join('\n')}`);
  await cleanup();
  process.exit(1);
}

const watchdog = setTimeout(() => fail(new Error(`the whole test took longer than ${TOTAL_MS / 1000} s`)), TOTAL_MS);

async function waitState(state) {
  say(`waiting for the page to show the run ${state}`);
  await page.waitForFunction(
    (s) => document.getElementById('run-state').textContent.trim() === s,
    state,
    { timeout: 30_000 },
  );
}

try {
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath,
    headless: true,
    timeout: STEP_MS,
    viewport: { width: 1000, height: 900 },
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
  context.setDefaultTimeout(STEP_MS);
  page = context.pages()[0] || await context.newPage();
  page.on('console', (m) => log.push(`console.${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => log.push(`page error: ${e.message}`));
  await context.addInitScript(() => {
    window.__cspViolations = [];
    document.addEventListener('securitypolicyviolation', (e) => {
      window.__cspViolations.push(`${e.effectiveDirective} blocked ${e.blockedURI || 'an inline part'}`);
    });
  });

  const start = `${base}/runs/${encodeURIComponent(runId)}`;
  say(`opening ${start}`);
  await page.goto(start, { waitUntil: 'domcontentloaded' });
  await page.evaluate(() => { window.__sameDocument = true; });
  say('entering the token');
  await page.fill('#token', token);
  await page.click('#save-token');
  await page.locator('#whoami').filter({ hasText: 'signed in as' }).waitFor();
  await page.locator('#control').waitFor({ state: 'visible' });

  if (mode === 'retry') {
    const retry = page.locator('#retry');
    await retry.filter({ hasText: `Retry ${extra}` }).waitFor({ state: 'visible' });
    const state = (await page.locator('#run-state').innerText()).trim();
    if (state !== 'failed') throw new Error(`the run should be failed, the page says ${state}`);
    if (await page.locator('#pause').isVisible()) throw new Error('a failed run offers no Pause');
    say('typing a comment and clicking Retry');
    await page.fill('#control-comment', 'fixed, retried from the browser');
    await retry.click();
    await waitState('succeeded');
  } else if (mode === 'skip') {
    const skip = page.locator('#skip');
    await skip.filter({ hasText: `Skip ${extra}` }).waitFor({ state: 'visible' });
    await page.locator('#retry').filter({ hasText: `Retry ${extra}` }).waitFor({ state: 'visible' });
    const state = (await page.locator('#run-state').innerText()).trim();
    if (state !== 'needs-attention') throw new Error(`the run should need attention, the page says ${state}`);
    if (await page.locator('#pause').isVisible() || await page.locator('#unpause').isVisible()) {
      throw new Error('a run that needs attention offers neither Pause nor Unpause');
    }
    say('typing a comment and clicking Skip');
    await page.fill('#control-comment', 'done by hand, skipped from the browser');
    await skip.click();
    await waitState('succeeded');
  } else {
    await page.locator('#pause').waitFor({ state: 'visible' });
    say('typing a comment and clicking Pause');
    await page.fill('#control-comment', 'paused from the browser');
    await page.click('#pause');
    await waitState('paused');
    await page.locator('#unpause').waitFor({ state: 'visible' });
    if (await page.locator('#pause').isVisible()) throw new Error('a paused run offers no Pause');
    say(`creating ${extra}, then clicking Unpause`);
    writeFileSync(extra, '');
    await page.fill('#control-comment', 'unpaused from the browser');
    await page.click('#unpause');
    await waitState('succeeded');
  }
  if (await page.locator('#control').isVisible()) throw new Error('a succeeded run offers no control');

  if (!(await page.evaluate(() => window.__sameDocument === true))) {
    throw new Error('the page was reloaded: it must update in place');
  }
  const violations = await page.evaluate(() => window.__cspViolations);
  if (violations.length) throw new Error(`the page broke its Content-Security-Policy: ${violations.join('; ')}`);

  say(`taking a screenshot: ${screenshot}`);
  await page.screenshot({ path: screenshot, fullPage: true });
  clearTimeout(watchdog);
  await cleanup();
  console.log('control.mjs: ok');
  process.exit(0);
} catch (e) {
  clearTimeout(watchdog);
  await fail(e);
}
