//! The holder of the journal: the one process that has the journal open for writing — `serve`,
//! or a command of the command line that executes a run (`run`, `resume`, `approve`, `reject`,
//! and the background process of `--detach`) — and so the one that answers every other
//! command of this machine, on the journal's local socket ([`crate::serve::local`]), with the
//! API and the run registry of `serve` ([`crate::serve::api`], [`crate::serve::runs`]).
//!
//! A command-line holder executes its own run in the foreground and, meanwhile, what other
//! commands ask of it: runs they start, approve or resume execute here too, their output going
//! to `logs/RUN.log` in the journal directory. It lets the journal go only once none of them
//! executes any more ([`Runs::idle`]), and closes its socket before it does.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use runbook_journals::{Journal, JournalError};
use runbook_steps::Registry;

use crate::engine::log::Observer;
use crate::library::Library;
use crate::serve::api::{self, App, Bus};
use crate::serve::auth::Tokens;
use crate::serve::fleet::Member;
use crate::serve::local::LocalSocket;
use crate::serve::metrics::Metrics;
use crate::serve::notify::Notifier;
use crate::serve::runs::{Config, Runs};
use crate::ui::OutputMode;
use crate::wire::HolderInfo;

/// How long requests still under way may take once the holder closes its socket.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// The directory of the output files of runs executed for other commands.
pub fn logs_dir(journal_dir: &Path) -> std::path::PathBuf {
    journal_dir.join("logs")
}

/// A process holding the journal, answering on its socket.
pub struct Holder {
    app: Arc<App>,
    socket: Option<LocalSocket>,
}

impl Holder {
    /// Answers on the socket of the journal in `journal_dir`, which this process holds. A
    /// socket that cannot be bound is reported and done without: this process works as
    /// before, and other commands wait for the journal instead.
    pub fn listen(app: Arc<App>, journal_dir: &Path) -> Self {
        let socket = match LocalSocket::bind(journal_dir, api::local_router(app.clone())) {
            Ok(socket) => Some(socket),
            Err(e) => {
                eprintln!(
                    "warning: other runbook commands cannot reach this process while it holds the journal: cannot listen on {}: {e}",
                    journal_dir.join(crate::serve::local::SOCKET).display()
                );
                None
            }
        };
        Self { app, socket }
    }

    /// A holder for a command of the command line: every run's records go to the API's
    /// followers and the follow mirror; runs executed for other commands write their output
    /// to their own files, as `output` says. On a journal shared by several executors, `fleet`
    /// is this process's membership.
    pub fn for_command(
        command: &str,
        journal: Arc<dyn Journal>,
        journal_dir: &Path,
        output: OutputMode,
        fleet: Option<Arc<Member>>,
    ) -> Result<Self, JournalError> {
        let bus = Bus::new(4096);
        let observers: Vec<Arc<dyn Observer>> = vec![
            bus.clone(),
            Arc::new(crate::ui::FollowFile::new(journal_dir)),
        ];
        let runs = Runs::new(Config {
            journal: journal.clone(),
            registry: Arc::new(Registry::builtin()),
            library: Library::from_env(),
            observers,
            metrics: None,
            owns: false,
            fleet,
            logs: Some(logs_dir(journal_dir)),
            log_mode: output,
        })?;
        let app = Arc::new(App {
            runs,
            tokens: Tokens::default(),
            bus,
            metrics: Metrics::new(),
            scheduler: None,
            notifier: Notifier::new(Vec::new(), journal, None),
            holder: HolderInfo {
                pid: std::process::id(),
                command: command.to_owned(),
                schedules: false,
            },
        });
        Ok(Self::listen(app, journal_dir))
    }

    /// Everything the API shares.
    pub fn app(&self) -> &Arc<App> {
        &self.app
    }

    /// The runs this process executes.
    pub fn runs(&self) -> &Arc<Runs> {
        &self.app.runs
    }

    /// Stops answering: the socket goes (while this process still holds the journal), and
    /// the requests under way get a few seconds to finish.
    pub async fn close(self) {
        if let Some(socket) = self.socket {
            socket.close(CLOSE_GRACE).await;
        }
    }
}
