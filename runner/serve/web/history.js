// The history view of the web page of `runbook serve` (#history-view at /history): runs filtered
// by runbook, state, who started them and when. The filter lives in the page's address
// (/history?runbook=…&state=…&started_by=…&since=…&until=…), under the names GET /api/v1/runs
// takes, and is passed to it as it stands: serve does the filtering, and refuses a value it
// cannot read with a message naming the parameter, shown here beside the form. Times in the
// address are RFC 3339 (UTC); the form shows them in the browser's time zone.
'use strict';
(() => {
  const page = window.runbookPage;
  const { h, show, setText, badge, fmtTime } = page;
  const $ = (id) => document.getElementById(id);
  const FIELDS = { runbook: 'h-runbook', state: 'h-state', started_by: 'h-started-by', since: 'h-since', until: 'h-until' };
  const LIMIT = 200;
  const REFRESH_MS = 3000;

  let gen = 0;
  let timer = 0;
  const rows = new Map();
  const runbooks = new Set();
  const starters = new Set();

  const pad = (n) => String(n).padStart(2, '0');
  /** An RFC 3339 time as a datetime-local value in the browser's time zone ('' if unreadable). */
  function localValue(iso) {
    const d = new Date(iso);
    if (isNaN(d)) return '';
    return d.getFullYear() + '-' + pad(d.getMonth() + 1) + '-' + pad(d.getDate()) + 'T' +
      pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds());
  }
  /** A datetime-local value (the browser's time zone) as RFC 3339 UTC. */
  function isoValue(local) {
    const d = new Date(local);
    return isNaN(d) ? '' : d.toISOString().replace('.000Z', 'Z');
  }

  /** Fills the form from the address. A time keeps its exact value until the field is edited. */
  function fillForm(query) {
    for (const [name, id] of Object.entries(FIELDS)) {
      const input = $(id);
      const value = query.get(name) || '';
      input.removeAttribute('aria-invalid');
      if (input.type === 'datetime-local') {
        input.value = value ? localValue(value) : '';
        input.dataset.iso = value;
        input.dataset.shown = input.value;
      } else {
        // A list of states (`failed,aborted`) from a shared link gets an option of its own.
        if (input.tagName === 'SELECT' && value && ![...input.options].some((o) => o.value === value)) {
          input.append(h('option', { value }, value));
        }
        input.value = value;
      }
    }
  }

  /** The filter the form says, as the address's query. */
  function formQuery() {
    const q = new URLSearchParams();
    for (const [name, id] of Object.entries(FIELDS)) {
      const input = $(id);
      let value = input.value.trim();
      if (input.type === 'datetime-local') {
        value = value && value === input.dataset.shown && input.dataset.iso ? input.dataset.iso : (value ? isoValue(value) : '');
      }
      if (value) q.set(name, value);
    }
    return q;
  }

  function open(query) {
    show($('history-view'), true);
    document.title = 'history · runbook';
    fillForm(query);
    $('history-title').focus();
    loadRunbooks();
    gen++;
    load(gen);
  }

  function stop() {
    gen++;
    clearTimeout(timer);
    show($('history-view'), false);
  }

  async function loadRunbooks() {
    try {
      const list = await page.api('/runbooks');
      for (const b of Array.isArray(list) ? list : []) runbooks.add(String(b.name));
      fillList('h-runbooks', runbooks);
    } catch (_) {
      // The list only helps typing: the filter works without it.
    }
  }

  function fillList(id, values) {
    $(id).replaceChildren(...[...values].sort().map((v) => h('option', { value: v })));
  }

  async function load(g) {
    clearTimeout(timer);
    if (g !== gen) return;
    if (!document.hidden) {
      const asked = location.search;
      const q = new URLSearchParams(asked);
      if (!q.has('limit')) q.set('limit', String(LIMIT));
      try {
        const runs = await page.api('/runs?' + q.toString());
        if (g !== gen) return;
        show($('history-error'), false);
        render(Array.isArray(runs) ? runs : [], Number(q.get('limit')));
        $('history-view').dataset.shown = asked; // what the list shows (for tests)
      } catch (e) {
        if (g !== gen || e.status === 401) return;
        refuse(e);
        $('history-view').dataset.shown = asked;
        return; // a bad filter stays bad: no polling until it is changed
      }
    }
    if (g === gen) timer = setTimeout(() => load(g), REFRESH_MS);
  }

  /** Shows serve's refusal, and marks the field it names. */
  function refuse(e) {
    setText($('history-error'), (e.status === 400 ? 'This filter cannot be used: ' : 'Could not load the runs: ') + e.message);
    show($('history-error'), true);
    $('history-rows').replaceChildren();
    rows.clear();
    show($('history-empty'), false);
    setText($('history-count'), '');
    const named = /`([a-z_]+)`/.exec(e.message);
    const id = named && FIELDS[named[1]];
    if (id) $(id).setAttribute('aria-invalid', 'true');
  }

  function render(runs, limit) {
    const body = $('history-rows');
    const seen = new Set();
    let prev = null;
    for (const r of runs) {
      const id = String(r.id);
      seen.add(id);
      runbooks.add(String(r.runbook));
      starters.add(String(r.started_by));
      let row = rows.get(id);
      if (!row) {
        row = h('tr', { dataset: { run: id } },
          h('td', { 'data-label': 'Run' }, h('a', { class: 'mono', href: page.BASE + '/runs/' + encodeURIComponent(id), dataset: { nav: '' } }, id)),
          h('td', { 'data-label': 'Runbook', class: 'book' }),
          h('td', { 'data-label': 'State' }),
          h('td', { 'data-label': 'Started by' }),
          h('td', { 'data-label': 'Executed by', class: 'owner-col mono', dataset: { testid: 'history-owner' } }),
          h('td', { 'data-label': 'Started at' }, h('time')));
        rows.set(id, row);
      }
      const [, bookEl, stateEl, whoEl, ownerEl, whenEl] = row.children;
      setText(bookEl, String(r.runbook || ''));
      const state = String(r.state);
      if (stateEl.dataset.state !== state) {
        stateEl.dataset.state = state;
        stateEl.replaceChildren(badge(state));
        stateEl.title = r.reason ? String(r.reason) : '';
      }
      setText(whoEl, String(r.started_by || ''));
      setText(ownerEl, r.owner ? String(r.owner) : '');
      const time = whenEl.firstChild;
      time.setAttribute('datetime', String(r.created_at || ''));
      setText(time, fmtTime(r.created_at));
      const want = prev ? prev.nextSibling : body.firstChild;
      if (want !== row) body.insertBefore(row, want);
      prev = row;
    }
    for (const [id, row] of rows) {
      if (!seen.has(id)) { row.remove(); rows.delete(id); }
    }
    // The executor column only on a journal shared by several executors (etcd).
    $('history-table').classList.toggle('has-owners', runs.some((r) => !!r.owner));
    show($('history-empty'), runs.length === 0);
    setText($('history-count'), runs.length >= limit
      ? 'the newest ' + runs.length + ' runs (narrow the filter to see older ones)'
      : runs.length + (runs.length === 1 ? ' run' : ' runs'));
    fillList('h-runbooks', runbooks);
    fillList('h-starters', starters);
  }

  /** Shows the filter's list at its own address (a new history entry, so Back undoes it). */
  function apply(query) {
    const qs = query.toString();
    window.history.pushState(null, '', page.BASE + '/history' + (qs ? '?' + qs : ''));
    fillForm(query);
    gen++;
    load(gen);
  }

  $('history-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    apply(formQuery());
  });
  $('h-clear').addEventListener('click', () => {
    apply(new URLSearchParams());
    $('h-runbook').focus();
  });
  document.addEventListener('visibilitychange', () => {
    if (!document.hidden && !$('history-view').hidden) { gen++; load(gen); }
  });

  page.addView('/history', { open, close: stop });
})();
