//! Parallel loops and branches: how many iterations overlap, waves and failure thresholds, a
//! kill at every commit of a parallel loop, and the loader's errors for bad settings.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt as _;

use crate::support::Sandbox;

/// One line per iteration start and end: `start N NANOS` / `end N NANOS`.
fn timeline(sb: &Sandbox) -> Vec<(String, u32, u128)> {
    sb.read("times")
        .lines()
        .map(|l| {
            let mut f = l.split_whitespace();
            let what = f.next().expect("what").to_owned();
            let n = f.next().expect("item").parse().expect("item number");
            let t = f.next().expect("time").parse().expect("nanos");
            (what, n, t)
        })
        .collect()
}

/// When item `n` wrote `what` (`start` or `end`).
fn at(events: &[(String, u32, u128)], what: &str, n: u32) -> u128 {
    events
        .iter()
        .find(|(w, m, _)| w == what && *m == n)
        .map_or_else(|| panic!("no {what} of item {n}: {events:?}"), |(.., t)| *t)
}

/// The most iterations that ran at the same instant.
fn max_overlap(events: &[(String, u32, u128)]) -> usize {
    let mut sorted: Vec<(u128, i32)> = events
        .iter()
        .map(|(w, _, t)| (*t, if w == "start" { 1 } else { -1 }))
        .collect();
    // An end at the same instant as a start counts first: they did not overlap.
    sorted.sort_unstable();
    let (mut now, mut max) = (0i32, 0i32);
    for (_, d) in sorted {
        now += d;
        max = max.max(now);
    }
    usize::try_from(max).expect("non-negative")
}

const TIMED_STEP: &str = r#"
      - id: work
        shell:
          run: |
            echo "start {{n}} $(date +%s%N)" >> times
            sleep 0.3
            if grep -qx "{{n}}" fail 2>/dev/null; then echo "end {{n}} $(date +%s%N)" >> times; exit 1; fi
            echo "end {{n}} $(date +%s%N)" >> times
"#;

fn looped(settings: &str) -> String {
    format!(
        "runbook: par\nsteps:\n  - id: roll\n    foreach: \"[1, 2, 3, 4, 5, 6, 7, 8]\"\n    as: n\n{settings}    steps:{TIMED_STEP}"
    )
}

#[test]
fn a_loop_with_parallel_three_never_runs_more_than_three_and_reaches_three() {
    let sb = Sandbox::new();
    sb.write("par.yaml", &looped("    parallel: 3\n"));
    sb.cmd(&["run", "par.yaml"]).ok();
    let events = timeline(&sb);
    assert_eq!(
        events.len(),
        16,
        "every item started and ended once: {events:?}"
    );
    assert_eq!(max_overlap(&events), 3, "{events:?}");
    // Iterations start in item order: item 4 once one of the first three has ended, item 8
    // once five have — three waves of a window of three over eight items.
    let time = |what: &str, n: u32| at(&events, what, n);
    let first_end = (1..=3).map(|n| time("end", n)).min().expect("ends");
    assert!(time("start", 4) >= first_end, "{events:?}");
    let fifth_end = {
        let mut ends: Vec<u128> = (1..=7).map(|n| time("end", n)).collect();
        ends.sort_unstable();
        ends[4]
    };
    assert!(
        time("start", 8) >= fifth_end,
        "the eighth item waits until five have ended: {events:?}"
    );
    let status = sb.status(&sb.only_run());
    assert_eq!(status["state"], "succeeded", "{status}");
}

#[test]
fn batches_go_in_waves_and_too_many_failures_stop_later_waves() {
    let sb = Sandbox::new();
    sb.write("par.yaml", &looped("    batch: 2\n    max_failures: 1\n"));
    sb.write("fail", "3\n4\n");
    let out = sb.cmd(&["run", "par.yaml"]).code(1);
    let events = timeline(&sb);
    // Processes of one wave start in whichever order the kernel runs them.
    let mut started: Vec<u32> = events
        .iter()
        .filter(|(w, ..)| w == "start")
        .map(|(_, n, _)| *n)
        .collect();
    started.sort_unstable();
    assert_eq!(
        started,
        vec![1, 2, 3, 4],
        "the wave with two failures ends the loop; later waves never start: {events:?}"
    );
    assert_eq!(max_overlap(&events), 2, "{events:?}");
    let time = |what: &str, n: u32| at(&events, what, n);
    assert!(
        time("start", 3) >= time("end", 1).max(time("end", 2)),
        "the second wave starts after the first has ended: {events:?}"
    );
    let status = sb.status(&sb.only_run());
    assert_eq!(status["state"], "failed", "{status}");
    let reason = status["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("2 of 8 failed"),
        "{reason}\n{}",
        out.explain("run")
    );
    assert!(
        reason.contains("roll[2].work") && reason.contains("roll[3].work"),
        "{reason}"
    );
}

/// The loop of [`looped`] with parameters for its settings.
fn looped_with_params(settings: &str) -> String {
    looped(settings).replacen(
        "runbook: par\n",
        "runbook: par\nparams:\n  batch: { type: string, default: \"1\" }\n  tolerate: { type: int, default: 0 }\n",
        1,
    )
}

#[test]
fn loop_settings_from_parameters_are_rendered_when_the_loop_starts() {
    let sb = Sandbox::new();
    sb.write(
        "par.yaml",
        &looped_with_params(
            "    batch: \"{{params.batch}}\"\n    max_failures: \"{{params.tolerate}}\"\n",
        ),
    );
    sb.write("fail", "3\n4\n");
    // Waves of two, one failure tolerated: the same as the fixed `batch: 2, max_failures: 1`.
    sb.cmd(&["run", "par.yaml", "-p", "batch=2", "-p", "tolerate=1"])
        .code(1);
    let events = timeline(&sb);
    let mut started: Vec<u32> = events
        .iter()
        .filter(|(w, ..)| w == "start")
        .map(|(_, n, _)| *n)
        .collect();
    started.sort_unstable();
    assert_eq!(started, vec![1, 2, 3, 4], "{events:?}");
    assert_eq!(max_overlap(&events), 2, "{events:?}");

    // Half the items per wave, two failures tolerated: the loop finishes.
    let sb = Sandbox::new();
    sb.write(
        "par.yaml",
        &looped_with_params(
            "    batch: \"{{params.batch}}\"\n    max_failures: \"{{params.tolerate}}\"\n",
        ),
    );
    sb.write("fail", "3\n4\n");
    sb.cmd(&["run", "par.yaml", "-p", "batch=50%", "-p", "tolerate=2"])
        .ok();
    let events = timeline(&sb);
    assert_eq!(events.len(), 16, "{events:?}");
    assert_eq!(max_overlap(&events), 4, "{events:?}");
}

#[test]
fn a_loop_setting_that_renders_to_a_bad_value_fails_the_loop_before_any_iteration() {
    let sb = Sandbox::new();
    sb.write(
        "par.yaml",
        &looped_with_params("    batch: \"{{params.batch}}\"\n"),
    );
    let out = sb.cmd(&["run", "par.yaml", "-p", "batch=0"]).code(1);
    assert_eq!(sb.read("times"), "", "no iteration started");
    let status = sb.status(&sb.only_run());
    assert_eq!(status["state"], "failed", "{status}");
    let reason = status["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("`batch` must be at least 1") && reason.contains("{{params.batch}}"),
        "{reason}\n{}",
        out.explain("run")
    );
    // A template that does not compile is refused before anything runs, at its line.
    let bad = looped_with_params("    parallel: \"{{params.nope\"\n");
    sb.write("bad.yaml", &bad);
    let out = sb.cmd(&["check", "bad.yaml"]).run();
    assert_ne!(out.code(), Some(0));
    assert!(out.stderr.contains("bad.yaml:9:"), "{}", out.stderr);
}

#[test]
fn failures_within_max_failures_let_the_loop_finish() {
    let sb = Sandbox::new();
    let runbook = looped("    batch: \"25%\"\n    max_failures: \"25%\"\n")
        + "  - id: failed\n    script: 'steps.roll.output.filter(|o| type_of(o) == \"()\").len()'\n";
    sb.write("par.yaml", &runbook);
    sb.write("fail", "2\n7\n");
    sb.cmd(&["run", "par.yaml"]).ok();
    let events = timeline(&sb);
    assert_eq!(events.len(), 16, "{events:?}");
    assert_eq!(
        max_overlap(&events),
        2,
        "25% of 8 is waves of two: {events:?}"
    );
    let run = sb.only_run();
    let records = sb.records(&run);
    let failed = records
        .iter()
        .find(|r| r["event"] == "step_succeeded" && r["path"] == "failed")
        .expect("the step after the loop ran");
    assert_eq!(
        failed["output"], 2,
        "two tolerated failures leave null in the output"
    );
}

#[test]
fn branches_of_a_parallel_step_run_at_once() {
    let sb = Sandbox::new();
    // Each branch waits (bounded) for the other to have started: run one after the other they
    // could not both succeed.
    let branch = |me: &str, other: &str| {
        format!(
            "    - id: {me}\n      shell:\n        run: |\n          touch {me}.started\n          for i in $(seq 100); do [ -e {other}.started ] && echo {me}-saw-{other} && exit 0; sleep 0.05; done\n          exit 1\n"
        )
    };
    sb.write(
        "both.yaml",
        &format!(
            "runbook: both\nsteps:\n  - id: both\n    parallel:\n{}{}  - id: after\n    script: \"steps.both.output.a.stdout + steps.both.output.b.stdout\"\n",
            branch("a", "b"),
            branch("b", "a")
        ),
    );
    sb.cmd(&["run", "both.yaml"]).ok();
    let records = sb.records(&sb.only_run());
    let after = records
        .iter()
        .find(|r| r["event"] == "step_succeeded" && r["path"] == "after")
        .expect("after ran");
    assert_eq!(after["output"], "a-saw-b\nb-saw-a\n");
}

const KILLED: &str = r#"
runbook: par-kill
steps:
  - id: roll
    foreach: "[1, 2, 3, 4]"
    as: n
    parallel: 2
    steps:
      - id: write
        check:
          probe: { shell: { args: [grep, -qx, "item-{{n}}", out.txt] } }
          until: "output.exit_code == 0"
        shell: { run: "echo item-{{n}} >> out.txt" }
      - id: mark
        shell: { run: "echo mark-{{n}} >> out.txt" }
  - id: last
    shell: { run: "echo last >> out.txt" }
"#;

/// Drives a killed run to the end as an operator would: resume; a step that needs attention is
/// retried or skipped by looking whether its effect is there.
fn drive(sb: &Sandbox, run: &str) -> Vec<i32> {
    let mut codes = Vec::new();
    for _ in 0..20 {
        let status = sb.status(run);
        let out = match status["state"].as_str().unwrap_or_default() {
            "succeeded" => return codes,
            "needs-attention" => {
                let path = status["attention"]["path"]
                    .as_str()
                    .expect("path")
                    .to_owned();
                let line = if path == "last" {
                    "last".to_owned()
                } else {
                    // roll[i].mark
                    let i: u32 = path[5..path.find(']').expect("index")].parse().expect("i");
                    format!("mark-{}", i + 1)
                };
                let present = sb.read("out.txt").lines().any(|l| l == line);
                let flag = if present {
                    "--skip-step"
                } else {
                    "--retry-step"
                };
                sb.cmd(&["resume", run, flag, &path]).run()
            }
            "running" | "interrupted" => sb.cmd(&["resume", run]).run(),
            other => panic!("unexpected state {other}: {status}"),
        };
        assert!(
            matches!(out.code(), Some(0 | 4)),
            "{}",
            out.explain("driving")
        );
        codes.push(out.code().unwrap_or(-1));
    }
    panic!("run {run} did not finish within 20 commands");
}

#[test]
fn kill_after_every_commit_of_a_parallel_loop_and_resume_does_every_effect_once() {
    let mut kill = 1u64;
    let mut attention = 0;
    loop {
        let sb = Sandbox::new();
        sb.write("kill.yaml", KILLED);
        let out = sb
            .cmd(&["run", "kill.yaml"])
            .env("RUNBOOK_TEST_KILL_AFTER_COMMIT", kill.to_string())
            .run();
        if out.status.signal().is_none() {
            out.expect_code(0);
            assert!(kill > 8, "suspiciously few commits ({kill})");
            assert!(attention > 0, "no kill left a `mark` step in flight");
            break;
        }
        assert_eq!(
            out.status.signal(),
            Some(9),
            "{}",
            out.explain("expected SIGKILL")
        );
        let run = sb.only_run();
        let codes = drive(&sb, &run);
        attention += codes.iter().filter(|c| **c == 4).count();
        let mut seen: BTreeMap<String, u32> = BTreeMap::new();
        for line in sb.read("out.txt").lines() {
            *seen.entry(line.to_owned()).or_default() += 1;
        }
        let expected: BTreeMap<String, u32> = (1..=4)
            .flat_map(|n| [format!("item-{n}"), format!("mark-{n}")])
            .chain(["last".to_owned()])
            .map(|l| (l, 1))
            .collect();
        assert_eq!(
            seen, expected,
            "killed after commit {kill}: every effect exactly once"
        );
        kill += 1;
    }
}

#[test]
fn bad_loop_settings_point_at_the_value() {
    let table = [
        ("    parallel: 0\n", "`parallel` must be at least 1", 6),
        (
            "    batch: \"150%\"\n",
            "a percentage goes from 1% to 100%",
            6,
        ),
        (
            "    max_failures: lots\n",
            "`max_failures` is a whole number",
            6,
        ),
    ];
    for (settings, message, line) in table {
        let sb = Sandbox::new();
        sb.write("bad.yaml", &looped(settings));
        let out = sb.cmd(&["check", "bad.yaml"]).run();
        assert_ne!(out.code(), Some(0), "{settings}");
        assert!(out.stderr.contains(message), "{settings}: {}", out.stderr);
        assert!(
            out.stderr.contains(&format!("bad.yaml:{line}:")),
            "{settings}: {}",
            out.stderr
        );
    }
}

#[test]
fn gates_inside_a_parallel_loop_park_the_run_and_each_approval_continues_it() {
    let sb = Sandbox::new();
    sb.write(
        "gate.yaml",
        r#"
runbook: pgate
steps:
  - id: roll
    foreach: "[1, 2, 3]"
    parallel: 2
    steps:
      - id: ok
        gate: "go {{item}}?"
      - id: work
        shell: { run: "echo work-{{item}} >> out.txt" }
"#,
    );
    sb.cmd(&["run", "gate.yaml"]).code(3);
    let run = sb.only_run();
    // Two iterations at once: both gates are open.
    for (i, gate) in ["roll[0].ok", "roll[1].ok", "roll[2].ok"]
        .iter()
        .enumerate()
    {
        let status = sb.status(&run);
        assert_eq!(
            status["state"], "waiting",
            "before approving {gate}: {status}"
        );
        let out = sb
            .cmd(&["approve", &run, "--step", gate, "--comment", "ok"])
            .run();
        let expected = if i == 2 { 0 } else { 3 };
        out.expect_code(expected);
    }
    let mut lines: Vec<String> = sb.read("out.txt").lines().map(str::to_owned).collect();
    lines.sort();
    assert_eq!(
        lines,
        ["work-1", "work-2", "work-3"],
        "each iteration's effect once"
    );
    assert_eq!(sb.status(&run)["state"], "succeeded");
}

#[test]
fn status_from_another_shell_shows_every_iteration_in_flight() {
    let sb = Sandbox::new();
    // Each iteration waits (bounded) until the test lets it go: three are in flight at once.
    sb.write(
        "slow.yaml",
        "runbook: slow\nsteps:\n  - id: roll\n    foreach: \"[1, 2, 3, 4, 5]\"\n    parallel: 3\n    steps:\n      - id: work\n        shell: 'for i in $(seq 400); do [ -e go ] && exit 0; sleep 0.05; done; exit 1'\n",
    );
    let mut child = sb.cmd(&["run", "slow.yaml"]).spawn();
    let mut run = String::new();
    crate::support::wait_for(
        "the run to exist",
        std::time::Duration::from_secs(10),
        || {
            let out = sb.cmd(&["history", "--output", "json"]).run();
            run = out
                .stdout
                .lines()
                .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .and_then(|v| v["id"].as_str().map(str::to_owned))
                .unwrap_or_default();
            !run.is_empty()
        },
    );
    let running = |status: &serde_json::Value| -> Vec<String> {
        status["steps"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s["status"] == "running" && s["kind"] == "shell")
            .map(|s| s["path"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let mut seen = Vec::new();
    crate::support::wait_for(
        "three iterations in flight",
        std::time::Duration::from_secs(10),
        || {
            seen = running(&sb.status(&run));
            seen.len() == 3
        },
    );
    seen.sort();
    assert_eq!(seen, ["roll[0].work", "roll[1].work", "roll[2].work"]);
    let human = sb.cmd(&["status", &run]).ok().stdout;
    for path in &seen {
        assert!(
            human
                .lines()
                .any(|l| l.contains("running") && l.contains(path.as_str())),
            "{human}"
        );
    }
    sb.write("go", "");
    let status = child.wait().expect("wait");
    assert!(status.success(), "{status:?}");
    assert_eq!(sb.status(&run)["state"], "succeeded");
}
