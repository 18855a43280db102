//! Parameter values: from `-p name=value`, a declared environment variable or file, or the
//! default — typed, checked against `pattern` and `enum`, and secrets masked for the journal.

use serde_json::{Map, Value};

use crate::load::json_type;
use crate::model::{Param, ParamType, Runbook};
use crate::secrets::{MASK, MIN_ANYWHERE};

/// A parameter value that is missing, wrong or not allowed: the message the command line
/// prints, and the parameter it is about, so that a form can show it at its field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamProblem {
    /// The parameter (declared, or a name given that the runbook does not declare); `None`
    /// when the problem is about no single parameter (a lock key that does not render).
    pub param: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl ParamProblem {
    /// A problem with parameter `param`.
    pub fn of(param: &str, message: impl Into<String>) -> Self {
        Self {
            param: Some(param.to_owned()),
            message: message.into(),
        }
    }

    /// A problem about no single parameter.
    pub fn general(message: impl Into<String>) -> Self {
        Self {
            param: None,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ParamProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Parameter values of a run.
#[derive(Clone, Debug, Default)]
pub struct Values {
    /// Every value, secrets in clear (kept in memory only).
    pub clear: Map<String, Value>,
    /// The same with secrets masked, as journaled.
    pub journaled: Map<String, Value>,
    /// Secret values (to teach the redactor).
    pub secrets: Vec<Value>,
}

impl Values {
    /// A redactor that masks every secret value.
    pub fn redactor(&self) -> crate::secrets::Redactor {
        let redactor = crate::secrets::Redactor::new();
        for s in &self.secrets {
            redactor.add_value(s);
        }
        redactor
    }
}

/// Parses `name=value`.
pub fn parse_assignment(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.to_owned()))
        .ok_or_else(|| format!("`{s}` is not of the form name=value"))
}

/// JSON parameters (`{"name": value}`, from the API or a schedule) as `name=value` text pairs,
/// the way `-p` gives them: strings as they are, anything else as its JSON text.
pub fn pairs_from_json(params: &serde_json::Map<String, Value>) -> Vec<(String, String)> {
    params
        .iter()
        .map(|(k, v)| {
            let text = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), text)
        })
        .collect()
}

/// Resolves the values of a run from command-line strings.
///
/// `journaled` holds values pinned by an earlier start of the same run (on resume): non-secret
/// values come from there; secret values must be supplied again (by `given`, env or file).
pub fn resolve(
    book: &Runbook,
    given: &[(String, String)],
    journaled: Option<&Map<String, Value>>,
) -> Result<Values, Vec<ParamProblem>> {
    let mut errors = Vec::new();
    for (name, _) in given {
        if book.param(name).is_none() {
            let names = book.params.iter().map(|p| p.name.as_str());
            let hint = crate::load::suggest(name, names)
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            errors.push(ParamProblem::of(
                name,
                format!("runbook `{}` has no parameter `{name}`{hint}", book.name),
            ));
        }
    }
    let mut out = Values::default();
    let mut reader = crate::openbao::Reader::new();
    for param in &book.params {
        let given_value = given
            .iter()
            .rev()
            .find(|(k, _)| *k == param.name)
            .map(|(_, v)| v);
        let value = if let Some(text) = given_value {
            parse_text(param, text).map(Some)
        } else if let Some(prev) = journaled.and_then(|j| j.get(&param.name))
            && !(param.secret && prev == &Value::String(MASK.to_owned()))
        {
            Ok(Some(prev.clone()))
        } else {
            from_sources(param, &mut reader)
        };
        let value = match value {
            Ok(Some(v)) => v,
            Ok(None) => {
                if journaled.is_some() && param.secret {
                    let was_set = journaled
                        .and_then(|j| j.get(&param.name))
                        .is_some_and(|v| !v.is_null());
                    if was_set {
                        errors.push(ParamProblem::of(
                            &param.name,
                            format!(
                                "the run needs secret parameter `{}` again: {}",
                                param.name,
                                where_from(param)
                            ),
                        ));
                        continue;
                    }
                }
                if param.required {
                    errors.push(ParamProblem::of(
                        &param.name,
                        format!(
                            "missing required parameter `{}`: {}",
                            param.name,
                            where_from(param)
                        ),
                    ));
                    continue;
                }
                Value::Null
            }
            Err(e) => {
                errors.push(ParamProblem::of(&param.name, e));
                continue;
            }
        };
        if let Err(e) = check(param, &value).and_then(|()| long_enough(param, &value)) {
            errors.push(ParamProblem::of(&param.name, e));
            continue;
        }
        if param.secret && !value.is_null() {
            out.secrets.push(value.clone());
            out.journaled
                .insert(param.name.clone(), Value::String(MASK.to_owned()));
        } else {
            out.journaled.insert(param.name.clone(), value.clone());
        }
        out.clear.insert(param.name.clone(), value);
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// Resolves the parameters a `call` passes (already rendered JSON values).
pub fn resolve_json(book: &Runbook, given: &Map<String, Value>) -> Result<Values, Vec<String>> {
    let mut errors = Vec::new();
    for name in given.keys() {
        if book.param(name).is_none() {
            errors.push(format!("runbook `{}` has no parameter `{name}`", book.name));
        }
    }
    let mut out = Values::default();
    let mut reader = crate::openbao::Reader::new();
    for param in &book.params {
        let value = match given.get(&param.name) {
            Some(Value::String(s)) if param.ty != ParamType::String => match parse_text(param, s) {
                Ok(v) => v,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            },
            Some(v) => v.clone(),
            None => match from_sources(param, &mut reader) {
                Ok(Some(v)) => v,
                Ok(None) if param.required => {
                    errors.push(format!("missing required parameter `{}`", param.name));
                    continue;
                }
                Ok(None) => Value::Null,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            },
        };
        if let Err(e) = check(param, &value) {
            errors.push(e);
            continue;
        }
        if param.secret && !value.is_null() {
            out.secrets.push(value.clone());
        }
        out.clear.insert(param.name.clone(), value);
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// Refuses a secret value too short to mask without garbling output (an `x` would mask every
/// `x` of every word) unless the parameter says `short_secret_ok: true`; such a secret is then
/// masked only where it stands as a whole word ([`crate::secrets`]).
fn long_enough(param: &Param, value: &Value) -> Result<(), String> {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return Ok(()),
    };
    let len = text.chars().count();
    if !param.secret || param.short_secret_ok || len >= MIN_ANYWHERE {
        return Ok(());
    }
    let size = match len {
        0 => "is empty".to_owned(),
        1 => "is 1 character long".to_owned(),
        n => format!("is {n} characters long"),
    };
    let from = param
        .env
        .as_ref()
        .map(|e| format!(" (given by -p or ${e})"))
        .unwrap_or_default();
    Err(format!(
        "secret parameter `{}`{from} {size}: a secret shorter than {MIN_ANYWHERE} characters is \
         refused, as masking it would garble output; give the real secret, or mark the parameter \
         `short_secret_ok: true` to accept it (it is then masked only where it stands as a whole word)",
        param.name
    ))
}

/// Refuses to start a run whose runbook reads a secret parameter that has no value: it would
/// run with `null` in the secret's place (an empty token in a header, a password left out of a
/// command line). `text` is the runbook's source, where its templates and expressions are.
pub fn secrets_present<'a>(
    book: &Runbook,
    values: &Values,
    text: impl IntoIterator<Item = &'a str>,
) -> Result<(), Vec<ParamProblem>> {
    let named: std::collections::BTreeSet<String> = text
        .into_iter()
        .flat_map(crate::refs::params_named)
        .collect();
    let errors: Vec<ParamProblem> = book
        .params
        .iter()
        .filter(|p| p.secret && named.contains(&p.name))
        .filter(|p| values.clear.get(&p.name).is_none_or(Value::is_null))
        .map(|p| {
            ParamProblem::of(
                &p.name,
                format!(
                    "secret parameter `{}` has no value, and the runbook uses it: {}",
                    p.name,
                    where_from(p)
                ),
            )
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn where_from(param: &Param) -> String {
    let mut ways = vec![format!("pass -p {}=…", param.name)];
    if let Some(env) = &param.env {
        ways.push(format!("set ${env}"));
    }
    if let Some(file) = &param.file {
        ways.push(format!("write it to {file}"));
    }
    if let Some(source) = &param.from {
        ways.push(format!("store it in OpenBao at {}", source.describe()));
    }
    ways.join(", or ")
}

/// The value from the declared environment variable, file, secret store or default, if any.
fn from_sources(
    param: &Param,
    reader: &mut crate::openbao::Reader,
) -> Result<Option<Value>, String> {
    if let Some(env) = &param.env
        && let Ok(text) = std::env::var(env)
    {
        return parse_text(param, &text)
            .map(Some)
            .map_err(|e| format!("{e} (from ${env})"));
    }
    if let Some(file) = &param.file
        && let Ok(text) = std::fs::read_to_string(file)
    {
        return parse_text(param, text.trim_end_matches(['\n', '\r']))
            .map(Some)
            .map_err(|e| format!("{e} (from {file})"));
    }
    if let Some(source) = &param.from {
        let cannot = |e: String| {
            format!(
                "parameter `{}`: cannot read it from OpenBao ({}): {e}",
                param.name,
                source.describe()
            )
        };
        return match reader.read(source).map_err(cannot)? {
            Value::String(text) => parse_text(param, &text).map(Some),
            value => check(param, &value).map(|()| Some(value)),
        }
        .map_err(|e| format!("{e} (from OpenBao {})", source.describe()));
    }
    Ok(param.default.clone().filter(|v| !v.is_null()))
}

/// Types a command-line string.
fn parse_text(param: &Param, text: &str) -> Result<Value, String> {
    let bad = |want: &str| {
        if param.secret {
            format!("parameter `{}` must be {want}", param.name)
        } else {
            format!("parameter `{}` must be {want}, not `{text}`", param.name)
        }
    };
    match param.ty {
        ParamType::String => Ok(Value::String(text.to_owned())),
        ParamType::Int => text
            .trim()
            .parse::<i64>()
            .map(Value::from)
            .map_err(|_| bad("an integer")),
        ParamType::Bool => match text.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" | "on" => Ok(Value::Bool(true)),
            "false" | "no" | "0" | "off" => Ok(Value::Bool(false)),
            _ => Err(bad("true or false")),
        },
        ParamType::List => {
            if text.trim_start().starts_with('[') {
                match serde_json::from_str::<Value>(text) {
                    Ok(v @ Value::Array(_)) => Ok(v),
                    _ => Err(bad("a JSON list or comma-separated values")),
                }
            } else if text.trim().is_empty() {
                Ok(Value::Array(Vec::new()))
            } else {
                Ok(Value::Array(
                    text.split(',')
                        .map(|s| Value::String(s.trim().to_owned()))
                        .collect(),
                ))
            }
        }
        ParamType::Map => match serde_json::from_str::<Value>(text) {
            Ok(v @ Value::Object(_)) => Ok(v),
            _ => Err(bad("a JSON object")),
        },
    }
}

/// Checks a typed value against the declaration.
fn check(param: &Param, value: &Value) -> Result<(), String> {
    if value.is_null() {
        return Ok(());
    }
    if !param.ty.admits(value) {
        return Err(format!(
            "parameter `{}` must be {}, not {}",
            param.name,
            param.ty.as_str(),
            json_type(value)
        ));
    }
    if let (Some(p), Some(s)) = (&param.pattern, value.as_str())
        && !p.is_match(s)
    {
        let shown = if param.secret { MASK } else { s };
        return Err(format!(
            "parameter `{}` value `{shown}` does not match the pattern {}",
            param.name,
            p.as_str()
        ));
    }
    if let Some(allowed) = &param.allowed
        && !allowed.contains(value)
    {
        let list: Vec<String> = allowed.iter().map(ToString::to_string).collect();
        return Err(format!(
            "parameter `{}` must be one of {}, not {value}",
            param.name,
            list.join(", ")
        ));
    }
    Ok(())
}
