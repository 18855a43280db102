//! Asking for a gate's verdict on the terminal.

use chrono::{DateTime, Utc};
use runbook_steps::Cancel;
use std::io::Write as _;

/// What the person at the terminal said.
pub enum Answer {
    /// Approved, with an optional comment.
    Yes(Option<String>),
    /// Rejected, with an optional comment.
    No(Option<String>),
    /// The gate expired while we asked.
    Expired,
    /// The terminal closed (end of input): the run parks.
    Closed,
    /// Ctrl-C or SIGTERM.
    Interrupted(String),
}

/// Parses an answer line: `y`/`yes` or `n`/`no`, optionally followed by a comment.
fn parse(line: &str) -> Option<Answer> {
    let line = line.trim();
    let (word, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    let comment = Some(rest.trim().to_owned()).filter(|c| !c.is_empty());
    match word.to_ascii_lowercase().as_str() {
        "y" | "yes" | "approve" => Some(Answer::Yes(comment)),
        "n" | "no" | "reject" => Some(Answer::No(comment)),
        _ => None,
    }
}

/// Asks until a clear answer comes, the gate expires, input ends, or we are interrupted.
pub async fn ask(prompt: &str, expires_at: Option<DateTime<Utc>>, interrupt: &Cancel) -> Answer {
    loop {
        eprint!("\n  {prompt}\n  approve? [y/n, optionally followed by a comment] ");
        let _ = std::io::stderr().flush();
        let read = tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            match std::io::stdin().read_line(&mut line) {
                Ok(0) | Err(_) => None,
                Ok(_) => Some(line),
            }
        });
        let expiry = async {
            match expires_at {
                Some(t) => tokio::time::sleep((t - Utc::now()).to_std().unwrap_or_default()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            line = read => match line.ok().flatten() {
                None => return Answer::Closed,
                Some(line) => match parse(&line) {
                    Some(answer) => return answer,
                    None => eprintln!("  please answer y or n"),
                },
            },
            () = expiry => return Answer::Expired,
            reason = interrupt.cancelled() => {
                return Answer::Interrupted(crate::engine::exec::signal_name(&reason));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_carry_comments() {
        assert!(matches!(parse("y"), Some(Answer::Yes(None))));
        assert!(
            matches!(parse("yes  dashboards green"), Some(Answer::Yes(Some(c))) if c == "dashboards green")
        );
        assert!(matches!(parse("N not now"), Some(Answer::No(Some(c))) if c == "not now"));
        assert!(parse("").is_none());
        assert!(parse("maybe").is_none());
    }
}
