//! `--output json` on every command (issue 12, item 5): stdout is JSON documents, one per
//! line, with the field names the README's "JSON output" lists — what a script relies on.

use serde_json::Value;

use crate::serve::Serve;
use crate::support::{Output, Sandbox};

/// Every line of stdout as JSON; panics, showing the output, on a line that is not.
fn lines(out: &Output) -> Vec<Value> {
    out.stdout
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| {
                panic!(
                    "{}",
                    out.explain(&format!("stdout line is not JSON ({e}): {l}"))
                )
            })
        })
        .collect()
}

/// The only JSON document on stdout.
fn one(out: &Output) -> Value {
    let mut all = lines(out);
    assert_eq!(all.len(), 1, "{}", out.explain("one JSON document"));
    all.remove(0)
}

#[test]
fn issue_12_check_prints_one_object_per_problem_with_its_place_and_keeps_its_exit_code() {
    let sb = Sandbox::new();
    sb.write(
        "broken.yaml",
        "runbook: broken\nparams:\n  target: string\nsteps:\n  - id: a\n    shel: { run: \"echo\" }\n  - id: b\n    shell: { run: \"echo {{params.targte}}\" }\n",
    );
    sb.write(
        "fine.yaml",
        "runbook: fine\nsteps:\n  - id: a\n    shell: { run: \"echo ok\" }\n",
    );
    let out = sb
        .cmd(&["check", "broken.yaml", "fine.yaml", "--output", "json"])
        .code(2);
    let all = lines(&out);
    let problems: Vec<&Value> = all.iter().filter(|v| v["event"] == "problem").collect();
    let places: Vec<(&str, u64, u64, &str, &str)> = problems
        .iter()
        .filter(|p| p["target"] == "broken.yaml")
        .map(|p| {
            (
                p["file"].as_str().expect("a file"),
                p["line"].as_u64().expect("a line"),
                p["column"].as_u64().expect("a column"),
                p["message"].as_str().expect("a message"),
                p["suggestion"].as_str().unwrap_or("(none)"),
            )
        })
        .collect();
    assert!(
        places.contains(&(
            "broken.yaml",
            6,
            5,
            "unknown field `shel` in a step",
            "shell"
        )),
        "{places:#?}"
    );
    assert!(
        places.contains(&("broken.yaml", 8, 34, "unknown parameter `targte`", "target")),
        "{places:#?}"
    );
    assert!(problems.iter().all(|p| p["severity"] == "error"));
    // A problem without a probable meaning says so with null, not a missing field.
    assert!(
        problems
            .iter()
            .any(|p| p["suggestion"].is_null() && p.get("suggestion").is_some()),
        "{problems:#?}"
    );
    let verdicts: Vec<(&str, bool)> = all
        .iter()
        .filter(|v| v["event"] == "checked")
        .map(|v| {
            (
                v["target"].as_str().expect("a target"),
                v["ok"].as_bool().expect("ok"),
            )
        })
        .collect();
    assert_eq!(verdicts, [("broken.yaml", false), ("fine.yaml", true)]);

    // A name not found is a problem with no place, and its probable meaning.
    sb.write(
        "runbooks/hello.yaml",
        "runbook: hello\nsteps:\n  - id: a\n    shell: { run: \"echo hi\" }\n",
    );
    let out = sb.cmd(&["check", "helo", "--output", "json"]).code(2);
    let problem = &lines(&out)[0];
    assert_eq!(problem["event"], "problem");
    assert_eq!(problem["line"], Value::Null);
    assert_eq!(problem["suggestion"], "hello");
}

#[test]
fn issue_12_show_prints_the_params_with_types_and_defaults_and_the_step_tree() {
    let sb = Sandbox::new();
    sb.write(
        "runbooks/deploy.yaml",
        r#"
runbook: deploy
description: Deploys.
params:
  replicas: { type: int, default: 3, description: how many }
  region: { type: string, enum: [eu, us], default: eu }
  token: { type: string, secret: true, default: "hunter2-default", env: DEPLOY_TOKEN }
  version: { type: string, required: true, pattern: '^\d+$' }
lock: "deploy/{{params.region}}"
steps:
  - id: roll
    foreach: "[1, 2]"
    steps:
      - id: restart
        name: Restart one
        shell: { run: "echo {{item}}" }
  - gate: "go?"
"#,
    );
    let out = sb.cmd(&["show", "deploy", "--output", "json"]).ok();
    let shown = one(&out);
    assert_eq!(shown["runbook"], "deploy");
    assert_eq!(shown["description"], "Deploys.");
    assert_eq!(shown["lock"], "deploy/{{params.region}}");
    let params = shown["params"].as_array().expect("params");
    let by_name = |n: &str| -> &Value {
        params
            .iter()
            .find(|p| p["name"] == n)
            .unwrap_or_else(|| panic!("param {n}: {shown:#}"))
    };
    assert_eq!(by_name("replicas")["type"], "int");
    assert_eq!(by_name("replicas")["default"], 3);
    assert_eq!(by_name("replicas")["description"], "how many");
    assert_eq!(by_name("region")["enum"], serde_json::json!(["eu", "us"]));
    assert_eq!(by_name("version")["required"], true);
    assert_eq!(by_name("version")["pattern"], "^\\d+$");
    assert_eq!(by_name("token")["secret"], true);
    assert_eq!(by_name("token")["env"], "DEPLOY_TOKEN");
    assert_eq!(
        by_name("token")["default"],
        "***",
        "a secret default is masked"
    );
    assert!(!out.stdout.contains("hunter2"));
    let steps = shown["steps"].as_array().expect("steps");
    assert_eq!(steps[0]["id"], "roll");
    assert_eq!(steps[0]["kind"], "foreach");
    assert_eq!(steps[0]["steps"][0]["id"], "restart");
    assert_eq!(steps[0]["steps"][0]["name"], "Restart one");
    assert_eq!(steps[0]["steps"][0]["kind"], "shell");
    assert_eq!(steps[1]["id"], "#2");
    assert_eq!(steps[1]["kind"], "gate");
}

const PARKS: &str = r#"
runbook: parks
schedule: { cron: "0 0 0 1 1 *", catch_up: none }
params:
  who: { type: string, default: ops }
steps:
  - id: hello
    shell: { run: "echo hello {{params.who}}" }
  - id: confirm
    gate: "go on?"
  - id: after
    shell: { run: "echo after" }
"#;

#[test]
fn issue_12_every_command_prints_json_documents_a_script_can_read() {
    let sb = Sandbox::new();
    sb.write("runbooks/parks.yaml", PARKS);
    let json = |args: &[&str], code: i32| -> Vec<Value> {
        let mut all = args.to_vec();
        all.extend(["--output", "json"]);
        lines(&sb.cmd(&all).code(code))
    };

    let listed = json(&["list"], 0);
    assert!(
        listed
            .iter()
            .any(|r| r["name"] == "parks" && r["kind"] == "runbook")
    );
    let plan = json(&["plan", "parks"], 0);
    assert_eq!(plan[0]["runbook"], "parks");

    // A run that parks: its records, then how it settled.
    let run = json(&["run", "parks"], 3);
    let exit = run.last().expect("an exit document");
    assert_eq!(exit["event"], "exit");
    assert_eq!(exit["state"], "waiting");
    assert_eq!(exit["detail"]["step"], "confirm");
    let id = exit["run"].as_str().expect("a run id").to_owned();
    assert!(
        run.iter()
            .any(|r| r["event"] == "step_succeeded" && r["path"] == "hello")
    );

    let status = json(&["status", &id], 0);
    assert_eq!(status[0]["state"], "waiting");
    let steps = status[0]["steps"].as_array().expect("steps");
    assert!(
        steps
            .iter()
            .any(|s| s["path"] == "hello" && s["status"] == "ok"),
        "{steps:#?}"
    );
    let unfinished = json(&["status"], 0);
    assert_eq!(unfinished[0]["id"], id.as_str());
    assert_eq!(json(&["history"], 0)[0]["state"], "waiting");
    assert!(
        json(&["log", &id], 0)
            .iter()
            .all(|r| r["run"] == id.as_str())
    );

    let paused = json(&["pause", &id], 2);
    assert_eq!(paused[0]["event"], "error", "a parked run is not paused");
    assert!(paused[0]["message"].is_string());

    let approved = json(&["approve", &id], 0);
    let exit = approved.last().expect("an exit document");
    assert_eq!(
        (&exit["event"], &exit["state"]),
        (&"exit".into(), &"succeeded".into())
    );

    // Schedules: changed and fired, each said as a document.
    let schedules = json(&["schedule", "list"], 0);
    assert_eq!(schedules[0]["name"], "parks");
    let paused = json(&["schedule", "pause", "parks"], 0);
    assert_eq!(
        (
            &paused[0]["event"],
            &paused[0]["schedule"],
            &paused[0]["action"]
        ),
        (&"schedule".into(), &"parks".into(), &"paused".into())
    );
    assert_eq!(
        json(&["schedule", "resume", "parks"], 0)[0]["action"],
        "resumed"
    );
    let fired = json(&["schedule", "trigger", "parks"], 3);
    let started = fired
        .iter()
        .find(|r| r["event"] == "schedule")
        .expect("the fire is said");
    assert_eq!(started["action"], "started");
    let fired_run = started["run"].as_str().expect("the run it started");
    let exit = fired.last().expect("an exit document");
    assert_eq!(
        (&exit["run"], &exit["state"]),
        (&fired_run.into(), &"waiting".into())
    );
    let aborted = json(&["abort", fired_run], 0);
    assert_eq!(aborted.last().expect("exit")["state"], "aborted");

    let written = json(&["init", "fresh"], 0);
    assert_eq!(written[0]["event"], "written");
    assert_eq!(written[0]["file"], "runbooks/fresh.yaml");
    assert_eq!(written[0]["schema"], "runbooks/runbook.schema.json");
    assert!(sb.path().join("runbooks/fresh.yaml").is_file());

    // An error is a document too, with the exit code.
    let error = json(&["status", "NOSUCHRUN"], 2);
    assert_eq!(error[0]["event"], "error");
}

#[test]
fn issue_12_serve_says_what_it_does_as_json() {
    let sb = Sandbox::new();
    let serve = Serve::start(&sb, &["--output", "json"]);
    let url = serve.url.clone();
    let output = serve.stop();
    let events: Vec<Value> = output
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .filter(|v: &Value| v["event"] == "serve")
        .collect();
    let whats: Vec<&str> = events.iter().filter_map(|e| e["what"].as_str()).collect();
    assert_eq!(whats, ["listening", "stopping", "stopped"], "{output}");
    assert_eq!(events[0]["url"], url.as_str());
    assert_eq!(events[1]["detail"], "SIGTERM");
    assert!(
        !output.contains("serving on") && !output.lines().any(|l| l == "stopped"),
        "no line for people in JSON mode:\n{output}"
    );
}
