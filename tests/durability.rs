//! Durability, seen from the system calls: every commit ends in an `fdatasync` (sled's own
//! flush does not reach the disk), the store's writes are not synced a second time on their
//! way there (no `sync_file_range` of sled's, see vendor/sled/VENDORED.md), and a step's
//! `StepStarted` is synced before its command is executed (write-ahead). Needs `strace`;
//! without it these tests fail, they never skip.

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

/// The descriptors of the journal's store file (`db`): sled writes through one, the journal
/// syncs through another.
fn db_fds(calls: &[Call]) -> Vec<String> {
    calls
        .iter()
        .filter(|c| c.name == "openat" && c.text.contains("/journal/db\""))
        .filter_map(|c| c.text.rsplit_once("= ").map(|(_, fd)| fd.trim().to_owned()))
        .filter(|fd| fd.parse::<u32>().is_ok())
        .collect()
}

/// The descriptor a call works on (its first argument).
fn fd_of(call: &Call) -> &str {
    call.text
        .split_once('(')
        .and_then(|(_, args)| args.split([',', ')']).next())
        .unwrap_or_default()
        .trim()
}

#[test]
fn every_effectful_step_costs_one_synced_commit() {
    let sb = Sandbox::new();
    sb.write("no-ops.yaml", &no_ops());
    let log = strace(
        &sb,
        "openat,fdatasync,sync_file_range",
        &["run", "no-ops.yaml"],
    );
    let calls = calls(&log);
    let fds = db_fds(&calls);
    // Each write is paid for once: by the commit's fdatasync, not also by a wait of its own.
    let ranges = calls.iter().filter(|c| c.name == "sync_file_range").count();
    assert_eq!(ranges, 0, "the store's writes were synced twice:\n{log}");
    let syncs = calls
        .iter()
        .filter(|c| c.name == "fdatasync" && succeeded(c) && fds.iter().any(|fd| fd_of(c) == fd))
        .count();
    // One commit creates the run, one per step carries the previous step's outcome and this
    // step's start, one ends the run: the store is synced once per effectful step.
    assert!(
        (STEPS..=STEPS + 3).contains(&syncs),
        "{STEPS} steps should cost {STEPS} to {} syncs of the store, strace saw {syncs}:\n{log}",
        STEPS + 3
    );
    let run = sb.only_run();
    assert_eq!(sb.status(&run)["state"], "succeeded");
}

#[test]
fn nothing_written_to_the_journal_is_unsynced_when_a_steps_command_starts() {
    let sb = Sandbox::new();
    sb.write("no-ops.yaml", &no_ops());
    let log = strace(
        &sb,
        "openat,pwrite64,write,fdatasync,execve",
        &["run", "no-ops.yaml"],
    );
    let calls = calls(&log);
    let fds = db_fds(&calls);
    assert!(!fds.is_empty(), "the store was never opened:\n{log}");
    let on_db = |c: &Call| fds.iter().any(|fd| fd_of(c) == fd);
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
    let mut previous = 0;
    for (i, exec) in execs.iter().enumerate() {
        let between = |c: &&Call| c.at > previous && c.at < *exec;
        let last_write = calls
            .iter()
            .filter(between)
            .filter(|c| matches!(c.name.as_str(), "pwrite64" | "write") && on_db(c))
            .map(|c| c.at)
            .max();
        // The step's start was written to the store since the previous step's command ...
        let Some(last_write) = last_write else {
            panic!(
                "nothing was written to the journal before the command of step s{} ran:\n{log}",
                i + 1
            );
        };
        // ... and synced before its command ran.
        let synced = calls
            .iter()
            .filter(between)
            .any(|c| c.name == "fdatasync" && succeeded(c) && on_db(c) && c.at > last_write);
        assert!(
            synced,
            "the journal's last write before the command of step s{} was not fdatasync'ed before \
             it ran: its StepStarted was not durable when its effect began:\n{log}",
            i + 1
        );
        previous = *exec;
    }
}
