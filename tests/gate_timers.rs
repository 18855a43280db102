//! Gates on time, in `serve`: a gate's expiry is applied when it is due with nobody touching
//! the run, and webhooks and the run page hear of it; a late verdict is refused (409) and
//! changes nothing; `on_timeout` says what the expiry means; `approvals: N` needs N distinct
//! people (among `approvers`, when listed); parked gates survive a restart of `serve`.
//!
//! Every test drives the built binary through the `serve` harness of `tests/serve.rs`. Waits
//! poll the API against a bounded deadline; where time must pass (a gate's expiry while
//! `serve` is down) the condition is the wall clock against the journaled expiry.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};

use crate::serve::{Receiver, SETTLE, Serve, call, events, time, wait_until};
use crate::support::{Sandbox, wait_for};

/// A gate that expires after `timeout` meaning `on_timeout`, between two steps that note
/// themselves in the run's file, and a cleanup that notes itself when the run fails.
fn timed(name: &str, timeout: &str, on_timeout: Option<&str>) -> String {
    let on_timeout = on_timeout.map_or(String::new(), |o| format!(", on_timeout: {o}"));
    format!(
        r#"
runbook: {name}
steps:
  - id: before
    shell: {{ run: "echo before >> out-{{{{run.id}}}}.txt" }}
  - id: confirm
    gate: {{ prompt: "Approve within {timeout}", timeout: {timeout}{on_timeout} }}
  - id: after
    shell: {{ run: "echo after >> out-{{{{run.id}}}}.txt" }}
on_failure:
  - id: cleanup
    shell: {{ run: "echo cleanup >> out-{{{{run.id}}}}.txt" }}
"#
    )
}

/// How late after its journaled expiry `serve` may apply a gate's expiry on a loaded 2-core
/// machine (the report that prompted this: 18 s, until someone touched the run).
const ON_TIME: TimeDelta = TimeDelta::seconds(5);

/// The `expires_at` the run's gate was opened with.
fn expires_at(records: &[Value]) -> DateTime<Utc> {
    let opened = events(records, "gate_opened");
    assert_eq!(opened.len(), 1, "{records:#?}");
    time(&opened[0]["expires_at"])
}

/// Waits until run `id` is in `state`, for at most `limit`; the run as the API shows it.
fn await_state(serve: &Serve, id: &str, state: &str, limit: Duration) -> Value {
    let mut run = Value::Null;
    wait_for(&format!("run {id} to be {state}"), limit, || {
        run = serve.run(id);
        run["state"] == state
    });
    run
}

/// The `gate_expired` record of a run, checked against its gate's expiry; when it was
/// journaled.
fn expired_record(records: &[Value], outcome: &str) -> DateTime<Utc> {
    let expired = events(records, "gate_expired");
    assert_eq!(expired.len(), 1, "{records:#?}");
    assert_eq!(expired[0]["path"], "confirm");
    assert_eq!(expired[0]["outcome"], outcome);
    assert_eq!(time(&expired[0]["expired_at"]), expires_at(records));
    time(&expired[0]["at"])
}

#[test]
fn in_serve_a_gate_expires_on_time_with_nobody_acting_and_a_late_approve_is_refused() {
    let sb = Sandbox::new();
    // With a lock: the run holds it while parked, and must let it go when the gate expires.
    sb.write(
        "runbooks/two-seconds.yaml",
        &timed("two-seconds", "2s", None).replace("steps:", "lock: gate-test\nsteps:"),
    );
    let receiver = Receiver::start(false);
    let serve = Serve::start(&sb, &["--webhook", &receiver.url]);

    let run = serve.start_run("two-seconds");
    serve.wait_state(&run, "waiting");
    let due = expires_at(&serve.records(&run));
    // Nobody acts: the run must end by itself, shortly after its gate's expiry.
    let limit = (due + ON_TIME - Utc::now()).to_std().unwrap_or_default();
    let failed = await_state(&serve, &run, "failed", limit);
    let records = serve.records(&run);
    let applied = expired_record(&records, "fail");
    assert!(
        applied >= due && applied - due <= ON_TIME,
        "the expiry due at {due} was applied at {applied}"
    );
    assert!(
        events(&records, "gate_decided").is_empty(),
        "nobody decided: {records:#?}"
    );
    let resumed = events(&records, "resumed");
    assert_eq!(resumed.len(), 1, "{records:#?}");
    assert_eq!(resumed[0]["by"], "serve", "serve itself applied the expiry");
    assert!(
        failed["reason"]
            .as_str()
            .is_some_and(|r| r.contains("nobody decided before the gate expired")),
        "{failed:#}"
    );
    assert!(failed["open_gate"].is_null(), "{failed:#}");
    assert_eq!(
        sb.read(&format!("out-{run}.txt")),
        "before\ncleanup\n",
        "the step after the gate never ran; the run's on_failure did"
    );
    // The run's lock and the run itself are free: a new run of it starts and parks.
    let again = serve.start_run("two-seconds");
    serve.wait_state(&again, "waiting");

    // The webhook hears of it, with the gate and what the expiry meant.
    wait_for("the gate-expired message", SETTLE, || {
        receiver
            .accepted()
            .iter()
            .any(|m| m["event"] == "gate-expired" && m["run"] == run.as_str())
    });
    let messages: Vec<Value> = receiver
        .accepted()
        .into_iter()
        .filter(|m| m["run"] == run.as_str())
        .collect();
    let expired = messages
        .iter()
        .find(|m| m["event"] == "gate-expired")
        .expect("gate-expired");
    assert_eq!(expired["step"], "confirm");
    assert_eq!(expired["on_timeout"], "fail");
    assert_eq!(time(&expired["expired_at"]), due);
    assert!(
        expired["text"]
            .as_str()
            .is_some_and(|t| t.contains(&run) && t.contains("expired")),
        "{expired}"
    );
    wait_for("the run-failed message", SETTLE, || {
        receiver
            .accepted()
            .iter()
            .any(|m| m["event"] == "run-failed" && m["run"] == run.as_str())
    });

    // A late approve is refused with 409, says why, and changes nothing.
    let before = serve.records(&run);
    let (status, body) = serve.post(
        &format!("/runs/{run}/approve"),
        &json!({ "comment": "sorry, late" }),
    );
    assert_eq!(status, 409, "{body}");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("gate `confirm`")
            && error.contains("expired")
            && error.contains("can no longer be decided"),
        "{body}"
    );
    assert!(
        body.get("approved").is_none(),
        "never answered as approved: {body}"
    );
    assert_eq!(
        serve.records(&run),
        before,
        "a refused approval writes nothing"
    );
    let (status, body) = serve.post(&format!("/runs/{run}/reject"), &json!({}));
    assert_eq!(status, 409, "{body}");
    assert_eq!(
        serve.records(&run),
        before,
        "a refused rejection writes nothing"
    );

    // The run page tells what happened and when, as the webhook did.
    let page = serve.run(&run);
    let happened: Vec<(String, DateTime<Utc>)> = page["happened"]
        .as_array()
        .expect("happened")
        .iter()
        .map(|e| {
            (
                e["event"].as_str().expect("event").to_owned(),
                time(&e["at"]),
            )
        })
        .collect();
    let names: Vec<&str> = happened.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(
        names,
        ["gate-opened", "gate-expired", "run-failed"],
        "{page:#}"
    );
    assert_eq!(happened[1].1, applied);
    assert!(
        page["happened"][1]["text"]
            .as_str()
            .is_some_and(|t| t.contains("gate `confirm` expired")),
        "{page:#}"
    );
    serve.stop();
}

#[test]
fn on_timeout_approve_continues_the_run_and_reject_and_fail_end_it_as_documented() {
    let sb = Sandbox::new();
    sb.write(
        "runbooks/lenient.yaml",
        &timed("lenient", "2s", Some("approve")),
    );
    sb.write(
        "runbooks/strict.yaml",
        &timed("strict", "2s", Some("reject")),
    );
    sb.write("runbooks/plain.yaml", &timed("plain", "2s", Some("fail")));
    let receiver = Receiver::start(false);
    let serve = Serve::start(&sb, &["--webhook", &receiver.url]);

    let lenient = serve.start_run("lenient");
    let strict = serve.start_run("strict");
    let plain = serve.start_run("plain");
    let mut due = Utc::now();
    for run in [&lenient, &strict, &plain] {
        serve.wait_state(run, "waiting");
        due = due.max(expires_at(&serve.records(run)));
    }
    let limit = (due + ON_TIME - Utc::now()).to_std().unwrap_or_default();

    // approve: the gate counts as approved by its timeout and the run goes on.
    let done = await_state(&serve, &lenient, "succeeded", limit);
    assert_eq!(sb.read(&format!("out-{lenient}.txt")), "before\nafter\n");
    let records = serve.records(&lenient);
    expired_record(&records, "approve");
    let confirm = records
        .iter()
        .find(|r| r["event"] == "step_succeeded" && r["path"] == "confirm")
        .expect("the gate step succeeded");
    assert_eq!(confirm["output"]["approved"], true);
    assert_eq!(confirm["output"]["by"], "timeout");
    assert_eq!(confirm["output"]["on_timeout"], "approve");
    assert!(done["open_gate"].is_null(), "{done:#}");

    // reject: as if a person had rejected it — the gate fails, on_failure runs, the run fails.
    let rejected = await_state(&serve, &strict, "failed", limit);
    assert_eq!(sb.read(&format!("out-{strict}.txt")), "before\ncleanup\n");
    expired_record(&serve.records(&strict), "reject");
    assert!(
        rejected["reason"]
            .as_str()
            .is_some_and(|r| r.contains("rejected by its timeout")),
        "{rejected:#}"
    );

    // fail (the default): the gate step fails with the expiry; on_failure runs.
    let failed = await_state(&serve, &plain, "failed", limit);
    assert_eq!(sb.read(&format!("out-{plain}.txt")), "before\ncleanup\n");
    expired_record(&serve.records(&plain), "fail");
    assert!(
        failed["reason"]
            .as_str()
            .is_some_and(|r| r.contains("nobody decided before the gate expired")),
        "{failed:#}"
    );

    // Each expiry was told, with what it meant.
    wait_for("three gate-expired messages", SETTLE, || {
        receiver
            .accepted()
            .iter()
            .filter(|m| m["event"] == "gate-expired")
            .count()
            == 3
    });
    let told: BTreeSet<(String, String)> = receiver
        .accepted()
        .iter()
        .filter(|m| m["event"] == "gate-expired")
        .map(|m| {
            (
                m["run"].as_str().expect("run").to_owned(),
                m["on_timeout"].as_str().expect("on_timeout").to_owned(),
            )
        })
        .collect();
    let want: BTreeSet<(String, String)> = [
        (lenient.clone(), "approve".to_owned()),
        (strict.clone(), "reject".to_owned()),
        (plain.clone(), "fail".to_owned()),
    ]
    .into_iter()
    .collect();
    assert_eq!(told, want);
    serve.stop();
}

const ALICE: &str = "a11ce0000000000000000000000a11ce";
const BOB: &str = "b0b00000000000000000000000000b0b";
const CAROL: &str = "ca201000000000000000000000ca2010";
const MALLORY: &str = "ma11020000000000000000000ma11020";

const TWO_PEOPLE: &str = r#"
runbook: two-people
steps:
  - id: confirm
    gate:
      prompt: "Rotate the root key?"
      approvals: 2
      approvers: [alice, bob, carol]
      four_eyes: true
  - id: after
    shell: { run: "echo after >> out-{{run.id}}.txt" }
"#;

/// A sandbox with the two-people runbook and tokens for alice, bob, carol and mallory.
fn people_sandbox() -> (Sandbox, PathBuf) {
    let sb = Sandbox::new();
    sb.write("runbooks/two-people.yaml", TWO_PEOPLE);
    let tokens = sb.write(
        "tokens",
        &format!("alice: {ALICE}\nbob: {BOB}\ncarol: {CAROL}\nmallory: {MALLORY}\n"),
    );
    (sb, tokens)
}

#[test]
fn approvals_two_needs_two_distinct_listed_approvers_and_refusals_change_nothing() {
    let (sb, tokens) = people_sandbox();
    let serve = Serve::start(&sb, &["--tokens", tokens.to_str().expect("utf-8")]);
    let as_ = |token: &str, verb: &str, run: &str, body: Value| {
        call(
            "POST",
            &serve.api(&format!("/runs/{run}/{verb}")),
            Some(token),
            Some(&body),
        )
    };
    let (status, body) = call(
        "POST",
        &serve.api("/runs"),
        Some(CAROL),
        Some(&json!({ "runbook": "two-people" })),
    );
    assert_eq!(status, 201, "{body}");
    let run = body["run"].as_str().expect("run").to_owned();
    let parked = serve.wait_state(&run, "waiting");
    assert_eq!(parked["open_gate"]["approvals"], 2);
    assert_eq!(
        parked["open_gate"]["approvers"],
        json!(["alice", "bob", "carol"])
    );

    // Refused, each with its reason, and nothing journaled: someone not listed (either
    // verdict), and the starter of a four-eyes gate.
    let before = serve.records(&run);
    for (token, verb, words) in [
        (MALLORY, "approve", "mallory may not decide gate `confirm`"),
        (MALLORY, "reject", "only alice, bob, carol may"),
        (CAROL, "approve", "needs a second person: carol started run"),
    ] {
        let (status, body) = as_(token, verb, &run, json!({ "comment": "me" }));
        assert_eq!(status, 409, "{verb}: {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| e.contains(words)),
            "{verb}: {body}"
        );
        assert_eq!(
            serve.records(&run),
            before,
            "a refused {verb} writes nothing"
        );
    }

    // Alice's approval is the first of two: the run parks again, saying so.
    let (status, body) = as_(
        ALICE,
        "approve",
        &run,
        json!({ "comment": "backup verified" }),
    );
    assert_eq!(status, 202, "{body}");
    // The approval is journaled before the 202; the run then parks again, saying so.
    let mut one = Value::Null;
    wait_for(
        "the run to park again with alice's approval counted",
        SETTLE,
        || {
            one = serve.run(&run);
            one["state"] == "waiting"
                && one["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("(1 of 2 approvals: alice)"))
        },
    );
    assert_eq!(one["open_gate"]["approved_by"], json!(["alice"]), "{one:#}");
    assert!(
        !sb.path().join(format!("out-{run}.txt")).exists(),
        "nothing past the gate ran"
    );

    // Alice again: counts once, and she is told.
    let before = serve.records(&run);
    let (status, body) = as_(ALICE, "approve", &run, json!({}));
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"].as_str().is_some_and(|e| e
            .contains("alice has approved gate `confirm` of run")
            && e.contains("an approval counts once per person (1 of 2 approvals so far: alice)")),
        "{body}"
    );
    assert_eq!(
        serve.records(&run),
        before,
        "a second approval by one person writes nothing"
    );

    // Bob's is the second distinct approval: the gate opens and the run goes on.
    let (status, body) = as_(BOB, "approve", &run, json!({ "comment": "agreed" }));
    assert_eq!(status, 202, "{body}");
    serve.wait_state(&run, "succeeded");
    assert_eq!(sb.read(&format!("out-{run}.txt")), "after\n");
    let records = serve.records(&run);
    let decided: Vec<(String, String)> = events(&records, "gate_decided")
        .iter()
        .map(|r| {
            assert_eq!(r["approved"], true);
            (
                r["by"].as_str().expect("by").to_owned(),
                r["comment"].as_str().expect("comment").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        decided,
        [
            ("alice".to_owned(), "backup verified".to_owned()),
            ("bob".to_owned(), "agreed".to_owned())
        ]
    );
    let confirm = records
        .iter()
        .find(|r| r["event"] == "step_succeeded" && r["path"] == "confirm")
        .expect("the gate step succeeded");
    assert_eq!(confirm["output"]["by"], "alice, bob");
    assert_eq!(confirm["output"]["approvals"][1]["comment"], "agreed");

    // A verdict on a decided gate: 409, naming who decided.
    let before = serve.records(&run);
    let (status, body) = as_(CAROL, "reject", &run, json!({}));
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("was decided already: approved by alice, bob")),
        "{body}"
    );
    assert_eq!(serve.records(&run), before);
    serve.stop();
}

#[test]
fn a_gate_that_expired_while_serve_was_down_is_applied_when_serve_starts_and_others_rearmed() {
    let sb = Sandbox::new();
    // Long enough that the first serve is stopped before either gate expires.
    sb.write("runbooks/short.yaml", &timed("short", "6s", Some("reject")));
    sb.write("runbooks/long.yaml", &timed("long", "14s", None));
    let first = Serve::start(&sb, &[]);
    let short = first.start_run("short");
    let long = first.start_run("long");
    first.wait_state(&short, "waiting");
    first.wait_state(&long, "waiting");
    let short_due = expires_at(&first.records(&short));
    let long_due = expires_at(&first.records(&long));
    first.stop();
    for run in [&short, &long] {
        let status = sb.status(run);
        assert_eq!(status["state"], "waiting", "{status:#}");
        assert!(
            events(&sb.records(run), "gate_expired").is_empty(),
            "the first serve stopped before the expiry"
        );
    }

    // The short gate expires while no serve runs.
    wait_until(
        "the short gate's expiry",
        short_due + TimeDelta::milliseconds(200),
    );
    let restarted = Utc::now();
    let second = Serve::start(&sb, &[]);
    let limit = SETTLE;
    await_state(&second, &short, "failed", limit);
    let records = second.records(&short);
    let applied = expired_record(&records, "reject");
    assert!(
        applied >= restarted && applied - restarted <= ON_TIME,
        "applied at {applied}, serve started at {restarted}"
    );
    assert_eq!(sb.read(&format!("out-{short}.txt")), "before\ncleanup\n");

    // The long one was armed again at start and expires on time.
    wait_for("serve to say it armed the long gate again", SETTLE, || {
        second
            .output()
            .contains(&format!("gate `confirm` of run {long} expires at"))
    });
    assert_eq!(second.run(&long)["state"], "waiting");
    let limit = (long_due + ON_TIME - Utc::now())
        .to_std()
        .unwrap_or_default();
    await_state(&second, &long, "failed", limit);
    let applied = expired_record(&second.records(&long), "fail");
    assert!(
        applied >= long_due && applied - long_due <= ON_TIME,
        "due at {long_due}, applied at {applied}"
    );
    second.stop();
}
