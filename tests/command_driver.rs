//! The `command` driver (issue 13): `rolling-restart-etcd` on a real 3-member etcd cluster that
//! the test starts with a layout of its own — members named alpha, beta and gamma, data in
//! `var/NAME`, pids in `run/NAME.pid`, one control script `ctl start|stop|status ORDINAL` —
//! not `testbeds/etcd.sh`'s, so nothing of the local driver's conventions is there. The
//! operator's commands go in as parameters; one member is reached over SSH (a real OpenSSH
//! server on loopback). What happened is read from the servers and their processes: which
//! members answered (every 20 ms), each member's pids (a restart is a new pid), the environment
//! of the new processes (`SSH_CONNECTION` for the one started over SSH), and every write a
//! client had acknowledged.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::etcd::{acknowledged, assert_writes, writer};
use crate::ssh::Sshd;
use crate::support::clusters::{Sampler, http};
use crate::support::own_layout;
use crate::support::{Sandbox, wait_for};

const NAMES: [&str; 3] = ["alpha", "beta", "gamma"];
const ETCD: &str = "/usr/bin/etcd";

/// How the operator's control script starts a member (see `own_layout::ctl_script`).
const START: &str = r#"    if running; then echo "$n runs already"; exit 0; fi
    state=new; [ -d "$root/var/$n/member" ] && state=existing
    cport=CLIENT_$n; pport=PEER_$n
    setsid nohup "$ETCD" --name "$n" --data-dir "$root/var/$n" \
      --listen-client-urls "http://127.0.0.1:${!cport}" --advertise-client-urls "http://127.0.0.1:${!cport}" \
      --listen-peer-urls "http://127.0.0.1:${!pport}" --initial-advertise-peer-urls "http://127.0.0.1:${!pport}" \
      --initial-cluster "$INITIAL" --initial-cluster-token "$TOKEN" --initial-cluster-state "$state" \
      --heartbeat-interval 100 --election-timeout 1000 >> "$root/log/$n.log" 2>&1 < /dev/null &
    echo $! > "$pidf"
    echo "$n started (pid $!)""#;

/// A 3-member etcd cluster in the operator's own layout.
struct OwnEtcd {
    dir: tempfile::TempDir,
    endpoints: Vec<String>,
}

impl OwnEtcd {
    fn start() -> Self {
        assert!(
            Path::new(ETCD).exists(),
            "{ETCD} is missing: testbeds/install.sh installs Debian etcd-server"
        );
        let dir = tempfile::Builder::new()
            .prefix("runbook-own-etcd-")
            .tempdir_in("/tmp")
            .expect("tempdir");
        own_layout::install(
            dir.path(),
            &own_layout::ctl_script(&NAMES, r#". "$root/etc/cluster.conf""#, START),
        );
        let ports = own_layout::free_ports(6);
        let mut conf = format!("ETCD={ETCD}\nTOKEN=own-{}\nINITIAL=", std::process::id());
        conf += &NAMES
            .iter()
            .enumerate()
            .map(|(i, n)| format!("{n}=http://127.0.0.1:{}", ports[2 * i + 1]))
            .collect::<Vec<_>>()
            .join(",");
        conf.push('\n');
        for (i, n) in NAMES.iter().enumerate() {
            let _ = write!(
                conf,
                "CLIENT_{n}={}\nPEER_{n}={}\n",
                ports[2 * i],
                ports[2 * i + 1]
            );
        }
        std::fs::write(dir.path().join("etc/cluster.conf"), conf).expect("conf");
        let own = Self {
            endpoints: (0..3)
                .map(|i| format!("http://127.0.0.1:{}", ports[2 * i]))
                .collect(),
            dir,
        };
        for i in 0..3 {
            own.ctl("start", i);
        }
        own.wait_healthy();
        own
    }

    fn ctl_path(&self) -> PathBuf {
        self.dir.path().join("ctl")
    }

    fn ctl(&self, action: &str, member: usize) {
        let out = Command::new(self.ctl_path())
            .args([action, &member.to_string()])
            .output()
            .expect("ctl");
        assert!(
            out.status.success(),
            "ctl {action} {member}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn wait_healthy(&self) {
        let agent = http();
        wait_for("every member healthy", Duration::from_secs(60), || {
            self.endpoints.iter().all(|e| {
                agent
                    .get(&format!("{e}/health"))
                    .call()
                    .ok()
                    .and_then(|r| r.into_json::<serde_json::Value>().ok())
                    .is_some_and(|v| v["health"] == "true")
            })
        });
    }

    fn pid(&self, member: usize) -> Option<u32> {
        own_layout::pid(self.dir.path(), NAMES[member])
    }

    /// Whether the member answers its health.
    fn answers(&self, member: usize) -> bool {
        http()
            .get(&format!("{}/health", self.endpoints[member]))
            .call()
            .is_ok()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Every 20 ms: whether each member is up (answers its status, or at least accepts the
    /// connection), and its pid.
    fn monitor(&self) -> Sampler<Sample> {
        let endpoints = self.endpoints.clone();
        let run = self.dir.path().join("run");
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(1))
            .build();
        Sampler::start(Duration::from_millis(20), move || {
            endpoints
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    // Down is refused, not slow: on a loaded machine an answer can take
                    // longer than the sample's second while the member runs on.
                    let up = match agent
                        .post(&format!("{e}/v3/maintenance/status"))
                        .send_json(json!({}))
                    {
                        Ok(_) | Err(ureq::Error::Status(..)) => true,
                        Err(ureq::Error::Transport(t)) => {
                            t.kind() != ureq::ErrorKind::ConnectionFailed
                        }
                    };
                    let pid = std::fs::read_to_string(run.join(format!("{}.pid", NAMES[i])))
                        .ok()
                        .and_then(|s| s.trim().parse().ok());
                    (up, pid)
                })
                .collect()
        })
    }

    /// The parameters that make `rolling-restart-etcd` drive this cluster.
    fn params(&self, sb: &Sandbox) -> Vec<String> {
        let ctl = self.ctl_path();
        let ctl = ctl.display();
        own_layout::param_args([
            "driver=command".to_owned(),
            format!("endpoints={}", json!(self.endpoints)),
            format!("stop_command={ctl} stop {{{{member}}}}"),
            format!("start_command={ctl} start {{{{ member }}}}"),
            format!("status_command={ctl} status {{{{member}}}}"),
            format!("snapshot_dir={}", sb.path().display()),
            "etcdctl=/usr/bin/etcdctl".to_owned(),
        ])
    }
}

impl Drop for OwnEtcd {
    fn drop(&mut self) {
        own_layout::tear_down(self.dir.path(), &NAMES);
    }
}

/// Never two members down at once, and each member's distinct pids over the samples.
/// One sample: whether each member answers, and its pid.
type Sample = Vec<(bool, Option<u32>)>;

fn assert_quorum_and_pids(samples: &[(Instant, Sample)]) -> Vec<BTreeSet<u32>> {
    assert!(samples.len() > 10, "too few samples: {}", samples.len());
    for (_, s) in samples {
        let down = s.iter().filter(|(up, _)| !up).count();
        assert!(down <= 1, "two members down at once: {s:?}");
    }
    (0..3)
        .map(|i| samples.iter().filter_map(|(_, s)| s[i].1).collect())
        .collect()
}

#[test]
fn the_command_driver_rolls_a_cluster_of_the_operators_own_layout_one_member_over_ssh() {
    let etcd = OwnEtcd::start();
    let sshd = Sshd::start();
    let sb = Sandbox::new();
    let before: Vec<u32> = (0..3).map(|i| etcd.pid(i).expect("pid")).collect();
    let monitor = etcd.monitor();
    let writes = writer(etcd.endpoints.clone());
    let mut args: Vec<String> = vec!["run".into(), "rolling-restart-etcd".into()];
    args.extend(etcd.params(&sb));
    // beta (ordinal 1) lives on "another host": its commands run over SSH.
    args.extend(sshd.driver_params(&json!(["", "127.0.0.1", ""])));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = sb.cmd(&args).ok();
    let acked = acknowledged(writes.finish());
    let samples = monitor.finish();

    let pids = assert_quorum_and_pids(&samples);
    for (i, seen) in pids.iter().enumerate() {
        assert_eq!(
            seen.len(),
            2,
            "{} must be restarted exactly once (pids {seen:?})\n{}",
            NAMES[i],
            out.stdout
        );
        assert_ne!(
            etcd.pid(i),
            Some(before[i]),
            "{} was not restarted",
            NAMES[i]
        );
    }
    etcd.wait_healthy();
    assert_writes(&etcd.endpoints[0], &acked);
    // The member over SSH was started by a remote session; the others here.
    let beta = own_layout::environ(etcd.pid(1).expect("beta's pid"));
    assert!(
        beta.contains("SSH_CONNECTION=127.0.0.1 "),
        "beta's new process was not started over SSH:\n{beta}"
    );
    for i in [0, 2] {
        assert!(!own_layout::environ(etcd.pid(i).expect("pid")).contains("SSH_CONNECTION="));
    }
    assert!(sshd.logins() >= 1, "{}", sshd.log());
}

/// How `runbook` was started for one leg of the kill test: stopped with SIGKILL once `marker`
/// appears (the member's stop is under way).
fn run_until_stopping(sb: &Sandbox, args: &[&str], marker: &Path) {
    let _ = std::fs::remove_file(marker);
    let mut child = sb.cmd(args).spawn();
    wait_for(
        "the member's stop to begin",
        Duration::from_secs(180),
        || marker.exists(),
    );
    child.kill().expect("SIGKILL runbook");
    child.wait().expect("reap runbook");
}

#[test]
fn a_kill_in_the_middle_of_a_members_stop_then_resume_restarts_no_member_twice() {
    let etcd = OwnEtcd::start();
    let sb = Sandbox::new();
    let monitor = etcd.monitor();
    let writes = writer(etcd.endpoints.clone());
    std::fs::write(etcd.path("hold-gamma"), "").unwrap();
    std::fs::write(etcd.path("hold-beta"), "").unwrap();
    let mut args: Vec<String> = vec!["run".into(), "rolling-restart-etcd".into()];
    args.extend(etcd.params(&sb));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    // 1. Killed while gamma (ordinal 2, the first) is being stopped; the stop completes
    //    without the run (gamma is down when the run resumes).
    run_until_stopping(&sb, &args, &etcd.path("run/gamma.stopping"));
    let run = sb.only_run();
    std::fs::remove_file(etcd.path("hold-gamma")).unwrap();
    etcd.ctl("stop", 2);
    // 2. The resume's prechecks let gamma be down — the run itself stopped it — and the run
    //    goes on; killed again while beta is being stopped, then an operator restarts beta by
    //    hand before resuming.
    run_until_stopping(&sb, &["resume", &run], &etcd.path("run/beta.stopping"));
    std::fs::remove_file(etcd.path("hold-beta")).unwrap();
    etcd.ctl("stop", 1);
    etcd.ctl("start", 1);
    etcd.wait_healthy();
    // 3. The last resume finds beta restarted already (its process is younger than the run)
    //    and does not restart it again; alpha is restarted once.
    let out = sb.cmd(&["resume", &run]).ok();
    let acked = acknowledged(writes.finish());
    let samples = monitor.finish();

    assert_eq!(sb.status(&run)["state"], "succeeded", "{}", out.stdout);
    let pids = assert_quorum_and_pids(&samples);
    // What the run journaled of each member's restart: on a failure, why it restarted one again.
    let restarts = || {
        sb.records(&run)
            .iter()
            .filter(|r| r["path"].as_str().is_some_and(|p| p.contains("restart")))
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    };
    for (i, seen) in pids.iter().enumerate() {
        assert_eq!(
            seen.len(),
            2,
            "{} must be restarted exactly once (pids {seen:?})\n{}",
            NAMES[i],
            restarts()
        );
    }
    etcd.wait_healthy();
    assert_writes(&etcd.endpoints[0], &acked);

    // A fresh run on a cluster with a member down is still refused by its prechecks, and
    // nothing is touched.
    etcd.ctl("stop", 0);
    let pids_before: Vec<_> = (1..3).map(|i| etcd.pid(i)).collect();
    let refused = sb.cmd(&args).run();
    assert_ne!(refused.code(), Some(0));
    let text = format!("{}{}", refused.stdout, refused.stderr);
    assert!(
        text.contains("precheck `health` refused the run") && text.contains(&etcd.endpoints[0]),
        "{}",
        refused.explain("the precheck names the member that is down")
    );
    assert_eq!((1..3).map(|i| etcd.pid(i)).collect::<Vec<_>>(), pids_before);
}

#[test]
fn the_command_driver_refuses_values_that_would_change_the_operators_command() {
    let sb = Sandbox::new();
    let marker = sb.path().join("injected");
    sb.write(
        "roll.yaml",
        &format!(
            r#"
runbook: roll
params:
  stop: {{ type: string }}
  start: {{ type: string }}
steps:
  - id: restart
    call:
      runbook: drivers/command/etcd
      params:
        action: restart
        member: 0
        version: "3.5; touch {}"
        command: {{ stop: "{{{{params.stop}}}}", start: "{{{{params.start}}}}" }}
"#,
            marker.display()
        ),
    );
    let out = sb
        .cmd(&[
            "run",
            "roll.yaml",
            "-p",
            "stop=true {{version}}",
            "-p",
            "start=true {{version}}",
        ])
        .code(1);
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(
        text.contains("not allowed in a command"),
        "{}",
        out.explain("the version with shell syntax is refused")
    );
    assert!(!marker.exists(), "a value ran as a command");

    // No start command: nothing is stopped.
    let stopped = sb.path().join("stopped");
    sb.write(
        "half.yaml",
        &format!(
            r#"
runbook: half
steps:
  - id: restart
    call:
      runbook: drivers/command/etcd
      params:
        action: restart
        member: 0
        command: {{ stop: "touch {}" }}
"#,
            stopped.display()
        ),
    );
    let out = sb.cmd(&["run", "half.yaml"]).code(1);
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(
        text.contains("needs start_command"),
        "{}",
        out.explain("a driver that cannot start the member again refuses to stop it")
    );
    assert!(
        !stopped.exists(),
        "the member was stopped without a way to start it"
    );
}

#[test]
fn the_local_driver_records_no_state_without_a_cluster_directory() {
    let sb = Sandbox::new();
    sb.write(
        "mark.yaml",
        r"
runbook: mark
steps:
  - id: mark
    call:
      runbook: drivers/local/openbao
      params: { action: mark, state: Degraded, cluster_dir: '' }
",
    );
    let before = std::fs::metadata("/upgrade-status")
        .ok()
        .map(|m| m.modified().ok());
    let out = sb.cmd(&["run", "mark.yaml"]).code(1);
    assert!(
        format!("{}{}", out.stdout, out.stderr).contains("no cluster_dir"),
        "{}",
        out.explain("an empty cluster_dir is refused")
    );
    let after = std::fs::metadata("/upgrade-status")
        .ok()
        .map(|m| m.modified().ok());
    assert_eq!(
        before, after,
        "the state was written at the filesystem root"
    );
}

#[test]
fn a_driver_of_the_users_own_in_runbooks_rolls_a_real_cluster() {
    let etcd = OwnEtcd::start();
    let sb = Sandbox::new();
    // The driver contract (README): `drivers/<driver>/<system>` with `action`, `member`,
    // `version`, `state`, `command` and the bundled drivers' fields, found in ./runbooks.
    sb.write(
        "runbooks/drivers/mine/etcd.yaml",
        r##"
runbook: drivers/mine/etcd
params:
  action: { type: string, required: true }
  member: { type: int, default: 0 }
  version: { type: string, default: "" }
  state: { type: string, default: "" }
  command: { type: map, default: {} }
  cluster_dir: { type: string, default: "" }
  namespace: { type: string, default: "" }
  release: { type: string, default: "" }
  image: { type: string, default: "" }
  ctl: { type: string, default: "" }
steps:
  - id: restart
    when: 'params.action == "restart"'
    shell: { args: [bash, -c, '"$CTL" stop "$1" && "$CTL" start "$1"', restart, "{{params.member}}"] }
output: "#{ action: params.action, member: params.member }"
"##,
    );
    let before: Vec<u32> = (0..3).map(|i| etcd.pid(i).expect("pid")).collect();
    let monitor = etcd.monitor();
    let endpoints = json!(etcd.endpoints).to_string();
    let dir = sb.path().display().to_string();
    let out = sb
        .cmd(&[
            "run",
            "rolling-restart-etcd",
            "-p",
            "driver=mine",
            "-p",
            &format!("endpoints={endpoints}"),
            "-p",
            &format!("snapshot_dir={dir}"),
            "-p",
            "etcdctl=/usr/bin/etcdctl",
        ])
        .env("CTL", etcd.ctl_path())
        .ok();
    let samples = monitor.finish();
    let pids = assert_quorum_and_pids(&samples);
    for i in 0..3 {
        assert_eq!(
            pids[i].len(),
            2,
            "{}: {:?}\n{}",
            NAMES[i],
            pids[i],
            out.stdout
        );
        assert_ne!(etcd.pid(i), Some(before[i]));
    }
    let records = sb.records(&sb.only_run());
    assert!(
        records.iter().any(|r| r["event"] == "step_started"
            && r["path"] == "roll[0].restart"
            && r["intent"]["describe"] == "call drivers/mine/etcd"),
        "the user's driver was not the one called"
    );
    etcd.wait_healthy();
}

#[test]
fn a_failed_roll_marks_the_cluster_degraded_by_the_operators_command_and_rolls_nothing_back() {
    let etcd = OwnEtcd::start();
    let sb = Sandbox::new();
    let state = sb.path().join("state");
    let mut args: Vec<String> = vec!["run".into(), "rolling-restart-etcd".into()];
    args.extend(etcd.params(&sb));
    // The start command of gamma (ordinal 2, the first) fails; the others would work.
    let ctl = etcd.ctl_path();
    args.extend(own_layout::param_args([
        format!(
            "start_command=[ {{{{member}}}} != 2 ] && {} start {{{{member}}}}",
            ctl.display()
        ),
        format!(
            "mark_command=echo \"$RUNBOOK_STATE $RUNBOOK_RUN\" > {}",
            state.display()
        ),
    ]));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let before: Vec<_> = (0..2).map(|i| etcd.pid(i)).collect();
    let out = sb.cmd(&args).code(1);
    let run = sb.only_run();
    let marked = std::fs::read_to_string(&state).unwrap_or_default();
    assert_eq!(
        marked.trim(),
        format!("Degraded {run}"),
        "{}",
        out.explain("on_failure records Degraded through the operator's mark command")
    );
    // gamma stays stopped (nothing is rolled back), alpha and beta were never touched.
    assert!(!etcd.answers(2), "gamma was started again");
    assert_eq!((0..2).map(|i| etcd.pid(i)).collect::<Vec<_>>(), before);
    let records = sb.records(&run);
    for path in ["on_failure.degraded", "on_failure.release"] {
        assert!(
            records
                .iter()
                .any(|r| r["event"] == "step_succeeded" && r["path"] == path),
            "{path} did not run"
        );
    }
    assert!(
        !records
            .iter()
            .any(|r| r["path"].as_str().is_some_and(|p| p.starts_with("verify"))),
        "the final check ran after a failure"
    );
}

#[test]
fn every_runbook_that_changes_a_cluster_takes_its_one_lock() {
    let sb = Sandbox::new();
    let lock = |runbook: &str, extra: &[&str]| -> serde_json::Value {
        let mut args = vec!["plan", runbook, "--no-prechecks", "--output", "json"];
        args.extend_from_slice(extra);
        let out = sb
            .cmd(&args)
            .env("BAO_TOKEN", "root-token-for-the-plan")
            .env("BAO_UNSEAL_KEY", "unseal-key-for-the-plan")
            .env("NATS_SYS_PASSWORD", "sys-password")
            .env("NATS_APP_PASSWORD", "app-password")
            .ok();
        let plan: serde_json::Value = out
            .stdout
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .find(|v: &serde_json::Value| !v["lock"].is_null())
            .unwrap_or_else(|| panic!("no lock in the plan of {runbook}:\n{}", out.stdout));
        plan["lock"].clone()
    };
    for cluster in [None, Some("eu-1")] {
        let c = cluster.map(|c| format!("cluster={c}"));
        let with = |base: &[&'static str]| -> Vec<String> {
            let mut v: Vec<String> = base.iter().map(|s| (*s).to_owned()).collect();
            if let Some(c) = &c {
                v.extend(["-p".to_owned(), c.clone()]);
            }
            v
        };
        let name = cluster.unwrap_or("default");
        // A scheduled rotation and an upgrade of the same cluster exclude each other.
        for (runbook, base) in [
            (
                "upgrade-openbao",
                vec!["-p", "to_version=2.7.2", "-p", "driver=kubernetes"],
            ),
            (
                "rolling-restart-openbao",
                vec!["-p", "cluster_dir=/srv/bao"],
            ),
            (
                "rotate-openbao-barrier",
                vec!["-p", "addr=http://127.0.0.1:8200"],
            ),
        ] {
            let args = with(&base);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            assert_eq!(
                lock(runbook, &args),
                json!(format!("openbao/{name}")),
                "{runbook}"
            );
        }
        let args = with(&[]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_eq!(
            lock("rolling-restart-etcd", &args),
            json!(format!("etcd/{name}"))
        );
        assert_eq!(
            lock("rolling-restart-nats", &args),
            json!(format!("nats/{name}"))
        );
    }
}
