//! An operator's request to pause a run that is executing.
//!
//! The contract: a pause never cuts a step's effect short. The executor looks at the switch at
//! every step boundary (before it starts or continues a step it has not finished) and stops
//! there; what only waits — a `wait` between polls, a `sleep`, a retry's back-off — is cut
//! short at once, because waiting again later is harmless (the poll runs again, the timer keeps
//! its journaled wake time, the retry its due time). The executor journals the pause itself
//! (who, why), so the run's own writer stays the only one.

use std::sync::Arc;

use tokio::sync::watch;

/// Who asked for a pause, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PauseRequest {
    /// The operator.
    pub by: String,
    /// Their comment.
    pub comment: Option<String>,
}

/// The pause switch of one execution; clones share it.
#[derive(Clone, Debug)]
pub struct Pause {
    tx: Arc<watch::Sender<Option<PauseRequest>>>,
}

impl Default for Pause {
    fn default() -> Self {
        Self {
            tx: Arc::new(watch::Sender::new(None)),
        }
    }
}

impl Pause {
    /// A switch nobody has pressed.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the execution to pause; false if it was asked already (the first request stands).
    pub fn ask(&self, request: PauseRequest) -> bool {
        self.tx.send_if_modified(|current| {
            if current.is_some() {
                return false;
            }
            *current = Some(request);
            true
        })
    }

    /// The request, once made.
    pub fn asked(&self) -> Option<PauseRequest> {
        self.tx.borrow().clone()
    }

    /// Resolves once a pause is asked (at once if it was already).
    pub async fn wait(&self) -> PauseRequest {
        let mut rx = self.tx.subscribe();
        let asked = rx
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|r| r.clone());
        match asked {
            Some(request) => request,
            // The sender lives as long as `self`: never reached.
            None => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_request_stands_and_a_waiter_sees_it() {
        let pause = Pause::new();
        assert_eq!(pause.asked(), None);
        let waiter = tokio::spawn({
            let pause = pause.clone();
            async move { pause.wait().await }
        });
        let first = PauseRequest {
            by: "ann".into(),
            comment: Some("restore a snapshot".into()),
        };
        assert!(pause.ask(first.clone()));
        assert!(!pause.ask(PauseRequest {
            by: "bob".into(),
            comment: None,
        }));
        assert_eq!(waiter.await.unwrap(), first);
        assert_eq!(pause.asked(), Some(first.clone()));
        assert_eq!(pause.wait().await, first);
    }
}
