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
// is $CHROMIUM or /usr/bin/chromium (see session.mjs, which also fails the script on a
// Content-Security-Policy violation); everything is bounded.

import { open, signIn } from './session.mjs';

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

const s = await open('owner.mjs', { failShot: screenshot, viewport: { width: 1000, height: 900 } });

await s.run(async () => {
  const { page, say } = s;
  await signIn(s, `${base}/`, token);

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

});
