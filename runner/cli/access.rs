//! Where a command finds the journal: in its own hands, or through the process that holds it.
//!
//! A journal is held by one process at a time (sled's lock). Whoever holds it for longer than
//! an instant — `serve`, or a command executing a run — answers on the journal's socket, so a
//! command first asks there. With nobody answering it opens the journal itself; should that
//! find the journal held all the same (a holder starting, not yet answering; one letting the
//! journal go, no longer answering; a short write of another command), it asks again, for a
//! bounded time. A socket whose holder died answers nothing and holds nothing: the journal
//! opens, and the next holder replaces the socket.

use std::sync::Arc;
use std::time::{Duration, Instant};

use runbook_journals::{Journal, JournalError, SledOptions};

use crate::cli::remote::Remote;
use crate::cli::{CliError, Env};
use crate::failure::Kind;

/// How long a command waits for a journal that is held by a process that does not answer.
const PATIENCE: Duration = Duration::from_secs(30);

/// How long one attempt to open the journal waits for a holder to let it go.
const ATTEMPT: Duration = Duration::from_millis(200);

/// How a command reaches the journal.
pub enum Access {
    /// It holds the journal (for writing), or a read-only view of it.
    Local(Arc<dyn Journal>),
    /// Another process holds it and answers.
    Remote(Remote),
}

/// What a command wants of the journal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    /// To write: the journal itself.
    Write,
    /// To read: a read-only view is enough.
    Read,
}

/// The journal for a command that wants `want` of it.
pub async fn find(env: &Env, want: Want) -> Result<Access, CliError> {
    find_within(env, want, PATIENCE).await
}

/// [`find`], waiting at most `patience` for a holder that does not answer.
pub async fn find_within(env: &Env, want: Want, patience: Duration) -> Result<Access, CliError> {
    let deadline = Instant::now() + patience;
    let opts = SledOptions {
        busy_wait: ATTEMPT,
        ..SledOptions::default()
    };
    loop {
        if let Some(remote) = Remote::connect(env).await {
            return Ok(Access::Remote(remote));
        }
        // Opening reads (and may wait for) the journal: blocking work.
        let opened = tokio::task::block_in_place(|| env.open_with(want, opts));
        match opened {
            Ok(journal) => return Ok(Access::Local(journal)),
            Err(CliError::Journal(JournalError::Busy { .. })) if Instant::now() < deadline => {}
            Err(e) => return Err(e),
        }
    }
}

/// Whether a command that failed with `err` through the holder should look for the journal
/// again: the holder was letting it go, and changed nothing.
pub fn again(err: &CliError, started: Instant) -> bool {
    let again = matches!(
        err,
        CliError::Holder {
            kind: Kind::Unavailable,
            ..
        }
    ) && started.elapsed() < PATIENCE;
    if again {
        tracing::debug!(error = %err, "looking for the journal again");
    }
    again
}

/// Waits a moment before looking again (the holder is on its way out).
pub async fn pause() {
    tokio::time::sleep(Duration::from_millis(100)).await;
}
