//! Test support: a sandbox directory with its own journal, and a builder that runs the built
//! `runbook` binary in it. On a failed expectation it prints the command, the working
//! directory, stdout and stderr.

#![allow(dead_code)]

pub mod captured;
pub mod clusters;
pub mod fleet;
pub mod kubernetes;
pub mod node_agent;
pub mod own_layout;
pub mod rollout;
pub mod rusage;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A temporary working directory with a journal inside.
pub struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    /// A fresh sandbox.
    pub fn new() -> Self {
        Self {
            dir: tempfile::Builder::new()
                .prefix("runbook-test-")
                .tempdir()
                .expect("tempdir"),
        }
    }

    /// The sandbox directory (the commands' working directory).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The journal directory.
    pub fn journal(&self) -> PathBuf {
        self.path().join("journal")
    }

    /// Writes a file relative to the sandbox and returns its path.
    pub fn write(&self, name: &str, content: &str) -> PathBuf {
        let path = self.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&path, content).expect("write");
        path
    }

    /// Reads a file relative to the sandbox ("" if missing).
    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path().join(name)).unwrap_or_default()
    }

    /// How the commands the binary suggests start for this sandbox's journal (not the default
    /// one, so they name it).
    pub fn hint(&self) -> String {
        format!(
            "runbook --journal {}",
            shell_words::quote(&self.journal().to_string_lossy())
        )
    }

    /// A `runbook` command in this sandbox.
    pub fn cmd(&self, args: &[&str]) -> Cmd {
        let mut command = Command::new(env!("CARGO_BIN_EXE_runbook"));
        command
            .args(args)
            .current_dir(self.path())
            .env("RUNBOOK_JOURNAL", self.journal())
            .env("USER", "tester")
            .env_remove("RUNBOOK_USER")
            .env_remove("RUNBOOK_PATH")
            .env_remove("RUNBOOK_TEST_KILL_AFTER_COMMIT")
            .env_remove("RUNBOOK_TEST_KILL_AFTER_SHIP")
            .env_remove("RUNBOOK_LOG")
            .stdin(Stdio::null());
        Cmd {
            command,
            shown: format!("runbook {}", args.join(" ")),
            cwd: self.path().to_path_buf(),
        }
    }

    /// Every byte of every file below the sandbox's journal directory.
    pub fn journal_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        collect(&self.journal(), &mut out);
        out
    }

    /// The ids of every run in the journal (`history`).
    fn run_ids(&self) -> Vec<String> {
        let out = self.cmd(&["history", "--output", "json"]).ok();
        out.stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|v| v["id"].as_str().map(str::to_owned))
            .collect()
    }

    /// The single run in the journal (most tests start exactly one).
    pub fn only_run(&self) -> String {
        let ids = self.run_ids();
        assert_eq!(ids.len(), 1, "expected exactly one run, got {ids:?}");
        ids[0].clone()
    }

    /// The newest run in the journal (run ids sort by time).
    pub fn newest_run(&self) -> String {
        self.run_ids().into_iter().max().expect("a run")
    }

    /// `status RUN --output json`.
    pub fn status(&self, run: &str) -> Value {
        let out = self.cmd(&["status", run, "--output", "json"]).ok();
        serde_json::from_str(out.stdout.trim()).expect("status is JSON")
    }

    /// The run's records as JSON values (`log RUN --output json`).
    pub fn records(&self, run: &str) -> Vec<Value> {
        let out = self.cmd(&["log", run, "--output", "json"]).ok();
        out.stdout
            .lines()
            .map(|l| serde_json::from_str(l).expect("log line is JSON"))
            .collect()
    }
}

fn collect(dir: &Path, out: &mut Vec<u8>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect(&p, out);
        } else if let Ok(bytes) = std::fs::read(&p) {
            out.extend(bytes);
        }
    }
}

/// A command to run.
pub struct Cmd {
    command: Command,
    shown: String,
    cwd: PathBuf,
}

/// What a finished command produced.
#[derive(Debug)]
pub struct Output {
    /// How it ended.
    pub status: ExitStatus,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    shown: String,
    cwd: PathBuf,
}

impl Cmd {
    /// Sets an environment variable.
    pub fn env(mut self, key: &str, value: impl Into<OsString>) -> Self {
        self.command.env(key, value.into());
        self
    }

    /// Removes an environment variable.
    pub fn env_remove(mut self, key: &str) -> Self {
        self.command.env_remove(key);
        self
    }

    /// Runs to completion.
    pub fn run(mut self) -> Output {
        let out = self.command.output().expect("spawn runbook");
        Output {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            shown: self.shown,
            cwd: self.cwd,
        }
    }

    /// Runs and expects exit code 0.
    pub fn ok(self) -> Output {
        self.code(0)
    }

    /// Runs and expects exit code `code`.
    pub fn code(self, code: i32) -> Output {
        let out = self.run();
        out.expect_code(code);
        out
    }

    /// Runs to completion under a helper process that measures the command's peak memory.
    pub fn run_measured(self) -> (Output, u64) {
        let dir = tempfile::Builder::new()
            .prefix("runbook-measure-")
            .tempdir()
            .expect("tempdir");
        let measured = rusage::run(&self.command, dir.path());
        let out = Output {
            status: measured.status,
            stdout: measured.stdout,
            stderr: measured.stderr,
            shown: self.shown,
            cwd: self.cwd,
        };
        (out, measured.max_rss)
    }

    /// Starts without waiting, its standard output and error both going to `log`.
    pub fn spawn_to(mut self, log: std::fs::File) -> Child {
        let err = log.try_clone().expect("clone the log file");
        self.command
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .spawn()
            .expect("spawn runbook")
    }

    /// Starts without waiting, capturing output to files in the sandbox.
    pub fn spawn(mut self) -> Child {
        self.command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn runbook")
    }
}

impl Output {
    /// The exit code, or `None` if a signal ended the process.
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// The signal that ended the process, if one did.
    pub fn signal(&self) -> Option<i32> {
        use std::os::unix::process::ExitStatusExt as _;
        self.status.signal()
    }

    /// Panics with the whole picture unless the exit code is `code`.
    pub fn expect_code(&self, code: i32) {
        assert!(
            self.code() == Some(code),
            "{}",
            self.explain(&format!("expected exit code {code}"))
        );
    }

    /// A description of the command's result for assertion messages.
    pub fn explain(&self, what: &str) -> String {
        format!(
            "{what}, got {:?}\ncommand: {}\ncwd: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status,
            self.shown,
            self.cwd.display(),
            self.stdout,
            self.stderr
        )
    }
}

/// Polls `condition` every 20 ms until it holds or `limit` passes; panics with `what` then.
pub fn wait_for(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A small deterministic random generator (xorshift), so failures reproduce.
pub struct Rng(u64);

impl Rng {
    /// Seeded from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    /// The next value in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x % n
    }
}
