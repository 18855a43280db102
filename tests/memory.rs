//! Bounded scripts: an expression that tries to hold more memory than an evaluation may
//! (`MAX_MEMORY`, 128 MiB) fails its step with a clear error at the expression's
//! `file:line:column` — the run journaled as failed, not interrupted — and the process never
//! comes near what the machine has: its peak resident set size, measured exactly with
//! `getrusage(RUSAGE_CHILDREN)`, stays under 500 MB. Before the bound, `range(0, 2000).map(|i|
//! range(0, 100000))` took 3.1 GB and a larger count aborted the process.

use crate::support::Sandbox;

/// The peak a run may reach: the binary itself, plus one evaluation's 128 MiB, with room.
const PEAK_LIMIT: u64 = 500 * 1000 * 1000;

/// 20 000 arrays of 100 000 integers: 32 GB if nothing stopped it.
const BOMB: &str = "range(0, 20000).map(|i| range(0, 100000)).len()";

/// The error of the bomb, reported at its `map` (column 17 of the expression).
const BOMB_ERROR: &str = "script exceeded its memory limit of 128 MiB";

/// Runs `runbook run bomb.yaml` on `yaml`, measuring its peak memory, and checks what every
/// bomb must end in: exit code 1, `error` at `at` in the output, the run failed, `after`
/// never run.
fn expect_clean_failure(yaml: &str, at: &str) {
    let sb = Sandbox::new();
    sb.write("bomb.yaml", yaml);
    let (out, peak) = sb.cmd(&["run", "bomb.yaml"]).run_measured();
    out.expect_code(1);
    let failure = format!("{BOMB_ERROR} (at {at})");
    assert!(
        out.stdout.contains(&failure) || out.stderr.contains(&failure),
        "{}",
        out.explain(&format!("the failure `{failure}`"))
    );
    assert!(
        peak < PEAK_LIMIT,
        "peak RSS {} MB, over {} MB\n{}",
        peak / 1_000_000,
        PEAK_LIMIT / 1_000_000,
        out.explain("a bounded peak")
    );
    let run = sb.only_run();
    let status = sb.status(&run);
    assert_eq!(status["state"], "failed", "{status:#}");
    assert!(
        !sb.path().join("after-ran").exists(),
        "a step after the bomb ran"
    );
    assert!(!sb.path().join("bomb-ran").exists(), "the guarded step ran");
}

#[test]
fn a_memory_bomb_in_a_script_step_fails_cleanly_with_a_bounded_peak() {
    let yaml = format!(
        r#"runbook: bomb
steps:
  - id: before
    script: "1"
  - id: bomb
    script: "{BOMB}"
  - id: after
    shell: {{ args: [touch, after-ran] }}
"#
    );
    expect_clean_failure(&yaml, "bomb.yaml:6:30");
}

#[test]
fn a_memory_bomb_in_a_when_fails_cleanly_with_a_bounded_peak() {
    let yaml = format!(
        r#"runbook: bomb
steps:
  - id: bomb
    when: "{BOMB} > 0"
    shell: {{ args: [touch, bomb-ran] }}
  - id: after
    shell: {{ args: [touch, after-ran] }}
"#
    );
    expect_clean_failure(&yaml, "bomb.yaml:4:28");
}

#[test]
fn an_output_of_several_megabytes_is_still_usable_in_expressions() {
    let sb = Sandbox::new();
    // 60 000 JSON objects of 70 bytes: about 4 MB of stdout.
    sb.write(
        "big.yaml",
        r#"runbook: big
steps:
  - id: list
    shell:
      run: "printf '['; yes '{\"name\": \"pod-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\", \"ready\": true},' | head -n 60000; printf '{\"ready\": false}]'"
      capture_limit: 20000000
  - id: count
    script: "parse_json(steps.list.output.stdout).filter(|p| p.ready).len()"
  - id: verify
    assert: "steps.count.output == 60000 && steps.list.output.stdout.len() > 4000000"
    script: "steps.list.output.json.len()"
"#,
    );
    let out = sb.cmd(&["run", "big.yaml", "--output", "json"]).run();
    out.expect_code(0);
    let run = sb.only_run();
    let records = sb.records(&run);
    let output_of = |id: &str| {
        let record = records
            .iter()
            .find(|r| r["event"] == "step_succeeded" && r["path"] == id);
        record.expect("the step succeeded")["output"].clone()
    };
    assert_eq!(output_of("count"), 60000);
    assert_eq!(output_of("verify"), 60001);
}
