//! Stopping what an executor left behind: which processes belong to attempts in flight (a pure
//! choice over a snapshot of `/proc`), then SIGTERM, the step's grace, and SIGKILL.
//!
//! A process is chosen when
//! - it is in a group the executor started for an attempt in flight, and that group is still
//!   the one it started: its leader has the start time recorded at spawn (the pid was not
//!   reused), or its leader is gone and the process started no earlier than the leader did;
//! - or its environment names an attempt the caller calls an orphan, and then so is every
//!   process of the group it leads (which catches descendants that cleared their environment
//!   but stayed in the group).
//!
//! Signals go to each chosen process by pid, after one more look that it is still the process
//! that was chosen (same start time), so a pid reused meanwhile is never hit.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use super::Attempt;
use super::procfs::{self, Proc};

/// How long processes killed with SIGKILL get to disappear (only one in uninterruptible sleep
/// takes longer).
const KILL_WAIT: Duration = Duration::from_secs(2);

/// How often to look whether the signalled processes are gone.
const POLL: Duration = Duration::from_millis(20);

/// A process group an executor started for a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Group {
    /// The group's id: the pid of its leader, the step's command.
    pub(crate) pgid: i32,
    /// The leader's start time when it was spawned, if it could be read.
    pub(crate) start: Option<u64>,
}

/// What to stop.
pub(crate) struct Targets<'a> {
    /// Groups started for attempts in flight, with the attempt and its grace.
    pub(crate) groups: &'a [(Group, Attempt, Duration)],
    /// For an attempt named by a process's environment: the grace its processes get if they
    /// are to be stopped, `None` if they are to be left alone.
    pub(crate) orphan: &'a dyn Fn(&Attempt) -> Option<Duration>,
}

/// A process chosen to be stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Victim {
    /// Its pid.
    pub(crate) pid: i32,
    /// Its start time, to know it from a later process with the same pid.
    pub(crate) start: u64,
    /// The attempt it is stopped for.
    pub(crate) attempt: Attempt,
    /// How long it gets between SIGTERM and SIGKILL.
    pub(crate) grace: Duration,
}

/// Chooses the processes of `procs` to stop for `targets`, never `spare` (the caller).
pub(crate) fn select(procs: &[Proc], targets: &Targets<'_>, spare: i32) -> Vec<Victim> {
    let mut chosen: BTreeMap<i32, Victim> = BTreeMap::new();
    let mut add = |p: &Proc, attempt: &Attempt, grace: Duration| {
        if p.pid == spare || p.stat.is_dead() {
            return;
        }
        let victim = chosen.entry(p.pid).or_insert_with(|| Victim {
            pid: p.pid,
            start: p.stat.start,
            attempt: attempt.clone(),
            grace,
        });
        victim.grace = victim.grace.max(grace);
    };
    let members = |pgid: i32, since: u64| {
        procs
            .iter()
            .filter(move |p| p.stat.pgrp == pgid && p.stat.start >= since)
    };
    for (group, attempt, grace) in targets.groups {
        let leader = procs.iter().find(|p| p.pid == group.pgid);
        let ours = match (leader, group.start) {
            (Some(leader), Some(start)) => leader.stat.start == start,
            (Some(_) | None, None) | (None, Some(_)) => true,
        };
        if ours {
            for p in members(group.pgid, group.start.unwrap_or(0)) {
                add(p, attempt, *grace);
            }
        }
    }
    for p in procs {
        let Some(attempt) = &p.attempt else { continue };
        let Some(grace) = (targets.orphan)(attempt) else {
            continue;
        };
        add(p, attempt, grace);
        if p.stat.pgrp == p.pid {
            for member in members(p.pid, p.stat.start) {
                add(member, attempt, grace);
            }
        }
    }
    chosen.into_values().collect()
}

/// What became of the processes of one attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stopped {
    /// The attempt.
    pub attempt: Attempt,
    /// The processes that were stopped (or tried), by pid.
    pub pids: Vec<u32>,
    /// How they ended, in a sentence.
    pub how: String,
}

/// How one victim ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// Gone after SIGTERM within its grace.
    Term,
    /// Killed with SIGKILL.
    Kill,
    /// Still there after SIGKILL (uninterruptible sleep).
    Stuck,
    /// Not ours to signal (EPERM).
    Denied,
}

struct Tracked {
    victim: Victim,
    deadline: Instant,
    killed: bool,
    end: Option<End>,
}

/// Whether the process chosen as `victim` is still alive.
fn alive(pid: i32, start: u64) -> bool {
    procfs::stat(pid).is_some_and(|s| s.start == start && !s.is_dead())
}

/// Sends `signal` to the victim if it is still the process that was chosen; `Err(EPERM)` if it
/// may not be signalled.
fn signal(pid: i32, start: u64, signal: Signal) -> Result<(), Errno> {
    if !alive(pid, start) {
        return Ok(());
    }
    match kill(Pid::from_raw(pid), signal) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Stops the processes `targets` name: SIGTERM to each, then each gets its grace to go, then
/// SIGKILL to what is left. Once all are gone it looks again, so that what they started
/// meanwhile (a cleanup handler, a child forked during the grace) goes the same way. Blocks
/// until they are gone, or for at most the longest grace plus a short wait after SIGKILL.
pub(crate) fn stop(targets: &Targets<'_>) -> Vec<Stopped> {
    let me = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
    let began = Instant::now();
    let mut tracked: Vec<Tracked> = Vec::new();
    loop {
        let now = Instant::now();
        for t in tracked.iter_mut().filter(|t| t.end.is_none()) {
            if !alive(t.victim.pid, t.victim.start) {
                t.end = Some(if t.killed { End::Kill } else { End::Term });
            } else if !t.killed && now >= t.deadline {
                t.killed = true;
                t.deadline = now;
                if signal(t.victim.pid, t.victim.start, Signal::SIGKILL) == Err(Errno::EPERM) {
                    t.end = Some(End::Denied);
                }
            } else if t.killed && now >= t.deadline + KILL_WAIT {
                t.end = Some(End::Stuck);
            }
        }
        if tracked.iter().all(|t| t.end.is_some()) {
            let late: Vec<Victim> = select(&procfs::snapshot(), targets, me)
                .into_iter()
                .filter(|v| !tracked.iter().any(|t| t.victim.pid == v.pid))
                .collect();
            if late.is_empty() {
                break;
            }
            for victim in late {
                let mut t = Tracked {
                    deadline: began + victim.grace,
                    victim,
                    killed: false,
                    end: None,
                };
                if signal(t.victim.pid, t.victim.start, Signal::SIGTERM) == Err(Errno::EPERM) {
                    t.end = Some(End::Denied);
                }
                tracked.push(t);
            }
            continue;
        }
        std::thread::sleep(POLL);
    }
    report(&tracked)
}

/// One [`Stopped`] per attempt, in the order the attempts were first met.
fn report(tracked: &[Tracked]) -> Vec<Stopped> {
    let mut out: Vec<(Stopped, Vec<End>, Duration)> = Vec::new();
    for t in tracked {
        let index = match out.iter().position(|(s, ..)| s.attempt == t.victim.attempt) {
            Some(i) => i,
            None => {
                out.push((
                    Stopped {
                        attempt: t.victim.attempt.clone(),
                        pids: Vec::new(),
                        how: String::new(),
                    },
                    Vec::new(),
                    Duration::ZERO,
                ));
                out.len() - 1
            }
        };
        let (stopped, ends, grace) = &mut out[index];
        stopped.pids.push(t.victim.pid.unsigned_abs());
        ends.push(t.end.unwrap_or(End::Stuck));
        *grace = (*grace).max(t.victim.grace);
    }
    out.into_iter()
        .map(|(mut stopped, ends, grace)| {
            stopped.how = describe(&ends, grace);
            stopped
        })
        .collect()
}

/// How a set of processes ended, in a sentence.
fn describe(ends: &[End], grace: Duration) -> String {
    let count = |end: End| ends.iter().filter(|e| **e == end).count();
    let mut parts = Vec::new();
    let term = count(End::Term);
    if term > 0 {
        parts.push(format!("{term} stopped with SIGTERM"));
    }
    let kill = count(End::Kill);
    if kill > 0 {
        parts.push(format!(
            "{kill} killed with SIGKILL after {}",
            humantime::format_duration(grace)
        ));
    }
    let stuck = count(End::Stuck);
    if stuck > 0 {
        parts.push(format!("{stuck} still there after SIGKILL"));
    }
    let denied = count(End::Denied);
    if denied > 0 {
        parts.push(format!("{denied} not ours to signal"));
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::orphans::procfs::Stat;

    fn attempt(path: &str, n: u32) -> Attempt {
        Attempt {
            run_id: "R".into(),
            path: path.into(),
            attempt: n,
        }
    }

    fn proc(pid: i32, pgrp: i32, start: u64, attempt: Option<Attempt>) -> Proc {
        Proc {
            pid,
            stat: Stat {
                state: 'S',
                pgrp,
                start,
            },
            attempt,
        }
    }

    fn pids(victims: &[Victim]) -> Vec<i32> {
        victims.iter().map(|v| v.pid).collect()
    }

    const GRACE: Duration = Duration::from_secs(5);

    fn never(_: &Attempt) -> Option<Duration> {
        None
    }

    #[test]
    fn a_tracked_group_is_stopped_whole_while_its_leader_is_the_one_spawned() {
        let a = attempt("slow", 1);
        let procs = [
            proc(100, 100, 50, Some(a.clone())),
            // A grandchild that cleared its environment.
            proc(101, 100, 51, None),
            // Someone else's group.
            proc(200, 200, 10, None),
            proc(201, 100 + 100, 60, None),
        ];
        let groups = [(
            Group {
                pgid: 100,
                start: Some(50),
            },
            a.clone(),
            GRACE,
        )];
        let targets = Targets {
            groups: &groups,
            orphan: &never,
        };
        let chosen = select(&procs, &targets, 1);
        assert_eq!(pids(&chosen), [100, 101]);
        assert!(chosen.iter().all(|v| v.attempt == a && v.grace == GRACE));
    }

    #[test]
    fn a_group_whose_leader_pid_was_reused_is_left_alone() {
        let a = attempt("slow", 1);
        // pid 100 now belongs to a process that started later than the recorded leader.
        let procs = [proc(100, 100, 900, None), proc(101, 100, 901, None)];
        let groups = [(
            Group {
                pgid: 100,
                start: Some(50),
            },
            a,
            GRACE,
        )];
        let targets = Targets {
            groups: &groups,
            orphan: &never,
        };
        assert!(select(&procs, &targets, 1).is_empty());
    }

    #[test]
    fn members_of_a_group_whose_leader_is_gone_are_stopped_if_they_started_after_it() {
        let a = attempt("slow", 1);
        let procs = [proc(101, 100, 51, None), proc(102, 100, 40, None)];
        let groups = [(
            Group {
                pgid: 100,
                start: Some(50),
            },
            a,
            GRACE,
        )];
        let targets = Targets {
            groups: &groups,
            orphan: &never,
        };
        assert_eq!(pids(&select(&procs, &targets, 1)), [101]);
    }

    #[test]
    fn carriers_of_an_orphan_attempt_are_stopped_with_the_groups_they_lead() {
        let orphan = attempt("slow", 2);
        let finished = attempt("slow", 1);
        let procs = [
            // The attempt's command, leading its group, and a member without the variables.
            proc(300, 300, 70, Some(orphan.clone())),
            proc(301, 300, 71, None),
            // A process of the attempt that left the group (setsid).
            proc(310, 310, 72, Some(orphan.clone())),
            // A daemon an earlier, finished attempt left on purpose.
            proc(320, 320, 20, Some(finished)),
            // A dead one (a zombie) is not stopped again.
            proc(330, 330, 73, Some(orphan.clone())),
        ];
        let mut procs = procs.to_vec();
        procs[4].stat.state = 'Z';
        let grace = Duration::from_secs(9);
        let is_orphan = |a: &Attempt| (*a == orphan).then_some(grace);
        let targets = Targets {
            groups: &[],
            orphan: &is_orphan,
        };
        let chosen = select(&procs, &targets, 1);
        assert_eq!(pids(&chosen), [300, 301, 310]);
        assert!(chosen.iter().all(|v| v.grace == grace));
    }

    #[test]
    fn the_caller_is_never_chosen() {
        let a = attempt("slow", 1);
        let procs = [proc(7, 7, 1, Some(a.clone())), proc(8, 7, 2, Some(a))];
        let any = |_: &Attempt| Some(GRACE);
        let targets = Targets {
            groups: &[],
            orphan: &any,
        };
        assert_eq!(pids(&select(&procs, &targets, 8)), [7]);
    }

    #[test]
    fn the_report_counts_how_each_process_ended() {
        assert_eq!(
            describe(&[End::Term, End::Term], GRACE),
            "2 stopped with SIGTERM"
        );
        assert_eq!(
            describe(&[End::Term, End::Kill, End::Stuck, End::Denied], GRACE),
            "1 stopped with SIGTERM, 1 killed with SIGKILL after 5s, 1 still there after \
             SIGKILL, 1 not ours to signal"
        );
    }
}
