//! The executor's side: it marks every step process with its attempt, starts the watchdog with
//! the first one (or ahead of it, [`prestart`]), tells the watchdog about each group as it starts and as its leader is reaped,
//! and starts the watchdog again (telling it everything in flight) if it went away.
//!
//! Nothing here blocks on the watchdog: the pipe's write end is non-blocking, and a message
//! the pipe cannot take at once is dropped with a warning (the run's next `resume` still stops
//! what the watchdog would have).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{self, Write};
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Stdio};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use super::Attempt;
use super::procfs;
use super::stop::Group;
use super::watchdog::{Message, WATCHDOG_ARG};

/// How the watchdog is started: the executable and the name it shows as `argv[0]`.
struct Launch {
    program: PathBuf,
    arg0: OsString,
}

/// The executor's link to its watchdog.
struct Client {
    launch: Launch,
    running: Option<(Child, ChildStdin)>,
    /// Every group in flight, as the line that tracks it.
    live: BTreeMap<i32, String>,
    /// Whether a failure to start the watchdog was reported (once is enough).
    warned: bool,
}

static CLIENT: OnceLock<Mutex<Client>> = OnceLock::new();

/// Makes every step process of this executor tracked by a watchdog started as `program
/// __watchdog` (shown as `arg0`); `program` must be a binary whose entry point hands that
/// argument to [`super::watchdog_main`]. Without it (a library's tests), nothing is tracked.
/// The first call wins.
pub fn install(program: impl Into<PathBuf>, arg0: impl Into<OsString>) {
    let _ = CLIENT.set(Mutex::new(Client {
        launch: Launch {
            program: program.into(),
            arg0: arg0.into(),
        },
        running: None,
        live: BTreeMap::new(),
        warned: false,
    }));
}

/// Starts the watchdog now, on a thread of its own, if none runs yet: for a command that is
/// about to execute steps, so the watchdog's start (an exec of this binary, ~4 ms of CPU) runs
/// beside the journal's open instead of beside the first step. Without [`install`], nothing.
pub fn prestart() {
    if CLIENT.get().is_none() {
        return;
    }
    let started = std::thread::Builder::new()
        .name("watchdog-start".into())
        .spawn(|| {
            with_client(|client| {
                if client.running.is_none()
                    && let Err(e) = client.start()
                {
                    // The first step tries again, and says so if it cannot either.
                    tracing::debug!(error = %e, "could not start the watchdog ahead of the first step");
                }
            });
        });
    if let Err(e) = started {
        tracing::debug!(error = %e, "could not start the watchdog ahead of the first step");
    }
}

/// Marks `cmd` as a process of `attempt`: its own process group, and the attempt's identity in
/// its environment (after any `env_clear`, so it is always there).
pub(crate) fn mark(cmd: &mut tokio::process::Command, attempt: &Attempt) {
    cmd.process_group(0).envs(attempt.vars());
    crate::child_env::apply(cmd);
}

impl Client {
    /// Starts the watchdog and tells it every group in flight.
    fn start(&mut self) -> io::Result<()> {
        if let Some((mut child, _)) = self.running.take() {
            // It went away; reap it so it does not linger as a zombie.
            let _ = child.try_wait();
        }
        let mut child = std::process::Command::new(&self.launch.program)
            .arg0(&self.launch.arg0)
            .arg(WATCHDOG_ARG)
            .stdin(Stdio::piped())
            // It must not hold the executor's output open (a caller reading it to its end
            // would wait for the watchdog), nor keep any directory busy.
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .current_dir("/")
            // Out of the executor's group: a Ctrl-C at the terminal is the executor's to handle.
            .process_group(0)
            .spawn()?;
        let stdin = child.stdin.take().expect("stdin is piped");
        fcntl(&stdin, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).map_err(io::Error::from)?;
        self.running = Some((child, stdin));
        let lines: Vec<String> = self.live.values().cloned().collect();
        for line in lines {
            self.write(&line)?;
        }
        Ok(())
    }

    /// Writes one line to the running watchdog in a single write (lines are far below the
    /// pipe's atomic size, so a line is never torn).
    fn write(&mut self, line: &str) -> io::Result<()> {
        let Some((_, stdin)) = &mut self.running else {
            return Err(io::ErrorKind::NotConnected.into());
        };
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        match stdin.write(&bytes) {
            Ok(n) if n == bytes.len() => Ok(()),
            Ok(_) => Err(io::ErrorKind::WriteZero.into()),
            Err(e) => Err(e),
        }
    }

    /// Sends `line`, starting the watchdog first if none runs, and again if it went away (a
    /// new one hears about every live group, this one included).
    fn send(&mut self, line: &str) {
        let result = match self.write(line) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(e),
            Err(_) => self.start(),
            Ok(()) => Ok(()),
        };
        match result {
            Ok(()) => self.warned = false,
            Err(e) if !self.warned => {
                self.warned = true;
                tracing::warn!(
                    error = %e,
                    "failed to reach the watchdog that stops step processes if runbook dies; \
                     `resume` will stop them instead"
                );
            }
            Err(_) => {}
        }
    }
}

fn with_client(f: impl FnOnce(&mut Client)) {
    if let Some(client) = CLIENT.get() {
        f(&mut client.lock().unwrap_or_else(PoisonError::into_inner));
    }
}

/// A step process group the watchdog knows about, until [`Tracked::reaped`].
#[derive(Debug)]
pub(crate) struct Tracked {
    pgid: i32,
    reaped: bool,
}

/// Tracks the group of `pid`, a child just spawned with [`mark`] (so it leads its group), for
/// `attempt`, which would be given `grace` between SIGTERM and SIGKILL.
pub(crate) fn track(pid: u32, attempt: &Attempt, grace: Duration) -> Tracked {
    let pgid = i32::try_from(pid).expect("pids fit in an i32");
    with_client(|client| {
        let message = Message::Track {
            group: Group {
                pgid,
                start: procfs::stat(pgid).map(|s| s.start),
            },
            attempt: attempt.clone(),
            grace_ms: u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
        };
        let line = serde_json::to_string(&message).expect("messages serialize");
        client.live.insert(pgid, line.clone());
        client.send(&line);
    });
    Tracked {
        pgid,
        reaped: false,
    }
}

impl Tracked {
    /// The group's leader was waited for (or given up on after SIGKILL): what the command
    /// left running on purpose is no longer the watchdog's business.
    pub(crate) fn reaped(mut self) {
        self.reaped = true;
        self.untrack();
    }

    fn untrack(&self) {
        with_client(|client| {
            if client.live.remove(&self.pgid).is_some() && client.running.is_some() {
                let line = serde_json::to_string(&Message::Untrack { pgid: self.pgid })
                    .expect("messages serialize");
                client.send(&line);
            }
        });
    }
}

impl Drop for Tracked {
    /// The step's future was dropped with its command still running (its leader not reaped,
    /// so the group id cannot have been reused): the whole group goes, not just the leader
    /// that `kill_on_drop` reaches.
    fn drop(&mut self) {
        if !self.reaped {
            let _ = killpg(Pid::from_raw(self.pgid), Signal::SIGKILL);
            self.untrack();
        }
    }
}
