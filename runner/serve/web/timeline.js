// A run's timeline on the run view of the web page of `runbook serve` (index.html says what the
// page does; app.js calls this part as a run opens and renders).
//
// One row per step path, in the order the steps started — so the iterations of a parallel loop
// are rows side by side in time — with a bar per attempt on an axis from the run's start: a slow
// member or a long wait is seen at a glance. The times are the journaled ones: an attempt starts
// at its `step_started` record and lasts its journaled `duration_ms` (the outcome's own record
// may be committed later, with what follows it); a gate's wait, from `gate_opened` to its
// verdict, is drawn on its bar. A running step's bar (and an open gate's) grows with the clock
// until its outcome comes. Skipped steps are a tick.
//
// Bars are SVG rectangles placed by percentages in their attributes (serve's Content-Security-
// Policy allows no style attribute); each row says in words what its bar shows, for screen
// readers, and the drawing itself is hidden from them.
'use strict';
(() => {
  const P = window.runbookPage;
  const { h, show } = P;
  const NS = 'http://www.w3.org/2000/svg';
  /** Rows drawn at most (a loop over thousands of items lists the rest as a number). */
  const MAX_ROWS = 400;
  /** Tick spacings to pick from, in ms. */
  const STEPS = [100, 200, 500, 1e3, 2e3, 5e3, 1e4, 15e3, 3e4, 6e4, 12e4, 3e5, 6e5, 9e5, 18e5, 36e5, 72e5, 144e5, 288e5, 864e5];
  /** Run states in which the clock still moves a bar. */
  const MOVING = new Set(['running', 'waiting', 'sleeping']);

  let timer = 0;
  let last = null; // { run, detail } drawn last, for the clock's redraws

  P.addRunPart({
    reset() { stopClock(); last = null; document.getElementById('timeline').replaceChildren(); show(document.getElementById('timeline-panel'), false); },
    stop() { stopClock(); last = null; },
    render(r, d) { last = { r, d }; draw(r, d); },
  });

  function stopClock() {
    clearInterval(timer);
    timer = 0;
  }

  function svg(tag, attrs, ...kids) {
    const el = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) if (v != null) el.setAttribute(k, String(v));
    for (const kid of kids.flat(Infinity)) if (kid != null) el.append(kid instanceof Node ? kid : String(kid));
    return el;
  }

  /** The rows: per path, its attempts (start, end or null, status, waits) and its skip. */
  function rowsOf(records, openGate) {
    const rows = new Map();
    const row = (path) => {
      let x = rows.get(path);
      if (!x) { x = { path, attempts: [], skippedAt: null, first: null }; rows.set(path, x); }
      return x;
    };
    const attemptOf = (x, n) => x.attempts.filter((a) => a.attempt === (n || 1)).pop() || x.attempts[x.attempts.length - 1];
    for (const rec of records) {
      const at = Date.parse(rec.at);
      if (isNaN(at) || typeof rec.path !== 'string') continue;
      switch (rec.event) {
        case 'step_started': {
          const x = row(rec.path);
          x.attempts.push({ attempt: rec.attempt || 1, kind: rec.kind, start: at, end: null, status: 'running', waits: [] });
          if (x.first == null) x.first = at;
          break;
        }
        case 'step_succeeded':
        case 'step_failed':
        case 'step_interrupted': {
          const x = rows.get(rec.path);
          const a = x && attemptOf(x, rec.attempt);
          if (!a) break;
          const waited = a.waits.reduce((m, w) => Math.max(m, w.end || 0), 0);
          a.end = Math.max(rec.duration_ms != null ? a.start + rec.duration_ms : at, waited, a.start);
          a.status = rec.event === 'step_succeeded' ? 'ok'
            : rec.event === 'step_interrupted' ? 'interrupted'
              : rec.retry_at ? 'retrying' : rec.tolerated ? 'tolerated' : 'failed';
          break;
        }
        case 'step_skipped': {
          const x = row(rec.path);
          if (!x.attempts.length) { x.skippedAt = at; if (x.first == null) x.first = at; }
          break;
        }
        case 'gate_opened': {
          const x = rows.get(rec.path);
          const a = x && attemptOf(x);
          if (a) a.waits.push({ start: at, end: null });
          break;
        }
        case 'gate_decided':
        case 'gate_expired': {
          const x = rows.get(rec.path);
          const a = x && attemptOf(x);
          const w = a && a.waits[a.waits.length - 1];
          // A gate needing several approvals stays open after one: its last verdict ends it.
          if (w) w.end = at;
          break;
        }
        default:
          break;
      }
    }
    for (const x of rows.values()) {
      for (const a of x.attempts) {
        if (a.end == null && a.kind === 'gate' && x.path === openGate) a.status = 'waiting';
      }
    }
    return [...rows.values()].sort((a, b) => a.first - b.first);
  }

  function depthOf(path) {
    return (path.match(/[.[]/g) || []).length;
  }

  function ticks(span) {
    const step = STEPS.find((s) => span / s <= 6) || STEPS[STEPS.length - 1];
    const out = [];
    for (let t = 0; t <= span; t += step) out.push(t);
    return out;
  }

  function rel(ms) {
    if (ms < 1000) return '+' + ms + ' ms';
    return '+' + P.fmtDuration(ms);
  }

  function draw(r, d) {
    const box = document.getElementById('timeline');
    const records = r.records || [];
    const rows = rowsOf(records, d && d.state === 'waiting' && d.open_gate ? d.open_gate.path : null);
    show(document.getElementById('timeline-panel'), rows.length > 0);
    if (!rows.length) { box.replaceChildren(); stopClock(); return; }
    const t0 = Date.parse(records[0].at);
    const lastAt = Date.parse(records[records.length - 1].at);
    const moving = MOVING.has(d && d.state) && d.active !== false;
    // The page's clock, never before the server's last record (the two clocks may differ).
    const now = Math.max(Date.now(), lastAt);
    const open = (a) => (moving || a.status === 'waiting' ? now : lastAt);
    let tEnd = lastAt;
    for (const x of rows) {
      for (const a of x.attempts) tEnd = Math.max(tEnd, a.end != null ? a.end : open(a));
    }
    const span = Math.max(tEnd - t0, 1000);
    const pct = (t) => (Math.min(Math.max((t - t0) / span, 0), 1) * 100).toFixed(3) + '%';
    const width = (from, to) => (Math.max((to - from) / span * 100, 0.4)).toFixed(3) + '%';
    const grid = ticks(span);

    const scale = svg('svg', { class: 'tl-scale', 'aria-hidden': 'true', focusable: 'false' },
      grid.map((t, i) => svg('text', { x: pct(t0 + t), y: '70%', 'text-anchor': i === 0 ? 'start' : 'middle', class: 'tl-tick' }, rel(t))));
    const axis = h('div', { class: 'tl-axis', 'aria-hidden': 'true' }, h('span', { class: 'tl-label' }), scale, h('span', { class: 'tl-time' }));

    const items = rows.slice(0, MAX_ROWS).map((x) => {
      const track = svg('svg', { class: 'tl-track', 'aria-hidden': 'true', focusable: 'false' },
        grid.map((t) => svg('line', { x1: pct(t0 + t), x2: pct(t0 + t), y1: '0', y2: '100%', class: 'tl-grid' })));
      const said = [];
      let total = 0;
      for (const a of x.attempts) {
        const end = a.end != null ? a.end : open(a);
        total += end - a.start;
        const title = x.path + (x.attempts.length > 1 ? ' attempt ' + a.attempt : '') + ': ' + word(a) +
          ', ' + rel(a.start - t0) + ' to ' + rel(end - t0) + ' (' + P.fmtDuration(end - a.start) + ')';
        said.push(title);
        track.append(svg('rect', { x: pct(a.start), width: width(a.start, end), y: '15%', height: '70%', rx: '3', class: 'tl-bar ' + P.stateClass(a.status) + (a.end == null ? ' tl-open' : '') },
          svg('title', null, title)));
        for (const w of a.waits) {
          const wEnd = w.end != null ? w.end : open(a);
          track.append(svg('rect', { x: pct(w.start), width: width(w.start, wEnd), y: '30%', height: '40%', class: 'tl-wait' },
            svg('title', null, x.path + ': waiting for approval ' + P.fmtDuration(wEnd - w.start))));
          said.push('waiting for approval for ' + P.fmtDuration(wEnd - w.start));
        }
      }
      if (x.skippedAt != null) {
        track.append(svg('rect', { x: pct(x.skippedAt), width: '0.4%', y: '15%', height: '70%', class: 'tl-bar s-skipped' }, svg('title', null, x.path + ': skipped')));
        said.push(x.path + ': skipped at ' + rel(x.skippedAt - t0));
      }
      const last = x.attempts[x.attempts.length - 1];
      return h('li', { class: 'tl-row tl-d' + Math.min(depthOf(x.path), 6), dataset: { path: x.path, status: last ? last.status : 'skipped' } },
        h('span', { class: 'tl-label mono', title: x.path }, x.path),
        track,
        h('span', { class: 'tl-time' }, x.attempts.length ? P.fmtDuration(total) : 'skipped'),
        h('span', { class: 'visually-hidden' }, said.join('; ')));
    });
    const more = rows.length > MAX_ROWS ? h('p', { class: 'muted tl-more' }, (rows.length - MAX_ROWS) + ' more steps are not drawn.') : null;
    box.replaceChildren(axis,
      h('ol', { class: 'tl-rows', 'aria-label': 'The steps on a time axis from the run\'s start (' + P.fmtTime(records[0].at) + ')' }, items),
      ...(more ? [more] : []));

    const growing = moving && rows.some((x) => x.attempts.some((a) => a.end == null));
    if (growing && !timer) {
      timer = setInterval(() => { if (last) draw(last.r, last.d); }, 1000);
    } else if (!growing) {
      stopClock();
    }
  }

  function word(a) {
    return { ok: 'succeeded', running: 'running', waiting: 'waiting for approval', retrying: 'failed, retried', tolerated: 'failed (tolerated)' }[a.status] || a.status;
  }
})();
