//! The core-services runbooks of the library (issue 14) against real servers: `durability-proof`
//! on a 3-member etcd cluster and on PostgreSQL, `rollout-soak` on etcd, `migrate-schema` on
//! PostgreSQL (killed by SIGKILL in its backfill, then resumed), and `restore-openbao-snapshot` with a
//! real `upgrade-openbao` paused mid-roll. What a test claims is read from the servers — etcd's
//! HTTP API and `/metrics`, `psql`, OpenBao's API — never from the runbook's own output.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use crate::etcd::Etcd;
use crate::openbao::Bao;
use crate::sql::{Postgres, server};
use crate::support::captured::Captured;
use crate::support::clusters::{Cluster, http};
use crate::support::{Sandbox, wait_for};

const SETTLE: Duration = Duration::from_secs(60);

// --- etcd, read by the test ---

/// The value of `key` (a linearizable read through `endpoint`), if it is there.
fn etcd_get(endpoint: &str, key: &str) -> Option<String> {
    let v: Value = http()
        .post(&format!("{endpoint}/v3/kv/range"))
        .send_json(json!({ "key": B64.encode(key) }))
        .expect("range")
        .into_json()
        .expect("json");
    v["kvs"][0]["value"]
        .as_str()
        .map(|s| String::from_utf8(B64.decode(s).expect("base64")).expect("utf-8"))
}

/// Every key under `prefix` with its value.
fn etcd_prefix(endpoint: &str, prefix: &str) -> Vec<(String, String)> {
    let mut end = prefix.as_bytes().to_vec();
    *end.last_mut().expect("a prefix") += 1;
    let v: Value = http()
        .post(&format!("{endpoint}/v3/kv/range"))
        .send_json(json!({ "key": B64.encode(prefix), "range_end": B64.encode(&end) }))
        .expect("range")
        .into_json()
        .expect("json");
    let decode = |s: &Value| {
        String::from_utf8(B64.decode(s.as_str().expect("text")).expect("base64")).expect("utf-8")
    };
    v["kvs"]
        .as_array()
        .map(|kvs| {
            kvs.iter()
                .map(|kv| (decode(&kv["key"]), decode(&kv["value"])))
                .collect()
        })
        .unwrap_or_default()
}

/// A POST of `{}` to an etcd endpoint's `path`.
fn etcd_post(endpoint: &str, path: &str) -> Value {
    http()
        .post(&format!("{endpoint}{path}"))
        .send_json(json!({}))
        .unwrap_or_else(|e| panic!("POST {endpoint}{path}: {e}"))
        .into_json()
        .expect("json")
}

/// The members' ids, sorted.
fn member_ids(endpoint: &str) -> Vec<String> {
    let list = etcd_post(endpoint, "/v3/cluster/member/list");
    let mut ids: Vec<String> = list["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| m["ID"].as_str().expect("id").to_owned())
        .collect();
    ids.sort();
    ids
}

/// When the member's process started, as the member itself reports it (`/metrics`).
fn started_at(endpoint: &str) -> String {
    let text = http()
        .get(&format!("{endpoint}/metrics"))
        .call()
        .expect("metrics")
        .into_string()
        .expect("text");
    text.lines()
        .find_map(|l| l.strip_prefix("process_start_time_seconds "))
        .expect("process_start_time_seconds")
        .trim()
        .to_owned()
}

/// The processes whose command line names `dir` (a scratch instance's data directory).
fn processes_in(dir: &Path) -> Vec<u32> {
    let needle = dir.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                String::from_utf8_lossy(&c)
                    .replace('\0', " ")
                    .contains(&needle)
            })
        })
        .collect()
}

/// The only run's `output` as journaled: used only to find the scratch instance (its address),
/// never as evidence.
fn run_output(sb: &Sandbox) -> Value {
    let run = sb.only_run();
    sb.records(&run)
        .into_iter()
        .rev()
        .find(|r| r["event"] == "step_succeeded" && r["path"] == "report")
        .map(|r| r["output"].clone())
        .expect("report")
}

/// Writes an executable script into the sandbox.
fn script(sb: &Sandbox, name: &str, body: &str) -> PathBuf {
    let path = sb.write(name, body);
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    path
}

fn param(k: &str, v: impl AsRef<str>) -> String {
    format!("{k}={}", v.as_ref())
}

/// `args` with a `-p` before each parameter.
fn with_params<'a>(args: &[&'a str], params: &'a [String]) -> Vec<&'a str> {
    let mut all = args.to_vec();
    for p in params {
        all.push("-p");
        all.push(p);
    }
    all
}

#[test]
fn durability_proof_on_etcd_reads_the_canary_back_from_a_scratch_member_and_a_corrupt_snapshot_fails()
 {
    let etcd = Etcd::from_cluster(Cluster::etcd());
    let sb = Sandbox::new();
    let ep = etcd.endpoints[0].clone();
    let ctl = etcd.cluster.var("ETCDCTL_BIN");
    let base = vec![
        param("store", "etcd"),
        param("cluster_dir", etcd.cluster.path()),
        param("backup_dir", sb.path().to_string_lossy()),
        param("etcdctl", &ctl),
        // etcd 3.4 restores with etcdctl (etcdutl came with 3.5).
        param("etcdutl", &ctl),
        param("etcd", etcd.cluster.var("ETCD_BIN")),
    ];

    // Kept for inspection: the scratch member is another cluster (one member, its own id) that
    // holds the canary the live cluster holds.
    let mut keep = base.clone();
    keep.push(param("keep_scratch", "true"));
    sb.cmd(&with_params(&["run", "durability-proof"], &keep))
        .ok();
    let canary = etcd_get(&ep, "runbook/durability-proof/canary").expect("canary written");
    let run = sb.only_run();
    assert!(canary.starts_with(&run), "{canary}");
    let scratch = run_output(&sb)["scratch"]["endpoint"]
        .as_str()
        .expect("the scratch endpoint")
        .to_owned();
    assert!(!etcd.endpoints.contains(&scratch));
    assert_eq!(
        etcd_get(&scratch, "runbook/durability-proof/canary"),
        Some(canary)
    );
    let scratch_members = etcd_post(&scratch, "/v3/cluster/member/list");
    assert_eq!(scratch_members["members"].as_array().map(Vec::len), Some(1));
    assert_eq!(scratch_members["members"][0]["name"], "scratch");
    assert_ne!(
        etcd_post(&scratch, "/v3/maintenance/status")["header"]["cluster_id"],
        etcd_post(&ep, "/v3/maintenance/status")["header"]["cluster_id"]
    );
    let scratch_dir = sb.path().join(format!("etcd-scratch-{run}"));
    for pid in processes_in(&scratch_dir) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid")),
            nix::sys::signal::SIGKILL,
        );
    }

    // By default the scratch member is stopped and its data removed; a second canary went in.
    let sb = Sandbox::new();
    let mut base = base;
    base[2] = param("backup_dir", sb.path().to_string_lossy());
    sb.cmd(&with_params(&["run", "durability-proof"], &base))
        .ok();
    let run = sb.only_run();
    let scratch_dir = sb.path().join(format!("etcd-scratch-{run}"));
    assert!(!scratch_dir.exists(), "the scratch data is removed");
    assert_eq!(processes_in(&scratch_dir), Vec::<u32>::new());
    assert!(etcd_get(&ep, "runbook/durability-proof/canary").is_some_and(|c| c.starts_with(&run)));
    assert!(sb.path().join(format!("etcd-durability-{run}.db")).exists());

    // A backup tool that writes a damaged snapshot: the proof fails, the scratch is gone.
    let sb = Sandbox::new();
    let broken = script(
        &sb,
        "etcdctl-corrupting",
        &format!(
            r#"#!/usr/bin/env bash
"{ctl}" "$@" || exit $?
if [[ "$*" == *"snapshot save"* ]]; then
  f="${{@: -1}}"
  size=$(stat -c %s "$f")
  printf '\xde\xad\xbe\xef\xde\xad\xbe\xef' | dd of="$f" bs=1 seek=$(( size / 2 )) conv=notrunc status=none
fi
"#
        ),
    );
    let mut bad = base.clone();
    bad[2] = param("backup_dir", sb.path().to_string_lossy());
    bad[3] = param("etcdctl", broken.to_string_lossy());
    let out = sb
        .cmd(&with_params(&["run", "durability-proof"], &bad))
        .code(1);
    let run = sb.only_run();
    let scratch_dir = sb.path().join(format!("etcd-scratch-{run}"));
    assert!(!scratch_dir.exists(), "{}", out.explain("scratch removed"));
    assert_eq!(processes_in(&scratch_dir), Vec::<u32>::new());
    assert_eq!(sb.status(&run)["state"], "failed");
}

/// A database of the shared PostgreSQL server with a table of `rows` users.
fn users_db(pg: &Postgres, name: &str, rows: u32) -> String {
    let db = pg.database(name);
    pg.psql(
        &db,
        &format!(
            "CREATE TABLE users (id int PRIMARY KEY, email text NOT NULL); \
             INSERT INTO users SELECT g, 'User' || g || '@Example.COM' FROM generate_series(1, {rows}) g"
        ),
    );
    db
}

fn pg_bin(pg: &Postgres, tool: &str) -> String {
    format!("{}/{tool}", pg.var("PG_BINDIR"))
}

#[test]
fn durability_proof_on_postgres_restores_the_canary_into_a_scratch_database_and_a_stale_dump_fails()
{
    let pg = server();
    let db = users_db(&pg, "durable", 300);
    let sb = Sandbox::new();
    let base = vec![
        param("store", "postgres"),
        param("port", pg.port()),
        param("dbname", &db),
        param("backup_dir", sb.path().to_string_lossy()),
        param("pg_dump", pg_bin(&pg, "pg_dump")),
        param("pg_restore", pg_bin(&pg, "pg_restore")),
    ];
    let scratch_dbs = || {
        pg.psql(
            "postgres",
            "SELECT datname FROM pg_database WHERE datname LIKE 'durability_scratch_%' ORDER BY 1",
        )
    };
    // A dump taken before any canary: what a stale backup looks like.
    let stale = sb.path().join("stale.dump");
    let dumped = Command::new(pg_bin(&pg, "pg_dump"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            pg.port(),
            "-U",
            "postgres",
            "-d",
            &db,
            "-Fc",
            "-f",
        ])
        .arg(&stale)
        .output()
        .expect("pg_dump");
    assert!(dumped.status.success(), "{dumped:?}");

    let mut keep = base.clone();
    keep.push(param("keep_scratch", "true"));
    sb.cmd(&with_params(&["run", "durability-proof"], &keep))
        .ok();
    let run = sb.only_run();
    let scratch = format!("durability_scratch_{}", run.to_lowercase());
    assert_eq!(scratch_dbs(), scratch, "the scratch database is kept");
    let canary = pg.psql(
        &db,
        "SELECT value FROM runbook_durability_canary WHERE id = 'canary'",
    );
    assert!(canary.starts_with(&run), "{canary}");
    assert_eq!(
        pg.psql(
            &scratch,
            "SELECT value FROM runbook_durability_canary WHERE id = 'canary'"
        ),
        canary
    );
    assert_eq!(
        pg.psql(&scratch, "SELECT count(*), sum(id) FROM users"),
        pg.psql(&db, "SELECT count(*), sum(id) FROM users")
    );
    pg.psql("postgres", &format!("DROP DATABASE {scratch}"));

    // By default the scratch database is dropped.
    let sb2 = Sandbox::new();
    let mut plain = base.clone();
    plain[3] = param("backup_dir", sb2.path().to_string_lossy());
    sb2.cmd(&with_params(&["run", "durability-proof"], &plain))
        .ok();
    assert_eq!(scratch_dbs(), "", "no scratch database is left");
    let run2 = sb2.only_run();
    assert!(
        pg.psql(
            &db,
            "SELECT value FROM runbook_durability_canary WHERE id = 'canary'"
        )
        .starts_with(&run2)
    );

    // A backup that does not hold the canary (pg_dump handing back a stale dump): FAIL, and the
    // scratch database is dropped all the same.
    let sb3 = Sandbox::new();
    let stale_dump = script(
        &sb3,
        "pg_dump-stale",
        &format!(
            "#!/usr/bin/env bash\nwhile (( $# )); do if [[ $1 == -f ]]; then cp '{}' \"$2\"; exit 0; fi; shift; done; exit 2\n",
            stale.display()
        ),
    );
    let mut bad = base;
    bad[3] = param("backup_dir", sb3.path().to_string_lossy());
    bad[4] = param("pg_dump", stale_dump.to_string_lossy());
    let out = sb3
        .cmd(&with_params(&["run", "durability-proof"], &bad))
        .code(1);
    assert!(
        out.stdout
            .contains("FAIL: the canary written before the backup"),
        "{}",
        out.explain("the verdict")
    );
    assert_eq!(
        scratch_dbs(),
        "",
        "no scratch database is left after a failure"
    );
}

#[test]
fn rollout_soak_restarts_each_member_and_every_soak_write_reads_back_from_etcd() {
    let etcd = Etcd::from_cluster(Cluster::etcd());
    let sb = Sandbox::new();
    let before: Vec<String> = etcd.endpoints.iter().map(|e| started_at(e)).collect();
    let ids = member_ids(&etcd.endpoints[0]);
    let params = vec![
        param("cluster_dir", etcd.cluster.path()),
        param("snapshot_dir", sb.path().to_string_lossy()),
        param("etcdctl", etcd.cluster.var("ETCDCTL_BIN")),
        param("soak_seconds", "6"),
        param("interval_seconds", "2"),
    ];
    let started = Instant::now();
    let out = sb.cmd(&with_params(&["run", "rollout-soak"], &params)).ok();
    let took = started.elapsed();
    let run = sb.only_run();

    let after: Vec<String> = etcd.endpoints.iter().map(|e| started_at(e)).collect();
    for m in 0..3 {
        assert_ne!(before[m], after[m], "member m{} was not restarted", m + 1);
    }
    assert_eq!(
        member_ids(&etcd.endpoints[0]),
        ids,
        "the membership is fixed"
    );
    let keys = etcd_prefix(&etcd.endpoints[2], &format!("runbook/rollout-soak/{run}/"));
    assert_eq!(
        keys,
        (1..=3)
            .map(|r| (
                format!("runbook/rollout-soak/{run}/{r}"),
                format!("round {r} of {run}")
            ))
            .collect::<Vec<_>>(),
        "{}",
        out.stdout
    );
    assert!(took >= Duration::from_secs(6), "the soak lasted {took:?}");

    // A member lost during the soak (stopped once the restart is done): the summary says FAIL
    // and the run fails, although the two members left agree on every write (quorum).
    let sb = Sandbox::new();
    let mut params = params;
    params[1] = param("snapshot_dir", sb.path().to_string_lossy());
    let mut child = sb
        .cmd(&with_params(&["run", "rollout-soak"], &params))
        .spawn();
    let output = Captured::of(&mut child);
    wait_for("the soak to start", SETTLE, || {
        output.text().contains("start  soak[0].pause")
    });
    crate::support::clusters::testbed("etcd.sh", &["stop", etcd.cluster.path(), "1"]);
    let mut status = None;
    wait_for("the run to end", SETTLE, || {
        status = child.try_wait().expect("wait");
        status.is_some()
    });
    let text = output.settle(Duration::from_secs(5));
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{text}");
    assert!(
        text.contains("FAIL: rounds [1, 2, 3] of 3 failed"),
        "{text}"
    );
    assert_eq!(
        crate::support::clusters::status_of(&http(), &format!("{}/health", etcd.endpoints[0])),
        None,
        "m1 is down"
    );
}

/// A psql session the test keeps open (to hold a row lock), fed on stdin.
struct Session(Child);

impl Session {
    fn open(pg: &Postgres, db: &str) -> Self {
        Self(
            Command::new(pg_bin(pg, "psql"))
                .args([
                    "-X",
                    "-q",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    pg.port(),
                    "-U",
                    "postgres",
                    "-d",
                    db,
                ])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .spawn()
                .expect("psql"),
        )
    }

    fn send(&mut self, sql: &str) {
        use std::io::Write as _;
        let stdin = self.0.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{sql}").expect("write");
        stdin.flush().expect("flush");
    }

    fn close(mut self) {
        drop(self.0.stdin.take());
        let _ = self.0.wait();
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn migrate_schema_killed_in_its_backfill_resumes_backfilling_every_row_once_and_cleans_up_only_when_approved()
 {
    let pg = server();
    let db = users_db(&pg, "migrating", 5000);
    // Counts every update of a row, in the updating transaction (a rolled-back batch leaves none).
    // An update of row 2500 first waits for advisory lock 42, which the test can hold to stop a
    // batch in the middle (a row lock would stop the additive ALTER TABLE instead).
    pg.psql(
        &db,
        "CREATE TABLE backfill_audit (id int NOT NULL); \
         CREATE FUNCTION audit_update() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN IF NEW.id = 2500 THEN PERFORM pg_advisory_xact_lock(42); END IF; \
         INSERT INTO backfill_audit VALUES (NEW.id); RETURN NEW; END $$; \
         CREATE TRIGGER users_audit BEFORE UPDATE ON users FOR EACH ROW EXECUTE FUNCTION audit_update()",
    );
    let sb = Sandbox::new();
    let common = vec![
        param("port", pg.port()),
        param("dbname", &db),
        param("backup_dir", sb.path().to_string_lossy()),
        param("pg_dump", pg_bin(&pg, "pg_dump")),
        param("pg_restore", pg_bin(&pg, "pg_restore")),
    ];

    // A destructive statement among the additive ones is refused before anything runs.
    let mut refused = common.clone();
    refused.push(param(
        "additive",
        r#"["ALTER TABLE users ADD COLUMN IF NOT EXISTS email_lower text", "ALTER TABLE users DROP COLUMN email"]"#,
    ));
    let out = sb
        .cmd(&with_params(&["run", "migrate-schema"], &refused))
        .code(1);
    assert!(
        out.stdout.contains("not additive") || out.stderr.contains("not additive"),
        "{}",
        out.explain("the refusal")
    );
    assert_eq!(
        pg.psql(&db, "SELECT string_agg(column_name, ',' ORDER BY column_name) FROM information_schema.columns WHERE table_name = 'users'"),
        "email,id"
    );

    let sb = Sandbox::new();
    let mut params = common;
    params[2] = param("backup_dir", sb.path().to_string_lossy());
    params.extend([
        param(
            "additive",
            r#"["ALTER TABLE users ADD COLUMN IF NOT EXISTS email_lower text", "CREATE INDEX IF NOT EXISTS users_email_lower ON users (email_lower)", "CREATE TABLE IF NOT EXISTS app_flags (name text PRIMARY KEY, value text NOT NULL)"]"#,
        ),
        param("backfill_table", "users"),
        param("backfill_set", "email_lower = lower(email)"),
        param("backfill_pending", "email_lower IS NULL"),
        param("batch_size", "1000"),
        param(
            "cutover_sql",
            r#"["INSERT INTO app_flags VALUES ('users.email_read', 'email_lower') ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value"]"#,
        ),
        param("destructive", r#"["ALTER TABLE users DROP COLUMN email"]"#),
    ]);

    // The update of row 2500 waits for a lock another session holds: the third batch blocks
    // there. The executor is SIGKILLed right then, in the middle of the backfill loop.
    let mut holder = Session::open(&pg, &db);
    holder.send("SELECT pg_advisory_lock(42);");
    wait_for("the test's session to hold the lock", SETTLE, || {
        pg.psql(
            &db,
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 42 AND granted",
        ) == "1"
    });
    let mut child = sb
        .cmd(&with_params(&["run", "migrate-schema"], &params))
        .spawn();
    let output = Captured::of(&mut child);
    let blocked = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'UPDATE users%'";
    wait_for("a backfill batch to block on row 2500", SETTLE, || {
        pg.psql(&db, blocked) == "1"
    });
    assert_eq!(
        pg.psql(
            &db,
            "SELECT count(*) FROM users WHERE email_lower IS NOT NULL"
        ),
        "2000",
        "two batches are done when the third blocks\n{}",
        output.text()
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid")),
        nix::sys::signal::SIGKILL,
    )
    .expect("kill");
    let _ = child.wait();
    holder.close();
    // The batch whose client died ends on the server, one way or the other.
    let running = "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'UPDATE users%' AND state <> 'idle'";
    wait_for("the orphaned batch to end", SETTLE, || {
        pg.psql(&db, running) == "0"
    });
    let run = sb.only_run();
    assert_eq!(sb.status(&run)["state"], "running", "killed mid-run");

    // Resumed: the backfill finishes, reads are cut over, and the run stops at the gate before
    // anything destructive.
    let out = sb.cmd(&["resume", &run]).code(3);
    assert!(
        out.stdout.contains("approve-destructive"),
        "{}",
        out.explain("parked at the destructive gate")
    );
    assert_eq!(
        pg.psql(
            &db,
            "SELECT count(*) FROM users WHERE email_lower IS DISTINCT FROM lower(email)"
        ),
        "0",
        "every row backfilled"
    );
    assert_eq!(
        pg.psql(
            &db,
            "SELECT count(*), count(DISTINCT id), max(n) FROM (SELECT id, count(*) OVER (PARTITION BY id) AS n FROM backfill_audit) a"
        ),
        "5000|5000|1",
        "each row updated exactly once"
    );
    assert_eq!(
        pg.psql(&db, "SELECT column_name, is_nullable, data_type FROM information_schema.columns WHERE table_name = 'users' ORDER BY column_name"),
        "email|NO|text\nemail_lower|YES|text\nid|NO|integer",
        "additive only, and nothing dropped before the approval"
    );
    assert_eq!(
        pg.psql(
            &db,
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'users_email_lower'"
        ),
        "CREATE INDEX users_email_lower ON public.users USING btree (email_lower)"
    );
    assert_eq!(
        pg.psql(&db, "SELECT name, value FROM app_flags"),
        "users.email_read|email_lower",
        "reads cut over"
    );
    let pre_migration = sb.path().join(format!("{db}-pre-migration-{run}.dump"));
    let pre_cleanup = sb.path().join(format!("{db}-pre-cleanup-{run}.dump"));
    let schema_of = |dump: &Path| {
        let out = Command::new(pg_bin(&pg, "pg_restore"))
            .args(["--schema-only", "-f", "-"])
            .arg(dump)
            .output()
            .expect("pg_restore");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let baseline = schema_of(&pre_migration);
    assert!(baseline.contains("email text NOT NULL") && !baseline.contains("email_lower"));
    assert!(
        !pre_cleanup.exists(),
        "no second backup before the approval"
    );

    // Approved: another fresh backup, then the destructive cleanup.
    sb.cmd(&[
        "approve",
        &run,
        "--comment",
        "reads on email_lower for a day",
    ])
    .ok();
    assert_eq!(
        pg.psql(&db, "SELECT string_agg(column_name, ',' ORDER BY column_name) FROM information_schema.columns WHERE table_name = 'users'"),
        "email_lower,id"
    );
    let before_cleanup = schema_of(&pre_cleanup);
    assert!(
        before_cleanup.contains("email text NOT NULL")
            && before_cleanup.contains("email_lower text"),
        "the cleanup's backup holds the schema just before it:\n{before_cleanup}"
    );
}

#[test]
fn restore_openbao_snapshot_with_an_upgrade_paused_mid_roll_rolls_data_back_and_unpause_finishes_the_upgrade()
 {
    let bao = Bao::from_cluster(Cluster::openbao("2.6.2"));
    let sb = Sandbox::new();
    let agent = http();
    let put = |path: &str, v: u32| {
        let ok = bao.addrs.iter().any(|a| {
            agent
                .put(&format!("{a}/v1/{path}"))
                .set("X-Vault-Token", &bao.token)
                .send_json(json!({ "v": v }))
                .is_ok_and(|r| (200..300).contains(&r.status()))
        });
        assert!(ok, "could not write {path}");
    };
    let status = |addr: &str, path: &str| -> u16 {
        match agent
            .get(&format!("{addr}/v1/{path}"))
            .set("X-Vault-Token", &bao.token)
            .call()
        {
            Ok(r) => r.status(),
            Err(ureq::Error::Status(code, _)) => code,
            Err(e) => panic!("GET {addr}/v1/{path}: {e}"),
        }
    };
    let mount_ok = bao.addrs.iter().any(|a| {
        agent
            .post(&format!("{a}/v1/sys/mounts/kv"))
            .set("X-Vault-Token", &bao.token)
            .send_json(json!({ "type": "kv" }))
            .is_ok()
    });
    assert!(mount_ok, "kv mounted");
    put("kv/before", 1);

    // The upgrade takes its pre-upgrade snapshot, upgrades the first member, and is paused.
    let cluster_dir = param("cluster_dir", bao.cluster.path());
    let snapshot_dir = param("snapshot_dir", sb.path().to_string_lossy());
    let mut upgrade = bao
        .runbook(
            &sb,
            &[
                "run",
                "upgrade-openbao",
                "-p",
                "to_version=2.7.2",
                "-p",
                &cluster_dir,
                "-p",
                &snapshot_dir,
                "--yes",
            ],
        )
        .spawn();
    let output = Captured::of(&mut upgrade);
    wait_for(
        "the first member's upgrade to start",
        Duration::from_secs(120),
        || output.text().contains("start  first[0].member"),
    );
    let run = sb.only_run();
    sb.cmd(&[
        "--as",
        "ops",
        "pause",
        &run,
        "--comment",
        "restore from snapshot",
    ])
    .ok();
    let mut code = None;
    wait_for(
        "the upgrade to stop paused",
        Duration::from_secs(180),
        || {
            code = upgrade.try_wait().expect("wait").map(|s| s.code());
            code.is_some()
        },
    );
    assert_eq!(code, Some(Some(3)), "{}", output.text());
    let versions = bao.versions();
    assert_eq!(
        versions.iter().filter(|v| *v == "2.7.2").count(),
        1,
        "paused mid-roll: {versions:?}"
    );

    // Written after the snapshot: the restore must take it away.
    put("kv/after", 2);
    let snapshot = sb.path().join(format!("openbao-pre-upgrade-{run}.snap"));
    assert!(snapshot.exists());
    let restore = |extra: &[String]| {
        let mut params = vec![
            param("snapshot", snapshot.to_string_lossy()),
            cluster_dir.clone(),
            param("verify_paths", r#"["kv/before"]"#),
            param("runbook", env!("CARGO_BIN_EXE_runbook")),
        ];
        params.extend_from_slice(extra);
        let args = with_params(&["run", "restore-openbao-snapshot"], &params)
            .into_iter()
            .map(str::to_owned)
            .collect::<Vec<_>>();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        bao.runbook(&sb, &args).run()
    };
    // Without the hand-over, the paused upgrade's lock refuses the restore.
    let refused = restore(&[]);
    refused.expect_code(1);
    assert!(
        refused.stdout.contains(&run) || refused.stderr.contains(&run),
        "{}",
        refused.explain("the lock holder named")
    );
    assert_eq!(
        status(&bao.addrs[0], "kv/after"),
        200,
        "nothing restored yet"
    );

    let restored = restore(&[param("paused_run", &run)]);
    restored.expect_code(0);
    for a in &bao.addrs {
        assert_eq!(status(a, "kv/after"), 404, "{a} still has the later write");
        assert_eq!(status(a, "kv/before"), 200, "{a} lost the snapshot's data");
    }
    assert_eq!(sb.status(&run)["state"], "paused", "the upgrade waited");

    // Unpaused, the upgrade goes on from where it stood and finishes.
    bao.runbook(&sb, &["unpause", &run, "--yes", "--comment", "restored"])
        .ok();
    assert_eq!(bao.versions(), ["2.7.2"; 3]);
    for a in &bao.addrs {
        assert_eq!(status(a, "kv/after"), 404);
        assert_eq!(status(a, "kv/before"), 200);
    }

    // A hand-over names a run that must be paused: the upgrade has ended, so it is refused
    // and nothing is restored.
    put("kv/later", 3);
    let refused = restore(&[param("paused_run", &run)]);
    refused.expect_code(1);
    assert!(
        refused
            .stdout
            .contains(&format!("run {run} must be paused")),
        "{}",
        refused.explain("the refusal")
    );
    assert_eq!(status(&bao.addrs[0], "kv/later"), 200, "nothing restored");
}
