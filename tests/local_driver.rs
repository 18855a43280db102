//! The `local` drivers refuse instead of guessing (issue 13): real OpenBao and etcd clusters
//! made by the testbed scripts, whose files the tests then spoil — a pid file that names
//! another process, a pid file that is missing or names a process that is gone, a missing
//! start command, a process of another program in a member's data directory or on its port, a
//! version the layout cannot start. What happened is read from the machine, not from the
//! driver: which process listens on a member's port and which processes hold its data
//! directory (from /proc, written here independently of the driver's own search), whether the
//! member still answers, and whether its pid changed.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use serde_json::Value;

use crate::support::clusters::{Cluster, get_json, http, status_of};
use crate::support::{Output, Sandbox, wait_for};

/// Calls `drivers/local/SYSTEM` once with `action` on `member`.
const DRIVER: &str = r#"
runbook: drive
params:
  system: { type: string, required: true }
  action: { type: string, required: true }
  member: { type: int, default: 0 }
  version: { type: string, default: "" }
  cluster_dir: { type: string, required: true }
steps:
  - id: driver
    call:
      runbook: "drivers/local/{{params.system}}"
      params:
        action: "{{params.action}}"
        member: "{{params.member}}"
        version: "{{params.version}}"
        cluster_dir: "{{params.cluster_dir}}"
"#;

/// One driver call in a sandbox of its own: what it printed, and its journal's records.
fn drive(
    cluster: &Cluster,
    system: &str,
    action: &str,
    member: u32,
    version: &str,
) -> (Output, Vec<Value>) {
    let sb = Sandbox::new();
    sb.write("drive.yaml", DRIVER);
    let out = sb
        .cmd(&[
            "run",
            "drive.yaml",
            "-p",
            &format!("system={system}"),
            "-p",
            &format!("action={action}"),
            "-p",
            &format!("member={member}"),
            "-p",
            &format!("version={version}"),
            "-p",
            &format!("cluster_dir={}", cluster.path()),
        ])
        .run();
    let records = sb.records(&sb.only_run());
    (out, records)
}

/// Everything the command printed, to look for a message in.
fn text(out: &Output) -> String {
    format!("{}{}", out.stdout, out.stderr)
}

/// What a successful step wrote to its stderr (the driver's notes), by its path.
fn stderr_of(records: &[Value], path: &str) -> String {
    records
        .iter()
        .find(|r| r["event"] == "step_succeeded" && r["path"] == path)
        .and_then(|r| r["output"]["stderr"].as_str())
        .unwrap_or_else(|| panic!("no successful {path} in the journal"))
        .to_owned()
}

/// Whether any step whose path contains `part` was started.
fn started(records: &[Value], part: &str) -> bool {
    records.iter().any(|r| {
        r["event"] == "step_started" && r["path"].as_str().is_some_and(|p| p.contains(part))
    })
}

/// The pids of every process, from /proc.
fn processes() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// Where a process's open files and working directory point.
fn links(pid: u32) -> Vec<PathBuf> {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| std::fs::read_link(e.path()).ok());
    fds.chain(std::fs::read_link(format!("/proc/{pid}/cwd")).ok())
        .collect()
}

/// The process listening on TCP `port` (any address), found through its socket's inode.
fn listener(port: u16) -> Option<u32> {
    let hex = format!(":{port:04X}");
    let inodes: BTreeSet<String> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|table| {
            table
                .lines()
                .skip(1)
                .filter_map(|line| {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    let listening = fields.get(3) == Some(&"0A");
                    let ours = fields.get(1).is_some_and(|local| local.ends_with(&hex));
                    if listening && ours {
                        fields.get(9).map(|s| (*s).to_owned())
                    } else {
                        None
                    }
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let sockets: BTreeSet<PathBuf> = inodes
        .iter()
        .map(|i| PathBuf::from(format!("socket:[{i}]")))
        .collect();
    processes()
        .into_iter()
        .find(|&pid| links(pid).iter().any(|l| sockets.contains(l)))
}

/// Every process with a file or its working directory under `dir`.
fn holders(dir: &Path) -> BTreeSet<u32> {
    processes()
        .into_iter()
        .filter(|&pid| links(pid).iter().any(|l| l.starts_with(dir)))
        .collect()
}

/// Whether a process exists and is not a zombie.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("State:"))
            .is_some_and(|state| !state.trim_start().starts_with('Z'))
    })
}

/// The executable a process runs.
fn exe(pid: u32) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/exe")).expect("the process's executable")
}

fn port(cluster: &Cluster, key: &str) -> u16 {
    cluster.var(key).parse().expect("a port")
}

/// A process of another program, ended when dropped.
struct Stray(Child);

impl Stray {
    /// `sleep` in `dir`.
    fn sleeping_in(dir: &Path) -> Self {
        Self(
            Command::new("sleep")
                .arg("600")
                .current_dir(dir)
                .spawn()
                .expect("start sleep"),
        )
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Stray {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_pid_file_naming_another_process_is_refused_and_the_real_openbao_server_is_left_alone() {
    let cluster = Cluster::openbao("2.6.2");
    let dir = cluster.dir.clone();
    let api = port(&cluster, "API_PORT_3");
    let addr = cluster.var("BAO_ADDR_3");
    let data = dir.join("node-3/data");
    let real = listener(api).expect("node-3 listens");
    assert_eq!(cluster.pid("node-3"), Some(real));
    let listeners = |cluster: &Cluster| -> Vec<Option<u32>> {
        (1..=3)
            .map(|n| listener(port(cluster, &format!("API_PORT_{n}"))))
            .collect()
    };
    let before = listeners(&cluster);

    let stray = Stray::sleeping_in(&dir);
    std::fs::write(dir.join("node-3.pid"), format!("{}\n", stray.pid())).expect("pid file");
    let (out, records) = drive(&cluster, "openbao", "restart", 2, "2.7.2");
    out.expect_code(1);
    let expected = format!(
        "node-3: refusing to stop or start it: its pid file {}/node-3.pid names pid {} ({}), but pid {real} ({}) listens on port {api}",
        dir.display(),
        stray.pid(),
        exe(stray.pid()).display(),
        exe(real).display(),
    );
    assert!(
        text(&out).contains(&expected),
        "{}",
        out.explain(&format!("a refusal saying: {expected}"))
    );
    assert!(
        text(&out).contains(&format!("has files open in {}", data.display())),
        "{}",
        out.explain("the refusal says the server holds the data directory")
    );
    assert!(!started(&records, "driver.start"), "nothing is started");
    // The real server is untouched and still the only one on node-3's port and data; the
    // stray process was not signalled either.
    assert_eq!(listener(api), Some(real));
    assert_eq!(holders(&data), BTreeSet::from([real]), "a second server");
    assert!(matches!(
        status_of(&http(), &format!("{addr}/v1/sys/health")),
        Some(200 | 429)
    ));
    assert!(alive(stray.pid()), "the stray process was signalled");
    assert_eq!(
        std::fs::read_to_string(dir.join("node-3.version"))
            .expect("version file")
            .trim(),
        "2.6.2"
    );

    // The whole upgrade refuses at `prepare`, which looks at every member before any is
    // touched (node-3, the highest ordinal, would have been the first).
    let init = cluster.json("init.json");
    let sb = Sandbox::new();
    let upgrade = sb
        .cmd(&[
            "run",
            "upgrade-openbao",
            "-p",
            "to_version=2.7.2",
            "-p",
            &format!("cluster_dir={}", cluster.path()),
            "-p",
            "snapshot=false",
            "--yes",
        ])
        .env("BAO_TOKEN", init["root_token"].as_str().expect("token"))
        .env(
            "BAO_UNSEAL_KEY",
            init["unseal_keys_b64"][0].as_str().expect("key"),
        )
        .run();
    upgrade.expect_code(1);
    assert!(
        text(&upgrade).contains(&expected),
        "{}",
        upgrade.explain("the upgrade refused with the same message")
    );
    let run = sb.records(&sb.only_run());
    assert!(started(&run, "prepare"), "it got as far as prepare");
    // The first member to upgrade is rolled in `first`, the others in `roll`.
    assert!(
        !started(&run, "first") && !started(&run, "roll"),
        "no member was rolled"
    );
    assert_eq!(listeners(&cluster), before, "a member was touched");
    drop(stray);

    // With the pid file right again, the same restart goes through: a new server on 2.7.2,
    // alone on node-3's port and data, named by the pid file.
    std::fs::write(dir.join("node-3.pid"), format!("{real}\n")).expect("pid file");
    let (out, _) = drive(&cluster, "openbao", "restart", 2, "2.7.2");
    out.expect_code(0);
    let new = listener(api).expect("node-3 listens again");
    assert_ne!(new, real);
    assert!(!alive(real));
    assert_eq!(cluster.pid("node-3"), Some(new));
    assert_eq!(holders(&data), BTreeSet::from([new]));
    assert_eq!(
        exe(new),
        std::fs::canonicalize(cluster.var("BAO_BIN_2_7_2")).expect("binary")
    );
}

#[test]
fn an_etcd_member_whose_pid_file_is_missing_or_stale_is_found_by_its_port_and_restarted_once() {
    let cluster = Cluster::etcd();
    let dir = cluster.dir.clone();
    let client = port(&cluster, "CLIENT_PORT_2");
    let endpoint = cluster.var("ETCD_ENDPOINT_2");
    let data = dir.join("m2.etcd");
    let first = listener(client).expect("m2 listens");
    let etcd = exe(first);

    // No pid file: the driver finds m2 by what it holds, stops that process and starts one.
    std::fs::remove_file(dir.join("m2.pid")).expect("remove the pid file");
    let (out, records) = drive(&cluster, "etcd", "restart", 1, "");
    out.expect_code(0);
    let note = stderr_of(&records, "driver.stop.run");
    let expected = format!(
        "m2: its pid file {}/m2.pid is missing; found m2 by what it holds: pid {first} ({}) listens on port {client}",
        dir.display(),
        etcd.display()
    );
    assert!(note.contains(&expected), "{note}\nexpected: {expected}");
    let second = listener(client).expect("m2 listens again");
    assert_ne!(second, first);
    assert!(!alive(first), "the old server still runs");
    assert_eq!(cluster.pid("m2"), Some(second));
    assert_eq!(
        holders(&data),
        BTreeSet::from([second]),
        "one server on m2's data"
    );
    wait_for("m2 healthy", Duration::from_secs(30), || {
        status_of(&http(), &format!("{endpoint}/health")) == Some(200)
    });

    // A pid file naming a process that is gone: the same. And `version` is honoured: the
    // version ETCD_BIN is (what m2 reports) is started, and is what runs after.
    let gone = {
        let mut child = Command::new("true").spawn().expect("true");
        let pid = child.id();
        child.wait().expect("wait");
        pid
    };
    std::fs::write(dir.join("m2.pid"), format!("{gone}\n")).expect("pid file");
    let version = get_json(&http(), &format!("{endpoint}/version"))["etcdserver"]
        .as_str()
        .expect("etcdserver")
        .to_owned();
    let (out, records) = drive(&cluster, "etcd", "restart", 1, &version);
    out.expect_code(0);
    let note = stderr_of(&records, "driver.stop.run");
    assert!(
        note.contains(&format!(
            "m2: its pid file {}/m2.pid names pid {gone}, which is gone; found m2 by what it holds: pid {second}",
            dir.display()
        )),
        "{note}"
    );
    assert!(
        stderr_of(&records, "driver.start.run").contains(&format!("m2: started on etcd {version}")),
        "{records:?}"
    );
    let third = listener(client).expect("m2 listens again");
    assert!(third != second && !alive(second));
    assert_eq!(cluster.pid("m2"), Some(third));
    assert_eq!(holders(&data), BTreeSet::from([third]));
    wait_for("m2 healthy", Duration::from_secs(30), || {
        status_of(&http(), &format!("{endpoint}/health")) == Some(200)
    });
}

#[test]
fn etcd_refuses_before_stopping_a_member_it_could_not_start_again() {
    let cluster = Cluster::etcd();
    let dir = cluster.dir.clone();
    let ports: Vec<u16> = (1..=3)
        .map(|n| port(&cluster, &format!("CLIENT_PORT_{n}")))
        .collect();
    let listeners = || ports.iter().map(|&p| listener(p)).collect::<Vec<_>>();
    let before = listeners();
    assert!(before.iter().all(Option::is_some), "{before:?}");
    let healthy = || {
        (1..=3).all(|n| {
            let e = cluster.var(&format!("ETCD_ENDPOINT_{n}"));
            status_of(&http(), &format!("{e}/health")) == Some(200)
        })
    };

    // Without m1.cmd: a restart of m1 refuses before its stop; m1 runs on, same pid.
    std::fs::rename(dir.join("m1.cmd"), dir.join("m1.cmd.away")).expect("move m1.cmd");
    let (out, records) = drive(&cluster, "etcd", "restart", 0, "");
    out.expect_code(1);
    let expected = format!(
        "m1: refusing to stop it: its start command {}/m1.cmd is missing or unreadable, so it could not be started again",
        dir.display()
    );
    assert!(
        text(&out).contains(&expected),
        "{}",
        out.explain(&format!("a refusal saying: {expected}"))
    );
    assert!(!started(&records, "driver.start"));
    assert_eq!(listeners(), before, "a member was stopped");
    assert!(healthy());

    // The rolling restart refuses at `prepare`, before m3 (the first to roll) is touched.
    let sb = Sandbox::new();
    let roll = |extra: &[&str]| {
        let mut args = vec![
            "run".to_owned(),
            "rolling-restart-etcd".to_owned(),
            "-p".to_owned(),
            format!("cluster_dir={}", cluster.path()),
            "-p".to_owned(),
            "snapshot=false".to_owned(),
        ];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        sb.cmd(&args).run()
    };
    let out = roll(&[]);
    out.expect_code(1);
    assert!(text(&out).contains(&expected), "{}", out.explain("refused"));
    assert_eq!(listeners(), before, "a member was stopped");

    // A version the layout cannot start (the Kubernetes testbed's etcd 3.6 on these 3.4
    // members) is refused, not ignored — before anything is stopped.
    std::fs::rename(dir.join("m1.cmd.away"), dir.join("m1.cmd")).expect("restore m1.cmd");
    let out = roll(&["-p", "version=3.6.8"]);
    out.expect_code(1);
    assert!(
        text(&out).contains(&format!(
            "refusing version 3.6.8: the members start with mN.cmd, which runs ETCD_BIN {}",
            cluster.var("ETCD_BIN")
        )),
        "{}",
        out.explain("the version refused")
    );
    assert_eq!(listeners(), before, "a member was stopped");
    assert!(healthy());
}

#[test]
fn an_etcd_member_is_never_started_while_another_process_holds_its_data_dir_or_its_port() {
    let cluster = Cluster::etcd();
    let dir = cluster.dir.clone();
    let client = port(&cluster, "CLIENT_PORT_3");
    let data = dir.join("m3.etcd");
    let (out, _) = drive(&cluster, "etcd", "stop", 2, "");
    out.expect_code(0);
    assert_eq!(listener(client), None);
    assert!(holders(&data).is_empty());

    // A shell of someone's working in the data directory.
    let stray = Stray::sleeping_in(&data);
    let (out, _) = drive(&cluster, "etcd", "start", 2, "");
    out.expect_code(1);
    let expected = format!(
        "m3: refusing to stop or start it: pid {} ({}) works in {}, runs none of the cluster's etcd binaries",
        stray.pid(),
        exe(stray.pid()).display(),
        data.display()
    );
    assert!(
        text(&out).contains(&expected),
        "{}",
        out.explain(&format!("a refusal saying: {expected}"))
    );
    assert_eq!(listener(client), None, "etcd was started");
    assert_eq!(
        holders(&data),
        BTreeSet::from([stray.pid()]),
        "etcd was started"
    );
    drop(stray);

    // Another program on its port (this test itself).
    let squatter = TcpListener::bind(("127.0.0.1", client)).expect("bind m3's client port");
    let (out, _) = drive(&cluster, "etcd", "start", 2, "");
    out.expect_code(1);
    let me = std::process::id();
    let expected = format!(
        "m3: refusing to stop or start it: pid {me} ({}) listens on port {client}, runs none of the cluster's etcd binaries",
        exe(me).display()
    );
    assert!(
        text(&out).contains(&expected),
        "{}",
        out.explain(&format!("a refusal saying: {expected}"))
    );
    assert!(holders(&data).is_empty(), "etcd was started");
    drop(squatter);

    // Nothing in the way: it starts, and is the process on its port and data.
    let (out, _) = drive(&cluster, "etcd", "start", 2, "");
    out.expect_code(0);
    let pid = listener(client).expect("m3 listens");
    assert_eq!(cluster.pid("m3"), Some(pid));
    assert_eq!(holders(&data), BTreeSet::from([pid]));
    let endpoint = cluster.var("ETCD_ENDPOINT_3");
    wait_for("m3 healthy", Duration::from_secs(30), || {
        status_of(&http(), &format!("{endpoint}/health")) == Some(200)
    });
}
