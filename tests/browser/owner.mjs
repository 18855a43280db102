// Reads, in headless Chromium (Debian's, through playwright-core), which executor executes each
// run, as an operator of a journal shared by several executors sees it on the web page of any
// one of them.
//
//   node owner.mjs URL TOKEN SCREENSHOT_PATH RUN_ID=OWNER [RUN_ID=OWNER…]
//
// Enters TOKEN; for each RUN_ID waits until its row in the runs list says `on OWNER`; then opens
// the first run by clicking its row and waits until its details say `executed by OWNER`; then
// opens the history view, whose "Executed by" column must show each OWNER; takes a screenshot of
// the list, the run and the history.
//
// Exits 0 when all of it happened; otherwise prints what the page showed and exits 1. The browser
// is $CHROMIUM or /usr/bin/chromium; everything is bounded (60 s in all).

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const TOTAL_MS = 60_000;
const STEP_MS = 20_000;

const argv = process.argv.slice(2);
if (argv.length < 4) {
  console.error('usage: node owner.mjs URL TOKEN SCREENSHOT_PATH RUN_ID=OWNER [RUN_ID=OWNER…]');
  process.exit(2);
}
const [url, token, screenshot, ...pairs] = argv;
const runs = pairs.map((p) => {
  const eq = p.indexOf('=');
  if (eq < 1) {
    console.error(`owner.mjs: expected RUN_ID=OWNER, got ${p}`);
    process.exit(2);
  }
  return { id: p.slice(0, eq), owner: p.slice(eq + 1) };
});
const base = url.replace(/\/+$/, '');

const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const userDataDir = mkdtempSync(join(tmpdir(), 'runbook-chromium-'));
const log = [];
let context = null;
let page = null;
let step = 'starting';

function say(what) {
  step = what;
  console.log(`owner.mjs: ${what}`);
}

async function cleanup() {
  try { if (context) await context.close(); } catch { /* already gone */ }
  try { rmSync(userDataDir, { recursive: true, force: true }); } catch { /* best effort */ }
}

async function fail(error) {
  console.error(`owner.mjs: FAILED while ${step}: ${error && error.stack || error}`);
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

  say(`opening ${base}/`);
  await page.goto(`${base}/`, { waitUntil: 'domcontentloaded' });
  say('entering the token');
  await page.fill('#token', token);
  await page.click('#save-token');
  await page.locator('#whoami').filter({ hasText: 'signed in as' }).waitFor();

  for (const run of runs) {
    say(`reading the owner of run ${run.id} in the runs list`);
    const owner = page.locator(`#runs [data-run="${run.id}"] [data-testid="run-owner"]`);
    await owner.filter({ hasText: `on ${run.owner}` }).waitFor();
    say(`run ${run.id}: ${(await owner.innerText()).trim()}`);
  }
  const shotOf = (what) => screenshot.replace(/(\.png)?$/, `-${what}.png`);
  await page.screenshot({ path: shotOf('list'), fullPage: true });

  const first = runs[0];
  say(`opening run ${first.id} from the list`);
  await page.locator(`#runs [data-run="${first.id}"]`).click();
  await page.waitForURL(`**/runs/${first.id}`);
  const detail = page.locator('#run-owner');
  await detail.filter({ hasText: first.owner }).waitFor();
  const label = await page.locator('#run-meta div', { has: detail }).locator('dt').textContent();
  if (label.trim() !== 'executed by') throw new Error(`the owner's label should be "executed by", is "${label}"`);
  say(`run ${first.id}: ${label.trim()} ${(await detail.innerText()).trim()}`);
  await page.screenshot({ path: shotOf('run'), fullPage: true });

  say('opening the history view');
  await page.click('a[href$="/history"]');
  await page.waitForURL('**/history**');
  for (const run of runs) {
    const cell = page.locator(`#history-rows [data-run="${run.id}"] [data-testid="history-owner"]`);
    await cell.filter({ hasText: run.owner }).waitFor();
    if (!(await cell.isVisible())) throw new Error(`the history's owner of run ${run.id} is hidden`);
    say(`history, run ${run.id}: executed by ${(await cell.innerText()).trim()}`);
  }
  const header = page.locator('#history-table th.owner-col');
  if (!(await header.isVisible())) throw new Error('the history has no visible "Executed by" column');
  await page.screenshot({ path: shotOf('history'), fullPage: true });

  clearTimeout(watchdog);
  await cleanup();
  console.log('owner.mjs: ok');
  process.exit(0);
} catch (e) {
  clearTimeout(watchdog);
  await fail(e);
}
