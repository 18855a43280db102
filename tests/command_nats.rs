//! The `command` driver on NATS (issue 13): `rolling-restart-nats -p version=2.15.1` upgrades
//! a real 3-server JetStream cluster from Debian's 2.9 that the test starts in a layout of its
//! own — servers named east, west and north, configs in `etc/`, JetStream stores in `data/`,
//! pids in `run/`, one control script `ctl start|stop|status ORDINAL [VERSION]` — with one
//! server's commands over SSH (a real OpenSSH server on loopback). Read from the servers: the
//! version each reports, never more than one down, each restarted exactly once (pids), the meta
//! leader handed over first, every message an R3 stream acknowledged still there.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::json;

use crate::nats::{Nats, acknowledged, assert_journaled_stepdowns, assert_rolled};
use crate::ssh::{Sshd, user};
use crate::support::clusters::{http, repo};
use crate::support::{Sandbox, wait_for};

const NAMES: [&str; 3] = ["east", "west", "north"];

/// The operator's own control script.
const CTL: &str = r#"#!/usr/bin/env bash
set -euo pipefail
root=$(cd "$(dirname "$0")" && pwd)
names=(east west north)
n=${names[$2]}
. "$root/etc/binaries"
pidf="$root/run/$n.pid"
running() {
  [ -f "$pidf" ] || return 1
  local pid; pid=$(cat "$pidf")
  [ -r "/proc/$pid/status" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$pid/status"
}
case $1 in
  start)
    version=${3:-}
    [ -n "$version" ] || version=$(cat "$root/run/$n.version")
    case $version in
      2.9*) bin=$NATS_2_9 ;;
      2.15*) bin=$NATS_2_15 ;;
      *) echo "no nats-server $version here" >&2; exit 1 ;;
    esac
    if running; then echo "$n runs already"; exit 0; fi
    echo "$version" > "$root/run/$n.version"
    setsid nohup "$bin" -c "$root/etc/$n.conf" >> "$root/log/$n.log" 2>&1 < /dev/null &
    echo $! > "$pidf"
    echo "$n started on $version (pid $!)" ;;
  stop)
    running || { echo "$n is not running"; exit 0; }
    pid=$(cat "$pidf"); kill -TERM "$pid"
    for _ in $(seq 1 300); do running || { echo "$n stopped"; exit 0; }; sleep 0.1; done
    echo "$n did not stop" >&2; exit 1 ;;
  status) running ;;
  *) echo "usage: ctl start|stop|status ORDINAL [VERSION]" >&2; exit 2 ;;
esac
"#;

/// The testbed's binaries of NATS 2.9 and 2.15 (`testbeds/paths.sh`).
fn binaries() -> (String, String) {
    let out = Command::new("bash")
        .arg("-c")
        .arg(r#"source testbeds/paths.sh >/dev/null && echo "$NATS_29" && echo "$NATS_215""#)
        .current_dir(repo())
        .output()
        .expect("testbeds/paths.sh");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = text.lines().map(str::to_owned);
    let (old, new) = (
        lines.next().unwrap_or_default(),
        lines.next().unwrap_or_default(),
    );
    assert!(
        Path::new(&old).exists() && Path::new(&new).exists(),
        "nats-server 2.9 and 2.15 are missing (testbeds/install.sh): {text}"
    );
    (old, new)
}

fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("a free port"))
        .collect();
    held.iter()
        .map(|l| l.local_addr().expect("addr").port())
        .collect()
}

/// A 3-server NATS 2.9 cluster in the operator's own layout, and a client of it.
struct OwnNats {
    dir: tempfile::TempDir,
    nats: Nats,
}

impl OwnNats {
    fn start() -> Self {
        let (old, new) = binaries();
        let dir = tempfile::Builder::new()
            .prefix("runbook-own-nats-")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let root = dir.path();
        for sub in ["etc", "run", "data", "log"] {
            std::fs::create_dir(root.join(sub)).expect("mkdir");
        }
        std::fs::write(
            root.join("etc/binaries"),
            format!("NATS_2_9={old}\nNATS_2_15={new}\n"),
        )
        .expect("binaries");
        let ports = free_ports(9);
        let (sys, app) = ("sys-password-0001", "app-password-0001");
        let routes = (0..3).fold(String::new(), |mut out, i| {
            let _ = writeln!(out, "    nats-route://127.0.0.1:{}", ports[3 * i + 1]);
            out
        });
        for (i, n) in NAMES.iter().enumerate() {
            let (client, route, monitor) = (ports[3 * i], ports[3 * i + 1], ports[3 * i + 2]);
            let store = root.join(format!("data/{n}")).display().to_string();
            std::fs::write(
                root.join(format!("etc/{n}.conf")),
                format!(
                    "server_name: {n}\nlisten: 127.0.0.1:{client}\nhttp: 127.0.0.1:{monitor}\n\
                     lame_duck_duration: \"30s\"\n\
                     jetstream {{\n  store_dir: \"{store}\"\n  max_memory_store: 256MB\n  max_file_store: 1GB\n}}\n\
                     cluster {{\n  name: own\n  listen: 127.0.0.1:{route}\n  routes: [\n{routes}  ]\n}}\n\
                     accounts {{\n  SYS: {{ users: [ {{ user: \"sys\", password: \"{sys}\" }} ] }}\n  \
                     APP: {{ jetstream: enabled, users: [ {{ user: \"app\", password: \"{app}\" }} ] }}\n}}\n\
                     system_account: SYS\nno_auth_user: app\n"
                ),
            )
            .expect("conf");
            std::fs::write(root.join(format!("run/{n}.version")), "2.9\n").expect("version");
        }
        let ctl = root.join("ctl");
        std::fs::write(&ctl, CTL).expect("ctl");
        Command::new("chmod")
            .arg("+x")
            .arg(&ctl)
            .status()
            .expect("chmod");
        for i in 0..3 {
            let out = Command::new(&ctl)
                .args(["start", &i.to_string()])
                .output()
                .expect("ctl start");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let urls: Vec<String> = (0..3)
            .map(|i| format!("nats://127.0.0.1:{}", ports[3 * i]))
            .collect();
        let monitors: Vec<String> = (0..3)
            .map(|i| format!("http://127.0.0.1:{}", ports[3 * i + 2]))
            .collect();
        let agent = http();
        wait_for(
            "every server healthy with a meta leader",
            Duration::from_secs(60),
            || {
                monitors.iter().all(|m| {
                    agent
                        .get(&format!("{m}/healthz"))
                        .call()
                        .is_ok_and(|r| r.status() == 200)
                }) && agent
                    .get(&format!("{}/jsz", monitors[0]))
                    .call()
                    .ok()
                    .and_then(|r| r.into_json::<serde_json::Value>().ok())
                    .is_some_and(|v| !v["meta_cluster"]["leader"].is_null())
            },
        );
        let pid_files = NAMES
            .iter()
            .map(|n| root.join(format!("run/{n}.pid")))
            .collect();
        let names = NAMES.iter().map(|n| (*n).to_owned()).collect();
        let nats = Nats::connect(
            None,
            urls,
            monitors,
            pid_files,
            names,
            (sys.into(), app.into()),
        );
        Self { dir, nats }
    }
}

impl Drop for OwnNats {
    fn drop(&mut self) {
        for n in NAMES {
            if let Ok(pid) = std::fs::read_to_string(self.dir.path().join(format!("run/{n}.pid"))) {
                let _ = Command::new("kill").args(["-KILL", pid.trim()]).status();
            }
        }
        if std::thread::panicking() {
            for n in NAMES {
                let log = std::fs::read_to_string(self.dir.path().join(format!("log/{n}.log")))
                    .unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(10).collect();
                eprintln!(
                    "--- {n} ---\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
        }
    }
}

#[test]
fn the_command_driver_upgrades_a_nats_cluster_of_the_operators_own_layout_one_server_over_ssh() {
    let own = OwnNats::start();
    let nats = &own.nats;
    let sshd = Sshd::start();
    let sb = Sandbox::new();
    nats.create_stream();
    let monitor = nats.monitor();
    let publisher = nats.publisher();
    let ctl = own.dir.path().join("ctl");
    let ctl = ctl.display();
    let out = nats
        .runbook(
            &sb,
            &[
                "run",
                "rolling-restart-nats",
                "-p",
                "driver=command",
                "-p",
                "version=2.15.1",
                "-p",
                &format!("urls={}", json!(nats.urls)),
                "-p",
                &format!("monitor_urls={}", json!(nats.monitors)),
                "-p",
                &format!("stop_command={ctl} stop {{{{member}}}}"),
                "-p",
                &format!("start_command={ctl} start {{{{member}}}} {{{{version}}}}"),
                "-p",
                &format!("status_command={ctl} status {{{{member}}}}"),
                // north (ordinal 2, the first restarted) lives on "another host".
                "-p",
                &format!("hosts={}", json!(["", "", "127.0.0.1"])),
                "-p",
                &format!("ssh_user={}", user()),
                "-p",
                &format!("ssh_port={}", sshd.port),
                "-p",
                &format!("ssh_identity={}", sshd.path("id").display()),
                "-p",
                &format!("ssh_known_hosts={}", sshd.path("known_hosts").display()),
            ],
        )
        .ok();
    let acked = acknowledged(publisher.finish());
    let samples = monitor.finish();

    for (m, v) in nats.monitors.iter().zip(nats.versions()) {
        assert_eq!(v, "2.15.1", "{m} runs {v}\n{}", out.stdout);
    }
    assert_rolled(&samples);
    nats.assert_messages(&acked);
    assert_journaled_stepdowns(&sb);
    // north was started by a remote session, the others here.
    let pid = |n: &str| {
        std::fs::read_to_string(own.dir.path().join(format!("run/{n}.pid")))
            .expect("pid")
            .trim()
            .to_owned()
    };
    let environ = |pid: String| {
        std::fs::read(format!("/proc/{pid}/environ"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', "\n"))
            .unwrap_or_default()
    };
    assert!(environ(pid("north")).contains("SSH_CONNECTION=127.0.0.1 "));
    assert!(!environ(pid("east")).contains("SSH_CONNECTION="));
    assert!(sshd.logins() >= 1, "{}", sshd.log());
}
