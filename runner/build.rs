//! Puts the commit the binary was built from into `--version` (`RUNBOOK_COMMIT`): the output of
//! `git describe --always`, or "unknown" outside a git checkout; and rebuilds when a bundled
//! runbook is added or changed.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    Command::new("git")
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

fn main() {
    let commit = git(&["describe", "--always", "--abbrev=12"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=RUNBOOK_COMMIT={commit}");
    // The bundled runbooks are included with `include_dir!`, which cargo does not watch: a new
    // file would not be in the binary until a source changed.
    println!("cargo:rerun-if-changed=runbooks");
    // A commit moves the branch HEAD points at; a checkout changes HEAD itself.
    if let Some(head) = git(&["rev-parse", "--git-path", "HEAD"]) {
        println!("cargo:rerun-if-changed={head}");
    }
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"])
        && let Some(path) = git(&["rev-parse", "--git-path", &branch])
    {
        println!("cargo:rerun-if-changed={path}");
    }
}
