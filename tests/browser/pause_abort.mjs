// Pause, unpause and abort of running runs from their pages, as an operator would do it (with the
// keyboard for one of them), checked at each step by tests/web_controls.rs with `runbook status`.
//
//   node pause_abort.mjs URL TOKEN RUN_1 RUN_2 SCREENSHOT
//
// Both runs execute (they wait for a file that never comes). On RUN_1's page: the controls must
// offer exactly Pause and Abort (checkpoint `running`); a comment is typed and Pause pressed; the
// page must show the run paused with Unpause and Abort, the focus on Unpause (checkpoint
// `paused`); a comment is typed, Tab moves to Unpause and Enter presses it; the page must show the
// run running again (checkpoint `unpaused`); a comment is typed, Abort pressed twice (the second
// press confirms); the page must show it aborted with no control left (checkpoint `aborted`). On
// RUN_2's page, "abort without running the cleanup steps" is ticked before the abort (checkpoint
// `aborted-without-cleanup`). Each checkpoint reports the buttons shown.

import { open, signIn, shownActions, waitRunState } from './session.mjs';

const argv = process.argv.slice(2);
if (argv.length !== 5) {
  console.error('usage: node pause_abort.mjs URL TOKEN RUN_1 RUN_2 SCREENSHOT');
  process.exit(2);
}
const [url, token, run1, run2, shot] = argv;
const base = url.replace(/\/+$/, '');
const s = await open('pause_abort.mjs', { failShot: shot });
const page = s.page;

async function buttonsAre(want) {
  await page.waitForFunction((w) => {
    const shown = [...document.querySelectorAll('#control [data-action]')].filter((b) => !b.hidden).map((b) => b.dataset.action);
    return !document.getElementById('control').hidden && shown.join(' ') === w;
  }, want.join(' '), { timeout: 10_000 }).catch(async () => {
    throw new Error(`the controls should be ${want.join(', ')}; they are ${(await shownActions(s)).join(', ')}`);
  });
}

async function abort(comment) {
  await page.fill('#control-comment', comment);
  s.say('pressing Abort, then again to confirm');
  await page.click('#abort');
  await page.locator('#abort').filter({ hasText: 'Press again' }).waitFor();
  await page.click('#abort');
  await waitRunState(s, 'aborted');
  await page.locator('#control').waitFor({ state: 'hidden' });
}

await s.run(async () => {
  await signIn(s, `${base}/runs/${encodeURIComponent(run1)}`, token);
  await waitRunState(s, 'running');
  await buttonsAre(['pause', 'abort']);
  await s.check('running', { run: run1, buttons: await shownActions(s) });

  s.say('typing a comment and pressing Pause');
  await page.fill('#control-comment', 'paused from the browser');
  await page.click('#pause');
  await waitRunState(s, 'paused');
  await buttonsAre(['unpause', 'abort']);
  const focused = await page.evaluate(() => document.activeElement && document.activeElement.id);
  if (focused !== 'unpause') throw new Error(`after the pause the focus should be on Unpause (Pause is gone), it is on #${focused}`);
  await s.check('paused', { run: run1, buttons: await shownActions(s) });

  s.say('unpausing with the keyboard: a comment, Tab to Unpause, Enter');
  await page.focus('#control-comment');
  await page.keyboard.type('unpaused from the browser');
  await page.keyboard.press('Tab');
  const next = await page.evaluate(() => document.activeElement && document.activeElement.id);
  if (next !== 'unpause') throw new Error(`Tab from the comment should reach Unpause, it reached #${next}`);
  await page.keyboard.press('Enter');
  await waitRunState(s, 'running');
  await buttonsAre(['pause', 'abort']);
  await s.check('unpaused', { run: run1, buttons: await shownActions(s) });

  await abort('aborted from the browser');
  await s.check('aborted', { run: run1, buttons: await shownActions(s) });

  s.say(`opening run ${run2}`);
  await page.goto(`${base}/runs/${encodeURIComponent(run2)}`, { waitUntil: 'domcontentloaded' });
  await waitRunState(s, 'running');
  await buttonsAre(['pause', 'abort']);
  s.say('ticking "abort without running the cleanup steps"');
  await page.check('#no-cleanup');
  await abort('aborted without cleanup from the browser');
  await s.check('aborted-without-cleanup', { run: run2, buttons: await shownActions(s) });

  s.say(`taking a screenshot: ${shot}`);
  await page.screenshot({ path: shot, fullPage: true });
});
