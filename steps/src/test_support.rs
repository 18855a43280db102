//! Helpers shared by the step kinds' tests.

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use serde_json::Value;

use crate::{Cancel, StepContext, StepError};

/// A first-attempt context for a step `step` of run `01TEST`.
pub(crate) fn ctx(cancel: Cancel) -> StepContext {
    StepContext::new("01TEST", "step", 1, cancel)
}

/// The message and output of a [`StepError::Failed`]; panics on anything else.
pub(crate) fn failed(result: Result<Value, StepError>) -> (String, Option<Value>) {
    match result {
        Err(StepError::Failed { message, output }) => (message, output),
        other => panic!("expected Failed, got {other:?}"),
    }
}

/// The message of a [`StepError::Spec`] for `kind`; panics on anything else.
pub(crate) fn spec_message<T: Debug>(result: Result<T, StepError>, kind: &str) -> String {
    match result {
        Err(StepError::Spec {
            kind: actual,
            message,
        }) => {
            assert_eq!(actual, kind);
            message
        }
        other => panic!("expected a spec error, got {other:?}"),
    }
}

/// Polls `fut` once, so a test can check that a step is under way (pending) before it
/// cancels it.
pub(crate) async fn first_poll<F: Future + ?Sized>(mut fut: Pin<&mut F>) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await
}
