// The script of the web page of `runbook serve` (index.html says what the page does). Loaded
// from this file only: serve's Content-Security-Policy allows no inline script, no inline event
// handler and no style attribute, so everything is wired here with addEventListener and
// styled through classes of app.css.
'use strict';
(() => {
  // ------------------------------------------------------------------ basics
  const TOKEN_KEY = 'runbook.token';
  // The page may sit under a prefix (a reverse proxy): everything before `/runs/…` (or the
  // views' `/new`, `/history`, `/schedules`) is the base.
  const BASE = location.pathname.replace(/\/(runs\/[^/]*|new|history|schedules)\/?$/, '').replace(/\/+$/, '');
  const API = BASE + '/api/v1';
  const TERMINAL = new Set(['succeeded', 'failed', 'aborted']);
  const $ = (id) => document.getElementById(id);

  /** An element with attributes and children; strings become text nodes (never parsed as HTML). */
  function h(tag, props, ...kids) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v == null || v === false) continue;
      if (k === 'class') el.className = v;
      else if (k === 'dataset') Object.assign(el.dataset, v);
      else if (k === 'text') el.textContent = v;
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    for (const kid of kids.flat()) {
      if (kid == null || kid === false) continue;
      el.append(kid instanceof Node ? kid : String(kid));
    }
    return el;
  }
  function show(el, on) { el.hidden = !on; }
  function setText(el, text) { if (el.textContent !== text) el.textContent = text; }
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const stateClass = (word) => 's-' + String(word || '').replace(/[^a-z-]/g, '');

  function badge(word, extra) {
    const cls = word === 'failed (tolerated)' ? 's-tolerated' : stateClass(word);
    return h('span', { class: 'badge ' + cls + (extra ? ' ' + extra : '') }, word);
  }

  function fmtDuration(ms) {
    if (ms == null) return '';
    if (ms < 1000) return ms + ' ms';
    const s = ms / 1000;
    if (s < 60) return s.toFixed(s < 10 ? 2 : 1) + ' s';
    const m = Math.floor(s / 60), rs = Math.floor(s % 60);
    if (m < 60) return m + ' m ' + String(rs).padStart(2, '0') + ' s';
    return Math.floor(m / 60) + ' h ' + String(m % 60).padStart(2, '0') + ' m';
  }
  function pad(n) { return String(n).padStart(2, '0'); }
  function fmtTime(iso) {
    if (!iso) return '';
    const d = new Date(iso);
    if (isNaN(d)) return String(iso);
    const now = new Date();
    const hms = pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds());
    if (d.toDateString() === now.toDateString()) return 'today ' + hms;
    return d.getFullYear() + '-' + pad(d.getMonth() + 1) + '-' + pad(d.getDate()) + ' ' + hms;
  }
  /** A sortable key for an RFC 3339 time with up to nanoseconds (Date keeps only milliseconds). */
  function timeKey(iso) {
    const m = /\.(\d+)/.exec(iso || '');
    const ms = Date.parse(iso);
    const sub = m ? m[1].slice(3).padEnd(6, '0').slice(0, 6) : '000000';
    return String(isNaN(ms) ? 0 : ms).padStart(15, '0') + sub;
  }

  // ------------------------------------------------------------------ messages
  function showError(text) {
    const el = $('error');
    setText(el, text || '');
    show(el, !!text);
    if (text) el.scrollIntoView({ block: 'nearest' });
  }
  let noticeTimer = 0;
  function showNotice(text) {
    setText($('notice'), text || '');
    show($('notice'), !!text);
    clearTimeout(noticeTimer);
    if (text) noticeTimer = setTimeout(() => show($('notice'), false), 6000);
  }

  // ------------------------------------------------------------------ the API
  let token = sessionStorage.getItem(TOKEN_KEY) || '';
  let me = null;

  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  async function api(path, opts = {}) {
    if (!token) throw new ApiError(401, 'a bearer token is required');
    const headers = { Authorization: 'Bearer ' + token, Accept: 'application/json' };
    const init = { method: opts.method || 'GET', headers, cache: 'no-store', signal: opts.signal };
    if (opts.body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(opts.body);
    }
    let res;
    try {
      res = await fetch(API + path, init);
    } catch (e) {
      if (e && e.name === 'AbortError') throw e;
      throw new ApiError(0, 'cannot reach the server (' + (e && e.message || e) + ')');
    }
    return handle(res);
  }

  async function handle(res) {
    const text = await res.text();
    let body = null;
    try { body = text ? JSON.parse(text) : null; } catch (_) { body = null; }
    if (!res.ok) {
      const message = (body && typeof body.error === 'string') ? body.error
        : (text.trim() || res.status + ' ' + res.statusText);
      const err = new ApiError(res.status, message);
      err.body = body; // the error body: `params` names the parameters a problem is about
      if (res.status === 401) unauthorized(message);
      throw err;
    }
    return body;
  }

  // ------------------------------------------------------------------ the token
  function unauthorized(message) {
    me = null;
    stopEverything();
    sessionStorage.removeItem(TOKEN_KEY);
    const had = !!token;
    token = '';
    const el = $('auth-error');
    el.className = 'alert bad';
    el.textContent = had
      ? 'The token is not known to this server (' + message + '). Check it and enter it again.'
      : 'Enter your API token to see the runs.';
    show(el, true);
    showSignedOut();
  }

  function showSignedOut() {
    show($('token-form'), true);
    show($('whoami'), false);
    show($('change-token'), false);
    show($('forget-token'), false);
    show($('list-view'), false);
    show($('run-view'), false);
    $('token').focus();
  }

  function showSignedIn() {
    show($('token-form'), false);
    show($('auth-error'), false);
    const who = $('whoami');
    who.replaceChildren('signed in as ', h('b', null, me));
    show(who, true);
    show($('change-token'), true);
  }

  async function signIn() {
    try {
      const body = await api('/whoami');
      me = body && body.name;
      showSignedIn();
      route();
    } catch (e) {
      if (e.status === 401) return; // unauthorized() showed the form and the message
      showError('Could not check the token: ' + e.message);
      show($('token-form'), true);
    }
  }

  $('token-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const value = $('token').value.trim();
    if (!value) {
      $('auth-error').className = 'alert bad';
      setText($('auth-error'), 'Enter your API token first.');
      show($('auth-error'), true);
      return;
    }
    token = value;
    sessionStorage.setItem(TOKEN_KEY, value);
    $('token').value = '';
    showError('');
    signIn();
  });
  $('change-token').addEventListener('click', () => {
    show($('token-form'), true);
    show($('forget-token'), true);
    $('token').focus();
  });
  $('forget-token').addEventListener('click', () => {
    sessionStorage.removeItem(TOKEN_KEY);
    token = '';
    me = null;
    stopEverything();
    $('auth-error').className = 'alert info';
    setText($('auth-error'), 'The token is forgotten. Enter a token to go on.');
    show($('auth-error'), true);
    showSignedOut();
  });

  // ------------------------------------------------------------------ routing
  function currentRunId() {
    const m = /\/runs\/([^/]+)\/?$/.exec(location.pathname);
    return m ? decodeURIComponent(m[1]) : null;
  }
  function go(path) {
    if (location.pathname !== path) history.pushState(null, '', path);
    route();
  }
  function route() {
    if (!me) return;
    showError('');
    markNav();
    closeViews();
    const view = viewAt(location.pathname.slice(BASE.length));
    if (view) {
      stopList();
      stopRun();
      show($('list-view'), false);
      show($('run-view'), false);
      view.open(new URLSearchParams(location.search));
      return;
    }
    const id = currentRunId();
    if (id) openRun(id); else openList();
  }
  window.addEventListener('popstate', route);
  document.addEventListener('click', (ev) => {
    // In-page navigation for plain left clicks on our own links (new tabs etc. still work).
    const a = ev.target.closest && ev.target.closest('a[data-nav]');
    if (!a || ev.defaultPrevented || ev.button !== 0 || ev.metaKey || ev.ctrlKey || ev.shiftKey || ev.altKey) return;
    ev.preventDefault();
    go(a.getAttribute('href'));
  });
  $('home').setAttribute('href', BASE + '/');
  $('home').dataset.nav = '';
  $('back').setAttribute('href', BASE + '/');
  $('back').dataset.nav = '';
  for (const a of document.querySelectorAll('[data-view-link]')) a.setAttribute('href', BASE + a.dataset.viewLink);
  /** Marks the header's link to the view shown (the runs list's for a run). */
  function markNav() {
    const here = location.pathname.slice(BASE.length).replace(/\/+$/, '') || '/';
    for (const a of document.querySelectorAll('[data-view-link]')) {
      const on = a.dataset.viewLink === here || (a.dataset.viewLink === '/' && here.startsWith('/runs/'));
      if (on) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
    }
  }

  function stopEverything() {
    stopList();
    stopRun();
    closeViews();
  }

  // ------------------------------------------------------------------ extensions
  // The parts of the page in files of their own (start.js: the catalogue and start form;
  // output.js: a step's output; timeline.js: the run's timeline; controls.js: the run controls;
  // history.js and schedules.js: the history and schedules views) register here through
  // window.runbookPage once this file has run. A view owns a path below the base (`/new`,
  // `/history`, `/schedules`); a run part is told when a run opens (reset), when its view is
  // rendered (render), of each part of a running step's output (output), and when the run
  // closes (stop).
  const views = new Map();
  const runParts = [];
  function viewAt(path) { return views.get(path.replace(/\/+$/, '')) || null; }
  function closeViews() { for (const v of views.values()) if (v.close) v.close(); }
  function eachPart(method, ...args) {
    for (const part of runParts) {
      if (typeof part[method] !== 'function') continue;
      try { part[method](...args); } catch (e) { console.error(e); }
    }
  }

  // ------------------------------------------------------------------ the runs list
  let listTimer = 0;
  let listGen = 0;
  const rows = new Map();

  function openList() {
    stopRun();
    show($('run-view'), false);
    show($('list-view'), true);
    document.title = 'runs · runbook';
    listGen++;
    loadRuns(listGen);
  }
  function stopList() {
    listGen++;
    clearTimeout(listTimer);
  }

  async function loadRuns(gen) {
    clearTimeout(listTimer);
    if (gen !== listGen) return;
    if (!document.hidden) {
      try {
        const filter = $('state-filter').value;
        const runs = await api('/runs?limit=200' + (filter ? '&state=' + encodeURIComponent(filter) : ''));
        if (gen !== listGen) return;
        renderRuns(Array.isArray(runs) ? runs : []);
        setText($('runs-updated'), 'updated ' + fmtTime(new Date().toISOString()).replace('today ', ''));
        if ($('error').dataset.source === 'list') { showError(''); delete $('error').dataset.source; }
      } catch (e) {
        if (gen !== listGen || e.status === 401) return;
        showError('Could not load the runs: ' + e.message);
        $('error').dataset.source = 'list';
      }
    }
    if (gen === listGen) listTimer = setTimeout(() => loadRuns(gen), 2000);
  }
  $('state-filter').addEventListener('change', () => { listGen++; loadRuns(listGen); });
  document.addEventListener('visibilitychange', () => {
    if (!document.hidden && me && !$('list-view').hidden) { listGen++; loadRuns(listGen); }
  });

  function renderRuns(runs) {
    runs.sort((a, b) => (timeKey(b.created_at) < timeKey(a.created_at) ? -1 : timeKey(b.created_at) > timeKey(a.created_at) ? 1 : 0));
    const list = $('runs');
    const seen = new Set();
    let prev = null;
    for (const r of runs) {
      const id = String(r.id);
      seen.add(id);
      let row = rows.get(id);
      if (!row) {
        row = h('a', { class: 'run-row', role: 'listitem', href: BASE + '/runs/' + encodeURIComponent(id), dataset: { run: id, nav: '', testid: 'run-row' } },
          h('span', { class: 'state' }), h('span', { class: 'book' }), h('span', { class: 'id mono' }),
          h('span', { class: 'who' }), h('span', { class: 'when' }));
        rows.set(id, row);
      }
      const [stateEl, bookEl, idEl, whoEl, whenEl] = row.children;
      const state = String(r.state);
      if (stateEl.dataset.state !== state) {
        stateEl.dataset.state = state;
        stateEl.replaceChildren(badge(state));
      }
      row.classList.toggle('is-waiting', state === 'waiting');
      setText(bookEl, String(r.runbook || ''));
      setText(idEl, id);
      // On a journal shared by several executors: which one executes it (its owner).
      const owner = r.owner ? String(r.owner) : '';
      if (whoEl.dataset.who !== String(r.started_by || '') || whoEl.dataset.owner !== owner) {
        whoEl.dataset.who = String(r.started_by || '');
        whoEl.dataset.owner = owner;
        whoEl.replaceChildren(whoEl.dataset.who,
          ...(owner ? [h('small', { class: 'owner mono', dataset: { testid: 'run-owner' }, title: 'executed by executor ' + owner }, 'on ' + owner)] : []));
      }
      setText(whenEl, fmtTime(r.created_at));
      whenEl.title = String(r.created_at || '');
      row.title = r.reason ? state + ': ' + r.reason : state;
      const want = prev ? prev.nextSibling : list.firstChild;
      if (want !== row) list.insertBefore(row, want);
      prev = row;
    }
    for (const [id, row] of rows) {
      if (!seen.has(id)) { row.remove(); rows.delete(id); }
    }
    let empty = list.querySelector('.empty');
    if (!runs.length && !empty) {
      empty = h('p', { class: 'empty' }, $('state-filter').value ? 'No run in this state.' : 'No runs yet. Start one with `runbook run` or POST /api/v1/runs.');
      list.append(empty);
    } else if (runs.length && empty) {
      empty.remove();
    }
  }

  // ------------------------------------------------------------------ a run
  // The run's detail (GET /runs/{id}) is the truth; records from the event stream update the
  // steps live in between, and gate / state records fetch the detail again.
  let run = null;     // { id, gen, detail, steps: Map, items: Map, records: [], lastSeq, ctrl }
  let runGen = 0;

  function stopRun() {
    runGen++;
    if (run && run.ctrl) run.ctrl.abort();
    if (run) eachPart('stop', run);
    run = null;
  }

  function openRun(id) {
    stopList();
    stopRun();
    const gen = runGen;
    run = { id, gen, detail: null, steps: new Map(), items: new Map(), records: [], lastSeq: 0, ctrl: new AbortController(), detailBusy: false, detailAgain: false };
    show($('list-view'), false);
    show($('run-view'), true);
    setText($('run-title'), 'run ' + id);
    setText($('run-state'), '…');
    $('run-state').className = 'badge';
    $('run-meta').replaceChildren();
    $('steps').replaceChildren();
    show($('gate'), false);
    show($('attention'), false);
    show($('run-reason'), false);
    show($('run-note'), false);
    $('comment').value = '';
    askSecrets([]);
    setText($('gate-status'), '');
    setLive('');
    document.title = 'run ' + id + ' · runbook';
    eachPart('reset', run);
    refreshDetail().then(() => { if (run && run.gen === gen) follow(gen); });
  }

  async function refreshDetail() {
    const r = run;
    if (!r) return;
    if (r.detailBusy) { r.detailAgain = true; return; }
    r.detailBusy = true;
    try {
      do {
        r.detailAgain = false;
        let detail;
        try {
          detail = await api('/runs/' + encodeURIComponent(r.id), { signal: r.ctrl.signal });
        } catch (e) {
          if (e.name === 'AbortError' || e.status === 401 || r !== run) return;
          showError(e.status === 404 ? 'There is no run ' + r.id + ' (' + e.message + ').' : 'Could not load the run: ' + e.message);
          return;
        }
        if (r !== run) return;
        r.detail = detail;
        rebuildSteps(r);
        schedule();
      } while (r.detailAgain && r === run);
    } finally {
      r.detailBusy = false;
    }
  }

  /** The steps from the detail, then every streamed record newer than the detail. */
  function rebuildSteps(r) {
    r.steps = new Map();
    for (const s of r.detail.steps || []) {
      r.steps.set(s.path, {
        path: s.path, kind: s.kind, status: s.status, attempts: s.attempts,
        duration_ms: s.duration_ms, describe: s.describe, error: s.error, note: null,
      });
    }
    const since = timeKey(r.detail.updated_at);
    for (const rec of r.records) {
      if (timeKey(rec.at) > since) applyToSteps(r, rec);
    }
  }

  function stepOf(r, path) {
    let s = r.steps.get(path);
    if (!s) {
      s = { path, kind: null, status: 'pending', attempts: 0, duration_ms: null, describe: null, error: null, note: null };
      r.steps.set(path, s);
    }
    return s;
  }

  function applyToSteps(r, rec) {
    switch (rec.event) {
      case 'step_started': {
        const s = stepOf(r, rec.path);
        s.kind = rec.kind || s.kind;
        s.status = 'running';
        s.attempts = Math.max(s.attempts || 0, rec.attempt || 1);
        s.error = null; s.note = null;
        break;
      }
      case 'step_succeeded': {
        const s = stepOf(r, rec.path);
        s.status = 'ok'; s.duration_ms = rec.duration_ms; s.error = null; s.note = null;
        s.attempts = Math.max(s.attempts || 0, rec.attempt || 1);
        break;
      }
      case 'step_failed': {
        const s = stepOf(r, rec.path);
        s.status = rec.retry_at ? 'retrying' : (rec.tolerated ? 'failed (tolerated)' : 'failed');
        s.duration_ms = rec.duration_ms; s.error = rec.error;
        s.note = rec.retry_at ? 'next attempt ' + fmtTime(rec.retry_at) : null;
        break;
      }
      case 'step_interrupted': {
        const s = stepOf(r, rec.path);
        s.status = 'interrupted'; s.note = rec.reason;
        break;
      }
      case 'step_skipped': {
        const s = stepOf(r, rec.path);
        s.status = 'skipped'; s.note = 'skipped: ' + (rec.reason === 'when' ? '`when` was false' : rec.reason === 'check' ? 'its check found the effect in place' : 'an operator chose to skip it');
        break;
      }
      case 'state_changed':
        if (r.detail) { r.detail.state = rec.state; r.detail.reason = rec.reason || null; }
        break;
      default:
        break;
    }
  }

  function onRecord(r, rec) {
    if (typeof rec.seq === 'number') {
      if (rec.seq <= r.lastSeq) return; // a reconnect replays what we have
      r.lastSeq = rec.seq;
    }
    r.records.push(rec);
    if (rec.event === 'items_decided') r.items.set(rec.path, rec.items || []);
    applyToSteps(r, rec);
    switch (rec.event) {
      case 'state_changed':
      case 'gate_opened':
      case 'gate_decided':
      case 'gate_expired':
      case 'attention_needed':
      case 'operator_decided':
      case 'resumed':
      case 'source_reloaded':
        refreshDetail();
        break;
      default:
        break;
    }
    schedule();
  }

  let frame = 0;
  function schedule() {
    if (frame) return;
    frame = requestAnimationFrame(() => { frame = 0; renderRun(); });
  }

  // ------------------------------------------------------------------ the event stream
  function setLive(mode) {
    const el = $('live');
    el.className = mode === 'live' ? 'on' : mode === 'reconnecting' ? 'retry' : '';
    setText(el, mode === 'live' ? 'live' : mode === 'reconnecting' ? 'reconnecting…' : mode === 'ended' ? 'run ended' : '');
  }

  async function follow(gen) {
    let backoff = 1000;
    while (run && run.gen === gen) {
      const r = run;
      try {
        // output=true: the output of running steps too (output.js shows it).
        const res = await fetch(API + '/runs/' + encodeURIComponent(r.id) + '/events?until_end=true&output=true', {
          headers: { Authorization: 'Bearer ' + token, Accept: 'text/event-stream' },
          cache: 'no-store', signal: r.ctrl.signal,
        });
        if (!res.ok) { await handle(res); }
        setLive('live');
        backoff = 1000;
        await readSse(res.body, (type, data) => {
          if (r !== run) return;
          if (type === 'record') {
            let rec;
            try { rec = JSON.parse(data); } catch (_) { return; }
            onRecord(r, rec);
          } else if (type === 'output') {
            let chunk;
            try { chunk = JSON.parse(data); } catch (_) { return; }
            eachPart('output', r, chunk);
          } else if (type === 'lagged') {
            // The server dropped records for us: take the detail again and reconnect.
            refreshDetail();
          }
        });
      } catch (e) {
        if (e.name === 'AbortError' || e.status === 401) return;
        if (e.status === 404) { showError('There is no run ' + r.id + ' (' + e.message + ').'); setLive(''); return; }
      }
      if (!run || run.gen !== gen) return;
      const state = run.detail && run.detail.state;
      if (TERMINAL.has(state)) { setLive('ended'); refreshDetail(); return; }
      setLive('reconnecting');
      await sleep(backoff);
      backoff = Math.min(backoff * 2, 10000);
      refreshDetail();
    }
  }

  /** Reads server-sent events from a byte stream, calling onEvent(type, data) per frame. */
  async function readSse(body, onEvent) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buf = '';
    const flush = (frameText) => {
      let type = 'message';
      const data = [];
      for (const line of frameText.split('\n')) {
        if (!line || line[0] === ':') continue;
        const i = line.indexOf(':');
        const field = i < 0 ? line : line.slice(0, i);
        let value = i < 0 ? '' : line.slice(i + 1);
        if (value[0] === ' ') value = value.slice(1);
        if (field === 'event') type = value;
        else if (field === 'data') data.push(value);
      }
      if (data.length) onEvent(type, data.join('\n'));
    };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      buf = buf.replace(/\r\n?/g, '\n');
      let cut;
      while ((cut = buf.indexOf('\n\n')) >= 0) {
        const frameText = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        flush(frameText);
      }
    }
    if (buf.trim()) flush(buf);
  }

  // ------------------------------------------------------------------ rendering a run
  function parentOf(path) {
    if (path.endsWith(']')) return path.slice(0, path.lastIndexOf('['));
    const i = path.lastIndexOf('.');
    return i < 0 ? null : path.slice(0, i);
  }
  function labelOf(path) {
    if (path.endsWith(']')) return path.slice(path.lastIndexOf('['));
    const i = path.lastIndexOf('.');
    return i < 0 ? path : path.slice(i + 1);
  }

  /** Nests the steps by path: `roll[2].leader` under `roll[2]` under `roll`. */
  function buildTree(r) {
    const nodes = new Map();
    const roots = [];
    const ensure = (path) => {
      let n = nodes.get(path);
      if (n) return n;
      n = { path, step: null, children: [] };
      nodes.set(path, n);
      const parent = parentOf(path);
      if (parent) ensure(parent).children.push(n); else roots.push(n);
      return n;
    };
    for (const s of r.steps.values()) ensure(s.path).step = s;
    return roots;
  }

  /** A synthetic node (a loop iteration, an on_failure block) shows the worst of its children. */
  function rollup(node) {
    if (node.step) return node.step.status;
    const words = node.children.map(rollup);
    for (const w of ['failed', 'interrupted', 'retrying', 'waiting', 'running']) if (words.includes(w)) return w;
    if (words.length && words.every((w) => w === 'skipped')) return 'skipped';
    if (words.length && words.every((w) => w === 'ok' || w === 'skipped' || w === 'failed (tolerated)')) return 'ok';
    return 'pending';
  }

  function compactJson(v) {
    if (typeof v === 'string') return v;
    try { const t = JSON.stringify(v); return t.length > 80 ? t.slice(0, 77) + '…' : t; } catch (_) { return String(v); }
  }

  function renderNode(r, node, gates, openPath) {
    const s = node.step;
    let status = rollup(node);
    if (openPath && node.path === openPath && r.detail && r.detail.state === 'waiting') status = 'waiting';
    let label = labelOf(node.path);
    if (!s && node.path.endsWith(']')) {
      const loop = parentOf(node.path);
      const idx = Number(label.slice(1, -1));
      const items = r.items.get(loop);
      if (items && idx < items.length) label = label + ' → ' + compactJson(items[idx]);
    }
    const meta = [];
    if (s && s.attempts > 1) meta.push('attempt ' + s.attempts);
    if (s && s.duration_ms != null && status !== 'running') meta.push(fmtDuration(s.duration_ms));
    const li = h('li', { class: 'step' + (s ? '' : ' synthetic'), dataset: { path: node.path, status } },
      h('div', { class: 'row' },
        badge(status),
        h('span', { class: 'name' }, label),
        s && s.kind ? h('span', { class: 'kind' }, s.kind) : null,
        meta.length ? h('span', { class: 'meta' }, meta.join(' · ')) : null));
    if (s && s.describe) li.append(h('div', { class: 'desc' }, s.describe));
    const gate = gates.get(node.path);
    if (gate && gate.decision) {
      const d = gate.decision;
      li.append(h('div', { class: 'note decision' },
        (d.approved ? 'approved by ' : 'rejected by ') + d.by + (d.comment ? ': ' + d.comment : '')));
    } else if (gate && status === 'waiting') {
      li.append(h('div', { class: 'note' }, 'waiting for approval: ' + gate.prompt));
    }
    if (s && s.note) li.append(h('div', { class: 'note' }, s.note));
    if (s && s.error) li.append(h('pre', { class: 'err' }, s.error));
    if (node.children.length) li.append(h('ul', null, node.children.map((c) => renderNode(r, c, gates, openPath))));
    return li;
  }

  function renderRun() {
    const r = run;
    if (!r || !r.detail) return;
    const d = r.detail;
    const state = String(d.state || '');
    setText($('run-title'), String(d.runbook || 'run'));
    const st = $('run-state');
    setText(st, state);
    st.className = 'badge ' + stateClass(state);
    document.title = state + ' · ' + d.runbook + ' · runbook';
    setText($('run-reason'), d.reason ? String(d.reason) : '');
    show($('run-reason'), !!d.reason);

    const idle = (state === 'running' || state === 'sleeping') && d.active === false;
    setText($('run-note'), idle ? 'No process of this serve is executing the run (its process is gone): resume it with `runbook resume ' + d.run + '`.' : '');
    show($('run-note'), idle);

    const meta = [
      ['run', h('span', { class: 'mono', id: 'run-id' }, String(d.run))],
      ['started by', d.trigger ? String(d.started_by) + ' (schedule ' + d.trigger.schedule + ')' : String(d.started_by || '')],
      ['started', fmtTime(d.created_at)],
      ['last change', fmtTime(d.updated_at)],
    ];
    if (d.owner) meta.push(['executed by', h('span', { class: 'mono', id: 'run-owner' }, String(d.owner))]);
    if (d.lock) meta.push(['lock', h('span', { class: 'mono' }, String(d.lock))]);
    $('run-meta').replaceChildren(...meta.map(([k, v]) => h('div', null, h('dt', null, k), h('dd', null, v))));

    // The gate.
    const g = state === 'waiting' ? d.open_gate : null;
    if (g) {
      setText($('gate-path'), 'gate ' + g.path);
      setText($('gate-prompt'), String(g.prompt || ''));
      const fe = $('gate-four-eyes');
      if (g.four_eyes) {
        const starter = String(d.started_by || '');
        setText(fe, 'Four-eyes gate: someone other than ' + starter + ', who started this run, must approve.' +
          (me && me === starter ? ' That is you, so the server will refuse your approval.' : ''));
      }
      show(fe, !!g.four_eyes);
      // Who must approve, how many approvals are in, and what the expiry will mean.
      const rules = [];
      const need = Number(g.approvals || 1);
      const have = (g.approved_by || []).map(String);
      if (need > 1) rules.push(have.length + ' of ' + need + ' distinct approvals' + (have.length ? ' (' + have.join(', ') + ')' : '') + '.');
      if ((g.approvers || []).length) rules.push('Only ' + g.approvers.map(String).join(', ') + ' may decide.');
      if (g.expires_at) rules.push('Expires ' + fmtTime(g.expires_at) + '; then on_timeout: ' + String(g.on_timeout || 'fail') + '.');
      setText($('gate-rules'), rules.join(' '));
      show($('gate-rules'), rules.length > 0);
      if ($('gate').dataset.path !== g.path) {
        $('gate').dataset.path = g.path;
        $('comment').value = '';
        setText($('gate-status'), '');
      }
    } else {
      delete $('gate').dataset.path;
    }
    show($('gate'), !!g);

    // Needs attention.
    const att = d.attention;
    if (state === 'needs-attention' && att) {
      setText($('attention-text'), 'Step ' + att.path + ' was in flight when its process died, and it is not safe to run it again without a decision.');
      setText($('attention-detail'), String(att.detail || ''));
      setText($('attention-commands'), (att.commands || []).join('\n'));
    }
    show($('attention'), state === 'needs-attention' && !!att);

    // What happened: the events webhooks are told of, with their times.
    const happened = d.happened || [];
    $('happened').replaceChildren(...happened.map((e) => h('li', { dataset: { event: String(e.event) } },
      h('time', { class: 'muted', datetime: String(e.at) }, fmtTime(e.at)), ' ',
      badge(String(e.event)), ' ', String(e.text || ''))));
    show($('happened-panel'), happened.length > 0);

    // The steps.
    const gates = new Map((d.gates || []).map((x) => [x.path, x]));
    const roots = buildTree(r);
    morphSteps($('steps'), roots.map((n) => renderNode(r, n, gates, d.open_gate && d.open_gate.path)));
    show($('steps-empty'), roots.length === 0);
    eachPart('render', r, d);
  }

  /**
   * Puts the freshly rendered step items `fresh` (keyed by data-path) in `list`, reusing the
   * items already there: a reused item takes the fresh one's attributes and content, except
   * what other files keep in it (`data-keep`: a step's output), which stays in place — so its
   * state, its scroll position and the keyboard focus in it survive every update of the tree.
   */
  function morphSteps(list, fresh) {
    const old = new Map();
    for (const li of list.children) if (li.dataset.path != null) old.set(li.dataset.path, li);
    let prev = null;
    for (const f of fresh) {
      let li = old.get(f.dataset.path);
      if (li) {
        old.delete(f.dataset.path);
        li.className = f.className;
        li.dataset.status = f.dataset.status;
        const oldList = [...li.children].find((c) => c.tagName === 'UL');
        const freshList = [...f.children].find((c) => c.tagName === 'UL');
        for (const c of [...li.childNodes]) {
          if (c !== oldList && !(c.nodeType === 1 && c.hasAttribute('data-keep'))) c.remove();
        }
        const anchor = li.firstChild;
        for (const c of [...f.childNodes]) if (c !== freshList) li.insertBefore(c, anchor);
        if (freshList) {
          const inner = oldList || li.appendChild(h('ul'));
          morphSteps(inner, [...freshList.children]);
        } else if (oldList) {
          oldList.remove();
        }
      } else {
        li = f;
      }
      const want = prev ? prev.nextSibling : list.firstChild;
      if (want !== li) list.insertBefore(li, want);
      prev = li;
    }
    for (const li of old.values()) li.remove();
  }

  // ------------------------------------------------------------------ approve / reject
  let deciding = false;
  function setDeciding(on, text) {
    deciding = on;
    $('approve').disabled = on;
    $('reject').disabled = on;
    $('comment').readOnly = on;
    setText($('gate-status'), text || '');
  }

  async function decide(approved) {
    const r = run;
    if (!r || !r.detail || !r.detail.open_gate || deciding) return;
    const path = r.detail.open_gate.path;
    // An approval short of the number the gate needs is counted, and the gate stays open.
    const need = Number(r.detail.open_gate.approvals || 1);
    const have = (r.detail.open_gate.approved_by || []).length + 1;
    const comment = $('comment').value.trim();
    showError('');
    setDeciding(true, approved ? 'Approving…' : 'Rejecting…');
    try {
      await api('/runs/' + encodeURIComponent(r.id) + (approved ? '/approve' : '/reject'), {
        method: 'POST', body: { comment: comment || null, step: path, params: secretValues() }, signal: r.ctrl.signal,
      });
      if (r !== run) return;
      setDeciding(false, '');
      $('comment').value = '';
      askSecrets([]);
      if (approved && have < need) showNotice('Your approval of ' + path + ' is counted (' + have + ' of ' + need + '): the gate waits for another person.');
      else showNotice((approved ? 'Approved ' : 'Rejected ') + path + (approved ? ': the run goes on.' : ': the run fails.'));
      refreshDetail();
    } catch (e) {
      if (e.name === 'AbortError' || r !== run) return;
      setDeciding(false, '');
      if (e.status === 401) return;
      showError((approved ? 'Approval refused: ' : 'Rejection refused: ') + e.message);
      // A serve restarted since the run began has lost the secret parameters it was given:
      // ask for the ones the server names.
      const needed = [...String(e.message).matchAll(/secret parameter `([^`]+)` again/g)].map((m) => m[1]);
      if (needed.length) askSecrets(needed);
      refreshDetail();
    }
  }

  // Password fields for the secret parameters a decision must carry (none: hidden).
  function askSecrets(names) {
    const box = $('gate-secret-fields');
    const kept = secretValues();
    box.replaceChildren(...names.map((name) => {
      const input = h('input', { type: 'password', name, autocomplete: 'off', 'data-testid': 'secret-' + name });
      if (kept[name]) input.value = kept[name];
      return h('label', { class: 'secret' }, name, input);
    }));
    show($('gate-secrets'), names.length > 0);
  }

  function secretValues() {
    const out = {};
    for (const input of $('gate-secret-fields').querySelectorAll('input')) {
      if (input.value) out[input.name] = input.value;
    }
    return out;
  }

  let rejectArmed = 0;
  $('approve').addEventListener('click', () => decide(true));
  $('reject').addEventListener('click', () => {
    // Rejecting fails the run: ask for a second tap rather than a dialog.
    const btn = $('reject');
    if (!rejectArmed) {
      btn.classList.add('confirm');
      btn.textContent = 'Tap again to reject';
      rejectArmed = setTimeout(disarm, 4000);
      return;
    }
    disarm();
    decide(false);
  });
  function disarm() {
    clearTimeout(rejectArmed);
    rejectArmed = 0;
    $('reject').classList.remove('confirm');
    $('reject').textContent = 'Reject';
  }

  // ------------------------------------------------------------------ for the other files
  window.runbookPage = Object.freeze({
    BASE, API, h, show, setText, badge, stateClass, fmtDuration, fmtTime, timeKey,
    showError, showNotice, go,
    api,
    /** Who the token belongs to (null until signed in). */
    me: () => me,
    /** The run on the page (null on other views). */
    run: () => run,
    /** A view at `path` below the base: { open(query), close() }. */
    addView(path, view) { views.set(path, view); },
    /** A part of the run view: { reset(run), render(run, detail), output(run, chunk), stop(run) }. */
    addRunPart(part) { runParts.push(part); },
    /** Fetches the run's detail again (and renders it). */
    refreshRun: () => refreshDetail(),
    /** Opens run `id` afresh, its event stream too (a failed run taken up again goes on). */
    reopenRun: (id) => openRun(id),
  });

  // ------------------------------------------------------------------ start
  // Once every script of the page has run (they are deferred, in order), so that the views and
  // parts of the other files are registered before the first route.
  document.addEventListener('DOMContentLoaded', () => {
    if (token) {
      signIn();
    } else {
      setText($('auth-error'), 'Enter your API token to see the runs.');
      $('auth-error').className = 'alert info';
      show($('auth-error'), true);
      showSignedOut();
    }
  });
})();
