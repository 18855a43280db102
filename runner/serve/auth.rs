//! Who is calling the API: bearer tokens, each with a name that becomes the caller's identity
//! (the approver of a gate, the starter of a run).
//!
//! Tokens come from a file (`name: token` per line) or `$RUNBOOK_API_TOKEN` (named `api`). The
//! `serve` process also makes a token for the command line on the same machine, written to the
//! journal directory readable by its owner only; a caller with that token may say who it acts
//! for (`X-Runbook-As`), as the command line does with `--as` / `$USER`.

use std::collections::HashMap;
use std::path::Path;

/// The header through which the local command line names who it acts for.
pub const ACT_AS: &str = "x-runbook-as";

/// Known tokens and their names.
#[derive(Clone, Debug, Default)]
pub struct Tokens {
    by_token: HashMap<String, String>,
    local: Option<String>,
}

/// A caller, once authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The name actions are recorded under.
    pub name: String,
}

impl Tokens {
    /// Reads `name: token` lines (blank lines and `#` comments ignored).
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the tokens file {}: {e}", path.display()))?;
        let mut tokens = Self::default();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((name, token)) = line.split_once(':') else {
                return Err(format!(
                    "{}:{}: expected `name: token`",
                    path.display(),
                    i + 1
                ));
            };
            let (name, token) = (name.trim(), token.trim());
            if name.is_empty() || token.len() < 16 {
                return Err(format!(
                    "{}:{}: a token needs a name and at least 16 characters",
                    path.display(),
                    i + 1
                ));
            }
            tokens.by_token.insert(token.to_owned(), name.to_owned());
        }
        Ok(tokens)
    }

    /// Adds a token named `name`.
    pub fn add(&mut self, name: &str, token: &str) {
        self.by_token.insert(token.to_owned(), name.to_owned());
    }

    /// Sets the local command line's token.
    pub fn set_local(&mut self, token: String) {
        self.local = Some(token);
    }

    /// Whether any token other than the local one is configured (needed to listen beyond
    /// loopback).
    pub fn has_remote(&self) -> bool {
        !self.by_token.is_empty()
    }

    /// Who presents `token`, acting as `act_as` when the local token is presented.
    pub fn identify(&self, token: &str, act_as: Option<&str>) -> Option<Identity> {
        if let Some(local) = &self.local
            && constant_time_eq(local, token)
        {
            let name = act_as.filter(|n| !n.is_empty()).unwrap_or("local");
            return Some(Identity {
                name: name.to_owned(),
            });
        }
        self.by_token
            .iter()
            .find(|(t, _)| constant_time_eq(t, token))
            .map(|(_, name)| Identity { name: name.clone() })
    }
}

/// Whether `a` and `b` are the same token, in a time that does not tell how much of one matched
/// (`subtle`; only a length differing returns early, and a length is no secret).
fn constant_time_eq(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq as _;
    bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// A fresh random token: hex of 16 bytes from the OS's generator (getrandom(2)), or why
/// none could be drawn — never a weaker one.
pub fn random_token() -> Result<String, getrandom::Error> {
    use std::fmt::Write as _;
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)?;
    Ok(bytes.iter().fold(String::with_capacity(32), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_name_their_callers_and_only_the_local_one_may_act_for_someone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(
            &path,
            "# who may call\nalice: 0123456789abcdef0123\nbob : fedcba9876543210fedc\n",
        )
        .unwrap();
        let mut tokens = Tokens::from_file(&path).unwrap();
        tokens.set_local("local-token-0123456789".into());
        assert_eq!(
            tokens
                .identify("0123456789abcdef0123", Some("mallory"))
                .unwrap()
                .name,
            "alice"
        );
        assert_eq!(
            tokens.identify("fedcba9876543210fedc", None).unwrap().name,
            "bob"
        );
        assert_eq!(
            tokens
                .identify("local-token-0123456789", Some("carol"))
                .unwrap()
                .name,
            "carol"
        );
        assert!(tokens.identify("wrong", None).is_none());
        assert!(tokens.identify("", None).is_none());
    }

    #[test]
    fn a_local_token_is_32_hex_digits_drawn_afresh_each_time() {
        let a = random_token().unwrap();
        let b = random_token().unwrap();
        assert_eq!(a.len(), 32, "{a}");
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()), "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn tokens_of_other_lengths_or_one_digit_off_do_not_match() {
        assert!(constant_time_eq("0123456789abcdef", "0123456789abcdef"));
        assert!(!constant_time_eq("0123456789abcdef", "0123456789abcdee"));
        assert!(!constant_time_eq("0123456789abcdef", "0123456789abcde"));
        assert!(!constant_time_eq("", "0"));
    }

    #[test]
    fn short_or_malformed_tokens_are_refused_with_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, "alice: short\n").unwrap();
        let err = Tokens::from_file(&path).unwrap_err();
        assert!(
            err.ends_with(":1: a token needs a name and at least 16 characters"),
            "{err}"
        );
    }
}
