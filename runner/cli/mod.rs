//! The command line: arguments, the subcommands, and the one place errors become exit codes
//! ([`exit`]).

mod access;
mod detach;
pub mod executor;
pub mod exit;
mod help;
mod inspect;
mod library;
pub mod location;
pub mod remote;
mod runs;
mod schedule;

use std::ffi::OsString;
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Parser, Subcommand};
use runbook_journals::{Journal, JournalError, SledJournal, SledOptions};

use crate::cli::location::Location;
use crate::engine::{EngineError, GateMode};
use crate::failure::Kind;
use crate::serve::ServeError;
use crate::serve::runs::RunsError;
use crate::ui::OutputMode;
use crate::ui::stdout::outln;
use crate::wire::Operation;

/// The version line: the crate's version and the commit it was built from.
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("RUNBOOK_COMMIT"), ")");

/// Runbooks as code, with a durable journal.
#[derive(Debug, Parser)]
#[command(name = "runbook", version = VERSION, about, propagate_version = true)]
pub struct Cli {
    /// The journal directory, or an etcd journal.
    #[arg(
        long,
        global = true,
        value_name = "DIR|etcd://HOST:PORT[,HOST:PORT…]/PREFIX",
        help = "The journal directory, or an etcd journal as etcd://host:port[,host:port…]/prefix [env: RUNBOOK_JOURNAL; an empty value counts as unset]"
    )]
    pub journal: Option<PathBuf>,

    /// An etcd journal's CA certificate (PEM).
    #[arg(long, global = true, value_name = "FILE", env = "ETCDCTL_CACERT")]
    pub etcd_cacert: Option<PathBuf>,

    /// An etcd journal's client certificate (PEM), with --etcd-key.
    #[arg(long, global = true, value_name = "FILE", env = "ETCDCTL_CERT")]
    pub etcd_cert: Option<PathBuf>,

    /// The private key of --etcd-cert (PEM).
    #[arg(long, global = true, value_name = "FILE", env = "ETCDCTL_KEY")]
    pub etcd_key: Option<PathBuf>,

    /// An etcd journal's user, as etcdctl's --user takes it.
    #[arg(
        long,
        global = true,
        value_name = "NAME[:PASSWORD]",
        env = "ETCDCTL_USER",
        hide_env_values = true
    )]
    pub etcd_user: Option<String>,

    /// The password of --etcd-user (prefer the environment: arguments are visible to others).
    #[arg(
        long,
        global = true,
        value_name = "PASSWORD",
        env = "ETCDCTL_PASSWORD",
        hide_env_values = true
    )]
    pub etcd_password: Option<String>,

    /// On an etcd journal: this executor's name among the executors sharing it.
    #[arg(
        long,
        global = true,
        value_name = "NAME",
        env = "RUNBOOK_EXECUTOR_NAME",
        help = "On an etcd journal: this executor's name among those sharing the journal (default: HOST-PID)"
    )]
    pub executor_name: Option<String>,

    /// On an etcd journal: the time to live of this executor's lease.
    #[arg(
        long,
        global = true,
        value_name = "DURATION",
        default_value = "10s",
        help = "On an etcd journal: the time to live of this executor's lease, whole seconds from 2s to 1h; the runs of an executor that died are taken up by another within it"
    )]
    pub lease_ttl: humantime::Duration,

    /// Output for people, or one JSON object per line.
    #[arg(long, global = true, value_enum, default_value = "human")]
    pub output: OutputMode,

    /// Show the last lines of every step's output (stdout, stderr), not only a failed step's.
    #[arg(short, long, global = true)]
    pub verbose: bool,

    /// Who is acting.
    #[arg(
        long = "as",
        global = true,
        value_name = "NAME",
        help = "Who is acting (recorded as starter, approver, resumer); defaults to $RUNBOOK_USER, then $USER, then the login name of the user id"
    )]
    pub who: Option<String>,

    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the runbooks found by name.
    List,
    /// Describe a runbook: parameters and steps.
    Show {
        /// A runbook name or file.
        name: String,
    },
    /// Check runbooks for problems without running them (all found by name if none given).
    Check {
        /// Runbook names or files.
        files: Vec<String>,
    },
    /// Show what a run would do: parameters, prechecks' results, steps.
    Plan {
        /// A runbook name or file.
        name: String,
        /// A parameter value.
        #[arg(short = 'p', long = "param", value_name = "NAME=VALUE", value_parser = parse_param)]
        params: Vec<(String, String)>,
        /// Do not run the prechecks.
        #[arg(long)]
        no_prechecks: bool,
    },
    /// Start a run.
    Run {
        /// A runbook name or file.
        name: String,
        /// A parameter value.
        #[arg(short = 'p', long = "param", value_name = "NAME=VALUE", value_parser = parse_param)]
        params: Vec<(String, String)>,
        /// Approve every gate.
        #[arg(long)]
        yes: bool,
        /// Return at once with the run's id; the run goes on in a background process (its
        /// output in the journal directory's `logs/`), parking at gates.
        #[arg(long)]
        detach: bool,
    },
    /// Show runs that are not finished, or one run in detail.
    Status {
        /// A run id (or a unique prefix).
        run: Option<String>,
    },
    /// Show a run's journal.
    Log {
        /// A run id (or a unique prefix).
        run: String,
        /// Keep printing as the run goes on.
        #[arg(long, short)]
        follow: bool,
        /// Print this step's whole output (stdout and stderr of every attempt) instead.
        #[arg(long, value_name = "PATH", conflicts_with = "follow")]
        step: Option<String>,
    },
    /// List all runs, newest first.
    History {
        /// Show at most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Continue a run that stopped, or take up a failed run again at the step that failed.
    Resume {
        /// A run id (or a unique prefix).
        run: String,
        /// Run the step that was in flight (or that failed) again.
        #[arg(long, value_name = "PATH", conflicts_with = "skip_step")]
        retry_step: Option<String>,
        /// Treat the step that was in flight (or that failed) as done.
        #[arg(long, value_name = "PATH")]
        skip_step: Option<String>,
        /// Why (journaled with the decision).
        #[arg(long)]
        comment: Option<String>,
        /// Use the runbook files as they are now instead of the copies pinned by the run.
        #[arg(long)]
        reload: bool,
        /// The run's journal is damaged: go on from its intact records (the operator's
        /// decision, journaled); the next step is treated as possibly started.
        #[arg(long)]
        accept_loss: bool,
        /// A parameter value (secret parameters must be given again).
        #[arg(short = 'p', long = "param", value_name = "NAME=VALUE", value_parser = parse_param)]
        params: Vec<(String, String)>,
        /// Approve every gate.
        #[arg(long)]
        yes: bool,
        /// Return at once; the run goes on in a background process, parking at gates.
        #[arg(long)]
        detach: bool,
    },
    /// Approve a run's open gate and continue the run.
    Approve {
        /// A run id (or a unique prefix).
        run: String,
        /// The gate's path, if the run has several open.
        #[arg(long, value_name = "PATH")]
        step: Option<String>,
        /// Why.
        #[arg(long)]
        comment: Option<String>,
        /// A parameter value (secret parameters must be given again).
        #[arg(short = 'p', long = "param", value_name = "NAME=VALUE", value_parser = parse_param)]
        params: Vec<(String, String)>,
        /// Return at once; the run goes on in a background process, parking at later gates.
        #[arg(long)]
        detach: bool,
    },
    /// Reject a run's open gate; the run fails (and its `on_failure` steps run).
    Reject {
        /// A run id (or a unique prefix).
        run: String,
        /// The gate's path, if the run has several open.
        #[arg(long, value_name = "PATH")]
        step: Option<String>,
        /// Why.
        #[arg(long)]
        comment: Option<String>,
        /// A parameter value (secret parameters must be given again).
        #[arg(short = 'p', long = "param", value_name = "NAME=VALUE", value_parser = parse_param)]
        params: Vec<(String, String)>,
    },
    /// Abort a run that is not finished: stop its step in flight, run its cleanup steps
    /// (`on_abort`, else `on_failure`), and release its lock.
    Abort {
        /// A run id (or a unique prefix).
        run: String,
        /// Why.
        #[arg(long, alias = "comment")]
        reason: Option<String>,
        /// Do not run the cleanup steps (when the cleanup itself is the problem).
        #[arg(long)]
        no_cleanup: bool,
    },
    /// Pause a run at its next step boundary (the step in flight finishes; a wait or sleep is
    /// cut short); it keeps its lock until `unpause`.
    Pause {
        /// A run id (or a unique prefix).
        run: String,
        /// Why.
        #[arg(long)]
        comment: Option<String>,
    },
    /// Continue a paused run (its prechecks run again first).
    Unpause {
        /// A run id (or a unique prefix).
        run: String,
        /// Why.
        #[arg(long)]
        comment: Option<String>,
        /// A parameter value (secret parameters must be given again).
        #[arg(short = 'p', long = "param", value_name = "NAME=VALUE", value_parser = parse_param)]
        params: Vec<(String, String)>,
        /// Approve every gate.
        #[arg(long)]
        yes: bool,
        /// Return at once; the run goes on in a background process, parking at gates.
        #[arg(long)]
        detach: bool,
    },
    /// Hold the journal: fire schedules, execute runs, serve the HTTP API and the web page.
    Serve {
        /// Where to listen (loopback unless API tokens are configured).
        #[arg(long, default_value = "127.0.0.1:8427", value_name = "ADDR:PORT")]
        listen: std::net::SocketAddr,
        /// A schedules file (default: ./schedules.yaml if it exists).
        #[arg(long = "schedules", value_name = "FILE")]
        schedules: Vec<PathBuf>,
        /// API tokens, one `name: token` per line; the name is the caller's identity.
        #[arg(long, env = "RUNBOOK_TOKENS", value_name = "FILE")]
        tokens: Option<PathBuf>,
        /// A webhook (Slack-compatible) told when a gate opens or expires, and a run needs
        /// attention, is aborted, fails or succeeds.
        #[arg(long = "webhook", value_name = "URL")]
        webhooks: Vec<String>,
        /// Only these events go to the webhooks.
        #[arg(long = "webhook-event", value_name = "EVENT", value_parser = parse_notify_event)]
        webhook_events: Vec<crate::serve::notify::NotifyEvent>,
        /// The URL people reach this serve at, for links in notifications.
        #[arg(long, value_name = "URL")]
        base_url: Option<String>,
        /// How often schedules are checked.
        #[arg(long, default_value = "250ms", hide = true)]
        tick: humantime::Duration,
    },
    /// Schedules: list them with their next fire times, pause, resume, or fire one now.
    Schedule {
        /// What to do.
        #[command(subcommand)]
        command: ScheduleCommand,
        /// A schedules file (default: ./schedules.yaml if it exists).
        #[arg(long = "schedules", value_name = "FILE", global = true)]
        schedules: Vec<PathBuf>,
    },
    /// Write a commented starting runbook to ./runbooks/NAME.yaml (it passes `check`).
    Init {
        /// The runbook's name (letters, digits, `-`, `_`).
        name: String,
    },
    /// Print a JSON Schema of the runbook format, for editors (see the README).
    Schema,
    /// Print a shell completion script (`source <(runbook completions bash)`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// The background process of `--detach` (reads its operation on standard input).
    #[command(name = detach::BACKGROUND, hide = true)]
    Background {
        /// Approve every gate.
        #[arg(long)]
        yes: bool,
    },
}

/// `runbook schedule …`.
#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Every schedule with its state, last fires and next fire times.
    List,
    /// Stop a schedule from firing.
    Pause {
        /// The schedule.
        name: String,
    },
    /// Let a paused schedule fire again (from now on; what fell due meanwhile is not caught up).
    Resume {
        /// The schedule.
        name: String,
    },
    /// Fire a schedule now (its overlap policy applies).
    Trigger {
        /// The schedule.
        name: String,
    },
}

fn parse_notify_event(s: &str) -> Result<crate::serve::notify::NotifyEvent, String> {
    serde_json::from_value(serde_json::Value::String(s.to_owned())).map_err(|_| {
        let names: Vec<&str> = crate::serve::notify::NotifyEvent::ALL
            .iter()
            .map(|e| e.as_str())
            .collect();
        format!("`{s}` is not one of {}", names.join(", "))
    })
}

/// The schedules files to use: those given, or ./schedules.yaml if it exists.
pub fn schedule_files(given: &[PathBuf]) -> Vec<PathBuf> {
    if !given.is_empty() {
        return given.to_vec();
    }
    let default = PathBuf::from("schedules.yaml");
    if default.is_file() {
        vec![default]
    } else {
        Vec::new()
    }
}

fn parse_param(s: &str) -> Result<(String, String), String> {
    crate::params::parse_assignment(s)
}

/// What a command failed with.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// From the engine.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// From the journal.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// From `serve`.
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// From the process that holds the journal (or its run registry here), which said what
    /// kind of failure it met.
    #[error("{message}")]
    Holder {
        /// The kind, as the holder classified it.
        kind: Kind,
        /// Its message.
        message: String,
    },
    /// Bad input not caught elsewhere.
    #[error("{0}")]
    Usage(String),
    /// Anything else.
    #[error("{0:#}")]
    Other(#[from] anyhow::Error),
}

impl From<RunsError> for CliError {
    fn from(e: RunsError) -> Self {
        match e {
            RunsError::Engine(e) => Self::Engine(e),
            other @ RunsError::Unavailable(_) => Self::Holder {
                kind: other.kind(),
                message: other.to_string(),
            },
        }
    }
}

impl CliError {
    /// The exit code for this error: the same for a failure met here and one the holder of
    /// the journal met for this command line.
    pub fn exit_code(&self) -> i32 {
        exit::of_kind(match self {
            Self::Engine(e) => Kind::of_engine(e),
            Self::Journal(e) | Self::Serve(ServeError::Journal(e)) => Kind::of_journal(e),
            Self::Holder { kind, .. } => *kind,
            Self::Usage(_) | Self::Serve(ServeError::BadInput(_)) => Kind::BadInput,
            Self::Other(_) | Self::Serve(ServeError::Io { .. }) => Kind::Failed,
        })
    }
}

/// Where runbook keeps a user's state: `$XDG_STATE_HOME/runbook`, or `~/.local/state/runbook`.
fn state_base() -> PathBuf {
    default_journal_dir()
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Where the journal is when neither `--journal` nor `$RUNBOOK_JOURNAL` says.
pub fn default_journal_dir() -> PathBuf {
    let base = std::env::var_os("XDG_STATE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("runbook").join("journal")
}

/// The login name of the process's user id, from the user database.
fn login_name() -> Option<String> {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
}

impl Command {
    /// Commands that only print what they read: a closed standard output ends them quietly (by
    /// SIGPIPE), as it ends `ls`. Commands that execute steps or serve go on without it. None
    /// of them is ever killed by SIGPIPE from a socket or a step's child (see
    /// [`crate::ui::stdout`]).
    fn only_prints(&self) -> bool {
        matches!(
            self,
            Self::List
                | Self::Show { .. }
                | Self::Check { .. }
                | Self::Status { .. }
                | Self::Log { .. }
                | Self::History { .. }
                | Self::Completions { .. }
                | Self::Schema
        )
    }
}

/// Everything a command needs.
pub struct Env {
    /// Parsed arguments.
    pub cli: Cli,
    /// The identity acting.
    pub who: String,
    /// The etcd journal once opened (one connection per command).
    etcd: std::sync::Mutex<Option<Arc<runbook_journals::EtcdJournal>>>,
}

impl Env {
    /// The `--journal` (or `$RUNBOOK_JOURNAL`) given, if any.
    fn journal_arg(&self) -> Option<PathBuf> {
        self.cli.journal.clone().or_else(|| {
            std::env::var_os("RUNBOOK_JOURNAL")
                .filter(|d| !d.is_empty())
                .map(PathBuf::from)
        })
    }

    /// Where the journal is: a directory, or an etcd cluster.
    pub fn location(&self) -> Result<Location, CliError> {
        Location::of(
            &self.cli,
            self.journal_arg().as_deref(),
            &default_journal_dir(),
        )
    }

    /// The journal directory in use; for an etcd journal, its local directory (the socket,
    /// follow files and logs of this machine: see [`location`]).
    pub fn journal_dir(&self) -> PathBuf {
        match self.location() {
            Ok(location) => location.local_dir(&state_base()),
            Err(_) => self.journal_arg().unwrap_or_else(default_journal_dir),
        }
    }

    /// The `--journal` value that names this journal to another runbook process.
    pub fn journal_arg_for_child(&self) -> std::ffi::OsString {
        match self.location() {
            Ok(Location::Etcd(target)) => target.url().into(),
            _ => self.journal_dir().into_os_string(),
        }
    }

    /// Opens the journal for writing, for a command that does not execute a run (it holds the
    /// journal for an instant, and answers nobody meanwhile).
    pub fn open_journal(&self) -> Result<Arc<dyn Journal>, CliError> {
        self.open_with(access::Want::Write, SledOptions::default())
    }

    /// Opens a read-only view of the journal: nothing in the journal directory is created or
    /// changed (see `SledJournal::open_read_only`). An etcd journal is read in place: reading
    /// it writes nothing.
    pub fn open_journal_read_only(&self) -> Result<Arc<dyn Journal>, CliError> {
        self.open_with(access::Want::Read, SledOptions::default())
    }

    /// Opens the journal as `want` says; a sled journal with `opts`.
    pub fn open_with(
        &self,
        want: access::Want,
        opts: SledOptions,
    ) -> Result<Arc<dyn Journal>, CliError> {
        match self.location()? {
            Location::Dir(dir) => Ok(match want {
                access::Want::Write => Arc::new(SledJournal::open(&dir, opts)?),
                access::Want::Read => Arc::new(SledJournal::open_read_only(&dir, opts)?),
            }),
            Location::Etcd(_) => Ok(self
                .etcd_journal()?
                .expect("an etcd location opens an etcd journal")),
        }
    }

    /// The etcd journal, opened once, when the journal is one.
    pub fn etcd_journal(&self) -> Result<Option<Arc<runbook_journals::EtcdJournal>>, CliError> {
        let Location::Etcd(target) = self.location()? else {
            return Ok(None);
        };
        let mut opened = self.etcd.lock().expect("etcd journal");
        if let Some(journal) = opened.as_ref() {
            return Ok(Some(Arc::clone(journal)));
        }
        let journal = Location::open_etcd(&target, &self.journal_dir())?;
        *opened = Some(Arc::clone(&journal));
        Ok(Some(journal))
    }

    /// This process as an executor: `--executor-name` and `--lease-ttl`, checked.
    pub fn executor(&self) -> Result<executor::Executor, CliError> {
        executor::Executor::of(self.cli.executor_name.as_deref(), self.cli.lease_ttl.into())
    }

    /// Joins the fleet of the journal when it is shared by several executors (etcd); `None`
    /// for a journal of this machine.
    pub fn join(&self) -> Result<Option<executor::Joined>, CliError> {
        let Some(journal) = self.etcd_journal()? else {
            return Ok(None);
        };
        Ok(Some(self.executor()?.join(&journal)?))
    }
}

/// Parses arguments, runs the command, prints any error, and returns the exit code.
pub fn main(args: impl IntoIterator<Item = OsString>) -> i32 {
    let parsed = help::command()
        .try_get_matches_from(args)
        .and_then(|m| <Cli as clap::FromArgMatches>::from_arg_matches(&m));
    let cli = match parsed {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                exit::BAD_INPUT
            } else {
                exit::OK
            };
        }
    };
    init_tracing();
    if cli.command.only_prints() {
        crate::ui::stdout::end_on_closed_pipe();
    }
    // The account database is asked only when nothing names the user: a lookup reads
    // nsswitch.conf and /etc/passwd (or asks nscd) on every command otherwise.
    let named = |w: &String| !w.is_empty();
    let who = [
        cli.who.clone(),
        std::env::var("RUNBOOK_USER").ok(),
        std::env::var("USER").ok(),
    ]
    .into_iter()
    .flatten()
    .find(named)
    .or_else(|| login_name().filter(named))
    .unwrap_or_else(|| "unknown".into());
    let env = Env {
        cli,
        who,
        etcd: std::sync::Mutex::new(None),
    };
    match env.location() {
        Ok(Location::Etcd(target)) => {
            crate::ui::hint::set_journal_url(&target.url());
            runbook_steps::child_env::set_journal_url(&target.url());
        }
        _ => {
            crate::ui::hint::set_journal(&env.journal_dir(), &default_journal_dir());
            runbook_steps::child_env::set_journal(&env.journal_dir());
        }
    }
    // The runtime's default workers: nothing blocks them (journal writes are awaited, blocking
    // work runs on the blocking pool).
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: failed to start the async runtime: {e}");
            return exit::FAILED;
        }
    };
    let result = runtime.block_on(dispatch(&env));
    let code = match result {
        Ok(code) => code,
        Err(e) => {
            let code = e.exit_code();
            report_error(&env, &e);
            code
        }
    };
    // Dropping the tasks lets go of the journal (whose holder file goes with it); a blocking
    // read of a terminal prompt may still be pending: it is not waited for long.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    code
}

fn report_error(env: &Env, e: &CliError) {
    if env.cli.output == OutputMode::Json {
        let mut line = serde_json::json!({ "event": "error", "message": e.to_string(), "code": e.exit_code() });
        if let CliError::Engine(EngineError::Invalid { problems, .. }) = e {
            line["problems"] = serde_json::json!(problems);
        }
        crate::ui::json::print(&line);
    }
    match e {
        CliError::Engine(EngineError::Invalid { rendered, .. }) => eprintln!("{rendered}"),
        other => {
            let texts = runbook_journals::error_texts(other);
            eprintln!("error: {}", texts[0]);
            for cause in &texts[1..] {
                eprintln!("  caused by: {cause}");
            }
        }
    }
}

async fn dispatch(env: &Env) -> Result<i32, CliError> {
    match &env.cli.command {
        Command::List => Ok(library::list(env)),
        Command::Show { name } => library::show(env, name),
        Command::Check { files } => Ok(library::check(env, files)),
        Command::Plan {
            name,
            params,
            no_prechecks,
        } => library::plan(env, name, params, *no_prechecks).await,
        Command::Run {
            name,
            params,
            yes,
            detach,
        } => {
            if !*detach {
                runbook_steps::orphans::prestart();
            }
            let op = Operation::Start {
                target: name.clone(),
                params: params.clone(),
                id: None,
            };
            runs::operate(env, &op, mode(*yes, *detach)).await
        }
        Command::Resume {
            run,
            retry_step,
            skip_step,
            comment,
            reload,
            accept_loss,
            params,
            yes,
            detach,
        } => {
            if !*detach {
                runbook_steps::orphans::prestart();
            }
            let op = Operation::Resume {
                run: run.clone(),
                retry_step: retry_step.clone(),
                skip_step: skip_step.clone(),
                reload: *reload,
                accept_loss: *accept_loss,
                unpause: false,
                comment: comment.clone(),
                params: params.clone(),
            };
            runs::operate(env, &op, mode(*yes, *detach)).await
        }
        Command::Unpause {
            run,
            comment,
            params,
            yes,
            detach,
        } => {
            let op = Operation::Resume {
                run: run.clone(),
                retry_step: None,
                skip_step: None,
                reload: false,
                accept_loss: false,
                unpause: true,
                comment: comment.clone(),
                params: params.clone(),
            };
            runs::operate(env, &op, mode(*yes, *detach)).await
        }
        Command::Pause { run, comment } => runs::pause(env, run, comment.clone()).await,
        Command::Approve {
            run,
            step,
            comment,
            params,
            detach,
        } => {
            let op = Operation::Decide {
                run: run.clone(),
                approved: true,
                step: step.clone(),
                comment: comment.clone(),
                params: params.clone(),
            };
            runs::operate(env, &op, mode(false, *detach)).await
        }
        Command::Reject {
            run,
            step,
            comment,
            params,
        } => {
            // After a rejection only `on_failure` steps run: no gate to ask about.
            let op = Operation::Decide {
                run: run.clone(),
                approved: false,
                step: step.clone(),
                comment: comment.clone(),
                params: params.clone(),
            };
            runs::operate(env, &op, runs::Mode::Foreground(GateMode::Detach)).await
        }
        Command::Abort {
            run,
            reason,
            no_cleanup,
        } => runs::abort(env, run, reason.clone(), *no_cleanup).await,
        Command::Serve {
            listen,
            schedules,
            tokens,
            webhooks,
            webhook_events,
            base_url,
            tick,
        } => {
            crate::serve::serve(crate::serve::Options {
                journal_dir: env.journal_dir(),
                shared: match env.etcd_journal()? {
                    Some(journal) => Some(crate::serve::fleet::Shared {
                        join: env.executor()?.joiner(&journal),
                        journal,
                    }),
                    None => None,
                },
                output: env.cli.output,
                listen: *listen,
                schedules: schedule_files(schedules),
                tokens: tokens.clone(),
                webhooks: webhooks.clone(),
                webhook_events: webhook_events.clone(),
                base_url: base_url.clone(),
                tick: (*tick).into(),
            })
            .await?;
            Ok(exit::OK)
        }
        Command::Schedule { command, schedules } => {
            schedule::run(env, command, &schedule_files(schedules)).await
        }
        Command::Status { run } => inspect::status(env, run.as_deref()).await,
        Command::Log {
            run,
            step: Some(step),
            ..
        } => inspect::step_output(env, run, step).await,
        Command::Log { run, follow, .. } => inspect::log(env, run, *follow).await,
        Command::History { limit } => inspect::history(env, *limit).await,
        Command::Background { yes } => detach::background(env, *yes).await,
        Command::Init { name } => library::init(env, name),
        Command::Schema => {
            let schema = crate::load::schema::runbook(&runbook_steps::Registry::builtin());
            outln!(
                "{}",
                serde_json::to_string_pretty(&schema).expect("a schema serializes")
            );
            Ok(exit::OK)
        }
        Command::Completions { shell } => {
            // Written whole, then printed: the generator panics on a failed write.
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut help::command(), "runbook", &mut script);
            crate::ui::stdout::print_str(&String::from_utf8_lossy(&script));
            Ok(exit::OK)
        }
    }
}

/// Where a run goes on: in the background with `--detach`; here otherwise, approving every gate
/// with `--yes`, asking at each when stdin and stdout are a terminal, parking there if not.
fn mode(yes: bool, detach: bool) -> runs::Mode {
    if detach {
        runs::Mode::Detach { yes }
    } else if yes {
        runs::Mode::Foreground(GateMode::Yes)
    } else if std::io::stdin().is_terminal() && std::io::stdout().is_terminal() {
        runs::Mode::Foreground(GateMode::Prompt)
    } else {
        runs::Mode::Foreground(GateMode::Detach)
    }
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    // kube-client logs every failed request at error level ("failed with error client error
    // (Connect)"), without saying what was asked of which server; the kube step reports the
    // same failure with both, so by default that line is left out. The CQL driver logs each
    // warning a server sends at WARN; the cql step's output holds them.
    let filter = EnvFilter::try_from_env("RUNBOOK_LOG")
        .unwrap_or_else(|_| EnvFilter::new("warn,kube_client::client::builder=off,scylla=error"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
