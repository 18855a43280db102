//! Parameters given to a run that already started — with a resume, or with a verdict on one of
//! its gates — and the one rule the command line and `serve` both apply to them.
//!
//! A run keeps the parameter values it started with: `RunStarted` journals them, and a resumed
//! run follows the path they chose. Secret values are the one exception the journal forces:
//! they are never journaled, so a process that does not hold them (a new command line, a
//! restarted `serve`) must be given them again. That is all a resume or a verdict may give: a
//! secret parameter the run started with that is not at hand otherwise — not held by the
//! `serve` for that run, not in the parameter's `env:` or `file:`. A non-secret parameter, an
//! unknown one, a secret the run started without, or a secret already at hand is refused, and
//! nothing is journaled: otherwise any caller could change what a run does half-way through
//! (through `serve`, on another person's run), with no trace in the journal. Refusing a secret
//! already at hand whatever its value also means a caller cannot probe a held secret by
//! trying values.
//!
//! [`merge`] is pure (where a value comes from is asked through a function), so the rule is
//! tested on tables; the engine calls it once, on every resume and verdict.

use serde_json::{Map, Value};

use crate::model::Param;
use crate::secrets::MASK;

/// Parameter values given to a run that already started.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Given {
    /// What the operator gives with this resume or verdict (`-p`, the API's `params`).
    pub now: Vec<(String, String)>,
    /// What the caller already held for the run: the values a `serve` was given for it earlier
    /// (kept in memory only). Never refused; whatever the rule does not let through is dropped.
    pub held: Vec<(String, String)>,
}

impl Given {
    /// Values an operator gives now, with nothing held.
    pub fn now(now: Vec<(String, String)>) -> Self {
        Self {
            now,
            held: Vec::new(),
        }
    }
}

/// Why a value given with a resume or a verdict is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The runbook declares no such parameter.
    #[error("runbook `{runbook}` has no parameter `{name}`{}", did_you_mean(.suggestion.as_deref()))]
    Unknown {
        /// The runbook's name.
        runbook: String,
        /// The name given.
        name: String,
        /// A declared name close to it.
        suggestion: Option<String>,
    },
    /// A non-secret parameter: the run keeps the value it started with.
    #[error(
        "parameter `{name}` is not secret, so a resume or a decision cannot give it: the run keeps the value it started with ({value}); start a new run for another value"
    )]
    NotSecret {
        /// The parameter.
        name: String,
        /// The value the run started with, as JSON (`none` if it has none).
        value: String,
    },
    /// A secret the run started without cannot be added to it.
    #[error("the run started without secret parameter `{name}`, so it cannot be given now")]
    NotStarted {
        /// The parameter.
        name: String,
    },
    /// The `serve` executing the run holds the secret already.
    #[error(
        "serve holds secret parameter `{name}` for this run already; give it only when the run asks for it"
    )]
    Held {
        /// The parameter.
        name: String,
    },
    /// The secret's declared source gives it already.
    #[error(
        "secret parameter `{name}` comes from {from} already; give it only when the run asks for it"
    )]
    Sourced {
        /// The parameter.
        name: String,
        /// Where it comes from (`$VAR`, `the file F`).
        from: String,
    },
}

impl Refusal {
    /// The refusal as a problem with the parameter it names.
    pub fn problem(&self) -> crate::params::ParamProblem {
        let name = match self {
            Self::Unknown { name, .. }
            | Self::NotSecret { name, .. }
            | Self::NotStarted { name }
            | Self::Held { name }
            | Self::Sourced { name, .. } => name,
        };
        crate::params::ParamProblem::of(name, self.to_string())
    }
}

fn did_you_mean(suggestion: Option<&str>) -> String {
    suggestion
        .map(|s| format!(" (did you mean `{s}`?)"))
        .unwrap_or_default()
}

/// Checks what is given now against the rule and returns the values to resolve the run's
/// parameters with: the held and the newly given secrets, and nothing else, so every
/// non-secret parameter takes the value the journal has.
///
/// `params` are the declarations of the run's runbook (`runbook` its name), `journaled` the
/// values its `RunStarted` recorded (secrets masked), and `source` says where a parameter's
/// value comes from without anyone giving it (`$VAR` or a file), if it does now.
pub fn merge(
    runbook: &str,
    params: &[Param],
    journaled: &Map<String, Value>,
    given: &Given,
    source: impl Fn(&Param) -> Option<String>,
) -> Result<Vec<(String, String)>, Vec<Refusal>> {
    let declared = |name: &str| params.iter().find(|p| p.name == name);
    // A secret the run started with journals as the mask; one it started without, as null.
    let started_with = |name: &str| journaled.get(name) == Some(&Value::String(MASK.to_owned()));
    let held = |name: &str| given.held.iter().any(|(k, _)| k == name);
    let mut refusals = Vec::new();
    for (name, _) in &given.now {
        let refusal = match declared(name) {
            None => Some(Refusal::Unknown {
                runbook: runbook.to_owned(),
                name: name.clone(),
                suggestion: crate::load::suggest(name, params.iter().map(|p| p.name.as_str()))
                    .map(str::to_owned),
            }),
            Some(p) if !p.secret => Some(Refusal::NotSecret {
                name: name.clone(),
                value: journaled
                    .get(name)
                    .map_or_else(|| "none".to_owned(), ToString::to_string),
            }),
            Some(_) if !started_with(name) => Some(Refusal::NotStarted { name: name.clone() }),
            Some(_) if held(name) => Some(Refusal::Held { name: name.clone() }),
            Some(p) => source(p).map(|from| Refusal::Sourced {
                name: name.clone(),
                from,
            }),
        };
        if let Some(r) = refusal
            && !refusals.contains(&r)
        {
            refusals.push(r);
        }
    }
    if !refusals.is_empty() {
        return Err(refusals);
    }
    let keep = |name: &str| declared(name).is_some_and(|p| p.secret) && started_with(name);
    Ok(given
        .held
        .iter()
        .chain(&given.now)
        .filter(|(k, _)| keep(k))
        .cloned()
        .collect())
}

/// Where a parameter's value comes from now without anyone giving it: its `env:` variable if
/// set, else its `file:` if readable — the sources parameter resolution reads (see
/// `params::resolve`), a default aside.
pub fn source_of(param: &Param) -> Option<String> {
    if let Some(env) = &param.env
        && std::env::var(env).is_ok()
    {
        return Some(format!("${env}"));
    }
    if let Some(file) = &param.file
        && std::fs::read_to_string(file).is_ok()
    {
        return Some(format!("the file {file}"));
    }
    None
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::model::ParamType;

    fn param(name: &str, secret: bool, env: Option<&str>) -> Param {
        Param {
            name: name.into(),
            ty: ParamType::String,
            required: false,
            default: None,
            pattern: None,
            allowed: None,
            secret,
            short_secret_ok: false,
            env: env.map(str::to_owned),
            file: None,
            from: None,
            description: None,
            pos: crate::source::Pos::default(),
        }
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// `version` (plain), `token` (secret, given at start), `key` (secret from $KEY, given at
    /// start), `extra` (secret, not given at start).
    fn declared() -> Vec<Param> {
        vec![
            param("version", false, None),
            param("token", true, None),
            param("key", true, Some("KEY")),
            param("extra", true, None),
        ]
    }

    fn journaled() -> Map<String, Value> {
        json!({ "version": "1.2.3", "token": MASK, "key": MASK, "extra": null })
            .as_object()
            .cloned()
            .expect("an object")
    }

    /// The rule with `$KEY` set or not.
    fn check(
        now: &[(&str, &str)],
        held: &[(&str, &str)],
        key_set: bool,
    ) -> Result<Vec<(String, String)>, Vec<Refusal>> {
        let given = Given {
            now: pairs(now),
            held: pairs(held),
        };
        merge("deploy", &declared(), &journaled(), &given, |p| {
            (key_set && p.env.as_deref() == Some("KEY")).then(|| "$KEY".to_owned())
        })
    }

    type Pairs = &'static [(&'static str, &'static str)];

    /// What is given now, what is held, whether `$KEY` is set, and what the rule answers.
    type Case = (
        &'static str,
        Pairs,
        Pairs,
        bool,
        Result<Pairs, Vec<Refusal>>,
    );

    #[test]
    fn only_a_missing_secret_the_run_started_with_may_be_given() {
        let not_secret = || Refusal::NotSecret {
            name: "version".into(),
            value: "\"1.2.3\"".into(),
        };
        let held = || Refusal::Held {
            name: "token".into(),
        };
        let table: Vec<Case> = vec![
            ("nothing given, nothing held", &[], &[], false, Ok(&[])),
            (
                "a missing secret",
                &[("token", "t0k")],
                &[],
                false,
                Ok(&[("token", "t0k")]),
            ),
            (
                "a missing secret whose $KEY is unset",
                &[("key", "k3y")],
                &[],
                false,
                Ok(&[("key", "k3y")]),
            ),
            (
                "a non-secret, unchanged",
                &[("version", "1.2.3")],
                &[],
                false,
                Err(vec![not_secret()]),
            ),
            (
                "a non-secret, changed",
                &[("version", "6.6.6")],
                &[],
                false,
                Err(vec![not_secret()]),
            ),
            (
                "a secret serve holds, same value",
                &[("token", "t0k")],
                &[("token", "t0k")],
                false,
                Err(vec![held()]),
            ),
            (
                "a secret serve holds, another value",
                &[("token", "evil")],
                &[("token", "t0k")],
                false,
                Err(vec![held()]),
            ),
            (
                "a secret its $KEY gives",
                &[("key", "k3y")],
                &[],
                true,
                Err(vec![Refusal::Sourced {
                    name: "key".into(),
                    from: "$KEY".into(),
                }]),
            ),
            (
                "a secret the run started without",
                &[("extra", "x")],
                &[],
                false,
                Err(vec![Refusal::NotStarted {
                    name: "extra".into(),
                }]),
            ),
            (
                "an unknown parameter",
                &[("tokn", "x")],
                &[],
                false,
                Err(vec![Refusal::Unknown {
                    runbook: "deploy".into(),
                    name: "tokn".into(),
                    suggestion: Some("token".into()),
                }]),
            ),
            (
                "a missing secret beside a non-secret: all refused",
                &[("token", "t0k"), ("version", "2")],
                &[],
                false,
                Err(vec![not_secret()]),
            ),
            (
                "every refusal at once, each once",
                &[
                    ("version", "2"),
                    ("version", "3"),
                    ("token", "t"),
                    ("nope", ""),
                ],
                &[("token", "t0k")],
                false,
                Err(vec![
                    not_secret(),
                    held(),
                    Refusal::Unknown {
                        runbook: "deploy".into(),
                        name: "nope".into(),
                        suggestion: None,
                    },
                ]),
            ),
        ];
        for (case, now, held, key_set, want) in table {
            assert_eq!(check(now, held, key_set), want.map(pairs), "{case}");
        }
    }

    #[test]
    fn what_serve_holds_goes_on_as_far_as_it_is_a_secret_the_run_started_with() {
        // serve remembers everything it was given at the start; only the secrets pass, so the
        // journal decides every other value.
        let held = [
            ("version", "9.9.9"),
            ("token", "t0k"),
            ("extra", "x"),
            ("gone", "y"),
        ];
        assert_eq!(
            check(&[("key", "k3y")], &held, false),
            Ok(pairs(&[("token", "t0k"), ("key", "k3y")]))
        );
    }

    #[test]
    fn refusals_say_what_to_do() {
        let text = |r: Refusal| r.to_string();
        assert_eq!(
            text(Refusal::NotSecret {
                name: "v".into(),
                value: "\"original\"".into()
            }),
            "parameter `v` is not secret, so a resume or a decision cannot give it: the run keeps the value it started with (\"original\"); start a new run for another value"
        );
        assert_eq!(
            text(Refusal::Unknown {
                runbook: "deploy".into(),
                name: "tokn".into(),
                suggestion: Some("token".into())
            }),
            "runbook `deploy` has no parameter `tokn` (did you mean `token`?)"
        );
        assert_eq!(
            text(Refusal::Held { name: "t".into() }),
            "serve holds secret parameter `t` for this run already; give it only when the run asks for it"
        );
        assert_eq!(
            text(Refusal::Sourced {
                name: "t".into(),
                from: "$T".into()
            }),
            "secret parameter `t` comes from $T already; give it only when the run asks for it"
        );
        assert_eq!(
            text(Refusal::NotStarted { name: "t".into() }),
            "the run started without secret parameter `t`, so it cannot be given now"
        );
    }
}
