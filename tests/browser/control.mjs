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

import { writeFileSync } from 'node:fs';
import { drive } from './harness.mjs';

const argv = process.argv.slice(2);
if (argv.length !== 6 || !['retry', 'skip', 'pause'].includes(argv[0])) {
  console.error('usage: node control.mjs retry|skip|pause URL TOKEN RUN_ID STEP|READY_FILE SCREENSHOT_PATH');
  process.exit(2);
}
const [mode, url, token, runId, extra, screenshot] = argv;
const base = url.replace(/\/+$/, '');

await drive('control.mjs', { screenshot }, async ({ page, context, say }) => {
  async function waitState(state) {
    say(`waiting for the page to show the run ${state}`);
    await page.waitForFunction(
      (s) => document.getElementById('run-state').textContent.trim() === s,
      state,
      { timeout: 30_000 },
    );
  }

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
});
