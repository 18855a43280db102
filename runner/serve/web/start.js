// The runbook catalogue and the start form of the web page of `runbook serve` (index.html says
// what the page does; app.js routes here for `/new`).
//
// `/new` lists the runbooks serve can run (GET /api/v1/runbooks) with their parameters;
// `/new?runbook=NAME` is a form generated from NAME's parameter declarations. The values are
// checked by the server with the command line's own rules — never here: POST /api/v1/plan
// answers either the plan (what `runbook plan` shows) or the problems, each naming its
// parameter (`params` of the error body), which are shown at their fields. The plan is shown
// before the run can be started; POST /api/v1/runs starts it, and its page opens live.
//
// Secret parameters are password fields: their value is read from the field when a request is
// sent, never kept in a variable, never written to the page, the URL or the browser's storage,
// and the fields are emptied once the run has started (or the form is left). The server never
// answers with a secret (the plan shows it masked).
'use strict';
(() => {
  const P = window.runbookPage;
  const { h, show, setText, api, go } = P;
  const $ = (id) => document.getElementById(id);

  let catalogue = null; // the answer of GET /runbooks, while the view is open
  let current = null;   // { book, fields: Map(name → { param, input, error }) } of the form
  let gen = 0;          // bumps when the view closes or changes: late answers are dropped
  let planned = false;  // the plan on screen is for the form as it is
  let busy = false;

  P.addView('/new', { open, close });
  $('new-run').setAttribute('href', P.BASE + '/new');

  function close() {
    gen++;
    if (!$('start-view').hidden) clearForm();
    show($('start-view'), false);
    catalogue = null;
  }

  async function open(query) {
    const g = ++gen;
    show($('start-view'), true);
    const name = query.get('runbook');
    document.title = (name ? 'start ' + name : 'start a run') + ' · runbook';
    setText($('start-title'), name ? 'Start ' + name : 'Start a run');
    show($('catalogue-part'), !name);
    show($('form-part'), false);
    $('to-runs').setAttribute('href', P.BASE + '/');
    $('to-catalogue').setAttribute('href', P.BASE + '/new');
    let list;
    try {
      list = await api('/runbooks');
    } catch (e) {
      if (g === gen && e.status !== 401) P.showError('Could not load the runbooks: ' + e.message);
      return;
    }
    if (g !== gen) return;
    catalogue = Array.isArray(list) ? list : [];
    if (!name) {
      renderCatalogue();
      $('start-title').focus();
      return;
    }
    const book = catalogue.find((b) => b.name === name);
    if (!book) {
      P.showError('There is no runbook ' + name + ' here; pick one from the list.');
      show($('catalogue-part'), true);
      renderCatalogue();
      return;
    }
    renderForm(book);
  }

  // ---------------------------------------------------------------- the catalogue
  function renderCatalogue() {
    const item = (b) => h('li', { class: 'book', dataset: { runbook: b.name } },
      h('h2', { class: 'book-name' },
        h('a', { href: P.BASE + '/new?runbook=' + encodeURIComponent(b.name), dataset: { nav: '' } }, b.name)),
      b.description ? h('p', { class: 'book-desc' }, b.description) : null,
      b.error ? h('pre', { class: 'err' }, 'does not load: ' + b.error) : null,
      b.params && b.params.length
        ? h('ul', { class: 'param-list', 'aria-label': 'parameters of ' + b.name }, b.params.map(paramLine))
        : b.params ? h('p', { class: 'muted' }, 'no parameters') : null,
      h('p', { class: 'muted origin' }, b.origin));
    const books = catalogue.filter((b) => b.kind !== 'part');
    const parts = catalogue.filter((b) => b.kind === 'part');
    $('catalogue').replaceChildren(...books.map(item));
    $('catalogue-parts').replaceChildren(...parts.map(item));
    show($('catalogue-parts-box'), parts.length > 0);
    filterCatalogue();
  }

  /** One parameter, as the catalogue lists it: name, type and the rules of its values. */
  function paramLine(p) {
    return h('li', null,
      h('code', { class: 'pname' }, p.name), ' ',
      h('span', { class: 'ptype' }, p.type),
      rules(p).flatMap((r) => [' · ', r]));
  }

  /** What a parameter's declaration says about its values, in words and code. */
  function rules(p) {
    const out = [];
    if (p.required) out.push(h('span', { class: 'req' }, 'required'));
    if (p.secret) out.push(h('span', { class: 'secret' }, 'secret'));
    if (p.default != null) out.push(h('span', null, 'default ', h('code', null, shown(p.default))));
    if (p.enum) out.push(h('span', null, 'one of ', p.enum.flatMap((v, i) => [i ? ', ' : '', h('code', null, shown(v))])));
    if (p.pattern) out.push(h('span', null, 'matches ', h('code', null, p.pattern)));
    if (p.env) out.push(h('span', null, 'or $' + p.env));
    if (p.file) out.push(h('span', null, 'or the file ', h('code', null, p.file)));
    if (p.from) out.push(h('span', null, 'or ' + p.from));
    return out;
  }

  /** A value as people read it (an empty string as `""`). */
  function shown(v) {
    return typeof v === 'string' && v !== '' ? v : JSON.stringify(v);
  }

  function filterCatalogue() {
    const words = $('catalogue-filter').value.trim().toLowerCase().split(/\s+/).filter(Boolean);
    let visible = 0;
    for (const li of document.querySelectorAll('#catalogue > li, #catalogue-parts > li')) {
      const text = li.textContent.toLowerCase();
      const hit = words.every((w) => text.includes(w));
      show(li, hit);
      if (hit && li.parentElement.id === 'catalogue') visible++;
    }
    show($('catalogue-empty'), visible === 0);
  }
  $('catalogue-filter').addEventListener('input', filterCatalogue);

  // ---------------------------------------------------------------- the form
  function renderForm(book) {
    clearForm();
    show($('form-part'), true);
    setText($('start-description'), book.description || '');
    show($('start-description'), !!book.description);
    setText($('start-origin'), 'from ' + book.origin);
    if (book.error || !book.params) {
      showGeneral(['This runbook does not load, so it cannot be started: ' + (book.error || 'unknown problem')]);
      $('plan-button').disabled = true;
      return;
    }
    $('plan-button').disabled = false;
    const fields = new Map();
    const box = $('start-fields');
    book.params.forEach((p, i) => {
      const f = field(p, 'p' + i);
      fields.set(p.name, f);
      box.append(f.el);
    });
    show($('start-no-params'), book.params.length === 0);
    current = { book, fields };
    const first = box.querySelector('input, select, textarea');
    (first || $('plan-button')).focus();
  }

  /** The control for a parameter, from its declaration. */
  function field(p, id) {
    const hintId = id + '-hint';
    const errId = id + '-err';
    const common = { id, name: p.name, 'aria-describedby': hintId + ' ' + errId, 'aria-required': p.required ? 'true' : null };
    let input;
    if (p.enum || p.type === 'bool') {
      const values = p.enum || [true, false];
      const none = p.default != null ? 'default (' + shown(p.default) + ')'
        : p.required ? 'choose…' : '(none)';
      input = h('select', common,
        h('option', { value: '' }, none),
        values.map((v) => h('option', { value: typeof v === 'string' ? v : JSON.stringify(v) }, shown(v))));
    } else if (p.secret) {
      input = h('input', Object.assign({ type: 'password', autocomplete: 'off', spellcheck: 'false', autocapitalize: 'off' }, common));
    } else if (p.type === 'map') {
      input = h('textarea', Object.assign({ rows: '3', spellcheck: 'false', placeholder: p.default != null ? JSON.stringify(p.default) : '{"key": "value"}' }, common));
    } else {
      input = h('input', Object.assign({
        type: 'text', spellcheck: 'false', autocapitalize: 'off', autocomplete: 'off',
        inputmode: p.type === 'int' ? 'numeric' : null,
        placeholder: p.default != null ? shown(p.default) : p.type === 'list' ? 'a, b, c  or  ["a", "b"]' : null,
      }, common));
    }
    input.addEventListener('input', changed);
    input.addEventListener('change', changed);
    const hint = [];
    if (p.description) hint.push(p.description);
    if (p.secret) hint.push('Secret: never shown, journaled or kept by this page.');
    const sources = [p.env && '$' + p.env, p.file && 'the file ' + p.file, p.from].filter(Boolean);
    if (sources.length) hint.push('Left empty, serve takes it from ' + sources.join(', then ') + '.');
    else if (p.default != null && !p.secret) hint.push('Left empty: the default.');
    const error = h('p', { class: 'field-error', id: errId, hidden: true });
    const el = h('div', { class: 'field', dataset: { param: p.name } },
      h('label', { for: id },
        h('span', { class: 'pname' }, p.name), ' ',
        h('span', { class: 'ptype' }, p.type),
        p.required ? [' ', h('span', { class: 'req' }, 'required')] : null),
      input,
      h('p', { class: 'hint', id: hintId }, hint.join(' '), rules(p).length ? [hint.length ? ' ' : '', h('span', { class: 'rules' }, rules(p).flatMap((r, i) => [i ? ' · ' : '', r]))] : null),
      error);
    return { param: p, input, error, el };
  }

  /** The values to send: every field that is not empty, as typed (as `-p name=value`). */
  function values() {
    const out = {};
    for (const [name, f] of current.fields) {
      if (f.input.value !== '') out[name] = f.input.value;
    }
    return out;
  }

  function changed() {
    if (planned) {
      planned = false;
      show($('plan'), false);
      setText($('plan-status'), 'The values changed: review the plan again before starting.');
    }
  }

  function clearErrors() {
    show($('start-general'), false);
    if (!current) return;
    for (const f of current.fields.values()) {
      show(f.error, false);
      setText(f.error, '');
      f.input.removeAttribute('aria-invalid');
      f.el.classList.remove('invalid');
    }
  }

  function showGeneral(lines) {
    const el = $('start-general');
    el.replaceChildren(...lines.map((l) => h('div', null, l)));
    show(el, lines.length > 0);
  }

  /** Shows an API error at the fields it names; the rest above the form. */
  function showProblems(e) {
    const problems = (e.body && Array.isArray(e.body.params)) ? e.body.params : [];
    const general = [];
    let first = null;
    for (const p of problems) {
      const f = p.param != null && current.fields.get(p.param);
      if (!f) { general.push(p.error); continue; }
      f.error.append(h('span', null, p.error));
      show(f.error, true);
      f.input.setAttribute('aria-invalid', 'true');
      f.el.classList.add('invalid');
      if (!first) first = f.input;
    }
    if (!problems.length) general.push(e.message);
    showGeneral(general);
    if (first) first.focus();
    else if (general.length) $('start-general').scrollIntoView({ block: 'nearest' });
  }

  function setBusy(on, text) {
    busy = on;
    $('plan-button').disabled = on;
    $('start-run').disabled = on;
    setText($('plan-status'), on ? text : '');
  }

  $('start-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    if (!current || busy) return;
    const g = gen;
    clearErrors();
    planned = false;
    show($('plan'), false);
    setBusy(true, 'Checking the values and running the prechecks (read-only)…');
    let plan;
    try {
      plan = await api('/plan', { method: 'POST', body: { runbook: current.book.name, params: values() } });
    } catch (e) {
      if (g !== gen) return;
      setBusy(false);
      if (e.status !== 401) showProblems(e);
      return;
    }
    if (g !== gen) return;
    setBusy(false);
    renderPlan(plan);
    planned = true;
    show($('plan'), true);
    setText($('start-status'), '');
    $('plan-title').focus();
  });

  function renderPlan(plan) {
    const meta = [['runbook', plan.runbook + ' (' + plan.origin + ')']];
    for (const [k, v] of Object.entries(plan.params || {})) meta.push([k, v == null ? '(none)' : shown(v)]);
    if (plan.lock) meta.push(['lock', plan.lock + (plan.lock_holder ? ' — held by run ' + plan.lock_holder + ': a run now would be refused' : ' (free)')]);
    $('plan-meta').replaceChildren(...meta.map(([k, v]) => h('div', null, h('dt', null, k), h('dd', { class: 'mono' }, v))));
    const checks = plan.prechecks || [];
    $('plan-prechecks').replaceChildren(...(checks.length ? checks.map((c) => h('li', { dataset: { status: c.status } },
      P.badge(c.status === 'ok' ? 'ok' : c.status === 'failed' ? 'failed' : 'not run'), ' ',
      h('code', null, c.id), c.error ? [': ', c.error] : null)) : [h('li', { class: 'muted' }, 'none')]));
    const refused = checks.some((c) => c.status === 'failed');
    $('plan-steps').replaceChildren(...(plan.steps || []).map((s) => h('li', { class: 'depth-' + Math.min(s.depth, 6) },
      h('code', { class: 'plan-path' }, s.path), ' ', h('span', { class: 'plan-text' }, s.text))));
    setText($('start-status'), refused ? 'A precheck failed: a run now would be refused.' : '');
  }

  $('start-run').addEventListener('click', async () => {
    if (!current || busy) return;
    if (!planned) { setText($('start-status'), 'Review the plan for these values first.'); return; }
    const g = gen;
    clearErrors();
    setBusy(true, '');
    setText($('start-status'), 'Starting…');
    let accepted;
    try {
      accepted = await api('/runs', { method: 'POST', body: { runbook: current.book.name, params: values() } });
    } catch (e) {
      if (g !== gen) return;
      setBusy(false);
      setText($('start-status'), '');
      if (e.status === 401) return;
      planned = false;
      show($('plan'), false);
      showProblems(e);
      return;
    }
    if (g !== gen) return;
    setBusy(false);
    const id = accepted && accepted.run;
    clearForm();
    P.showNotice('Started run ' + id + '.');
    go(P.BASE + '/runs/' + encodeURIComponent(id));
  });

  /** Empties every field (secrets first) and forgets the form. */
  function clearForm() {
    if (current) {
      for (const f of current.fields.values()) f.input.value = '';
    }
    $('start-form').reset();
    $('start-fields').replaceChildren();
    clearErrors();
    show($('start-general'), false);
    show($('plan'), false);
    $('plan-meta').replaceChildren();
    $('plan-prechecks').replaceChildren();
    $('plan-steps').replaceChildren();
    setText($('plan-status'), '');
    setText($('start-status'), '');
    planned = false;
    busy = false;
    current = null;
  }

  // The browser may keep a page in its back/forward cache with the fields filled in: leave
  // none behind.
  window.addEventListener('pagehide', () => { if (current) clearForm(); });
})();
