//! `rolling-restart-etcd` on a real 3-member etcd cluster (Debian's etcd 3.4, started by
//! testbeds/etcd.sh on loopback), observed from the servers: health and leadership sampled every
//! 100 ms, and a client writing keys throughout whose every acknowledged write must survive.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::Sandbox;
use crate::support::clusters::{Cluster, Sampler, http};

/// One member in one sample: answering /health ok, leading, its pid.
type MemberSample = (bool, bool, Option<u32>);

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

fn sample(agent: &ureq::Agent, endpoint: &str) -> (bool, bool) {
    let healthy = agent
        .get(&format!("{endpoint}/health"))
        .call()
        .ok()
        .and_then(|r| r.into_json::<Value>().ok())
        .is_some_and(|v| v["health"] == "true");
    let leader = agent
        .post(&format!("{endpoint}/v3/maintenance/status"))
        .send_json(json!({}))
        .ok()
        .and_then(|r| r.into_json::<Value>().ok())
        .is_some_and(|v| v["leader"] == v["header"]["member_id"]);
    (healthy, leader)
}

#[test]
fn rolling_restart_on_a_real_cluster_keeps_quorum_moves_the_leader_first_and_loses_no_write() {
    let etcd = Cluster::etcd();
    let endpoints: Vec<String> = (1..=3)
        .map(|i| etcd.var(&format!("ETCD_ENDPOINT_{i}")))
        .collect();
    let sb = Sandbox::new();

    let monitor = {
        let (endpoints, dir) = (endpoints.clone(), etcd.dir.clone());
        let agent = http();
        // etcd restarts in a fraction of a second: sample often.
        Sampler::start(Duration::from_millis(20), move || {
            endpoints
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    let (up, leader) = sample(&agent, e);
                    let pid = std::fs::read_to_string(dir.join(format!("m{}.pid", i + 1)))
                        .ok()
                        .and_then(|s| s.trim().parse().ok());
                    (up, leader, pid)
                })
                .collect::<Vec<MemberSample>>()
        })
    };
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let writer = {
        let (endpoints, stop, acked) = (endpoints.clone(), stop.clone(), acked.clone());
        std::thread::spawn(move || {
            let agent = http();
            let deadline = Instant::now() + Duration::from_secs(600);
            let mut n = 0usize;
            while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                for e in endpoints.iter().cycle().skip(n % 3).take(3) {
                    let r = agent.post(&format!("{e}/v3/kv/put")).send_json(
                        json!({ "key": b64(&format!("k{n}")), "value": b64(&n.to_string()) }),
                    );
                    if r.is_ok_and(|resp| resp.status() == 200) {
                        acked.lock().expect("acks").push(n);
                        break;
                    }
                }
                n += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };

    let out = sb
        .cmd(&[
            "run",
            "rolling-restart-etcd",
            "-p",
            &format!("cluster_dir={}", etcd.path()),
            "-p",
            &format!("snapshot_dir={}", sb.path().display()),
            "-p",
            &format!("etcdctl={}", etcd.var("ETCDCTL_BIN")),
        ])
        .ok();
    stop.store(true, Ordering::SeqCst);
    writer.join().expect("writer");
    let samples = monitor.finish();
    let acked = acked.lock().expect("acks").clone();

    // Never more than one member down; each restarted once; none stopped while it led: the
    // last time its old process answered, it was not the leader.
    for (i, (_, members)) in samples.iter().enumerate() {
        let down = members.iter().filter(|(up, _, _)| !up).count();
        assert!(
            down <= 1,
            "sample {i}: {down} members down at once\n{}",
            out.stdout
        );
    }
    let mut led_at_start = 0;
    for m in 0..3 {
        let pids: BTreeSet<u32> = samples.iter().filter_map(|(_, s)| s[m].2).collect();
        assert_eq!(pids.len(), 2, "member m{} restarted exactly once", m + 1);
        if samples[0].1[m].1 {
            led_at_start += 1;
            // The leader at the start handed leadership over while its old process still ran:
            // its own log says it was a follower when the stop signal came (etcd, stopped as
            // the leader, would transfer leadership itself and log that instead). The samples
            // (every 20 ms) can miss the few milliseconds between the hand-over and the stop.
            let log = std::fs::read_to_string(etcd.dir.join(format!("m{}.log", m + 1)))
                .expect("the member's log");
            assert_eq!(
                raft_role_at_first_stop(&log),
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
    // The leader at the start handed leadership over before its restart (journaled).
    let run = sb.only_run();
    let moved = sb
        .records(&run)
        .iter()
        .filter(|r| r["event"] == "step_succeeded")
        .filter_map(|r| r["path"].as_str().map(str::to_owned))
        .filter(|p| p.rsplit('.').next() == Some("moved"))
        .count();
    assert!(moved >= 1, "leadership was never moved");
    // The runbook's last look before each restart found the member a follower.
    let records = sb.records(&run);
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

    assert!(
        acked.len() > 20,
        "the client made little progress: {}",
        acked.len()
    );
    let agent = http();
    for n in &acked {
        let v: Value = agent
            .post(&format!("{}/v3/kv/range", endpoints[0]))
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
    let snapshots = std::fs::read_dir(sb.path())
        .expect("sandbox")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("etcd-"))
        .count();
    assert_eq!(snapshots, 1, "the snapshot is saved first");
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
