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
use crate::ssh::Sshd;
use crate::support::clusters::{http, repo};
use crate::support::own_layout;
use crate::support::{Sandbox, wait_for};

const NAMES: [&str; 3] = ["east", "west", "north"];

/// How the operator's control script starts a server, on `${3:-}` (the version; empty: the one
/// it ran before), see `own_layout::ctl_script`.
const START: &str = r#"    version=${3:-}
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
    echo "$n started on $version (pid $!)""#;

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
        own_layout::install(
            root,
            &own_layout::ctl_script(&NAMES, r#". "$root/etc/binaries""#, START),
        );
        std::fs::write(
            root.join("etc/binaries"),
            format!("NATS_2_9={old}\nNATS_2_15={new}\n"),
        )
        .expect("binaries");
        let ports = own_layout::free_ports(9);
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
                all_healthy(&monitors)
                    && agent
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

/// Every server answers /healthz 200 (JetStream current, every stream too).
fn all_healthy(monitors: &[String]) -> bool {
    let agent = http();
    monitors.iter().all(|m| {
        agent
            .get(&format!("{m}/healthz"))
            .call()
            .is_ok_and(|r| r.status() == 200)
    })
}

impl Drop for OwnNats {
    fn drop(&mut self) {
        own_layout::tear_down(self.dir.path(), &NAMES);
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
    // north (ordinal 2, the first restarted) lives on "another host".
    let ssh = sshd.driver_params(&json!(["", "", "127.0.0.1"]));
    let mut args: Vec<String> = [
        "run",
        "rolling-restart-nats",
        "-p",
        "driver=command",
        "-p",
        "version=2.15.1",
    ]
    .map(str::to_owned)
    .to_vec();
    args.extend(own_layout::param_args([
        format!("urls={}", json!(nats.urls)),
        format!("monitor_urls={}", json!(nats.monitors)),
        format!("stop_command={ctl} stop {{{{member}}}}"),
        format!("start_command={ctl} start {{{{member}}}} {{{{version}}}}"),
        format!("status_command={ctl} status {{{{member}}}}"),
    ]));
    args.extend(ssh);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = nats.runbook(&sb, &args).ok();
    let acked = acknowledged(publisher.finish());
    let samples = monitor.finish();

    for (m, v) in nats.monitors.iter().zip(nats.versions()) {
        assert_eq!(v, "2.15.1", "{m} runs {v}\n{}", out.stdout);
    }
    assert_rolled(&samples);
    nats.assert_messages(&acked);
    assert_journaled_stepdowns(&sb);
    // north was started by a remote session, the others here.
    let environ = |n| own_layout::environ(own_layout::pid(own.dir.path(), n).expect("pid"));
    assert!(environ("north").contains("SSH_CONNECTION=127.0.0.1 "));
    assert!(!environ("east").contains("SSH_CONNECTION="));
    assert!(sshd.logins() >= 1, "{}", sshd.log());
}
