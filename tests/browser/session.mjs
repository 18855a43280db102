// What the browser scripts of tests/web_controls.rs share: headless Chromium (Debian's, through
// playwright-core) with a Content-Security-Policy watch on every document, sign-in with a token,
// checkpoints at which the Rust test checks the same facts with `runbook` and the API, and
// failure reports that show what the page showed.
//
// Checkpoints: `await session.check(step, data)` prints one line `@check {"step": …, …data}` on
// stdout and waits for one line on stdin: `ok` goes on, anything else (or the end of stdin: the
// test failed) fails the script. Everything is bounded: a whole script by `totalMs`, each page
// action by 20 s.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const STEP_MS = 20_000;

export async function open(name, { totalMs = 90_000, viewport = { width: 1280, height: 800 }, failShot } = {}) {
  const userDataDir = mkdtempSync(join(tmpdir(), 'runbook-chromium-'));
  const log = [];
  let doing = 'starting';
  let context = null;
  const s = {};

  // Lines from the test, in order; a waiter is woken by the next one (or by the end of stdin).
  const lines = [];
  const waiters = [];
  let closed = false;
  const rl = createInterface({ input: process.stdin });
  rl.on('line', (l) => { const w = waiters.shift(); if (w) w.resolve(l); else lines.push(l); });
  rl.on('close', () => { closed = true; for (const w of waiters.splice(0)) w.reject(new Error('the test ended (stdin closed)')); });
  const nextLine = () => {
    if (lines.length) return Promise.resolve(lines.shift());
    if (closed) return Promise.reject(new Error('the test ended (stdin closed)'));
    return new Promise((resolve, reject) => waiters.push({ resolve, reject }));
  };

  const t0 = Date.now();
  s.say = (what) => {
    doing = what;
    console.log(`${name}: +${((Date.now() - t0) / 1000).toFixed(1)}s ${what}`);
  };

  async function cleanup() {
    rl.close();
    try { if (context) await context.close(); } catch { /* already gone */ }
    try { rmSync(userDataDir, { recursive: true, force: true }); } catch { /* best effort */ }
  }

  s.fail = async (error) => {
    console.error(`${name}: FAILED while ${doing}: ${error && error.stack || error}`);
    if (s.page) {
      try {
        console.error(`--- page at ${s.page.url()} ---`);
        console.error(await s.page.locator('body').innerText({ timeout: 2000 }));
        if (failShot) {
          await s.page.screenshot({ path: failShot, fullPage: true, timeout: 5000 });
          console.error(`--- screenshot of the failure: ${failShot} ---`);
        }
      } catch (e) {
        console.error(`(could not read the page: ${e.message})`);
      }
    }
    if (log.length) console.error(`--- browser console and network ---\n${log.join('\n')}`);
    await cleanup();
    process.exit(1);
  };

  const watchdog = setTimeout(() => s.fail(new Error(`the whole script took longer than ${totalMs / 1000} s`)), totalMs);

  /** Runs the script's body: exits 0 when it returns, 1 (with the page shown) when it throws. */
  s.run = async (body) => {
    try {
      await body();
      s.say('checking that the Content-Security-Policy blocked nothing');
      const violations = await s.page.evaluate(() => window.__cspViolations);
      if (!Array.isArray(violations)) throw new Error('the securitypolicyviolation listener was not installed');
      if (violations.length) throw new Error(`the page broke its Content-Security-Policy: ${violations.join('; ')}`);
      const cspErrors = log.filter((l) => /content.security.policy|refused to (load|apply|execute|connect|frame|evaluate)/i.test(l));
      if (cspErrors.length) throw new Error(`the console shows CSP errors:\n${cspErrors.join('\n')}`);
      const errors = log.filter((l) => l.startsWith('page error'));
      if (errors.length) throw new Error(`the page's scripts threw:\n${errors.join('\n')}`);
      clearTimeout(watchdog);
      await cleanup();
      console.log(`${name}: ok`);
      process.exit(0);
    } catch (e) {
      clearTimeout(watchdog);
      await s.fail(e);
    }
  };

  /** A checkpoint: the test checks `data` against `runbook` and the API before this goes on. */
  s.check = async (step, data = {}) => {
    s.say(`checkpoint ${step}`);
    console.log('@check ' + JSON.stringify({ step, ...data }));
    const answer = await nextLine();
    if (answer !== 'ok') throw new Error(`the test refused checkpoint ${step}: ${answer}`);
  };

  s.say(`launching ${process.env.CHROMIUM || '/usr/bin/chromium'}`);
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    timeout: STEP_MS,
    viewport,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
  context.setDefaultTimeout(STEP_MS);
  await context.addInitScript(() => {
    window.__cspViolations = [];
    document.addEventListener('securitypolicyviolation', (e) => {
      window.__cspViolations.push(`${e.effectiveDirective} blocked ${e.blockedURI || 'an inline part'}`
        + ` at ${e.sourceFile || '?'}:${e.lineNumber || 0}`);
    });
  });
  s.context = context;
  /** Records what a page's console and scripts say. */
  s.watch = (page) => {
    page.on('console', (m) => log.push(`console.${m.type()}: ${m.text()}`));
    page.on('pageerror', (e) => log.push(`page error: ${e.message}`));
  };
  s.page = context.pages()[0] || await context.newPage();
  s.watch(s.page);
  return s;
}

/** Opens `url` and signs in with `token`; waits until the page says who it is. */
export async function signIn(s, url, token) {
  s.say(`opening ${url}`);
  const response = await s.page.goto(url, { waitUntil: 'domcontentloaded' });
  const csp = response && response.headers()['content-security-policy'];
  if (!csp || !csp.includes("script-src 'self'") || csp.includes('unsafe-inline')) {
    throw new Error(`the page must come with a strict Content-Security-Policy header, got: ${csp}`);
  }
  s.say('entering the token');
  await s.page.fill('#token', token);
  await s.page.press('#token', 'Enter');
  await s.page.locator('#whoami').filter({ hasText: 'signed in as' }).waitFor();
}

/** Fails when the page is wider than the window (a narrow window must not scroll sideways). */
export async function noSidewaysScroll(s) {
  const { scroll, width } = await s.page.evaluate(() => ({ scroll: document.documentElement.scrollWidth, width: window.innerWidth }));
  if (scroll > width) throw new Error(`the page is ${scroll} px wide in a ${width} px window: it scrolls sideways`);
}

/** The [data-action] buttons of the run controls that are shown, in page order. */
export async function shownActions(s) {
  return s.page.locator('#control [data-action]').evaluateAll((buttons) =>
    buttons.filter((b) => !b.hidden && !b.closest('[hidden]')).map((b) => b.dataset.action));
}

/** Waits until the run's page shows `state`. */
export async function waitRunState(s, state) {
  s.say(`waiting for the page to show the run ${state}`);
  await s.page.waitForFunction((want) => document.getElementById('run-state').textContent.trim() === want, state, { timeout: 30_000 });
}
