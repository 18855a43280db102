//! Templates cannot inject (issue 8): a parameter value interpolated into a shell command —
//! `shell.run`, the short form `shell: "…"`, the script of `args: [sh, -c, …]` — is data,
//! whatever it contains, given through `run -p` or through serve's API. Every way out a
//! value could try (`;`, `$(…)`, backticks, closing a quote) leaves the marker file
//! uncreated, and the step still receives the value byte for byte. What no quoting can make
//! safe (`{{{…}}}`, a value inside backticks) is refused by `check` and by a run, and the
//! one raw helper is flagged where a parameter reaches it.

use std::path::Path;
use std::process::Child;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::captured::Captured;
use crate::support::{Sandbox, wait_for};

/// Every place a template can put a value into shell text; each step writes what it got to
/// `out-ID.txt`.
const PLACES: &str = r#"
runbook: places
params:
  v: { type: string }
steps:
  - id: run-unquoted
    shell: { run: "printf '%s' {{params.v}} > out-run-unquoted.txt" }
  - id: short-form
    shell: "printf '%s' {{params.v}} > out-short-form.txt"
  - id: double-quoted
    shell: { run: "printf '%s' \"{{params.v}}\" > out-double-quoted.txt" }
  - id: single-quoted
    shell: { run: "printf '%s' '{{params.v}}' > out-single-quoted.txt" }
  - id: substitution
    shell: { run: "printf '%s' \"$(printf '%s' {{params.v}})\" > out-substitution.txt" }
  - id: sh-c
    shell: { args: [sh, -c, "printf '%s' {{params.v}} > out-sh-c.txt"] }
  - id: short-argv
    shell: [sh, -c, "printf '%s' {{params.v}} > out-short-argv.txt"]
  - id: bash-ec-quoted
    shell: { args: [bash, -ec, "printf '%s' \"{{params.v}}\" > \"$1\"", name, out-bash-ec-quoted.txt] }
  - id: sh-helper
    shell: { run: "printf '%s' {{sh params.v}} > out-sh-helper.txt" }
  - id: heredoc
    shell: { run: "cat > out-heredoc.txt <<EOF\n{{params.v}}\nEOF" }
  - id: argv
    shell: { args: [sh, -c, "printf '%s' \"$1\" > out-argv.txt", name, "{{params.v}}"] }
"#;

/// Step ids of [`PLACES`] and how the file a step wrote relates to the value.
const STEPS: &[(&str, bool)] = &[
    ("run-unquoted", false),
    ("short-form", false),
    ("double-quoted", false),
    ("single-quoted", false),
    ("substitution", false),
    ("sh-c", false),
    ("short-argv", false),
    ("bash-ec-quoted", false),
    ("sh-helper", false),
    ("heredoc", true),
    ("argv", false),
];

/// Values that try every way out of their place (the issue's forms among them).
const PAYLOADS: &[&str] = &[
    "x; touch pwned",
    "$(touch pwned)",
    "`touch pwned`",
    "'; touch pwned; '",
    "\"; touch pwned; echo \"",
    "a && touch pwned # *",
    "\\\"$(touch pwned)\\",
    "two  spaces\ttab ${HOME} !x ~root",
];

/// Panics unless `dir` has no `pwned` file and each step's file holds exactly `value`.
fn assert_received(dir: &Path, value: &str) {
    assert!(
        !dir.join("pwned").exists(),
        "the value {value:?} ran a command"
    );
    for (id, heredoc) in STEPS {
        let got = std::fs::read_to_string(dir.join(format!("out-{id}.txt")))
            .unwrap_or_else(|e| panic!("step {id} wrote nothing for {value:?}: {e}"));
        let want = if *heredoc {
            format!("{value}\n")
        } else {
            (*value).to_owned()
        };
        assert_eq!(got, want, "step {id} got another value than {value:?}");
    }
}

fn clear_outputs(dir: &Path) {
    for (id, _) in STEPS {
        let _ = std::fs::remove_file(dir.join(format!("out-{id}.txt")));
    }
}

#[test]
fn issue_8_no_parameter_value_given_with_run_p_injects_a_command() {
    let sb = Sandbox::new();
    sb.write("places.yaml", PLACES);
    sb.cmd(&["check", "places.yaml"]).ok();
    for value in PAYLOADS {
        clear_outputs(sb.path());
        let param = format!("v={value}");
        sb.cmd(&["run", "places.yaml", "-p", &param]).ok();
        assert_received(sb.path(), value);
    }
}

/// A `runbook serve` in a sandbox, reached through the URL and token of `serve.json`.
struct Serve {
    child: Child,
    url: String,
    token: String,
    output: Captured,
}

impl Serve {
    fn start(sb: &Sandbox) -> Self {
        let mut child = sb
            .cmd(&["serve", "--listen", "127.0.0.1:0", "--tick", "100ms"])
            .spawn();
        let output = Captured::of(&mut child);
        let pid = u64::from(child.id());
        let mut info = Value::Null;
        wait_for("serve to write serve.json", Duration::from_secs(30), || {
            info = std::fs::read_to_string(sb.journal().join("serve.json"))
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or(Value::Null);
            info["pid"].as_u64() == Some(pid)
        });
        Self {
            child,
            url: info["url"].as_str().expect("a url").to_owned(),
            token: info["token"].as_str().expect("a token").to_owned(),
            output,
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let request = ureq::request(method, &format!("{}/api/v1{path}", self.url))
            .timeout(Duration::from_secs(60))
            .set("Authorization", &format!("Bearer {}", self.token));
        let result = match body {
            Some(b) => request.send_json(b.clone()),
            None => request.call(),
        };
        let response = match result {
            Ok(r) | Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{method} {path}: {e}\n{}", self.output.text()),
        };
        let status = response.status();
        let text = response.into_string().expect("a body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- serve output ---\n{}", self.output.text());
        }
    }
}

#[test]
fn issue_8_no_parameter_value_given_through_the_api_injects_a_command() {
    let sb = Sandbox::new();
    sb.write("runbooks/places.yaml", PLACES);
    let serve = Serve::start(&sb);
    for value in PAYLOADS {
        clear_outputs(sb.path());
        let (status, body) = serve.call(
            "POST",
            "/runs",
            Some(&json!({ "runbook": "places", "params": { "v": value } })),
        );
        assert_eq!(status, 201, "POST /runs: {body}");
        let run = body["run"].as_str().expect("a run id").to_owned();
        let mut state = Value::Null;
        wait_for(
            &format!("run {run} to end"),
            Duration::from_secs(60),
            || {
                state = serve.call("GET", &format!("/runs/{run}"), None).1["state"].clone();
                state == "succeeded" || state == "failed"
            },
        );
        assert_eq!(state, "succeeded", "the run with {value:?}");
        assert_received(sb.path(), value);
    }
}

#[test]
fn a_value_in_a_heredoc_that_would_end_it_early_fails_the_step_and_runs_nothing() {
    let sb = Sandbox::new();
    sb.write("places.yaml", PLACES);
    let out = sb
        .cmd(&["run", "places.yaml", "-p", "v=x\nEOF\ntouch pwned"])
        .code(1);
    assert!(!sb.path().join("pwned").exists());
    assert!(
        out.stdout.contains(
            "failed to render the shell spec: `run`: a value has a line `EOF` that would end the here-document early; the rest would run as commands"
        ),
        "{}",
        out.explain("the heredoc step names why")
    );
}

#[test]
fn check_refuses_triple_stash_and_backticks_in_shell_commands_and_a_run_runs_nothing() {
    let sb = Sandbox::new();
    sb.write(
        "raw.yaml",
        r#"runbook: raw
params:
  v: { type: string }
steps:
  - id: triple
    shell: { run: "echo {{{params.v}}}" }
  - id: backticks
    shell: { args: [bash, -c, "echo `echo {{params.v}}`"] }
  - id: argv
    shell: { args: [echo, "{{{params.v}}}"] }
"#,
    );
    let out = sb.cmd(&["check", "raw.yaml"]).code(2);
    assert_eq!(
        out.stderr,
        r#"error: `{{{…}}}` puts a value into a shell command unquoted; write `{{…}}` (values are quoted for their place), or `{{unsafe_raw …}}` for trusted shell text
 --> raw.yaml:6:25
  |
6 |     shell: { run: "echo {{{params.v}}}" }
  |                         ^^

error: a value inside backticks cannot be quoted safely; write $(…) instead of `…`
 --> raw.yaml:8:43
  |
8 |     shell: { args: [bash, -c, "echo `echo {{params.v}}`"] }
  |                                           ^^

error: 2 problems found
"#
    );
    sb.cmd(&["run", "raw.yaml", "-p", "v=x; touch pwned"])
        .code(2);
    assert!(!sb.path().join("pwned").exists());
}

#[test]
fn check_warns_where_the_raw_helper_takes_a_parameter_and_still_passes() {
    let sb = Sandbox::new();
    sb.write(
        "raw.yaml",
        r#"runbook: raw
params:
  v: { type: string }
steps:
  - id: trusted
    shell: { run: 'printf "%s" {{params.v}} {{unsafe_raw "| tr a-z A-Z"}} > upper.txt' }
  - id: careless
    shell: { run: "printf '%s' {{unsafe_raw params.v}} > raw.txt" }
"#,
    );
    let out = sb.cmd(&["check", "raw.yaml"]).ok();
    assert_eq!(
        out.stderr,
        r#"warning: `unsafe_raw` puts `params.v` into a shell command as code: whoever sets the parameter can run any command
 --> raw.yaml:8:32
  |
8 |     shell: { run: "printf '%s' {{unsafe_raw params.v}} > raw.txt" }
  |                                ^^^^^^^^^^^^ not quoted
  |
help: write `{{params.v}}`: values in shell commands are quoted for their place

"#
    );
    assert_eq!(out.stdout, "ok: raw (raw.yaml)\n");
    let json = sb.cmd(&["check", "raw.yaml", "--output", "json"]).ok();
    let lines: Vec<Value> = json
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(
        lines.len(),
        2,
        "the warning, then the verdict: {}",
        json.stdout
    );
    let warning = &lines[0];
    assert_eq!(warning["event"], "problem");
    assert_eq!(warning["severity"], "warning");
    assert_eq!(
        (&warning["line"], &warning["column"]),
        (&8.into(), &32.into())
    );
    assert_eq!(
        warning["help"],
        "write `{{params.v}}`: values in shell commands are quoted for their place"
    );
    let verdict = &lines[1];
    assert_eq!(verdict["event"], "checked");
    assert_eq!(verdict["ok"], true);
    assert_eq!(verdict["warnings"], 1);
    // The raw fragment is shell text: the pipe runs, and the quoted value goes through it
    // as one word; the raw parameter is split into two.
    sb.cmd(&["run", "raw.yaml", "-p", "v=a b"]).ok();
    assert_eq!(sb.read("upper.txt"), "A B");
    assert_eq!(sb.read("raw.txt"), "ab");
}

#[test]
fn check_refuses_the_raw_helper_outside_shell_commands() {
    let sb = Sandbox::new();
    sb.write(
        "raw.yaml",
        r#"runbook: raw
params:
  v: { type: string }
steps:
  - shell: { args: [echo, "{{unsafe_raw params.v}}"] }
"#,
    );
    let out = sb.cmd(&["check", "raw.yaml"]).code(2);
    assert_eq!(
        out.stderr,
        r#"error: `unsafe_raw` is only for shell commands, and this is not one
 --> raw.yaml:5:28
  |
5 |   - shell: { args: [echo, "{{unsafe_raw params.v}}"] }
  |                            ^^^^^^^^^^^^
  |
help: nothing is quoted here: write `{{…}}`

error: 1 problem found
"#
    );
}
