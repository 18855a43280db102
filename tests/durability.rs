//! Durability, seen from the system calls: every commit ends in an `fdatasync` (sled's own
//! flush does not reach the disk), and a step's `StepStarted` is synced before its command is
//! executed (write-ahead). Needs `strace`; without it these tests fail, they never skip.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use crate::support::Sandbox;

const STEPS: usize = 10;

/// A runbook of `STEPS` steps that each execute `true`.
fn no_ops() -> String {
    let mut text = String::from("runbook: no-ops\nsteps:\n");
    for i in 1..=STEPS {
        let _ = write!(text, "  - id: s{i}\n    shell: {{ args: [\"true\"] }}\n");
    }
    text
}

/// Runs `runbook ARGS` in the sandbox under `strace -f -e trace=TRACE`; returns strace's log.
fn strace(sb: &Sandbox, trace: &str, args: &[&str]) -> String {
    let probe = Command::new("strace").arg("-V").output();
    assert!(
        probe.is_ok_and(|o| o.status.success()),
        "these tests need strace: install it (apt-get install strace)"
    );
    let log = sb.path().join("strace.log");
    let out = Command::new("strace")
        .args(["-f", "-e", &format!("trace={trace}"), "-o"])
        .arg(&log)
        .arg(env!("CARGO_BIN_EXE_runbook"))
        .args(args)
        .current_dir(sb.path())
        .env("RUNBOOK_JOURNAL", sb.journal())
        .env("USER", "tester")
        .env_remove("RUNBOOK_TEST_KILL_AFTER_COMMIT")
        .output()
        .expect("run strace");
    assert!(
        out.status.success(),
        "runbook under strace failed: {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(Path::new(&log)).expect("strace log")
}

/// One completed system call from an `strace -f` log.
#[derive(Debug)]
struct Call {
    /// Line of the log where the call began (for execve) or ended (for fdatasync): what
    /// matters is that a sync finished before an exec started.
    at: usize,
    name: String,
    /// The call's text with its arguments and result, reassembled if strace split it.
    text: String,
}

/// Parses `PID name(args) = result` lines, joining `<unfinished ...>` / `<... name resumed>`
/// pairs of the same pid.
fn calls(log: &str) -> Vec<Call> {
    let mut pending: HashMap<String, (usize, String)> = HashMap::new();
    let mut out = Vec::new();
    for (i, line) in log.lines().enumerate() {
        let Some((pid, rest)) = line.trim().split_once(char::is_whitespace) else {
            continue;
        };
        let rest = rest.trim_start();
        if rest.starts_with("+++") || rest.starts_with("---") {
            continue;
        }
        if let Some(start) = rest.strip_suffix("<unfinished ...>") {
            pending.insert(pid.to_owned(), (i, start.trim_end().to_owned()));
            continue;
        }
        let (began, text) = if let Some(resumed) = rest.strip_prefix("<... ") {
            let Some((_, tail)) = resumed.split_once("resumed>") else {
                continue;
            };
            match pending.remove(pid) {
                Some((began, start)) => (began, format!("{start}{tail}")),
                None => continue,
            }
        } else {
            (i, rest.to_owned())
        };
        let Some((name, _)) = text.split_once('(') else {
            continue;
        };
        let name = name.to_owned();
        let at = if name == "execve" { began } else { i };
        out.push(Call { at, name, text });
    }
    out.sort_by_key(|c| c.at);
    out
}

fn succeeded(call: &Call) -> bool {
    call.text.trim_end().ends_with("= 0")
}

/// A successful execve of `true` (a step's command), by whatever PATH entry found it.
fn is_step_exec(call: &Call) -> bool {
    call.name == "execve"
        && succeeded(call)
        && call
            .text
            .split_once('(')
            .and_then(|(_, args)| args.split(',').next())
            .is_some_and(|program| program.trim_matches('"').ends_with("/true"))
}

#[test]
fn every_commit_is_fdatasynced() {
    let sb = Sandbox::new();
    sb.write("no-ops.yaml", &no_ops());
    let log = strace(&sb, "fdatasync", &["run", "no-ops.yaml"]);
    let syncs = calls(&log)
        .iter()
        .filter(|c| c.name == "fdatasync" && succeeded(c))
        .count();
    assert!(
        syncs >= 2 * STEPS,
        "{STEPS} steps commit StepStarted and StepSucceeded separately, so at least {} \
         fdatasync calls are needed; strace saw {syncs}:\n{log}",
        2 * STEPS
    );
    let run = sb.only_run();
    assert_eq!(sb.status(&run)["state"], "succeeded");
}

#[test]
fn a_steps_start_is_synced_before_its_command_is_executed() {
    let sb = Sandbox::new();
    sb.write("no-ops.yaml", &no_ops());
    let log = strace(&sb, "fdatasync,execve", &["run", "no-ops.yaml"]);
    let calls = calls(&log);
    let execs: Vec<usize> = calls
        .iter()
        .filter(|c| is_step_exec(c))
        .map(|c| c.at)
        .collect();
    assert_eq!(
        execs.len(),
        STEPS,
        "expected one exec of `true` per step:\n{log}"
    );
    let syncs: Vec<usize> = calls
        .iter()
        .filter(|c| c.name == "fdatasync" && succeeded(c))
        .map(|c| c.at)
        .collect();
    // Before each exec, two commits must have been synced since the previous one: the
    // previous step's StepSucceeded (or, for the first step, the run's creation) and this
    // step's StepStarted. One sync alone would not show that StepStarted was durable.
    let mut previous: Option<usize> = None;
    for (i, exec) in execs.iter().enumerate() {
        let between = syncs
            .iter()
            .filter(|s| previous.is_none_or(|p| **s > p) && *s < exec)
            .count();
        assert!(
            between >= 2,
            "only {between} fdatasync finished before the command of step s{} was executed \
             (since the previous step's): its StepStarted was not durable when its effect \
             began:\n{log}",
            i + 1
        );
        previous = Some(*exec);
    }
}
