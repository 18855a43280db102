//! `rolling-restart-etcd` on a real 3-member etcd cluster (Debian's etcd 3.4, started by
//! testbeds/etcd.sh on loopback), observed from the servers: whether each member answers, and
//! whether it leads, sampled every 20 ms, and a client writing keys throughout whose every
//! acknowledged write must survive.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::clusters::{Cluster, Sampler, down, get_json, http, status_of};
use crate::support::{Sandbox, wait_for};

/// One member in one sample: answering, leading, its pid.
pub(crate) type MemberSample = (bool, bool, Option<u32>);

fn b64(s: &str) -> String {
    use std::fmt::Write as _;
    // A tiny encoder keeps the test free of another dependency.
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = s.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                let _ = write!(out, "{}", T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Whether the member answers its status (served by the member itself, without consensus:
/// `/health` is false on every member while leadership moves, which is no member being down),
/// and whether it says it leads.
fn sample(agent: &ureq::Agent, endpoint: &str) -> (bool, bool) {
    agent
        .post(&format!("{endpoint}/v3/maintenance/status"))
        .send_json(json!({}))
        .ok()
        .and_then(|r| r.into_json::<Value>().ok())
        .map_or((false, false), |v| {
            (true, v["leader"] == v["header"]["member_id"])
        })
}

/// A 3-member testbed etcd cluster, observed from its servers.
pub(crate) struct Etcd {
    pub(crate) cluster: Cluster,
    /// Client URL of each member by ordinal.
    pub(crate) endpoints: Vec<String>,
}

/// Where each member's log ended at some moment (bytes).
pub(crate) struct LogMark(Vec<usize>);

impl Etcd {
    /// A cluster made by `Cluster::etcd`.
    pub(crate) fn from_cluster(cluster: Cluster) -> Self {
        let endpoints = (1..=3)
            .map(|i| cluster.var(&format!("ETCD_ENDPOINT_{i}")))
            .collect();
        Self { cluster, endpoints }
    }

    /// Samples whether every member answers, whether it leads, and its pid every 20 ms (etcd
    /// restarts in a fraction of a second). The members are asked at the same moment and give
    /// up after a second, so that a sample is one moment, not the sum of the members' answers.
    pub(crate) fn monitor(&self) -> Sampler<Vec<MemberSample>> {
        let (endpoints, dir) = (self.endpoints.clone(), self.cluster.dir.clone());
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(1))
            .build();
        Sampler::start(Duration::from_millis(20), move || {
            std::thread::scope(|s| {
                let asked: Vec<_> = endpoints
                    .iter()
                    .map(|e| s.spawn(|| sample(&agent, e)))
                    .collect();
                asked
                    .into_iter()
                    .enumerate()
                    .map(|(i, answer)| {
                        let (up, leader) = answer.join().expect("sample");
                        let pid = std::fs::read_to_string(dir.join(format!("m{}.pid", i + 1)))
                            .ok()
                            .and_then(|s| s.trim().parse().ok());
                        (up, leader, pid)
                    })
                    .collect()
            })
        })
    }

    /// A client putting `kN = N` through any member that answers, every 10 ms; each sample is
    /// the N that was acknowledged, if any.
    pub(crate) fn writer(&self) -> Sampler<Option<usize>> {
        writer(self.endpoints.clone())
    }

    /// Marks the end of each member's log now.
    pub(crate) fn log_mark(&self) -> LogMark {
        LogMark((1..=3).map(|m| self.log(m).len()).collect())
    }

    fn log(&self, member: usize) -> String {
        std::fs::read_to_string(self.cluster.dir.join(format!("m{member}.log")))
            .expect("the member's log")
    }

    /// The server version each member reports (`/version`).
    pub(crate) fn versions(&self) -> Vec<String> {
        let agent = http();
        self.endpoints
            .iter()
            .map(|e| {
                let v = get_json(&agent, &format!("{e}/version"));
                v["etcdserver"].as_str().expect("etcdserver").to_owned()
            })
            .collect()
    }

    /// What a rolling restart since `mark` must look like from the servers: never more than
    /// one member down ([`down`]: not answering while its process is replaced); each restarted
    /// exactly once; the one leader at the start handed leadership over while its old process
    /// still ran; every member healthy at the end.
    pub(crate) fn assert_rolled(&self, samples: &[(Instant, Vec<MemberSample>)], mark: &LogMark) {
        let start = samples.first().map(|(t, _)| *t);
        let around = |i: usize| {
            samples[i.saturating_sub(10)..(i + 10).min(samples.len())]
                .iter()
                .map(|(t, m)| {
                    let at = start.map_or(0.0, |s| t.duration_since(s).as_secs_f64());
                    format!("{at:>8.3}s {m:?}")
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        for i in 0..samples.len() {
            let down = (0..3)
                .filter(|m| down(samples, i, *m, |s| s.0, |s| s.2))
                .count();
            assert!(
                down <= 1,
                "sample {i}: {down} members down at once (answering, leading, pid):\n{}",
                around(i)
            );
        }
        let mut led_at_start = 0;
        for m in 0..3 {
            let pids: BTreeSet<u32> = samples.iter().filter_map(|(_, s)| s[m].2).collect();
            assert_eq!(pids.len(), 2, "member m{} restarted exactly once", m + 1);
            if samples[0].1[m].1 {
                led_at_start += 1;
                // Its own log says it was a follower when the stop signal came (etcd, stopped
                // as the leader, would transfer leadership itself and log that instead). The
                // samples (every 20 ms) can miss the few milliseconds between the hand-over
                // and the stop.
                let log = self.log(m + 1);
                let log = &log[mark.0[m]..];
                assert_eq!(
                    raft_role_at_first_stop(log),
                    Some("follower"),
                    "member m{} led at the start; its log at the first stop:\n{}",
                    m + 1,
                    log.lines()
                        .filter(|l| l.contains("became")
                            || l.contains("leadership")
                            || l.contains("received signal"))
                        .collect::<Vec<_>>()
                        .join("\n")
                );
                assert!(
                    log.contains("skipped leadership transfer; local server is not leader"),
                    "member m{} was not a follower when it shut down",
                    m + 1
                );
            }
        }
        assert_eq!(led_at_start, 1, "one leader at the start");
        let agent = http();
        wait_for(
            "every member healthy after the roll",
            Duration::from_secs(10),
            || {
                self.endpoints
                    .iter()
                    .all(|e| status_of(&agent, &format!("{e}/health")) == Some(200))
            },
        );
    }

    /// Every acknowledged write reads back with its value.
    pub(crate) fn assert_writes(&self, acked: &[usize]) {
        assert_writes(&self.endpoints[0], acked);
    }
}

/// The run moved leadership at least once, and its last look before each restart found the
/// member a follower (from the journal).
pub(crate) fn assert_journaled_handovers(sb: &Sandbox) {
    let run = sb.only_run();
    let records = sb.records(&run);
    let moved = records
        .iter()
        .filter(|r| r["event"] == "step_succeeded")
        .filter_map(|r| r["path"].as_str())
        .filter(|p| p.rsplit('.').next() == Some("moved"))
        .count();
    assert!(moved >= 1, "leadership was never moved");
    for i in 0..3 {
        let follower = records
            .iter()
            .rev()
            .find(|r| r["event"] == "step_succeeded" && r["path"] == format!("roll[{i}].follower"))
            .unwrap_or_else(|| panic!("roll[{i}].follower did not succeed"));
        assert_ne!(
            follower["output"]["json"]["leader"],
            follower["output"]["json"]["header"]["member_id"]
        );
    }
}

/// The acknowledged N among a writer's samples.
pub(crate) fn acknowledged(samples: Vec<(Instant, Option<usize>)>) -> Vec<usize> {
    samples.into_iter().filter_map(|(_, n)| n).collect()
}

#[test]
fn rolling_restart_on_a_real_cluster_keeps_quorum_moves_the_leader_first_and_loses_no_write() {
    let etcd = Etcd::from_cluster(Cluster::etcd());
    let sb = Sandbox::new();
    let mark = etcd.log_mark();
    let monitor = etcd.monitor();
    let writer = etcd.writer();
    let out = sb
        .cmd(&[
            "run",
            "rolling-restart-etcd",
            "-p",
            &format!("cluster_dir={}", etcd.cluster.path()),
            "-p",
            &format!("snapshot_dir={}", sb.path().display()),
            "-p",
            &format!("etcdctl={}", etcd.cluster.var("ETCDCTL_BIN")),
        ])
        .ok();
    let acked = acknowledged(writer.finish());
    let samples = monitor.finish();

    // Never more than one member down; each restarted once; none stopped while it led.
    etcd.assert_rolled(&samples, &mark);
    // The leader at the start handed leadership over before its restart (journaled).
    assert_journaled_handovers(&sb);
    etcd.assert_writes(&acked);
    assert_eq!(
        snapshots(&sb),
        1,
        "the snapshot is saved first\n{}",
        out.stdout
    );
}

/// The etcd snapshots the run saved in the sandbox.
pub(crate) fn snapshots(sb: &Sandbox) -> usize {
    std::fs::read_dir(sb.path())
        .expect("sandbox")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("etcd-"))
        .count()
}

/// The raft role an etcd member's zap log last reported (`became leader` / `became follower` /
/// `became candidate`) before its first "received signal; shutting down".
fn raft_role_at_first_stop(log: &str) -> Option<&'static str> {
    let mut role = None;
    for line in log.lines() {
        if line.contains("received signal; shutting down") {
            return role;
        }
        for r in ["leader", "follower", "candidate", "pre-candidate"] {
            if line.contains(&format!(" became {r} at term")) {
                role = Some(r);
            }
        }
    }
    None
}

/// A client putting `kN = N` through any of `endpoints` that answers, every 10 ms; each sample
/// is the N that was acknowledged, if any.
pub(crate) fn writer(endpoints: Vec<String>) -> Sampler<Option<usize>> {
    let agent = http();
    let mut n = 0usize;
    Sampler::start(Duration::from_millis(10), move || {
        let put = |e: &String| {
            agent
                .post(&format!("{e}/v3/kv/put"))
                .send_json(json!({ "key": b64(&format!("k{n}")), "value": b64(&n.to_string()) }))
                .is_ok_and(|resp| resp.status() == 200)
        };
        let acked = endpoints
            .iter()
            .cycle()
            .skip(n % 3)
            .take(3)
            .any(put)
            .then_some(n);
        n += 1;
        acked
    })
}

/// Every acknowledged write is there, read through `endpoint`.
pub(crate) fn assert_writes(endpoint: &str, acked: &[usize]) {
    assert!(
        acked.len() > 20,
        "the client made little progress: {}",
        acked.len()
    );
    let agent = http();
    for n in acked {
        let v: Value = agent
            .post(&format!("{endpoint}/v3/kv/range"))
            .send_json(json!({ "key": b64(&format!("k{n}")) }))
            .expect("range")
            .into_json()
            .expect("json");
        assert_eq!(
            v["kvs"][0]["value"],
            json!(b64(&n.to_string())),
            "acknowledged write k{n} is lost"
        );
    }
}
