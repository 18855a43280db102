//! Shell steps on another host (issue 13, item 2), against a real OpenSSH server (Debian
//! `openssh-server`) that each test starts on 127.0.0.1 with its own host key and an
//! authorized key it generated, as the current user. Being loopback, the "remote" processes
//! can be read from the server side in /proc.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::support::{Sandbox, wait_for};

const SSHD: &str = "/usr/sbin/sshd";

/// An sshd of the test's own, and the files a runbook needs to reach it.
pub(crate) struct Sshd {
    dir: tempfile::TempDir,
    pub(crate) port: u16,
    child: Child,
}

fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen (Debian openssh-client)");
    assert!(status.success(), "ssh-keygen failed");
}

impl Sshd {
    pub(crate) fn start() -> Self {
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} is missing: testbeds/install.sh installs Debian openssh-server"
        );
        let dir = tempfile::Builder::new()
            .prefix("runbook-sshd-")
            .tempdir()
            .expect("tempdir");
        keygen(&dir.path().join("host_key"));
        keygen(&dir.path().join("id"));
        std::fs::copy(
            dir.path().join("id.pub"),
            dir.path().join("authorized_keys"),
        )
        .expect("authorized_keys");
        // As root, sshd insists on its compiled-in privilege separation directory; the
        // Debian service creates it at start, so a test does the same. Unprivileged, sshd
        // runs without privilege separation and needs none.
        if user() == "root" {
            std::fs::create_dir_all("/run/sshd").expect("/run/sshd");
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let d = dir.path().display();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\n\
             AuthorizedKeysFile {d}/authorized_keys\nPidFile {d}/sshd.pid\nUsePAM no\n\
             StrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             PermitRootLogin prohibit-password\nMaxSessions 50\n"
        );
        std::fs::write(dir.path().join("sshd_config"), config).expect("sshd_config");
        let log = std::fs::File::create(dir.path().join("sshd.log")).expect("log");
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(dir.path().join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("sshd");
        let sshd = Self { dir, port, child };
        wait_for("sshd to listen", Duration::from_secs(20), || {
            sshd.log().contains("Server listening on 127.0.0.1")
        });
        let host_key = std::fs::read_to_string(sshd.dir.path().join("host_key.pub")).unwrap();
        std::fs::write(
            sshd.dir.path().join("known_hosts"),
            format!("[127.0.0.1]:{port} {host_key}"),
        )
        .unwrap();
        sshd
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The `shell:` fields that reach this server, with `known_hosts` as given.
    fn fields(&self, known_hosts: &Path) -> String {
        let user = user();
        format!(
            "host: 127.0.0.1, user: {user}, port: {}, identity: {}, known_hosts: {}",
            self.port,
            self.path("id").display(),
            known_hosts.display()
        )
    }

    /// The `-p` arguments that send the command driver's commands of the members whose
    /// entry in `hosts` is `127.0.0.1` to this server.
    pub(crate) fn driver_params(&self, hosts: &Value) -> Vec<String> {
        crate::support::own_layout::param_args([
            format!("hosts={hosts}"),
            format!("ssh_user={}", user()),
            format!("ssh_port={}", self.port),
            format!("ssh_identity={}", self.path("id").display()),
            format!("ssh_known_hosts={}", self.path("known_hosts").display()),
        ])
    }

    /// How many connections were authenticated so far.
    pub(crate) fn logins(&self) -> usize {
        self.log().matches("Accepted publickey").count()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- sshd log ---\n{}", self.log());
        }
    }
}

/// The current user's name, whom the test's sshd lets in.
pub(crate) fn user() -> String {
    let out = Command::new("id").arg("-un").output().expect("id");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn record<'a>(records: &'a [Value], event: &str, path: &str) -> &'a Value {
    records
        .iter()
        .rev()
        .find(|r| r["event"] == event && r["path"] == path)
        .unwrap_or_else(|| panic!("no {event} for {path} in {records:#?}"))
}

#[test]
fn a_remote_command_reports_its_exit_code_stdout_and_stderr_over_one_connection() {
    let sshd = Sshd::start();
    let sb = Sandbox::new();
    let ssh = sshd.fields(&sshd.path("known_hosts"));
    let dir = sb.path().display();
    sb.write(
        "remote.yaml",
        &format!(
            r#"
runbook: remote
steps:
  - id: both
    shell: {{ {ssh}, run: "echo out; echo err >&2", cwd: "{dir}" }}
  - id: argv
    shell: {{ {ssh}, args: [printf, "%s|", "two words", "it's", ""], env: {{ GREETING: "hi there" }} }}
  - id: env-stdin
    shell: {{ {ssh}, args: [sh, -c, 'printf "%s:" "$GREETING"; cat'], env: {{ GREETING: "hi there" }}, stdin: "line 1\nline 2\n" }}
  - id: code
    shell: {{ {ssh}, args: [sh, -c, "echo partial; echo 'it broke' >&2; exit 3"] }}
"#
        ),
    );
    sb.cmd(&["check", "remote.yaml"]).ok();
    let out = sb.cmd(&["run", "remote.yaml"]).code(1);
    assert!(
        out.stderr.contains("command exited with code 3: it broke")
            || out.stdout.contains("command exited with code 3: it broke"),
        "{}",
        out.explain("the failure names the remote exit code and stderr")
    );
    let records = sb.records(&sb.only_run());
    let both = &record(&records, "step_succeeded", "both")["output"];
    assert_eq!(both["stdout"], "out\n");
    assert_eq!(both["stderr"], "err\n");
    assert_eq!(both["exit_code"], 0);
    let argv = &record(&records, "step_succeeded", "argv")["output"];
    assert_eq!(argv["stdout"], "two words|it's||");
    let piped = &record(&records, "step_succeeded", "env-stdin")["output"];
    assert_eq!(piped["stdout"], "hi there:line 1\nline 2\n");
    let code = &record(&records, "step_failed", "code")["output"];
    assert_eq!(code["exit_code"], 3);
    assert_eq!(code["stdout"], "partial\n");
    assert_eq!(code["stderr"], "it broke\n");
    // Four steps, one authenticated connection: the others were sessions over its master.
    assert_eq!(sshd.logins(), 1, "{}", sshd.log());
}

#[test]
fn an_unknown_host_key_is_refused_before_anything_runs() {
    let sshd = Sshd::start();
    let sb = Sandbox::new();
    // A known_hosts file that lists another key for this host and port.
    keygen(&sb.path().join("other_key"));
    let other = std::fs::read_to_string(sb.path().join("other_key.pub")).unwrap();
    let known = sb.write("known_hosts", &format!("[127.0.0.1]:{} {other}", sshd.port));
    let ssh = sshd.fields(&known);
    let dir = sb.path().display();
    sb.write(
        "remote.yaml",
        &format!(
            "runbook: remote\nsteps:\n  - id: touch\n    shell: {{ {ssh}, args: [touch, ran], cwd: \"{dir}\" }}\n"
        ),
    );
    let out = sb.cmd(&["run", "remote.yaml"]).code(1);
    let want = format!(
        "failed to connect to {}@127.0.0.1 port {}: ",
        user(),
        sshd.port
    );
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(
        text.contains(&want)
            && text.contains("Host key verification failed.")
            && text.contains(&format!(
                "(host keys are checked against {})",
                known.display()
            )),
        "{}",
        out.explain("a clear refusal")
    );
    assert!(!sb.path().join("ran").exists(), "the command ran");
    assert_eq!(sshd.logins(), 0, "{}", sshd.log());
    // Nothing was learnt: the file still holds only the other key.
    assert_eq!(std::fs::read_to_string(&known).unwrap().lines().count(), 1);
}

/// Whether `pid` is a live process (a zombie is dead).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat.rsplit(") ").next()?.chars().next()?;
            Some(state != 'Z' && state != 'X')
        })
        .unwrap_or(false)
}

/// The names of `pid`'s ancestors, nearest first.
fn ancestors(pid: i32) -> Vec<String> {
    let mut names = Vec::new();
    let mut current = pid;
    while current > 1 {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{current}/stat")) else {
            break;
        };
        let Some(rest) = stat.rsplit(") ").next() else {
            break;
        };
        current = rest
            .split(' ')
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        if let Ok(comm) = std::fs::read_to_string(format!("/proc/{current}/comm")) {
            names.push(comm.trim().to_owned());
        }
    }
    names
}

#[test]
fn a_step_timeout_stops_the_remote_process_even_one_that_ignores_sigterm() {
    let sshd = Sshd::start();
    let sb = Sandbox::new();
    let ssh = sshd.fields(&sshd.path("known_hosts"));
    let dir = sb.path().display();
    sb.write(
        "remote.yaml",
        &format!(
            r#"
runbook: remote
steps:
  - id: polite
    timeout: 3s
    continue_on_error: true
    shell: {{ {ssh}, cwd: "{dir}", run: "sleep 300 & echo $! > polite.pid; wait" }}
  - id: stubborn
    timeout: 3s
    shell: {{ {ssh}, cwd: "{dir}", grace: 1s, run: "trap '' TERM; echo $$ > stubborn.pid; while :; do sleep 1; done" }}
"#
        ),
    );
    let child = sb.cmd(&["run", "remote.yaml"]).spawn();
    let pid = |name: &str| -> i32 {
        let mut pid = 0;
        wait_for(&format!("{name} to start"), Duration::from_secs(30), || {
            pid = sb.read(name).trim().parse().unwrap_or(0);
            pid > 0
        });
        pid
    };
    let polite = pid("polite.pid");
    assert!(
        ancestors(polite).iter().any(|n| n == "sshd"),
        "the remote process runs under sshd: {:?}",
        ancestors(polite)
    );
    let stubborn = pid("stubborn.pid");
    // The first step ended (its timeout) before the second started: its process was gone by then.
    assert!(
        !alive(polite),
        "the polite remote process outlived its step"
    );
    assert!(alive(stubborn));
    let out = child.wait_with_output().expect("runbook");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        !alive(stubborn),
        "the stubborn remote process outlived its step"
    );
    let records = sb.records(&sb.only_run());
    let message = record(&records, "step_failed", "stubborn")["error"].to_string();
    assert!(
        message.contains("killed with SIGKILL"),
        "stubborn step: {message}"
    );
}

/// Values that try every way out of their place, through both parses (ssh's login shell, then
/// the step's own `sh -c`).
const PAYLOADS: &[&str] = &[
    "x; touch pwned",
    "$(touch pwned)",
    "`touch pwned`",
    "'; touch pwned; '",
    "\"; touch pwned; echo \"",
    "a && touch pwned # *",
    "\\\"$(touch pwned)\\",
    "two  spaces\ttab ${HOME} !x ~root",
];

#[test]
fn issue_13_no_parameter_value_injects_a_command_on_the_remote_host() {
    let sshd = Sshd::start();
    let sb = Sandbox::new();
    let ssh = sshd.fields(&sshd.path("known_hosts"));
    let dir = sb.path().display();
    sb.write(
        "places.yaml",
        &format!(
            r#"
runbook: places
params:
  v: {{ type: string }}
steps:
  - id: run-unquoted
    shell: {{ {ssh}, cwd: "{dir}", run: "printf '%s' {{{{params.v}}}} > out-run-unquoted.txt" }}
  - id: double-quoted
    shell: {{ {ssh}, cwd: "{dir}", run: "printf '%s' \"{{{{params.v}}}}\" > out-double-quoted.txt" }}
  - id: single-quoted
    shell: {{ {ssh}, cwd: "{dir}", run: "printf '%s' '{{{{params.v}}}}' > out-single-quoted.txt" }}
  - id: sh-c
    shell: {{ {ssh}, cwd: "{dir}", args: [sh, -c, "printf '%s' {{{{params.v}}}} > out-sh-c.txt"] }}
  - id: argv
    shell: {{ {ssh}, cwd: "{dir}", args: [sh, -c, "printf '%s' \"$1\" > out-argv.txt", name, "{{{{params.v}}}}"] }}
  - id: env
    shell: {{ {ssh}, cwd: "{dir}", env: {{ V: "{{{{params.v}}}}" }}, run: "printf '%s' \"$V\" > out-env.txt" }}
"#
        ),
    );
    sb.cmd(&["check", "places.yaml"]).ok();
    for value in PAYLOADS {
        for id in [
            "run-unquoted",
            "double-quoted",
            "single-quoted",
            "sh-c",
            "argv",
            "env",
        ] {
            let _ = std::fs::remove_file(sb.path().join(format!("out-{id}.txt")));
        }
        let param = format!("v={value}");
        sb.cmd(&["run", "places.yaml", "-p", &param]).ok();
        assert!(
            !sb.path().join("pwned").exists(),
            "the value {value:?} ran a command"
        );
        for id in [
            "run-unquoted",
            "double-quoted",
            "single-quoted",
            "sh-c",
            "argv",
            "env",
        ] {
            assert_eq!(
                sb.read(&format!("out-{id}.txt")),
                *value,
                "step {id} got another value than {value:?}"
            );
        }
    }
}
