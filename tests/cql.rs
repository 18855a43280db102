//! The `cql` step end to end, against a real Apache Cassandra 5.0 node (`testbeds/cassandra.sh
//! create --auth`: logins checked by `PasswordAuthenticator`). What a test claims about the
//! database is read back with `cqlsh` (`SELECT JSON`), not from the runbook's own output.
//!
//! Cassandra takes a minute or more to start, so one test holds one node and proves every
//! behaviour on it in turn.

use serde_json::{Value, json};

use crate::support::clusters::{Cluster, testbed};
use crate::support::{Output, Sandbox};

/// The password of the role `ops` the runbooks log in as.
const PASSWORD: &str = "cql-S3cret-4f2b";

/// The rows of a `SELECT JSON …` as cqlsh prints them, logged in as the superuser.
fn select_json(cluster: &Cluster, cql: &str) -> Vec<Value> {
    testbed("cassandra.sh", &["cqlsh", cluster.path(), "-e", cql])
        .lines()
        .filter_map(|l| l.trim().strip_prefix('{').map(|rest| format!("{{{rest}")))
        .map(|l| serde_json::from_str(&l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
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

/// Every step logs in as `ops` with the secret parameter `password`.
const KEYS: &str = r#"
runbook: keys
params:
  host: { type: string, required: true }
  password: { type: string, secret: true, env: CASSANDRA_PASSWORD }
  id: { type: string, default: master-1 }
steps:
  - id: schema
    cql:
      hosts: ["{{params.host}}"]
      user: ops
      password: "{{params.password}}"
      statements:
        - "CREATE KEYSPACE keys WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}"
        - "CREATE TYPE keys.owner (name text, team int)"
        - >-
          CREATE TABLE keys.master (id text PRIMARY KEY, version int, created timestamp,
          material blob, tags set<text>, props map<text, int>, owner frozen<owner>,
          amount decimal, big varint, day date, at time, ttl duration, ip inet, u uuid,
          f float, d double, active boolean, note text)
        - "CREATE TABLE keys.uses (id text PRIMARY KEY, n counter)"
        - "CREATE KEYSPACE wide WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 3}"
        - "CREATE TABLE wide.t (id int PRIMARY KEY, v text)"
  - id: write
    cql:
      hosts: ["{{params.host}}"]
      user: ops
      password: "{{params.password}}"
      keyspace: keys
      statements:
        - cql: >-
            INSERT INTO master (id, version, created, material, tags, props, owner, amount,
            big, day, at, ttl, ip, u, f, d, active, note)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
          params:
            - "{{params.id}}"
            - 7
            - "2024-05-01T14:00:00.25+02:00"
            - "AP9oaQ=="
            - ["b", "a"]
            - { x: 1, "y z": "2" }
            - { name: "it's me", team: 3 }
            - "12.50"
            - "123456789012345678901234567890"
            - "2024-02-29"
            - "23:59:59.5"
            - "P1DT2H"
            - "10.1.2.3"
            - "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
            - 1.5
            - 0.1
            - "true"
            - null
        - { cql: "UPDATE master SET version = :v WHERE id = :id", params: { id: "{{params.id}}", v: "8" } }
  - id: read
    cql:
      hosts: ["{{params.host}}"]
      user: ops
      password: "{{params.password}}"
      statements: { cql: "SELECT * FROM keys.master WHERE id = ?", params: ["{{params.id}}"] }
"#;

/// Steps that fail on purpose (each tolerated), then a batch that works and a paged read.
const EDGES: &str = r#"
runbook: edges
params:
  host: { type: string, required: true }
  password: { type: string, secret: true, env: CASSANDRA_PASSWORD }
steps:
  - id: one
    cql: { hosts: ["{{params.host}}"], user: ops, password: "{{params.password}}",
           consistency: ONE, statements: "INSERT INTO wide.t (id, v) VALUES (1, 'one')" }
  - id: quorum
    continue_on_error: true
    cql: { hosts: ["{{params.host}}"], user: ops, password: "{{params.password}}",
           consistency: QUORUM, statements: "INSERT INTO wide.t (id, v) VALUES (2, 'quorum')" }
  - id: typo
    continue_on_error: true
    cql:
      hosts: ["{{params.host}}"]
      user: ops
      password: "{{params.password}}"
      consistency: ONE
      statements:
        - "INSERT INTO wide.t (id, v) VALUES (3, 'before the typo')"
        - "INSERT INTO wide.t (id, v) VALUES (4, 'the typo')"
        - "UPDAT wide.t SET v = 'x' WHERE id = 3"
  - id: bad-value
    continue_on_error: true
    cql: { hosts: ["{{params.host}}"], user: ops, password: "{{params.password}}",
           consistency: ONE, statements: "INSERT INTO wide.t (id, v) VALUES (?, ?)", params: ["five", "x"] }
  - id: mixed-batch
    continue_on_error: true
    cql:
      hosts: ["{{params.host}}"]
      user: ops
      password: "{{params.password}}"
      keyspace: keys
      batch: logged
      statements:
        - { cql: "INSERT INTO master (id, version) VALUES (?, ?)", params: ["batched-1", 1] }
        - { cql: "UPDATE uses SET n = n + 1 WHERE id = ?", params: ["batched-1"] }
  - id: batch
    cql:
      hosts: ["{{params.host}}"]
      user: ops
      password: "{{params.password}}"
      keyspace: keys
      batch: logged
      statements: BATCH
  - id: paged
    cql:
      hosts: ["{{params.host}}"]
      user: ops
      password: "{{params.password}}"
      statements: "SELECT id FROM keys.master"
      max_rows: 10
"#;

#[test]
fn cql_steps_bind_values_honour_the_consistency_level_and_read_rows_as_typed_json() {
    let cluster = Cluster::cassandra(&["--auth"]);
    select_json(
        &cluster,
        &format!(
            "CREATE ROLE ops WITH PASSWORD = '{PASSWORD}' AND LOGIN = true AND SUPERUSER = true"
        ),
    );
    let host = format!("host=127.0.0.1:{}", cluster.var("CQL_PORT_1"));
    let sb = Sandbox::new();
    sb.write("keys.yaml", KEYS);
    let batch: Vec<String> = (1..=24)
        .map(|i| format!("\n        - {{ cql: \"INSERT INTO master (id, version) VALUES (?, ?)\", params: [\"k{i:02}\", {i}] }}"))
        .collect();
    sb.write("edges.yaml", &EDGES.replace(" BATCH", &batch.concat()));

    // Values of every kind are bound, by position and by name, and read back typed.
    let human = sb
        .cmd(&["run", "keys.yaml", "-p", &host])
        .env("CASSANDRA_PASSWORD", PASSWORD)
        .ok();
    assert_eq!(
        select_json(
            &cluster,
            "SELECT JSON id, version, created, material, tags, props, owner, amount, big, day, \
             at, ttl, ip, u, f, d, active, note FROM keys.master"
        ),
        [json!({
            "id": "master-1", "version": 8, "created": "2024-05-01 12:00:00.250Z",
            "material": "0x00ff6869", "tags": ["a", "b"], "props": {"x": 1, "y z": 2},
            "owner": {"name": "it's me", "team": 3}, "amount": 12.50,
            "big": 123_456_789_012_345_678_901_234_567_890_f64, "day": "2024-02-29",
            "at": "23:59:59.500000000", "ttl": "1d2h", "ip": "10.1.2.3",
            "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "f": 1.5, "d": 0.1, "active": true,
            "note": null,
        })]
    );
    let run = sb.only_run();
    let records = sb.records(&run);
    let read = &record(&records, "step_succeeded", "read")["output"];
    assert_eq!(
        read["rows"],
        json!([{
            "id": "master-1", "active": true, "amount": "12.50",
            "at": "23:59:59.500", "big": "123456789012345678901234567890",
            "created": "2024-05-01T12:00:00.250Z", "d": 0.1, "day": "2024-02-29", "f": 1.5,
            "ip": "10.1.2.3", "material": "AP9oaQ==", "note": null,
            "owner": {"name": "it's me", "team": 3}, "props": {"x": 1, "y z": 2},
            "tags": ["a", "b"], "ttl": "P1DT2H", "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "version": 8,
        }]),
        "{read:#}"
    );
    let columns = read["results"][0]["columns"].as_array().expect("columns");
    for want in [
        json!({"name": "owner", "type": "owner"}),
        json!({"name": "props", "type": "map<text, int>"}),
        json!({"name": "amount", "type": "decimal"}),
    ] {
        assert!(columns.contains(&want), "{want} not in {columns:?}");
    }
    let started = record(&records, "step_started", "read");
    assert_eq!(started["idempotent"], true, "a SELECT is idempotent");
    let json_log = sb.cmd(&["log", &run, "--output", "json"]).ok();
    for (what, text) in [
        (
            "the journal",
            String::from_utf8_lossy(&sb.journal_bytes()).into_owned(),
        ),
        ("run's stdout", human.stdout),
        ("run's stderr", human.stderr),
        ("log --output json", json_log.stdout),
    ] {
        assert!(
            !text.contains(PASSWORD),
            "{what} holds the password:\n{text}"
        );
    }

    // A wrong password is refused by the server.
    let out = sb
        .cmd(&["run", "keys.yaml", "-p", &host])
        .env("CASSANDRA_PASSWORD", "not-the-password")
        .code(1);
    assert_contains(
        &out,
        &format!(
            "FAILED schema: failed to connect to cql://ops@127.0.0.1:{}: Provided \
             username ops and/or password are incorrect (AuthenticationError)",
            cluster.var("CQL_PORT_1")
        ),
    );

    let out = sb
        .cmd(&["run", "edges.yaml", "-p", &host])
        .env("CASSANDRA_PASSWORD", PASSWORD)
        .ok();
    let edges = sb
        .cmd(&["history", "--output", "json"])
        .ok()
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|r| r["runbook"] == "edges")
        .and_then(|r| r["id"].as_str().map(str::to_owned))
        .expect("the edges run");
    let records = sb.records(&edges);
    let error = |path: &str| record(&records, "step_failed", path)["error"].clone();

    // The keyspace `wide` wants 3 replicas and this cluster has 1 node: ONE is met, QUORUM
    // (2 of 3) is not, and the server says so.
    assert_eq!(
        error("quorum"),
        "the statement failed: Cannot achieve consistency level QUORUM (Unavailable)",
        "{}",
        out.stdout
    );
    assert_eq!(
        record(&records, "step_failed", "quorum")["output"]["error"]["kind"],
        "Unavailable"
    );
    // Statements run in turn: the two before the typo took effect, the typo names its index.
    assert_eq!(
        error("typo"),
        "statement 3 of 3 failed: line 1:0 no viable alternative at input 'UPDAT' ([UPDAT]...) \
         (SyntaxError); the 2 statements before it took effect"
    );
    // A value that does not fit its marker is named before anything is sent.
    assert_eq!(
        error("bad-value"),
        "the statement failed: value 1 (`id`): `five` cannot be bound to type int"
    );
    let mut rows = select_json(&cluster, "SELECT JSON id, v FROM wide.t");
    rows.sort_by_key(|r| r["id"].as_i64());
    assert_eq!(
        rows,
        [
            json!({"id": 1, "v": "one"}),
            json!({"id": 3, "v": "before the typo"}),
            json!({"id": 4, "v": "the typo"}),
        ]
    );
    // The server refuses a logged batch holding a counter update as a whole: nothing of it
    // is applied.
    assert!(
        error("mixed-batch").as_str().is_some_and(
            |e| e.starts_with("the batch failed: ") && e.ends_with("; none of it took effect")
        ),
        "{}",
        error("mixed-batch")
    );
    assert_eq!(
        select_json(
            &cluster,
            "SELECT JSON id FROM keys.master WHERE id = 'batched-1'"
        ),
        Vec::<Value>::new()
    );
    assert_eq!(
        select_json(
            &cluster,
            "SELECT JSON n FROM keys.uses WHERE id = 'batched-1'"
        ),
        Vec::<Value>::new()
    );
    // The batch that works applied all 24 rows; a read keeps 10 and says it stopped.
    assert_eq!(
        select_json(&cluster, "SELECT JSON count(*) FROM keys.master"),
        [json!({"count": 25})]
    );
    let paged = &record(&records, "step_succeeded", "paged")["output"];
    assert_eq!(paged["rows"].as_array().map(Vec::len), Some(10), "{paged}");
    assert_eq!(paged["results"][0]["rows_truncated"], true, "{paged}");
}

#[test]
fn check_points_at_each_bad_field_of_a_cql_step() {
    let sb = Sandbox::new();
    sb.write(
        "bad.yaml",
        r#"runbook: bad
steps:
  - id: keys
    cql:
      hosts: ["db-1:9042", "db-2:x"]
      consistency: QUORAM
      batch: logged
      statements: { cql: "SELECT * FROM keys.master", params: 3 }
"#,
    );
    let out = sb.cmd(&["check", "bad.yaml"]).run();
    out.expect_code(2);
    assert_eq!(
        out.stderr,
        r#"error: host `db-2:x` has an invalid port `x`
 --> bad.yaml:5:29
  |
5 |       hosts: ["db-1:9042", "db-2:x"]
  |                             ^^^^^^

error: unknown consistency level `QUORAM` (did you mean `QUORUM`?); one of ANY, ONE, TWO, THREE, QUORUM, ALL, LOCAL_QUORUM, EACH_QUORUM, LOCAL_ONE, SERIAL, LOCAL_SERIAL
 --> bad.yaml:6:7
  |
6 |       consistency: QUORAM
  |       ^^^^^^^^^^^

error: a batch cannot hold a SELECT (statement 1)
 --> bad.yaml:7:7
  |
7 |       batch: logged
  |       ^^^^^

error: the `params` of the statement must be a list or a mapping, not a number
 --> bad.yaml:8:55
  |
8 |       statements: { cql: "SELECT * FROM keys.master", params: 3 }
  |                                                       ^^^^^^

error: 4 problems found
"#,
        "{}",
        out.explain("unexpected stderr")
    );
}
