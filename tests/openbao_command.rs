//! The `command` driver on OpenBao (issue 13): `upgrade-openbao` and `rolling-restart-openbao`
//! on a real 3-node OpenBao Raft cluster that the test starts with a layout of its own —
//! members named ash, birch and cedar, configuration in `etc/NAME.hcl`, data in `var/NAME`,
//! pids in `run/NAME.pid`, one control script `ctl start|stop|status ORDINAL [VERSION]` — not
//! `testbeds/openbao.sh`'s, so nothing of the local driver's conventions is there. The
//! operator's commands go in as parameters. What happened is read from the servers and their
//! processes: versions from `/v1/sys/seal-status`, health sampled every 100 ms, each member's
//! pids (a restart is a new pid), the environment of a new process (`SSH_CONNECTION` for the
//! one started over SSH), and every KV write a client had acknowledged.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::openbao::{
    NodeSample, Writer, assert_one_down_at_most, assert_writes, monitor, pids_per_node, versions,
    writer,
};
use crate::ssh::Sshd;
use crate::support::clusters::{Sampler, http, repo, status_of};
use crate::support::own_layout;
use crate::support::{Sandbox, wait_for};

const NAMES: [&str; 3] = ["ash", "birch", "cedar"];

/// How the operator's control script starts a member, on `${3:-}` (the version; empty: the one
/// it ran before), see `own_layout::ctl_script`. Unsealing is not its business: the runbook
/// (or the operator, by hand) does it.
const START: &str = r#"    if running; then echo "$n runs already"; exit 0; fi
    v=${3:-$(cat "$root/etc/$n.version")}
    bin=BIN_${v//./_}
    [ -x "${!bin:-}" ] || { echo "no OpenBao $v here" >&2; exit 1; }
    echo "$v" > "$root/etc/$n.version"
    setsid nohup "${!bin}" server -config="$root/etc/$n.hcl" >> "$root/log/$n.log" 2>&1 < /dev/null &
    echo $! > "$pidf"
    echo "$n started on OpenBao $v (pid $!)""#;

/// The `bao` binaries of both versions, as `testbeds/paths.sh` finds them.
fn bao_binaries() -> [(String, String); 2] {
    let out = Command::new("bash")
        .arg("-c")
        .arg(
            "TB_NEED='BAO_262 BAO_272' source \"$1\" && printf '%s\\n%s' \"$BAO_262\" \"$BAO_272\"",
        )
        .arg("paths")
        .arg(repo().join("testbeds/paths.sh"))
        .output()
        .expect("bash");
    assert!(
        out.status.success(),
        "OpenBao 2.6.2 and 2.7.2 are not installed (testbeds/install.sh): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut bins = text.lines().map(str::to_owned);
    [
        ("2.6.2".into(), bins.next().expect("2.6.2")),
        ("2.7.2".into(), bins.next().expect("2.7.2")),
    ]
}

/// A 3-node OpenBao Raft cluster in the operator's own layout, initialised with one key share.
struct OwnBao {
    dir: tempfile::TempDir,
    addrs: Vec<String>,
    token: String,
    unseal_key: String,
}

impl OwnBao {
    fn start(version: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("runbook-own-bao-")
            .tempdir_in("/tmp")
            .expect("tempdir");
        own_layout::install(
            dir.path(),
            &own_layout::ctl_script(&NAMES, r#". "$root/etc/bao.conf""#, START),
        );
        let conf: String = bao_binaries()
            .iter()
            .map(|(v, bin)| format!("BIN_{}={bin}\n", v.replace('.', "_")))
            .collect::<Vec<_>>()
            .concat();
        std::fs::write(dir.path().join("etc/bao.conf"), conf).expect("conf");
        let ports = own_layout::free_ports(6);
        let addrs: Vec<String> = (0..3)
            .map(|i| format!("http://127.0.0.1:{}", ports[2 * i]))
            .collect();
        let joins = addrs
            .iter()
            .map(|a| format!("  retry_join {{\n    leader_api_addr = \"{a}\"\n  }}\n"))
            .collect::<Vec<_>>()
            .concat();
        for (i, name) in NAMES.iter().enumerate() {
            let (api, cluster) = (ports[2 * i], ports[2 * i + 1]);
            let data = dir.path().join("var").join(name);
            std::fs::create_dir_all(&data).expect("data dir");
            let hcl = format!(
                "ui = false\ndisable_mlock = true\napi_addr = \"http://127.0.0.1:{api}\"\n\
                 cluster_addr = \"https://127.0.0.1:{cluster}\"\n\n\
                 storage \"raft\" {{\n  path = \"{}\"\n  node_id = \"{name}\"\n  \
                 performance_multiplier = 1\n{joins}}}\n\n\
                 listener \"tcp\" {{\n  address = \"127.0.0.1:{api}\"\n  \
                 cluster_address = \"127.0.0.1:{cluster}\"\n  tls_disable = true\n}}\n",
                data.display()
            );
            std::fs::write(dir.path().join(format!("etc/{name}.hcl")), hcl).expect("hcl");
        }
        let mut own = Self {
            dir,
            addrs,
            token: String::new(),
            unseal_key: String::new(),
        };
        // The first member alone: while uninitialised it would only slow the others' joins.
        own.ctl("start", 0, version);
        let agent = http();
        wait_for("ash to answer", Duration::from_secs(30), || {
            status_of(&agent, &format!("{}/v1/sys/seal-status", own.addrs[0])) == Some(200)
        });
        let init: Value = agent
            .put(&format!("{}/v1/sys/init", own.addrs[0]))
            .send_json(json!({ "secret_shares": 1, "secret_threshold": 1 }))
            .expect("init")
            .into_json()
            .expect("init JSON");
        init["root_token"]
            .as_str()
            .expect("root token")
            .clone_into(&mut own.token);
        init["keys_base64"][0]
            .as_str()
            .expect("key")
            .clone_into(&mut own.unseal_key);
        own.unseal(0);
        wait_for("ash to become active", Duration::from_secs(60), || {
            status_of(&agent, &format!("{}/v1/sys/health", own.addrs[0])) == Some(200)
        });
        for i in 1..3 {
            own.ctl("start", i, version);
        }
        for i in 1..3 {
            own.unseal(i);
        }
        own.wait_healthy();
        own
    }

    fn ctl_path(&self) -> PathBuf {
        self.dir.path().join("ctl")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn ctl(&self, action: &str, member: usize, version: &str) {
        let out = Command::new(self.ctl_path())
            .args([action, &member.to_string(), version])
            .output()
            .expect("ctl");
        assert!(
            out.status.success(),
            "ctl {action} {member} {version}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Unseals a member as an operator would: once it answers, the key (again every 3 s: a
    /// member still joining the Raft cluster may not take it at once) until it is unsealed.
    fn unseal(&self, member: usize) {
        let agent = http();
        let addr = &self.addrs[member];
        let sealed = || {
            agent
                .get(&format!("{addr}/v1/sys/seal-status"))
                .call()
                .ok()
                .and_then(|r| r.into_json::<Value>().ok())
                .map(|v| v["sealed"] != false)
        };
        wait_for(
            &format!("{} to answer", NAMES[member]),
            Duration::from_secs(30),
            || sealed().is_some(),
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        while sealed() != Some(false) {
            assert!(
                Instant::now() < deadline,
                "{} still sealed after 60 s",
                NAMES[member]
            );
            let _ = agent
                .put(&format!("{addr}/v1/sys/unseal"))
                .send_json(json!({ "key": self.unseal_key }));
            let again = Instant::now() + Duration::from_secs(3);
            while Instant::now() < again && sealed() != Some(false) {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// Seals a member (`PUT /v1/sys/seal`): it answers, but serves nothing.
    fn seal(&self, member: usize) {
        http()
            .put(&format!("{}/v1/sys/seal", self.addrs[member]))
            .set("X-Vault-Token", &self.token)
            .call()
            .expect("seal");
    }

    /// Autopilot healthy, three healthy voters, a failure tolerated.
    fn wait_healthy(&self) {
        let agent = http();
        wait_for(
            "autopilot to report three healthy voters",
            Duration::from_secs(120),
            || {
                self.addrs.iter().any(|a| {
                    agent
                        .get(&format!("{a}/v1/sys/storage/raft/autopilot/state"))
                        .set("X-Vault-Token", &self.token)
                        .call()
                        .ok()
                        .and_then(|r| r.into_json::<Value>().ok())
                        .is_some_and(|v| {
                            let s = &v["data"];
                            s["healthy"] == true
                                && s["failure_tolerance"].as_u64() >= Some(1)
                                && s["servers"].as_object().is_some_and(|m| {
                                    m.values()
                                        .filter(|x| {
                                            x["healthy"] == true && x["status"] != "non-voter"
                                        })
                                        .count()
                                        == 3
                                })
                        })
                })
            },
        );
    }

    fn pid(&self, member: usize) -> Option<u32> {
        own_layout::pid(self.dir.path(), NAMES[member])
    }

    fn pids(&self) -> Vec<Option<u32>> {
        (0..3).map(|i| self.pid(i)).collect()
    }

    fn versions(&self) -> Vec<String> {
        versions(&self.addrs)
    }

    fn monitor(&self) -> Sampler<Vec<NodeSample>> {
        monitor(
            &self.addrs,
            NAMES
                .iter()
                .map(|n| self.path(&format!("run/{n}.pid")))
                .collect(),
        )
    }

    fn writer(&self) -> Writer {
        writer(&self.addrs, &self.token)
    }

    /// `runbook ARGS…` with the cluster's token and unseal key in the environment.
    fn runbook(&self, sb: &Sandbox, args: &[&str]) -> crate::support::Cmd {
        sb.cmd(args)
            .env("BAO_TOKEN", &self.token)
            .env("BAO_UNSEAL_KEY", &self.unseal_key)
    }

    /// The parameters that make the OpenBao runbooks drive this cluster with the operator's
    /// commands; `marks` collects what the failure handler records.
    fn params(&self, sb: &Sandbox) -> Vec<String> {
        let ctl = self.ctl_path();
        let ctl = ctl.display();
        let marks = sb.path().join("marks");
        own_layout::param_args([
            "driver=command".to_owned(),
            format!("addrs={}", json!(self.addrs)),
            format!("stop_command={ctl} stop {{{{member}}}}"),
            format!("start_command={ctl} start {{{{member}}}} {{{{version}}}}"),
            format!("status_command={ctl} status {{{{member}}}}"),
            format!(
                "mark_command=echo \"$RUNBOOK_STATE\" >> {}",
                marks.display()
            ),
            format!("snapshot_dir={}", sb.path().display()),
        ])
    }
}

impl Drop for OwnBao {
    fn drop(&mut self) {
        own_layout::tear_down(self.dir.path(), &NAMES);
    }
}

fn args_of<'a>(head: &[&'a str], rest: &'a [String]) -> Vec<&'a str> {
    head.iter()
        .copied()
        .chain(rest.iter().map(String::as_str))
        .collect()
}

#[test]
fn upgrade_openbao_with_the_command_driver_on_the_operators_own_cluster_canary_gate_and_rejection()
{
    let bao = OwnBao::start("2.6.2");
    let sshd = Sshd::start();
    let sb = Sandbox::new();
    let before = bao.pids();
    let monitor = bao.monitor();
    let writes = bao.writer();
    let mut params = bao.params(&sb);
    // birch (ordinal 1) lives on "another host": its commands run over SSH.
    params.extend(sshd.driver_params(&json!(["", "127.0.0.1", ""])));
    let upgrade = args_of(
        &[
            "run",
            "upgrade-openbao",
            "-p",
            "to_version=2.7.2",
            "-p",
            "canary=true",
        ],
        &params,
    );

    // 1. The canary: the first member (cedar, the highest ordinal) runs 2.7.2, the others
    //    are untouched, and the run waits at the canary gate.
    let out = bao.runbook(&sb, &upgrade).code(3);
    let run = sb.only_run();
    assert!(out.stdout.contains("gate `canary`"), "{}", out.stdout);
    assert_eq!(bao.versions(), ["2.6.2", "2.6.2", "2.7.2"]);
    assert_eq!(
        bao.pids()[..2],
        before[..2],
        "only the canary was restarted"
    );
    assert_ne!(bao.pid(2), before[2]);
    let snapshots: Vec<_> = std::fs::read_dir(sb.path())
        .expect("sandbox")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".snap"))
        .collect();
    assert_eq!(snapshots.len(), 1, "one pre-upgrade snapshot");

    // 2. Approved: the others are upgraded, one at a time, and the run waits at its final gate.
    let out = bao.runbook(&sb, &["approve", &run]).code(3);
    assert!(out.stdout.contains("gate `confirm`"), "{}", out.stdout);
    assert_eq!(bao.versions(), ["2.7.2"; 3]);
    // The member over SSH was started by a remote session; the others here.
    let birch = own_layout::environ(bao.pid(1).expect("birch's pid"));
    assert!(
        birch.contains("SSH_CONNECTION=127.0.0.1 "),
        "birch's new process was not started over SSH:\n{birch}"
    );
    for i in [0, 2] {
        assert!(!own_layout::environ(bao.pid(i).expect("pid")).contains("SSH_CONNECTION="));
    }
    assert!(sshd.logins() >= 1, "{}", sshd.log());

    // 3. Rejected at the final gate: the run fails, and what it records is the verdict on a
    //    healthy cluster — Rejected — not Degraded.
    let out = bao
        .runbook(&sb, &["reject", &run, "--comment", "latency up"])
        .run();
    assert_eq!(sb.status(&run)["state"], "failed", "{}", out.stdout);
    assert_eq!(sb.read("marks"), "Rejected\n", "{}", out.stdout);

    // 4. A rolling restart with the same commands: a snapshot first, each member once, the
    //    cluster checked as a whole at the end.
    let rolled_from = bao.pids();
    let out = bao
        .runbook(
            &sb,
            &args_of(&["run", "rolling-restart-openbao"], &bao.params(&sb)),
        )
        .ok();
    let acked = writes.finish();
    let samples = monitor.finish();
    for i in 0..3 {
        assert_ne!(bao.pid(i), rolled_from[i], "{} was not restarted", NAMES[i]);
    }
    assert_eq!(
        pids_per_node(&samples),
        [3, 3, 3],
        "each member restarted exactly once by the upgrade and once by the rolling restart\n{}",
        out.stdout
    );
    assert_one_down_at_most(&samples);
    assert_eq!(bao.versions(), ["2.7.2"; 3]);
    assert!(
        acked.len() > 20,
        "the client made little progress: {} writes",
        acked.len()
    );
    assert_writes(&bao.addrs, &bao.token, &acked);
    let snapshots = std::fs::read_dir(sb.path())
        .expect("sandbox")
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("openbao-pre-restart-")
        })
        .count();
    assert_eq!(snapshots, 1, "the rolling restart's snapshot");
    let records = sb.records(&latest_run(&sb));
    for id in ["healthy", "autopilot"] {
        assert!(
            records
                .iter()
                .any(|r| r["event"] == "step_succeeded" && r["path"] == id),
            "the final check `{id}` did not run"
        );
    }

    // 5. Timeouts are parameters: a start command that starts nothing fails the rolling
    //    restart within `start_timeout` (2 s, not the default 2 minutes), and the failure is
    //    recorded as Degraded.
    let started = Instant::now();
    let mut params = bao.params(&sb);
    params.extend(own_layout::param_args([
        "start_command=true",
        "status_command=",
        "start_timeout=2s",
        "snapshot=false",
    ]));
    let out = bao
        .runbook(&sb, &args_of(&["run", "rolling-restart-openbao"], &params))
        .code(1);
    let took = started.elapsed();
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(
        text.contains("roll[0].member.listening") && text.contains("did not hold within 2s"),
        "{}",
        out.explain("the wait for the member to answer fails after start_timeout")
    );
    assert!(took < Duration::from_secs(60), "the run took {took:?}");
    assert_eq!(sb.read("marks"), "Rejected\nDegraded\n");
    // The operator brings cedar back.
    bao.ctl("start", 2, "");
    bao.unseal(2);
    bao.wait_healthy();

    // 6. A canary rejected (a downgrade, as a rollout can be): the run fails at the canary gate
    //    with cedar alone changed, and records Rejected; the others are never touched.
    let kept = bao.pids();
    let mut params = bao.params(&sb);
    params.extend(own_layout::param_args([
        "to_version=2.6.2",
        "allow_downgrade=true",
        "canary=true",
        "snapshot=false",
    ]));
    bao.runbook(&sb, &args_of(&["run", "upgrade-openbao"], &params))
        .code(3);
    let canary_run = latest_run(&sb);
    let out = bao.runbook(&sb, &["reject", &canary_run]).run();
    assert_eq!(sb.status(&canary_run)["state"], "failed", "{}", out.stdout);
    assert_eq!(sb.read("marks"), "Rejected\nDegraded\nRejected\n");
    assert_eq!(bao.versions(), ["2.7.2", "2.7.2", "2.6.2"]);
    assert_eq!(
        bao.pids()[..2],
        kept[..2],
        "a member after the canary was touched"
    );
}

/// The run started last in the sandbox's journal (`history` lists the newest first).
fn latest_run(sb: &Sandbox) -> String {
    let out = sb.cmd(&["history", "--output", "json"]).ok();
    out.stdout
        .lines()
        .find_map(|l| serde_json::from_str::<Value>(l).ok())
        .and_then(|r| r["id"].as_str().map(str::to_owned))
        .expect("a run")
}

/// Starts `runbook ARGS…` and SIGKILLs it once `marker` appears (a member's stop is under way).
fn run_until_stopping(bao: &OwnBao, sb: &Sandbox, args: &[&str], marker: &Path) {
    let _ = std::fs::remove_file(marker);
    let mut child = bao.runbook(sb, args).spawn();
    let mut ended = None;
    wait_for(
        "the member's stop to begin",
        Duration::from_secs(180),
        || {
            ended = child.try_wait().expect("try_wait");
            marker.exists() || ended.is_some()
        },
    );
    if let Some(status) = ended.filter(|_| !marker.exists()) {
        let mut out = String::new();
        if let Some(mut stdout) = child.stdout.take() {
            let _ = stdout.read_to_string(&mut out);
        }
        if let Some(mut stderr) = child.stderr.take() {
            let _ = stderr.read_to_string(&mut out);
        }
        panic!(
            "runbook {} ended ({status}) before {} appeared:\n{out}",
            args.join(" "),
            marker.display()
        );
    }
    child.kill().expect("SIGKILL runbook");
    child.wait().expect("reap runbook");
}

#[test]
fn an_openbao_upgrade_killed_in_a_members_stop_resumes_without_restarting_any_member_twice() {
    let bao = OwnBao::start("2.6.2");
    let sb = Sandbox::new();
    let before = bao.pids();
    let monitor = bao.monitor();
    let writes = bao.writer();
    std::fs::write(bao.path("hold-cedar"), "").unwrap();
    std::fs::write(bao.path("hold-birch"), "").unwrap();
    let params = bao.params(&sb);
    let upgrade = args_of(
        &[
            "run",
            "upgrade-openbao",
            "-p",
            "to_version=2.7.2",
            "-p",
            "snapshot=false",
            "--yes",
        ],
        &params,
    );

    // 1. Killed while cedar (ordinal 2, the first) is being stopped: its stop is held, so
    //    cedar still runs 2.6.2.
    run_until_stopping(&bao, &sb, &upgrade, &bao.path("run/cedar.stopping"));
    let run = sb.only_run();
    assert_eq!(bao.pid(2), before[2]);

    // 2. Meanwhile ash is sealed: the resume's prechecks let be only the member the run was
    //    restarting, so they refuse, and nothing is touched.
    bao.seal(0);
    let refused = bao.runbook(&sb, &["resume", &run, "--yes"]).run();
    assert_ne!(refused.code(), Some(0));
    let text = format!("{}{}", refused.stdout, refused.stderr);
    assert!(
        text.contains("precheck `nodes`") && text.contains(&format!("{} is sealed", bao.addrs[0])),
        "{}",
        refused.explain("the resume is refused, naming the sealed member")
    );
    assert_eq!(bao.pids(), before, "a refused resume touched a member");
    assert_eq!(bao.versions(), ["2.6.2"; 3]);
    bao.unseal(0);
    bao.wait_healthy();

    // 3. cedar's stop completes without the run. The resume's prechecks let cedar be down —
    //    the run itself stopped it — and the run goes on; killed again while birch is being
    //    stopped, then an operator upgrades birch by hand (and unseals it) before resuming.
    std::fs::remove_file(bao.path("hold-cedar")).unwrap();
    bao.ctl("stop", 2, "");
    run_until_stopping(
        &bao,
        &sb,
        &["resume", &run, "--yes"],
        &bao.path("run/birch.stopping"),
    );
    assert_eq!(
        bao.versions()[2],
        "2.7.2",
        "cedar was upgraded by the resume"
    );
    std::fs::remove_file(bao.path("hold-birch")).unwrap();
    bao.ctl("stop", 1, "");
    bao.ctl("start", 1, "2.7.2");
    bao.unseal(1);
    bao.wait_healthy();

    // 4. The last resume finds birch's upgrade in place (it answers, unsealed, on 2.7.2) and
    //    does not restart it again; ash is upgraded once.
    let out = bao.runbook(&sb, &["resume", &run, "--yes"]).ok();
    let acked = writes.finish();
    let samples = monitor.finish();
    assert_eq!(sb.status(&run)["state"], "succeeded", "{}", out.stdout);
    assert_eq!(bao.versions(), ["2.7.2"; 3]);
    assert_eq!(
        pids_per_node(&samples),
        [2, 2, 2],
        "each member restarted exactly once\n{}",
        out.stdout
    );
    assert_one_down_at_most(&samples);
    assert_writes(&bao.addrs, &bao.token, &acked);
    let records = sb.records(&run);
    assert!(
        records.iter().any(|r| r["event"] == "step_skipped"
            && r["path"] == "roll[0].member"
            && r["reason"] == "check"),
        "birch's restart was not found in place by its check"
    );

    // 5. The same for a rolling restart: killed in cedar's stop, the stop finished without
    //    the run, resumed (its prechecks let cedar be down): each member restarted once more.
    let monitor = bao.monitor();
    std::fs::write(bao.path("hold-cedar"), "").unwrap();
    let restart = args_of(&["run", "rolling-restart-openbao"], &params);
    run_until_stopping(&bao, &sb, &restart, &bao.path("run/cedar.stopping"));
    let restart_run = latest_run(&sb);
    std::fs::remove_file(bao.path("hold-cedar")).unwrap();
    bao.ctl("stop", 2, "");
    let out = bao.runbook(&sb, &["resume", &restart_run]).ok();
    let samples = monitor.finish();
    assert_eq!(
        sb.status(&restart_run)["state"],
        "succeeded",
        "{}",
        out.stdout
    );
    assert_eq!(
        pids_per_node(&samples),
        [2, 2, 2],
        "each member restarted exactly once by the rolling restart\n{}",
        out.stdout
    );
    assert_one_down_at_most(&samples);
    assert_eq!(bao.versions(), ["2.7.2"; 3]);

    // 6. A fresh run on a cluster with a member down is still refused, and nothing touched.
    bao.ctl("stop", 0, "");
    let others: Vec<_> = (1..3).map(|i| bao.pid(i)).collect();
    let refused = bao.runbook(&sb, &upgrade).run();
    assert_ne!(refused.code(), Some(0));
    let text = format!("{}{}", refused.stdout, refused.stderr);
    assert!(
        text.contains("precheck `nodes` refused the run") && text.contains(&bao.addrs[0]),
        "{}",
        refused.explain("the precheck names the member that is down")
    );
    assert_eq!((1..3).map(|i| bao.pid(i)).collect::<Vec<_>>(), others);
}

/// Autopilot's state and `/v1/sys/ha-status` as real OpenBao 2.7.2 answered them with node-3
/// stopped for 30 s (trimmed to the fields the runbooks read); `healthy` before the stop.
fn autopilot_samples() -> (Value, Value, Value) {
    let server = |id: &str, port: u16, status: &str, healthy: bool| {
        json!({ "id": id, "name": id, "address": format!("127.0.0.1:{port}"),
                "node_status": "alive", "healthy": healthy, "status": status,
                "node_type": "voter" })
    };
    let state = |node3: bool| {
        json!({
            "failure_tolerance": u8::from(node3), "healthy": node3, "leader": "node-2",
            "servers": {
                "node-1": server("node-1", 23827, "voter", true),
                "node-2": server("node-2", 28821, "leader", true),
                "node-3": server("node-3", 20238, "voter", node3),
            },
            "voters": ["node-2", "node-1", "node-3"],
        })
    };
    let ha = json!({ "nodes": [
        { "api_address": "http://127.0.0.1:26401", "cluster_address": "https://127.0.0.1:28821", "active_node": true },
        { "api_address": "http://127.0.0.1:29282", "cluster_address": "https://127.0.0.1:23827", "active_node": false },
    ]});
    (state(true), state(false), ha)
}

#[test]
fn the_resume_prechecks_let_be_only_the_member_the_run_was_restarting() {
    let sb = Sandbox::new();
    sb.write(
        "lib.rhai",
        &std::fs::read_to_string(repo().join("runbooks/openbao/lib.rhai")).expect("lib"),
    );
    sb.write(
        "cases.yaml",
        r#"
runbook: cases
functions: lib.rhai
params:
  healthy: { type: map }
  down: { type: map }
  ha: { type: map }
steps:
  - id: cases
    script: |
      // ash, birch, cedar are node-1, node-2 and node-3; cedar is down.
      let members = ["http://127.0.0.1:29282", "http://127.0.0.1:26401/", "http://127.0.0.1:31940"];
      let ok = |state, ha, restarting| cluster_ok(#{ json: #{ data: state } }, ha, members, restarting);
      let ha = #{ json: #{ data: params.ha } };
      let also_ash = params.down;
      also_ash.servers["node-1"].healthy = false;
      let leaderless = params.down;
      leaderless.leader = "";
      // Just after the stop, ha-status still lists cedar (its last echo is recent).
      let stale = params.ha;
      stale.nodes.push(#{ api_address: "http://127.0.0.1:31940", cluster_address: "https://127.0.0.1:20238" });
      let stale = #{ json: #{ data: stale } };
      #{
        healthy_fresh: ok.call(params.healthy, (), -1),
        down_fresh: ok.call(params.down, (), -1),
        down_restarting_cedar: ok.call(params.down, ha, 2),
        down_restarting_ash: ok.call(params.down, ha, 0),
        two_unhealthy: ok.call(also_ash, ha, 2),
        no_leader: ok.call(leaderless, ha, 2),
        listed_restarting_cedar: ok.call(params.down, stale, 2),
        listed_restarting_birch: ok.call(params.down, stale, 1),
      }
"#,
    );
    let (healthy, down, ha) = autopilot_samples();
    sb.cmd(&[
        "run",
        "cases.yaml",
        "-p",
        &format!("healthy={healthy}"),
        "-p",
        &format!("down={down}"),
        "-p",
        &format!("ha={ha}"),
    ])
    .ok();
    let records = sb.records(&sb.only_run());
    let cases = &records
        .iter()
        .find(|r| r["event"] == "step_succeeded" && r["path"] == "cases")
        .expect("the cases ran")["output"];
    assert_eq!(
        cases,
        &json!({
            "healthy_fresh": true,
            "down_fresh": false,
            "down_restarting_cedar": true,
            "down_restarting_ash": false,
            "two_unhealthy": false,
            "no_leader": false,
            "listed_restarting_cedar": true,
            "listed_restarting_birch": false,
        })
    );
}
