//! Bounded retries of API calls: a call that fails for a reason that may pass (no answer, the
//! server busy or failing: 429, 5xx) is tried again after 200 ms and 400 ms; one the server
//! refused for good (any other 4xx: not found, conflict, invalid) is not. Callers that keep
//! working (the reconcile loop, the heartbeat) try again on their next round.

use std::future::Future;
use std::time::Duration;

/// How many times a call is made at most.
const ATTEMPTS: u32 = 3;

/// An API call that failed.
#[derive(Debug, thiserror::Error)]
#[error("failed to {what} (after {attempts} attempt(s)): {source}")]
pub struct Failed {
    /// What was being done.
    pub what: &'static str,
    /// How many calls were made.
    pub attempts: u32,
    /// The last error.
    #[source]
    pub source: kube::Error,
}

impl Failed {
    /// The HTTP status the API server answered with, if it answered.
    pub fn code(&self) -> Option<u16> {
        match &self.source {
            kube::Error::Api(status) => Some(status.code),
            _ => None,
        }
    }
}

/// Whether an error may pass if the call is made again.
pub fn transient(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(status) => status.code == 429 || status.code >= 500,
        _ => true,
    }
}

/// Makes `call` up to [`ATTEMPTS`] times while it fails transiently.
pub async fn retry<T, F, Fut>(what: &'static str, mut call: F) -> Result<T, Failed>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let mut delay = Duration::from_millis(200);
    let mut attempts = 0;
    loop {
        attempts += 1;
        match call().await {
            Ok(v) => return Ok(v),
            Err(source) if attempts >= ATTEMPTS || !transient(&source) => {
                return Err(Failed {
                    what,
                    attempts,
                    source,
                });
            }
            Err(e) => {
                tracing::debug!(what, attempt = attempts, error = %e, "retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
}
