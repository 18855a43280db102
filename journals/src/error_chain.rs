//! An error with its causes, as the logs, the CLI and `serve` show it: `outer: inner: innermost`.
//! A cause whose text the line already holds (an outer message that quotes its source, as
//! `#[error("failed to open {path}: {source}")]` does) is not repeated.

use std::error::Error;

/// `error`'s text, then each cause's text that is not already part of the ones before it.
pub fn error_texts(error: &dyn Error) -> Vec<String> {
    let mut texts = vec![error.to_string()];
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !text.is_empty() && !texts.iter().any(|seen| seen.contains(&text)) {
            texts.push(text);
        }
        source = cause.source();
    }
    texts
}

/// `error` and its causes on one line, `outer: inner: innermost`.
pub fn error_chain(error: &dyn Error) -> String {
    error_texts(error).join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum Outer {
        #[error("failed to sync the journal")]
        Plain(#[source] Middle),
        #[error("failed to open /j: {0}")]
        Quoting(#[source] Middle),
    }

    #[derive(Debug, thiserror::Error)]
    #[error("{text}")]
    struct Middle {
        text: String,
        #[source]
        source: std::io::Error,
    }

    fn middle(text: &str) -> Middle {
        Middle {
            text: text.into(),
            source: std::io::Error::other("No space left on device"),
        }
    }

    #[test]
    fn every_cause_follows_its_error_in_order() {
        let e = Outer::Plain(middle("write failed"));
        assert_eq!(
            error_chain(&e),
            "failed to sync the journal: write failed: No space left on device"
        );
        assert_eq!(error_texts(&e).len(), 3);
    }

    #[test]
    fn a_cause_already_quoted_by_an_outer_message_is_not_repeated() {
        let e = Outer::Quoting(middle("write failed"));
        assert_eq!(
            error_chain(&e),
            "failed to open /j: write failed: No space left on device"
        );
        // The quoted cause is the outer text's own; the innermost one still follows.
        assert_eq!(
            error_texts(&e),
            ["failed to open /j: write failed", "No space left on device"]
        );
    }

    #[test]
    fn an_error_without_a_cause_is_its_own_text() {
        let e = std::io::Error::other("refused");
        assert_eq!(error_chain(&e), "refused");
    }
}
