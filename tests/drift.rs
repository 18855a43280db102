//! A run is pinned to the runbook as it was when it started: a foreach interrupted mid-loop
//! resumes with its journaled items even after the runbook file was edited, and the edit is
//! reported as drift. `resume --reload` is the explicit way to adopt the edited file.

use std::os::unix::process::ExitStatusExt as _;

use serde_json::Value;

use crate::support::Sandbox;

// `nap` puts a commit between `first` and the loop (an effect's outcome rides on the next
// commit); `item` is idempotent so a run killed right after an item's start resumes by running
// it (its effect had not happened yet).
const LOOP: &str = r#"
runbook: drifting
steps:
  - id: first
    shell: { run: "echo first >> out.txt" }
  - id: nap
    sleep: 10ms
  - id: loop
    foreach: "[1, 2, 3]"
    as: n
    steps:
      - id: item
        idempotent: true
        shell: { run: "echo item-{{n}} >> out.txt" }
  - id: last
    shell: { run: "echo last >> out.txt" }
"#;

/// The same runbook after an operator edited it: other items, another command, one more step.
const EDITED: &str = r#"
runbook: drifting
steps:
  - id: first
    shell: { run: "echo first >> out.txt" }
  - id: nap
    sleep: 10ms
  - id: loop
    foreach: "[7, 8, 9]"
    as: n
    steps:
      - id: item
        shell: { run: "echo item-{{n}} >> out.txt" }
  - id: last
    shell: { run: "echo last-edited >> out.txt" }
  - id: extra
    shell: { run: "echo extra >> out.txt" }
"#;

/// The last record that says something about a step (not a state change).
fn last_step_record(records: &[Value]) -> Option<&Value> {
    records
        .iter()
        .rev()
        .find(|r| r["path"].is_string() && r["event"] != "state_changed")
}

/// Runs `drifting.yaml` killed after each commit in turn until the journal's last step record
/// is `event` at `path`; returns the sandbox and the run. (How many commits a run makes can
/// vary by one or two with timing — a durable sleep whose wake time has already passed is not
/// journaled as sleeping — so the search starts over a few times.)
fn killed_after(event: &str, path: &str) -> (Sandbox, String) {
    for _round in 0..3 {
        for kill in 1..=30u32 {
            let sb = Sandbox::new();
            sb.write("drifting.yaml", LOOP);
            let out = sb
                .cmd(&["run", "drifting.yaml"])
                .env("RUNBOOK_TEST_KILL_AFTER_COMMIT", kill.to_string())
                .run();
            if out.status.signal() != Some(9) {
                out.expect_code(0);
                break;
            }
            let run = sb.only_run();
            let records = sb.records(&run);
            if last_step_record(&records).is_some_and(|r| r["event"] == event && r["path"] == path)
            {
                return (sb, run);
            }
        }
    }
    panic!("no kill point left {event} of {path} as the last record");
}

fn lines(sb: &Sandbox) -> Vec<String> {
    sb.read("out.txt").lines().map(str::to_owned).collect()
}

#[test]
fn an_interrupted_foreach_resumes_with_its_journaled_items_after_the_file_was_edited() {
    let (sb, run) = killed_after("step_started", "loop[1].item");
    assert_eq!(lines(&sb), ["first", "item-1"]);
    let records = sb.records(&run);
    let items: Vec<&Value> = records
        .iter()
        .filter(|r| r["event"] == "items_decided")
        .collect();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["items"], serde_json::json!([1, 2, 3]));

    sb.write("drifting.yaml", EDITED);
    let out = sb.cmd(&["resume", &run]).ok();
    assert!(
        out.stdout.contains(
            "warning: drifting.yaml was modified since the run started; the run continues with its pinned copy"
        ),
        "{}",
        out.explain("resume must report the drift, naming the file")
    );
    assert_eq!(
        lines(&sb),
        ["first", "item-1", "item-2", "item-3", "last"],
        "the pinned items and commands, each effect once, nothing from the edit"
    );

    let records = sb.records(&run);
    let resumed: Vec<&Value> = records.iter().filter(|r| r["event"] == "resumed").collect();
    assert_eq!(resumed.len(), 1);
    let drift = resumed[0]["drift"].as_array().expect("a drift list");
    assert_eq!(drift.len(), 1, "{drift:?}");
    assert_eq!(drift[0]["change"], "modified");
    assert!(
        drift[0]["origin"]
            .as_str()
            .is_some_and(|o| o.ends_with("drifting.yaml")),
        "{drift:?}"
    );
    assert!(
        !records.iter().any(|r| r["event"] == "source_reloaded"),
        "a plain resume keeps the pinned source"
    );
    assert_eq!(
        records
            .iter()
            .filter(|r| r["event"] == "items_decided")
            .count(),
        1,
        "the items are decided once"
    );
}

#[test]
fn resume_reload_adopts_the_edited_file_for_steps_that_have_not_started() {
    let (sb, run) = killed_after("timer_set", "nap");
    assert_eq!(lines(&sb), ["first"]);

    sb.write("drifting.yaml", EDITED);
    let out = sb.cmd(&["resume", &run, "--reload"]).ok();
    assert!(
        !out.stdout.contains("warning:"),
        "{}",
        out.explain("an adopted edit is not drift")
    );
    assert_eq!(
        lines(&sb),
        [
            "first",
            "item-7",
            "item-8",
            "item-9",
            "last-edited",
            "extra"
        ]
    );

    let records = sb.records(&run);
    let reloaded: Vec<&Value> = records
        .iter()
        .filter(|r| r["event"] == "source_reloaded")
        .collect();
    assert_eq!(reloaded.len(), 1);
    let content = reloaded[0]["sources"][0]["content"]
        .as_str()
        .expect("the reloaded source is pinned");
    assert!(content.contains("[7, 8, 9]"), "{content}");
    let items = records
        .iter()
        .find(|r| r["event"] == "items_decided")
        .expect("items decided");
    assert_eq!(items["items"], serde_json::json!([7, 8, 9]));
}
