// The run controls of the web page of `runbook serve` (the #control section of a run's page):
// pause, unpause, abort (with or without the cleanup steps), and retry or skip of the step that
// failed or needs a decision. Which buttons show is not decided here: serve lists the run's
// `actions` in its detail (runner/engine/actions.rs), by the rules the API applies, so the page
// offers exactly what the API would take. Every action sends the comment typed above the
// buttons; serve journals it with the name of the token's holder.
'use strict';
(() => {
  const page = window.runbookPage;
  const { show, setText } = page;
  const $ = (id) => document.getElementById(id);
  const TERMINAL = new Set(['succeeded', 'failed', 'aborted']);
  const VERBS = ['pause', 'unpause', 'retry', 'skip', 'abort'];

  /** The run's actions of kind `verb` (each names its step, when it has one). */
  function allowed(d, verb) {
    return (d.actions || []).filter((a) => a.action === verb);
  }

  let shownFor = null; // the run and state the buttons were last laid out for
  let refocusUntil = 0; // for a moment after an action, a lost focus is put somewhere useful

  function render(d) {
    const state = String(d.state || '');
    // Between a state record and the detail fetched for it, the old actions would show: a
    // run that ended offers nothing.
    const ended = TERMINAL.has(state);
    const step = {};
    for (const verb of VERBS) {
      const found = ended && verb !== 'retry' && verb !== 'skip' ? [] : allowed(d, verb);
      step[verb] = found.length ? (found[0].step || '') : null;
      show($(verb), step[verb] !== null);
    }
    show($('no-cleanup-label'), step.abort !== null);
    if (step.retry !== null) $('retry').textContent = 'Retry ' + step.retry;
    if (step.skip !== null) $('skip').textContent = 'Skip ' + step.skip;
    setText($('control-text'), explain(state, step));
    const any = VERBS.some((v) => step[v] !== null);
    show($('control'), any);
    if (shownFor !== d.run + ' ' + state) {
      if (shownFor && shownFor.split(' ')[0] !== String(d.run)) refocusUntil = 0;
      shownFor = d.run + ' ' + state;
      disarm();
    }
    // The button just pressed may be gone (Pause once paused): the focus goes to the first
    // control left, or to the run's title, rather than to the top of the document.
    const at = document.activeElement;
    const lost = !at || at === document.body || at.hidden || at.closest('[hidden]');
    if (lost && Date.now() < refocusUntil) {
      const first = VERBS.map((v) => $(v)).find((b) => !b.hidden && !b.closest('[hidden]'));
      if (first) {
        first.focus();
      } else {
        $('run-title').tabIndex = -1;
        $('run-title').focus();
      }
    }
  }

  function explain(state, step) {
    if (state === 'paused') return 'Paused: nothing runs, the lock stays held. Unpause runs the prechecks again, then goes on.';
    if (state === 'failed' && step.retry !== null) {
      return 'The run failed at ' + step.retry + '. Once the cause is fixed, retry that step (the steps before it are not run again) or skip it.';
    }
    if (state === 'needs-attention' && step.retry !== null) {
      return 'Step ' + step.retry + ' was in flight when its process died. Retry runs it again; skip treats it as done. Check what it was doing (above) first.';
    }
    if (state === 'waiting') return 'Abort ends the run at its gate, after its cleanup steps (unless you skip them).';
    if (step.pause !== null) {
      return 'Pause stops the run at the next step boundary (the step in flight finishes). Abort stops the step in flight and runs the cleanup steps.';
    }
    return step.abort !== null ? 'Abort ends the run, after its cleanup steps (unless you skip them).' : '';
  }

  let busy = false;
  async function act(verb, body, doing, done) {
    const r = page.run();
    if (!r || !r.detail || busy) return;
    const comment = $('control-comment').value.trim();
    busy = true;
    for (const v of VERBS) $(v).disabled = true;
    setText($('control-status'), doing);
    page.showError('');
    const path = verb === 'retry' || verb === 'skip' ? 'resume' : verb;
    const extra = verb === 'abort' ? { reason: comment || null } : { comment: comment || null };
    try {
      await page.api('/runs/' + encodeURIComponent(r.id) + '/' + path, {
        method: 'POST', body: Object.assign({}, body, extra), signal: r.ctrl.signal,
      });
      if (r !== page.run()) return;
      $('control-comment').value = '';
      $('no-cleanup').checked = false;
      page.showNotice(done);
      refocusUntil = Date.now() + 3000;
      // A run taken up again goes on: follow it anew (its event stream had ended).
      if (path === 'resume') { page.reopenRun(r.id); return; }
    } catch (e) {
      if (e.name === 'AbortError' || r !== page.run()) return;
      if (e.status !== 401) page.showError(e.message);
    } finally {
      busy = false;
      for (const v of VERBS) $(v).disabled = false;
      setText($('control-status'), '');
      page.refreshRun();
    }
  }

  /** The step the run's `verb` action names (retry, skip). */
  function stepOf(verb) {
    const r = page.run();
    const found = r && r.detail ? allowed(r.detail, verb) : [];
    return found.length ? found[0].step : null;
  }

  $('pause').addEventListener('click', () => act('pause', {}, 'Pausing at the next step boundary…', 'Paused.'));
  $('unpause').addEventListener('click', () => act('unpause', {}, 'Unpausing…', 'Unpaused: the run goes on.'));
  $('retry').addEventListener('click', () => {
    const step = stepOf('retry');
    if (step) act('retry', { retry_step: step }, 'Retrying ' + step + '…', 'Retrying ' + step + ': the run goes on.');
  });
  $('skip').addEventListener('click', () => {
    const step = stepOf('skip');
    if (step) act('skip', { skip_step: step }, 'Skipping ' + step + '…', 'Skipped ' + step + ': the run goes on.');
  });

  // Aborting ends the run: a second press confirms, rather than a dialog.
  let armed = 0;
  $('abort').addEventListener('click', () => {
    if (!armed) {
      $('abort').classList.add('confirm');
      $('abort').textContent = $('no-cleanup').checked ? 'Press again to abort without cleanup' : 'Press again to abort';
      armed = setTimeout(disarm, 4000);
      return;
    }
    const noCleanup = $('no-cleanup').checked;
    disarm();
    act('abort', { no_cleanup: noCleanup }, 'Aborting…', noCleanup ? 'Aborted, without the cleanup steps.' : 'Aborted.');
  });
  function disarm() {
    clearTimeout(armed);
    armed = 0;
    $('abort').classList.remove('confirm');
    $('abort').textContent = 'Abort';
  }

  page.addRunPart({ render: (run, detail) => render(detail) });
})();
