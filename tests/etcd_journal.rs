//! The etcd journal from the command line: a runbook with shell steps and a gate runs with
//! `--journal etcd://127.0.0.1:PORT/test-prefix` against a real single-member etcd on loopback,
//! parks at its gate, is approved by another `runbook` process, and finishes; its records are
//! in etcd (read back with `etcdctl`, behind runbook's back), and `history`, `status` and `log`
//! read them from there.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;

use crate::support::{Sandbox, wait_for};

const GATED: &str = r#"
runbook: gated-on-etcd
steps:
  - id: one
    shell: { run: "echo one >> out.txt" }
  - id: two
    shell: { run: "echo two >> out.txt" }
  - id: confirm
    gate: "Check, then approve."
  - id: three
    shell: { run: "echo three >> out.txt" }
"#;

/// A binary of the testbed: `$VAR`, or Debian's (testbeds/install.sh installs etcd-server and
/// etcd-client).
fn binary(var: &str, name: &str) -> PathBuf {
    let found = std::env::var_os(var)
        .map(PathBuf::from)
        .into_iter()
        .chain([format!("/usr/bin/{name}"), format!("/usr/sbin/{name}")].map(PathBuf::from))
        .find(|p| p.is_file());
    found.unwrap_or_else(|| {
        panic!(
            "the etcd journal's end-to-end test needs `{name}` and found none (${var}, \
             /usr/bin/{name}, /usr/sbin/{name}): install it with testbeds/install.sh \
             (Debian: apt-get install etcd-server etcd-client), or point ${var} at one"
        )
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// A single-member etcd on loopback, its data in the sandbox; ended on drop.
struct Etcd {
    child: Child,
    port: u16,
    /// With TLS: its certificates, and the user etcdctl authenticates as once auth is on.
    tls: Option<(Pki, Option<String>)>,
}

/// The PEM files of an etcd that speaks TLS and asks its clients for a certificate: a CA, the
/// member's certificate (for 127.0.0.1) and a client's (CN `runbook`), written in the sandbox.
#[derive(Clone)]
struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

impl Pki {
    fn new(sb: &Sandbox) -> Self {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair,
        };
        let ca_key = KeyPair::generate().expect("a CA key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "runbook test CA");
        let ca_pem = ca.self_signed(&ca_key).expect("the CA").pem();
        let issuer = Issuer::new(ca, ca_key);
        let leaf = |name: &str, sans: &[&str], usages: Vec<ExtendedKeyUsagePurpose>| {
            let key = KeyPair::generate().expect("a key");
            let mut params =
                CertificateParams::new(sans.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
                    .expect("parameters");
            params.distinguished_name.push(DnType::CommonName, name);
            params.extended_key_usages = usages;
            let cert = params.signed_by(&key, &issuer).expect("a certificate");
            (
                sb.write(&format!("pki/{name}.pem"), &cert.pem()),
                sb.write(&format!("pki/{name}-key.pem"), &key.serialize_pem()),
            )
        };
        let (server_cert, server_key) = leaf(
            "etcd",
            &["127.0.0.1"],
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        );
        let (client_cert, client_key) =
            leaf("runbook", &[], vec![ExtendedKeyUsagePurpose::ClientAuth]);
        Self {
            ca: sb.write("pki/ca.pem", &ca_pem),
            server_cert,
            server_key,
            client_cert,
            client_key,
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Etcd {
    fn start(sb: &Sandbox) -> Self {
        Self::start_with(sb, None)
    }

    /// Clients reach it over TLS only, with a certificate its CA signed.
    fn start_tls(sb: &Sandbox, pki: &Pki) -> Self {
        Self::start_with(sb, Some(pki))
    }

    fn start_with(sb: &Sandbox, pki: Option<&Pki>) -> Self {
        let (port, peer) = (free_port(), free_port());
        let scheme = if pki.is_some() { "https" } else { "http" };
        let client = format!("{scheme}://127.0.0.1:{port}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let mut command = Command::new(binary("ETCD", "etcd"));
        command
            .args(["--name", "e2e", "--data-dir"])
            .arg(sb.path().join("etcd-data"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("e2e={peer_url}")]);
        if let Some(pki) = pki {
            command
                .arg("--cert-file")
                .arg(&pki.server_cert)
                .arg("--key-file")
                .arg(&pki.server_key)
                .arg("--trusted-ca-file")
                .arg(&pki.ca)
                .arg("--client-cert-auth");
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(sb.path().join("etcd.log")).unwrap())
            .spawn()
            .expect("etcd starts");
        let etcd = Self {
            child,
            port,
            tls: pki.map(|p| (p.clone(), None)),
        };
        wait_for("etcd to answer", Duration::from_secs(30), || {
            etcd.ctl(&["endpoint", "health"]).status.success()
        });
        etcd
    }

    fn ctl(&self, args: &[&str]) -> std::process::Output {
        let mut command = Command::new(binary("ETCDCTL", "etcdctl"));
        command.env("ETCDCTL_API", "3");
        match &self.tls {
            None => {
                command.arg(format!("--endpoints=127.0.0.1:{}", self.port));
            }
            Some((pki, user)) => {
                command
                    .arg(format!("--endpoints=https://127.0.0.1:{}", self.port))
                    .arg("--cacert")
                    .arg(&pki.ca)
                    .arg("--cert")
                    .arg(&pki.client_cert)
                    .arg("--key")
                    .arg(&pki.client_key);
                if let Some(user) = user {
                    command.arg(format!("--user={user}"));
                }
            }
        }
        command.args(args).output().expect("etcdctl runs")
    }

    /// `etcdctl ARGS…`, which must succeed.
    fn ctl_ok(&self, args: &[&str]) {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "etcdctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Every key-value under `prefix`, read with etcdctl.
    fn get_prefix(&self, prefix: &str) -> Vec<(String, Vec<u8>)> {
        let out = self.ctl(&["get", "--prefix", prefix, "-w", "json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let answer: Value = serde_json::from_slice(&out.stdout).expect("etcdctl prints JSON");
        let b64 = |v: &Value| {
            base64::engine::general_purpose::STANDARD
                .decode(v.as_str().expect("base64 text"))
                .expect("base64")
        };
        answer["kvs"]
            .as_array()
            .map(|kvs| {
                kvs.iter()
                    .map(|kv| {
                        (
                            String::from_utf8(b64(&kv["key"])).unwrap(),
                            b64(&kv["value"]),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[test]
fn a_gated_run_on_an_etcd_journal_is_approved_from_another_process_and_kept_in_etcd() {
    let sb = Sandbox::new();
    let etcd = Etcd::start(&sb);
    let url = format!("etcd://127.0.0.1:{}/test-prefix", etcd.port);
    let state = sb.path().join("state");
    let cmd = |args: &[&str]| {
        let mut all = vec!["--journal", url.as_str()];
        all.extend_from_slice(args);
        sb.cmd(&all).env("XDG_STATE_HOME", &state)
    };
    sb.write("gated.yaml", GATED);

    let out = cmd(&["run", "gated.yaml"]).code(3);
    let history = cmd(&["history", "--output", "json"]).ok();
    let ids: Vec<String> = history
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        ids.len(),
        1,
        "{}",
        history.explain("one run in the etcd journal")
    );
    let run = ids[0].clone();
    assert!(
        out.stdout
            .contains(&format!("run {run} is waiting at gate `confirm`")),
        "{}",
        out.explain("the run parks at its gate")
    );
    assert!(
        out.stdout
            .contains(&format!("runbook --journal {url} approve {run}")),
        "{}",
        out.explain("the hint names the etcd journal")
    );
    let status = |run: &str| -> Value {
        let out = cmd(&["status", run, "--output", "json"]).ok();
        serde_json::from_str(out.stdout.trim()).expect("status is JSON")
    };
    assert_eq!(status(&run)["state"], "waiting");
    assert_eq!(sb.read("out.txt"), "one\ntwo\n");

    cmd(&["approve", &run, "--comment", "looks fine", "--as", "alice"]).ok();
    assert_eq!(sb.read("out.txt"), "one\ntwo\nthree\n");
    assert_eq!(status(&run)["state"], "succeeded");
    let human = cmd(&["log", &run]).ok();
    assert!(
        human
            .stdout
            .contains("approved confirm by alice: looks fine"),
        "{}",
        human.explain("the log reads the decision back from etcd")
    );

    // The records, as etcd holds them: one key per record, a tag byte and a CRC32 before the
    // JSON; the same records `log` shows, in order.
    let logged: Vec<Value> = cmd(&["log", &run, "--output", "json"])
        .ok()
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("log line is JSON"))
        .collect();
    let stored = etcd.get_prefix(&format!("/test-prefix/runs/{run}/e/"));
    assert_eq!(stored.len(), logged.len(), "{stored:?}");
    for (i, ((key, value), logged)) in stored.iter().zip(&logged).enumerate() {
        let seq = i as u64 + 1;
        assert_eq!(key, &format!("/test-prefix/runs/{run}/e/{seq:020}"));
        assert_eq!(value[0], b'r', "an inline record");
        let json = &value[5..];
        assert_eq!(
            u32::from_le_bytes(value[1..5].try_into().unwrap()),
            crc32fast::hash(json)
        );
        let record: Value = serde_json::from_slice(json).expect("a record's JSON");
        assert_eq!(record["seq"], seq);
        assert_eq!(record["event"], logged["event"], "record {seq}");
    }
    let decided: Vec<&Value> = logged
        .iter()
        .filter(|r| r["event"] == "gate_decided")
        .collect();
    assert_eq!(decided.len(), 1);
    assert_eq!(decided[0]["by"], "alice");
    let last = etcd.get_prefix(&format!("/test-prefix/runs/{run}/last"));
    assert_eq!(last[0].1, logged.len().to_string().into_bytes());
    assert!(
        !sb.journal().exists(),
        "nothing went to a directory journal"
    );
}

#[test]
fn a_malformed_or_unreachable_etcd_journal_is_reported() {
    let sb = Sandbox::new();
    let state = sb.path().join("state");
    let out = sb
        .cmd(&["--journal", "etcd://127.0.0.1/p", "history"])
        .env("XDG_STATE_HOME", &state)
        .code(2);
    assert!(
        out.stderr.contains("endpoint `127.0.0.1` has no port"),
        "{}",
        out.explain("a URL without a port is refused")
    );
    let port = free_port();
    let url = format!("etcd://127.0.0.1:{port}/p");
    let out = sb
        .cmd(&["--journal", &url, "history"])
        .env("XDG_STATE_HOME", &state)
        .run();
    assert_ne!(out.status.code(), Some(0));
    assert!(
        out.stderr.contains(&format!("etcd at 127.0.0.1:{port}")),
        "{}",
        out.explain("an unreachable cluster is named")
    );
}

/// A cluster as it is run for real: clients reach it over TLS only, with a certificate its CA
/// signed, and authentication is on. The journal works with `--etcd-cacert`, `--etcd-cert`,
/// `--etcd-key` and a user given in the environment as etcdctl takes it, under a role that may
/// write only its prefix; a wrong password and a missing client certificate are refused with a
/// message that says so, and the password appears nowhere: not in etcd, not in any output.
#[test]
fn a_run_on_an_etcd_journal_over_tls_with_authentication_is_kept_in_etcd() {
    const PASSWORD: &str = "journal-pw-5f1c9a";
    let sb = Sandbox::new();
    let pki = Pki::new(&sb);
    let mut etcd = Etcd::start_tls(&sb, &pki);
    etcd.ctl_ok(&["user", "add", "root:root-pw-77e2"]);
    etcd.ctl_ok(&["user", "add", &format!("runbook:{PASSWORD}")]);
    etcd.ctl_ok(&["role", "add", "journal"]);
    etcd.ctl_ok(&[
        "role",
        "grant-permission",
        "journal",
        "readwrite",
        "--prefix=true",
        "/tls-journal",
    ]);
    etcd.ctl_ok(&["user", "grant-role", "runbook", "journal"]);
    etcd.ctl_ok(&["user", "grant-role", "root", "root"]);
    etcd.ctl_ok(&["auth", "enable"]);
    etcd.tls = Some((pki.clone(), Some("root:root-pw-77e2".into())));

    let url = format!("etcd://127.0.0.1:{}/tls-journal", etcd.port);
    let state = sb.path().join("state");
    let cmd = |args: &[&str], password: &str, cert: bool| {
        let mut all = vec!["--journal", url.as_str(), "--etcd-cacert"];
        all.push(pki.ca.to_str().expect("utf-8"));
        if cert {
            all.extend([
                "--etcd-cert",
                pki.client_cert.to_str().expect("utf-8"),
                "--etcd-key",
                pki.client_key.to_str().expect("utf-8"),
            ]);
        }
        all.extend_from_slice(args);
        sb.cmd(&all)
            .env("XDG_STATE_HOME", &state)
            .env("ETCDCTL_USER", "runbook")
            .env("ETCDCTL_PASSWORD", password)
    };
    sb.write("gated.yaml", GATED);

    let mut said = String::new();
    let out = cmd(&["run", "gated.yaml"], PASSWORD, true).code(3);
    said += &out.stdout;
    said += &out.stderr;
    let history = cmd(&["history", "--output", "json"], PASSWORD, true).ok();
    let run = history
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find_map(|v| v["id"].as_str().map(str::to_owned))
        .expect("the run in the journal");
    let approved = cmd(&["approve", &run, "--as", "alice"], PASSWORD, true).ok();
    said += &approved.stdout;
    said += &approved.stderr;
    assert_eq!(sb.read("out.txt"), "one\ntwo\nthree\n");

    // What etcd holds, read as root: the run's records, its gate decided by alice.
    let stored = etcd.get_prefix(&format!("/tls-journal/runs/{run}/e/"));
    let events: Vec<Value> = stored
        .iter()
        .map(|(_, v)| serde_json::from_slice::<Value>(&v[5..]).expect("a record"))
        .collect();
    assert_eq!(
        events.first().map(|r| r["event"].clone()),
        Some("run_started".into())
    );
    assert!(
        events
            .iter()
            .any(|r| r["event"] == "gate_decided" && r["by"] == "alice"),
        "{events:?}"
    );
    let last = events.last().expect("records");
    assert_eq!(
        (&last["event"], &last["state"]),
        (&Value::from("state_changed"), &Value::from("succeeded")),
        "{last}"
    );

    // Refusals that say what is wrong.
    let wrong = cmd(&["status", &run], "not-the-password", true).run();
    assert_ne!(wrong.code(), Some(0));
    assert!(
        wrong.stderr.contains("authentication failed"),
        "{}",
        wrong.explain("a wrong password is refused, saying so")
    );
    let no_cert = cmd(&["status", &run], PASSWORD, false).run();
    assert_ne!(no_cert.code(), Some(0));
    assert!(
        no_cert.stderr.contains(&format!(
            "etcd at 127.0.0.1:{} failed to connect over TLS without a client certificate",
            etcd.port
        )),
        "{}",
        no_cert.explain("without a client certificate the cluster is not reached")
    );

    // The password is nowhere.
    let everything = etcd.get_prefix("/");
    assert!(
        !everything
            .iter()
            .any(|(k, v)| k.contains(PASSWORD) || String::from_utf8_lossy(v).contains(PASSWORD)),
        "the password went into etcd"
    );
    for out in [&history, &wrong, &no_cert] {
        said += &out.stdout;
        said += &out.stderr;
    }
    assert!(
        !said.contains(PASSWORD),
        "the password was printed:\n{said}"
    );
}
