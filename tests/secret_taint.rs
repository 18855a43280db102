//! Secrets as taint (issue 8): a distinctive secret is pushed through every form that leaked
//! before — base64 (alone and inside a Basic header built in Rhai), JSON escaping, shell
//! quoting, string concatenation, a number, a short string and one line of a multi-line secret
//! output used by later steps, an approval comment, `plan` — and then the journal's raw bytes, the
//! follow mirror, the terminal output and the JSON output are searched for the secret and its
//! base64, URL-encoded, JSON-escaped and shell-quoted forms. None may appear.

use base64::Engine as _;

use crate::support::Sandbox;

const SECRET: &str = r#"S3cr'et"Va\lue$7Q"#;
const PIN: &str = "987654321";
const SHORT: &str = "Zq9";
const LINE: &str = "Hunter2Line_x9";

const LEAKY: &str = r#"
runbook: leaky
params:
  tok: { type: string, secret: true, env: LEAKY_TOK }
  user: { type: string, default: admin }
steps:
  - id: b64
    shell: { args: [printf, '%s\n', "Authorization: Basic {{b64 params.tok}}"] }
  - id: basic
    script: 'b64_encode(params.user + ":" + params.tok)'
  - id: header
    shell: { args: [printf, '%s\n', "Authorization: Basic {{steps.basic.output}}"] }
  - id: json
    shell: { args: [printf, '%s\n', '{"token": {{json params.tok}}}'] }
  - id: quoted
    shell: { args: [printf, '%s\n', "{{sh params.tok}}"] }
  - id: concat
    script: '"prefix-" + params.tok + "-suffix"'
  - id: pin
    secret: true
    # Secret outputs are not journaled: a resume takes them again, which must be harmless.
    idempotent: true
    shell: { args: [cat, pin.json] }
  - id: use_pin
    shell: { args: [printf, 'pin=%s short=%s\n', "{{steps.pin.output.json.pin}}", "{{steps.pin.output.json.short}}"] }
  - id: line
    script: 'steps.pin.output.json.text.split("\n")[1]'
  - id: echo_line
    shell: { args: [printf, '%s\n', "{{steps.line.output}}"] }
  - id: confirm
    gate: "all done?"
"#;

/// Every form of every secret that must never be written or printed.
fn forbidden() -> Vec<(String, String)> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let json = serde_json::to_string(SECRET).expect("json");
    let mut forms = vec![
        ("the secret".to_owned(), SECRET.to_owned()),
        ("its base64".into(), b64.encode(SECRET)),
        (
            "a Basic header of it".into(),
            b64.encode(format!("admin:{SECRET}")),
        ),
        (
            "its URL encoding".into(),
            percent_encoding::utf8_percent_encode(SECRET, percent_encoding::NON_ALPHANUMERIC)
                .to_string(),
        ),
        (
            "its JSON escaping".into(),
            json[1..json.len() - 1].to_owned(),
        ),
        (
            "its shell quoting".into(),
            shell_words::quote(SECRET).into_owned(),
        ),
        ("a number of a secret output".into(), PIN.to_owned()),
        ("a short string of a secret output".into(), SHORT.to_owned()),
        ("a line of a secret output".into(), LINE.to_owned()),
        (
            "the line's base64".into(),
            b64.encode(format!("password={LINE}")),
        ),
    ];
    // The unescaped core of the secret, in case an encoding splits it at the quote.
    forms.push(("part of the secret".into(), "Va\\lue$7Q".into()));
    forms
}

fn assert_clean(what: &str, text: &str) {
    for (name, form) in forbidden() {
        assert!(
            !text.contains(&form),
            "{what} holds {name} ({form}):\n{text}"
        );
    }
}

#[test]
fn no_form_of_a_secret_reaches_the_journal_the_mirror_the_terminal_or_json_output() {
    let sb = Sandbox::new();
    sb.write("leaky.yaml", LEAKY);
    // What the secret step reads: secret values that are not written in the runbook.
    sb.write(
        "pin.json",
        &format!(
            r#"{{"pin": {PIN}, "short": "{SHORT}", "text": "user=admin\npassword={LINE}\nend"}}"#
        ),
    );
    let mut printed = Vec::new();
    let mut show = |out: crate::support::Output| {
        printed.push((out.stdout.clone(), out.stderr.clone()));
        out
    };

    let run = show(
        sb.cmd(&["run", "leaky.yaml"])
            .env("LEAKY_TOK", SECRET)
            .code(3),
    );
    assert!(
        run.stdout.contains("all done?"),
        "{}",
        run.explain("parked")
    );
    let id = sb.only_run();

    // The steps really saw the secret and what was derived from it (so the mask is not a
    // run that did nothing).
    let records = sb.records(&id);
    let succeeded = records
        .iter()
        .filter(|r| r["event"] == "step_succeeded")
        .count();
    assert_eq!(succeeded, 10, "every step ran: {records:?}");

    show(
        sb.cmd(&[
            "approve",
            &id,
            "--comment",
            &format!("checked with token {SECRET}, all fine"),
        ])
        .env("LEAKY_TOK", SECRET)
        .ok(),
    );
    for args in [
        vec!["log", id.as_str()],
        vec!["log", id.as_str(), "--output", "json"],
        vec!["status", id.as_str()],
        vec!["status", id.as_str(), "--output", "json"],
        vec!["history", "--output", "json"],
    ] {
        show(sb.cmd(&args).ok());
    }
    show(
        sb.cmd(&["plan", "leaky.yaml", "--no-prechecks"])
            .env("LEAKY_TOK", SECRET)
            .ok(),
    );
    show(
        sb.cmd(&["plan", "leaky.yaml", "--output", "json", "--no-prechecks"])
            .env("LEAKY_TOK", SECRET)
            .ok(),
    );
    let json_run = show(
        sb.cmd(&["run", "leaky.yaml", "--yes", "--output", "json"])
            .env("LEAKY_TOK", SECRET)
            .ok(),
    );
    assert!(
        json_run.stdout.lines().count() > 10,
        "{}",
        json_run.explain("JSON records")
    );

    for (i, (stdout, stderr)) in printed.iter().enumerate() {
        assert_clean(&format!("command {i}'s stdout"), stdout);
        assert_clean(&format!("command {i}'s stderr"), stderr);
    }
    // The raw bytes of every file of the journal: the store, the witness, the follow mirror.
    let bytes = sb.journal_bytes();
    let raw = String::from_utf8_lossy(&bytes);
    assert_clean("the journal's files", &raw);
    // The approval comment is kept, scrubbed.
    let log = sb.cmd(&["log", &id]).ok().stdout;
    assert!(log.contains("checked with token ***, all fine"), "{log}");
}
