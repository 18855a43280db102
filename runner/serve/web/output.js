// A step's output on the run view of the web page of `runbook serve` (index.html says what the
// page does; app.js calls this part as a run opens, renders and streams).
//
// Each step that has an output gets a panel under its line in the step tree, opened and closed
// with its button (keyboard: Tab, Enter):
//
// - while the step runs, what it prints, as serve streams it (`output` events of
//   GET /runs/{id}/events?output=true): masked by serve exactly as the journal masks it, placed
//   by its offset (a part seen twice is shown once; a gap says output was missed), announced to
//   screen readers (aria-live), stderr set apart; the panel opens by itself unless the user
//   closed it;
// - once the step's outcome is journaled, its journaled output replaces that: stdout and stderr
//   (their last lines, with "Show all"), an exit code or signal, an HTTP status with its body and
//   headers, JSON pretty-printed (a shell's stdout that is JSON, an HTTP body that is JSON, and
//   any other output); a secret step's output is never shown.
//
// The panel lives in the step's item (data-keep), so app.js's updates of the tree leave it, its
// state and the keyboard focus in it alone.
'use strict';
(() => {
  const P = window.runbookPage;
  const { h, show, setText } = P;

  /** Lines shown of a stream or a document before "Show all". */
  const TAIL_LINES = 20;
  /** Characters of live output kept per step (older parts are dropped, and it says so). */
  const LIVE_KEEP = 200_000;
  /** Steps whose output is the engine's own (a loop's items, a verdict): no panel. */
  const NO_PANEL = new Set(['foreach', 'parallel', 'call', 'gate', 'sleep']);
  const encoder = new TextEncoder();

  let state = null;
  let ids = 0;

  function fresh() {
    return {
      scanned: 0,           // r.records read so far
      outcomes: new Map(),  // path → its latest step_succeeded / step_failed record
      started: new Map(),   // path → its latest step_started record
      live: new Map(),      // path → { attempt, bytes: {stdout, stderr}, parts: [{stream, text}], size, dropped }
      panels: new Map(),    // path → panel
    };
  }

  P.addRunPart({
    reset() { state = fresh(); },
    stop() { state = null; },
    render,
    output,
  });

  function scan(r) {
    for (; state.scanned < r.records.length; state.scanned++) {
      const rec = r.records[state.scanned];
      if (rec.event === 'step_started') state.started.set(rec.path, rec);
      else if (rec.event === 'step_succeeded' || rec.event === 'step_failed') {
        state.outcomes.set(rec.path, rec);
        const live = state.live.get(rec.path);
        if (live && live.attempt <= (rec.attempt || 1)) state.live.delete(rec.path);
      }
    }
  }

  /** The outcome of the step's latest attempt, once it is journaled. */
  function outcomeOf(path) {
    const rec = state.outcomes.get(path);
    const started = state.started.get(path);
    if (!rec) return null;
    if (started && (started.attempt || 1) > (rec.attempt || 1)) return null; // a newer attempt runs
    return rec;
  }

  function render(r) {
    if (!state) return;
    scan(r);
    for (const li of document.querySelectorAll('#steps li[data-path]')) {
      const path = li.dataset.path;
      const step = r.steps.get(path);
      if (!step || NO_PANEL.has(step.kind)) continue;
      const outcome = outcomeOf(path);
      const live = state.live.get(path);
      const running = step.status === 'running' || step.status === 'retrying';
      let mode = null;
      if (outcome && outcome.output != null && !(running && live)) mode = 'journaled';
      else if (running && (live || step.kind === 'shell' || step.kind === 'helm')) mode = 'live';
      if (!mode) continue;
      const panel = panelOf(li, path);
      const key = mode === 'live' ? 'live:' + (live ? live.attempt : 0) : 'rec:' + outcome.seq;
      if (panel.key !== key) {
        panel.key = key;
        panel.mode = mode;
        if (mode === 'live') showLive(panel, path, live);
        else showJournaled(panel, path, outcome);
        setOpen(panel, panel.user != null ? panel.user : mode === 'live');
      }
    }
  }

  // ---------------------------------------------------------------- a panel
  function panelOf(li, path) {
    let panel = state.panels.get(path);
    if (panel && panel.el.parentElement === li) return panel;
    const id = 'out-' + (++ids);
    const toggle = h('button', { type: 'button', class: 'out-toggle link', 'aria-expanded': 'false', 'aria-controls': id },
      'Output');
    const summary = h('span', { class: 'out-sum muted' });
    const body = h('div', { class: 'out-body', id, role: 'region', 'aria-label': 'output of ' + path, hidden: true });
    const el = h('div', { class: 'out', 'data-keep': '' }, h('div', { class: 'out-head' }, toggle, summary), body);
    panel = { el, toggle, summary, body, key: null, mode: null, user: null, showAll: new Set(), livePre: null };
    toggle.addEventListener('click', () => {
      panel.user = toggle.getAttribute('aria-expanded') !== 'true';
      setOpen(panel, panel.user);
    });
    const list = [...li.children].find((c) => c.tagName === 'UL');
    li.insertBefore(el, list || null);
    state.panels.set(path, panel);
    return panel;
  }

  function setOpen(panel, open) {
    panel.toggle.setAttribute('aria-expanded', open ? 'true' : 'false');
    setText(panel.toggle, open ? 'Hide output' : 'Output');
    show(panel.body, open);
  }

  // ---------------------------------------------------------------- live
  function output(r, chunk) {
    if (!state || !chunk || typeof chunk.path !== 'string') return;
    scan(r);
    const path = chunk.path;
    const attempt = chunk.attempt || 1;
    const done = state.outcomes.get(path);
    if (done && (done.attempt || 1) >= attempt) return; // its journaled output is here already
    let live = state.live.get(path);
    if (!live || live.attempt < attempt) {
      live = { attempt, bytes: { stdout: 0, stderr: 0 }, parts: [], size: 0, dropped: false };
      state.live.set(path, live);
    } else if (live.attempt > attempt) {
      return;
    }
    const stream = chunk.stream === 'stderr' ? 'stderr' : 'stdout';
    const added = place(live, stream, Number(chunk.offset) || 0, String(chunk.text || ''));
    const panel = state.panels.get(path);
    if (panel && panel.mode === 'live' && panel.livePre && panel.key === 'live:' + attempt) {
      for (const part of added) panel.livePre.append(partNode(part));
      trimPre(panel.livePre, live);
      follow(panel.livePre);
      setText(panel.summary, liveSummary(live));
    } else {
      // The panel is not showing this attempt yet: the next render builds it from `live`.
      const rr = P.run();
      if (rr && rr.detail) render(rr);
    }
  }

  /** Adds a part at its offset; returns the parts to show (a gap note, the new text). */
  function place(live, stream, offset, text) {
    const have = live.bytes[stream];
    const size = encoder.encode(text).length;
    if (offset + size <= have) return []; // seen already
    const added = [];
    if (offset > have) added.push({ stream, text: '\n[… output missed here …]\n', gap: true });
    else if (offset < have) text = new TextDecoder().decode(encoder.encode(text).slice(have - offset));
    added.push({ stream, text });
    live.bytes[stream] = offset + size;
    for (const part of added) {
      live.parts.push(part);
      live.size += part.text.length;
    }
    while (live.size > LIVE_KEEP && live.parts.length > 1) {
      live.size -= live.parts.shift().text.length;
      live.dropped = true;
    }
    return added;
  }

  function partNode(part) {
    return h('span', { class: part.gap ? 'gap' : part.stream === 'stderr' ? 'stderr' : null }, part.text);
  }

  function trimPre(pre, live) {
    let size = 0;
    for (const n of pre.childNodes) size += n.textContent.length;
    while (size > LIVE_KEEP && pre.firstChild) {
      size -= pre.firstChild.textContent.length;
      pre.firstChild.remove();
      live.dropped = true;
    }
  }

  /** Keeps the view at the end of a live output unless the user scrolled up to read. */
  function follow(pre) {
    if (pre.dataset.pinned !== 'no') pre.scrollTop = pre.scrollHeight;
  }

  function liveSummary(live) {
    const lines = live ? live.parts.reduce((n, p) => n + (p.text.match(/\n/g) || []).length, 0) : 0;
    return 'running' + (live ? ' · ' + lines + ' line' + (lines === 1 ? '' : 's') + ' so far' : ' · nothing printed yet');
  }

  function showLive(panel, path, live) {
    const pre = h('pre', {
      class: 'out-text out-live', tabindex: '0', 'aria-live': 'polite', 'aria-relevant': 'additions',
      'aria-label': 'output of ' + path + ' as it runs',
    });
    pre.addEventListener('scroll', () => {
      pre.dataset.pinned = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4 ? 'yes' : 'no';
    });
    if (live) {
      if (live.dropped) pre.append(h('span', { class: 'gap' }, '[… earlier output not shown …]\n'));
      for (const part of live.parts) pre.append(partNode(part));
    }
    panel.livePre = pre;
    panel.body.replaceChildren(
      h('p', { class: 'out-note muted' }, 'Live: what the step prints, as it prints it (stderr in red). Its whole output is shown when it ends.'),
      pre);
    setText(panel.summary, liveSummary(live));
    requestAnimationFrame(() => follow(pre));
  }

  // ---------------------------------------------------------------- journaled
  const SHELL_KEYS = new Set(['exit_code', 'stdout', 'stderr', 'json', 'duration_ms', 'signal', 'stdout_truncated', 'stderr_truncated']);
  const HTTP_KEYS = new Set(['status', 'headers', 'body', 'json', 'duration_ms', 'saved']);

  function showJournaled(panel, path, rec) {
    panel.livePre = null;
    const out = rec.output;
    const parts = [];
    let summary = '';
    if (out === '***') {
      parts.push(h('p', { class: 'muted' }, 'This step\'s output is secret: it is never shown.'));
      summary = 'secret';
    } else if (isObject(out) && ('stdout' in out || 'stderr' in out)) {
      const facts = [];
      if (out.exit_code != null) facts.push('exit code ' + out.exit_code);
      if (out.signal) facts.push('killed by ' + out.signal);
      if (out.duration_ms != null) facts.push(P.fmtDuration(out.duration_ms));
      summary = facts.slice(0, 2).join(' · ');
      parts.push(h('p', { class: 'out-facts' }, facts.join(' · ')));
      if (out.json !== undefined) parts.push(textSection(panel, path, 'stdout (JSON)', pretty(out.json)));
      else if (out.stdout) parts.push(textSection(panel, path, 'stdout', out.stdout, out.stdout_truncated));
      if (out.stderr) parts.push(textSection(panel, path, 'stderr', out.stderr, out.stderr_truncated));
      if (!out.stdout && !out.stderr) parts.push(h('p', { class: 'muted' }, 'Nothing was printed.'));
      const rest = others(out, SHELL_KEYS);
      if (rest) parts.push(textSection(panel, path, 'more', pretty(rest)));
    } else if (isObject(out) && 'status' in out && ('body' in out || 'headers' in out || 'saved' in out)) {
      const facts = ['HTTP ' + out.status];
      if (out.duration_ms != null) facts.push(P.fmtDuration(out.duration_ms));
      summary = facts.join(' · ');
      parts.push(h('p', { class: 'out-facts' }, facts.join(' · ')));
      if (out.json !== undefined) parts.push(textSection(panel, path, 'body (JSON)', pretty(out.json)));
      else if (out.body != null && out.body !== '') parts.push(textSection(panel, path, 'body', String(out.body)));
      if (out.saved) parts.push(textSection(panel, path, 'saved', pretty(out.saved)));
      if (isObject(out.headers) && Object.keys(out.headers).length) {
        parts.push(h('details', { class: 'out-headers' }, h('summary', null, 'headers'),
          h('pre', { class: 'out-text', tabindex: '0' }, pretty(out.headers))));
      }
      const rest = others(out, HTTP_KEYS);
      if (rest) parts.push(textSection(panel, path, 'more', pretty(rest)));
    } else {
      const text = typeof out === 'string' ? out : pretty(out);
      summary = typeof out === 'string' ? 'text' : Array.isArray(out) ? 'a list' : isObject(out) ? 'JSON' : String(out);
      parts.push(textSection(panel, path, typeof out === 'string' ? 'output' : 'output (JSON)', text));
    }
    if (rec.event === 'step_failed') summary = 'failed · ' + summary;
    setText(panel.summary, summary);
    panel.body.replaceChildren(...parts);
  }

  function isObject(v) { return v != null && typeof v === 'object' && !Array.isArray(v); }

  function pretty(v) {
    try { return JSON.stringify(v, null, 2); } catch (_) { return String(v); }
  }

  /** The fields of `out` not shown otherwise, or null. */
  function others(out, known) {
    const rest = {};
    for (const [k, v] of Object.entries(out)) if (!known.has(k)) rest[k] = v;
    return Object.keys(rest).length ? rest : null;
  }

  /** A labelled text: its last lines, and a button that shows all of them (and back). */
  function textSection(panel, path, label, text, truncated) {
    const lines = text.replace(/\n$/, '').split('\n');
    const long = lines.length > TAIL_LINES;
    const key = label;
    const pre = h('pre', { class: 'out-text', tabindex: '0', 'aria-label': label + ' of ' + path });
    const note = h('p', { class: 'out-note muted' });
    const button = long ? h('button', { type: 'button', class: 'link show-all' }) : null;
    const paint = () => {
      const all = !long || panel.showAll.has(key);
      setText(pre, all ? text : lines.slice(-TAIL_LINES).join('\n') + (text.endsWith('\n') ? '\n' : ''));
      setText(note, (all ? '' : 'The last ' + TAIL_LINES + ' of ' + lines.length + ' lines.') +
        (truncated ? ' The step kept only the start of this stream (capture_limit).' : ''));
      show(note, !!note.textContent);
      if (button) setText(button, all ? 'Show the last ' + TAIL_LINES + ' lines' : 'Show all ' + lines.length + ' lines');
    };
    if (button) {
      button.addEventListener('click', () => {
        if (panel.showAll.has(key)) panel.showAll.delete(key); else panel.showAll.add(key);
        paint();
      });
    }
    paint();
    return h('section', { class: 'out-section', dataset: { label } },
      h('h3', { class: 'out-h' }, label), note, pre, button);
  }
})();
