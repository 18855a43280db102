//! Children die with their executor: a `runbook` killed with SIGKILL in the middle of a step
//! leaves nothing of the step running — not its command, not what the command started in the
//! background, not what left the command's process group — and a resume never runs a step
//! beside a process of its earlier attempt, even when the watchdog died with the executor.
//!
//! Processes are observed in `/proc`. A killed process whose parent died is reaped by whoever
//! reaps orphans on the machine, which may take its time (or never happen in a container), so
//! a zombie counts as gone: it is dead.

use std::process::Child;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use crate::support::{Sandbox, wait_for};

/// A step whose command writes its pid to `pids`, notes in `beside` every process of
/// `$EARLIER` (pids of an earlier attempt) that is still alive, and unless `quick` exists,
/// starts a background grandchild and a process that leaves its group (`setsid`), writes their
/// pids too, and waits.
const SLOW: &str = r#"
runbook: slow
steps:
  - id: work
    shell:
      run: |
        echo $$ >> pids
        for p in $EARLIER; do
          s=$(sed 's/.*) //' /proc/$p/stat 2>/dev/null | cut -c1)
          case "$s" in ''|Z|X) ;; *) echo "$p" >> beside;; esac
        done
        if [ -f quick ]; then exit 0; fi
        sleep 300 & echo $! >> pids
        setsid sleep 300 & echo $! >> pids
        wait
"#;

/// The state letter of `pid` from /proc (`None` if it does not exist).
fn state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

/// Whether `pid` is a live process (not a zombie).
fn alive(pid: i32) -> bool {
    state(pid).is_some_and(|s| !matches!(s, 'Z' | 'X'))
}

/// The field of `/proc/PID/stat` at `index` after the command (0 is the state).
fn stat_field(pid: i32, index: usize) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .nth(index)?
        .parse()
        .ok()
}

/// The watchdog `executor` started: its child whose arguments end in `__watchdog`.
fn watchdog_of(executor: i32) -> Option<i32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .find(|pid| {
            stat_field(*pid, 1) == Some(executor)
                && std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| c.split(|b| *b == 0).any(|a| a == b"__watchdog"))
        })
}

/// Every live process whose process group is `pgid`.
fn group_members(pgid: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| stat_field(*pid, 2) == Some(pgid) && alive(*pid))
        .collect()
}

/// The pids in `file` (one per line) once it has `count` of them.
fn pids(sb: &Sandbox, file: &str, count: usize) -> Vec<i32> {
    let mut pids = Vec::new();
    wait_for(
        &format!("{count} pids in {file}"),
        Duration::from_secs(20),
        || {
            pids = sb
                .read(file)
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect();
            pids.len() >= count
        },
    );
    pids
}

fn pid_of(child: &Child) -> i32 {
    i32::try_from(child.id()).expect("pid")
}

/// Starts `slow.yaml` and waits until its step's three processes run, then returns the
/// executor, its watchdog and the step's pids (the command first).
fn start_slow(sb: &Sandbox) -> (Child, i32, Vec<i32>) {
    sb.write("slow.yaml", SLOW);
    let executor = sb.cmd(&["run", "slow.yaml"]).spawn();
    let step = pids(sb, "pids", 3);
    for pid in &step {
        wait_for(
            &format!("step process {pid} to run"),
            Duration::from_secs(10),
            || alive(*pid),
        );
    }
    // The setsid'd sleep really left the command's group: only its attempt still names it.
    wait_for("setsid to take effect", Duration::from_secs(10), || {
        stat_field(step[2], 2) == Some(step[2])
    });
    let mut watchdog = None;
    wait_for("the executor's watchdog", Duration::from_secs(10), || {
        watchdog = watchdog_of(pid_of(&executor));
        watchdog.is_some()
    });
    (executor, watchdog.expect("found"), step)
}

fn sigkill(pid: i32) {
    kill(Pid::from_raw(pid), Signal::SIGKILL).expect("SIGKILL");
}

fn assert_all_gone(what: &str, pids: &[i32]) {
    for pid in pids {
        wait_for(
            &format!("{what}: process {pid} to be gone"),
            Duration::from_secs(15),
            || !alive(*pid),
        );
    }
}

#[test]
fn a_sigkilled_executor_leaves_no_process_of_its_step_alive() {
    let sb = Sandbox::new();
    let (mut executor, watchdog, step) = start_slow(&sb);
    let group = step[0];
    assert_eq!(
        group_members(group).len(),
        2,
        "the command and its grandchild"
    );

    sigkill(pid_of(&executor));
    let status = executor.wait().expect("reap the executor");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );

    assert_all_gone("after the executor's SIGKILL", &step);
    assert_eq!(group_members(group), Vec::<i32>::new());
    // Its work done, the watchdog does not linger.
    wait_for("the watchdog to exit", Duration::from_secs(15), || {
        !alive(watchdog)
    });
}

#[test]
fn the_watchdog_exits_with_an_executor_that_ends_normally_and_spares_daemons() {
    let sb = Sandbox::new();
    sb.write(
        "daemon.yaml",
        r#"
runbook: daemon
steps:
  - id: start-daemon
    shell: { run: "sleep 300 >/dev/null 2>&1 & echo $! > daemon" }
  - id: hold
    shell: { run: "echo $PPID > executor; while [ ! -f go ]; do sleep 0.05; done" }
"#,
    );
    let mut executor = sb.cmd(&["run", "daemon.yaml"]).spawn();
    let daemon = pids(&sb, "daemon", 1)[0];
    let mut watchdog = None;
    wait_for("the executor's watchdog", Duration::from_secs(10), || {
        watchdog = watchdog_of(pid_of(&executor));
        watchdog.is_some()
    });
    let watchdog = watchdog.expect("found");
    sb.write("go", "");
    assert!(executor.wait().expect("wait").success(), "the run succeeds");
    wait_for(
        "the watchdog to exit with its executor",
        Duration::from_secs(10),
        || !alive(watchdog),
    );
    // A command that ended left its daemon on purpose: not an orphan.
    assert!(alive(daemon), "the daemon of a finished step was stopped");
    sigkill(daemon);
}

/// The `resumed` record of `run`.
fn resumed(sb: &Sandbox, run: &str) -> Value {
    sb.records(run)
        .into_iter()
        .find(|r| r["event"] == "resumed")
        .expect("a resumed record")
}

/// Resumes the run with `--retry-step work` (which now ends at once) and checks that the
/// retry's command, when it started, saw no process of the earlier attempt alive.
fn retry_alone(sb: &Sandbox, run: &str, earlier: &[i32]) -> (String, Value) {
    sb.write("quick", "");
    let earlier_text = earlier
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" ");
    let out = sb
        .cmd(&["resume", run, "--retry-step", "work"])
        .env("EARLIER", earlier_text)
        .ok();
    assert_eq!(
        sb.read("beside"),
        "",
        "{}",
        out.explain("the retry ran beside processes of the earlier attempt")
    );
    assert_eq!(
        sb.read("pids").lines().count(),
        earlier.len() + 1,
        "{}",
        out.explain("the retry's command did not run")
    );
    assert_eq!(sb.status(run)["state"], "succeeded");
    (out.stdout, resumed(sb, run))
}

#[test]
fn a_retry_after_the_executor_and_its_watchdog_were_killed_stops_the_orphans_first() {
    let sb = Sandbox::new();
    let (mut executor, watchdog, step) = start_slow(&sb);
    // As `pkill -9 runbook` would: the watchdog goes too, and nothing stops the step.
    sigkill(watchdog);
    sigkill(pid_of(&executor));
    executor.wait().expect("reap the executor");
    for pid in &step {
        assert!(
            alive(*pid),
            "process {pid} of the step died without a watchdog"
        );
    }
    let run = sb.only_run();

    let (stdout, resumed) = retry_alone(&sb, &run, &step);
    assert_all_gone("after the resume", &step);
    let orphans = resumed["orphans"]
        .as_array()
        .expect("orphans were recorded");
    assert_eq!(orphans.len(), 1, "{resumed}");
    assert_eq!(orphans[0]["path"], "work");
    assert_eq!(orphans[0]["attempt"], 1);
    let mut stopped: Vec<i64> = orphans[0]["pids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_i64().unwrap())
        .collect();
    stopped.sort_unstable();
    let mut expected: Vec<i64> = step.iter().map(|p| i64::from(*p)).collect();
    expected.sort_unstable();
    assert_eq!(stopped, expected);
    assert_eq!(orphans[0]["how"], "3 stopped with SIGTERM");
    assert!(
        stdout.contains("processes of step `work` (attempt 1) outlived the executor that started them: 3 stopped with SIGTERM"),
        "{stdout}"
    );
}

#[test]
fn a_retry_right_after_the_executor_was_killed_never_runs_beside_its_earlier_attempt() {
    let sb = Sandbox::new();
    let (mut executor, _watchdog, step) = start_slow(&sb);
    sigkill(pid_of(&executor));
    executor.wait().expect("reap the executor");
    // No waiting for the watchdog: whichever of it and the resume gets there first, the
    // retry starts only once the earlier attempt is gone.
    let run = sb.only_run();
    retry_alone(&sb, &run, &step);
    assert_all_gone("after the resume", &step);
}

#[test]
fn aborting_a_run_whose_executor_died_stops_what_it_left_running() {
    let sb = Sandbox::new();
    let (mut executor, watchdog, step) = start_slow(&sb);
    sigkill(watchdog);
    sigkill(pid_of(&executor));
    executor.wait().expect("reap the executor");
    let run = sb.only_run();

    sb.cmd(&["abort", &run]).ok();
    assert_all_gone("after the abort", &step);
    let status = sb.status(&run);
    assert_eq!(status["state"], "aborted");
    let reason = status["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(
            "processes of step `work` (attempt 1) outlived the executor that started them: \
             3 stopped with SIGTERM"
        ),
        "{status}"
    );
}
