// The schedules view of the web page of `runbook serve` (#schedules-view at /schedules): every
// schedule with its cron expression, time zone and policies, its next fire times and its recent
// fires (started — with the state of the run —, skipped, queued, missed, refused), and Pause /
// Resume / Trigger. Everything shown comes from GET /api/v1/schedules, which computes the next
// fires with the code `runbook schedule list` uses; the page only formats them (in the
// schedule's time zone, the exact time in each <time datetime>).
'use strict';
(() => {
  const page = window.runbookPage;
  const { h, show, setText, badge, fmtTime, fmtDuration } = page;
  const $ = (id) => document.getElementById(id);
  const REFRESH_MS = 3000;

  let gen = 0;
  let timer = 0;
  const cards = new Map(); // name → { el, parts, sig }

  /** A time as it reads in time zone `tz` (the browser's own if it does not know `tz`). */
  function inZone(iso, tz) {
    const d = new Date(iso);
    if (isNaN(d)) return String(iso);
    try {
      return new Intl.DateTimeFormat(undefined, {
        timeZone: tz, weekday: 'short', year: 'numeric', month: '2-digit', day: '2-digit',
        hour: '2-digit', minute: '2-digit', second: '2-digit', timeZoneName: 'short',
      }).format(d);
    } catch (_) {
      return fmtTime(iso);
    }
  }

  function open() {
    show($('schedules-view'), true);
    document.title = 'schedules · runbook';
    $('schedules-title').focus();
    gen++;
    load(gen);
  }

  function stop() {
    gen++;
    clearTimeout(timer);
    show($('schedules-view'), false);
  }

  async function load(g) {
    clearTimeout(timer);
    if (g !== gen) return;
    if (!document.hidden) {
      try {
        const list = await page.api('/schedules');
        if (g !== gen) return;
        render(Array.isArray(list) ? list : []);
        setText($('schedules-updated'), 'updated ' + fmtTime(new Date().toISOString()).replace('today ', ''));
      } catch (e) {
        if (g !== gen || e.status === 401) return;
        cards.forEach((c) => c.el.remove());
        cards.clear();
        setText($('schedules-empty'), 'Could not load the schedules: ' + e.message);
        show($('schedules-empty'), true);
      }
    }
    if (g === gen) timer = setTimeout(() => load(g), REFRESH_MS);
  }

  function render(list) {
    const box = $('schedules');
    const seen = new Set();
    let prev = null;
    for (const s of list) {
      const name = String(s.name);
      seen.add(name);
      let card = cards.get(name);
      if (!card) {
        card = build(name);
        cards.set(name, card);
      }
      update(card, s);
      const want = prev ? prev.nextSibling : box.firstChild;
      if (want !== card.el) box.insertBefore(card.el, want);
      prev = card.el;
    }
    for (const [name, card] of cards) {
      if (!seen.has(name)) { card.el.remove(); cards.delete(name); }
    }
    setText($('schedules-empty'), 'No schedules: declare `schedule:` in a runbook of ./runbooks or $RUNBOOK_PATH, or give serve --schedules FILE.');
    show($('schedules-empty'), list.length === 0);
  }

  /** A schedule's card; its buttons stay the same elements from one refresh to the next. */
  function build(name) {
    const slug = name.replace(/[^A-Za-z0-9_-]/g, '_');
    const title = h('h2', { id: 'schedule-' + slug }, name);
    const status = h('span', { class: 'badge' });
    const toggle = h('button', { type: 'button', dataset: { act: 'pause' } }, 'Pause');
    const trigger = h('button', { type: 'button', class: 'primary', dataset: { act: 'trigger' }, 'aria-label': 'Trigger ' + name + ' now' }, 'Trigger now');
    const meta = h('dl', { class: 'schedule-meta' });
    const next = h('ol', { class: 'next', 'aria-labelledby': 'schedule-' + slug + '-next' });
    const nextNone = h('p', { class: 'muted none' });
    const fires = h('ol', { class: 'fires', 'aria-labelledby': 'schedule-' + slug + '-fires' });
    const firesNone = h('p', { class: 'muted none' }, 'No fire yet.');
    const el = h('article', { class: 'panel schedule', dataset: { schedule: name }, 'aria-labelledby': 'schedule-' + slug },
      h('div', { class: 'schedule-head' }, title, status, h('span', { class: 'grow' }), h('div', { class: 'schedule-actions' }, toggle, trigger)),
      meta,
      h('div', { class: 'schedule-cols' },
        h('section', null, h('h3', { id: 'schedule-' + slug + '-next' }, 'Next fires'), next, nextNone),
        h('section', null, h('h3', { id: 'schedule-' + slug + '-fires' }, 'Recent fires'), fires, firesNone)));
    const card = { el, name, parts: { status, toggle, trigger, meta, next, nextNone, fires, firesNone }, sig: '', armed: 0 };
    toggle.addEventListener('click', () => setPaused(card, toggle.dataset.act === 'pause'));
    trigger.addEventListener('click', () => fire(card));
    return card;
  }

  function update(card, s) {
    const p = card.parts;
    const tz = String(s.timezone || 'UTC');
    // Next fires: always redrawn (the "in …" moves on); nothing in them takes the focus.
    const now = Date.now();
    p.next.replaceChildren(...(s.next || []).map((t) => h('li', null,
      h('time', { datetime: String(t) }, inZone(t, tz)),
      h('span', { class: 'muted' }, ' · in ' + fmtDuration(Math.max(0, Date.parse(t) - now))))));
    setText(p.nextNone, s.paused ? 'None while paused: Resume to fire again (what falls due meanwhile is not caught up).' : 'None.');
    show(p.nextNone, !(s.next || []).length);
    const sig = JSON.stringify([s.paused, s.runbook, s.cron, tz, s.overlap, s.catch_up, s.last_run, s.queued, s.history]);
    if (sig === card.sig) return;
    card.sig = sig;
    p.status.className = 'badge ' + (s.paused ? 's-paused' : 's-active');
    setText(p.status, s.paused ? 'paused' : 'active');
    p.toggle.dataset.act = s.paused ? 'resume' : 'pause';
    setText(p.toggle, s.paused ? 'Resume' : 'Pause');
    p.toggle.setAttribute('aria-label', (s.paused ? 'Resume ' : 'Pause ') + card.name);
    const item = (k, v) => h('div', null, h('dt', null, k), h('dd', null, v));
    const meta = [
      item('runbook', String(s.runbook || '')),
      item('cron', h('code', null, String(s.cron || ''))),
      item('time zone', tz),
      item('overlap', String(s.overlap || '')),
      item('catch-up', String(s.catch_up || '')),
    ];
    if ((s.queued || []).length) meta.push(item('queued', s.queued.length + ' fire' + (s.queued.length === 1 ? '' : 's') + ' waiting for the run before'));
    p.meta.replaceChildren(...meta);
    p.fires.replaceChildren(...(s.history || []).map((f) => fireItem(f, tz)));
    show(p.firesNone, !(s.history || []).length);
  }

  function fireItem(f, tz) {
    const outcome = String(f.outcome);
    const li = h('li', { dataset: { outcome } }, badge(outcome), ' ', h('time', { datetime: String(f.fire) }, inZone(f.fire, tz)));
    if (f.run) {
      const id = String(f.run);
      li.dataset.run = id;
      li.append(' → run ', h('a', { class: 'mono', href: page.BASE + '/runs/' + encodeURIComponent(id), dataset: { nav: '' } }, id));
      if (f.run_state) li.append(' ', badge(String(f.run_state)));
    }
    const why = {
      skipped: 'a run of it was unfinished (overlap: skip)',
      queued: 'waits for the unfinished run (overlap: queue)',
      missed: 'nothing was serving at the time',
    }[outcome];
    if (why) li.append(h('span', { class: 'muted' }, ' · ' + why));
    if (outcome === 'refused' && f.detail) li.append(h('span', { class: 'why' }, ' · ' + String(f.detail)));
    return li;
  }

  async function setPaused(card, paused) {
    const b = card.parts.toggle;
    b.disabled = true;
    page.showError('');
    try {
      await page.api('/schedules/' + encodeURIComponent(card.name) + (paused ? '/pause' : '/resume'), { method: 'POST', body: {} });
      page.showNotice((paused ? 'Paused ' : 'Resumed ') + card.name + (paused ? ': it fires no more until resumed.' : ': it fires from now on.'));
    } catch (e) {
      if (e.status !== 401) page.showError(e.message);
    } finally {
      b.disabled = false;
      reload();
    }
  }

  // Triggering starts a run: a second press confirms, rather than a dialog.
  async function fire(card) {
    const b = card.parts.trigger;
    if (!card.armed) {
      b.classList.add('confirm');
      setText(b, 'Press again to start a run');
      card.armed = setTimeout(() => disarm(card), 4000);
      return;
    }
    disarm(card);
    b.disabled = true;
    page.showError('');
    try {
      const fired = await page.api('/schedules/' + encodeURIComponent(card.name) + '/trigger', { method: 'POST', body: {} });
      const outcome = String(fired && fired.outcome);
      page.showNotice('Triggered ' + card.name + ': ' + (fired && fired.run ? 'run ' + fired.run + ' ' : '') + outcome +
        (fired && fired.detail ? ' (' + fired.detail + ')' : '') + '.');
    } catch (e) {
      if (e.status !== 401) page.showError(e.message);
    } finally {
      b.disabled = false;
      reload();
    }
  }

  /** Loads the schedules again now (if the view is still shown). */
  function reload() {
    if ($('schedules-view').hidden) return;
    gen++;
    load(gen);
  }

  function disarm(card) {
    clearTimeout(card.armed);
    card.armed = 0;
    card.parts.trigger.classList.remove('confirm');
    setText(card.parts.trigger, 'Trigger now');
  }

  document.addEventListener('visibilitychange', () => {
    if (!document.hidden && !$('schedules-view').hidden) { gen++; load(gen); }
  });

  page.addView('/schedules', { open, close: stop });
})();
