//! What `--help` says besides the arguments: examples, the exit codes and where the journal is
//! (resolved now, from the environment of this invocation).

use clap::CommandFactory as _;

use crate::cli::{Cli, exit};

const EXAMPLES: &str = "\
Examples:
  runbook list                                   the runbooks found by name
  runbook check ./upgrade.yaml                   problems, with file:line:column
  runbook plan upgrade-openbao -p to_version=2.7.2
  runbook run upgrade-openbao -p to_version=2.7.2 --detach
  runbook status RUN                             where a run stands (from any shell)
  runbook approve RUN --comment \"canary healthy\"
  runbook resume RUN --retry-step 'roll[1].restart'
  runbook serve --listen 127.0.0.1:8427          API, web page, schedules
  source <(runbook completions bash)";

/// The command line with the long help's epilogue filled in.
pub fn command() -> clap::Command {
    let journal = match std::env::var_os("RUNBOOK_JOURNAL").filter(|d| !d.is_empty()) {
        Some(dir) => format!(
            "{} (from $RUNBOOK_JOURNAL)",
            std::path::Path::new(&dir).display()
        ),
        None => format!(
            "{} (the default; --journal DIR or $RUNBOOK_JOURNAL choose another)",
            crate::cli::default_journal_dir().display()
        ),
    };
    let codes = format!(
        "Exit codes:\n  {ok}  succeeded\n  {failed}  a step or the operation failed (or the run was aborted)\n  \
         {bad}  bad input: a broken runbook, a wrong parameter, a command that does not fit\n  \
         {parked}  the run is parked at a gate\n  {attention}  the run needs an operator's decision\n  \
         128+N  interrupted by signal N",
        ok = exit::OK,
        failed = exit::FAILED,
        bad = exit::BAD_INPUT,
        parked = exit::PARKED,
        attention = exit::ATTENTION,
    );
    Cli::command().after_long_help(format!("{EXAMPLES}\n\n{codes}\n\nJournal: {journal}"))
}
