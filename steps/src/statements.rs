//! The `statements` field the database step kinds share (`sql`, `cql`): one statement — a
//! string, or `{ <text key>: "…", params: […] }` — or a list of them.
//!
//! With a single string statement the step's own `params` bind its markers; a statement
//! written as a mapping carries its own, and then a step-level `params` is refused (it would
//! be unclear which statement it belongs to). Problems are reported as `(field, message)` where `field` is a
//! JSON Pointer to the offending item (`/statements/1`) or key (`/statements/1/sq`), so
//! `runbook check` points at the item itself. Templates are judged only once rendered.

use serde_json::{Map, Value};

use crate::util::{json_type, suggest};

/// One statement to run: its text and the values bound to its markers.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Statement {
    pub text: String,
    /// A list (positional) or, where the kind allows it, a mapping (by marker name).
    pub params: Value,
}

/// How a kind names things in its `statements`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Shape {
    /// The key of an item's text: `sql`, `cql`.
    pub text: &'static str,
    /// Whether `params` may be a mapping of marker names to values.
    pub named: bool,
}

impl Shape {
    fn item_fields(self) -> [&'static str; 2] {
        [self.text, "params"]
    }

    fn params_kind(self) -> &'static str {
        if self.named {
            "a list or a mapping"
        } else {
            "a list"
        }
    }

    fn params_ok(self, value: &Value) -> bool {
        value.is_array() || (self.named && value.is_object())
    }
}

fn is_template(value: &Value) -> bool {
    value.as_str().is_some_and(|s| s.contains("{{"))
}

fn blank(text: &str, rendered: bool) -> bool {
    (rendered || !text.contains("{{")) && text.trim().is_empty()
}

/// The statements' texts as written (templates unrendered), for `describe` and `idempotent`.
pub(crate) fn texts(spec: &Value, shape: Shape) -> Option<Vec<String>> {
    match spec.get("statements")? {
        Value::String(s) => Some(vec![s.clone()]),
        Value::Object(m) => Some(vec![m.get(shape.text)?.as_str()?.to_owned()]),
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => Some(s.clone()),
                Value::Object(m) => m.get(shape.text).and_then(Value::as_str).map(str::to_owned),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

/// Whether every statement of a spec only reads (`is_read`): such a step may run twice.
pub(crate) fn only_reads(spec: &Value, shape: Shape, is_read: impl Fn(&str) -> bool) -> bool {
    texts(spec, shape).is_some_and(|texts| !texts.is_empty() && texts.iter().all(|t| is_read(t)))
}

/// A statement step's one-line description: where it goes and what it runs first.
pub(crate) fn describe(spec: &Value, shape: Shape, target: String) -> String {
    match texts(spec, shape) {
        Some(texts) => crate::util::excerpt(&format!("{target}: {}", summary(&texts))),
        None => target,
    }
}

/// `describe`'s text for the statements: the first one on one line, and how many follow.
pub(crate) fn summary(texts: &[String]) -> String {
    let first = texts
        .first()
        .map(|t| t.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    let more = match texts.len() {
        0 | 1 => String::new(),
        2 => " (+1 more statement)".to_owned(),
        n => format!(" (+{} more statements)", n - 1),
    };
    format!("{first}{more}")
}

/// Every problem of `statements` and `params` in a spec. With `rendered == false`, values that
/// are still templates are not judged.
pub(crate) fn problems(
    map: &Map<String, Value>,
    shape: Shape,
    rendered: bool,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let given = |key: &str| map.get(key).filter(|v| !v.is_null());
    if let Some(params) = given("params")
        && (rendered || !is_template(params))
        && !shape.params_ok(params)
    {
        out.push((
            "params".to_owned(),
            format!(
                "`params` must be {}, not {}",
                shape.params_kind(),
                json_type(params)
            ),
        ));
    }
    match given("statements") {
        Some(Value::String(s)) if blank(s, rendered) => {
            out.push(("statements".into(), "`statements` is empty".into()));
        }
        Some(Value::Array(items)) => {
            if items.is_empty() {
                out.push((
                    "statements".into(),
                    "`statements` lists no statement".into(),
                ));
            }
            if given("params").is_some() {
                out.push(("params".into(), own_params(shape)));
            }
            for (i, item) in items.iter().enumerate() {
                if let Some(problem) = item_problem(i, item, shape, rendered) {
                    out.push(problem);
                }
            }
        }
        Some(item @ Value::Object(_)) => {
            if given("params").is_some() {
                out.push(("params".into(), own_params(shape)));
            }
            if let Some((at, message)) = item_problem(0, item, shape, rendered) {
                // The statement is `statements` itself, not its first item.
                let at = at.replacen("/statements/0", "/statements", 1);
                out.push((at, message.replacen("statement 1", "the statement", 1)));
            }
        }
        Some(other) if !other.is_string() && (rendered || !is_template(other)) => out.push((
            "statements".into(),
            format!(
                "`statements` must be a statement or a list of them, not {}",
                json_type(other)
            ),
        )),
        None | Some(_) => {}
    }
    out
}

fn own_params(shape: Shape) -> String {
    format!(
        "with a list of `statements` or a statement written as a mapping, give each its own \
         `params`: `{{ {}: \"…\", params: […] }}`",
        shape.text
    )
}

/// What is wrong with item `i` (0-based) of `statements`, if anything, with its pointer.
fn item_problem(i: usize, item: &Value, shape: Shape, rendered: bool) -> Option<(String, String)> {
    let n = i + 1;
    let at = format!("/statements/{i}");
    let fields = shape.item_fields();
    match item {
        Value::String(s) if blank(s, rendered) => Some((at, format!("statement {n} is empty"))),
        Value::String(_) => None,
        Value::Object(m) => {
            if let Some(key) = m.keys().find(|k| !fields.contains(&k.as_str())) {
                let hint = suggest(key, &fields)
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                return Some((
                    format!("{at}/{key}"),
                    format!(
                        "statement {n} has an unknown field `{key}`{hint}; a statement is \
                         `{{ {}, params }}`",
                        shape.text
                    ),
                ));
            }
            match m.get(shape.text) {
                Some(Value::String(s)) if blank(s, rendered) => Some((
                    format!("{at}/{}", shape.text),
                    format!("statement {n} is empty"),
                )),
                Some(Value::String(_)) => match m.get("params") {
                    None | Some(Value::Null) => None,
                    Some(p) if shape.params_ok(p) || (!rendered && is_template(p)) => None,
                    Some(p) => Some((
                        format!("{at}/params"),
                        format!(
                            "the `params` of statement {n} must be {}, not {}",
                            shape.params_kind(),
                            json_type(p)
                        ),
                    )),
                },
                Some(other) if !rendered && is_template(other) => None,
                _ => Some((
                    at,
                    format!("statement {n} needs `{}`, the statement's text", shape.text),
                )),
            }
        }
        other if !rendered && is_template(other) => None,
        other => Some((
            at,
            format!(
                "statement {n} must be a string or `{{ {}, params }}`, not {}",
                shape.text,
                json_type(other)
            ),
        )),
    }
}

/// The statements of a checked, rendered spec (`statements` and the step's `params`).
pub(crate) fn parse(statements: Value, params: Option<Value>, shape: Shape) -> Vec<Statement> {
    let none = || Value::Array(Vec::new());
    match statements {
        Value::String(text) => vec![Statement {
            text,
            params: params.filter(|p| !p.is_null()).unwrap_or_else(none),
        }],
        item @ Value::Object(_) => parse(Value::Array(vec![item]), None, shape),
        Value::Array(items) => items
            .into_iter()
            .map(|item| match item {
                Value::String(text) => Statement {
                    text,
                    params: none(),
                },
                Value::Object(mut m) => Statement {
                    text: m
                        .remove(shape.text)
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default(),
                    params: m
                        .remove("params")
                        .filter(|p| !p.is_null())
                        .unwrap_or_else(none),
                },
                _ => Statement {
                    text: String::new(),
                    params: none(),
                },
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// `statement 2 of 3`, or `the statement` when there is one.
pub(crate) fn which(index: usize, count: usize) -> String {
    if count == 1 {
        "the statement".to_owned()
    } else {
        format!("statement {} of {count}", index + 1)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const SQL: Shape = Shape {
        text: "sql",
        named: false,
    };
    const CQL: Shape = Shape {
        text: "cql",
        named: true,
    };

    fn problems_of(spec: &Value, shape: Shape) -> Vec<(String, String)> {
        problems(spec.as_object().unwrap(), shape, false)
    }

    #[test]
    fn each_problem_points_at_its_item() {
        assert_eq!(
            problems_of(
                &json!({
                    "params": [1],
                    "statements": [" ", {"sq": "SELECT 1"}, {"params": []}, 3,
                                   {"sql": "SELECT 1", "params": 1}, "{{params.s}}",
                                   {"sql": "{{params.s}}", "params": "{{params.p}}"}],
                }),
                SQL
            ),
            [
                (
                    "params".to_owned(),
                    "with a list of `statements` or a statement written as a mapping, give each \
                     its own `params`: `{ sql: \"…\", params: […] }`"
                        .to_owned()
                ),
                (
                    "/statements/0".to_owned(),
                    "statement 1 is empty".to_owned()
                ),
                (
                    "/statements/1/sq".to_owned(),
                    "statement 2 has an unknown field `sq` (did you mean `sql`?); a statement is \
                     `{ sql, params }`"
                        .to_owned()
                ),
                (
                    "/statements/2".to_owned(),
                    "statement 3 needs `sql`, the statement's text".to_owned()
                ),
                (
                    "/statements/3".to_owned(),
                    "statement 4 must be a string or `{ sql, params }`, not a number".to_owned()
                ),
                (
                    "/statements/4/params".to_owned(),
                    "the `params` of statement 5 must be a list, not a number".to_owned()
                ),
            ]
        );
        assert_eq!(
            problems_of(&json!({"statements": "SELECT ?", "params": {"a": 1}}), SQL),
            [(
                "params".to_owned(),
                "`params` must be a list, not a mapping".to_owned()
            )]
        );
        assert_eq!(
            problems_of(&json!({"statements": "SELECT :a", "params": {"a": 1}}), CQL),
            []
        );
        assert_eq!(
            problems_of(&json!({"statements": [{"cql": "x", "params": "y"}]}), CQL),
            [(
                "/statements/0/params".to_owned(),
                "the `params` of statement 1 must be a list or a mapping, not a string".to_owned()
            )]
        );
        assert_eq!(
            problems_of(
                &json!({"statements": {"cql": "SELECT 1", "param": []}, "params": []}),
                CQL
            ),
            [
                (
                    "params".to_owned(),
                    "with a list of `statements` or a statement written as a mapping, give each \
                     its own `params`: `{ cql: \"…\", params: […] }`"
                        .to_owned()
                ),
                (
                    "/statements/param".to_owned(),
                    "the statement has an unknown field `param` (did you mean `params`?); a \
                     statement is `{ cql, params }`"
                        .to_owned()
                )
            ]
        );
    }

    #[test]
    fn parsing_gives_each_statement_its_params() {
        assert_eq!(
            parse(json!("SELECT $1"), Some(json!(["x"])), SQL),
            [Statement {
                text: "SELECT $1".into(),
                params: json!(["x"])
            }]
        );
        assert_eq!(
            parse(
                json!(["SELECT 1", {"cql": "SELECT :a", "params": {"a": 1}}, {"cql": "x", "params": null}]),
                None,
                CQL
            ),
            [
                Statement {
                    text: "SELECT 1".into(),
                    params: json!([])
                },
                Statement {
                    text: "SELECT :a".into(),
                    params: json!({"a": 1})
                },
                Statement {
                    text: "x".into(),
                    params: json!([])
                },
            ]
        );
        assert_eq!(
            summary(
                &texts(
                    &json!({"statements": ["INSERT\n  INTO t", {"sql": "x"}]}),
                    SQL
                )
                .unwrap()
            ),
            "INSERT INTO t (+1 more statement)"
        );
        assert_eq!(which(0, 1), "the statement");
        assert_eq!(which(1, 3), "statement 2 of 3");
    }
}
