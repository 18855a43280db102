//! What the engine does with the common step fields and control steps, and the exit codes
//! and machine output users script against.

use serde_json::Value;

use crate::support::{Output, Sandbox};

fn events<'a>(records: &'a [Value], name: &str, path: &str) -> Vec<&'a Value> {
    records
        .iter()
        .filter(|r| r["event"] == name && r["path"] == path)
        .collect()
}

fn assert_contains(out: &Output, text: &str) {
    assert!(
        out.stdout.contains(text) || out.stderr.contains(text),
        "{}",
        out.explain(&format!("expected the output to contain `{text}`"))
    );
}

/// Writes `NAME.yaml` and runs it with `args`, expecting exit code `code`.
fn run(sb: &Sandbox, name: &str, yaml: &str, args: &[&str], code: i32) -> (Output, String) {
    let file = format!("{name}.yaml");
    sb.write(&file, yaml);
    let mut argv = vec!["run", file.as_str()];
    argv.extend_from_slice(args);
    let out = sb.cmd(&argv).code(code);
    let run = sb.only_run();
    (out, run)
}

const COUNTER: &str = "n=$(cat count 2>/dev/null || echo 0); n=$((n+1)); echo $n > count";

#[test]
fn a_step_that_fails_twice_then_succeeds_is_retried_and_the_attempts_are_journaled() {
    let sb = Sandbox::new();
    let yaml = format!(
        r#"
runbook: flaky
steps:
  - id: flaky
    retry: {{ attempts: 3, backoff: 10ms }}
    shell: {{ run: "{COUNTER}; [ $n -ge 3 ]" }}
"#
    );
    let (_, run) = run(&sb, "flaky", &yaml, &[], 0);
    assert_eq!(sb.read("count").trim(), "3");
    let records = sb.records(&run);
    let failed = events(&records, "step_failed", "flaky");
    assert_eq!(failed.len(), 2, "{records:?}");
    for (i, f) in failed.iter().enumerate() {
        assert_eq!(f["attempt"], i + 1);
        assert!(
            f["retry_at"].is_string(),
            "attempt {} must be retried: {f}",
            i + 1
        );
    }
    let ok = events(&records, "step_succeeded", "flaky");
    assert_eq!(ok.len(), 1);
    assert_eq!(ok[0]["attempt"], 3);
    let log = sb.cmd(&["log", &run]).ok();
    assert_contains(
        &log,
        "fail   flaky, attempt 1: command exited with code 1; retrying at",
    );
    assert_contains(
        &log,
        "fail   flaky, attempt 2: command exited with code 1; retrying at",
    );
}

#[test]
fn exhausted_retries_fail_the_run_after_the_steps_on_failure() {
    let sb = Sandbox::new();
    let yaml = format!(
        r#"
runbook: broken
steps:
  - id: broken
    retry: {{ attempts: 2, backoff: 10ms }}
    shell: {{ run: "{COUNTER}; echo nope >&2; exit 1" }}
    on_failure:
      - id: notify
        shell: {{ run: "echo notified-$(cat count) > notified.txt" }}
  - id: never
    shell: {{ run: "echo never > never.txt" }}
"#
    );
    let (out, run) = run(&sb, "broken", &yaml, &[], 1);
    assert_contains(&out, "FAILED broken: command exited with code 1: nope");
    assert_eq!(
        sb.read("notified.txt"),
        "notified-2\n",
        "on_failure ran after attempt 2"
    );
    assert_eq!(sb.read("never.txt"), "");
    let records = sb.records(&run);
    let failed = events(&records, "step_failed", "broken");
    assert_eq!(failed.len(), 2);
    assert!(failed[1]["retry_at"].is_null(), "the last failure is final");
    assert_eq!(
        events(&records, "step_succeeded", "broken.on_failure.notify").len(),
        1
    );
    assert_eq!(sb.status(&run)["state"], "failed");
}

#[test]
fn a_step_past_its_timeout_fails_saying_it_timed_out() {
    let sb = Sandbox::new();
    let yaml = r#"
runbook: slow
steps:
  - id: slow
    timeout: 300ms
    shell: { args: [sleep, "30"] }
"#;
    let started = std::time::Instant::now();
    let (out, run) = run(&sb, "slow", yaml, &[], 1);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "the command was not stopped at its timeout"
    );
    assert_contains(&out, "FAILED slow: timed out after 300ms");
    let records = sb.records(&run);
    let failed = events(&records, "step_failed", "slow");
    assert_eq!(failed.len(), 1, "a timeout is a failure: {records:?}");
    assert!(events(&records, "step_interrupted", "slow").is_empty());
}

#[test]
fn continue_on_error_records_the_failure_as_tolerated_and_the_run_succeeds() {
    let sb = Sandbox::new();
    let yaml = r#"
runbook: tolerant
steps:
  - id: optional
    continue_on_error: true
    shell: { run: "exit 7" }
  - id: next
    shell: { run: "echo next-{{steps.optional.status}}-{{steps.optional.output.exit_code}} > next.txt" }
"#;
    let (_, run) = run(&sb, "tolerant", yaml, &[], 0);
    assert_eq!(sb.read("next.txt"), "next-failed-7\n");
    let records = sb.records(&run);
    let failed = events(&records, "step_failed", "optional");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["tolerated"], true);
    let status = sb.status(&run);
    assert_eq!(status["state"], "succeeded");
    let step = status["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["path"] == "optional"))
        .expect("the step in status");
    assert_eq!(step["status"], "failed (tolerated)");
}

const FLAGGED: &str = r#"
runbook: flagged
params:
  flag: { type: bool, default: false }
  name: { type: string, default: world }
steps:
  - id: x
    when: "params.flag"
    shell: { run: "echo x > x.txt" }
  - id: greet
    shell: { run: "echo hello-{{params.name}} > greet.txt" }
  - id: y
    shell: { run: "echo y-{{steps.x.status}}-{{params.name}} > y.txt" }
  - id: z
    when: 'steps.x.status == "skipped"'
    script: "steps.x.status"
"#;

#[test]
fn a_false_when_skips_the_step_and_later_steps_see_it_skipped() {
    let sb = Sandbox::new();
    let (_, run) = run(&sb, "flagged", FLAGGED, &[], 0);
    assert_eq!(sb.read("x.txt"), "", "a skipped step does not run");
    assert_eq!(sb.read("y.txt"), "y-skipped-world\n");
    let records = sb.records(&run);
    let skipped = events(&records, "step_skipped", "x");
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0]["reason"], "when");
    assert_eq!(
        events(&records, "step_succeeded", "z")[0]["output"],
        "skipped"
    );
    let log = sb.cmd(&["log", &run]).ok();
    assert_contains(&log, "skip   x (its `when` is false)");
}

#[test]
fn plan_renders_the_steps_and_decides_when_from_the_params() {
    let sb = Sandbox::new();
    sb.write("flagged.yaml", FLAGGED);
    let out = sb.cmd(&["plan", "flagged.yaml", "-p", "name=mars"]).ok();
    assert_contains(&out, "echo x > x.txt");
    assert_contains(&out, "[when params.flag: skipped]");
    // The plan shows the command as it will run: the value quoted for its place.
    assert_contains(&out, "echo hello-'mars' > greet.txt");
    let out = sb.cmd(&["plan", "flagged.yaml", "-p", "flag=true"]).ok();
    assert_contains(&out, "[when params.flag: runs]");
    let history = sb.cmd(&["history", "--output", "json"]).ok();
    assert_eq!(history.stdout.trim(), "", "plan starts no run");
    assert_eq!(sb.read("x.txt"), "");
}

#[test]
fn a_failed_assert_fails_the_step_with_the_rendered_message() {
    let sb = Sandbox::new();
    let yaml = r#"
runbook: asserting
params:
  want: { type: string, default: ready }
steps:
  - id: health
    shell: { run: "echo degraded" }
    assert: 'output.stdout == params.want + "\n"'
    message: "service is {{output.stdout}} but must be {{params.want}}"
"#;
    let (out, _) = run(&sb, "asserting", yaml, &[], 1);
    assert_contains(
        &out,
        "FAILED health: assertion failed: service is degraded\n but must be ready",
    );
}

#[test]
fn a_message_that_cannot_be_rendered_says_so_instead_of_passing_for_a_rendered_one() {
    let sb = Sandbox::new();
    let yaml = r#"
runbook: asserting
steps:
  - id: health
    shell: { run: "echo degraded" }
    assert: 'output.stdout == "ready"'
    message: "{{output.nope.deeper}} pods are not ready"
"#;
    let (out, _) = run(&sb, "asserting", yaml, &[], 1);
    assert_contains(
        &out,
        "assertion failed: {{output.nope.deeper}} pods are not ready (the message could not be rendered:",
    );
}

#[test]
fn a_check_that_holds_skips_the_step_without_running_it() {
    let sb = Sandbox::new();
    sb.write("marker", "");
    let yaml = r#"
runbook: checked
params:
  done: { type: bool, default: true }
steps:
  - id: by-expr
    check: "params.done"
    shell: { run: "echo by-expr >> out.txt" }
  - id: by-probe
    check:
      probe: { shell: { args: [test, -f, marker] } }
      until: "output.exit_code == 0"
    shell: { run: "echo by-probe >> out.txt" }
  - id: absent
    check:
      probe: { shell: { args: [test, -f, missing] } }
      until: "output.exit_code == 0"
    shell: { run: "echo absent >> out.txt" }
"#;
    let (_, run) = run(&sb, "checked", yaml, &[], 0);
    assert_eq!(
        sb.read("out.txt"),
        "absent\n",
        "only the step whose effect was absent ran"
    );
    let records = sb.records(&run);
    for path in ["by-expr", "by-probe"] {
        let skipped = events(&records, "step_skipped", path);
        assert_eq!(skipped.len(), 1, "{path}: {records:?}");
        assert_eq!(skipped[0]["reason"], "check");
        assert!(events(&records, "step_started", path).is_empty());
    }
}

const SUB: &str = r#"
runbook: sub
params:
  who: { type: string, required: true }
  fail: { type: bool, default: false }
steps:
  - id: inner
    shell: { run: "echo hello-{{params.who}}; if {{params.fail}}; then exit 1; fi" }
on_failure:
  - id: undo
    shell: { run: "echo undo-{{params.who}} >> out.txt" }
"#;

const CALLER: &str = r#"
runbook: caller
params:
  fail: { type: bool, default: false }
steps:
  - id: callstep
    call: { runbook: ./sub.yaml, params: { who: mars, fail: "{{params.fail}}" } }
  - id: use
    shell: { run: "echo 'got {{steps.callstep.output.inner.stdout}}' > got.txt" }
"#;

#[test]
fn a_called_runbook_runs_under_the_callers_path_and_its_output_is_visible() {
    let sb = Sandbox::new();
    sb.write("sub.yaml", SUB);
    let (_, run) = run(&sb, "caller", CALLER, &[], 0);
    assert_eq!(sb.read("got.txt"), "got hello-mars\n\n");
    let records = sb.records(&run);
    let inner = events(&records, "step_succeeded", "callstep.inner");
    assert_eq!(inner.len(), 1, "{records:?}");
    assert_eq!(inner[0]["output"]["stdout"], "hello-mars\n");
    assert_eq!(events(&records, "step_succeeded", "callstep").len(), 1);
    assert_eq!(
        sb.read("out.txt"),
        "",
        "the sub-runbook's on_failure did not run"
    );
}

#[test]
fn a_failing_called_runbook_fails_the_call_after_its_own_on_failure() {
    let sb = Sandbox::new();
    sb.write("sub.yaml", SUB);
    let (out, run) = run(&sb, "caller", CALLER, &["-p", "fail=true"], 1);
    assert_contains(
        &out,
        "FAILED callstep: `./sub.yaml` failed at `callstep.inner`",
    );
    assert_eq!(sb.read("out.txt"), "undo-mars\n");
    assert_eq!(sb.read("got.txt"), "", "the caller stopped at the call");
    let records = sb.records(&run);
    assert_eq!(events(&records, "step_failed", "callstep.inner").len(), 1);
    assert_eq!(
        events(&records, "step_succeeded", "callstep.on_failure.undo").len(),
        1
    );
    assert_eq!(events(&records, "step_failed", "callstep").len(), 1);
}

#[test]
fn a_wait_that_never_holds_fails_after_its_timeout_naming_the_condition() {
    let sb = Sandbox::new();
    let yaml = r#"
runbook: waiting
steps:
  - id: healthy
    wait:
      every: 50ms
      timeout: 300ms
      probe: { shell: { args: [cat, status.txt] } }
      until: 'output.stdout.contains("green")'
"#;
    sb.write("status.txt", "red\n");
    let (out, run) = run(&sb, "waiting", yaml, &[], 1);
    assert_contains(
        &out,
        "FAILED healthy: `output.stdout.contains(\"green\")` did not hold within 300ms",
    );
    // The condition was evaluated and false, not broken.
    assert_contains(&out, "; last: not yet: ");
    let records = sb.records(&run);
    assert_eq!(events(&records, "step_failed", "healthy").len(), 1);
}

const TYPED: &str = r#"
runbook: typed
params:
  name: { type: string, default: world }
  replicas: { type: int, default: 3 }
  version: { type: string, default: 1.2.3, pattern: '^\d+\.\d+\.\d+$' }
steps:
  - id: hello
    shell: { run: "echo hello" }
"#;

#[test]
fn bad_input_exits_2_with_a_message_and_starts_nothing() {
    let sb = Sandbox::new();
    sb.write("typed.yaml", TYPED);
    let cases: &[(&[&str], &str)] = &[
        (
            &["run", "no-such-runbook"],
            "error: no runbook `no-such-runbook`",
        ),
        (
            &["run", "typed.yaml", "-p", "nmae=x"],
            "runbook `typed` has no parameter `nmae` (did you mean `name`?)",
        ),
        (
            &["run", "typed.yaml", "-p", "replicas=three"],
            "parameter `replicas` must be an integer, not `three`",
        ),
        (
            &["run", "typed.yaml", "-p", "version=latest"],
            "parameter `version` value `latest` does not match the pattern",
        ),
    ];
    for (args, message) in cases {
        let out = sb.cmd(args).code(2);
        assert_contains(&out, message);
    }
    let history = sb.cmd(&["history", "--output", "json"]).ok();
    assert_eq!(history.stdout.trim(), "", "no run was started");
}

/// The JSON lines of `out`, each checked to be one object.
fn json_lines(out: &Output) -> Vec<Value> {
    out.stdout
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{}", out.explain(&format!("`{l}` is not JSON: {e}"))));
            assert!(v.is_object(), "`{l}` is not an object");
            v
        })
        .collect()
}

#[test]
fn output_json_is_one_object_per_line_ending_with_the_exit_code() {
    for (yaml, args, code) in [
        ("steps:\n  - shell: { run: \"echo ok\" }\n", &[][..], 0),
        ("steps:\n  - shell: { run: \"exit 1\" }\n", &[][..], 1),
        ("steps:\n  - gate: \"go?\"\n", &[][..], 3),
        (
            "steps:\n  - shell: { run: \"echo ok\" }\n",
            &["-p", "nope=1"][..],
            2,
        ),
    ] {
        let sb = Sandbox::new();
        sb.write("j.yaml", &format!("runbook: j\n{yaml}"));
        let mut argv = vec!["run", "j.yaml", "--output", "json"];
        argv.extend_from_slice(args);
        let out = sb.cmd(&argv).code(code);
        let lines = json_lines(&out);
        let last = lines.last().expect("at least one line");
        if code == 2 {
            assert_eq!(last["event"], "error", "{}", out.explain("an error event"));
        } else {
            assert_eq!(
                last["event"],
                "exit",
                "{}",
                out.explain("an exit event last")
            );
            assert!(
                lines[..lines.len() - 1].iter().all(|l| l["seq"].is_u64()),
                "{}",
                out.explain("every other line is a journal record")
            );
        }
        assert_eq!(
            last["code"],
            code,
            "{}",
            out.explain("the exit event's code")
        );
    }
}

#[test]
fn a_wait_timeout_may_come_from_a_parameter_and_a_bad_one_is_named() {
    let yaml = r#"
runbook: w
params:
  patience: { type: string, default: 10m }
steps:
  - id: never
    wait:
      every: 100ms
      timeout: "{{params.patience}}"
      probe: { script: "1" }
      until: "output == 2"
"#;
    // The parameter's value bounds the wait (the default, 10 minutes, would outlast the test).
    let (out, _) = run(&Sandbox::new(), "w", yaml, &["-p", "patience=400ms"], 1);
    assert_contains(&out, "did not hold within 400ms");
    let (out, _) = run(&Sandbox::new(), "w", yaml, &["-p", "patience=soon"], 1);
    assert_contains(
        &out,
        "the wait's `timeout` `{{params.patience}}` is `soon`, not a duration",
    );
}
