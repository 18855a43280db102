//! Ctrl-C: the step in flight is stopped (its whole process group), journaled as interrupted —
//! never as failed — and the process exits 130. Resuming stops for a decision because the
//! step may have done part of its work, and `--retry-step` runs it again.

use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use crate::support::{Sandbox, wait_for};

const SLOW: &str = r#"
runbook: slow
steps:
  - id: prepare
    shell: { args: ["true"] }
  - id: work
    shell: { run: "echo $$ > pid; if [ -f quick ]; then echo done > done.txt; exit 0; fi; exec sleep 30" }
  - id: after
    shell: { run: "echo after >> out.txt" }
"#;

/// The run id, from the only follow file in the journal.
fn follow_file(sb: &Sandbox) -> Option<(String, String)> {
    let dir = sb.journal().join("follow");
    let entry = std::fs::read_dir(dir).ok()?.flatten().next()?;
    let name = entry.file_name().to_string_lossy().into_owned();
    let run = name.strip_suffix(".jsonl")?.to_owned();
    let text = std::fs::read_to_string(entry.path()).ok()?;
    Some((run, text))
}

fn follow_has_started(text: &str, path: &str) -> bool {
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .any(|r| r["event"] == "step_started" && r["path"] == path)
}

fn alive(pid: i32) -> bool {
    kill(Pid::from_raw(pid), None) != Err(Errno::ESRCH)
}

#[test]
fn ctrl_c_is_recorded_as_interrupted_and_stops_the_command() {
    let sb = Sandbox::new();
    sb.write("slow.yaml", SLOW);
    let child = sb.cmd(&["run", "slow.yaml"]).spawn();
    let runbook_pid = Pid::from_raw(i32::try_from(child.id()).expect("pid"));

    let mut run = String::new();
    wait_for(
        "the follow file to show `work` started",
        Duration::from_secs(10),
        || match follow_file(&sb) {
            Some((id, text)) if follow_has_started(&text, "work") => {
                run = id;
                true
            }
            _ => false,
        },
    );
    let mut command_pid = 0;
    wait_for(
        "the command to write its pid",
        Duration::from_secs(10),
        || {
            command_pid = sb.read("pid").trim().parse().unwrap_or(0);
            command_pid > 0
        },
    );
    // `exec sleep 30` keeps the pid; wait until it is sleeping, not still the shell.
    wait_for("the command to exec sleep", Duration::from_secs(10), || {
        std::fs::read_to_string(format!("/proc/{command_pid}/comm"))
            .is_ok_and(|c| c.trim() == "sleep")
    });

    kill(runbook_pid, Signal::SIGINT).expect("send SIGINT");
    let out = child.wait_with_output().expect("wait for runbook");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(130),
        "Ctrl-C exits 128+2\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stdout.contains(&format!(
            "run {run} was interrupted by SIGINT; continue with: {} resume {run}",
            sb.hint()
        )),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );

    wait_for("the command to be gone", Duration::from_secs(5), || {
        !alive(command_pid)
    });

    let records = sb.records(&run);
    let about_work: Vec<&Value> = records.iter().filter(|r| r["path"] == "work").collect();
    assert!(
        about_work.iter().any(|r| r["event"] == "step_interrupted"),
        "{records:?}"
    );
    assert!(
        !about_work.iter().any(|r| r["event"] == "step_failed"),
        "an interrupted step is not failed: {records:?}"
    );
    let status = sb.status(&run);
    assert_eq!(status["state"], "interrupted");
    assert_eq!(sb.read("out.txt"), "", "nothing after `work` ran");

    // The command may have done part of its work: the resume asks.
    let out = sb.cmd(&["resume", &run]).code(4);
    assert!(
        out.stdout
            .contains(&format!("{} resume {run} --retry-step work", sb.hint())),
        "{}",
        out.explain("resume must offer --retry-step")
    );
    assert_eq!(sb.status(&run)["state"], "needs-attention");

    sb.write("quick", "");
    sb.cmd(&["resume", &run, "--retry-step", "work"]).ok();
    assert_eq!(sb.read("done.txt"), "done\n");
    assert_eq!(sb.read("out.txt"), "after\n");
    assert_eq!(sb.status(&run)["state"], "succeeded");
}
