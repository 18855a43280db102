//! A step's own output in human output (issue 12, item 6): the last lines of a failed step's
//! stdout and stderr under it in `run` and `status`, every step's with `-v`, a step's whole
//! output with `log RUN --step PATH`, secrets masked in all of it, and a failure said once.

use crate::support::Sandbox;

const TOKEN: &str = "tok-S3CR3T-5a6b7c";

/// `hello` succeeds with one line (not its command's text: the command is shown as the step
/// starts); `fill` prints 30 numbered lines, the secret, and a last word on stderr, then fails.
const FAILING: &str = r#"
runbook: failing
params:
  token: { type: string, secret: true, env: TEST_TOKEN }
steps:
  - id: hello
    shell: { run: "printf 'hello %s\\n' 'from the step'" }
  - id: fill
    shell: { run: "for i in $(seq 1 30); do echo copied block $i; done; echo token {{params.token}}; echo the disk is full >&2; exit 1" }
"#;

#[test]
fn a_failed_step_s_last_lines_of_output_are_shown_under_it_and_the_failure_is_said_once() {
    let sb = Sandbox::new();
    sb.write("failing.yaml", FAILING);
    let out = sb
        .cmd(&["run", "failing.yaml"])
        .env("TEST_TOKEN", TOKEN)
        .code(1);
    let all = format!("{}{}", out.stdout, out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    let failed = lines
        .iter()
        .position(|l| l.contains("FAILED fill"))
        .unwrap_or_else(|| panic!("{}", out.explain("no FAILED line")));
    let under = &lines[failed + 1..];
    let stderr_at = under
        .iter()
        .position(|l| l.trim() == "stderr:")
        .unwrap_or_else(|| panic!("{}", out.explain("no stderr under the step")));
    assert_eq!(
        under[stderr_at + 1].trim(),
        "the disk is full",
        "{}",
        out.stdout
    );
    assert_eq!(
        under[0].trim(),
        "stdout (last 10 of 31 lines):",
        "{}",
        out.stdout
    );
    assert_eq!(under[1].trim(), "copied block 22", "{}", out.stdout);
    assert!(
        !all.contains("copied block 21"),
        "only the last lines: {all}"
    );
    assert!(under[10].trim() == "token ***", "{}", out.stdout);
    assert!(!all.contains(TOKEN), "the secret in clear:\n{all}");
    // A succeeded step's output only with -v.
    assert!(!all.contains("hello from the step"), "{all}");
    assert_eq!(
        all.matches("command exited with code 1").count(),
        1,
        "the failure is said more than once:\n{all}"
    );
    // What to do next, still.
    assert!(out.stdout.contains("--retry-step fill"), "{}", out.stdout);

    let run = sb.only_run();
    let status = sb.cmd(&["status", &run]).ok();
    assert!(
        status.stdout.contains("the disk is full") && status.stdout.contains("copied block 30"),
        "{}",
        status.stdout
    );
    assert!(!status.stdout.contains("hello from the step"));
    assert!(!status.stdout.contains(TOKEN));
    let verbose = sb.cmd(&["status", &run, "-v"]).ok();
    assert!(
        verbose.stdout.contains("hello from the step"),
        "{}",
        verbose.stdout
    );
}

#[test]
fn with_v_a_run_shows_the_last_lines_of_every_step_s_output() {
    let sb = Sandbox::new();
    sb.write(
        "fine.yaml",
        r#"
runbook: fine
steps:
  - id: hello
    shell: { run: "printf 'hello %s\\n' 'from the step'; echo a warning >&2" }
"#,
    );
    let quiet = sb.cmd(&["run", "fine.yaml"]).ok();
    assert!(
        !quiet.stdout.contains("hello from the step"),
        "{}",
        quiet.stdout
    );
    let loud = sb.cmd(&["-v", "run", "fine.yaml"]).ok();
    let lines: Vec<&str> = loud.stdout.lines().map(str::trim).collect();
    let ok = lines
        .iter()
        .position(|l| l.starts_with("ok     hello"))
        .unwrap_or_else(|| panic!("{}", loud.explain("no ok line")));
    assert_eq!(
        lines[ok + 1..ok + 5],
        ["stdout:", "hello from the step", "stderr:", "a warning"],
        "{}",
        loud.stdout
    );
}

#[test]
fn log_step_prints_every_attempt_of_a_step_with_its_whole_output() {
    let sb = Sandbox::new();
    sb.write(
        "long.yaml",
        r#"
runbook: long
params:
  token: { type: string, secret: true, env: TEST_TOKEN }
steps:
  - id: long
    retry: { attempts: 2, backoff: 10ms }
    shell: { run: "for i in $(seq 1 50); do echo row $i; done; echo with {{params.token}}; if [ ! -e tried ]; then touch tried; echo first try fails >&2; exit 4; fi" }
"#,
    );
    sb.cmd(&["run", "long.yaml"]).env("TEST_TOKEN", TOKEN).ok();
    let run = sb.only_run();
    let out = sb.cmd(&["log", &run, "--step", "long"]).ok();
    let text = &out.stdout;
    assert!(!text.contains(TOKEN), "the secret in clear:\n{text}");
    let first = text.find("attempt 1: failed").expect("attempt 1 labelled");
    let second = text
        .find("attempt 2: succeeded")
        .expect("attempt 2 labelled");
    assert!(first < second, "{text}");
    for (from, to) in [(first, second), (second, text.len())] {
        let part = &text[from..to];
        assert!(part.contains("stdout (51 lines):"), "{part}");
        for i in 1..=50 {
            assert_eq!(
                part.matches(&format!("row {i}\n")).count(),
                1,
                "row {i}: {part}"
            );
        }
        assert!(part.contains("with ***\n"), "{part}");
    }
    assert!(text[first..second].contains("first try fails"), "{text}");
    assert!(text[second..].contains("stderr: (empty)"), "{text}");

    let wrong = sb.cmd(&["log", &run, "--step", "lnog"]).code(2);
    assert!(
        wrong.stderr.contains("has no step `lnog`") && wrong.stderr.contains("`long`"),
        "{}",
        wrong.stderr
    );
}
