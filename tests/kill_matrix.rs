//! The kill matrix: a run is killed with SIGKILL right after every journal commit in turn, and
//! at random instants, then driven to completion the way an operator would (resume; approve at
//! the gate; decide a step that needs attention by looking at its effect). Every completed
//! step's effect must appear exactly once, and a step in flight at the kill must be re-run only
//! when it is idempotent or its `check` allows — otherwise the resume stops with exit code 4.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt as _;
use std::time::Duration;

use serde_json::Value;

use crate::support::{Rng, Sandbox, wait_for};

const RUNBOOK: &str = r#"
runbook: kill-matrix
params:
  out: { type: string, default: out.txt }
steps:
  - id: a
    shell: { run: "echo a >> {{sh params.out}}" }
  - id: b
    idempotent: true
    shell: { run: "grep -qx b {{sh params.out}} || echo b >> {{sh params.out}}" }
  - id: loop
    foreach: "[1, 2, 3]"
    as: n
    steps:
      - id: item
        check:
          probe: { shell: { args: [grep, -qx, "item-{{n}}", "{{params.out}}"] } }
          until: "output.exit_code == 0"
        shell: { run: "echo item-{{n}} >> {{sh params.out}}" }
  - id: confirm
    gate: "all items written; continue?"
  - id: nap
    sleep: 200ms
  - id: c
    shell: { run: "echo c >> {{sh params.out}}" }
"#;

/// The line each step writes, and whether a resume may re-run it without asking.
const EFFECTS: &[(&str, &str)] = &[
    ("a", "a"),
    ("b", "b"),
    ("loop[0].item", "item-1"),
    ("loop[1].item", "item-2"),
    ("loop[2].item", "item-3"),
    ("c", "c"),
];

/// Steps that are neither idempotent nor have a `check`.
const UNSAFE: &[&str] = &["a", "c"];

fn sandbox() -> Sandbox {
    let sb = Sandbox::new();
    sb.write("matrix.yaml", RUNBOOK);
    sb
}

/// The path of the step whose intent is the run's last step-level record, if that record is a
/// `step_started` (the step was in flight at the kill).
fn in_flight_at_kill(records: &[Value]) -> Option<String> {
    let last = records.iter().rev().find(|r| {
        matches!(
            r["event"].as_str(),
            Some(
                "step_started"
                    | "step_succeeded"
                    | "step_failed"
                    | "step_skipped"
                    | "gate_decided"
                    | "timer_set"
                    | "items_decided"
                    | "gate_opened"
            )
        )
    })?;
    (last["event"] == "step_started").then(|| last["path"].as_str().unwrap_or_default().to_owned())
}

/// Drives a run to completion like an operator; returns every exit code seen, in order.
fn drive(sb: &Sandbox, run: &str) -> Vec<i32> {
    let mut codes = Vec::new();
    for _ in 0..20 {
        let status = sb.status(run);
        let state = status["state"].as_str().unwrap_or_default().to_owned();
        let out = match state.as_str() {
            "succeeded" => return codes,
            "waiting" if status["open_gate"].is_null() => sb.cmd(&["resume", run]).run(),
            "waiting" => sb.cmd(&["approve", run, "--comment", "ok"]).run(),
            "needs-attention" => {
                let path = status["attention"]["path"]
                    .as_str()
                    .expect("attention path")
                    .to_owned();
                let line = EFFECTS
                    .iter()
                    .find(|(p, _)| *p == path)
                    .map(|(_, l)| *l)
                    .expect("known step");
                let present = sb.read("out.txt").lines().any(|l| l == line);
                let flag = if present {
                    "--skip-step"
                } else {
                    "--retry-step"
                };
                sb.cmd(&["resume", run, flag, &path]).run()
            }
            "running" | "interrupted" | "sleeping" => sb.cmd(&["resume", run]).run(),
            other => panic!("unexpected state {other}: {status}"),
        };
        assert!(
            matches!(out.code(), Some(0 | 3 | 4)),
            "{}",
            out.explain("driving the run")
        );
        codes.push(out.code().unwrap_or(-1));
    }
    panic!("run {run} did not finish within 20 commands");
}

/// Every effect exactly once, in order.
fn assert_effects(sb: &Sandbox, context: &str) {
    let lines: Vec<String> = sb.read("out.txt").lines().map(str::to_owned).collect();
    let expected: Vec<&str> = EFFECTS.iter().map(|(_, l)| *l).collect();
    assert_eq!(
        lines, expected,
        "{context}: effects must appear exactly once, in order"
    );
}

/// Checks what the first resume after a kill did with the step in flight.
fn assert_first_resume(records_before: &[Value], codes: &[i32], context: &str) {
    match in_flight_at_kill(records_before) {
        Some(path) if UNSAFE.contains(&path.as_str()) => assert_eq!(
            codes.first(),
            Some(&4),
            "{context}: `{path}` was in flight and is not idempotent, so the resume must stop with exit 4"
        ),
        _ => assert_ne!(
            codes.first(),
            Some(&4),
            "{context}: nothing unsafe was in flight, so the resume must not need attention"
        ),
    }
}

/// Kills `args` after each of its commits in turn; `setup` brings a fresh sandbox to the point
/// where `args` runs. Returns how many kill points there were.
fn matrix(
    phase: &str,
    setup: impl Fn() -> (Sandbox, Option<String>),
    args: impl Fn(&Option<String>) -> Vec<String>,
) -> u64 {
    let mut kill = 1u64;
    let mut saw_attention = false;
    loop {
        let (sb, run) = setup();
        let argv = args(&run);
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let out = sb
            .cmd(&argv)
            .env("RUNBOOK_TEST_KILL_AFTER_COMMIT", kill.to_string())
            .run();
        if out.status.signal().is_none() {
            // The command finished before its kill point: every commit has been covered.
            assert!(kill > 3, "{phase}: suspiciously few commits ({kill})");
            assert!(
                saw_attention || phase == "approve",
                "{phase}: no kill left a non-idempotent step in flight"
            );
            return kill - 1;
        }
        assert_eq!(
            out.status.signal(),
            Some(9),
            "{}",
            out.explain("expected SIGKILL")
        );
        let run = run.unwrap_or_else(|| sb.only_run());
        let before = sb.records(&run);
        let codes = drive(&sb, &run);
        let context = format!("{phase}, killed after commit {kill}");
        assert_first_resume(&before, &codes, &context);
        saw_attention |= codes.first() == Some(&4);
        assert_effects(&sb, &context);
        kill += 1;
    }
}

#[test]
fn kill_after_every_commit_of_run_and_resume_finishes_every_run_exactly_once() {
    let points = matrix(
        "run",
        || (sandbox(), None),
        |_| ["run", "matrix.yaml"].map(String::from).to_vec(),
    );
    // One commit creates the run, one starts each effect (carrying the outcome before it:
    // a, b and the three items) and one parks it at the gate.
    assert!(points >= 7, "only {points} commits in the run phase");
}

#[test]
fn kill_after_every_commit_of_approve_and_resume_finishes_every_run_exactly_once() {
    let points = matrix(
        "approve",
        || {
            let sb = sandbox();
            sb.cmd(&["run", "matrix.yaml"]).code(3);
            let run = sb.only_run();
            (sb, Some(run))
        },
        |run| {
            vec![
                "approve".into(),
                run.clone().expect("run"),
                "--comment".into(),
                "go".into(),
            ]
        },
    );
    assert!(points >= 5, "only {points} commits in the approve phase");
}

#[test]
fn kill_at_random_instants_and_resume_finishes_every_run_exactly_once() {
    let mut rng = Rng::new(0x5EED_2026);
    let mut outcomes: BTreeMap<String, u32> = BTreeMap::new();
    for i in 0..60 {
        let sb = sandbox();
        let mut child = sb.cmd(&["run", "matrix.yaml", "--yes"]).spawn();
        // Kill somewhere within a whole run (≈ 0.2 s of sleep plus the steps).
        let delay = Duration::from_millis(rng.below(450));
        let started = std::time::Instant::now();
        let mut exited = None;
        wait_for("the kill instant", Duration::from_secs(5), || {
            if let Ok(Some(status)) = child.try_wait() {
                exited = Some(status);
                return true;
            }
            started.elapsed() >= delay
        });
        if exited.is_none() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid")),
                nix::sys::signal::SIGKILL,
            );
            let _ = child.wait();
        }
        let context = format!("random kill #{i} after {delay:?}");
        let history = sb.cmd(&["history", "--output", "json"]).ok();
        if history.stdout.trim().is_empty() {
            // Killed before the run was created: nothing may have happened.
            assert_eq!(sb.read("out.txt"), "", "{context}");
            *outcomes.entry("before create".into()).or_default() += 1;
            continue;
        }
        let run = sb.only_run();
        let before = sb.records(&run);
        let in_flight = in_flight_at_kill(&before).unwrap_or_else(|| "-".into());
        let codes = drive(&sb, &run);
        assert_first_resume(&before, &codes, &context);
        assert_effects(&sb, &context);
        *outcomes.entry(in_flight).or_default() += 1;
    }
    eprintln!("in flight at the random kills: {outcomes:?}");
}

/// A long stretch of `script:` steps hands its records to the journal in chunks while it runs
/// (`RIDE_CHUNK` = 512 riding events, cut only at a step's end). Killed right after each chunk
/// became durable, the journal ends at a step boundary, and a resume replays what was
/// journaled and runs every other step once.
#[test]
fn a_long_script_chain_killed_after_each_early_chunk_resumes_at_a_step_boundary() {
    const STEPS: usize = 1_500;
    let book = (2..=STEPS).fold(
        String::from("runbook: chain\nsteps:\n  - id: s1\n    script: \"1\"\n"),
        |book, i| {
            book + &format!(
                "  - id: s{i}\n    script: \"steps.s{}.output + 1\"\n",
                i - 1
            )
        },
    );
    let step_no = |r: &Value| -> usize {
        r["path"].as_str().unwrap_or_default()[1..]
            .parse()
            .expect("a step path s<N>")
    };
    let mut kept = Vec::new();
    for ship in [1, 3, 5] {
        let context = format!("killed after the early chunk #{ship}");
        let sb = Sandbox::new();
        sb.write("chain.yaml", &book);
        let out = sb
            .cmd(&["run", "chain.yaml"])
            .env("RUNBOOK_TEST_KILL_AFTER_SHIP", ship.to_string())
            .run();
        assert_eq!(
            out.status.signal(),
            Some(9),
            "{}",
            out.explain(&format!("{context}: expected SIGKILL"))
        );
        let run = sb.only_run();
        let before = sb.records(&run);
        let last = before.last().expect("records");
        assert_eq!(
            last["event"], "step_succeeded",
            "{context}: the journal ends at a step's end: {last}"
        );
        let done = step_no(last);
        assert!(
            done > 0 && done < STEPS,
            "{context}: {done} steps were durable"
        );
        kept.push(done);

        let resumed = sb.cmd(&["resume", &run]).run();
        assert_eq!(resumed.code(), Some(0), "{}", resumed.explain(&context));
        let records = sb.records(&run);
        let (mut starts, mut outputs) = (vec![0; STEPS + 1], vec![Value::Null; STEPS + 1]);
        for r in &records {
            match r["event"].as_str() {
                Some("step_started") => starts[step_no(r)] += 1,
                Some("step_succeeded") => outputs[step_no(r)] = r["output"].clone(),
                _ => {}
            }
        }
        for n in 1..=STEPS {
            assert_eq!(
                (starts[n], &outputs[n]),
                (1, &Value::from(n)),
                "{context}: s{n} runs once (replayed if it was journaled) and outputs {n}"
            );
        }
        assert_eq!(sb.status(&run)["state"], "succeeded", "{context}");
    }
    assert!(
        kept.windows(2).all(|w| w[0] < w[1]),
        "later chunks keep more steps: {kept:?}"
    );
}

/// The iterations of a parallel loop share one ledger; it too is cut into chunks while the loop
/// runs, made durable at once. Killed right after the first chunk, the journal holds some of
/// the loop's outcomes (the rest of the loop had not been journaled: the process would have
/// exited 0 with every record written at the end); a resume replays them and runs each other
/// iteration, every one ending once with its own output.
#[test]
fn a_parallel_loop_of_script_steps_is_made_durable_in_chunks_while_it_runs() {
    const ITEMS: usize = 1_500;
    let sb = Sandbox::new();
    sb.write(
        "par.yaml",
        &format!(
            "runbook: par\nsteps:\n  - id: each\n    foreach: \"range(0, {ITEMS})\"\n    as: n\n    \
             parallel: 4\n    steps:\n      - id: double\n        script: \"n * 2\"\n  - id: after\n    \
             script: \"1\"\n"
        ),
    );
    let out = sb
        .cmd(&["run", "par.yaml"])
        .env("RUNBOOK_TEST_KILL_AFTER_SHIP", "1")
        .run();
    assert_eq!(
        out.status.signal(),
        Some(9),
        "{}",
        out.explain("expected SIGKILL after the first chunk")
    );
    let run = sb.only_run();
    let item = |r: &Value| -> Option<usize> {
        let path = r["path"].as_str()?;
        path.strip_prefix("each[")?
            .strip_suffix("].double")?
            .parse()
            .ok()
    };
    let ended = |records: &[Value]| -> Vec<usize> {
        records
            .iter()
            .filter(|r| r["event"] == "step_succeeded")
            .filter_map(item)
            .collect()
    };
    let before = ended(&sb.records(&run));
    assert!(
        !before.is_empty() && before.len() < ITEMS,
        "part of the loop was durable when the process died: {} of {ITEMS}",
        before.len()
    );

    let resumed = sb.cmd(&["resume", &run]).run();
    assert_eq!(resumed.code(), Some(0), "{}", resumed.explain("resume"));
    let records = sb.records(&run);
    let mut outputs = vec![Vec::new(); ITEMS];
    for r in records.iter().filter(|r| r["event"] == "step_succeeded") {
        if let Some(i) = item(r) {
            outputs[i].push(r["output"].clone());
        }
    }
    for (i, out) in outputs.iter().enumerate() {
        assert_eq!(
            out,
            &[Value::from(2 * i)],
            "each[{i}].double ended once, with {}",
            2 * i
        );
    }
    let mut starts = vec![0; ITEMS];
    for r in records.iter().filter(|r| r["event"] == "step_started") {
        if let Some(i) = item(r) {
            starts[i] += 1;
        }
    }
    for i in &before {
        assert_eq!(
            starts[*i], 1,
            "each[{i}] was journaled as done before the kill: replayed, not started again"
        );
    }
    assert_eq!(sb.status(&run)["state"], "succeeded");
}
