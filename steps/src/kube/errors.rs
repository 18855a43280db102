//! API errors as operators read them: the object, what was being done, the HTTP status and
//! the server's reason, e.g. `StatefulSet vault-system/openbao not found (404)`. A failure
//! carries `{status, reason, message}` as its output, so a `wait` or `check` probe can still
//! look at a 404.

use ::kube::core::ErrorResponse;
use serde_json::{Value, json};

use super::client::Conn;
use crate::StepError;
use crate::util::cause;

/// What an operation was acting on, for messages: `StatefulSet vault-system/openbao`.
pub(crate) fn what(kind: &str, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) if !ns.is_empty() => format!("{kind} {ns}/{name}"),
        _ => format!("{kind} {name}"),
    }
}

fn status_output(response: &ErrorResponse) -> Value {
    json!({
        "status": response.code,
        "reason": response.reason,
        "message": response.message,
    })
}

/// The server's message without the "Operation cannot be fulfilled on x: " preamble and
/// the "; please apply your changes…" advice.
fn short(message: &str) -> &str {
    let message = message
        .rsplit_once("\": ")
        .map_or(message, |(_, rest)| rest);
    message.split(';').next().unwrap_or(message).trim()
}

/// A failed API call. `verb` is the gerund ("patching"); `object` what it was on.
pub(crate) fn api_error(conn: &Conn, verb: &str, object: &str, error: ::kube::Error) -> StepError {
    match error {
        ::kube::Error::Api(response) => {
            let message = response_message(conn, verb, object, &response);
            StepError::Failed {
                message,
                output: Some(status_output(&response)),
            }
        }
        ::kube::Error::UpgradeConnection(
            ::kube::client::UpgradeConnectionError::ProtocolSwitch(status),
        ) => {
            let code = status.as_u16();
            let reason = status.canonical_reason().unwrap_or("").to_owned();
            let response = ErrorResponse {
                status: "Failure".into(),
                message: format!("the server answered {status} instead of upgrading"),
                reason: reason.replace(' ', ""),
                code,
            };
            StepError::Failed {
                message: response_message(conn, verb, object, &response),
                output: Some(status_output(&response)),
            }
        }
        other => transport_error(conn, verb, object, &other),
    }
}

/// A failure to talk to the server at all (connection refused, TLS, a body that is not JSON).
pub(crate) fn transport_error(
    conn: &Conn,
    verb: &str,
    object: &str,
    error: &::kube::Error,
) -> StepError {
    let message = match error {
        ::kube::Error::HyperError(_) | ::kube::Error::Service(_) => format!(
            "failed to reach the Kubernetes API at {} while {verb} {object}: {}",
            conn.server,
            cause(error)
        ),
        other => format!("failed {verb} {object}: {}", cause(other)),
    };
    StepError::Failed {
        message,
        output: None,
    }
}

fn response_message(conn: &Conn, verb: &str, object: &str, r: &ErrorResponse) -> String {
    let reason = if r.reason.is_empty() {
        String::new()
    } else {
        format!(" {}", r.reason)
    };
    match (r.code, r.reason.as_str()) {
        (401, _) => format!(
            "unauthorized: the Kubernetes API at {} rejected the credentials from {} while \
             {verb} {object} (401 Unauthorized)",
            conn.server, conn.origin
        ),
        (403, _) => format!("forbidden {verb} {object}: {} (403)", r.message),
        (404, _) if verb == "listing" => {
            format!("failed {verb} {object}: {} (404 NotFound)", r.message)
        }
        // Creating in a namespace that does not exist: the namespace is what is missing.
        (404, _) if r.message.starts_with("namespaces \"") && !object.starts_with("Namespace ") => {
            format!("failed {verb} {object}: {} (404)", r.message)
        }
        (404, _) => format!("{object} not found (404)"),
        (409, "AlreadyExists") => format!("{object} already exists (409)"),
        (409, _) => format!("conflict {verb} {object}: {} (409)", short(&r.message)),
        (422, _) => format!("invalid {verb} {object}: {} (422 Invalid)", r.message),
        (code, _) => {
            let mut text = format!("failed {verb} {object}: ");
            if r.message.is_empty() {
                text.push_str("the server gave no message");
            } else {
                text.push_str(&r.message);
            }
            format!("{text} ({code}{reason})")
        }
    }
}

/// A failed discovery of `what` (a kind, maybe with its group/version).
pub(crate) fn discovery_error(conn: &Conn, what: &str, error: ::kube::Error) -> StepError {
    match error {
        ::kube::Error::Discovery(e) => StepError::Failed {
            message: format!(
                "cannot find {what} on the API server at {}: {e}",
                conn.server
            ),
            output: None,
        },
        ::kube::Error::Api(r) if r.code == 404 => StepError::Failed {
            message: format!(
                "the API server at {} does not serve {what} (404)",
                conn.server
            ),
            output: Some(status_output(&r)),
        },
        other => api_error(conn, "discovering", what, other),
    }
}

/// Whether an error is worth another poll in a wait: the server was unreachable, overloaded or
/// failing (5xx, 429), not a wrong spec or missing rights.
pub(crate) fn transient(error: &::kube::Error) -> bool {
    match error {
        ::kube::Error::Api(r) => r.code >= 500 || r.code == 429,
        ::kube::Error::HyperError(_) | ::kube::Error::Service(_) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflicts_are_quoted_short() {
        assert_eq!(
            short(
                "Operation cannot be fulfilled on statefulsets.apps \"openbao\": the object has \
                 been modified; please apply your changes to the latest version and try again"
            ),
            "the object has been modified"
        );
        assert_eq!(short("plain"), "plain");
        assert_eq!(what("Pod", Some("ns"), "p"), "Pod ns/p");
        assert_eq!(what("Namespace", None, "ops"), "Namespace ops");
    }
}
