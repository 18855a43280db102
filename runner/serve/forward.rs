//! The asker's side of decisions through the store: an approval, rejection, resume, pause or
//! abort given to this executor (its API, or a command of its machine) for a run that another
//! executor owns is sent to that executor ([`runbook_journals::Fleet::ask`]) and its answer
//! returned as it came — the same kind, so the same HTTP status and exit code as if the owner
//! had been asked directly. A run nobody owns is claimed and handled here.
//!
//! Requests travel through the store, so a secret value never does: a decision that gives a
//! secret parameter of the run is refused here, naming the owner to give it to. If the owner
//! does not answer and meanwhile the run changed hands (its lease expired), the request goes
//! where the run is now.

use std::sync::Arc;
use std::time::Duration;

use runbook_journals::{Event, Journal, JournalError, RunId};

use crate::failure::Kind;
use crate::serve::fleet::{Member, Route};
use crate::wire::{ErrorBody, OwnerAction, OwnerAnswer, OwnerRequest};

/// How long an owner may take to answer a decision that continues a run.
const ANSWER_WITHIN: Duration = Duration::from_secs(30);

/// How long an owner may take to answer a pause or an abort (it waits up to a minute for the
/// run to reach a safe point).
const STOP_ANSWER_WITHIN: Duration = Duration::from_secs(80);

/// Where a request was handled.
#[derive(Debug)]
pub enum Forwarded {
    /// Nowhere yet: this executor owns the run (or took it now): do it here.
    Here,
    /// The owner answered (or could not be asked: an error answer).
    Answer(OwnerAnswer),
}

fn error(kind: Kind, message: String) -> Forwarded {
    Forwarded::Answer(OwnerAnswer::Error(ErrorBody {
        error: message,
        kind: Some(kind),
        params: Vec::new(),
    }))
}

/// Sends `request` to the owner of its run, unless this executor owns it or takes it now.
pub async fn forward(
    member: &Arc<Member>,
    journal: &Arc<dyn Journal>,
    request: &OwnerRequest,
) -> Forwarded {
    let id = request.run;
    let mut asked: Option<String> = None;
    for _ in 0..3 {
        let route = {
            let member = Arc::clone(member);
            let journal = Arc::clone(journal);
            tokio::task::spawn_blocking(move || member.route(journal.as_ref(), id)).await
        };
        let owner = match route {
            Ok(Ok(Route::Here)) => return Forwarded::Here,
            Ok(Ok(Route::Owner(owner))) => owner,
            Ok(Err(e)) => return error(Kind::of_journal(&e), e.to_string()),
            Err(e) => return error(Kind::Failed, e.to_string()),
        };
        if asked.as_deref() == Some(owner.as_str()) {
            break;
        }
        if let Some(params) = request.action.params() {
            let given: Vec<String> = params.keys().cloned().collect();
            let secret = {
                let journal = Arc::clone(journal);
                tokio::task::spawn_blocking(move || secret_names(journal.as_ref(), id, &given))
                    .await
                    .unwrap_or_else(|e| Err(JournalError::Storage(Box::new(e))))
            };
            match secret {
                Ok(names) if !names.is_empty() => {
                    return error(Kind::Refused, refusal(id, &owner, &names));
                }
                Ok(_) => {}
                Err(e) => return error(Kind::of_journal(&e), e.to_string()),
            }
        }
        let within = match request.action {
            OwnerAction::Abort(_) | OwnerAction::Pause(_) => STOP_ANSWER_WITHIN,
            _ => ANSWER_WITHIN,
        };
        let body = serde_json::to_value(request).expect("requests serialize");
        match member.fleet().ask(&owner, body, within).await {
            Ok(answer) => {
                return Forwarded::Answer(serde_json::from_value(answer).unwrap_or_else(|e| {
                    OwnerAnswer::Error(ErrorBody {
                        error: format!("executor {owner} sent an answer this one cannot read: {e}"),
                        kind: Some(Kind::Failed),
                        params: Vec::new(),
                    })
                }));
            }
            Err(e) => {
                // Gone meanwhile? Then the run is another's now, or nobody's: ask again there.
                let now = {
                    let member = Arc::clone(member);
                    tokio::task::spawn_blocking(move || member.owner(id)).await
                };
                if matches!(&now, Ok(Ok(Some(o))) if *o == owner) {
                    return error(
                        Kind::Unavailable,
                        format!(
                            "executor {owner}, which executes run {id}, did not answer: {e}; try again (once its lease expires another executor takes the run up)"
                        ),
                    );
                }
                asked = Some(owner);
            }
        }
    }
    error(
        Kind::Unavailable,
        format!("run {id} kept changing hands while this executor asked its owner; try again"),
    )
}

/// The message refusing to send secret parameters `names` of run `id` to `owner`.
fn refusal(id: RunId, owner: &str, names: &[String]) -> String {
    let listed: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    format!(
        "run {id} is executed by executor {owner}; this decision gives the secret parameter{} {}, \
         and secret values are never sent through the journal's store: give it to {owner} \
         directly (its API, or `runbook` on its machine), or decide without it if {owner} still \
         has it",
        if names.len() == 1 { "" } else { "s" },
        listed.join(", ")
    )
}

/// Which of `given` are secret parameters of run `id` (journaled masked).
fn secret_names(
    journal: &dyn Journal,
    id: RunId,
    given: &[String],
) -> Result<Vec<String>, JournalError> {
    if given.is_empty() {
        return Ok(Vec::new());
    }
    let records = journal.read(id)?;
    let Some(started) = records.iter().find_map(|r| match &r.event {
        Event::RunStarted(started) => Some(started),
        _ => None,
    }) else {
        return Ok(Vec::new());
    };
    let masked = serde_json::Value::String(crate::secrets::MASK.to_owned());
    Ok(given
        .iter()
        .filter(|name| started.params.get(name.as_str()) == Some(&masked))
        .cloned()
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_of_a_secret_names_the_owner_and_the_parameter() {
        let id = RunId(ulid::Ulid::nil());
        assert_eq!(
            refusal(id, "host-a-17/5f1e", &["token".to_owned()]),
            "run 00000000000000000000000000 is executed by executor host-a-17/5f1e; this decision \
             gives the secret parameter `token`, and secret values are never sent through the \
             journal's store: give it to host-a-17/5f1e directly (its API, or `runbook` on its \
             machine), or decide without it if host-a-17/5f1e still has it"
        );
    }
}
