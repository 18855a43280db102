//! Loading a runbook file into the model, checking everything that can be checked before a
//! run: unknown fields (with "did you mean"), types, Rhai compile errors mapped back into the
//! YAML, templates, `steps.x` references against the steps that run before, and duplicate ids.
//! All problems of a file are reported in one pass.

mod fields;
mod param_from;
mod refs;
pub mod schedule;
pub mod schema;
mod step;

use std::sync::Arc;

use runbook_steps::Registry;
use serde_json::Value;

use crate::diag::{Diagnostic, Diagnostics};
use crate::library::{self, Files, ReadError};
use crate::model::{Param, ParamType, Runbook, Template};
use crate::script::LibScript;
use crate::source::{File, FileId, Pos, Sources};
use crate::yaml::{self, Map, Node, Scalar};

pub use fields::{Fields, parse_duration, suggest};
use refs::Scope;
use step::Role;

/// Top-level fields of a runbook.
pub(crate) const TOP: &[&str] = &[
    "runbook",
    "description",
    "params",
    "lock",
    "prechecks",
    "steps",
    "on_failure",
    "on_abort",
    "output",
    "functions",
    "schedule",
];

/// Fields of a parameter declaration.
pub(crate) const PARAM_FIELDS: &[&str] = &[
    "type",
    "required",
    "default",
    "pattern",
    "enum",
    "secret",
    "short_secret_ok",
    "env",
    "file",
    "from",
    "description",
];

/// Reads one runbook file.
pub struct Loader<'a> {
    f: Fields,
    registry: &'a Registry,
    files: &'a dyn Files,
    sources: &'a mut Sources,
    origin: String,
    param_names: Vec<String>,
    functions: Option<Arc<LibScript>>,
}

/// Loads the runbook at `origin`. On failure, every problem found is returned; warnings
/// alone are no failure (and are dropped: `check` reports them, through [`load_partial`]).
pub fn load(
    origin: &str,
    files: &dyn Files,
    sources: &mut Sources,
    registry: &Registry,
) -> Result<Runbook, Diagnostics> {
    match load_partial(origin, files, sources, registry) {
        (Some(r), diags) if diags.errors() == 0 => Ok(r),
        (_, diags) => Err(diags),
    }
}

/// Reads the YAML file at `origin` into `sources` and parses it, keeping every node's position.
pub fn read_yaml(
    origin: &str,
    files: &dyn Files,
    sources: &mut Sources,
) -> Result<(FileId, Node), Diagnostic> {
    let (text, file) = read_source(origin, files, sources)?;
    Ok((file, yaml::parse(file, &text)?))
}

/// Reads the file at `origin` into `sources`. A file that is not UTF-8 is added as far as it
/// can be shown, and the problem points at its first bad byte.
fn read_source(
    origin: &str,
    files: &dyn Files,
    sources: &mut Sources,
) -> Result<(String, FileId), Diagnostic> {
    let mut add = |text: String| {
        sources.add(File {
            origin: library::display_origin(origin),
            path: Some(origin.into()),
            text,
        })
    };
    match files.read(origin) {
        Ok(text) => {
            let file = add(text.clone());
            Ok((text, file))
        }
        Err(ReadError::NotUtf8(e)) => {
            let pos = Pos {
                file: add(e.lossy),
                line: e.line,
                column: e.column,
            };
            Err(Diagnostic::new(
                pos,
                1,
                format!("invalid UTF-8: byte 0x{:02x} is not UTF-8 text", e.byte),
            )
            .help("runbooks are UTF-8 text: save the file as UTF-8"))
        }
        Err(e @ ReadError::Unavailable(_)) => Err(Diagnostic::general(e.to_string())),
    }
}

/// Loads the runbook at `origin` as far as it can be read, with every problem found. The
/// runbook is there, less the parts with problems, unless the file could not be read or
/// parsed at all, so that what it calls can be checked in the same pass.
pub fn load_partial(
    origin: &str,
    files: &dyn Files,
    sources: &mut Sources,
    registry: &Registry,
) -> (Option<Runbook>, Diagnostics) {
    let (file, node) = match read_yaml(origin, files, sources) {
        Ok(read) => read,
        Err(d) => {
            let mut ds = Diagnostics::new();
            ds.push(d);
            return (None, ds);
        }
    };
    let mut loader = Loader {
        f: Fields::default(),
        registry,
        files,
        sources,
        origin: origin.to_owned(),
        param_names: Vec::new(),
        functions: None,
    };
    let runbook = loader.runbook(&node, file);
    let mut diags = loader.f.diags;
    diags.sort();
    (runbook, diags)
}

impl Loader<'_> {
    fn runbook(&mut self, node: &Node, file: FileId) -> Option<Runbook> {
        let map = self.f.map(node, "a runbook")?;
        if map.entries.is_empty() {
            self.f.push(
                Diagnostic::new(map.pos, 1, "the runbook is empty")
                    .help("a runbook needs at least `runbook: NAME` and `steps:`"),
            );
            return None;
        }
        self.f.known_keys(map, TOP, "a runbook");
        let name = match map.get("runbook") {
            Some(n) => self.f.string(n, "`runbook`").map(|s| s.text.clone()),
            None => {
                self.f.push(
                    Diagnostic::new(map.pos, 1, "a runbook needs a name")
                        .help("add `runbook: NAME` at the top"),
                );
                None
            }
        };
        let description = map
            .get("description")
            .and_then(|n| self.f.string(n, "`description`"))
            .map(|s| s.text.clone());
        let params = map
            .get("params")
            .map(|n| self.params(n))
            .unwrap_or_default();
        self.param_names = params.iter().map(|p| p.name.clone()).collect();
        if let Some(n) = map.get("functions") {
            self.functions(n);
        }
        let top = Scope::default();
        let lock = map
            .get("lock")
            .and_then(|n| self.template(n, "`lock`", &top))
            .inspect(|t: &Template| {
                if t.text.contains("steps.") {
                    self.f.push(Diagnostic::new(
                        t.pos,
                        t.text.chars().count(),
                        "`lock` may use only `params`: it is taken before any step runs",
                    ));
                }
            });
        let prechecks = map
            .get("prechecks")
            .map(|n| self.steps(n, "`prechecks`", Role::Precheck, &top))
            .unwrap_or_default();
        let mut after_prechecks = Scope::default();
        for id in prechecks.iter().filter_map(|s| s.id.as_deref()) {
            after_prechecks.push_id(id);
        }
        let steps = match map.get("steps") {
            Some(n) => self.steps(n, "`steps`", Role::Step, &after_prechecks),
            None => {
                self.f
                    .push(Diagnostic::new(map.pos, 1, "a runbook needs `steps`"));
                Vec::new()
            }
        };
        let mut all = after_prechecks.clone();
        for id in steps.iter().filter_map(|s| s.id.as_deref()) {
            all.push_id(id);
        }
        let on_failure = map
            .get("on_failure")
            .map(|n| self.steps(n, "`on_failure`", Role::Step, &all))
            .unwrap_or_default();
        let on_abort = map
            .get("on_abort")
            .map(|n| self.steps(n, "`on_abort`", Role::Step, &all))
            .unwrap_or_default();
        let output = map
            .get("output")
            .and_then(|n| self.expr(n, "`output`", &all));
        let schedules = map
            .get("schedule")
            .map(|n| schedule::runbook_schedules(&mut self.f, n, &self.param_names))
            .unwrap_or_default();
        let pos = map.key("runbook").map_or(map.pos, |k| k.pos);
        Some(Runbook {
            name: name?,
            description,
            params,
            lock,
            prechecks,
            steps,
            on_failure,
            on_abort,
            output,
            schedules,
            functions: self.functions.clone(),
            file,
            pos,
        })
    }

    fn functions(&mut self, node: &Node) {
        let Some(s) = self.f.string(node, "`functions`") else {
            return;
        };
        let Some((text, id)) = self.read_relative(s) else {
            return;
        };
        match LibScript::compile(&self.sources.get(id).origin, &text) {
            Ok(lib) => self.functions = Some(Arc::new(lib)),
            Err(e) => self.f.push(Diagnostic::new(
                Pos {
                    file: id,
                    line: e.line.unwrap_or(1),
                    column: e.column.unwrap_or(1),
                },
                1,
                format!("invalid Rhai: {}", e.message),
            )),
        }
    }

    /// Reads a file named relative to the runbook, adding it to the sources.
    fn read_relative(&mut self, name: &Scalar) -> Option<(String, FileId)> {
        let origin = library::join(&self.origin, &name.text);
        match read_source(&origin, self.files, self.sources) {
            Ok(read) => Some(read),
            Err(d) if d.pos.is_some() => {
                self.f.push(d);
                None
            }
            Err(d) => {
                self.f
                    .error_at(name, format!("cannot read `{}`: {}", name.text, d.message));
                None
            }
        }
    }

    fn params(&mut self, node: &Node) -> Vec<Param> {
        let Some(map) = self.f.map(node, "`params`") else {
            return Vec::new();
        };
        map.entries
            .iter()
            .filter_map(|(k, v)| self.param(k, v))
            .collect()
    }

    fn param(&mut self, key: &Scalar, node: &Node) -> Option<Param> {
        let name = key.text.clone();
        let ident = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ident {
            self.f.error_at(
                key,
                format!("invalid parameter name `{name}`: use letters, digits and `_`"),
            );
            return None;
        }
        // `name: string` is short for `name: { type: string }`.
        if let Some(s) = node.as_scalar() {
            let Some(ty) = ParamType::parse(&s.text) else {
                self.bad_type(node, s);
                return None;
            };
            return Some(Param {
                name,
                ty,
                required: true,
                default: None,
                pattern: None,
                allowed: None,
                secret: false,
                short_secret_ok: false,
                env: None,
                file: None,
                from: None,
                description: None,
                pos: key.pos,
            });
        }
        let map = self.f.map(node, &format!("parameter `{name}`"))?;
        self.f
            .known_keys(map, PARAM_FIELDS, &format!("parameter `{name}`"));
        let default = map.get("default").map(Node::to_json);
        let ty = match map.get("type") {
            Some(n) => {
                let s = self.f.string(n, "`type`")?;
                let Some(ty) = ParamType::parse(&s.text) else {
                    self.bad_type(n, s);
                    return None;
                };
                ty
            }
            None => match &default {
                Some(Value::Bool(_)) => ParamType::Bool,
                Some(Value::Number(n)) if n.is_i64() || n.is_u64() => ParamType::Int,
                Some(Value::Array(_)) => ParamType::List,
                Some(Value::Object(_)) => ParamType::Map,
                _ => ParamType::String,
            },
        };
        let required_node = map.get("required");
        let required = required_node
            .and_then(|n| self.f.bool(n, "`required`"))
            .unwrap_or(false);
        let secret = map
            .get("secret")
            .and_then(|n| self.f.bool(n, "`secret`"))
            .unwrap_or(false);
        let env = map
            .get("env")
            .and_then(|n| self.f.string(n, "`env`"))
            .map(|s| s.text.clone());
        let file = map
            .get("file")
            .and_then(|n| self.f.string(n, "`file`"))
            .map(|s| s.text.clone());
        let from = map.get("from").and_then(|n| self.param_from(n));
        if from.is_some()
            && let Some(n) = map.get("secret")
            && !secret
        {
            self.f.error(
                n,
                format!("parameter `{name}` comes from OpenBao, so it is always secret"),
            );
        }
        let secret = secret || from.is_some();
        let short_secret_ok = map
            .get("short_secret_ok")
            .and_then(|n| {
                let ok = self.f.bool(n, "`short_secret_ok`")?;
                if ok && !secret {
                    self.f.error(
                        n,
                        format!("`short_secret_ok` applies only to secret parameters, and `{name}` is not one"),
                    );
                }
                Some(ok)
            })
            .unwrap_or(false);
        let description = map
            .get("description")
            .and_then(|n| self.f.string(n, "`description`"))
            .map(|s| s.text.clone());
        let pattern = map.get("pattern").and_then(|n| {
            let s = self.f.string(n, "`pattern`")?;
            if ty != ParamType::String {
                self.f
                    .error(n, "`pattern` applies only to string parameters");
                return None;
            }
            match regex::Regex::new(&s.text) {
                Ok(r) => Some(r),
                Err(e) => {
                    self.f.error(n, format!("invalid `pattern`: {e}"));
                    None
                }
            }
        });
        let allowed = map.get("enum").and_then(|n| {
            let items = self.f.list(n, "`enum`")?;
            let values: Vec<Value> = items.iter().map(Node::to_json).collect();
            for (item, value) in items.iter().zip(&values) {
                if !ty.admits(value) {
                    self.f.error(
                        item,
                        format!(
                            "`enum` value does not have the parameter's type {}",
                            ty.as_str()
                        ),
                    );
                }
            }
            Some(values)
        });
        if let (Some(default), Some(default_node)) = (&default, map.get("default")) {
            if required {
                self.f.error(
                    required_node.expect("required is set"),
                    "a parameter with a `default` cannot also be `required`",
                );
            }
            if !default.is_null() {
                if !ty.admits(default) {
                    self.f.error(
                        default_node,
                        format!(
                            "`default` of parameter `{name}` must be {}, not {}",
                            ty.as_str(),
                            json_type(default)
                        ),
                    );
                } else if let (Some(p), Some(s)) = (&pattern, default.as_str())
                    && !p.is_match(s)
                {
                    self.f.error(
                        default_node,
                        format!("`default` does not match the `pattern` {}", p.as_str()),
                    );
                }
                if let Some(allowed) = &allowed
                    && !allowed.contains(default)
                {
                    self.f
                        .error(default_node, "`default` is not one of the `enum` values");
                }
            }
        }
        Some(Param {
            name,
            ty,
            required,
            default,
            pattern,
            allowed,
            secret,
            short_secret_ok,
            env,
            file,
            from,
            description,
            pos: key.pos,
        })
    }

    fn bad_type(&mut self, node: &Node, s: &Scalar) {
        let types = ["string", "int", "bool", "list", "map"];
        let mut d = Diagnostic::new(
            s.content,
            s.text.chars().count(),
            format!("unknown parameter type `{}`", s.text),
        );
        d = match fields::suggest(&s.text, types) {
            Some(t) => d.did_you_mean(t),
            None => d.help(format!("types are: {}", types.join(", "))),
        };
        let _ = node;
        self.f.push(d);
    }
}

/// The JSON type of a value, for messages.
pub fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "map",
    }
}

/// A map of the runbook's top level, for callers that need a field the model drops.
pub fn top_map(node: &Node) -> Option<&Map> {
    node.as_map()
}
