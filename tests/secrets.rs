//! Secrets never reach the journal, the follow files or any output in clear: not a secret
//! parameter (in a command line, a child's environment, its stdout or stderr), and not the
//! output of a step marked `secret`, wherever later steps use it. A resume that needs a secret
//! again says which one and how to give it, and changes nothing until it has it.

use std::os::unix::process::ExitStatusExt as _;

use crate::support::{Output, Sandbox};

const TOKEN: &str = "tok-S3CR3T-9f8e7d";

const SECRETIVE: &str = r#"
runbook: secretive
params:
  token: { type: string, secret: true, env: TEST_TOKEN }
steps:
  - id: use
    shell:
      run: "echo token={{params.token}}; echo err-{{params.token}} >&2; echo env=$TOKEN_ENV; echo env-err=$TOKEN_ENV >&2; echo \"$TOKEN_ENV\" > seen.txt"
      env: { TOKEN_ENV: "{{params.token}}" }
  - id: gen
    secret: true
    shell: { run: "echo pw-$$-$(date +%s%N) | tee generated.txt" }
  - id: show
    shell: { run: "echo using {{trim steps.gen.output.stdout}}; echo also {{trim steps.gen.output.stdout}} >&2" }
  - id: verify
    script: "steps.show.output.stdout.len() > 0"
"#;

/// Panics if `haystack` (named `what`) contains any of `secrets`.
fn assert_clean(what: &str, haystack: &[u8], secrets: &[&str]) {
    let text = String::from_utf8_lossy(haystack);
    for secret in secrets {
        assert!(
            !text.contains(secret),
            "{what} contains the secret `{secret}` in clear:\n{text}"
        );
    }
}

fn assert_output_clean(what: &str, out: &Output, secrets: &[&str]) {
    assert_clean(&format!("{what} stdout"), out.stdout.as_bytes(), secrets);
    assert_clean(&format!("{what} stderr"), out.stderr.as_bytes(), secrets);
}

/// The value `gen` printed (its command also wrote it to a file, for this test only).
fn generated(sb: &Sandbox) -> String {
    let value = sb.read("generated.txt").trim().to_owned();
    assert!(value.starts_with("pw-"), "no generated value: `{value}`");
    value
}

#[test]
fn secret_params_and_secret_outputs_never_appear_in_the_journal_or_any_output() {
    let sb = Sandbox::new();
    sb.write("secretive.yaml", SECRETIVE);

    let human = sb
        .cmd(&["run", "secretive.yaml"])
        .env("TEST_TOKEN", TOKEN)
        .ok();
    assert_eq!(
        sb.read("seen.txt").trim(),
        TOKEN,
        "the command must get the token in clear"
    );
    let first = generated(&sb);
    assert_output_clean("run", &human, &[TOKEN, &first]);
    assert!(
        human.stdout.contains("token=***"),
        "{}",
        human.explain("the masked token shows where it was used")
    );

    let json = sb
        .cmd(&["run", "secretive.yaml", "--output", "json"])
        .env("TEST_TOKEN", TOKEN)
        .ok();
    let second = generated(&sb);
    assert_ne!(first, second);
    let secrets = [TOKEN, first.as_str(), second.as_str()];
    assert_output_clean("run --output json", &json, &secrets);

    let journal = sb.journal_bytes();
    assert!(!journal.is_empty());
    assert_clean("the journal directory", &journal, &secrets);

    let out = sb.cmd(&["history", "--output", "json"]).ok();
    let runs: Vec<String> = out
        .stdout
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("JSON");
            v["id"].as_str().expect("id").to_owned()
        })
        .collect();
    assert_eq!(runs.len(), 2);
    for run in &runs {
        for args in [
            vec!["log", run],
            vec!["log", run, "--output", "json"],
            vec!["status", run],
            vec!["status", run, "--output", "json"],
        ] {
            let out = sb.cmd(&args).ok();
            assert_output_clean(&args.join(" "), &out, &secrets);
        }
        // The later step really used the generated value, masked in what was recorded.
        let records = sb.records(run);
        let show = records
            .iter()
            .find(|r| r["event"] == "step_succeeded" && r["path"] == "show")
            .expect("show succeeded");
        assert_eq!(show["output"]["stdout"], "using ***\n", "{show}");
        assert_eq!(show["output"]["exit_code"], 0, "{show}");
    }
}

const RESUMABLE: &str = r#"
runbook: resumable
params:
  token: { type: string, secret: true, env: TEST_TOKEN }
steps:
  - id: login
    idempotent: true
    shell: { run: "echo login >> out.txt" }
  - id: use
    idempotent: true
    shell: { run: "echo {{params.token}} > seen.txt" }
"#;

#[test]
fn resume_without_a_redacted_secret_names_it_and_changes_nothing() {
    let mut found = None;
    for kill in 1..=10u32 {
        let sb = Sandbox::new();
        sb.write("resumable.yaml", RESUMABLE);
        let out = sb
            .cmd(&["run", "resumable.yaml"])
            .env("TEST_TOKEN", TOKEN)
            .env("RUNBOOK_TEST_KILL_AFTER_COMMIT", kill.to_string())
            .run();
        assert_eq!(out.status.signal(), Some(9), "{}", out.explain("SIGKILL"));
        let run = sb.only_run();
        let records = sb.records(&run);
        // `login`'s outcome rides on the commit of `use`'s start.
        if records
            .last()
            .is_some_and(|r| r["event"] == "step_started" && r["path"] == "use")
        {
            found = Some((sb, run, records.len()));
            break;
        }
    }
    let (sb, run, count) = found.expect("a kill point right after `login` succeeded");

    let out = sb.cmd(&["resume", &run]).env_remove("TEST_TOKEN").code(2);
    assert!(
        out.stderr.contains(
            "the run needs secret parameter `token` again: pass -p token=…, or set $TEST_TOKEN"
        ),
        "{}",
        out.explain("resume must say which secret it needs and how to give it")
    );
    assert_eq!(
        sb.records(&run).len(),
        count,
        "a refused resume writes nothing"
    );
    assert_eq!(sb.read("seen.txt"), "");

    sb.cmd(&["resume", &run]).env("TEST_TOKEN", TOKEN).ok();
    assert_eq!(sb.read("seen.txt").trim(), TOKEN);
    assert_eq!(sb.read("out.txt"), "login\n");
    assert_eq!(sb.status(&run)["state"], "succeeded");
    assert_clean("the journal directory", &sb.journal_bytes(), &[TOKEN]);
}

#[test]
fn failure_messages_that_quote_a_secret_are_masked_everywhere() {
    let sb = Sandbox::new();
    sb.write(
        "failing.yaml",
        r#"
runbook: failing
params:
  token: { type: string, secret: true, env: TEST_TOKEN }
  fail_precheck: { type: bool, default: false }
prechecks:
  - id: reachable
    shell: { run: "if {{params.fail_precheck}}; then echo no route for {{params.token}} >&2; exit 3; fi" }
steps:
  - id: login
    shell: { run: "echo bad credentials {{params.token}} >&2; exit 1" }
"#,
    );
    for (args, code) in [
        (vec!["run", "failing.yaml"], 1),
        (vec!["run", "failing.yaml", "--output", "json"], 1),
        (vec!["run", "failing.yaml", "-p", "fail_precheck=true"], 1),
        (vec!["plan", "failing.yaml", "-p", "fail_precheck=true"], 1),
    ] {
        let out = sb.cmd(&args).env("TEST_TOKEN", TOKEN).run();
        assert_eq!(out.code(), Some(code), "{}", out.explain(&args.join(" ")));
        assert!(
            out.stdout.contains("***") || out.stderr.contains("***"),
            "{}",
            out.explain("the message must show where the secret was")
        );
        assert_output_clean(&args.join(" "), &out, &[TOKEN]);
    }
    assert_clean("the journal directory", &sb.journal_bytes(), &[TOKEN]);
}

#[test]
fn approving_a_run_that_needs_its_secret_again_takes_it_with_p_and_refuses_without() {
    let sb = Sandbox::new();
    sb.write(
        "gated.yaml",
        r#"
runbook: gated
params:
  token: { type: string, secret: true, required: true }
steps:
  - id: confirm
    gate: "Use the token?"
  - id: use
    shell: { run: "echo {{params.token}} > seen.txt" }
"#,
    );
    sb.cmd(&["run", "gated.yaml", "-p", &format!("token={TOKEN}")])
        .code(3);
    let run = sb.only_run();
    let count = sb.records(&run).len();

    // Without the secret the approval is refused before anything is journaled: the gate stays
    // open rather than decided with a run that cannot go on.
    let out = sb.cmd(&["approve", &run]).code(2);
    assert!(
        out.stderr
            .contains("the run needs secret parameter `token` again: pass -p token=…"),
        "{}",
        out.explain("approve must say which secret it needs")
    );
    assert_eq!(
        sb.records(&run).len(),
        count,
        "a refused approve writes nothing"
    );
    assert_eq!(sb.status(&run)["state"], "waiting");

    sb.cmd(&["approve", &run, "-p", &format!("token={TOKEN}")])
        .ok();
    assert_eq!(sb.read("seen.txt").trim(), TOKEN);
    assert_eq!(sb.status(&run)["state"], "succeeded");
    assert_clean("the journal directory", &sb.journal_bytes(), &[TOKEN]);
}

/// A runbook whose secret is short: `exited`, `axe` and `/v1/sys/` must survive its masking.
const SHORT: &str = r#"
runbook: short
params:
  token: { type: string, secret: true, env: TEST_TOKEN__MARK__ }
steps:
  - id: use
    shell: { run: "echo exited {{params.token}} axe /v1/sys/{{params.token}}/ > used.txt; cat used.txt" }
"#;

#[test]
fn issue_12_a_secret_shorter_than_four_characters_is_refused_naming_its_parameter() {
    let sb = Sandbox::new();
    sb.write("short.yaml", &SHORT.replace("__MARK__", ""));
    for (args, stream) in [
        (vec!["run", "short.yaml"], "stderr"),
        (vec!["run", "short.yaml", "--output", "json"], "json"),
    ] {
        let out = sb.cmd(&args).env("TEST_TOKEN", "x").code(2);
        let message = if stream == "json" {
            let error: serde_json::Value =
                serde_json::from_str(out.stdout.trim()).expect("one JSON error line");
            assert_eq!(error["event"], "error", "{}", out.explain("the JSON error"));
            assert_eq!(error["code"], 2);
            error["message"].as_str().expect("a message").to_owned()
        } else {
            out.stderr.clone()
        };
        assert!(
            message.contains(
                "secret parameter `token` (given by -p or $TEST_TOKEN) is 1 character long: \
                 a secret shorter than 4 characters is refused"
            ) && message.contains("`short_secret_ok: true`"),
            "{}",
            out.explain("the refusal names the parameter, its variable and the way out")
        );
    }
    assert!(!sb.path().join("used.txt").exists(), "no step ran");
    let out = sb.cmd(&["history", "--output", "json"]).ok();
    assert_eq!(out.stdout.trim(), "", "no run was created");
}

#[test]
fn issue_12_a_short_secret_marked_ok_is_masked_only_as_a_whole_word() {
    let sb = Sandbox::new();
    sb.write(
        "short.yaml",
        &SHORT.replace("__MARK__", ", short_secret_ok: true"),
    );
    let human = sb.cmd(&["run", "short.yaml"]).env("TEST_TOKEN", "x").ok();
    assert_eq!(
        sb.read("used.txt").trim(),
        "exited x axe /v1/sys/x/",
        "the step gets the secret in clear"
    );
    let json = sb
        .cmd(&["run", "short.yaml", "--output", "json"])
        .env("TEST_TOKEN", "x")
        .ok();
    for (what, out) in [("run", &human), ("run --output json", &json)] {
        assert!(
            out.stdout.contains("exited") && !out.stdout.contains("e***"),
            "{}",
            out.explain(&format!("{what}: words around the secret stay whole"))
        );
    }
    let masked = "exited *** axe /v1/sys/***/\n";
    let succeeded = |lines: &str| -> serde_json::Value {
        lines
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON line"))
            .find(|r| r["event"] == "step_succeeded" && r["path"] == "use")
            .expect("`use` succeeded")
    };
    assert_eq!(succeeded(&json.stdout)["output"]["stdout"], masked);
    let runs: Vec<serde_json::Value> = sb
        .cmd(&["history", "--output", "json"])
        .ok()
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert_eq!(runs.len(), 2);
    for run in &runs {
        let run = run["id"].as_str().expect("an id");
        let log = sb.cmd(&["log", run, "--output", "json"]).ok();
        assert_eq!(succeeded(&log.stdout)["output"]["stdout"], masked);
        let log = sb.cmd(&["log", run]).ok();
        assert!(
            log.stdout.contains("exited") && !log.stdout.contains("e***"),
            "{}",
            log.explain("log: words around the secret stay whole")
        );
    }
    let journal = String::from_utf8_lossy(&sb.journal_bytes()).into_owned();
    assert!(
        journal.contains("exited *** axe /v1/sys/***/") && !journal.contains("exited x axe"),
        "the journal holds the output masked, whole words intact"
    );
}

#[test]
fn issue_12_a_secret_the_runbook_uses_with_no_value_refuses_the_run_naming_it() {
    let sb = Sandbox::new();
    sb.write("short.yaml", &SHORT.replace("__MARK__", ""));
    let out = sb
        .cmd(&["run", "short.yaml"])
        .env_remove("TEST_TOKEN")
        .code(2);
    assert!(
        out.stderr.contains(
            "secret parameter `token` has no value, and the runbook uses it: pass -p token=…, or set $TEST_TOKEN"
        ),
        "{}",
        out.explain("the refusal names the parameter and its variable")
    );
    assert!(!sb.path().join("used.txt").exists(), "no step ran");

    // A secret the runbook never reads may stay unset.
    sb.write(
        "unused.yaml",
        "runbook: unused\nparams:\n  token: { type: string, secret: true, env: TEST_TOKEN }\nsteps:\n  - id: a\n    shell: { run: \"echo fine\" }\n",
    );
    sb.cmd(&["run", "unused.yaml"])
        .env_remove("TEST_TOKEN")
        .ok();
}
