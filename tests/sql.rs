//! The `sql` step end to end, against a real PostgreSQL server (`testbeds/postgres.sh`: Debian's
//! PostgreSQL on loopback). What a test claims about the database is read back with `psql`, as
//! an operator would check it, not from the runbook's own output.
//!
//! The tests of this file share one server, each in a database of its own; it is destroyed
//! when the last of them is done with it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::clusters::{repo, testbed};
use crate::support::{Output, Sandbox, wait_for};

/// A PostgreSQL server made by `testbeds/postgres.sh`, destroyed when dropped.
pub struct Postgres {
    dir: PathBuf,
    _tmp: tempfile::TempDir,
    env: HashMap<String, String>,
}

impl Postgres {
    /// A new server of its own (most tests share [`server`]).
    pub(crate) fn create() -> Self {
        let tmp = tempfile::Builder::new()
            .prefix("runbook-pg-")
            .tempdir_in("/tmp")
            .expect("tempdir");
        // As root the server runs as its own user, which must reach the directory.
        std::fs::set_permissions(
            tmp.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("chmod");
        let dir = tmp.path().join("pg");
        testbed(
            "postgres.sh",
            &["create", dir.to_str().expect("utf-8 path")],
        );
        let env = std::fs::read_to_string(dir.join("pg.env"))
            .expect("pg.env")
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
        Self {
            dir,
            _tmp: tmp,
            env,
        }
    }

    /// The testbed's directory (beside the data directory, readable by the server's user).
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn var(&self, key: &str) -> &str {
        self.env
            .get(key)
            .unwrap_or_else(|| panic!("{key} not in pg.env"))
    }

    pub fn port(&self) -> &str {
        self.var("PGPORT")
    }

    /// `psql -At` as the superuser on `db`; panics with psql's error if it fails.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new(format!("{}/psql", self.var("PG_BINDIR")))
            .args(["-X", "-At", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
            .args(["-p", self.port(), "-U", "postgres", "-d", db, "-c", sql])
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql -c {sql:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim_end().to_owned()
    }

    /// A fresh database for one test.
    pub fn database(&self, name: &str) -> String {
        self.psql("postgres", &format!("DROP DATABASE IF EXISTS {name}"));
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        name.to_owned()
    }

    /// Makes TCP logins of `role` check its password (the testbed trusts everyone), by
    /// putting a rule before the others in `pg_hba.conf` and reloading.
    pub fn require_password(&self, role: &str) {
        let hba = PathBuf::from(self.var("PGDATA")).join("pg_hba.conf");
        let old = std::fs::read_to_string(&hba).expect("read pg_hba.conf");
        let rule = format!("host all {role} 127.0.0.1/32 scram-sha-256\n");
        if !old.contains(&rule) {
            std::fs::write(&hba, format!("{rule}{old}")).expect("write pg_hba.conf");
        }
        assert_eq!(self.psql("postgres", "SELECT pg_reload_conf()"), "t");
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(repo().join("testbeds/postgres.sh"))
            .args(["destroy", self.dir.to_str().unwrap_or_default()])
            .output();
    }
}

/// The server of this file's tests, created by the first that needs it.
pub(crate) fn server() -> Arc<Postgres> {
    static SHARED: Mutex<Weak<Postgres>> = Mutex::new(Weak::new());
    let mut shared = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(pg) = shared.upgrade() {
        return pg;
    }
    let pg = Arc::new(Postgres::create());
    *shared = Arc::downgrade(&pg);
    pg
}

fn record<'a>(records: &'a [Value], event: &str, path: &str) -> &'a Value {
    records
        .iter()
        .rev()
        .find(|r| r["event"] == event && r["path"] == path)
        .unwrap_or_else(|| panic!("no {event} for {path} in {records:#?}"))
}

fn assert_contains(out: &Output, needle: &str) {
    assert!(
        out.stdout.contains(needle) || out.stderr.contains(needle),
        "{}",
        out.explain(&format!("expected output containing {needle:?}"))
    );
}

const LEDGER: &str = r#"
runbook: ledger
params:
  url: { type: string, required: true }
  owner: { type: string, default: ops }
steps:
  - id: setup
    sql:
      url: "{{params.url}}"
      statements:
        - "CREATE TABLE accounts (id int PRIMARY KEY, owner text NOT NULL, balance numeric(12,2) NOT NULL)"
        - { sql: "INSERT INTO accounts VALUES ($1, $2, $3)", params: [1, "{{params.owner}}", "100.50"] }
        - { sql: "INSERT INTO accounts VALUES ($1, $2, $3), ($4, $5, $6)", params: [2, "b", 7, 3, "c", 0] }
"#;

const TRANSFER: &str = r#"
runbook: transfer
params:
  url: { type: string, required: true }
steps:
  - id: move
    sql:
      url: "{{params.url}}"
      statements:
        - "UPDATE accounts SET balance = balance - 50 WHERE id = 1"
        - "INSERT INTO accounts VALUES (4, 'd', 50)"
        - "INSERT INTO accounts VALUES (1, 'duplicate', 0)"
"#;

#[test]
fn statements_run_in_one_transaction_and_a_failure_rolls_all_of_them_back() {
    let pg = server();
    let db = pg.database("ledger");
    let sb = Sandbox::new();
    sb.write("ledger.yaml", LEDGER);
    sb.write("transfer.yaml", TRANSFER);
    let url = format!("postgres://postgres@127.0.0.1:{}/{db}", pg.port());
    let param = format!("url={url}");

    let out = sb
        .cmd(&["run", "ledger.yaml", "-p", &param, "-p", "owner=it's me"])
        .ok();
    let run = sb.only_run();
    let records = sb.records(&run);
    let setup = &record(&records, "step_succeeded", "setup")["output"];
    let affected: Vec<&Value> = setup["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| &r["rows_affected"])
        .collect();
    assert_eq!(
        affected,
        [&json!(0), &json!(1), &json!(2)],
        "{}",
        out.stdout
    );
    assert_eq!(
        pg.psql(&db, "SELECT id, owner, balance FROM accounts ORDER BY id"),
        "1|it's me|100.50\n2|b|7.00\n3|c|0.00"
    );

    // The third statement fails: the update and the insert before it are undone.
    let out = sb.cmd(&["run", "transfer.yaml", "-p", &param]).code(1);
    assert_contains(
        &out,
        "FAILED move: statement 3 of 3 failed: duplicate key value violates unique constraint \
         \"accounts_pkey\" (SQLSTATE 23505): Key (id)=(1) already exists.; the transaction was \
         rolled back",
    );
    assert_eq!(
        pg.psql(&db, "SELECT id, owner, balance FROM accounts ORDER BY id"),
        "1|it's me|100.50\n2|b|7.00\n3|c|0.00",
        "the failed transaction left nothing behind"
    );
    let history = sb.cmd(&["history", "--output", "json"]).ok();
    let failed_run = history
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|r| r["runbook"] == "transfer")
        .expect("the transfer run")["id"]
        .as_str()
        .expect("an id")
        .to_owned();
    let failed_records = sb.records(&failed_run);
    let failed = &record(&failed_records, "step_failed", "move")["output"];
    assert_eq!(failed["error"]["sqlstate"], "23505", "{failed}");
    assert_eq!(failed["error"]["statement"], 3, "{failed}");
    assert_eq!(failed["rolled_back"], true, "{failed}");

    // Without a transaction, what ran before the failure stays.
    sb.write(
        "loose.yaml",
        &TRANSFER
            .replace("runbook: transfer", "runbook: loose")
            .replace("      url:", "      transaction: false\n      url:"),
    );
    sb.cmd(&["run", "loose.yaml", "-p", &param]).code(1);
    assert_eq!(
        pg.psql(&db, "SELECT id, balance FROM accounts ORDER BY id"),
        "1|50.50\n2|7.00\n3|0.00\n4|50.00"
    );
}

const TYPES: &str = r#"
runbook: types
params:
  url: { type: string, required: true }
steps:
  - id: write
    sql:
      url: "{{params.url}}"
      statements:
        - "CREATE TYPE mood AS ENUM ('calm', 'busy')"
        - >-
          CREATE TABLE sample (i2 smallint, i4 integer, i8 bigint, f4 real, f8 double precision,
          n numeric(30,10), b boolean, t text, vc varchar(12), j json, jb jsonb, u uuid,
          by bytea, ts timestamp, tstz timestamptz, d date, tm time, iv interval, ip inet,
          ints integer[], texts text[], m mood, nothing text)
        - sql: >-
            INSERT INTO sample VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13,
            $14, $15, $16, $17, $18, $19, $20, $21, $22, $23)
          params:
            - -32768
            - 2147483647
            - 9007199254740993
            - 1.5
            - 0.1
            - "12345678901234567890.1234567890"
            - true
            - "it's \"quoted\" \\ and ünïcode"
            - "short"
            - { a: [1, "x", null] }
            - { nested: { ok: true } }
            - "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
            - "AP9oaQ=="
            - "2024-05-01T12:00:00.25"
            - "2024-05-01T12:00:00.25+02:00"
            - "2024-02-29"
            - "23:59:59.5"
            - "1 year 2 months 3 days 04:05:06.5"
            - "10.1.2.3"
            - [[1, 2], [3, null]]
            - ["a,b", "{c}", null, "\"d\""]
            - calm
            - null
  - id: read
    sql: { url: "{{params.url}}", statements: "SELECT * FROM sample" }
  - id: many
    sql: { url: "{{params.url}}", statements: "SELECT generate_series(1, 25) AS n", max_rows: 10 }
  - id: unreadable
    continue_on_error: true
    sql: { url: "{{params.url}}", statements: "SELECT to_tsvector('simple', 'a b') AS doc" }
  - id: bad-param
    continue_on_error: true
    sql: { url: "{{params.url}}", statements: "SELECT $1::int AS n", params: ["seven"] }
"#;

#[test]
fn parameters_of_each_type_are_bound_and_rows_come_back_as_typed_json() {
    let pg = server();
    let db = pg.database("types");
    let sb = Sandbox::new();
    sb.write("types.yaml", TYPES);
    let url = format!("postgres://postgres@127.0.0.1:{}/{db}", pg.port());
    sb.cmd(&["run", "types.yaml", "-p", &format!("url={url}")])
        .ok();

    // What the server stored, as psql prints it.
    assert_eq!(
        pg.psql(
            &db,
            "SET TIME ZONE 'UTC'; SET intervalstyle = 'iso_8601'; SELECT i2, i4, i8, f4, f8, n, b, t, \
             vc, j, jb, u, encode(by, 'hex'), ts, tstz, d, tm, iv, ip, ints, texts, m, \
             nothing IS NULL FROM sample"
        ),
        "SET\nSET\n-32768|2147483647|9007199254740993|1.5|0.1|12345678901234567890.1234567890|t|\
         it's \"quoted\" \\ and ünïcode|short|{\"a\":[1,\"x\",null]}|{\"nested\": {\"ok\": true}}|\
         a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11|00ff6869|2024-05-01 12:00:00.25|\
         2024-05-01 10:00:00.25+00|2024-02-29|23:59:59.5|P1Y2M3DT4H5M6.5S|10.1.2.3|\
         {{1,2},{3,NULL}}|{\"a,b\",\"{c}\",NULL,\"\\\"d\\\"\"}|calm|t"
    );

    let run = sb.only_run();
    let records = sb.records(&run);
    let read = &record(&records, "step_succeeded", "read")["output"];
    assert_eq!(
        read["rows"],
        json!([{
            "i2": -32768, "i4": 2_147_483_647, "i8": 9_007_199_254_740_993_i64, "f4": 1.5,
            "f8": 0.1, "n": "12345678901234567890.1234567890", "b": true,
            "t": "it's \"quoted\" \\ and ünïcode", "vc": "short", "j": {"a": [1, "x", null]},
            "jb": {"nested": {"ok": true}}, "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "by": "AP9oaQ==", "ts": "2024-05-01T12:00:00.250",
            "tstz": "2024-05-01T10:00:00.250Z", "d": "2024-02-29", "tm": "23:59:59.500",
            "iv": "P1Y2M3DT4H5M6.5S", "ip": "10.1.2.3", "ints": [[1, 2], [3, null]],
            "texts": ["a,b", "{c}", null, "\"d\""], "m": "calm", "nothing": null,
        }]),
        "{read:#}"
    );
    assert_eq!(read["rows_affected"], 1);
    assert_eq!(
        read["results"][0]["columns"][5],
        json!({"name": "n", "type": "numeric"})
    );

    let many = &record(&records, "step_succeeded", "many")["output"];
    assert_eq!(many["rows"].as_array().map(Vec::len), Some(10), "{many}");
    assert_eq!(many["rows"][9], json!({"n": 10}));
    assert_eq!(many["rows_affected"], 25);
    assert_eq!(many["results"][0]["rows_truncated"], true);

    let unreadable = record(&records, "step_failed", "unreadable");
    assert_eq!(
        unreadable["error"],
        "the statement failed: column `doc` has type `tsvector`, which the sql step cannot \
         read; cast it in the statement, e.g. `doc::text`",
        "{unreadable}"
    );
    let bad = record(&records, "step_failed", "bad-param");
    assert_eq!(bad["output"]["error"]["sqlstate"], "22P02", "{bad}");
    assert!(
        bad["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("the statement failed: invalid input syntax for type integer: \"seven\" (SQLSTATE 22P02)")),
        "{bad}"
    );
}

const PASSWORD: &str = "pg-S3cr3t-7c1a";

const LOGIN: &str = r#"
runbook: login
params:
  port: { type: string, required: true }
  db_password: { type: string, secret: true, env: DB_PASSWORD }
steps:
  - id: fields
    sql:
      host: 127.0.0.1
      port: "{{params.port}}"
      dbname: login
      user: app_rw
      password: "{{params.db_password}}"
      sslmode: disable
      statements: "SELECT current_user AS who, $1::text AS echoed"
      params: ["{{params.db_password}}"]
  - id: url
    sql:
      url: "postgres://app_rw:{{params.db_password}}@127.0.0.1:{{params.port}}/login"
      statements: "SELECT session_user AS who"
"#;

#[test]
fn a_secret_password_logs_in_and_never_reaches_the_journal_or_the_output() {
    let pg = server();
    let db = pg.database("login");
    pg.psql(
        &db,
        &format!(
            "DROP ROLE IF EXISTS app_rw; CREATE ROLE app_rw LOGIN PASSWORD '{PASSWORD}'; \
             GRANT ALL ON DATABASE login TO app_rw"
        ),
    );
    pg.require_password("app_rw");
    let sb = Sandbox::new();
    sb.write("login.yaml", LOGIN);
    let port = format!("port={}", pg.port());

    let human = sb
        .cmd(&["run", "login.yaml", "-p", &port])
        .env("DB_PASSWORD", PASSWORD)
        .ok();
    let run = sb.only_run();
    let json_log = sb.cmd(&["log", &run, "--output", "json"]).ok();
    let records = sb.records(&run);
    // The server took the password: the session is app_rw's.
    let fields = &record(&records, "step_succeeded", "fields")["output"];
    assert_eq!(fields["rows"][0]["who"], "app_rw", "{fields}");
    assert_eq!(fields["rows"][0]["echoed"], "***", "{fields}");
    let url = &record(&records, "step_succeeded", "url")["output"];
    assert_eq!(url["rows"][0]["who"], "app_rw", "{url}");
    let started = record(&records, "step_started", "url");
    assert_eq!(
        started["intent"]["describe"],
        format!(
            "sql: postgres://app_rw:***@127.0.0.1:{}/login: SELECT session_user AS who",
            pg.port()
        ),
        "{started}"
    );
    for (what, bytes) in [
        ("the journal", sb.journal_bytes()),
        ("run's stdout", human.stdout.into_bytes()),
        ("run's stderr", human.stderr.into_bytes()),
        ("log --output json", json_log.stdout.into_bytes()),
    ] {
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains(PASSWORD),
            "{what} holds the password:\n{text}"
        );
    }

    // A wrong password is refused by the server, with its SQLSTATE.
    let out = sb
        .cmd(&["run", "login.yaml", "-p", &port])
        .env("DB_PASSWORD", "not-the-password")
        .code(1);
    assert_contains(
        &out,
        &format!(
            "failed to connect to postgres://app_rw@127.0.0.1:{}/login: password authentication \
             failed for user \"app_rw\" (SQLSTATE 28P01)",
            pg.port()
        ),
    );
}

const SLOW: &str = r#"
runbook: slow
params:
  url: { type: string, required: true }
steps:
  - id: setup
    sql: { url: "{{params.url}}", statements: "CREATE TABLE marks (n int)" }
  - id: own-timeout
    continue_on_error: true
    sql: { url: "{{params.url}}", statements: "SELECT pg_sleep(60)", timeout: 2s }
  - id: step-timeout
    timeout: 2s
    sql:
      url: "{{params.url}}"
      statements: ["INSERT INTO marks VALUES (1)", "SELECT pg_sleep(61)"]
"#;

/// Backends running `pg_sleep` for this test's runbook (`application_name` is the step's).
fn sleepers(pg: &Postgres) -> String {
    pg.psql(
        "postgres",
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'runbook' \
         AND query LIKE '%pg_sleep(6%' AND state = 'active'",
    )
}

#[test]
fn a_timeout_cancels_the_running_statement_on_the_server() {
    let pg = server();
    let db = pg.database("slow");
    let sb = Sandbox::new();
    sb.write("slow.yaml", SLOW);
    let url = format!("postgres://postgres@127.0.0.1:{}/{db}", pg.port());
    let started = Instant::now();
    let out = sb
        .cmd(&["run", "slow.yaml", "-p", &format!("url={url}")])
        .code(1);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the sleeps were not cut short: {:?}",
        started.elapsed()
    );
    assert_contains(
        &out,
        "the statement did not finish within 2s: the server was asked to cancel it",
    );
    let run = sb.only_run();
    let records = sb.records(&run);
    let timed_out = record(&records, "step_failed", "step-timeout");
    assert!(
        timed_out["error"].as_str().is_some_and(|e| e.contains(
            "the server was asked to cancel statement 2 of 2; the transaction was rolled back"
        )),
        "{timed_out}"
    );
    // Neither sleep goes on in the server, and the insert before the second was undone.
    wait_for(
        "the server to end both sleeps",
        Duration::from_secs(10),
        || sleepers(&pg) == "0",
    );
    assert_eq!(pg.psql(&db, "SELECT count(*) FROM marks"), "0");
}

/// Runs `openssl ARGS…` in `dir`; panics with its output if it fails.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl (testbeds/install.sh installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Postgres {
    /// Turns TLS on with a server certificate for `localhost` (not for 127.0.0.1) signed by a
    /// CA of the test's own, and makes `role` log in over TLS only; returns the CA's PEM file.
    fn enable_tls(&self, role: &str, dir: &std::path::Path) -> PathBuf {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=runbook test CA",
            ],
        );
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=localhost",
            ],
        );
        std::fs::write(dir.join("san.ext"), "subjectAltName=DNS:localhost\n")
            .expect("write san.ext");
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.pem",
                "-days",
                "2",
                "-extfile",
                "san.ext",
            ],
        );
        // The server reads its key as its own user, and only from a file no one else reads.
        let data = PathBuf::from(self.var("PGDATA"));
        for (from, to, mode) in [
            ("server.pem", "server.crt", 0o644),
            ("server.key", "server.key", 0o600),
        ] {
            let target = data.join(to);
            std::fs::copy(dir.join(from), &target).expect("copy into PGDATA");
            std::fs::set_permissions(&target, std::os::unix::fs::PermissionsExt::from_mode(mode))
                .expect("chmod");
            let owner = Command::new("chown")
                .arg(format!("{}:", self.var("PG_OS_USER")))
                .arg(&target)
                .status()
                .expect("chown");
            assert!(owner.success(), "chown {}", target.display());
        }
        let hba = data.join("pg_hba.conf");
        let old = std::fs::read_to_string(&hba).expect("read pg_hba.conf");
        let rules = format!(
            "hostssl all {role} 127.0.0.1/32 trust\nhostnossl all {role} 127.0.0.1/32 reject\n"
        );
        if !old.contains(&rules) {
            std::fs::write(&hba, format!("{rules}{old}")).expect("write pg_hba.conf");
        }
        self.psql("postgres", "ALTER SYSTEM SET ssl = on");
        assert_eq!(self.psql("postgres", "SELECT pg_reload_conf()"), "t");
        wait_for("the server to take TLS on", Duration::from_secs(10), || {
            self.psql("postgres", "SHOW ssl") == "on"
        });
        dir.join("ca.pem")
    }
}

const TLS: &str = r#"
runbook: tls
params:
  port: { type: string, required: true }
  ca: { type: string, required: true }
  host: { type: string, default: localhost }
  mode: { type: string, default: verify-full }
steps:
  - id: query
    sql:
      host: "{{params.host}}"
      port: "{{params.port}}"
      dbname: postgres
      user: tls_only
      sslmode: "{{params.mode}}"
      ca_file: "{{params.ca}}"
      statements: "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
"#;

#[test]
fn tls_modes_encrypt_and_check_the_server_certificate() {
    let pg = server();
    pg.psql(
        "postgres",
        "DROP ROLE IF EXISTS tls_only; CREATE ROLE tls_only LOGIN",
    );
    let certs = tempfile::tempdir().expect("tempdir");
    let ca = pg.enable_tls("tls_only", certs.path());
    let sb = Sandbox::new();
    sb.write("tls.yaml", TLS);
    let port = format!("port={}", pg.port());
    let ca = format!("ca={}", ca.display());
    let run = |extra: &[&str]| {
        let mut args = vec!["run", "tls.yaml", "-p", &port, "-p", &ca];
        args.extend_from_slice(extra);
        sb.cmd(&args).run()
    };

    // verify-full: the certificate is signed by the CA and names the host.
    let out = run(&[]);
    out.expect_code(0);
    let history = sb.cmd(&["history", "--output", "json"]).ok();
    let last_run = |history: &str| {
        history
            .lines()
            .find_map(|l| serde_json::from_str::<Value>(l).ok())
            .and_then(|r| r["id"].as_str().map(str::to_owned))
            .expect("a run")
    };
    let records = sb.records(&last_run(&history.stdout));
    let query = &record(&records, "step_succeeded", "query")["output"];
    // The server says the session is encrypted (and the role may log in over TLS only).
    assert_eq!(query["rows"][0]["ssl"], true, "{query}");
    assert!(
        query["rows"][0]["version"]
            .as_str()
            .is_some_and(|v| v.starts_with("TLSv1.")),
        "{query}"
    );

    // The certificate names localhost, not 127.0.0.1: verify-full refuses it there, while
    // verify-ca (the CA's signature only) and require (encryption only) accept it.
    let out = run(&["-p", "host=127.0.0.1"]);
    out.expect_code(1);
    assert_contains(
        &out,
        &format!(
            "failed to connect to postgres://tls_only@127.0.0.1:{}/postgres: invalid peer \
             certificate: certificate not valid for name \"127.0.0.1\"",
            pg.port()
        ),
    );
    run(&["-p", "host=127.0.0.1", "-p", "mode=verify-ca"]).expect_code(0);
    run(&["-p", "host=127.0.0.1", "-p", "mode=require"]).expect_code(0);

    // disable: the server refuses a plain connection for this role.
    let out = run(&["-p", "mode=disable"]);
    out.expect_code(1);
    assert_contains(
        &out,
        "rejects connection for host \"127.0.0.1\", user \"tls_only\"",
    );

    // A CA that did not sign the certificate is refused under verify-ca.
    let other = tempfile::tempdir().expect("tempdir");
    openssl(
        other.path(),
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=another CA",
        ],
    );
    let other_ca = format!("ca={}", other.path().join("ca.pem").display());
    let out = sb
        .cmd(&[
            "run",
            "tls.yaml",
            "-p",
            &port,
            "-p",
            &other_ca,
            "-p",
            "mode=verify-ca",
        ])
        .run();
    out.expect_code(1);
    assert_contains(&out, "/postgres: invalid peer certificate: UnknownIssuer");
}

#[test]
fn check_points_at_each_bad_field_of_a_sql_step() {
    let sb = Sandbox::new();
    sb.write(
        "bad.yaml",
        r#"runbook: bad
params:
  url: { type: string, default: "postgres://db/app" }
steps:
  - id: migrate
    sql:
      url: mysql://db/app
      sslmode: verify_full
      statements:
        - "CREATE TABLE t (a int)"
        - { sql: "INSERT INTO t VALUES ($1)", parms: [1] }
        - " "
  - id: fine
    sql: { url: "{{params.url}}", port: "{{params.port}}", statements: "SELECT 1" }
"#,
    );
    let out = sb.cmd(&["check", "bad.yaml"]).run();
    out.expect_code(2);
    assert_eq!(
        out.stderr,
        r#"error: `url` must start with postgres:// or postgresql://, not `mysql://db/app`
 --> bad.yaml:7:7
  |
7 |       url: mysql://db/app
  |       ^^^

error: unknown sslmode `verify_full` (did you mean `verify-full`?); one of disable, prefer, require, verify-ca, verify-full
 --> bad.yaml:8:7
  |
8 |       sslmode: verify_full
  |       ^^^^^^^

error: statement 2 has an unknown field `parms` (did you mean `params`?); a statement is `{ sql, params }`
  --> bad.yaml:11:47
   |
11 |         - { sql: "INSERT INTO t VALUES ($1)", parms: [1] }
   |                                               ^^^^^

error: statement 3 is empty
  --> bad.yaml:12:12
   |
12 |         - " "
   |            ^

error: unknown parameter `port`
  --> bad.yaml:14:51
   |
14 |     sql: { url: "{{params.url}}", port: "{{params.port}}", statements: "SELECT 1" }
   |                                                   ^^^^
   |
help: parameters are: url

error: 5 problems found
"#,
        "{}",
        out.explain("unexpected stderr")
    );
}
