//! Cancellation with a reason: the engine says *why* a step must stop (its timeout passed, or
//! the operator pressed Ctrl-C), so the step can report "timed out" apart from "interrupted".

use std::fmt;
use std::time::Duration;

use tokio::sync::watch;

/// Why the engine stops a step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CancelReason {
    /// The step's timeout passed.
    Timeout(Duration),
    /// The runbook process was asked to stop (the signal's name, e.g. `SIGINT`).
    Interrupted(String),
}

impl fmt::Display for CancelReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout(d) => write!(f, "timed out after {}", humantime::format_duration(*d)),
            Self::Interrupted(signal) => write!(f, "interrupted by {signal}"),
        }
    }
}

/// The receiving side, handed to a step in its context. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Cancel {
    rx: watch::Receiver<Option<CancelReason>>,
}

/// The sending side, kept by the engine.
#[derive(Debug)]
pub struct CancelSource {
    tx: watch::Sender<Option<CancelReason>>,
}

impl CancelSource {
    /// A new source with no reason set.
    pub fn new() -> Self {
        let (tx, _rx) = watch::channel(None);
        Self { tx }
    }

    /// A receiver for a step.
    pub fn token(&self) -> Cancel {
        Cancel {
            rx: self.tx.subscribe(),
        }
    }

    /// Asks every holder of a token to stop. The first reason wins.
    pub fn cancel(&self, reason: CancelReason) {
        self.tx.send_if_modified(|current| {
            if current.is_none() {
                *current = Some(reason);
                true
            } else {
                false
            }
        });
    }

    /// The reason given, if cancelled.
    pub fn reason(&self) -> Option<CancelReason> {
        self.tx.borrow().clone()
    }
}

impl Default for CancelSource {
    fn default() -> Self {
        Self::new()
    }
}

impl Cancel {
    /// A token that never fires (for probes and tests).
    pub fn never() -> Self {
        CancelSource::new().token()
    }

    /// The reason, if cancellation was asked for already.
    pub fn reason(&self) -> Option<CancelReason> {
        self.rx.borrow().clone()
    }

    /// Completes when cancellation is asked for, with the reason. Pending forever if the
    /// source is dropped without cancelling.
    pub async fn cancelled(&self) -> CancelReason {
        let mut rx = self.rx.clone();
        loop {
            if let Some(reason) = rx.borrow_and_update().clone() {
                return reason;
            }
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn first_reason_wins_and_reaches_every_token() {
        let source = CancelSource::new();
        let a = source.token();
        let b = a.clone();
        assert_eq!(a.reason(), None);
        source.cancel(CancelReason::Interrupted("SIGINT".into()));
        source.cancel(CancelReason::Timeout(Duration::from_secs(1)));
        assert_eq!(
            a.cancelled().await,
            CancelReason::Interrupted("SIGINT".into())
        );
        assert_eq!(b.reason(), Some(CancelReason::Interrupted("SIGINT".into())));
    }
}
