// The schedules view, as an operator uses it, checked at each step by tests/web_controls.rs
// against `runbook schedule list` and `runbook status`.
//
//   node schedules.mjs URL TOKEN SCHEDULE SHOT_WIDE SHOT_NARROW
//
// Opens /schedules at 1280×800 and reports every schedule as the page shows it — cron, time
// zone, state, the next fire times (each <time datetime>) — (checkpoint `listed`). Pauses
// SCHEDULE (its next fires must disappear; checkpoint `paused`); triggers it with the keyboard
// (Enter on "Trigger now", Enter again to confirm) and waits for a `started` fire with its run in
// the recent fires (checkpoint `triggered`); triggers it again, which its unfinished run must
// turn into a `skipped` fire (checkpoint `skipped`); resumes it (checkpoint `resumed`, with the
// next fires again). Screenshots at 1280×800 and at 600 px wide; at both widths the page must
// not scroll sideways.

import { open, signIn, noSidewaysScroll } from './session.mjs';

const argv = process.argv.slice(2);
if (argv.length !== 5) {
  console.error('usage: node schedules.mjs URL TOKEN SCHEDULE SHOT_WIDE SHOT_NARROW');
  process.exit(2);
}
const [url, token, name, shotWide, shotNarrow] = argv;
const base = url.replace(/\/+$/, '');
const s = await open('schedules.mjs', { failShot: shotWide });
const page = s.page;
const card = page.locator(`article[data-schedule="${name}"]`);

/** Every schedule as the page shows it. */
async function shown() {
  return page.locator('article[data-schedule]').evaluateAll((cards) => cards.map((c) => {
    const dd = (label) => {
      const dt = [...c.querySelectorAll('.schedule-meta dt')].find((e) => e.textContent === label);
      return dt ? dt.nextElementSibling.textContent : null;
    };
    return {
      name: c.dataset.schedule,
      state: c.querySelector('.schedule-head .badge').textContent,
      cron: dd('cron'),
      timezone: dd('time zone'),
      next: [...c.querySelectorAll('.next time')].map((t) => t.getAttribute('datetime')),
      fires: [...c.querySelectorAll('.fires li')].map((li) => ({
        outcome: li.dataset.outcome,
        fire: li.querySelector('time').getAttribute('datetime'),
        run: li.dataset.run || null,
        text: li.textContent.replace(/\s+/g, ' ').trim(),
      })),
    };
  }));
}

async function mine() {
  return (await shown()).find((c) => c.name === name);
}

/** Waits until the card's first recent fire is `outcome`; returns it. */
async function firstFire(outcome, count) {
  s.say(`waiting for a ${outcome} fire at the top of the recent fires`);
  await page.waitForFunction(([n, o, k]) => {
    const items = document.querySelectorAll(`article[data-schedule="${n}"] .fires li`);
    return items.length === k && items[0].dataset.outcome === o;
  }, [name, outcome, count], { timeout: 15_000 });
  return (await mine()).fires[0];
}

await s.run(async () => {
  await signIn(s, `${base}/schedules`, token);
  await card.waitFor();
  await page.locator(`article[data-schedule="${name}"] .next time`).first().waitFor();
  const current = await page.evaluate(() => document.querySelector('[data-view-link="/schedules"]').getAttribute('aria-current'));
  if (current !== 'page') throw new Error('the navigation should mark Schedules as the current page');
  await noSidewaysScroll(s);
  await s.check('listed', { schedules: await shown() });

  s.say(`pausing ${name}`);
  await card.locator('[data-act="pause"]').click();
  await card.locator('.schedule-head .badge').filter({ hasText: 'paused' }).waitFor();
  await page.waitForFunction((n) => !document.querySelector(`article[data-schedule="${n}"] .next time`), name);
  await s.check('paused', { schedule: await mine() });

  s.say(`triggering ${name} with the keyboard`);
  await card.locator('[data-act="trigger"]').focus();
  await page.keyboard.press('Enter');
  await card.locator('[data-act="trigger"]').filter({ hasText: 'Press again' }).waitFor();
  await page.keyboard.press('Enter');
  const started = await firstFire('started', 1);
  if (!started.run) throw new Error(`a started fire names its run: ${JSON.stringify(started)}`);
  s.say(`waiting for the fire's run to show it waits at its gate: ${started.text}`);
  await card.locator(`.fires li[data-run="${started.run}"] .badge`).filter({ hasText: 'waiting' }).waitFor();
  await s.check('triggered', { schedule: await mine(), run: started.run });

  s.say(`triggering ${name} again while its run is unfinished`);
  await card.locator('[data-act="trigger"]').click();
  await card.locator('[data-act="trigger"]').filter({ hasText: 'Press again' }).waitFor();
  await card.locator('[data-act="trigger"]').click();
  await firstFire('skipped', 2);
  await s.check('skipped', { schedule: await mine() });

  s.say(`resuming ${name}`);
  await card.locator('[data-act="resume"]').click();
  await card.locator('.schedule-head .badge').filter({ hasText: 'active' }).waitFor();
  await page.locator(`article[data-schedule="${name}"] .next time`).first().waitFor();
  await s.check('resumed', { schedule: await mine() });

  s.say(`taking a screenshot at 1280×800: ${shotWide}`);
  await page.screenshot({ path: shotWide, fullPage: true });
  await page.setViewportSize({ width: 600, height: 900 });
  await noSidewaysScroll(s);
  s.say(`taking a screenshot at 600 px wide: ${shotNarrow}`);
  await page.screenshot({ path: shotNarrow, fullPage: true });
});
