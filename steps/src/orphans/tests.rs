//! The mechanisms against real processes: groups with grandchildren, a process that left its
//! group, a command that ignores SIGTERM, and a daemon of a finished attempt that must live.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::procfs;
use super::stop::Group;
use super::watchdog::{Message, watch};
use super::*;

/// A run id no other test uses, so that tests running at once never stop each other's
/// processes.
fn unique_run(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("TEST-{tag}-{}-{nanos}", std::process::id())
}

/// Starts `script` under `sh -c` in a group of its own, marked as `attempt`; the pids it
/// prints, one per line, are read until `lines` have come.
fn spawn(script: &str, attempt: &Attempt, lines: usize) -> (Child, Vec<i32>) {
    use std::os::unix::process::CommandExt as _;
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .envs(attempt.vars())
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn sh");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut pids = Vec::new();
    for _ in 0..lines {
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        pids.push(line.trim().parse().expect("a pid"));
    }
    (child, pids)
}

fn alive(pid: i32) -> bool {
    procfs::stat(pid).is_some_and(|s| !s.is_dead())
}

/// Waits (bounded) until `pid` is dead or a zombie: processes of these tests are reparented
/// and reaped by whoever reaps orphans here, which may take a moment.
fn gone_within(pid: i32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while alive(pid) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

fn attempt(run: &str, path: &str, n: u32) -> Attempt {
    Attempt {
        run_id: run.into(),
        path: path.into(),
        attempt: n,
    }
}

fn track_line(pid: u32, attempt: &Attempt, grace: Duration) -> String {
    let pgid = i32::try_from(pid).unwrap();
    serde_json::to_string(&Message::Track {
        group: Group {
            pgid,
            start: procfs::stat(pgid).map(|s| s.start),
        },
        attempt: attempt.clone(),
        grace_ms: u64::try_from(grace.as_millis()).unwrap(),
    })
    .unwrap()
}

#[test]
fn at_end_of_input_the_watchdog_stops_tracked_groups_with_their_grandchildren() {
    let run = unique_run("watch");
    let a = attempt(&run, "slow", 1);
    let (mut child, pids) = spawn("sleep 60 & echo $!; echo $$; wait", &a, 2);
    let input = format!("{}\n", track_line(child.id(), &a, Duration::from_secs(5)));
    let stopped = watch(input.as_bytes());
    let _ = child.wait();
    for pid in &pids {
        assert!(gone_within(*pid, Duration::from_secs(5)), "pid {pid} lives");
    }
    assert_eq!(stopped.len(), 1, "{stopped:?}");
    assert_eq!(stopped[0].attempt, a);
    let mut stopped_pids = stopped[0].pids.clone();
    stopped_pids.sort_unstable();
    let mut expected: Vec<u32> = pids.iter().map(|p| p.unsigned_abs()).collect();
    expected.sort_unstable();
    assert_eq!(stopped_pids, expected);
    assert_eq!(stopped[0].how, "2 stopped with SIGTERM");
}

#[test]
fn a_process_that_left_the_group_is_stopped_by_the_attempt_it_carries() {
    let run = unique_run("setsid");
    let a = attempt(&run, "slow", 1);
    // `setsid` puts the sleep in a session (and group) of its own: only its environment
    // still says whose it is.
    let (mut child, pids) = spawn("setsid sleep 60 & echo $!; echo $$; wait", &a, 2);
    let left = pids[0];
    let deadline = Instant::now() + Duration::from_secs(5);
    while procfs::stat(left).is_none_or(|s| s.pgrp != left) {
        assert!(Instant::now() < deadline, "setsid did not take effect");
        std::thread::sleep(Duration::from_millis(10));
    }
    let input = format!("{}\n", track_line(child.id(), &a, Duration::from_secs(5)));
    watch(input.as_bytes());
    let _ = child.wait();
    assert!(
        gone_within(left, Duration::from_secs(5)),
        "the setsid process lives"
    );
}

#[test]
fn a_command_that_ignores_sigterm_is_killed_after_its_grace() {
    let run = unique_run("term");
    let a = attempt(&run, "stubborn", 1);
    let (mut child, pids) = spawn("trap '' TERM; echo $$; while :; do sleep 1; done", &a, 1);
    let started = Instant::now();
    let stopped = stop_orphans(&|x: &Attempt| (*x == a).then_some(Duration::from_millis(300)));
    let took = started.elapsed();
    let _ = child.wait();
    assert!(gone_within(pids[0], Duration::from_secs(5)));
    assert!(
        took >= Duration::from_millis(300),
        "SIGKILL came early: {took:?}"
    );
    let leader = stopped
        .iter()
        .find(|s| s.pids.contains(&pids[0].unsigned_abs()))
        .expect("the stubborn shell was stopped");
    assert!(
        leader.how.contains("killed with SIGKILL after 300ms"),
        "{}",
        leader.how
    );
}

#[test]
fn orphans_are_stopped_and_what_a_finished_attempt_left_running_is_not() {
    let run = unique_run("resume");
    let finished = attempt(&run, "start-daemon", 1);
    let orphan = attempt(&run, "slow", 2);
    let (mut daemon, daemon_pids) = spawn("echo $$; exec sleep 60", &finished, 1);
    let (mut orphaned, orphan_pids) = spawn("sleep 60 & echo $!; echo $$; wait", &orphan, 2);
    let grace = Duration::from_secs(5);
    let stopped = stop_orphans(&|a: &Attempt| (*a == orphan).then_some(grace));
    let _ = orphaned.wait();
    for pid in &orphan_pids {
        assert!(
            gone_within(*pid, Duration::from_secs(5)),
            "orphan {pid} lives"
        );
    }
    assert!(
        alive(daemon_pids[0]),
        "the finished attempt's daemon was stopped"
    );
    assert_eq!(stopped.len(), 1, "{stopped:?}");
    assert_eq!(stopped[0].attempt, orphan);
    assert_eq!(stopped[0].pids.len(), 2);
    let _ = daemon.kill();
    let _ = daemon.wait();
}
