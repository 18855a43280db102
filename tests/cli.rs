//! The command line itself: a closed pipe, who acts without `$USER`, an empty
//! `$RUNBOOK_JOURNAL`, a mistyped runbook name, `--version`, `--help`, completions, and hints that
//! name the journal in use.

use std::os::unix::process::ExitStatusExt as _;
use std::process::{Command, Stdio};

use crate::support::Sandbox;

/// Runs `runbook ARGS` with `stdout` (a pipe whose reader has already gone, as in `runbook
/// history | head -1` once head has read its line: the first write meets a closed pipe).
/// `block_sigpipe` starts it with SIGPIPE blocked, as some parents leave it.
fn on_closed_pipe(
    sb: &Sandbox,
    args: &[&str],
    stdout: impl Into<Stdio>,
    block_sigpipe: bool,
) -> std::process::Output {
    let mut command = if block_sigpipe {
        let mut python = Command::new("/usr/bin/python3");
        python.arg("-c").arg(
            "import os, signal, sys\n\
             signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGPIPE})\n\
             os.execv(sys.argv[1], sys.argv[1:])",
        );
        python.arg(env!("CARGO_BIN_EXE_runbook"));
        python
    } else {
        Command::new(env!("CARGO_BIN_EXE_runbook"))
    };
    command
        .args(args)
        .current_dir(sb.path())
        .env("RUNBOOK_JOURNAL", sb.journal())
        .env_remove("RUNBOOK_LOG")
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::piped())
        .output()
        .expect("run runbook")
}

#[test]
fn every_printing_command_on_a_closed_pipe_ends_quietly_by_sigpipe() {
    let sb = Sandbox::new();
    sb.write(
        "one.yaml",
        "runbook: one\nsteps:\n  - id: only\n    shell: \"echo hi\"\n",
    );
    sb.cmd(&["run", "one.yaml"]).ok();
    let run = sb.only_run();
    let closed = || {
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        writer
    };
    let commands: [&[&str]; 12] = [
        &["list"],
        &["show", "hello"],
        &["check", "hello"],
        &["status"],
        &["status", &run],
        &["log", &run],
        &["log", &run, "--step", "only"],
        &["history"],
        &["history", "--output", "json"],
        &["status", &run, "--output", "json"],
        &["completions", "bash"],
        &["schema"],
    ];
    for args in commands {
        let out = on_closed_pipe(&sb, args, closed(), false);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.signal(),
            Some(13),
            "`runbook {}` ends by SIGPIPE like any Unix tool, not a panic (exit 101): {:?}\n{stderr}",
            args.join(" "),
            out.status
        );
        assert_eq!(stderr, "", "`runbook {}` ends quietly", args.join(" "));
    }
    // SIGPIPE blocked by the parent: the status a shell shows for it, still quietly.
    let out = on_closed_pipe(&sb, &["history"], closed(), true);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(128 + 13),
        "{:?}\n{stderr}",
        out.status
    );
    assert_eq!(stderr, "");
}

#[test]
fn without_user_the_starter_is_the_login_name_of_the_uid() {
    let sb = Sandbox::new();
    sb.write("one.yaml", "runbook: one\nsteps:\n  - shell: \"true\"\n");
    sb.cmd(&["run", "one.yaml"]).env_remove("USER").ok();
    let login = Command::new("id").arg("-un").output().expect("id -un");
    let login = String::from_utf8_lossy(&login.stdout).trim().to_owned();
    assert!(!login.is_empty());
    let status = sb.status(&sb.only_run());
    assert_eq!(status["started_by"], login.as_str(), "{status}");
}

#[test]
fn an_empty_runbook_journal_counts_as_unset() {
    let sb = Sandbox::new();
    sb.write("one.yaml", "runbook: one\nsteps:\n  - shell: \"true\"\n");
    let dir = sb.journal();
    let dir = dir.to_str().expect("utf-8");
    sb.cmd(&["--journal", dir, "run", "one.yaml"])
        .env("RUNBOOK_JOURNAL", "")
        .ok();
    let out = sb
        .cmd(&["--journal", dir, "history", "--output", "json"])
        .env("RUNBOOK_JOURNAL", "")
        .ok();
    assert!(out.stdout.contains("\"one\""), "{}", out.stdout);
}

#[test]
fn a_mistyped_runbook_name_gets_a_suggestion() {
    let sb = Sandbox::new();
    let out = sb.cmd(&["run", "helo"]).run();
    out.expect_code(2);
    assert!(
        out.stderr.contains("did you mean `hello`?"),
        "{}",
        out.stderr
    );
}

#[test]
fn version_names_the_commit_and_help_the_exit_codes_and_the_journal() {
    let sb = Sandbox::new();
    let version = sb.cmd(&["--version"]).ok().stdout;
    let (_, rest) = version
        .trim()
        .split_once(" (")
        .expect("a commit in parentheses");
    let commit = rest.trim_end_matches(')');
    assert!(
        commit == "unknown"
            || commit
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == '-' || c.is_ascii_alphanumeric()),
        "{version}"
    );
    assert_ne!(commit, "", "{version}");
    let help = sb.cmd(&["--help"]).ok().stdout;
    for want in [
        "Examples:",
        "Exit codes:",
        "needs an operator's decision",
        "Journal:",
    ] {
        assert!(help.contains(want), "--help lacks {want}:\n{help}");
    }
    let journal = sb.journal();
    assert!(
        help.contains(&format!("{} (from $RUNBOOK_JOURNAL)", journal.display())),
        "{help}"
    );
}

#[test]
fn completions_for_bash_zsh_and_fish_know_the_subcommands() {
    let sb = Sandbox::new();
    for (shell, marker) in [
        ("bash", "_runbook()"),
        ("zsh", "#compdef runbook"),
        ("fish", "complete -c runbook"),
    ] {
        let out = sb.cmd(&["completions", shell]).ok().stdout;
        assert!(out.contains(marker), "{shell}: {out}");
        for sub in ["approve", "resume", "serve", "retry-step"] {
            assert!(out.contains(sub), "{shell} completion lacks {sub}");
        }
    }
    // bash accepts what it generated.
    let script = sb.cmd(&["completions", "bash"]).ok().stdout;
    let check = Command::new("bash")
        .args(["-n", "-c", &script])
        .output()
        .expect("bash");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn hints_name_the_journal_when_it_is_not_the_default() {
    let sb = Sandbox::new();
    sb.write(
        "gate.yaml",
        "runbook: g\nsteps:\n  - id: ok\n    gate: \"go?\"\n",
    );
    let out = sb.cmd(&["run", "gate.yaml"]).code(3);
    let journal = sb.journal();
    let expected = format!("runbook --journal {} approve", journal.display());
    assert!(out.stdout.contains(&expected), "{}", out.stdout);
    let run = sb.only_run();
    let status = sb.cmd(&["status", &run]).ok().stdout;
    assert!(status.contains(&expected), "{status}");
    // The hint works pasted into a shell without $RUNBOOK_JOURNAL.
    let hint = out
        .stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("approve: "))
        .expect("an approve hint")
        .replace('…', "ok");
    let args = shell_words::split(&hint).expect("a shell command");
    assert_eq!(args[0], "runbook");
    let pasted: Vec<&str> = args[1..].iter().map(String::as_str).collect();
    sb.cmd(&pasted).env_remove("RUNBOOK_JOURNAL").ok();
    assert_eq!(sb.status(&run)["state"], "succeeded");
}

#[test]
fn init_writes_a_runbook_that_checks_runs_and_is_never_overwritten() {
    let sb = Sandbox::new();
    std::fs::create_dir(sb.path().join("tmp")).expect("tmp");
    sb.cmd(&["init", "my-app"]).ok();
    let text = sb.read("runbooks/my-app.yaml");
    assert!(text.contains("runbook: my-app"), "{text}");
    assert!(
        text.lines()
            .filter(|l| l.trim_start().starts_with('#'))
            .count()
            > 5,
        "commented"
    );
    sb.cmd(&["check", "my-app"]).ok();
    // The schema its modeline names is there for editors, and is `runbook schema`'s.
    assert!(
        text.starts_with("# yaml-language-server: $schema=runbook.schema.json\n"),
        "{text}"
    );
    let schema = sb.cmd(&["schema"]).ok().stdout;
    assert_eq!(sb.read("runbooks/runbook.schema.json"), schema);
    let tmp = sb.path().join("tmp");
    sb.cmd(&["run", "my-app", "--yes"]).env("TMPDIR", &tmp).ok();
    for node in ["a", "b", "c"] {
        assert!(tmp.join(format!("my-app-{node}.done")).exists(), "{node}");
    }
    // A second init refuses and leaves the file as it was.
    std::fs::write(sb.path().join("runbooks/my-app.yaml"), "edited").expect("edit");
    let again = sb.cmd(&["init", "my-app"]).run();
    again.expect_code(2);
    assert!(again.stderr.contains("exists already"), "{}", again.stderr);
    assert_eq!(sb.read("runbooks/my-app.yaml"), "edited");
    sb.cmd(&["init", "../escape"]).code(2);
    assert!(!sb.path().join("escape.yaml").exists());
}

#[test]
fn list_puts_runbooks_before_the_parts_they_call_in_lines_that_fit() {
    let sb = Sandbox::new();
    let out = sb.cmd(&["list"]).ok().stdout;
    let runbooks = out.find("runbooks:").expect("a runbooks group");
    let parts = out
        .find("called by other runbooks:")
        .expect("a parts group");
    assert!(runbooks < parts, "{out}");
    assert!(out[runbooks..parts].contains("upgrade-openbao"), "{out}");
    assert!(!out[runbooks..parts].contains("drivers/"), "{out}");
    assert!(out[parts..].contains("drivers/local/etcd"), "{out}");
    for line in out.lines() {
        assert!(
            line.chars().count() <= 110,
            "too long ({}): {line}",
            line.chars().count()
        );
    }
    let json = sb.cmd(&["list", "--output", "json"]).ok().stdout;
    let first: serde_json::Value =
        serde_json::from_str(json.lines().next().expect("a line")).expect("json");
    assert!(
        first["kind"] == "runbook" || first["kind"] == "part",
        "{first}"
    );
}
