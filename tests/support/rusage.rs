//! The peak memory of a command, measured exactly: the command runs under a process of its own
//! — this test binary started again for the single helper [`measured_child`] — whose only child
//! it is, so `getrusage(RUSAGE_CHILDREN)` there, after waiting for it, is the command's own peak
//! resident set size, whatever the other tests of this process spawn meanwhile.

use std::os::unix::process::ExitStatusExt as _;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};

use serde_json::{Value, json};

/// The environment variable that hands the command to [`measured_child`].
const SPEC: &str = "RUNBOOK_TEST_MEASURE";

/// What a measured command did.
pub struct Measured {
    /// How it ended (a raw wait status).
    pub status: ExitStatus,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// Its peak resident set size, in bytes.
    pub max_rss: u64,
}

/// Runs `command` (stdin closed) under a helper process and measures its peak memory; its
/// output goes through files in `dir`.
pub fn run(command: &Command, dir: &Path) -> Measured {
    let env: Vec<Value> = command
        .get_envs()
        .map(|(k, v)| json!([k.to_string_lossy(), v.map(|v| v.to_string_lossy())]))
        .collect();
    let spec = json!({
        "program": command.get_program().to_string_lossy(),
        "args": command.get_args().map(|a| a.to_string_lossy()).collect::<Vec<_>>(),
        "cwd": command.get_current_dir().map(|d| d.display().to_string()),
        "env": env,
        "dir": dir.display().to_string(),
    });
    let helper = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "support::rusage::measured_child",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(SPEC, spec.to_string())
        .stdin(Stdio::null())
        .output()
        .expect("start the measuring helper");
    let result: Value = std::fs::read_to_string(dir.join("measured.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_else(|| {
            panic!(
                "the measuring helper wrote no result ({:?})\n{}\n{}",
                helper.status,
                String::from_utf8_lossy(&helper.stdout),
                String::from_utf8_lossy(&helper.stderr)
            )
        });
    let read = |name: &str| {
        String::from_utf8_lossy(&std::fs::read(dir.join(name)).unwrap_or_default()).into_owned()
    };
    Measured {
        status: ExitStatus::from_raw(
            result["status"]
                .as_i64()
                .and_then(|s| i32::try_from(s).ok())
                .expect("status"),
        ),
        stdout: read("measured.stdout"),
        stderr: read("measured.stderr"),
        max_rss: result["max_rss_kib"].as_u64().expect("max_rss_kib") * 1024,
    }
}

/// Not a test: the helper process of [`run`], which does nothing unless started by it.
#[test]
#[ignore = "a helper that `support::rusage::run` starts in a process of its own"]
fn measured_child() {
    use nix::sys::resource::{UsageWho, getrusage};

    let Ok(spec) = std::env::var(SPEC) else {
        return;
    };
    let spec: Value = serde_json::from_str(&spec).expect("spec");
    let dir = Path::new(spec["dir"].as_str().expect("dir"));
    let file = |name: &str| std::fs::File::create(dir.join(name)).expect("output file");
    let mut command = Command::new(spec["program"].as_str().expect("program"));
    for arg in spec["args"].as_array().expect("args") {
        command.arg(arg.as_str().expect("arg"));
    }
    if let Some(cwd) = spec["cwd"].as_str() {
        command.current_dir(cwd);
    }
    for pair in spec["env"].as_array().expect("env") {
        let key = pair[0].as_str().expect("key");
        match pair[1].as_str() {
            Some(value) => command.env(key, value),
            None => command.env_remove(key),
        };
    }
    let status = command
        .stdin(Stdio::null())
        .stdout(file("measured.stdout"))
        .stderr(file("measured.stderr"))
        .status()
        .expect("start the measured command");
    let usage = getrusage(UsageWho::RUSAGE_CHILDREN).expect("getrusage");
    let result = json!({ "status": status.into_raw(), "max_rss_kib": usage.max_rss() });
    std::fs::write(dir.join("measured.json"), result.to_string()).expect("write the result");
}
