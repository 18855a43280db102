//! The local socket: how every `runbook` command of this machine reaches the process that holds
//! the journal — `serve`, or a `runbook run` (`resume`, `approve`, …) in a terminal — to read
//! and act on runs while that process has the journal to itself. It answers the API of
//! [`crate::serve::api`] (no second protocol), as HTTP over a Unix socket.
//!
//! The contract:
//! - **Only the holder binds it.** It lives in the journal directory (`api.sock`) and is bound
//!   only by a process that has just opened the journal for writing — which sled's lock lets
//!   one process do at a time — so a socket file found then is stale: its holder died, or it
//!   would still hold the journal. Such a file is removed before binding (unless, against all
//!   odds, something answers on it: then it is left alone and this holder goes without one).
//! - **It goes before the journal does.** The holder removes its socket (only if the file is
//!   still the one it bound) while it still holds the journal, so a socket never outlives its
//!   holder except after a kill — which the next holder cleans up, and which a command meets
//!   as a refused connection, never as a socket that answers for a journal nobody holds.
//! - **Owner only.** The file is `0600` in the `0700` journal directory, and every connection
//!   whose peer (`SO_PEERCRED`) is not the holder's own user is closed before a byte is read.
//!   Requests may carry secret parameters; they cross the kernel only, and are never logged.

use std::fs::File;
use std::io;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::Router;
use runbook_steps::{CancelReason, CancelSource};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;

/// The socket's file name in the journal directory.
pub const SOCKET: &str = "api.sock";

/// The longest path a Unix socket address holds (`sun_path` less its terminating zero).
const SUN_PATH_MAX: usize = 107;

/// How to reach the socket of a journal directory: its path, or — when that is longer than a
/// socket address holds — the same file through `/proc/self/fd` of the directory opened here.
#[derive(Debug)]
pub struct Address {
    path: PathBuf,
    /// The open directory a `/proc/self/fd` path goes through.
    _dir: Option<File>,
}

impl Address {
    /// The socket of the journal in `journal_dir`.
    pub fn of(journal_dir: &Path) -> io::Result<Self> {
        use std::os::fd::AsRawFd as _;
        let path = journal_dir.join(SOCKET);
        if path.as_os_str().len() <= SUN_PATH_MAX {
            return Ok(Self { path, _dir: None });
        }
        let dir = File::open(journal_dir)?;
        Ok(Self {
            path: PathBuf::from(format!("/proc/self/fd/{}/{SOCKET}", dir.as_raw_fd())),
            _dir: Some(dir),
        })
    }

    /// The path to connect to or bind.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// What is at a journal directory's socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// A holder accepts connections.
    Answering,
    /// A socket file nobody listens on: its holder died.
    Stale,
    /// No socket.
    Absent,
}

/// Looks at the socket without sending anything.
pub fn probe(address: &Address) -> Probe {
    match std::os::unix::net::UnixStream::connect(address.path()) {
        Ok(_) => Probe::Answering,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Probe::Absent,
        Err(_) => Probe::Stale,
    }
}

/// The identity of a file, to remove only the socket this holder bound.
fn identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

/// The holder's socket, answering with a router until closed.
pub struct LocalSocket {
    real_path: PathBuf,
    bound: Option<(u64, u64)>,
    stop: CancelSource,
    task: JoinHandle<()>,
}

impl LocalSocket {
    /// Binds the socket of the journal in `journal_dir` — which the caller holds — and serves
    /// `router` on it. Must be called inside a tokio runtime.
    pub fn bind(journal_dir: &Path, router: Router) -> io::Result<Self> {
        let address = Address::of(journal_dir)?;
        let real_path = journal_dir.join(SOCKET);
        match probe(&address) {
            Probe::Absent => {}
            Probe::Stale => {
                tracing::info!(path = %real_path.display(), "removing the socket of a holder that died");
                std::fs::remove_file(&real_path)?;
            }
            Probe::Answering => {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!(
                        "something answers on {} although this process holds the journal; it is left alone",
                        real_path.display()
                    ),
                ));
            }
        }
        let listener = UnixListener::bind(address.path())?;
        std::fs::set_permissions(&real_path, std::fs::Permissions::from_mode(0o600))?;
        let bound = identity(&real_path);
        let stop = CancelSource::new();
        let stopped = stop.token();
        let listener = PeerChecked {
            inner: listener,
            uid: nix::unistd::geteuid().as_raw(),
        };
        let task = tokio::spawn(async move {
            let server = axum::serve(listener, router).with_graceful_shutdown(async move {
                stopped.cancelled().await;
            });
            if let Err(e) = server.await {
                tracing::warn!(error = %e, "the local socket stopped");
            }
        });
        Ok(Self {
            real_path,
            bound,
            stop,
            task,
        })
    }

    /// Removes the socket file (if it is still the one bound here), so no command connects
    /// any more, then lets the requests under way finish — for at most `grace`: a follower
    /// of a parked run would wait forever.
    pub async fn close(self, grace: Duration) {
        if self.bound.is_some() && identity(&self.real_path) == self.bound {
            let _ = std::fs::remove_file(&self.real_path);
        }
        self.stop
            .cancel(CancelReason::Interrupted("the holder is closing".into()));
        let mut task = self.task;
        if tokio::time::timeout(grace, &mut task).await.is_err() {
            task.abort();
        }
    }
}

/// A listener that closes every connection of another user before reading from it.
struct PeerChecked {
    inner: UnixListener,
    uid: u32,
}

impl axum::serve::Listener for PeerChecked {
    type Io = UnixStream;
    type Addr = tokio::net::unix::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => match stream.peer_cred() {
                    Ok(cred) if cred.uid() == self.uid => return (stream, addr),
                    Ok(cred) => tracing::warn!(
                        uid = cred.uid(),
                        pid = ?cred.pid(),
                        "refused a connection of another user on the journal's socket"
                    ),
                    Err(e) => {
                        tracing::warn!(error = %e, "refused a connection whose peer is unknown");
                    }
                },
                // Out of file descriptors, or a connection reset before it was accepted: wait a
                // little rather than spin.
                Err(e) => {
                    tracing::debug!(error = %e, "accept failed on the journal's socket");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router() -> Router {
        Router::new().route("/ping", axum::routing::get(|| async { "pong" }))
    }

    async fn ping(address: &Address) -> String {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut stream = UnixStream::connect(address.path()).await.expect("connect");
        stream
            .write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("send");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.expect("read");
        answer
    }

    #[tokio::test]
    async fn a_stale_socket_is_replaced_and_the_new_one_is_owner_only_and_goes_on_close() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A holder that died: its socket file stays, nobody listens.
        drop(std::os::unix::net::UnixListener::bind(dir.path().join(SOCKET)).expect("bind"));
        let address = Address::of(dir.path()).expect("address");
        assert_eq!(probe(&address), Probe::Stale);

        let socket = LocalSocket::bind(dir.path(), router()).expect("bind over a stale socket");
        assert_eq!(probe(&address), Probe::Answering);
        let mode = std::fs::metadata(dir.path().join(SOCKET))
            .expect("socket")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(ping(&address).await.ends_with("pong"));

        // A second binder while one answers leaves it alone.
        let err = LocalSocket::bind(dir.path(), router())
            .err()
            .expect("refused");
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        assert_eq!(probe(&address), Probe::Answering);

        socket.close(Duration::from_secs(5)).await;
        assert_eq!(probe(&address), Probe::Absent);
    }

    /// Needs root (as the e2e suite and CI run): the connection comes from another user.
    #[tokio::test]
    async fn a_connection_of_another_user_is_closed_unanswered() {
        use std::os::unix::process::CommandExt as _;
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test connects as another user (nobody), which needs root"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = LocalSocket::bind(dir.path(), router()).expect("bind");
        // Only for this test: let the other user reach the socket at all, so that what keeps
        // them out is the peer check alone (a journal directory is 0700, the socket 0600).
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod dir");
        std::fs::set_permissions(
            dir.path().join(SOCKET),
            std::fs::Permissions::from_mode(0o666),
        )
        .expect("chmod socket");
        let client = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
answer = b""
try:
    s.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        answer += chunk
except (BrokenPipeError, ConnectionResetError):
    pass
sys.stdout.write(answer.decode())
"#;
        let path = dir.path().join(SOCKET);
        let run = move |uid: Option<u32>| {
            let mut command = std::process::Command::new("/usr/bin/python3");
            command.arg("-c").arg(client).arg(&path);
            if let Some(uid) = uid {
                command.uid(uid).gid(uid);
            }
            let out = command.output().expect("run /usr/bin/python3");
            assert!(out.status.success(), "{out:?}");
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let (other, owner) = tokio::task::spawn_blocking(move || (run(Some(65534)), run(None)))
            .await
            .expect("clients");
        assert_eq!(other, "", "another user gets no answer");
        assert!(owner.ends_with("pong"), "the owner does: {owner:?}");
        socket.close(Duration::from_secs(5)).await;
    }

    #[tokio::test]
    async fn a_holder_never_removes_a_socket_it_did_not_bind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = LocalSocket::bind(dir.path(), router()).expect("bind");
        // The file was replaced meanwhile (by a later holder, after this one was given up for
        // dead): closing must not take the newer one away.
        std::fs::remove_file(dir.path().join(SOCKET)).expect("remove");
        let newer = std::os::unix::net::UnixListener::bind(dir.path().join(SOCKET)).expect("bind");
        socket.close(Duration::from_secs(5)).await;
        assert!(dir.path().join(SOCKET).exists());
        drop(newer);
    }

    #[tokio::test]
    async fn a_journal_directory_too_deep_for_a_socket_address_is_reached_through_proc() {
        let base = tempfile::tempdir().expect("tempdir");
        let deep = base.path().join("d".repeat(60)).join("e".repeat(60));
        std::fs::create_dir_all(&deep).expect("mkdir");
        assert!(deep.join(SOCKET).as_os_str().len() > SUN_PATH_MAX);
        let socket = LocalSocket::bind(&deep, router()).expect("bind");
        assert!(deep.join(SOCKET).exists(), "the socket is where it belongs");
        let address = Address::of(&deep).expect("address");
        assert_eq!(probe(&address), Probe::Answering);
        assert!(ping(&address).await.ends_with("pong"));
        socket.close(Duration::from_secs(5)).await;
        assert_eq!(probe(&address), Probe::Absent);
    }
}
