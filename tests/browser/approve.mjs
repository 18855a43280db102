// Drives the web page of `runbook serve` in headless Chromium (Debian's, through playwright-core)
// the way an operator would: enter the token, open the run, read the gate, comment, approve.
//
//   node approve.mjs [--expect-refusal TEXT | --secret NAME=VALUE] URL TOKEN RUN_ID COMMENT SCREENSHOT_PATH
//
// Default: enters a wrong token first (the page must say the token is not known), then TOKEN;
// opens the run by clicking it in the runs list; waits for the gate prompt; types COMMENT; clicks
// Approve; waits until the page shows the run `succeeded` (live, no reload) and lists what happened
// (gate-opened, then run-succeeded, each with its time); takes a screenshot.
//
// --expect-refusal TEXT: opens the run by its address (/runs/RUN_ID) instead, clicks Approve and
// waits until the page shows the API's refusal containing TEXT, with the run still `waiting` and
// the buttons usable again; takes a screenshot.
//
// --secret NAME=VALUE: the first Approve must be refused because serve does not hold the secret
// parameter NAME; the page must then ask for it in a password field, which is filled with VALUE
// before Approve is clicked again; then as by default.
//
// In every mode the page must be served with serve's strict Content-Security-Policy (no inline
// script or style), and by the end no `securitypolicyviolation` event may have fired and the
// console must show no CSP error: the page works entirely within the policy.
//
// Exits 0 when all of it happened; otherwise prints what the page showed and exits 1. The browser
// is $CHROMIUM or /usr/bin/chromium; everything is bounded (60 s in all).

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const TOTAL_MS = 60_000;
const STEP_MS = 20_000;

function usage(message) {
  console.error(`approve.mjs: ${message}`);
  console.error('usage: node approve.mjs [--expect-refusal TEXT | --secret NAME=VALUE] URL TOKEN RUN_ID COMMENT SCREENSHOT_PATH');
  process.exit(2);
}

const argv = process.argv.slice(2);
let expectRefusal = null;
let secret = null;
if (argv[0] === '--expect-refusal') {
  if (argv.length < 2) usage('--expect-refusal needs a text');
  expectRefusal = argv[1];
  argv.splice(0, 2);
} else if (argv[0] === '--secret') {
  const eq = argv.length < 2 ? -1 : argv[1].indexOf('=');
  if (eq < 1) usage('--secret needs NAME=VALUE');
  secret = { name: argv[1].slice(0, eq), value: argv[1].slice(eq + 1) };
  argv.splice(0, 2);
}
if (argv.length !== 5) usage(`expected 5 arguments, got ${argv.length}`);
const [url, token, runId, comment, screenshot] = argv;
const base = url.replace(/\/+$/, '');

const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const userDataDir = mkdtempSync(join(tmpdir(), 'runbook-chromium-'));
const log = [];
let context = null;
let page = null;
let step = 'starting';

function say(what) {
  step = what;
  console.log(`approve.mjs: ${what}`);
}

async function cleanup() {
  try { if (context) await context.close(); } catch { /* already gone */ }
  try { rmSync(userDataDir, { recursive: true, force: true }); } catch { /* best effort */ }
}

async function fail(error) {
  console.error(`approve.mjs: FAILED while ${step}: ${error && error.stack || error}`);
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

const watchdog = setTimeout(() => fail(new Error(`the whole test took longer than ${TOTAL_MS / 1000} s`)), TOTAL_MS);

try {
  say(`launching ${executablePath}`);
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
  page.on('requestfailed', (r) => {
    // A stream cut short by navigation is expected; anything else is worth reading.
    log.push(`request failed: ${r.method()} ${r.url()} ${r.failure() && r.failure().errorText}`);
  });

  // Every document of the context records what its Content-Security-Policy blocked.
  await context.addInitScript(() => {
    window.__cspViolations = [];
    document.addEventListener('securitypolicyviolation', (e) => {
      window.__cspViolations.push(`${e.effectiveDirective} blocked ${e.blockedURI || 'an inline part'}`
        + ` at ${e.sourceFile || '?'}:${e.lineNumber || 0}`);
    });
  });

  const start = expectRefusal ? `${base}/runs/${encodeURIComponent(runId)}` : `${base}/`;
  say(`opening ${start}`);
  const response = await page.goto(start, { waitUntil: 'domcontentloaded' });
  const csp = response && response.headers()['content-security-policy'];
  if (!csp || !csp.includes("script-src 'self'") || csp.includes('unsafe-inline')) {
    throw new Error(`the page must come with a strict Content-Security-Policy header, got: ${csp}`);
  }

  // Set on the page once; a reload would lose it, so it proves the page updated in place.
  await page.evaluate(() => { window.__sameDocument = true; });

  say('entering a wrong token');
  await page.fill('#token', 'not-a-token-anyone-knows-0123456789');
  await page.click('#save-token');
  await page.locator('#auth-error').filter({ hasText: 'token is not known' }).waitFor();

  say('entering the token');
  await page.fill('#token', token);
  await page.click('#save-token');
  await page.locator('#whoami').filter({ hasText: 'signed in as' }).waitFor();
  say(`the page says: ${(await page.locator('#whoami').innerText()).trim()}`);

  if (!expectRefusal) {
    say(`finding run ${runId} in the runs list`);
    const row = page.locator(`#runs [data-run="${runId}"]`);
    await row.waitFor();
    const rowText = (await row.innerText()).replace(/\s+/g, ' ').trim();
    if (!rowText.includes('waiting')) throw new Error(`the run's row should say waiting: ${rowText}`);
    say(`clicking the row: ${rowText}`);
    await row.click();
    await page.waitForURL(`**/runs/${runId}`);
  }

  say('waiting for the gate prompt');
  await page.locator('#gate-prompt').waitFor({ state: 'visible' });
  say(`the gate says: ${(await page.locator('#gate-prompt').innerText()).trim()}`);
  const stateBefore = (await page.locator('#run-state').innerText()).trim();
  if (stateBefore !== 'waiting') throw new Error(`#run-state should be waiting, is ${stateBefore}`);

  say('typing the comment');
  await page.fill('#comment', comment);

  say('clicking Approve');
  await page.click('#approve');

  if (secret) {
    say(`waiting for the page to ask for the secret parameter ${secret.name}`);
    await page.locator('#error').filter({ hasText: `secret parameter \`${secret.name}\` again` }).waitFor({ state: 'visible' });
    const field = page.locator(`[data-testid="secret-${secret.name}"]`);
    await field.waitFor({ state: 'visible' });
    if ((await field.getAttribute('type')) !== 'password') throw new Error('the secret field must be a password field');
    const state = (await page.locator('#run-state').innerText()).trim();
    if (state !== 'waiting') throw new Error(`after the refusal the run should still be waiting, the page says ${state}`);
    await page.waitForFunction(() => !document.getElementById('approve').disabled);
    say('entering the secret and clicking Approve again');
    await field.fill(secret.value);
    if (!(await page.locator('#comment').inputValue())) await page.fill('#comment', comment);
    await page.click('#approve');
  }

  if (expectRefusal) {
    say(`waiting for the refusal (${expectRefusal})`);
    await page.locator('#error').filter({ hasText: expectRefusal }).waitFor({ state: 'visible' });
    say(`the page says: ${(await page.locator('#error').innerText()).trim()}`);
    await page.waitForFunction(() => !document.getElementById('approve').disabled);
    const state = (await page.locator('#run-state').innerText()).trim();
    if (state !== 'waiting') throw new Error(`after a refusal the run should still be waiting, the page says ${state}`);
    if (await page.locator('#gate').isHidden()) throw new Error('after a refusal the gate should still be shown');
  } else {
    say('waiting for the run to succeed (live)');
    await page.waitForFunction(
      () => document.getElementById('run-state').textContent.trim() === 'succeeded',
      null,
      { timeout: 30_000 },
    );
    if (await page.locator('#gate').isVisible()) throw new Error('the gate is still shown after the run succeeded');
    const decided = page.locator('#steps .note.decision');
    await decided.filter({ hasText: comment }).waitFor();
    say(`the step tree says: ${(await decided.first().innerText()).trim()}`);

    say('reading what happened, as webhooks are told it');
    await page.locator('#happened [data-event="run-succeeded"]').waitFor({ state: 'visible' });
    const happened = await page.locator('#happened li').evaluateAll((items) => items.map((li) => ({
      event: li.dataset.event,
      at: li.querySelector('time') && li.querySelector('time').getAttribute('datetime'),
      text: li.textContent.replace(/\s+/g, ' ').trim(),
    })));
    const events = happened.map((e) => e.event).join(', ');
    if (events !== 'gate-opened, run-succeeded') throw new Error(`"What happened" should list gate-opened, run-succeeded, lists: ${events}`);
    if (happened.some((e) => !e.at || Number.isNaN(Date.parse(e.at)))) throw new Error(`every event needs its time: ${JSON.stringify(happened)}`);
    if (!happened[0].text.includes('waits for approval at `confirm`')) throw new Error(`the gate-opened line should name the gate: ${happened[0].text}`);
    say(`what happened: ${happened.map((e) => e.text).join(' | ')}`);
  }

  if (!(await page.evaluate(() => window.__sameDocument === true))) {
    throw new Error('the page was reloaded: it must update in place');
  }

  say('checking that the Content-Security-Policy blocked nothing');
  const violations = await page.evaluate(() => window.__cspViolations);
  if (!Array.isArray(violations)) throw new Error('the securitypolicyviolation listener was not installed');
  if (violations.length) throw new Error(`the page broke its Content-Security-Policy: ${violations.join('; ')}`);
  const cspErrors = log.filter((l) => /content.security.policy|refused to (load|apply|execute|connect|frame|evaluate)/i.test(l));
  if (cspErrors.length) throw new Error(`the console shows CSP errors:\n${cspErrors.join('\n')}`);

  say(`taking a screenshot: ${screenshot}`);
  await page.screenshot({ path: screenshot, fullPage: true });
  clearTimeout(watchdog);
  await cleanup();
  console.log('approve.mjs: ok');
  process.exit(0);
} catch (e) {
  clearTimeout(watchdog);
  await fail(e);
}
