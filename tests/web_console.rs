//! The web console of `runbook serve`: the runbook catalogue and the start form, the plan before a
//! start, a step's output streamed while it runs, and a run's timeline — in headless Chromium
//! (tests/browser/console.mjs, as tests/web.rs drives the rest of the page) and, for the API they
//! stand on, over plain HTTP: the catalogue's parameter declarations, problems that name their
//! parameter, `POST /plan` equal to `runbook plan`, and the output stream's masking.
//!
//! The browser test needs what tests/browser/install.sh installs; it fails (never skips)
//! without it.

use std::io::{BufRead, BufReader};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::Sandbox;
use crate::web::{ALICE, BOB, Serve, browser_dir, screenshot, script};

/// A runbook in the style of the bundled ones: a pattern, an enum, a secret, a lock, a step that
/// prints and then waits for `go` (what a test controls), a parallel loop, JSON output, a gate.
const DEPLOY_BOOK: &str = r#"
runbook: web-deploy
description: Rolls a release of the demo service over its members, then asks before it finishes
params:
  version: { type: string, required: true, pattern: '^\d+\.\d+\.\d+$', description: the release to deploy }
  members: { type: list, default: [a, b, c] }
  channel: { type: string, default: stable, enum: [stable, canary] }
  token: { type: string, secret: true, required: true, env: DEPLOY_TOKEN, pattern: '^tok-', description: the deploy token }
lock: "web-deploy/{{params.channel}}"
prechecks:
  - id: channel-known
    script: 'params.channel == "stable" || params.channel == "canary"'
    assert: "output"
steps:
  - id: announce
    shell: { run: "echo deploying {{params.version}} with {{params.token}}; echo waiting for go >&2; while [ ! -e go ]; do sleep 0.05; done; echo go seen" }
  - id: roll
    foreach: params.members
    as: member
    parallel: 2
    steps:
      - id: restart
        shell: { run: "sleep 0.3; echo {{member}} restarted on {{params.version}}" }
  - id: report
    shell: { run: "echo '{\"members\": 3, \"ok\": true}'" }
  - id: confirm
    gate: "Version {{params.version}} is on every member. Finish?"
"#;

const SECRET: &str = "tok-Zq81-secret-77Wk";

#[test]
fn a_user_starts_a_runbook_from_the_catalogue_watches_its_output_live_and_approves_its_gate() {
    browser_dir();
    let started = Instant::now();
    let sb = Sandbox::new();
    sb.write("runbooks/web-deploy.yaml", DEPLOY_BOOK);
    let serve = Serve::start(&sb);
    let shots = screenshot("web-console");
    std::fs::create_dir_all(&shots).expect("mkdir");
    let go = sb.path().join("go");
    let comment = "dashboards green, from the console";
    let (status, out) = script(
        "console.mjs",
        &[
            &serve.url,
            ALICE,
            "web-deploy",
            "1.2",
            "1.2.3",
            SECRET,
            go.to_str().expect("utf-8 path"),
            shots.to_str().expect("utf-8 path"),
            comment,
        ],
    );
    assert!(
        status.is_some_and(|s| s.success()),
        "console.mjs should start the run from the form, see its output live and approve it; it ended {status:?}:\n{out}\n--- serve ---\n{}",
        serve.output.text()
    );
    for name in [
        "console-catalogue.png",
        "console-catalogue-narrow.png",
        "console-form-error.png",
        "console-run-live.png",
        "console-run-timeline.png",
        "console-run-narrow.png",
    ] {
        let path = shots.join(name);
        assert!(path.is_file(), "console.mjs took no {name}:\n{out}");
        eprintln!("screenshot: {}", path.display());
    }
    let run = out
        .lines()
        .find_map(|l| l.strip_prefix("console.mjs: RUN "))
        .unwrap_or_else(|| panic!("console.mjs names the run it started:\n{out}"))
        .trim()
        .to_owned();

    // What the journal says, read with the command line (which asks serve, the holder).
    let history = sb.cmd(&["history", "--output", "json"]).ok();
    let runs: Vec<Value> = history
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(
        runs.len(),
        1,
        "the form started one run, the wrong values none: {runs:#?}"
    );
    assert_eq!(runs[0]["id"], run.as_str());
    assert_eq!(runs[0]["state"], "succeeded");
    assert_eq!(
        runs[0]["started_by"], "alice",
        "the token's name started it"
    );
    let records = sb.records(&run);
    let started_with = records
        .iter()
        .find(|r| r["event"] == "run_started")
        .expect("run_started");
    assert_eq!(
        started_with["params"],
        json!({ "version": "1.2.3", "members": ["a", "b", "c"], "channel": "stable", "token": "***" })
    );
    let decided: Vec<&Value> = records
        .iter()
        .filter(|r| r["event"] == "gate_decided")
        .collect();
    assert_eq!(decided.len(), 1, "{records:#?}");
    assert_eq!(
        (
            &decided[0]["by"],
            &decided[0]["approved"],
            &decided[0]["comment"]
        ),
        (&json!("alice"), &json!(true), &json!(comment)),
        "the token's name approved it"
    );

    // The secret typed into the form is nowhere in clear.
    let log = sb.cmd(&["log", &run, "--output", "json"]).ok();
    assert!(
        log.stdout.contains("deploying 1.2.3 with ***"),
        "{}",
        log.stdout
    );
    for (what, text) in [
        (
            "the journal's files",
            String::from_utf8_lossy(&sb.journal_bytes()).into_owned(),
        ),
        ("runbook log --output json", log.stdout.clone()),
        ("runbook history --output json", history.stdout.clone()),
        ("serve's output", serve.output.text()),
        ("console.mjs's output", out.clone()),
    ] {
        assert!(!text.contains(SECRET), "the secret is in {what} in clear");
    }
    eprintln!(
        "the browser test took {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn the_catalogue_lists_each_runbooks_parameter_declarations_and_why_one_does_not_load() {
    let sb = Sandbox::new();
    sb.write("runbooks/web-deploy.yaml", DEPLOY_BOOK);
    sb.write(
        "runbooks/team/tool.yaml",
        "runbook: team/tool\nsteps:\n  - shell: \"true\"\n",
    );
    sb.write(
        "runbooks/broken.yaml",
        "runbook: broken\nsteps:\n  - id: a\n    shel: { run: \"true\" }\n",
    );
    let serve = Serve::start(&sb);
    let list = serve.get(BOB, "/api/v1/runbooks");
    let find = |name: &str| {
        list.as_array()
            .expect("a list")
            .iter()
            .find(|b| b["name"] == name)
            .unwrap_or_else(|| panic!("{name} is listed: {list:#}"))
            .clone()
    };
    let deploy = find("web-deploy");
    assert_eq!(deploy["kind"], "runbook");
    assert_eq!(deploy["origin"], "runbooks/web-deploy.yaml");
    assert_eq!(
        deploy["description"],
        "Rolls a release of the demo service over its members, then asks before it finishes"
    );
    assert_eq!(
        deploy["params"],
        json!([
            { "name": "version", "type": "string", "required": true, "default": null, "secret": false,
              "description": "the release to deploy", "env": null, "file": null, "enum": null,
              "pattern": "^\\d+\\.\\d+\\.\\d+$" },
            { "name": "members", "type": "list", "required": false, "default": ["a", "b", "c"],
              "secret": false, "description": null, "env": null, "file": null, "enum": null, "pattern": null },
            { "name": "channel", "type": "string", "required": false, "default": "stable", "secret": false,
              "description": null, "env": null, "file": null, "enum": ["stable", "canary"], "pattern": null },
            { "name": "token", "type": "string", "required": true, "default": null, "secret": true,
              "description": "the deploy token", "env": "DEPLOY_TOKEN", "file": null, "enum": null,
              "pattern": "^tok-" },
        ])
    );
    assert_eq!(deploy.get("error"), None, "it loads");
    assert_eq!(find("team/tool")["kind"], "part");
    let hello = find("hello");
    assert_eq!(hello["origin"], "bundled:hello.yaml");
    assert_eq!(hello["params"][0]["default"], "world");
    let broken = find("broken");
    assert_eq!(broken["params"], Value::Null);
    let error = broken["error"].as_str().expect("why it does not load");
    assert!(
        error.contains("broken.yaml:4:5") && error.contains("shel"),
        "the problem points at its place: {error}"
    );
}

#[test]
fn wrong_values_are_refused_naming_their_parameter_by_the_plan_and_the_start_alike() {
    let sb = Sandbox::new();
    sb.write("runbooks/web-deploy.yaml", DEPLOY_BOOK);
    let serve = Serve::start(&sb);
    let wrong = json!({
        "version": "1.2",
        "channel": "beta",
        "token": "wrong-secret-value",
        "vresion": "1.2.3",
    });
    let expected = [
        (
            "vresion",
            "runbook `web-deploy` has no parameter `vresion` (did you mean `version`?)",
        ),
        (
            "version",
            "parameter `version` value `1.2` does not match the pattern ^\\d+\\.\\d+\\.\\d+$",
        ),
        (
            "channel",
            "parameter `channel` must be one of \"stable\", \"canary\", not \"beta\"",
        ),
        (
            "token",
            "parameter `token` value `***` does not match the pattern ^tok-",
        ),
    ];
    for path in ["/api/v1/plan", "/api/v1/runs"] {
        let (status, body) = serve.post(
            ALICE,
            path,
            &json!({ "runbook": "web-deploy", "params": wrong }),
        );
        assert_eq!(
            (status, &body["kind"]),
            (400, &json!("bad-input")),
            "{path}: {body:#}"
        );
        let problems: Vec<(&str, &str)> = body["params"]
            .as_array()
            .unwrap_or_else(|| panic!("{path}: each problem with its parameter: {body:#}"))
            .iter()
            .map(|p| {
                (
                    p["param"].as_str().unwrap_or(""),
                    p["error"].as_str().unwrap_or(""),
                )
            })
            .collect();
        assert_eq!(problems, expected, "{path}");
        // The message a person reads is the command line's, every problem on its line.
        let lines: Vec<&str> = expected.iter().map(|(_, e)| *e).collect();
        assert_eq!(body["error"], lines.join("\n"), "{path}");
        assert!(
            !body.to_string().contains("wrong-secret-value"),
            "{path} echoes the secret"
        );
    }
    // A missing required value names its parameter too (and where its value may come from).
    let (status, body) = serve.post(
        ALICE,
        "/api/v1/plan",
        &json!({ "runbook": "web-deploy", "params": { "version": "1.2.3" } }),
    );
    assert_eq!(status, 400, "{body:#}");
    assert_eq!(
        body["params"],
        json!([{ "param": "token", "error": "missing required parameter `token`: pass -p token=…, or set $DEPLOY_TOKEN" }])
    );
    // The command line refuses the same values with the same words.
    let cli = sb
        .cmd(&[
            "plan",
            "web-deploy",
            "-p",
            "version=1.2",
            "-p",
            "token=tok-1234567",
        ])
        .code(2);
    assert!(
        cli.stderr.contains(expected[1].1),
        "runbook plan says: {}",
        cli.stderr
    );
    assert_eq!(
        serve.get(ALICE, "/api/v1/runs"),
        json!([]),
        "nothing was started"
    );
}

#[test]
fn the_plan_is_what_runbook_plan_shows_with_secrets_masked() {
    let sb = Sandbox::new();
    sb.write("runbooks/web-deploy.yaml", DEPLOY_BOOK);
    let serve = Serve::start(&sb);
    let params = json!({ "version": "2.0.1", "channel": "canary", "token": SECRET });
    let (status, plan) = serve.post(
        ALICE,
        "/api/v1/plan",
        &json!({ "runbook": "web-deploy", "params": params }),
    );
    assert_eq!(status, 200, "{plan:#}");
    let cli = sb
        .cmd(&[
            "plan",
            "web-deploy",
            "-p",
            "version=2.0.1",
            "-p",
            "channel=canary",
            "-p",
            &format!("token={SECRET}"),
            "--output",
            "json",
        ])
        .ok();
    let cli: Value = serde_json::from_str(cli.stdout.trim()).expect("plan --output json");
    for field in ["runbook", "origin", "params", "lock", "lock_holder"] {
        assert_eq!(plan[field], cli[field], "{field}");
    }
    assert_eq!(plan["params"]["token"], "***");
    assert_eq!(plan["lock"], "web-deploy/canary");
    let steps: Vec<Value> = plan["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| json!([s["depth"], s["path"], s["text"]]))
        .collect();
    assert_eq!(Value::Array(steps), cli["steps"]);
    assert_eq!(plan["steps"][0]["path"], "announce", "{plan:#}");
    assert!(
        plan["steps"][0]["text"]
            .as_str()
            .is_some_and(|t| t.contains("deploying '2.0.1' with ***")),
        "{plan:#}"
    );
    assert_eq!(
        plan["prechecks"],
        json!([{ "id": "channel-known", "status": "ok" }])
    );
    assert_eq!(cli["prechecks"], json!([["channel-known", { "Ok": null }]]));
    assert!(
        !plan.to_string().contains(SECRET),
        "the plan shows the secret"
    );

    // Without prechecks they are listed as not run; nothing was ever journaled.
    let (_, quick) = serve.post(
        ALICE,
        "/api/v1/plan",
        &json!({ "runbook": "web-deploy", "params": params, "prechecks": false }),
    );
    assert_eq!(
        quick["prechecks"],
        json!([{ "id": "channel-known", "status": "not-run" }])
    );
    assert_eq!(serve.get(ALICE, "/api/v1/runs"), json!([]));
}

/// A step that prints the first part of the secret, waits for `half`, prints the rest, then waits
/// for `go`; a secret step before it.
const STREAM_BOOK: &str = r#"
runbook: web-stream
params:
  token: { type: string, secret: true, required: true }
steps:
  - id: hidden
    secret: true
    shell: { run: "printf 'classified-%s\\n' payload" }
  - id: talk
    shell:
      env: { T: "{{params.token}}" }
      run: >-
        printf 'login with %s' "$(printf '%s' "$T" | cut -c1-6)";
        while [ ! -e half ]; do sleep 0.02; done;
        printf '%s done\n' "$(printf '%s' "$T" | cut -c7-)";
        echo waiting for go >&2;
        while [ ! -e go ]; do sleep 0.05; done; echo finished
"#;

/// Reads a run's event stream (`GET /runs/{id}/events?output=true`) on a thread of its own: each
/// event's type and data, as they come.
fn follow(serve: &Serve, run: &str) -> mpsc::Receiver<(String, Value)> {
    let url = format!("{}/api/v1/runs/{run}/events?output=true", serve.url);
    let response = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(60))
        .build()
        .get(&url)
        .set("Authorization", &format!("Bearer {BOB}"))
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut kind = String::new();
        for line in BufReader::new(response.into_reader()).lines() {
            let Ok(line) = line else { return };
            if let Some(k) = line.strip_prefix("event:") {
                k.trim().clone_into(&mut kind);
            } else if let Some(d) = line.strip_prefix("data:") {
                let data = serde_json::from_str(d.trim()).expect("JSON data");
                if tx.send((kind.clone(), data)).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

/// Events from `rx` until `until` holds for one (which is included), within 20 s.
fn read_until(
    rx: &mpsc::Receiver<(String, Value)>,
    what: &str,
    mut until: impl FnMut(&str, &Value) -> bool,
) -> Vec<(String, Value)> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((kind, data)) => {
                let done = until(&kind, &data);
                seen.push((kind, data));
                if done {
                    return seen;
                }
            }
            Err(e) => panic!("waiting for {what}: {e}; the stream said: {seen:#?}"),
        }
    }
}

/// The text of `events`' output parts of `path`'s `stream`, checked to follow each other.
fn streamed(events: &[(String, Value)], path: &str, stream: &str) -> String {
    let mut text = String::new();
    for (_, data) in events
        .iter()
        .filter(|(k, d)| k == "output" && d["path"] == path && d["stream"] == stream)
    {
        let offset = data["offset"].as_u64().expect("an offset");
        let part = data["text"].as_str().expect("text");
        // A follower may be sent a part twice (a running step's tail, then the part live).
        let have = text.len() as u64;
        assert!(offset <= have, "a gap before {data}");
        let skip = usize::try_from(have - offset).expect("small");
        text.push_str(part.get(skip..).unwrap_or(""));
    }
    text
}

#[test]
fn a_running_steps_output_is_streamed_masked_and_a_late_follower_gets_what_it_printed() {
    let sb = Sandbox::new();
    sb.write("runbooks/web-stream.yaml", STREAM_BOOK);
    let serve = Serve::start(&sb);
    let (status, body) = serve.post(
        BOB,
        "/api/v1/runs",
        &json!({ "runbook": "web-stream", "params": { "token": SECRET } }),
    );
    assert_eq!(status, 201, "{body}");
    let run = body["run"].as_str().expect("a run id").to_owned();
    let first = follow(&serve, &run);

    // The step printed the start of the secret and waits: what may begin a secret is held back,
    // what cannot is shown at once.
    let mut events = read_until(&first, "talk's first output", |kind, d| {
        kind == "output" && d["path"] == "talk" && d["stream"] == "stdout"
    });
    assert_eq!(streamed(&events, "talk", "stdout"), "login with ");
    // Then it printed the rest of the secret and waits for `go`: what was streamed is masked as
    // the journal will mask it, and came while the step ran.
    sb.write("half", "");
    events.extend(read_until(
        &first,
        "talk's stdout up to `done`",
        |kind, d| {
            kind == "output"
                && d["path"] == "talk"
                && d["text"].as_str().is_some_and(|t| t.contains("done"))
        },
    ));
    if !streamed(&events, "talk", "stderr").ends_with('\n') {
        events.extend(read_until(&first, "talk's stderr", |kind, d| {
            kind == "output" && d["path"] == "talk" && d["stream"] == "stderr"
        }));
    }
    assert_eq!(streamed(&events, "talk", "stdout"), "login with *** done\n");
    assert_eq!(streamed(&events, "talk", "stderr"), "waiting for go\n");
    assert!(
        !events
            .iter()
            .any(|(k, d)| k == "record" && d["event"] == "step_succeeded" && d["path"] == "talk"),
        "the output came while the step ran"
    );
    assert!(
        !events
            .iter()
            .any(|(k, d)| k == "output" && d["path"] == "hidden"),
        "a secret step's output is never streamed: {events:#?}"
    );

    // A follower that comes now is sent what the running step printed so far.
    let late = follow(&serve, &run);
    let caught_up = read_until(&late, "the tail of talk's stdout", |kind, d| {
        kind == "output" && d["path"] == "talk" && d["stream"] == "stdout"
    });
    assert_eq!(
        streamed(&caught_up, "talk", "stdout"),
        "login with *** done\n"
    );

    sb.write("go", "");
    let rest = read_until(&first, "the run to succeed", |kind, d| {
        kind == "record" && d["event"] == "state_changed" && d["state"] == "succeeded"
    });
    let all: Vec<(String, Value)> = events.into_iter().chain(rest).collect();
    let journaled = all
        .iter()
        .find(|(k, d)| k == "record" && d["event"] == "step_succeeded" && d["path"] == "talk")
        .map(|(_, d)| d["output"]["stdout"].clone())
        .expect("talk succeeded");
    assert_eq!(
        journaled,
        json!(streamed(&all, "talk", "stdout")),
        "streamed and journaled, the output is masked alike"
    );
    assert_eq!(journaled, "login with *** done\nfinished\n");
    let text = format!("{all:?}{caught_up:?}");
    assert!(!text.contains(SECRET), "the stream holds the secret");
    assert!(
        !text.contains(&SECRET[6..]),
        "the stream holds the second part of the secret"
    );
    assert!(
        !text.contains("classified-payload"),
        "the stream holds a secret step's output"
    );
}
