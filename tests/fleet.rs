//! Several `runbook serve` executors on one etcd journal (a real 3-member cluster on loopback,
//! `--lease-ttl 3s`): a run survives the loss of its executor.
//!
//! - SIGKILL of the executor owning two 10-step runs mid-step: another executor takes both up
//!   within the TTL plus a margin (measured from the kill to the journaled takeover); every
//!   step that had completed has its effect exactly once; the step in flight follows the
//!   in-flight policy — the idempotent one runs again, the other stops the run in
//!   needs-attention.
//! - An executor frozen (SIGSTOP) past its lease and continued (SIGCONT): it appends nothing to
//!   the run another executor took over (every step succeeded exactly once in the records read
//!   from etcd, the takeover's `resumed` names the new owner), runs no further step of it (no
//!   effect of its pid after the step it was in), and joins again under a new identity.
//! - SIGTERM of an owner: it stops its run at a safe point (journaled as interrupted) and
//!   revokes its lease; the other executor takes the run up at once (well within the TTL), and
//!   every step's effect appears once.
//! - An approval given through one executor's API reaches the run another owns: the run goes
//!   on in its owner, the journal records the approver; a secret parameter is never sent.
//! - Two etcd members stopped mid-run (quorum lost): the executors' leases are suspended and
//!   the runs stop at a safe point; with the members back every run finishes, every step's
//!   effect there, none lost.
//!
//! Effects are lines `STEP PID` appended by each step, PID being the executor that ran it.

use std::collections::BTreeMap;
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::support::fleet::{Executor, SETTLE, Store, TTL_SECONDS, effects, succeeded, ten_steps};
use crate::support::{Sandbox, wait_for};

/// How much longer than its TTL a takeover may take: the expiry (etcd checks leases every
/// half second), the claimer's wake-up, the resume, on a loaded 2-core machine.
const TAKEOVER_MARGIN: chrono::TimeDelta = chrono::TimeDelta::seconds(6);

fn at(record: &Value) -> DateTime<Utc> {
    record["at"]
        .as_str()
        .expect("a time")
        .parse()
        .expect("RFC 3339")
}

/// Whether run `run`'s journal shows at least `done` steps succeeded and one in flight.
fn mid_step(store: &Store, run: &str, done: usize) -> bool {
    let records = store.records(run);
    succeeded(&records).len() >= done
        && records.last().is_some_and(|r| r["event"] == "step_started")
}

/// The first `resumed` record of `run` written after `after`.
fn resumed_after(store: &Store, run: &str, after: DateTime<Utc>) -> Option<Value> {
    store
        .records(run)
        .into_iter()
        .find(|r| r["event"] == "resumed" && at(r) >= after)
}

/// The step number of a path `sN`.
fn number(path: &str) -> u32 {
    path.trim_start_matches('s').parse().expect("a step sN")
}

/// How many times each step number's effect appears.
fn counts(effects: &[(u32, u32)]) -> BTreeMap<u32, usize> {
    let mut counts = BTreeMap::new();
    for (step, _) in effects {
        *counts.entry(*step).or_insert(0) += 1;
    }
    counts
}

/// The steps `records` show started and never ended (the step in flight).
fn in_flight(records: &[Value]) -> Option<u32> {
    let last_started = records
        .iter()
        .rev()
        .find(|r| r["event"] == "step_started")?;
    let path = last_started["path"].as_str()?;
    let ended = records.iter().any(|r| {
        r["path"] == path
            && r["event"] != "step_started"
            && r["seq"].as_u64() > last_started["seq"].as_u64()
    });
    (!ended).then(|| number(path))
}

#[test]
fn an_executors_runs_are_taken_over_when_it_is_killed_frozen_past_its_lease_or_stopped() {
    let began = Instant::now();
    let store = Store::new("/fleet-takeover");
    let sb = Sandbox::new();
    sb.write("runbooks/again.yaml", &ten_steps("again", true, "0.4"));
    sb.write("runbooks/once.yaml", &ten_steps("once", false, "0.4"));
    sb.write("runbooks/frozen.yaml", &ten_steps("frozen", true, "0.4"));
    sb.write("runbooks/handed.yaml", &ten_steps("handed", true, "0.4"));
    let a = Executor::start(&sb, &store, "a", 0);
    let b = Executor::start(&sb, &store, "b", 0);
    let c = Executor::start(&sb, &store, "c", 0);
    let (a_pid, a_id) = (a.pid(), a.identity());

    // SIGKILL of the owner of two runs, each in the middle of a step.
    let again = a.start_run("again");
    let once = a.start_run("once");
    wait_for("both runs in the middle of a step", SETTLE, || {
        mid_step(&store, &again, 3) && mid_step(&store, &once, 3)
    });
    let killed_at = Utc::now();
    a.kill();
    let before: BTreeMap<&str, Vec<Value>> = [
        (again.as_str(), store.records(&again)),
        (once.as_str(), store.records(&once)),
    ]
    .into();

    let mut takeover = None;
    wait_for("another executor to take the runs up", SETTLE, || {
        takeover = resumed_after(&store, &again, killed_at);
        takeover.is_some() && resumed_after(&store, &once, killed_at).is_some()
    });
    let takeover = takeover.expect("taken over");
    let took = at(&takeover) - killed_at;
    eprintln!(
        "takeover {} ms after the SIGKILL (TTL {TTL_SECONDS}s)",
        took.num_milliseconds()
    );
    assert!(
        took <= chrono::TimeDelta::seconds(i64::try_from(TTL_SECONDS).unwrap()) + TAKEOVER_MARGIN,
        "the takeover came {took} after the kill"
    );
    let new_owner = takeover["by"].as_str().expect("resumed by").to_owned();
    assert!(
        [b.identity(), c.identity()].contains(&new_owner),
        "resumed by {new_owner}, not by b or c"
    );
    assert_ne!(new_owner, a_id);

    let wait_state = |run: &str, state: &str| {
        wait_for(&format!("run {run} to be {state}"), SETTLE, || {
            b.get(&format!("/runs/{run}"))["state"] == state
        });
    };
    wait_state(&again, "succeeded");
    wait_state(&once, "needs-attention");
    let once_taker = resumed_after(&store, &once, killed_at).expect("taken over")["by"].clone();
    assert!(
        [json!(b.identity()), json!(c.identity())].contains(&once_taker),
        "resumed by {once_taker}, not by b or c"
    );
    assert_eq!(
        b.get(&format!("/runs/{once}"))["owner"],
        once_taker,
        "the run parked in needs-attention is held by the executor that took it over"
    );

    for (run, name) in [(&again, "again"), (&once, "once")] {
        let completed: Vec<u32> = succeeded(&before[run.as_str()])
            .iter()
            .map(|p| number(p))
            .collect();
        let flying = in_flight(&before[run.as_str()]).expect("a step in flight at the kill");
        let seen = counts(&effects(sb.path(), name));
        for step in &completed {
            assert_eq!(
                seen.get(step),
                Some(&1),
                "{name}: completed step s{step} has its effect once: {seen:?}"
            );
        }
        let after = succeeded(&store.records(run));
        if name == "again" {
            // Idempotent: run again by the new owner, and the rest after it.
            assert_eq!(
                after,
                (1..=10).map(|i| format!("s{i}")).collect::<Vec<_>>(),
                "{name}: every step succeeded once"
            );
            for step in flying + 1..=10 {
                assert_eq!(seen.get(&step), Some(&1), "{name}: s{step} once: {seen:?}");
            }
            assert!(
                matches!(seen.get(&flying), Some(1 | 2)),
                "{name}: the step in flight ran again: {seen:?}"
            );
        } else {
            // Not idempotent: nothing of it or after it ran again.
            assert_eq!(after.len(), completed.len(), "{name}: {after:?}");
            let detail = b.get(&format!("/runs/{run}"));
            assert_eq!(
                detail["attention"]["path"],
                format!("s{flying}"),
                "{detail}"
            );
            assert!(
                seen.keys().all(|s| *s <= flying),
                "{name}: no step after s{flying} ran: {seen:?}"
            );
        }
        // The steps after the kill ran in the new owner.
        assert!(
            effects(sb.path(), name)
                .iter()
                .filter(|(step, _)| *step > flying)
                .all(|(_, pid)| *pid != a_pid),
            "{name}: nothing ran in the killed executor after the kill"
        );
    }

    // SIGSTOP of the owner past its lease, SIGCONT once another executor took the run over.
    let frozen = c.start_run("frozen");
    let c_id = c.identity();
    wait_for("the run in the middle of a step", SETTLE, || {
        mid_step(&store, &frozen, 3)
    });
    let frozen_at = Utc::now();
    c.freeze();
    let flying = in_flight(&store.records(&frozen));
    let mut taken = None;
    wait_for(
        "another executor to take the frozen one's run",
        SETTLE,
        || {
            taken = resumed_after(&store, &frozen, frozen_at);
            taken.is_some()
        },
    );
    let taken = taken.expect("taken over");
    assert_eq!(taken["by"], json!(b.identity()), "b took it (a is gone)");
    c.thaw();
    wait_for(
        "the frozen executor to learn it lost its lease and join again",
        SETTLE,
        || c.identity() != c_id,
    );
    wait_for(&format!("run {frozen} to succeed"), SETTLE, || {
        b.get(&format!("/runs/{frozen}"))["state"] == "succeeded"
    });
    let records = store.records(&frozen);
    assert_eq!(
        succeeded(&records),
        (1..=10).map(|i| format!("s{i}")).collect::<Vec<_>>(),
        "every step succeeded exactly once: nothing appended by the frozen executor"
    );
    let takeover_seq = taken["seq"].as_u64().expect("seq");
    for r in records
        .iter()
        .filter(|r| r["seq"].as_u64() > Some(takeover_seq))
    {
        assert!(
            !(r["event"] == "resumed" && r["by"] == json!(c_id)),
            "the frozen executor resumed the run: {r}"
        );
    }
    let c_pid = c.pid();
    let by_c: Vec<u32> = effects(sb.path(), "frozen")
        .into_iter()
        .filter(|(_, pid)| *pid == c_pid)
        .map(|(step, _)| step)
        .collect();
    let flying = flying.expect("a step in flight at the freeze");
    assert!(
        by_c.iter().all(|s| *s <= flying),
        "the frozen executor ran no step after s{flying}: {by_c:?}"
    );
    let out = c.output();
    assert!(
        !c.events("lost").is_empty(),
        "the frozen executor says its lease is gone:\n{out}"
    );
    assert!(
        out.contains(&format!(
            "run {frozen} stopped here without writing anything more"
        )),
        "the frozen executor's write was refused and its execution ended:\n{out}"
    );

    // SIGTERM: the owner stops its run at a safe point and leaves; the other takes it up at
    // once, not after the TTL.
    let handed = b.start_run("handed");
    wait_for("the run in the middle of a step", SETTLE, || {
        mid_step(&store, &handed, 2)
    });
    let b_pid = b.pid();
    b.stop();
    let stopped_at = Utc::now();
    let mut resumed = None;
    wait_for("the other executor to take the run up", SETTLE, || {
        resumed = resumed_after(&store, &handed, stopped_at - chrono::TimeDelta::seconds(5));
        resumed.is_some()
    });
    let resumed = resumed.expect("taken up");
    let after = at(&resumed) - stopped_at;
    eprintln!(
        "taken up {} ms after the SIGTERMed executor exited",
        after.num_milliseconds()
    );
    assert_eq!(resumed["by"], json!(c.identity()));
    assert!(
        after < chrono::TimeDelta::seconds(2),
        "taken up {after} after the graceful stop: the lease was not revoked"
    );
    let records = store.records(&handed);
    assert!(
        records
            .iter()
            .any(|r| r["event"] == "state_changed" && r["state"] == "interrupted"),
        "the run was stopped at a safe point and journaled as interrupted"
    );
    wait_for(&format!("run {handed} to succeed"), SETTLE, || {
        c.get(&format!("/runs/{handed}"))["state"] == "succeeded"
    });
    assert_eq!(
        succeeded(&store.records(&handed)),
        (1..=10).map(|i| format!("s{i}")).collect::<Vec<_>>(),
    );
    let seen = effects(sb.path(), "handed");
    assert_eq!(
        counts(&seen).values().copied().collect::<Vec<_>>(),
        vec![1; 10],
        "each step's effect once (the step the SIGTERM stopped was stopped before its effect): {seen:?}"
    );
    assert!(seen.iter().any(|(_, pid)| *pid == b_pid));
    drop(c);
    eprintln!("test took {:?}", began.elapsed());
}

#[test]
fn an_approval_reaches_the_owner_through_another_executor_and_runs_wait_out_a_quorum_loss() {
    let began = Instant::now();
    let store = Store::new("/fleet-quorum");
    let sb = Sandbox::new();
    sb.write(
        "runbooks/gated.yaml",
        r#"runbook: gated
params:
  token: { type: string, secret: true, default: "initial-secret" }
steps:
  - id: confirm
    gate: "Check, then approve."
  - id: after
    shell: { run: "echo 1 $PPID >> gated.effects" }
  - id: finally
    gate: "Approve the end."
  - id: last
    shell: { run: "echo 2 $PPID >> gated.effects" }
"#,
    );
    sb.write("runbooks/steady.yaml", &ten_steps("steady", true, "0.3"));
    sb.write("runbooks/stable.yaml", &ten_steps("stable", true, "0.3"));
    let a = Executor::start(&sb, &store, "a", 0);
    let b = Executor::start(&sb, &store, "b", 0);

    // An approval through b of a run a owns.
    let gated = a.start_run("gated");
    wait_for("the run to wait at its gate", SETTLE, || {
        b.get(&format!("/runs/{gated}"))["state"] == "waiting"
    });
    let listed = b.get("/runs");
    let row = listed
        .as_array()
        .expect("a list")
        .iter()
        .find(|r| r["id"] == json!(gated))
        .expect("b lists a's run")
        .clone();
    assert_eq!(row["owner"], json!(a.identity()), "{row}");
    let revision = store.revision();
    let (status, body) = b.call(
        "POST",
        &format!("/runs/{gated}/approve"),
        Some(&json!({ "comment": "dashboards green", "params": { "token": "s3cr3t-value" } })),
    );
    assert_eq!(status, 409, "{body}");
    let refusal = body["error"].as_str().expect("a message");
    assert!(
        refusal.contains(&format!("is executed by executor {}", a.identity()))
            && refusal.contains("secret parameter `token`"),
        "{refusal}"
    );
    assert!(
        !store.held_since(revision, b"s3cr3t-value"),
        "the secret went into etcd"
    );
    // From the command line of a machine without an executor: sent to a, followed through
    // the journal until the run parks at its next gate (exit 3), as a local approve would.
    let journal = store.journal();
    let cli = |args: &[&str]| {
        let mut all = vec!["--journal", &journal];
        all.extend_from_slice(args);
        sb.cmd(&all)
            .env("XDG_STATE_HOME", sb.path().join("state-cli"))
    };
    let out = cli(&["approve", &gated, "--as", "bob", "--comment", "checked"]).code(3);
    assert!(
        out.stdout
            .contains(&format!("run {gated} is waiting at gate `finally`")),
        "{}",
        out.explain("the approve follows the run to its next gate")
    );
    let history = cli(&["history", "--output", "json"]).ok();
    let row: Value = history
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|r| r["id"] == json!(gated))
        .expect("history lists the run");
    assert_eq!(row["owner"], json!(a.identity()), "{row}");
    let (status, body) = b.call(
        "POST",
        &format!("/runs/{gated}/approve"),
        Some(&json!({ "comment": "dashboards green" })),
    );
    assert_eq!(status, 202, "{body}");
    wait_for("the approved run to succeed", SETTLE, || {
        b.get(&format!("/runs/{gated}"))["state"] == "succeeded"
    });
    assert_eq!(
        effects(sb.path(), "gated"),
        vec![(1, a.pid()), (2, a.pid())],
        "the run went on in its owner, a"
    );
    let decided: Vec<(Value, Value, Value)> = store
        .records(&gated)
        .into_iter()
        .filter(|r| r["event"] == "gate_decided")
        .map(|r| (r["path"].clone(), r["by"].clone(), r["comment"].clone()))
        .collect();
    assert_eq!(
        decided,
        vec![
            (json!("confirm"), json!("bob"), json!("checked")),
            (json!("finally"), json!("alice"), json!("dashboards green")),
        ]
    );
    assert!(
        a.events("asked").iter().any(|e| e["run"] == json!(gated)),
        "a was asked through the store:\n{}",
        a.output()
    );

    // Quorum lost mid-run, then back.
    let steady = a.start_run("steady");
    let stable = b.start_run("stable");
    wait_for("both runs under way", SETTLE, || {
        mid_step(&store, &steady, 2) && mid_step(&store, &stable, 2)
    });
    store.kill_members(&[2, 3]);
    let lost_at = Instant::now();
    let before = effects(sb.path(), "steady").len() + effects(sb.path(), "stable").len();
    wait_for(
        "both executors to see their leases suspended",
        SETTLE,
        || !a.events("suspended").is_empty() && !b.events("suspended").is_empty(),
    );
    eprintln!(
        "leases suspended {:?} after the quorum loss",
        lost_at.elapsed()
    );
    let paused = effects(sb.path(), "steady").len() + effects(sb.path(), "stable").len();
    assert!(
        paused <= before + 2,
        "at most the step in flight of each run finished without quorum ({before} → {paused})"
    );
    store.start_member(2);
    store.start_member(3);
    wait_for("both executors to hold their leases again", SETTLE, || {
        !a.events("held").is_empty() && !b.events("held").is_empty()
    });
    for (run, name) in [(&steady, "steady"), (&stable, "stable")] {
        wait_for(&format!("run {name} to finish"), SETTLE, || {
            b.get(&format!("/runs/{run}"))["state"] == "succeeded"
        });
        assert_eq!(
            succeeded(&store.records(run)),
            (1..=10).map(|i| format!("s{i}")).collect::<Vec<_>>(),
            "{name}: every step succeeded once"
        );
        let seen = counts(&effects(sb.path(), name));
        assert_eq!(
            seen.keys().copied().collect::<Vec<_>>(),
            (1..=10).collect::<Vec<_>>(),
            "{name}: every step's effect is there: {seen:?}"
        );
    }
    drop((a, b));
    eprintln!("test took {:?}", began.elapsed());
}

/// On a journal shared by several executors, the web page of any one of them says which
/// executor executes each run: in the runs list and in the run's details.
#[test]
fn the_web_page_of_any_executor_shows_which_executor_executes_each_run() {
    crate::web::browser_dir();
    let store = Store::new("/fleet-web-owner");
    let sb = Sandbox::new();
    sb.write(
        "runbooks/parked.yaml",
        "runbook: parked\nsteps:\n  - id: wait\n    gate: \"Approve?\"\n",
    );
    let a = Executor::start(&sb, &store, "a", 0);
    let b = Executor::start(&sb, &store, "b", 0);
    let on_a = a.start_run("parked");
    let on_b = b.start_run("parked");
    for run in [&on_a, &on_b] {
        wait_for("the run to park at its gate", SETTLE, || {
            b.get(&format!("/runs/{run}"))["state"] == "waiting"
        });
    }
    let shot = crate::web::screenshot("web-fleet-owner.png");
    let (status, out) = crate::web::script(
        "owner.mjs",
        &[
            &b.url,
            crate::support::fleet::ALICE,
            shot.to_str().expect("utf-8 path"),
            &format!("{on_a}={}", a.identity()),
            &format!("{on_b}={}", b.identity()),
        ],
    );
    assert!(
        status.is_some_and(|s| s.success()),
        "owner.mjs should read a's run as executed by a and b's by b on b's page; it ended \
         {status:?}:\n{out}\n--- b ---\n{}",
        b.output()
    );
}
