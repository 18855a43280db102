//! The rotation runbooks of the library, each against real servers: `rotate-signing-key`,
//! `rotate-credential` and `rotate-mtls` against a real OpenBao 2.7.2 node (transit, `AppRole`,
//! PKI), `rotate-mtls` with a real PostgreSQL 15 that checks client certificates, and
//! `rotate-mek` against OpenBao transit and a real Cassandra 5.0 node holding the wrapped keys.
//! What a test concludes is read from the servers — OpenBao's own verify, login, decrypt and key
//! APIs, `cqlsh`, `psql` handshakes — never from the runbook's output.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::clusters::{Cluster, http, testbed};
use crate::support::{Sandbox, wait_for};

/// A single OpenBao node and its root token.
struct Bao {
    /// Held so that the node lives as long as the test.
    _cluster: Cluster,
    addr: String,
    root: String,
}

impl Bao {
    fn start() -> Self {
        let cluster = Cluster::openbao_single("2.7.2");
        let addr = cluster.var("BAO_ADDR_1");
        let root = cluster.json("init.json")["root_token"]
            .as_str()
            .expect("root token")
            .to_owned();
        Self {
            _cluster: cluster,
            addr,
            root,
        }
    }

    /// A request with `token` (none when empty); OpenBao's answer or its error status and body.
    fn request(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: &Value,
    ) -> Result<Value, (u16, String)> {
        let url = format!("{}/v1/{path}", self.addr);
        let mut request = http().request(method, &url);
        if !token.is_empty() {
            request = request.set("X-Vault-Token", token);
        }
        let response = if body.is_null() {
            request.call()
        } else {
            request.send_json(body.clone())
        };
        match response {
            Ok(r) => Ok(r.into_json().unwrap_or(Value::Null)),
            Err(ureq::Error::Status(code, r)) => Err((code, r.into_string().unwrap_or_default())),
            Err(e) => Err((0, format!("{method} {url}: {e}"))),
        }
    }

    /// A request as root; panics unless OpenBao answers 2xx.
    fn call(&self, method: &str, path: &str, body: &Value) -> Value {
        self.request(&self.root, method, path, body)
            .unwrap_or_else(|(code, e)| panic!("{method} {path}: {code} {e}"))
    }

    /// A `runbook` command with the root token in `BAO_TOKEN`.
    fn runbook(&self, sb: &Sandbox, args: &[&str]) -> crate::support::Cmd {
        sb.cmd(args).env("BAO_TOKEN", &self.root)
    }
}

/// The run's records as the follow mirror has them so far (the run may still be going).
fn mirrored(sb: &Sandbox) -> Vec<Value> {
    let Ok(dir) = std::fs::read_dir(sb.journal().join("follow")) else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .flat_map(|t| {
            t.lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn sigkill(child: &mut Child) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid")),
        nix::sys::signal::SIGKILL,
    )
    .expect("SIGKILL");
    let _ = child.wait();
}

fn assert_clean(what: &str, haystack: &str, secrets: &[&str]) {
    for s in secrets {
        assert!(
            !haystack.contains(s),
            "{what} holds a secret in clear ({s})"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// rotate-signing-key

const TOKEN_CLAIMS: &str = "eyJzdWIiOiJhbGljZSIsImV4cCI6MTcwMDAwMDAwMH0=";

/// OpenBao's verdict on a signature of `TOKEN_CLAIMS`: `Ok(valid)`, or the refusal's text.
fn verify(bao: &Bao, signature: &str) -> Result<bool, String> {
    bao.request(
        &bao.root,
        "POST",
        "transit/verify/tokens",
        &json!({"input": TOKEN_CLAIMS, "signature": signature}),
    )
    .map(|v| v["data"]["valid"] == true)
    .map_err(|(code, body)| format!("{code} {body}"))
}

fn sign(bao: &Bao, version: Option<u64>) -> Result<String, String> {
    let mut body = json!({"input": TOKEN_CLAIMS});
    if let Some(v) = version {
        body["key_version"] = json!(v);
    }
    bao.request(&bao.root, "POST", "transit/sign/tokens", &body)
        .map(|v| {
            v["data"]["signature"]
                .as_str()
                .expect("signature")
                .to_owned()
        })
        .map_err(|(code, body)| format!("{code} {body}"))
}

#[test]
fn rotate_signing_key_old_tokens_verify_during_the_overlap_and_are_refused_after_retirement() {
    let bao = Bao::start();
    bao.call("POST", "sys/mounts/transit", &json!({"type": "transit"}));
    bao.call("POST", "transit/keys/tokens", &json!({"type": "ed25519"}));
    // A token issued before the rotation, by version 1.
    let old_token = sign(&bao, None).expect("sign");
    assert!(old_token.starts_with("vault:v1:"), "{old_token}");

    let sb = Sandbox::new();
    let addr = format!("addr={}", bao.addr);
    let args = [
        "run",
        "rotate-signing-key",
        "-p",
        &addr,
        "-p",
        "key=tokens",
        "-p",
        "max_token_ttl=6s",
        "-p",
        "retirement_window=2s",
    ];
    let mut child = bao.runbook(&sb, &args).spawn();
    wait_for(
        "the overlap timer to start",
        Duration::from_secs(60),
        || {
            mirrored(&sb)
                .iter()
                .any(|r| r["event"] == "step_started" && r["path"] == "overlap")
        },
    );

    // The overlap, read from OpenBao: the old token still verifies, new tokens come from
    // version 2, and version 1 signs nothing any more.
    assert_eq!(
        verify(&bao, &old_token),
        Ok(true),
        "the old token during the overlap"
    );
    let new_token = sign(&bao, None).expect("sign during the overlap");
    assert!(new_token.starts_with("vault:v2:"), "{new_token}");
    let refused = sign(&bao, Some(1)).expect_err("signing with version 1 during the overlap");
    assert!(
        refused.contains("minimum encryption key version"),
        "{refused}"
    );

    // The executor dies in the middle of the overlap; the resumed run wakes at the journaled
    // time and goes on from there.
    sigkill(&mut child);
    let run = sb.only_run();
    assert_eq!(
        verify(&bao, &old_token),
        Ok(true),
        "still the overlap after the kill"
    );
    let out = bao.runbook(&sb, &["resume", &run]).ok();
    assert_eq!(sb.status(&run)["state"], "succeeded", "{}", out.stdout);

    // After: version 1 is retired (its token is refused by OpenBao's verify) and purged, the
    // key was rotated exactly once, and the new token verifies.
    let refused = verify(&bao, &old_token).expect_err("the old token after retirement");
    assert!(refused.contains("disallowed by policy"), "{refused}");
    assert_eq!(
        verify(&bao, &new_token),
        Ok(true),
        "the new token after retirement"
    );
    let key = bao.call("GET", "transit/keys/tokens", &Value::Null)["data"].clone();
    assert_eq!(key["latest_version"], 2, "rotated exactly once: {key}");
    assert_eq!(key["min_decryption_version"], 2, "{key}");
    assert_eq!(key["min_available_version"], 2, "{key}");
    let versions: Vec<&String> = key["keys"].as_object().expect("keys").keys().collect();
    assert_eq!(versions, ["2"], "version 1 purged: {key}");

    // The overlap lasted at least max_token_ttl: the journaled timer, across the kill.
    let records = sb.records(&run);
    let at = |event: &str, path: &str| {
        records
            .iter()
            .find(|r| r["event"] == event && r["path"] == path)
            .and_then(|r| r["at"].as_str())
            .map_or_else(|| panic!("no {event} of {path}"), str::to_owned)
    };
    let started = at("step_started", "overlap");
    let retired = at("step_started", "retire");
    let seconds = |t: &str| {
        let out = Command::new("date")
            .args(["-d", t, "+%s.%N"])
            .output()
            .expect("date");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<f64>()
            .expect("seconds")
    };
    assert!(
        seconds(&retired) - seconds(&started) >= 6.0,
        "retired at {retired}, the overlap started at {started}"
    );
}

// ---------------------------------------------------------------------------------------------
// rotate-credential

fn login(bao: &Bao, role_id: &str, secret_id: &str) -> Result<String, (u16, String)> {
    bao.request(
        "",
        "POST",
        "auth/approle/login",
        &json!({"role_id": role_id, "secret_id": secret_id}),
    )
    .map(|v| {
        v["auth"]["client_token"]
            .as_str()
            .expect("client token")
            .to_owned()
    })
}

/// OpenBao with KV v2 (`secret/data/app/config`), a policy reading it and the `AppRole` role
/// `app` holding that policy; the role's id.
fn approle_bao() -> (Bao, String) {
    let bao = Bao::start();
    bao.call(
        "POST",
        "sys/mounts/secret",
        &json!({"type": "kv", "options": {"version": "2"}}),
    );
    wait_for("KV v2 to take a write", Duration::from_secs(15), || {
        bao.request(
            &bao.root,
            "POST",
            "secret/data/app/config",
            &json!({"data": {"dsn": "postgres://app@db/app"}}),
        )
        .is_ok()
    });
    bao.call(
        "PUT",
        "sys/policies/acl/app",
        &json!({"policy": "path \"secret/data/app/*\" { capabilities = [\"read\"] }"}),
    );
    bao.call("POST", "sys/auth/approle", &json!({"type": "approle"}));
    bao.call(
        "POST",
        "auth/approle/role/app",
        &json!({"token_policies": ["app"], "token_ttl": "5m"}),
    );
    let role_id = bao.call("GET", "auth/approle/role/app/role-id", &Value::Null)["data"]["role_id"]
        .as_str()
        .expect("role id")
        .to_owned();
    (bao, role_id)
}

/// A secret-id minted the usual way (`role/app/secret-id`).
fn mint(bao: &Bao) -> String {
    bao.call("POST", "auth/approle/role/app/secret-id", &Value::Null)["data"]["secret_id"]
        .as_str()
        .expect("secret id")
        .to_owned()
}

/// How many secret-ids the role `app` holds.
fn secret_ids(bao: &Bao) -> usize {
    bao.call("LIST", "auth/approle/role/app/secret-id", &Value::Null)["data"]["keys"]
        .as_array()
        .map_or(0, Vec::len)
}

#[test]
fn rotate_credential_moves_the_client_to_a_new_secret_id_and_the_old_one_is_refused() {
    let (bao, role_id) = approle_bao();
    let old = mint(&bao);
    login(&bao, &role_id, &old).expect("the old secret-id logs in before the rotation");

    // The client: reads its secret-id from a file, logs in and reads its configuration.
    let sb = Sandbox::new();
    let file = sb.write("client/secret-id", &format!("{old}\n"));
    let client = format!(
        "curl -sf -X POST {addr}/v1/auth/approle/login -d \"{{\\\"role_id\\\":\\\"{role_id}\\\",\\\"secret_id\\\":\\\"$(cat {file})\\\"}}\" | \
         sed -n 's/.*\"client_token\":\"\\([^\"]*\\)\".*/\\1/p' > {dir}/client-token && \
         curl -sf -H \"X-Vault-Token: $(cat {dir}/client-token)\" {addr}/v1/secret/data/app/config > {dir}/client-read",
        addr = bao.addr,
        file = file.display(),
        dir = sb.path().display(),
    );
    let args = [
        "run".to_owned(),
        "rotate-credential".to_owned(),
        "-p".to_owned(),
        format!("addr={}", bao.addr),
        "-p".to_owned(),
        "role=app".to_owned(),
        "-p".to_owned(),
        format!("secret_id_file={}", file.display()),
        "-p".to_owned(),
        "verify_path=secret/data/app/config".to_owned(),
        "-p".to_owned(),
        format!("verify_command={client}"),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = bao.runbook(&sb, &args).ok();

    // The client's file holds a new secret-id of the same role, which logs in and reads.
    let new = std::fs::read_to_string(&file).expect("client file");
    let new = new.trim();
    assert_ne!(new, old, "the client was moved to a new secret-id");
    let token = login(&bao, &role_id, new).expect("a login with the new secret-id");
    let read = bao
        .request(&token, "GET", "secret/data/app/config", &Value::Null)
        .expect("the new credential reads the client's secret");
    assert_eq!(read["data"]["data"]["dsn"], "postgres://app@db/app");
    assert!(
        sb.read("client-read").contains("postgres://app@db/app"),
        "the client's own check ran with the new credential"
    );
    // The old one is refused by a real login; the role holds one secret-id: the new one.
    let (code, body) = login(&bao, &role_id, &old).expect_err("a login with the old secret-id");
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("invalid role or secret ID"), "{body}");
    assert_eq!(secret_ids(&bao), 1, "no secret-id left behind");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&file).expect("stat").permissions(),
    );
    assert_eq!(mode & 0o077, 0, "the secret-id file is the owner's only");
    assert!(!Path::new(&format!("{}.previous", file.display())).exists());
    assert!(!Path::new(&format!("{}.next", file.display())).exists());

    // Neither secret-id reached the journal or the terminal.
    let journal = String::from_utf8_lossy(&sb.journal_bytes()).into_owned();
    assert_clean("the journal", &journal, &[&old, new]);
    assert_clean(
        "the output",
        &format!("{}{}", out.stdout, out.stderr),
        &[&old, new],
    );
}

#[test]
fn rotate_credential_killed_after_any_commit_and_resumed_leaves_one_working_secret_id() {
    let (bao, role_id) = approle_bao();
    let addr = format!("addr={}", bao.addr);
    let mut ends = 0;
    // Killed after commit 1, 2, … until a run ends before its kill: every place a crash can
    // stop it, each time a fresh client and journal.
    for kill in 1..=60 {
        let old = mint(&bao);
        let sb = Sandbox::new();
        let file = sb.write("client/secret-id", &format!("{old}\n"));
        let file_param = format!("secret_id_file={}", file.display());
        let args = [
            "run",
            "rotate-credential",
            "-p",
            &addr,
            "-p",
            "role=app",
            "-p",
            &file_param,
        ];
        let out = bao
            .runbook(&sb, &args)
            .env("RUNBOOK_TEST_KILL_AFTER_COMMIT", kill.to_string())
            .run();
        if out.code() == Some(0) {
            ends = kill;
            break;
        }
        assert_eq!(
            out.signal(),
            Some(9),
            "{}",
            out.explain(&format!("killed after commit {kill}"))
        );
        let history = sb.cmd(&["history", "--output", "json"]).ok();
        if history.stdout.trim().is_empty() {
            // Killed before the run was journaled: nothing to resume, nothing done.
            assert_eq!(std::fs::read_to_string(&file).expect("file").trim(), old);
            bao.call(
                "POST",
                "auth/approle/role/app/secret-id/destroy",
                &json!({"secret_id": old}),
            );
            continue;
        }
        let run = sb.only_run();
        let resumed = bao.runbook(&sb, &["resume", &run]).run();
        let state = sb.status(&run)["state"].clone();
        assert_eq!(
            state,
            "succeeded",
            "{}",
            resumed.explain(&format!("the resume after a kill after commit {kill}"))
        );
        // One secret-id for the role — the client's new one, which logs in — and the old
        // one refused: nothing minted twice, nothing left behind.
        let new = std::fs::read_to_string(&file).expect("file");
        let new = new.trim();
        assert_ne!(new, old, "kill {kill}: the client was not moved");
        login(&bao, &role_id, new).unwrap_or_else(|e| panic!("kill {kill}: new login {e:?}"));
        let (code, _) = login(&bao, &role_id, &old).expect_err("the old secret-id");
        assert_eq!(code, 400, "kill {kill}: the old secret-id");
        assert_eq!(secret_ids(&bao), 1, "kill {kill}: secret-ids of the role");
        for leftover in [".previous", ".next", ".tmp"] {
            assert!(
                !Path::new(&format!("{}{leftover}", file.display())).exists(),
                "kill {kill}: {leftover} left behind"
            );
        }
        // The next round starts from this client's credential, as the only one.
        bao.call(
            "POST",
            "auth/approle/role/app/secret-id/destroy",
            &json!({"secret_id": new}),
        );
    }
    assert!(ends > 5, "the run ended after only {ends} commits");
}

// ---------------------------------------------------------------------------------------------
// rotate-mtls

/// A PostgreSQL server (`testbeds/postgres.sh`, as `tests/sql.rs` makes it) that takes logins
/// of `app` over TLS only, by client certificate (`hostssl … cert`), checked against `trust.pem`.
struct Postgres {
    pg: crate::sql::Postgres,
}

impl Postgres {
    fn start(trust: &str) -> Self {
        let pg = Self {
            pg: crate::sql::Postgres::create(),
        };
        let data = PathBuf::from(pg.var("PGDATA"));
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(&data)
                .output()
                .expect("openssl");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
        ]);
        let trust_file = pg.trust_file();
        std::fs::write(&trust_file, trust).expect("trust file");
        for (file, mode) in [("server.key", 0o600), ("server.crt", 0o644)] {
            let path = data.join(file);
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(mode))
                .expect("chmod");
            let owner = Command::new("chown")
                .arg(format!("{}:", pg.var("PG_OS_USER")))
                .arg(&path)
                .status()
                .expect("chown");
            assert!(owner.success());
        }
        let hba = data.join("pg_hba.conf");
        let old = std::fs::read_to_string(&hba).expect("pg_hba.conf");
        std::fs::write(
            &hba,
            format!(
                "hostssl all app 127.0.0.1/32 cert\nhostnossl all app 127.0.0.1/32 reject\n{old}"
            ),
        )
        .expect("pg_hba.conf");
        pg.psql("CREATE ROLE app LOGIN");
        pg.psql("ALTER SYSTEM SET ssl = on");
        pg.psql(&format!(
            "ALTER SYSTEM SET ssl_ca_file = '{}'",
            trust_file.display()
        ));
        pg.psql("SELECT pg_reload_conf()");
        wait_for("the server to take TLS on", Duration::from_secs(10), || {
            pg.psql("SHOW ssl") == "on"
        });
        pg
    }

    fn var(&self, key: &str) -> &str {
        self.pg.var(key)
    }

    fn psql_bin(&self) -> String {
        format!("{}/psql", self.var("PG_BINDIR"))
    }

    /// The trust file: beside the data directory, readable by the server's user.
    fn trust_file(&self) -> PathBuf {
        self.pg.dir().join("client-ca.pem")
    }

    /// `psql -At` as the superuser.
    fn psql(&self, sql: &str) -> String {
        self.pg.psql("postgres", sql)
    }

    /// A real TLS login as `app` with a client certificate: what the server says of the
    /// connection (`pg_stat_ssl`: the client's DN and its issuer's DN), or psql's error.
    fn login_with(&self, cert: &Path, key: &Path) -> Result<String, String> {
        let conninfo = format!(
            "host=127.0.0.1 port={} dbname=postgres user=app sslmode=require sslcert={} sslkey={}",
            self.var("PGPORT"),
            cert.display(),
            key.display()
        );
        let out = Command::new(self.psql_bin())
            .args(["-X", "-At", &conninfo, "-c"])
            .arg("SELECT client_dn || ' by ' || issuer_dn FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .output()
            .expect("psql");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// The conninfo of `handshake_command`, with the runbook's `$CERT_FILE`/`$KEY_FILE`.
    fn handshake_command(&self) -> String {
        format!(
            "{} -X -At \"host=127.0.0.1 port={} dbname=postgres user=app sslmode=require sslcert=$CERT_FILE sslkey=$KEY_FILE\" -c 'select 1'",
            self.psql_bin(),
            self.var("PGPORT")
        )
    }
}

/// OpenBao with a PKI mount (root issuer `clients-2025`, role `client`), PostgreSQL trusting
/// that issuer for `app`, and the client's certificate and key from it (in `client`).
fn mtls_setup() -> (Bao, Postgres, Sandbox, PathBuf, PathBuf) {
    let bao = Bao::start();
    bao.call(
        "POST",
        "sys/mounts/pki",
        &json!({"type": "pki", "config": {"max_lease_ttl": "87600h"}}),
    );
    let old_root = bao.call(
        "POST",
        "pki/root/generate/internal",
        &json!({"common_name": "clients 2025", "issuer_name": "clients-2025", "ttl": "8760h", "key_type": "ec"}),
    )["data"]["certificate"]
        .as_str()
        .expect("old root")
        .to_owned();
    bao.call(
        "POST",
        "pki/roles/client",
        &json!({"allow_any_name": true, "client_flag": true, "server_flag": false, "max_ttl": "72h", "key_type": "ec"}),
    );
    let pg = Postgres::start(&format!("{old_root}\n"));

    // The client's certificate from the old issuer, accepted before the rotation.
    let client = Sandbox::new();
    let issued = bao.call(
        "POST",
        "pki/issue/client",
        &json!({"common_name": "app", "ttl": "24h"}),
    )["data"]
        .clone();
    let cert = client.write(
        "client/app.crt",
        &format!("{}\n", issued["certificate"].as_str().expect("cert")),
    );
    let key = client.write(
        "client/app.key",
        &format!("{}\n", issued["private_key"].as_str().expect("key")),
    );
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    assert_eq!(
        pg.login_with(&cert, &key),
        Ok("/CN=app by /CN=clients 2025".into())
    );

    (bao, pg, client, cert, key)
}

/// The parameters of `rotate-mtls` for this testbed, to a new issuer `new_issuer`.
fn mtls_args(bao: &Bao, pg: &Postgres, cert: &Path, key: &Path, new_issuer: &str) -> Vec<String> {
    let reload = format!(
        "{} -X -At -h 127.0.0.1 -p {} -U postgres -c 'select pg_reload_conf()'",
        pg.psql_bin(),
        pg.var("PGPORT")
    );
    [
        "run".to_owned(),
        "rotate-mtls".to_owned(),
        "-p".to_owned(),
        format!("addr={}", bao.addr),
        "-p".to_owned(),
        format!("new_issuer={new_issuer}"),
        "-p".to_owned(),
        format!("new_issuer_common_name={}", new_issuer.replace('-', " ")),
        "-p".to_owned(),
        "role=client".to_owned(),
        "-p".to_owned(),
        "common_name=app".to_owned(),
        "-p".to_owned(),
        "cert_ttl=24h".to_owned(),
        "-p".to_owned(),
        format!("cert_file={}", cert.display()),
        "-p".to_owned(),
        format!("key_file={}", key.display()),
        "-p".to_owned(),
        format!("trust_file={}", pg.trust_file().display()),
        "-p".to_owned(),
        format!("server_reload_command={reload}"),
        "-p".to_owned(),
        format!("handshake_command={}", pg.handshake_command()),
    ]
    .into()
}

/// Copies of the client's certificate and key as they are now.
fn keep_copy(sb: &Sandbox, cert: &Path, key: &Path, dir: &str) -> (PathBuf, PathBuf) {
    let c = sb.write(
        &format!("{dir}/app.crt"),
        &std::fs::read_to_string(cert).expect("cert"),
    );
    let k = sb.write(
        &format!("{dir}/app.key"),
        &std::fs::read_to_string(key).expect("key"),
    );
    std::fs::set_permissions(&k, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    (c, k)
}

#[test]
fn rotate_mtls_cuts_over_to_a_new_issuer_and_the_old_certificate_is_rejected_in_a_real_handshake() {
    let (bao, pg, client, cert, key) = mtls_setup();
    let (old_cert, old_key) = keep_copy(&client, &cert, &key, "old");
    let sb = Sandbox::new();
    let args = mtls_args(&bao, &pg, &cert, &key, "clients-2026");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = bao.runbook(&sb, &args).ok();

    // Real handshakes with the server: the installed certificate is from the new issuer and
    // accepted; the old one is rejected.
    assert_eq!(
        pg.login_with(&cert, &key),
        Ok("/CN=app by /CN=clients 2026".into()),
        "the new certificate after the cutover"
    );
    let refused = pg
        .login_with(&old_cert, &old_key)
        .expect_err("the old certificate after the overlap");
    assert!(
        refused.contains("certificate") || refused.contains("unknown ca"),
        "{refused}"
    );
    // The server trusts the new issuer alone, as OpenBao has it, and it is the mount's default.
    let new_root = bao.call("GET", "pki/issuer/clients-2026", &Value::Null)["data"].clone();
    let trusted = std::fs::read_to_string(pg.trust_file()).expect("trust file");
    assert_eq!(
        trusted.trim(),
        new_root["certificate"].as_str().expect("cert").trim()
    );
    let issuers = bao.call("GET", "pki/config/issuers", &Value::Null);
    assert_eq!(issuers["data"]["default"], new_root["issuer_id"]);
    // The private key never left the client's file: not in the journal, not on the terminal.
    let private_key = std::fs::read_to_string(&key).expect("key");
    let body: String = private_key
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let journal = String::from_utf8_lossy(&sb.journal_bytes()).into_owned();
    for line in private_key.lines().filter(|l| !l.starts_with("-----")) {
        assert_clean("the journal", &journal, &[line]);
        assert_clean("the output", &out.stdout, &[line]);
    }
    assert!(!body.is_empty());
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&key).expect("stat").permissions(),
    );
    assert_eq!(mode & 0o077, 0, "the key file is the owner's only");
}

#[test]
fn rotate_mtls_killed_after_any_commit_and_resumed_cuts_over_exactly_once() {
    let (bao, pg, client, cert, key) = mtls_setup();
    let mut ends = 0;
    // Killed after commit 1, 2, … until a run ends before its kill; each round rotates from
    // the issuer the round before left in place (`clients-K`).
    for kill in 1..=80 {
        let issuer = format!("clients-{kill}");
        let (old_cert, old_key) = keep_copy(&client, &cert, &key, &format!("round-{kill}"));
        let sb = Sandbox::new();
        let args = mtls_args(&bao, &pg, &cert, &key, &issuer);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = bao
            .runbook(&sb, &args)
            .env("RUNBOOK_TEST_KILL_AFTER_COMMIT", kill.to_string())
            .run();
        if out.code() != Some(0) {
            assert_eq!(
                out.signal(),
                Some(9),
                "{}",
                out.explain(&format!("killed after commit {kill}"))
            );
            if sb
                .cmd(&["history", "--output", "json"])
                .ok()
                .stdout
                .trim()
                .is_empty()
            {
                // Killed before the run was journaled: nothing done; the next round goes on.
                continue;
            }
            let run = sb.only_run();
            let resumed = bao.runbook(&sb, &["resume", &run]).run();
            assert_eq!(
                sb.status(&run)["state"],
                "succeeded",
                "{}",
                resumed.explain(&format!("the resume after a kill after commit {kill}"))
            );
        }
        // Real handshakes: the client's certificate is from this round's issuer and accepted,
        // the one before it rejected; the server trusts this issuer alone, made once.
        let cn = issuer.replace('-', " ");
        assert_eq!(
            pg.login_with(&cert, &key),
            Ok(format!("/CN=app by /CN={cn}")),
            "kill {kill}: the new certificate"
        );
        let refused = pg
            .login_with(&old_cert, &old_key)
            .expect_err("the certificate before the rotation");
        assert!(
            refused.contains("certificate") || refused.contains("unknown ca"),
            "kill {kill}: {refused}"
        );
        let issuers = bao.call("LIST", "pki/issuers", &Value::Null)["data"]["key_info"].clone();
        let named = issuers
            .as_object()
            .expect("issuers")
            .values()
            .filter(|i| i["issuer_name"] == issuer.as_str())
            .count();
        assert_eq!(named, 1, "kill {kill}: issuers named {issuer}: {issuers}");
        let new_root =
            bao.call("GET", &format!("pki/issuer/{issuer}"), &Value::Null)["data"]["certificate"]
                .clone();
        let trusted = std::fs::read_to_string(pg.trust_file()).expect("trust file");
        assert_eq!(
            trusted.trim(),
            new_root.as_str().expect("cert").trim(),
            "kill {kill}"
        );
        for leftover in [".previous", ".next", ".tmp"] {
            for f in [&cert, &key] {
                assert!(
                    !Path::new(&format!("{}{leftover}", f.display())).exists(),
                    "kill {kill}: {}{leftover} left behind",
                    f.display()
                );
            }
        }
        if out.code() == Some(0) {
            ends = kill;
            break;
        }
    }
    assert!(ends > 10, "the run ended after only {ends} commits");
}

// ---------------------------------------------------------------------------------------------
// rotate-mek

/// The password of the role `ops` the runbook logs in to Cassandra as.
const CASSANDRA_PASSWORD: &str = "cql-Rotate-9d1e";

/// How many namespace keys the table holds.
const NAMESPACES: usize = 40;

/// The rows of a `SELECT JSON …`, as cqlsh prints them, logged in as the superuser.
fn select_json(cluster: &Cluster, cql: &str) -> Vec<Value> {
    testbed("cassandra.sh", &["cqlsh", cluster.path(), "-e", cql])
        .lines()
        .filter_map(|l| l.trim().strip_prefix('{').map(|rest| format!("{{{rest}")))
        .map(|l| serde_json::from_str(&l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

/// A namespace key's row as Cassandra holds it.
struct Nek {
    wrapped: String,
    /// The row's own count of rewraps (the runbook sets it to the count it read plus one).
    rewraps: i64,
    /// When the wrapped key was last written (`writetime`, microseconds): a second write of
    /// the same value would move it.
    written: i64,
}

/// Every namespace key row, by namespace.
fn nek_rows(cluster: &Cluster) -> BTreeMap<String, Nek> {
    select_json(
        cluster,
        "SELECT JSON namespace, wrapped_key, rewraps, writetime(wrapped_key) AS written \
         FROM ess.namespace_keys",
    )
    .into_iter()
    .map(|r| {
        (
            r["namespace"].as_str().expect("namespace").to_owned(),
            Nek {
                wrapped: r["wrapped_key"].as_str().expect("wrapped key").to_owned(),
                rewraps: r["rewraps"].as_i64().expect("rewraps"),
                written: r["written"].as_i64().expect("writetime"),
            },
        )
    })
    .collect()
}

#[test]
fn rotate_mek_killed_in_the_middle_of_the_rewrap_resumes_without_rewrapping_a_key_twice_or_losing_one()
 {
    let cassandra = Cluster::cassandra(&["--auth"]);
    let bao = Bao::start();
    bao.call("POST", "sys/mounts/transit", &json!({"type": "transit"}));
    bao.call("POST", "transit/keys/mek", &json!({}));

    // NEKs as ESS makes them: data keys of the MEK, stored wrapped; the plaintexts stay here.
    let mut plaintexts = BTreeMap::new();
    let mut statements = vec![
        format!("CREATE ROLE ops WITH PASSWORD = '{CASSANDRA_PASSWORD}' AND LOGIN = true AND SUPERUSER = true;"),
        "CREATE KEYSPACE ess WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1};".to_owned(),
        "CREATE TABLE ess.namespace_keys (namespace text PRIMARY KEY, wrapped_key text, rewraps int);".to_owned(),
    ];
    for i in 0..NAMESPACES {
        let key = bao.call("POST", "transit/datakey/plaintext/mek", &json!({}))["data"].clone();
        let ns = format!("ns-{i:02}");
        plaintexts.insert(
            ns.clone(),
            key["plaintext"].as_str().expect("plaintext").to_owned(),
        );
        statements.push(format!(
            "INSERT INTO ess.namespace_keys (namespace, wrapped_key, rewraps) VALUES ('{ns}', '{}', 0);",
            key["ciphertext"].as_str().expect("ciphertext")
        ));
    }
    testbed(
        "cassandra.sh",
        &["cqlsh", cassandra.path(), "-e", &statements.join("\n")],
    );
    let before = nek_rows(&cassandra);
    assert_eq!(before.len(), NAMESPACES);
    assert!(
        before
            .values()
            .all(|k| k.wrapped.starts_with("vault:v1:") && k.rewraps == 0)
    );

    let sb = Sandbox::new();
    let addr = format!("addr={}", bao.addr);
    let hosts = format!("hosts=127.0.0.1:{}", cassandra.var("CQL_PORT_1"));
    let args = [
        "run",
        "rotate-mek",
        "-p",
        &addr,
        "-p",
        &hosts,
        "-p",
        "keyspace=ess",
        "-p",
        "consistency=ONE",
    ];
    let runbook = |sb: &Sandbox, args: &[&str]| {
        bao.runbook(sb, args)
            .env("CASSANDRA_USER", "ops")
            .env("CASSANDRA_PASSWORD", CASSANDRA_PASSWORD)
    };
    let mut child = runbook(&sb, &args).spawn();
    // SIGKILL once a few keys are written back, with the loop in full swing.
    wait_for(
        "eight keys to be rewrapped",
        Duration::from_secs(120),
        || {
            mirrored(&sb)
                .iter()
                .filter(|r| {
                    r["event"] == "step_succeeded"
                        && r["path"]
                            .as_str()
                            .is_some_and(|p| p.starts_with("rewrap[") && p.ends_with("].write"))
                })
                .count()
                >= 8
        },
    );
    sigkill(&mut child);
    let run = sb.only_run();
    assert_eq!(sb.status(&run)["state"], "running", "killed mid-run");
    let at_kill = nek_rows(&cassandra);
    let rewrapped = at_kill
        .values()
        .filter(|k| k.wrapped.starts_with("vault:v2:"))
        .count();
    assert!(
        (8..NAMESPACES).contains(&rewrapped),
        "the kill came in the middle of the rewrap: {rewrapped} of {NAMESPACES} rewrapped"
    );
    let key = bao.call("GET", "transit/keys/mek", &Value::Null)["data"].clone();
    assert_eq!(
        key["min_decryption_version"], 1,
        "nothing retired at the kill: {key}"
    );

    // While the executor is down, the last namespace (its iteration not started) is deleted:
    // the resumed run passes over it.
    let last = NAMESPACES - 1;
    assert!(
        !sb.records(&run).iter().any(|r| r["path"]
            .as_str()
            .is_some_and(|p| p.starts_with(&format!("rewrap[{last}]")))),
        "the last namespace's iteration had not started at the kill"
    );
    let deleted = format!("ns-{last:02}");
    testbed(
        "cassandra.sh",
        &[
            "cqlsh",
            cassandra.path(),
            "-e",
            &format!("DELETE FROM ess.namespace_keys WHERE namespace = '{deleted}'"),
        ],
    );

    let out = runbook(&sb, &["resume", &run]).ok();
    assert_eq!(sb.status(&run)["state"], "succeeded", "{}", out.stdout);

    // Cassandra: every key is on version 2 and was written exactly once (the count of each
    // row), those rewrapped before the kill kept their ciphertext; the deleted one stays gone.
    let after = nek_rows(&cassandra);
    assert_eq!(after.len(), NAMESPACES - 1);
    assert!(!after.contains_key(&deleted));
    for (ns, now) in &after {
        let then = &at_kill[ns];
        assert!(
            now.wrapped.starts_with("vault:v2:"),
            "{ns} is not on version 2: {}",
            now.wrapped
        );
        assert_eq!(now.rewraps, 1, "{ns} was rewrapped {} times", now.rewraps);
        if then.wrapped.starts_with("vault:v2:") {
            assert_eq!(
                (&then.wrapped, then.written),
                (&now.wrapped, now.written),
                "{ns}, rewrapped before the kill, was written again after the resume"
            );
        } else {
            assert!(
                now.written > then.written,
                "{ns} was written after the resume"
            );
        }
    }
    // OpenBao: rotated once, the old version retired, and every NEK decrypts to the key it was.
    let key = bao.call("GET", "transit/keys/mek", &Value::Null)["data"].clone();
    assert_eq!(
        key["latest_version"], 2,
        "the MEK was rotated exactly once: {key}"
    );
    assert_eq!(key["min_decryption_version"], 2, "{key}");
    let batch: Vec<Value> = after
        .values()
        .map(|k| json!({"ciphertext": k.wrapped}))
        .collect();
    let decrypted = bao.call(
        "POST",
        "transit/decrypt/mek",
        &json!({"batch_input": batch}),
    );
    let results = decrypted["data"]["batch_results"]
        .as_array()
        .expect("batch results");
    for ((ns, _), result) in after.iter().zip(results) {
        assert_eq!(
            result["plaintext"].as_str(),
            Some(plaintexts[ns].as_str()),
            "{ns}: {result}"
        );
    }
    let (code, body) = bao
        .request(
            &bao.root,
            "POST",
            "transit/decrypt/mek",
            &json!({"ciphertext": before["ns-00"].wrapped}),
        )
        .expect_err("a version 1 ciphertext after the retirement");
    assert_eq!(code, 400, "{body}");
    // The NEKs themselves never reached the journal.
    let journal = String::from_utf8_lossy(&sb.journal_bytes()).into_owned();
    let secrets: Vec<&str> = plaintexts.values().map(String::as_str).collect();
    assert_clean("the journal", &journal, &secrets);
}
