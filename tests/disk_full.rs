//! A journal whose disk fills up, or turns read-only, stops the run at once with an error that
//! names the journal — never a hang — and the run finishes with `resume` once the cause is fixed.
//! The journals live on small tmpfs mounts the tests make (they run as root, as CI does).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::{Sandbox, wait_for};

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Self {
        std::fs::create_dir_all(dir).expect("mkdir");
        mount(&[
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size},mode=0700"),
            "tmpfs",
            &dir.display().to_string(),
        ]);
        Self(dir.to_path_buf())
    }

    fn remount(&self, options: &str) {
        mount(&[
            "-o",
            &format!("remount,{options}"),
            &self.0.display().to_string(),
        ]);
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn mount(args: &[&str]) {
    let out = Command::new("mount")
        .args(args)
        .output()
        .expect("run mount");
    assert!(
        out.status.success(),
        "mount {} failed (these tests need root, as CI has): {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

const FILLER: &str = r#"
runbook: filler
steps:
  - id: fill
    foreach: "range(0, 30)"
    as: i
    steps:
      - id: write
        idempotent: true
        shell: { args: [sh, -c, 'echo "$0" >> effects.txt; head -c 200000 /dev/zero | tr "\0" x', "{{i}}"] }
"#;

#[test]
fn a_full_disk_stops_the_run_with_an_error_naming_the_journal_and_resume_finishes_it() {
    let sb = Sandbox::new();
    sb.write("filler.yaml", FILLER);
    let disk = Tmpfs::mount(&sb.journal(), "2m");

    let mut child = sb.cmd(&["run", "filler.yaml"]).spawn();
    let mut status = None;
    wait_for(
        "the run to stop on the full disk",
        Duration::from_secs(60),
        || {
            status = child.try_wait().expect("wait");
            status.is_some()
        },
    );
    let out = child.wait_with_output().expect("output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    let journal = sb.journal().display().to_string();
    assert!(
        stderr.contains(&format!("the journal {journal} is out of space: "))
            && stderr.contains("nothing was written — free space, then resume the run"),
        "stderr: {stderr}"
    );
    let written = sb.read("effects.txt").lines().count();
    assert!(
        (1..30).contains(&written),
        "{written} steps ran before the disk filled"
    );

    // The journal is readable as it is, and the run waits to be resumed.
    let run = sb.only_run();
    assert_ne!(sb.status(&run)["state"], "succeeded");

    disk.remount("size=64m");
    sb.cmd(&["resume", &run]).ok();
    assert_eq!(sb.status(&run)["state"], "succeeded");
    let mut seen: Vec<u32> = sb
        .read("effects.txt")
        .lines()
        .map(|l| l.parse().expect("an index"))
        .collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen, (0..30).collect::<Vec<_>>(), "every item ran");
}

const SLOW: &str = r#"
runbook: slow
steps:
  - id: first
    shell: "echo first >> effects.txt"
  - id: wait
    idempotent: true
    shell: { args: [sh, -c, 'echo waiting >> effects.txt; sleep 30'] }
  - id: last
    shell: "echo last >> effects.txt"
"#;

#[test]
fn sigterm_on_a_full_disk_still_ends_the_process_and_the_run_resumes_once_there_is_room() {
    let sb = Sandbox::new();
    sb.write("slow.yaml", SLOW);
    let _disk = Tmpfs::mount(&sb.journal(), "8m");
    let child = sb.cmd(&["run", "slow.yaml"]).spawn();
    wait_for("the second step to start", Duration::from_secs(30), || {
        sb.read("effects.txt").contains("waiting")
    });
    // Fill the journal's disk to the last block.
    let filler = sb.journal().join("filler");
    let out = Command::new("dd")
        .args([
            "if=/dev/zero",
            &format!("of={}", filler.display()),
            "bs=64k",
        ])
        .output()
        .expect("dd");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("No space left on device"),
        "the disk is full"
    );
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::SIGTERM).expect("SIGTERM");
    // The step is stopped (its grace is 5 s) and journaling that cannot be written: the process
    // must end all the same.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the process ended after SIGTERM")
        .expect("output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "stderr: {stderr}");
    assert!(
        stderr.contains(&format!(
            "the journal {} is out of space",
            sb.journal().display()
        )),
        "the error names the journal and the cause: {stderr}"
    );

    std::fs::remove_file(&filler).expect("free the space");
    let run = sb.only_run();
    sb.cmd(&["resume", &run]).ok();
    assert_eq!(sb.status(&run)["state"], "succeeded");
    assert_eq!(sb.read("effects.txt").matches("first").count(), 1);
    assert_eq!(sb.read("effects.txt").matches("last").count(), 1);
}

const HELLO: &str = r#"
runbook: small
steps:
  - shell: "true"
"#;

#[test]
fn a_read_only_or_foreign_journal_directory_is_refused_naming_it() {
    let sb = Sandbox::new();
    sb.write("small.yaml", HELLO);
    let disk = Tmpfs::mount(&sb.journal(), "1m");
    disk.remount("ro");
    let out = sb.cmd(&["run", "small.yaml"]).code(1);
    let journal = sb.journal().display().to_string();
    assert!(
        out.stderr.contains(&journal) && out.stderr.contains("Read-only file system"),
        "{}",
        out.explain("names the journal and the cause")
    );
    drop(disk);

    // A journal owned by someone else (root, 0700), used by another user.
    sb.cmd(&["run", "small.yaml"]).ok();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_runbook"))
        .args(["history", "--journal", &journal])
        .current_dir("/")
        .output()
        .expect("setpriv");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&journal) && stderr.contains("Permission denied"),
        "names the journal and the cause: {stderr}"
    );
}
