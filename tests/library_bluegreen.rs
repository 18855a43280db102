//! `bluegreen-openbao` on a real 3-member OpenBao 2.6.2 Raft cluster (`testbeds/openbao.sh`):
//! three green members on 2.7.2, started by the test's own commands with new data directories on
//! free loopback ports, join it, traffic is cut over (an address file the test's client reads
//! before every request), and the blue members leave. Everything asserted is read from the
//! servers: the Raft configuration, versions from `/v1/sys/seal-status`, data read back from the
//! green members, the blue processes, and — to count effects — every Raft configuration change
//! the leaders logged (`updating configuration: command=…`) and every `remove-peer` request in
//! the cluster's audit log.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::openbao::Bao;
use crate::support::clusters::{Cluster, http, repo, status_of};
use crate::support::{Sandbox, wait_for};

const GREEN: usize = 3;

/// A blue cluster, the operator's commands for it and for three green members, and an audit
/// log of every request the cluster serves.
struct BlueGreen {
    bao: Bao,
    sb: Sandbox,
    green: Vec<String>,
    audit: PathBuf,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

impl BlueGreen {
    fn new() -> Self {
        let bao = Bao::from_cluster(Cluster::openbao("2.6.2"));
        let sb = Sandbox::new();
        let root = sb.path().join("green");
        let audit_path = sb.path().join("audit.log").display().to_string();
        std::fs::create_dir_all(&root).expect("mkdir");
        let mut green = Vec::new();
        for n in 0..GREEN {
            let (api, cluster) = (free_port(), free_port());
            std::fs::write(
                root.join(format!("green-{n}.ports")),
                format!("{api} {cluster}\n"),
            )
            .expect("ports");
            green.push(format!("http://127.0.0.1:{api}"));
        }
        sb.write(
            "green.sh",
            &GREEN_SH
                .replace("@BIN@", &bao.cluster.var("BAO_BIN_2_7_2"))
                .replace("@AUDIT@", &AUDIT.replace("@LOG@", &audit_path)),
        );
        sb.write("addrs", &format!("{}\n", bao.addrs.join(" ")));
        let audit = sb.path().join("audit.log");
        // Every request the cluster serves, raw (the server id a remove-peer names in clear).
        // OpenBao creates audit devices from its configuration only (on SIGHUP, on the active
        // node), and every server must carry the same stanza (green.sh writes it too).
        let stanza = AUDIT.replace("@LOG@", audit.to_str().expect("utf-8"));
        for n in 1..=3 {
            let hcl = bao.cluster.dir.join(format!("node-{n}.hcl"));
            let text = std::fs::read_to_string(&hcl).expect("hcl");
            std::fs::write(&hcl, format!("{text}\n{stanza}")).expect("hcl");
            let pid = bao.cluster.pid(&format!("node-{n}")).expect("pid");
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid")),
                nix::sys::signal::SIGHUP,
            )
            .expect("SIGHUP");
        }
        let agent = http();
        wait_for("the audit device", Duration::from_secs(30), || {
            agent
                .get(&format!("{}/v1/sys/audit", bao.addrs[0]))
                .set("X-Vault-Token", &bao.token)
                .call()
                .ok()
                .and_then(|r| r.into_json::<Value>().ok())
                .is_some_and(|v| v["data"].get("bluegreen/").is_some())
        });
        // Data that was there before the run, to read back from green at the end.
        agent
            .post(&format!("{}/v1/sys/mounts/kv", bao.addrs[0]))
            .set("X-Vault-Token", &bao.token)
            .send_json(json!({ "type": "kv" }))
            .expect("mount kv");
        agent
            .put(&format!("{}/v1/kv/before", bao.addrs[0]))
            .set("X-Vault-Token", &bao.token)
            .send_json(json!({ "v": "blue" }))
            .expect("write before");
        Self {
            bao,
            sb,
            green,
            audit,
        }
    }

    fn args(&self) -> Vec<String> {
        let sb = self.sb.path().display();
        let cluster = self.bao.cluster.path();
        let testbed = repo().join("testbeds/openbao.sh");
        let testbed = testbed.display();
        let list = |addrs: &[String]| addrs.join(",");
        [
            "to_version=2.7.2".to_owned(),
            format!("blue={}", list(&self.bao.addrs)),
            format!("green={}", list(&self.green)),
            format!("green_start_command=bash {sb}/green.sh {sb}/green start {{{{member}}}} {{{{version}}}}"),
            format!("green_stop_command=bash {sb}/green.sh {sb}/green stop {{{{member}}}}"),
            format!("green_status_command=bash {sb}/green.sh {sb}/green status {{{{member}}}}"),
            format!("blue_stop_command=bash {testbed} stop {cluster} $(( {{{{member}}}} + 1 ))"),
            format!("blue_start_command=bash {testbed} start {cluster} $(( {{{{member}}}} + 1 ))"),
            format!("cutover_command=echo $RUNBOOK_GREEN_ADDRS > {sb}/addrs.new && mv {sb}/addrs.new {sb}/addrs"),
            format!("mark_command=echo $RUNBOOK_STATE > {sb}/state"),
        ]
        .into_iter()
        .flat_map(|p| ["-p".to_owned(), p])
        .collect()
    }

    fn runbook(&self, args: &[&str]) -> crate::support::Cmd {
        self.bao.runbook(&self.sb, args)
    }

    /// The Raft configuration as a green member reads it: node id → voter.
    fn raft_servers(&self, via: &str) -> BTreeMap<String, bool> {
        let v = http()
            .get(&format!("{via}/v1/sys/storage/raft/configuration"))
            .set("X-Vault-Token", &self.bao.token)
            .call()
            .ok()
            .and_then(|r| r.into_json::<Value>().ok())
            .unwrap_or_default();
        v["data"]["config"]["servers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| {
                (
                    s["node_id"].as_str().unwrap_or_default().to_owned(),
                    s["voter"] == true,
                )
            })
            .collect()
    }

    /// Every Raft configuration change the cluster's leaders logged, as (command, server id).
    fn configuration_changes(&self) -> Vec<(String, String)> {
        let mut logs: Vec<PathBuf> = (1..=3)
            .map(|n| self.bao.cluster.dir.join(format!("node-{n}.log")))
            .collect();
        logs.extend((0..GREEN).map(|n| self.sb.path().join(format!("green/green-{n}.log"))));
        let mut out = Vec::new();
        for log in logs {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            for line in text
                .lines()
                .filter(|l| l.contains("updating configuration:"))
            {
                let field = |name: &str| {
                    line.split_whitespace()
                        .find_map(|w| w.strip_prefix(name))
                        .unwrap_or_default()
                        .to_owned()
                };
                out.push((field("command="), field("server-id=")));
            }
        }
        out
    }

    fn count(&self, command: &str, id: &str) -> usize {
        self.configuration_changes()
            .iter()
            .filter(|(c, s)| c == command && s == id)
            .count()
    }

    /// The `remove-peer` requests the cluster answered, as (server id, error or "").
    fn remove_peer_requests(&self) -> Vec<(String, String)> {
        std::fs::read_to_string(&self.audit)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| {
                e["type"] == "response" && e["request"]["path"] == "sys/storage/raft/remove-peer"
            })
            .map(|e| {
                (
                    e["request"]["data"]["server_id"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    e["error"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }

    /// The end state, read from the servers: only green in Raft, all voters, on 2.7.2, every blue
    /// process gone, the data readable from every green member; each green member joined once
    /// and promoted once, each blue member removed once, and no remove-peer answered an error.
    fn assert_done(&self, blue_pids: &[Option<u32>], acked: &[(u64, String)]) {
        let green_ids: Vec<String> = (0..GREEN).map(|n| format!("green-{n}")).collect();
        let blue_ids: Vec<String> = (1..=3).map(|n| format!("node-{n}")).collect();
        for g in &self.green {
            let servers = self.raft_servers(g);
            assert_eq!(
                servers.keys().cloned().collect::<Vec<_>>(),
                green_ids,
                "the Raft configuration read from {g}"
            );
            assert!(
                servers.values().all(|v| *v),
                "every green member votes: {servers:?}"
            );
        }
        assert_eq!(crate::openbao::versions(&self.green), ["2.7.2"; GREEN]);
        for (n, pid) in blue_pids.iter().enumerate() {
            let pid = pid.expect("blue pid");
            assert!(!running(pid), "blue node-{} (pid {pid}) still runs", n + 1);
            assert_eq!(
                status_of(&http(), &format!("{}/v1/sys/health", self.bao.addrs[n])),
                None
            );
        }
        let agent = http();
        for g in &self.green {
            let v = get_kv(&agent, g, &self.bao.token, "before");
            assert_eq!(
                v,
                Some(json!("blue")),
                "data written before the run, read from {g}"
            );
            for (n, via) in acked {
                assert_eq!(
                    get_kv(&agent, g, &self.bao.token, &format!("k{n}")),
                    Some(json!(n)),
                    "k{n} (acknowledged by {via}) read from {g}"
                );
            }
        }
        for id in &green_ids {
            assert_eq!(
                self.count("AddNonvoter", id),
                1,
                "{id} joined once, as a non-voter: {:?}",
                self.configuration_changes()
            );
            assert_eq!(
                self.count("AddVoter", id),
                1,
                "{id} promoted once: {:?}",
                self.configuration_changes()
            );
        }
        for id in &blue_ids {
            assert_eq!(
                self.count("RemoveServer", id),
                1,
                "{id} removed once: {:?}",
                self.configuration_changes()
            );
        }
        let removals = self.remove_peer_requests();
        for id in &blue_ids {
            assert_eq!(
                removals.iter().filter(|(s, _)| s == id).count(),
                1,
                "one remove-peer request for {id}: {removals:?}"
            );
        }
        assert!(removals.iter().all(|(_, e)| e.is_empty()), "{removals:?}");
        assert_eq!(removals.len(), 3, "{removals:?}");
        assert_eq!(
            self.sb.read("addrs").trim(),
            self.green.join(" "),
            "traffic cut over"
        );
    }

    fn blue_pids(&self) -> Vec<Option<u32>> {
        (1..=3)
            .map(|n| self.bao.cluster.pid(&format!("node-{n}")))
            .collect()
    }
}

impl Drop for BlueGreen {
    fn drop(&mut self) {
        for n in 0..GREEN {
            let _ = std::process::Command::new("bash")
                .arg(self.sb.path().join("green.sh"))
                .arg(self.sb.path().join("green"))
                .args(["stop", &n.to_string()])
                .output();
        }
    }
}

/// Whether a process runs (exists and is not a zombie: a stopped server whose parent, the
/// testbed's shell, is gone may wait for a reaper).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("State:"))
            .is_some_and(|st| !st.trim_start().starts_with(['Z', 'X']))
    })
}

fn get_kv(agent: &ureq::Agent, addr: &str, token: &str, key: &str) -> Option<Value> {
    agent
        .get(&format!("{addr}/v1/kv/{key}"))
        .set("X-Vault-Token", token)
        .call()
        .ok()
        .and_then(|r| r.into_json::<Value>().ok())
        .map(|v| v["data"]["v"].clone())
}

/// A client that writes `kv/kN = N` through the first address of the address file, read
/// before every request (what the cutover rewrites); returns the acknowledged writes.
struct Client {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<(u64, String)>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Client {
    fn start(file: PathBuf, token: String) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let (s, acks) = (stop.clone(), acked.clone());
        let thread = std::thread::spawn(move || {
            let agent = http();
            let deadline = Instant::now() + Duration::from_secs(600);
            let mut n = 0u64;
            while !s.load(Ordering::SeqCst) && Instant::now() < deadline {
                let addrs = std::fs::read_to_string(&file).unwrap_or_default();
                if let Some(a) = addrs.split_whitespace().next() {
                    let r = agent
                        .put(&format!("{a}/v1/kv/k{n}"))
                        .set("X-Vault-Token", &token)
                        .send_json(json!({ "v": n }));
                    if r.is_ok_and(|resp| (200..300).contains(&resp.status())) {
                        acks.lock().expect("acks").push((n, a.to_owned()));
                    }
                }
                n += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Self {
            stop,
            acked,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Vec<(u64, String)> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.acked.lock().expect("acks").clone()
    }
}

#[test]
fn a_blue_green_upgrade_moves_a_real_cluster_to_green_members_on_the_new_version() {
    let bg = BlueGreen::new();
    let blue_pids = bg.blue_pids();
    let client = Client::start(bg.sb.path().join("addrs"), bg.bao.token.clone());
    let args = bg.args();
    let mut all = vec!["run", "bluegreen-openbao", "--yes"];
    all.extend(args.iter().map(String::as_str));
    let out = bg.runbook(&all).run();
    let acked = client.finish();
    out.expect_code(0);
    assert!(
        acked.iter().any(|(_, a)| bg.green.contains(a)),
        "the client wrote through green after the cutover: {} writes, {:?}",
        acked.len(),
        acked.last()
    );
    assert!(
        acked.iter().any(|(_, a)| bg.bao.addrs.contains(a)),
        "and through blue before"
    );
    bg.assert_done(&blue_pids, &acked);
    assert_eq!(bg.sb.read("state"), "", "no failure was recorded");
}

#[test]
fn a_blue_green_upgrade_killed_after_the_first_removal_resumes_without_repeating_a_step() {
    let bg = BlueGreen::new();
    let blue_pids = bg.blue_pids();
    let args = bg.args();
    let mut all = vec!["run", "bluegreen-openbao", "--yes"];
    all.extend(args.iter().map(String::as_str));
    let mut child = bg.runbook(&all).spawn();
    // Killed as soon as the servers show the first blue member gone from the Raft configuration
    // (the remove-peer answered; its success possibly not yet journaled).
    let green0 = bg.green[0].clone();
    wait_for(
        "the first blue member to leave Raft",
        Duration::from_secs(300),
        || {
            let s = bg.raft_servers(&green0);
            s.len() == 5 && s.keys().filter(|k| k.starts_with("node-")).count() == 2
        },
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid")),
        nix::sys::signal::SIGKILL,
    )
    .expect("kill");
    let _ = child.wait();
    let run = bg.sb.only_run();
    assert_eq!(bg.sb.status(&run)["state"], "running", "killed mid-run");
    assert_eq!(
        bg.remove_peer_requests().len(),
        1,
        "one removal at the kill"
    );

    let out = bg.runbook(&["resume", &run, "--yes"]).run();
    out.expect_code(0);
    assert_eq!(bg.sb.status(&run)["state"], "succeeded");
    bg.assert_done(&blue_pids, &[]);
    // The journal agrees: after the resume only the two other blue members' removals started
    // (the first one, done or in flight at the kill, was not sent again), and no join.
    let records = bg.sb.records(&run);
    let resumed = records
        .iter()
        .position(|r| r["event"] == "resumed")
        .expect("resumed record");
    let started = |suffix: &str| {
        records[resumed..]
            .iter()
            .filter(|r| r["event"] == "step_started")
            .filter(|r| r["path"].as_str().is_some_and(|p| p.ends_with(suffix)))
            .count()
    };
    assert_eq!(
        started(".remove-peer"),
        2,
        "removals started after the resume"
    );
    assert_eq!(started(".raft-join"), 0, "joins started after the resume");
    // A removal in flight at the kill (its answer not yet journaled) is found done by its
    // check and skipped, not sent again.
    let before = &records[..resumed];
    let in_flight: Vec<&str> = before
        .iter()
        .filter(|r| r["event"] == "step_started")
        .filter_map(|r| r["path"].as_str())
        .filter(|p| p.ends_with(".remove-peer"))
        .filter(|p| {
            !before
                .iter()
                .any(|r| r["path"] == *p && r["event"] == "step_succeeded")
        })
        .collect();
    for p in &in_flight {
        assert!(
            records[resumed..]
                .iter()
                .any(|r| r["path"] == *p && r["event"] == "step_skipped"),
            "{p} was in flight at the kill and must be skipped by its check"
        );
    }
    eprintln!("remove-peer steps in flight at the kill: {in_flight:?}");
}

#[test]
fn a_blue_green_upgrade_that_fails_before_the_cutover_leaves_blue_as_it_was() {
    let bg = BlueGreen::new();
    let blue_pids = bg.blue_pids();
    // The third green member cannot start: the first two have joined by then.
    bg.sb.write("green/fail-2", "");
    let args = bg.args();
    let mut all = vec!["run", "bluegreen-openbao", "--yes"];
    all.extend(args.iter().map(String::as_str));
    let out = bg.runbook(&all).run();
    out.expect_code(1);
    assert_eq!(
        bg.sb.read("state").trim(),
        "RolledBack",
        "{}",
        out.explain("the verdict")
    );
    for a in &bg.bao.addrs {
        let servers = bg.raft_servers(a);
        assert_eq!(
            servers.into_iter().collect::<Vec<_>>(),
            [
                ("node-1".to_owned(), true),
                ("node-2".to_owned(), true),
                ("node-3".to_owned(), true)
            ],
            "the Raft configuration read from {a}"
        );
    }
    assert_eq!(bg.blue_pids(), blue_pids, "no blue member was touched");
    assert_eq!(
        bg.bao.versions(),
        ["2.6.2"; 3],
        "every blue member runs, unsealed"
    );
    assert_eq!(
        get_kv(&http(), &bg.bao.addrs[0], &bg.bao.token, "before"),
        Some(json!("blue"))
    );
    for n in 0..GREEN {
        let pid = std::fs::read_to_string(bg.sb.path().join(format!("green/green-{n}.pid")))
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok());
        assert!(!pid.is_some_and(running), "green-{n} still runs");
    }
    for id in ["green-0", "green-1"] {
        assert_eq!(bg.count("AddNonvoter", id), 1, "{id} joined once");
        assert_eq!(
            bg.count("RemoveServer", id),
            1,
            "{id} removed once by the rollback"
        );
    }
    assert_eq!(
        bg.count("AddNonvoter", "green-2"),
        0,
        "green-2 never started"
    );
    assert_eq!(
        bg.sb.read("addrs").trim(),
        bg.bao.addrs.join(" "),
        "no cutover"
    );
}

/// The cluster's audit device, in every server's configuration.
const AUDIT: &str = r#"audit "file" "bluegreen" {
  options {
    file_path = "@LOG@"
    log_raw = "true"
  }
}
"#;

/// The operator's commands for green members: `green.sh ROOT start|stop|status N [VERSION]`,
/// member N with its raft data in ROOT/green-N and the ports in ROOT/green-N.ports. Its start
/// is harmless on a running member and its stop on a stopped one, as the driver requires.
const GREEN_SH: &str = r#"#!/usr/bin/env bash
set -euo pipefail
root=$1 action=$2 n=$3
read -r api cport < "$root/green-$n.ports"
pid_file=$root/green-$n.pid
alive() { [ -f "$pid_file" ] && kill -0 "$(cat "$pid_file")" 2> /dev/null; }
case $action in
  status) alive ;;
  stop)
    alive || exit 0
    p=$(cat "$pid_file"); kill -TERM "$p"
    for _ in $(seq 1 300); do kill -0 "$p" 2> /dev/null || exit 0; sleep 0.1; done
    kill -KILL "$p" ;;
  start)
    alive && exit 0
    [ ! -e "$root/fail-$n" ] || { echo "green-$n cannot start (the test says so)" >&2; exit 1; }
    [ "$4" = 2.7.2 ] || { echo "no binary for $4" >&2; exit 1; }
    mkdir -p "$root/green-$n/data"
    cat > "$root/green-$n.hcl" << HCL
ui = false
api_addr = "http://127.0.0.1:$api"
cluster_addr = "https://127.0.0.1:$cport"
disable_mlock = true
storage "raft" {
  path = "$root/green-$n/data"
  node_id = "green-$n"
  performance_multiplier = 1
}
listener "tcp" {
  address = "127.0.0.1:$api"
  cluster_address = "127.0.0.1:$cport"
  tls_disable = true
}
@AUDIT@
HCL
    setsid nohup @BIN@ server -config="$root/green-$n.hcl" >> "$root/green-$n.log" 2>&1 < /dev/null &
    echo $! > "$pid_file"
    for _ in $(seq 1 300); do curl -s -o /dev/null "http://127.0.0.1:$api/v1/sys/seal-status" && exit 0; sleep 0.1; done
    echo "green-$n did not listen on $api" >&2; exit 1 ;;
esac
"#;
