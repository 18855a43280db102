//! What every process a step starts here is told about its executor, beside its attempt's
//! identity ([`crate::orphans`]): the journal it belongs to, as `RUNBOOK_JOURNAL`. A step that
//! runs `runbook status`, `runbook pause` or another runbook command then reaches the journal of
//! the run it is part of — the executor answers it over the journal's socket — whether the
//! executor was given its journal by `--journal`, by `RUNBOOK_JOURNAL` or by default. Commands
//! sent to another host over SSH are not told: that host has no access to this journal.

use std::ffi::OsString;
use std::path::Path;
use std::sync::OnceLock;

/// The variable naming the journal directory, as the CLI reads it.
pub const JOURNAL_VAR: &str = "RUNBOOK_JOURNAL";

static VARS: OnceLock<Vec<(&'static str, OsString)>> = OnceLock::new();

/// Tells every step process of this executor that its journal is `dir` (made absolute, so a
/// step with its own `cwd` names the same directory). The first call wins; without one (a
/// library's tests) processes inherit the environment as it is.
pub fn set_journal(dir: &Path) {
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let _ = VARS.set(vec![(JOURNAL_VAR, dir.into_os_string())]);
}

/// Tells every step process of this executor that its journal is the etcd journal at `url`
/// (`etcd://…`, without credentials: those travel in the `ETCDCTL_*` variables steps inherit).
/// The first call wins, as with [`set_journal`].
pub fn set_journal_url(url: &str) {
    let _ = VARS.set(vec![(JOURNAL_VAR, url.into())]);
}

/// Puts the variables on `cmd` (after any `env_clear`, so they are always there), except one
/// the step's own `env` sets: the runbook's word wins.
pub(crate) fn apply(cmd: &mut tokio::process::Command) {
    let Some(vars) = VARS.get() else { return };
    for (name, value) in vars {
        let set_by_step = cmd
            .as_std()
            .get_envs()
            .any(|(k, v)| k == *name && v.is_some());
        if !set_by_step {
            cmd.env(name, value);
        }
    }
}
