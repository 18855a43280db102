//! The owner's side of decisions through the store: requests that other executors sent to this
//! one ([`runbook_journals::Fleet::inbox`]) — an approval, a rejection, a resume, a pause or an
//! abort of a run this executor owns, given to another executor's API or command line — are
//! performed here with the same [`Runs`] methods this executor's own API calls, as the person
//! who asked, and answered with what this executor's API would have answered
//! ([`OwnerAnswer`]): the asker passes the answer on, its kind (and so its HTTP status and exit
//! code) unchanged.
//!
//! A request is performed by its own task, so a slow one (an abort waits for a safe point)
//! holds up no other; a request that does not parse is answered as bad input.

use std::sync::Arc;

use runbook_journals::{Incoming, RunId, RunState};
use tokio::sync::mpsc;

use crate::engine::{EngineError, Resume};
use crate::failure::Kind;
use crate::resupply::Given;
use crate::serve::api::ApiError;
use crate::serve::runs::{Runs, RunsError, Verdict};
use crate::ui::OutputMode;
use crate::wire::{
    Aborted, Accepted, ErrorBody, OwnerAction, OwnerAnswer, OwnerRequest, PausedRun,
};

/// Answers the requests arriving on `rx` with `runs`.
pub fn spawn(
    mut rx: mpsc::Receiver<Incoming>,
    runs: Arc<Runs>,
    output: OutputMode,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(incoming) = rx.recv().await {
            let runs = Arc::clone(&runs);
            tokio::spawn(async move {
                let Incoming { from, body, reply } = incoming;
                let answer = match serde_json::from_value::<OwnerRequest>(body) {
                    Ok(request) => {
                        tell(output, &from, &request);
                        perform(&runs, request).await
                    }
                    Err(e) => error(
                        Kind::BadInput,
                        format!("a request this executor cannot read: {e}"),
                    ),
                };
                let _ = reply.send(serde_json::to_value(&answer).expect("answers serialize"));
            });
        }
    })
}

fn tell(output: OutputMode, from: &str, request: &OwnerRequest) {
    let verb = match &request.action {
        OwnerAction::Approve(_) => "approval",
        OwnerAction::Reject(_) => "rejection",
        OwnerAction::Resume(r) if r.unpause => "unpause",
        OwnerAction::Resume(_) => "resume",
        OwnerAction::Abort(_) => "abort",
        OwnerAction::Pause(_) => "pause",
    };
    let id = request.run;
    let event = crate::ui::json::ServeEvent {
        run: Some(id),
        detail: Some(format!("{verb} by {} through {from}", request.who)),
        ..crate::ui::json::ServeEvent::new("asked")
    };
    crate::serve::say(output, &event, || {
        format!(
            "{verb} of run {id} by {}, sent by executor {from}",
            request.who
        )
    });
}

fn error(kind: Kind, message: String) -> OwnerAnswer {
    OwnerAnswer::Error(ErrorBody {
        error: message,
        kind: Some(kind),
        params: Vec::new(),
    })
}

/// The answer this executor's API gives for `e` (its kind, message and parameter problems).
fn failed(e: RunsError) -> OwnerAnswer {
    OwnerAnswer::Error(ApiError::from(e).into_body())
}

/// The sequence number of run `id`'s last record, where a follower of the action starts.
fn last_seq(runs: &Runs, id: RunId) -> Result<u64, RunsError> {
    Ok(runs.journal().summary(id)?.last_seq)
}

/// Performs `request` as this executor's API would, and answers as it would.
pub async fn perform(runs: &Arc<Runs>, request: OwnerRequest) -> OwnerAnswer {
    let OwnerRequest {
        run: id,
        who,
        action,
    } = request;
    match action {
        OwnerAction::Approve(body) => decide(runs, id, who, body, true).await,
        OwnerAction::Reject(body) => decide(runs, id, who, body, false).await,
        OwnerAction::Resume(body) => {
            let req = Resume {
                retry_step: body.retry_step,
                skip_step: body.skip_step,
                reload: body.reload,
                params: Given::now(crate::params::pairs_from_json(&body.params)),
                accept_loss: body.accept_loss,
                unpause: body.unpause,
                comment: body.comment,
            };
            blocking(runs, id, move |runs, since| {
                runs.resume(id, &req, &who)?;
                Ok(OwnerAnswer::Accepted(Accepted {
                    run: id,
                    since,
                    approved: None,
                    log: None,
                }))
            })
            .await
        }
        OwnerAction::Abort(body) => {
            match runs.abort(id, body.reason, body.no_cleanup, &who).await {
                Ok(()) => OwnerAnswer::Aborted(Aborted {
                    run: id,
                    state: RunState::Aborted,
                    reason: runs.journal().summary(id).ok().and_then(|s| s.reason),
                }),
                Err(e) => failed(e),
            }
        }
        OwnerAction::Pause(body) => match runs.pause(id, body.comment, &who).await {
            Ok(state) => OwnerAnswer::Paused(PausedRun {
                run: id,
                state,
                reason: runs.journal().summary(id).ok().and_then(|s| s.reason),
            }),
            Err(e) => failed(e),
        },
    }
}

async fn decide(
    runs: &Arc<Runs>,
    id: RunId,
    who: String,
    body: crate::wire::Decide,
    approved: bool,
) -> OwnerAnswer {
    blocking(runs, id, move |runs, since| {
        let params = crate::params::pairs_from_json(&body.params);
        runs.decide(
            id,
            Verdict {
                approved,
                step: body.step,
                comment: body.comment,
            },
            &params,
            &who,
        )?;
        Ok(OwnerAnswer::Accepted(Accepted {
            run: id,
            since,
            approved: Some(approved),
            log: None,
        }))
    })
    .await
}

/// Runs `act` (which reads and writes the journal) on the blocking pool, given where the run's
/// records stood before it.
async fn blocking(
    runs: &Arc<Runs>,
    id: RunId,
    act: impl FnOnce(&Arc<Runs>, u64) -> Result<OwnerAnswer, RunsError> + Send + 'static,
) -> OwnerAnswer {
    let runs = Arc::clone(runs);
    let done = tokio::task::spawn_blocking(move || {
        let since = last_seq(&runs, id)?;
        act(&runs, since)
    })
    .await;
    match done {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => failed(e),
        Err(e) => failed(RunsError::Engine(EngineError::Refused(format!(
            "the request failed: {e}"
        )))),
    }
}
