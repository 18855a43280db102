// The history view, as an operator uses it, checked by tests/web_controls.rs against
// `runbook history` and GET /api/v1/runs.
//
//   node history.mjs URL TOKEN SPEC SHOT_WIDE SHOT_NARROW
//
// SPEC (JSON): { "filters": [{ "name", "runbook"?, "state"?, "started_by"?, "since_ms"?,
// "until_ms"? }…], "bad": QUERY }. Opens /history at 1280×800 (in the browser's time zone: the
// test sets TZ), and for each filter fills the form as a person would — times typed in local
// time — and applies it (the first with Enter in a field, the others with the Apply button);
// each list is reported with the page's address (checkpoint `filter`). Then Back must show the
// previous filter's list again (checkpoint `back`); the last address, opened in a new tab that
// signs in afresh, must show the same list with the form filled in (checkpoint `shared`);
// /history?QUERY must show serve's refusal naming the parameter, the field marked invalid; a
// run's link must open its page in place. Screenshots at 1280×800 and 600 px wide, neither
// scrolling sideways.

import { open, signIn, noSidewaysScroll } from './session.mjs';

const argv = process.argv.slice(2);
if (argv.length !== 5) {
  console.error('usage: node history.mjs URL TOKEN SPEC SHOT_WIDE SHOT_NARROW');
  process.exit(2);
}
const [url, token, specText, shotWide, shotNarrow] = argv;
const spec = JSON.parse(specText);
const base = url.replace(/\/+$/, '');
const s = await open('history.mjs', { failShot: shotWide });

const pad = (n) => String(n).padStart(2, '0');
/** A time as a person types it in a datetime-local field: local time, to the second. */
function local(ms) {
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** Waits until the list shows what the address asks for; returns it as the page shows it. */
async function listed(page) {
  await page.waitForFunction(() => {
    const view = document.getElementById('history-view');
    return !view.hidden && view.dataset.shown === location.search;
  });
  return page.evaluate(() => ({
    query: location.search,
    rows: [...document.querySelectorAll('#history-rows tr')].map((tr) => tr.dataset.run),
    count: document.getElementById('history-count').textContent,
    inputs: Object.fromEntries(['h-runbook', 'h-state', 'h-started-by', 'h-since', 'h-until']
      .map((id) => [id, document.getElementById(id).value])),
  }));
}

await s.run(async () => {
  const page = s.page;
  await signIn(s, `${base}/history`, token);
  await page.evaluate(() => { window.__sameDocument = true; });
  let last = null;
  let before = null;
  for (const [i, f] of spec.filters.entries()) {
    s.say(`filter ${f.name}: ${JSON.stringify(f)}`);
    await page.fill('#h-runbook', f.runbook || '');
    await page.selectOption('#h-state', f.state || '');
    await page.fill('#h-started-by', f.started_by || '');
    await page.fill('#h-since', f.since_ms ? local(f.since_ms) : '');
    await page.fill('#h-until', f.until_ms ? local(f.until_ms) : '');
    if (i === 0) await page.press('#h-started-by', 'Enter');
    else await page.click('#h-apply');
    await page.waitForFunction((was) => location.search !== was, last ? last.query : '');
    before = last;
    last = await listed(page);
    await s.check('filter', { name: f.name, ...last });
  }

  s.say('going Back to the previous filter');
  await page.goBack();
  const back = await listed(page);
  if (before && back.query !== before.query) throw new Error(`Back should show ${before.query}, shows ${back.query}`);
  await s.check('back', { ...back });
  await page.goForward();
  await listed(page);

  s.say(`opening the last address in a new tab: ${last.query}`);
  const tab = await s.context.newPage();
  s.watch(tab);
  const other = { ...s, page: tab };
  await signIn(other, `${base}/history${last.query}`, token);
  const shared = await listed(tab);
  await s.check('shared', { ...shared });

  s.say(`opening /history?${spec.bad}`);
  await tab.goto(`${base}/history?${spec.bad}`, { waitUntil: 'domcontentloaded' });
  s.say('waiting for the refusal');
  await tab.locator('#history-error').waitFor({ state: 'visible' });
  const refusal = await tab.evaluate(() => ({
    error: document.getElementById('history-error').textContent,
    invalid: [...document.querySelectorAll('#history-form [aria-invalid="true"]')].map((e) => e.id),
    rows: document.querySelectorAll('#history-rows tr').length,
  }));
  await s.check('refused', refusal);
  await tab.close();

  s.say('opening the first run of the list by its link');
  const first = page.locator('#history-rows tr a').first();
  const id = await first.textContent();
  await first.click();
  await page.waitForURL(`**/runs/${id}`);
  await page.locator('#run-view').waitFor({ state: 'visible' });
  if (!(await page.evaluate(() => window.__sameDocument === true))) throw new Error('the run link reloaded the page: it must open in place');
  await page.goBack();
  await listed(page);

  await noSidewaysScroll(s);
  s.say(`taking a screenshot at 1280×800: ${shotWide}`);
  await page.screenshot({ path: shotWide, fullPage: true });
  await page.setViewportSize({ width: 600, height: 900 });
  await noSidewaysScroll(s);
  s.say(`taking a screenshot at 600 px wide: ${shotNarrow}`);
  await page.screenshot({ path: shotNarrow, fullPage: true });
});
