// Drives the web console of `runbook serve` in headless Chromium (Debian's, through
// playwright-core) the way an operator starts a run from the browser:
//
//   node console.mjs URL TOKEN RUNBOOK BAD_VERSION GOOD_VERSION SECRET GO_FILE SHOTS_DIR COMMENT
//
// At 1280×800: enters the token; opens the catalogue from the runs list ("Start a run"), where
// RUNBOOK is listed with its parameters (the `version` pattern, the secret `token`); finds it with
// the filter and opens its form by keyboard (Tab order through the form is checked); types
// BAD_VERSION and SECRET, asks for the plan, and must see the server's pattern error at the
// `version` field (marked invalid, focused), and no plan; types GOOD_VERSION, sees the plan (the
// secret masked) and starts the run, whose page opens. There the `announce` step's output must
// appear while the step runs (it prints, then waits for GO_FILE): the version, the secret masked,
// in a live region; then GO_FILE is created. The timeline must show the parallel iterations
// `roll[0].restart` and `roll[1].restart` as rows whose bars overlap in time; the `report` step's
// JSON output is opened and must be pretty-printed. COMMENT is typed and the gate approved; the
// run must end `succeeded` on the page, `announce`'s journaled output showing the masked secret.
//
// The secret must appear nowhere: not in the page's DOM (outerHTML) or any input's value after the
// start, not in session or local storage or the URL, and not in the body of any API answer the
// page received (every one is recorded and read). The page must work within serve's strict
// Content-Security-Policy.
//
// Screenshots, in SHOTS_DIR: console-catalogue.png and console-catalogue-narrow.png (600 px wide),
// console-form-error.png, console-run-live.png, console-run-timeline.png and
// console-run-narrow.png (600 px wide).
//
// Exits 0 when all of it happened; otherwise prints what the page showed and exits 1. Everything
// is bounded (75 s in all).

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const TOTAL_MS = 75_000;
const STEP_MS = 20_000;
const WIDE = { width: 1280, height: 800 };
const NARROW = { width: 600, height: 900 };
// How long `announce` runs at least: 5x a restart (0.3 s), so its bar is the longer one.
const ANNOUNCE_HELD_MS = 1_500;

const argv = process.argv.slice(2);
if (argv.length !== 9) {
  console.error('usage: node console.mjs URL TOKEN RUNBOOK BAD_VERSION GOOD_VERSION SECRET GO_FILE SHOTS_DIR COMMENT');
  process.exit(2);
}
const [url, token, runbook, badVersion, goodVersion, secret, goFile, shots, comment] = argv;
const base = url.replace(/\/+$/, '');

const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const userDataDir = mkdtempSync(join(tmpdir(), 'runbook-chromium-'));
const log = [];
const answers = []; // [url, Promise<body text>] of every API answer
let context = null;
let page = null;
let step = 'starting';

function say(what) {
  step = what;
  console.log(`console.mjs: ${what}`);
}

function shot(name) {
  return join(shots, name);
}

async function cleanup() {
  try { if (context) await context.close(); } catch { /* already gone */ }
  try { rmSync(userDataDir, { recursive: true, force: true }); } catch { /* best effort */ }
}

async function fail(error) {
  // Never print the secret, even in a failure.
  const clean = (text) => String(text).split(secret).join('<SECRET>');
  console.error(`console.mjs: FAILED while ${step}: ${clean(error && error.stack || error)}`);
  if (page) {
    try {
      console.error(`--- page at ${page.url()} ---`);
      console.error(clean(await page.locator('body').innerText({ timeout: 2000 })));
      await page.screenshot({ path: shot('console-failure.png'), fullPage: true, timeout: 5000 });
      console.error(`--- screenshot of the failure: ${shot('console-failure.png')} ---`);
    } catch (e) {
      console.error(`(could not read the page: ${e.message})`);
    }
  }
  if (log.length) console.error(`--- browser console and network ---\n${clean(log.join('\n'))}`);
  await cleanup();
  process.exit(1);
}

const watchdog = setTimeout(() => fail(new Error(`the whole test took longer than ${TOTAL_MS / 1000} s`)), TOTAL_MS);

/** Fails unless `cond` holds. */
function expect(cond, message) {
  if (!cond) throw new Error(message);
}

/** Where the secret is on the page right now (none: an empty list). */
async function secretOnPage() {
  return page.evaluate((s) => {
    const found = [];
    if (document.documentElement.outerHTML.includes(s)) found.push('the DOM');
    for (const el of document.querySelectorAll('input, textarea, select')) {
      if (String(el.value).includes(s)) found.push(`the value of ${el.id || el.name || el.tagName}`);
    }
    for (const [name, store] of [['sessionStorage', sessionStorage], ['localStorage', localStorage]]) {
      for (let i = 0; i < store.length; i++) {
        const k = store.key(i);
        if (k.includes(s) || String(store.getItem(k)).includes(s)) found.push(name);
      }
    }
    if (location.href.includes(s) || decodeURIComponent(location.href).includes(s)) found.push('the URL');
    if (document.title.includes(s)) found.push('the title');
    return found;
  }, secret);
}

try {
  say(`launching ${executablePath}`);
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath,
    headless: true,
    timeout: STEP_MS,
    viewport: WIDE,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
  context.setDefaultTimeout(STEP_MS);
  page = context.pages()[0] || await context.newPage();
  page.on('console', (m) => log.push(`console.${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => log.push(`page error: ${e.message}`));
  page.on('requestfailed', (r) => log.push(`request failed: ${r.method()} ${r.url()} ${r.failure() && r.failure().errorText}`));
  page.on('response', (r) => {
    if (!r.url().includes('/api/')) return;
    // An event stream's body is complete once the stream ends (the run's end); one cut short
    // by the page leaving it has no body to read, which is no secret either.
    answers.push([`${r.request().method()} ${r.url()}`, r.text().catch(() => '')]);
  });
  await context.addInitScript(() => {
    window.__cspViolations = [];
    document.addEventListener('securitypolicyviolation', (e) => {
      window.__cspViolations.push(`${e.effectiveDirective} blocked ${e.blockedURI || 'an inline part'} at ${e.sourceFile || '?'}:${e.lineNumber || 0}`);
    });
  });

  say(`opening ${base}/`);
  const response = await page.goto(`${base}/`, { waitUntil: 'domcontentloaded' });
  const csp = response && response.headers()['content-security-policy'];
  expect(csp && csp.includes("script-src 'self'") && !csp.includes('unsafe-inline'), `the page needs a strict Content-Security-Policy, got: ${csp}`);
  await page.evaluate(() => { window.__sameDocument = true; });

  say('entering the token');
  await page.fill('#token', token);
  await page.click('#save-token');
  await page.locator('#whoami').filter({ hasText: 'signed in as' }).waitFor();

  // ---------------------------------------------------------------- the catalogue
  say('opening the catalogue with "Start a run"');
  await page.click('#new-run');
  await page.waitForURL('**/new');
  const entry = page.locator(`#catalogue [data-runbook="${runbook}"]`);
  await entry.waitFor();
  const entryText = (await entry.innerText()).replace(/\s+/g, ' ');
  for (const want of ['version', 'string', 'required', 'matches', 'token', 'secret', 'channel', 'one of']) {
    expect(entryText.includes(want), `the catalogue's entry of ${runbook} should say "${want}": ${entryText}`);
  }
  expect(await page.locator('#catalogue [data-runbook="hello"]').count() === 1, 'the bundled runbook hello should be listed too');
  say(`the catalogue lists ${await page.locator('#catalogue > li').count()} runbooks; ${runbook}: ${entryText.slice(0, 160)}`);
  await page.screenshot({ path: shot('console-catalogue.png'), fullPage: false });
  await page.setViewportSize(NARROW);
  await page.screenshot({ path: shot('console-catalogue-narrow.png'), fullPage: false });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  expect(overflow <= 0, `at 600 px the catalogue is ${overflow} px too wide`);
  await page.setViewportSize(WIDE);

  say('filtering the catalogue and opening the form by keyboard');
  await page.fill('#catalogue-filter', runbook);
  expect(await page.locator('#catalogue [data-runbook="hello"]').isHidden(), 'the filter should hide hello');
  await page.locator(`#catalogue [data-runbook="${runbook}"] a`).focus();
  await page.keyboard.press('Enter');
  await page.waitForURL(`**/new?runbook=${encodeURIComponent(runbook)}`);
  const version = page.locator('[data-param="version"] input');
  const secretField = page.locator('[data-param="token"] input');
  await version.waitFor();
  expect(await page.evaluate(() => document.activeElement && document.activeElement.name) === 'version',
    'the form should focus its first field');
  expect(await secretField.getAttribute('type') === 'password', 'a secret parameter must be a password field');
  expect(await secretField.getAttribute('autocomplete') === 'off', 'a secret field must not be autocompleted');
  expect(await page.locator('[data-param="channel"] select').count() === 1, 'an enum parameter should be a choice');
  expect(await page.locator('label[for]').evaluateAll((ls) => ls.every((l) => document.getElementById(l.htmlFor))),
    'every label names its control');
  // Tab goes from field to field in the order of the declarations.
  const order = [];
  for (let i = 0; i < 4; i++) {
    order.push(await page.evaluate(() => document.activeElement && document.activeElement.name));
    await page.keyboard.press('Tab');
  }
  expect(order.join(',') === 'version,members,channel,token', `Tab order through the form: ${order.join(',')}`);

  say(`typing a version that does not match the pattern (${badVersion}) and the secret`);
  await version.fill(badVersion);
  await secretField.fill(secret);
  await version.press('Enter');
  const versionError = page.locator('[data-param="version"] .field-error');
  await versionError.filter({ hasText: 'does not match the pattern' }).waitFor({ state: 'visible' });
  say(`the form says at the field: ${(await versionError.innerText()).trim()}`);
  expect(await version.getAttribute('aria-invalid') === 'true', 'the field with the error should be marked invalid');
  expect(await page.evaluate(() => document.activeElement && document.activeElement.name) === 'version',
    'the field with the error should have the focus');
  expect(await page.locator('#plan').isHidden(), 'no plan for wrong values');
  expect(await page.locator('[data-param="token"] .field-error').isHidden(), 'only the wrong field has an error');
  await page.screenshot({ path: shot('console-form-error.png'), fullPage: true });

  say(`correcting the version (${goodVersion}) and asking for the plan`);
  await version.fill(goodVersion);
  await page.click('#plan-button');
  await page.locator('#plan').waitFor({ state: 'visible' });
  expect(await versionError.isHidden(), 'the error should go once the value is right');
  const planText = await page.locator('#plan').innerText();
  for (const want of ['announce', 'roll[*].restart', 'confirm', goodVersion, '***']) {
    expect(planText.includes(want), `the plan should show "${want}": ${planText}`);
  }
  say(`the plan: ${planText.replace(/\s+/g, ' ').slice(0, 200)}`);

  say('starting the run');
  await page.click('#start-run');
  const startedAt = Date.now();
  await page.waitForURL('**/runs/*');
  const runId = decodeURIComponent(page.url().split('/runs/')[1]);
  console.log(`console.mjs: RUN ${runId}`);
  let where = await secretOnPage();
  expect(!where.length, `after the start the secret is in ${where.join(', ')}`);

  // ---------------------------------------------------------------- output while it runs
  say('waiting for the output of `announce` while it runs');
  const announce = page.locator('#steps [data-path="announce"]');
  const live = announce.locator('.out-live');
  await live.filter({ hasText: `deploying ${goodVersion} with ***` }).waitFor({ state: 'visible' });
  expect(await announce.getAttribute('data-status') === 'running', 'the output should show while the step runs');
  expect(await live.getAttribute('aria-live') === 'polite', 'live output is announced (aria-live)');
  say(`the page shows, live: ${(await live.innerText()).trim().replace(/\n/g, ' | ')}`);
  await page.screenshot({ path: shot('console-run-live.png'), fullPage: true });
  where = await secretOnPage();
  expect(!where.length, `while the step runs the secret is in ${where.join(', ')}`);

  // `announce` is held open for a known time (well over a restart's 0.3 s) so that the
  // timeline's bars have a known order: how fast this script got here must not decide it.
  const heldFor = ANNOUNCE_HELD_MS - (Date.now() - startedAt);
  if (heldFor > 0) await page.waitForTimeout(heldFor);
  say(`creating ${goFile}: the step goes on`);
  writeFileSync(goFile, '');

  say('waiting for the gate');
  await page.locator('#gate-prompt').waitFor({ state: 'visible' });

  // ---------------------------------------------------------------- the timeline
  say('reading the timeline');
  const rows = await page.locator('#timeline .tl-row').evaluateAll((items) => items.map((li) => ({
    path: li.dataset.path,
    bars: [...li.querySelectorAll('rect.tl-bar')].map((r) => ({ x: parseFloat(r.getAttribute('x')), w: parseFloat(r.getAttribute('width')) })),
  })));
  const paths = rows.map((r) => r.path);
  for (const want of ['announce', 'roll', 'roll[0].restart', 'roll[1].restart', 'roll[2].restart', 'report', 'confirm']) {
    expect(paths.includes(want), `the timeline should have a row for ${want}: ${paths.join(', ')}`);
  }
  const [a, b] = ['roll[0].restart', 'roll[1].restart'].map((p) => rows.find((r) => r.path === p).bars[0]);
  expect(a && b && a.x < b.x + b.w && b.x < a.x + a.w, `parallel iterations should overlap in time: ${JSON.stringify([a, b])}`);
  const annBar = rows.find((r) => r.path === 'announce').bars[0];
  expect(annBar.w > a.w, `announce (which waited) should be the longer bar: ${JSON.stringify([annBar, a])}`);
  say(`timeline rows: ${paths.join(', ')}`);

  say('opening the output of `report`: JSON, pretty-printed');
  const report = page.locator('#steps [data-path="report"]');
  await report.locator('.out-toggle').click();
  const json = report.locator('.out-section[data-label="stdout (JSON)"] pre');
  await json.waitFor({ state: 'visible' });
  const jsonText = await json.innerText();
  expect(jsonText.includes('{\n  "members": 3,\n  "ok": true\n}'), `the JSON output should be pretty-printed: ${jsonText}`);
  expect(await report.locator('.out-toggle').getAttribute('aria-expanded') === 'true', 'the open output says so (aria-expanded)');

  await page.screenshot({ path: shot('console-run-timeline.png'), fullPage: true });
  await page.setViewportSize(NARROW);
  await page.screenshot({ path: shot('console-run-narrow.png'), fullPage: true });
  const runOverflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  expect(runOverflow <= 0, `at 600 px the run's page is ${runOverflow} px too wide`);
  await page.setViewportSize(WIDE);

  // ---------------------------------------------------------------- the gate
  say('approving the gate');
  await page.fill('#comment', comment);
  await page.click('#approve');
  await page.waitForFunction(() => document.getElementById('run-state').textContent.trim() === 'succeeded', null, { timeout: 30_000 });

  say('reading the journaled output of `announce`');
  await announce.locator('.out-toggle').click();
  const stdout = announce.locator('.out-section[data-label="stdout"] pre');
  await stdout.filter({ hasText: 'go seen' }).waitFor({ state: 'visible' });
  const out = await stdout.innerText();
  expect(out.includes(`deploying ${goodVersion} with ***`), `the journaled output should show the secret masked: ${out}`);

  // ---------------------------------------------------------------- the secret, everywhere
  say('looking for the secret on the page and in every API answer');
  where = await secretOnPage();
  expect(!where.length, `after the run the secret is in ${where.join(', ')}`);
  let read = 0;
  for (const [what, body] of answers) {
    const text = await Promise.race([body, new Promise((r) => setTimeout(() => r(''), 5000))]);
    expect(!text.includes(secret), `the answer to ${what} holds the secret`);
    read++;
  }
  expect(read >= 5, `only ${read} API answers were recorded`);
  say(`${read} API answers read: none holds the secret`);

  expect(await page.evaluate(() => window.__sameDocument === true), 'the page was reloaded: it must update in place');
  const violations = await page.evaluate(() => window.__cspViolations);
  expect(Array.isArray(violations) && !violations.length, `the page broke its Content-Security-Policy: ${violations}`);
  const cspErrors = log.filter((l) => /content.security.policy|refused to (load|apply|execute|connect|frame|evaluate)/i.test(l));
  expect(!cspErrors.length, `the console shows CSP errors:\n${cspErrors.join('\n')}`);

  clearTimeout(watchdog);
  await cleanup();
  console.log('console.mjs: ok');
  process.exit(0);
} catch (e) {
  clearTimeout(watchdog);
  await fail(e);
}
