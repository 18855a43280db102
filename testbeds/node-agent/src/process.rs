//! The local process behind a pod: started in a process group of its own (so a signal reaches
//! whatever it starts, as a container runtime signals the whole container), its output
//! appended to a log file, and its end observed by a task that reaps it.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::sync::{Notify, watch};

use crate::status::Terminated;

/// A started process.
pub struct Process {
    pid: u32,
    /// When it started.
    pub started_at: DateTime<Utc>,
    exit: watch::Receiver<Option<Terminated>>,
}

/// Why a process could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// The log file cannot be opened.
    #[error("cannot open the log file {path}: {source}")]
    Log {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The command cannot be run.
    #[error("cannot start `{program}`: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
}

impl Process {
    /// Starts `argv` with `env` added, output appended to `log` (or the agent's stderr);
    /// `exited` is notified when it ends.
    pub fn spawn(
        argv: &[String],
        env: &[(String, String)],
        log: Option<&Path>,
        exited: Arc<Notify>,
    ) -> Result<Self, SpawnError> {
        let (program, args) = argv
            .split_first()
            .expect("config checks that a command is not empty");
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .process_group(0)
            .kill_on_drop(false);
        if let Some(path) = log {
            let open = || {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
            };
            let log_err = |source| SpawnError::Log {
                path: path.display().to_string(),
                source,
            };
            cmd.stdout(open().map_err(log_err)?)
                .stderr(open().map_err(log_err)?);
        } else {
            cmd.stdout(Stdio::inherit()).stderr(Stdio::inherit());
        }
        let mut child = cmd.spawn().map_err(|source| SpawnError::Spawn {
            program: program.clone(),
            source,
        })?;
        let pid = child.id().expect("a child that was just spawned has a pid");
        let started_at = crate::status::now();
        let (tx, exit) = watch::channel(None);
        tokio::spawn(async move {
            let status = child.wait().await;
            // Whatever the process left behind in its group goes with it, as a container's
            // processes go when its main process ends.
            let _ = killpg(group(pid), Signal::SIGKILL);
            let finished_at = crate::status::now();
            let terminated = match status {
                Ok(s) => Terminated::from_exit(
                    std::os::unix::process::ExitStatusExt::signal(&s),
                    s.code(),
                    started_at,
                    finished_at,
                ),
                Err(e) => {
                    tracing::warn!(pid, error = %e, "cannot wait for the process");
                    Terminated::from_exit(None, Some(-1), started_at, finished_at)
                }
            };
            tx.send_replace(Some(terminated));
            exited.notify_one();
        });
        Ok(Self {
            pid,
            started_at,
            exit,
        })
    }

    /// Its pid (also its process group).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// How it ended, once it has.
    pub fn exit(&self) -> Option<Terminated> {
        self.exit.borrow().clone()
    }

    /// Sends `signal` to its process group (nothing once it has ended).
    pub fn signal(&self, signal: Signal) {
        if self.exit.borrow().is_some() {
            return;
        }
        if let Err(e) = killpg(group(self.pid), signal) {
            tracing::debug!(pid = self.pid, %signal, error = %e, "signal not delivered");
        }
    }

    /// Waits until it has ended.
    #[cfg(test)]
    pub async fn wait(&mut self) -> Terminated {
        match self.exit.wait_for(Option::is_some).await {
            Ok(t) => t.clone().expect("waited for Some"),
            // The reaping task is gone only if the runtime is shutting down.
            Err(_) => Terminated::from_exit(None, Some(-1), self.started_at, crate::status::now()),
        }
    }
}

fn group(pid: u32) -> Pid {
    Pid::from_raw(i32::try_from(pid).expect("pids fit in i32"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn argv(script: &str) -> Vec<String> {
        vec!["bash".into(), "-c".into(), script.into()]
    }

    #[tokio::test]
    async fn exit_codes_signals_and_the_log_are_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("p.log");
        let notify = Arc::new(Notify::new());
        let mut p = Process::spawn(
            &argv("echo out $X; echo err >&2; exit 3"),
            &[("X".into(), "x".into())],
            Some(&log),
            notify.clone(),
        )
        .expect("spawns");
        let t = tokio::time::timeout(Duration::from_secs(10), p.wait())
            .await
            .expect("ends");
        assert_eq!(
            (t.exit_code, t.signal, t.reason.as_str()),
            (3, None, "Error")
        );
        assert_eq!(std::fs::read_to_string(&log).expect("log"), "out x\nerr\n");

        let mut p =
            Process::spawn(&argv("exec sleep 30"), &[], Some(&log), notify).expect("spawns");
        assert!(p.exit().is_none());
        p.signal(Signal::SIGTERM);
        let t = tokio::time::timeout(Duration::from_secs(10), p.wait())
            .await
            .expect("ends");
        assert_eq!((t.exit_code, t.signal), (143, Some(15)));
    }

    #[tokio::test]
    async fn a_signal_reaches_the_whole_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pidfile = dir.path().join("child.pid");
        let mut p = Process::spawn(
            &argv(&format!("sleep 30 & echo $! > {}; wait", pidfile.display())),
            &[],
            None,
            Arc::new(Notify::new()),
        )
        .expect("spawns");
        let child: i32 = loop {
            if let Some(pid) = std::fs::read_to_string(&pidfile)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                break pid;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        p.signal(Signal::SIGTERM);
        tokio::time::timeout(Duration::from_secs(10), p.wait())
            .await
            .expect("ends");
        // The background sleep was signalled too (or killed with the group at the end).
        let gone = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(20));
            std::fs::read_to_string(format!("/proc/{child}/stat"))
                .map_or(true, |s| s.split_whitespace().nth(2) == Some("Z"))
        });
        assert!(gone, "the group's other process survived");
    }
}
