//! Pieces of the clusters that tests start in a layout of their own — the operator's, not
//! `testbeds/*.sh create`'s — for the `command` driver: one control script per cluster,
//! `ctl start|stop|status ORDINAL [VERSION]`, members by name, pids in `run/NAME.pid`.

use std::path::Path;
use std::process::Command;

/// The control script: `start_case` is the body of `start)` (it may use `$root`, `$n`,
/// `$pidf`, `running` and `${3:-}`, the version); `stop` sends SIGTERM and waits (while
/// `hold-NAME` exists it first waits, so that a test can catch a run in the middle of a stop);
/// `status` exits 0 while the member runs. `setup` runs first (sourcing the cluster's config).
pub fn ctl_script(names: &[&str], setup: &str, start_case: &str) -> String {
    format!(
        r#"#!/usr/bin/env bash
set -euo pipefail
root=$(cd "$(dirname "$0")" && pwd)
names=({names})
n=${{names[$2]}}
{setup}
pidf="$root/run/$n.pid"
running() {{
  [ -f "$pidf" ] || return 1
  local pid; pid=$(cat "$pidf")
  [ -r "/proc/$pid/status" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$pid/status"
}}
case $1 in
  start)
{start_case}
    ;;
  stop)
    touch "$root/run/$n.stopping"
    while [ -e "$root/hold-$n" ]; do sleep 0.05; done
    running || {{ echo "$n is not running"; exit 0; }}
    pid=$(cat "$pidf"); kill -TERM "$pid"
    for _ in $(seq 1 300); do running || {{ echo "$n stopped"; exit 0; }}; sleep 0.1; done
    echo "$n did not stop" >&2; exit 1 ;;
  status) running ;;
  *) echo "usage: ctl start|stop|status ORDINAL [VERSION]" >&2; exit 2 ;;
esac
"#,
        names = names.join(" ")
    )
}

/// Writes the control script as `dir/ctl`, executable, with `dir/{etc,run,log}` beside it.
pub fn install(dir: &Path, script: &str) {
    for sub in ["etc", "run", "log"] {
        std::fs::create_dir_all(dir.join(sub)).expect("mkdir");
    }
    let ctl = dir.join("ctl");
    std::fs::write(&ctl, script).expect("ctl");
    let status = Command::new("chmod")
        .arg("+x")
        .arg(&ctl)
        .status()
        .expect("chmod");
    assert!(status.success(), "chmod +x {}", ctl.display());
}

/// `n` ports free on 127.0.0.1 now (all held at once while chosen, so they differ).
pub fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("a free port"))
        .collect();
    held.iter()
        .map(|l| l.local_addr().expect("addr").port())
        .collect()
}

/// The member's pid (`run/NAME.pid`).
pub fn pid(dir: &Path, name: &str) -> Option<u32> {
    std::fs::read_to_string(dir.join(format!("run/{name}.pid")))
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

/// A process's environment, one `NAME=value` per line (empty when it is gone).
pub fn environ(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/environ"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', "\n"))
        .unwrap_or_default()
}

/// Kills every member still running (by its pid file), and on a failing test prints the last
/// lines of each member's log.
pub fn tear_down(dir: &Path, names: &[&str]) {
    for n in names {
        if let Some(pid) = pid(dir, n) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
    if std::thread::panicking() {
        for n in names {
            let log = std::fs::read_to_string(dir.join(format!("log/{n}.log"))).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            eprintln!(
                "--- {n} ---\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }
}

/// `-p NAME=VALUE` for each of `params`, as command-line words.
pub fn param_args<S: Into<String>>(params: impl IntoIterator<Item = S>) -> Vec<String> {
    params
        .into_iter()
        .flat_map(|p| ["-p".to_owned(), p.into()])
        .collect()
}
