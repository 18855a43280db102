//! The `kube` spec: which operation, on what, with which options. One set of checks serves
//! both the load-time `validate` (templates not rendered yet, so they are skipped) and the
//! run-time parse (everything rendered; the first problem is a spec error).

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::conditions::{WANTS, Want};
use super::resources::canonical_kind;
use super::{KIND, spec_error};
use crate::StepError;

/// The operation keys; the key's value names the kind (or the pod, for exec and logs).
pub(crate) const OPS: &[&str] = &[
    "get", "list", "apply", "patch", "delete", "scale", "restart", "wait", "exec", "logs",
];

/// `list: "*"`: every kind in a namespace.
pub(crate) const EVERY_KIND: &str = "*";

/// Fields every operation takes.
const COMMON: &[&str] = &["kubeconfig", "context"];

/// The fields each operation takes besides its own key and [`COMMON`].
fn allowed(op: &str) -> &'static [&'static str] {
    match op {
        "get" => &["name", "namespace", "api_version"],
        "list" => &["namespace", "api_version", "labels", "fields"],
        "apply" => &["namespace", "force"],
        "patch" => &[
            "name",
            "namespace",
            "api_version",
            "merge",
            "json",
            "strategic",
            "resource_version",
        ],
        "delete" => &[
            "name",
            "namespace",
            "api_version",
            "propagation",
            "wait",
            "timeout",
        ],
        "scale" => &["name", "namespace", "api_version", "replicas"],
        "restart" => &["name", "namespace"],
        "wait" => &[
            "name",
            "namespace",
            "api_version",
            "for",
            "condition",
            "every",
            "timeout",
        ],
        "exec" => &["namespace", "container", "command", "stdin"],
        "logs" => &["namespace", "container", "tail", "since", "previous"],
        _ => &[],
    }
}

/// The ops that act on one named object of a kind.
const NAMED: &[&str] = &["get", "patch", "delete", "scale", "restart", "wait"];

/// Kinds `restart` knows: the ones with a pod template that a rollout replaces.
pub(crate) const RESTARTABLE: &[&str] = &["Deployment", "StatefulSet", "DaemonSet"];

const PROPAGATIONS: &[&str] = &["Foreground", "Background", "Orphan"];

/// How long `wait` polls unless told.
pub(crate) const DEFAULT_WAIT_TIMEOUT: Duration = Duration::from_secs(300);
/// How often `wait` polls unless told.
pub(crate) const DEFAULT_EVERY: Duration = Duration::from_secs(2);
/// How long `delete` with `wait: true` waits for the object to go unless told.
pub(crate) const DEFAULT_DELETE_TIMEOUT: Duration = Duration::from_secs(300);

/// The spec as written; every field is checked by hand below so that one set of checks
/// serves load time and run time.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // read through `check` and `parse` by name, not through the struct
struct RawSpec {
    get: Option<Value>,
    list: Option<Value>,
    apply: Option<Value>,
    patch: Option<Value>,
    delete: Option<Value>,
    scale: Option<Value>,
    restart: Option<Value>,
    wait: Option<Value>,
    exec: Option<Value>,
    logs: Option<Value>,
    name: Option<Value>,
    namespace: Option<Value>,
    api_version: Option<Value>,
    kubeconfig: Option<Value>,
    context: Option<Value>,
    labels: Option<Value>,
    fields: Option<Value>,
    force: Option<Value>,
    merge: Option<Value>,
    json: Option<Value>,
    strategic: Option<Value>,
    resource_version: Option<Value>,
    propagation: Option<Value>,
    timeout: Option<Value>,
    replicas: Option<Value>,
    #[serde(rename = "for")]
    for_: Option<Value>,
    condition: Option<Value>,
    every: Option<Value>,
    container: Option<Value>,
    command: Option<Value>,
    stdin: Option<Value>,
    tail: Option<Value>,
    since: Option<Value>,
    previous: Option<Value>,
}

/// A kind as the runbook names it, with an optional `api_version` for discovery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KindRef {
    /// The canonical kind for built-ins (`sts` → `StatefulSet`), else as written.
    pub kind: String,
    pub api_version: Option<String>,
}

/// One of the three patch flavours.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum PatchBody {
    Merge(Value),
    Json(Vec<Value>),
    Strategic(Value),
}

impl PatchBody {
    pub fn flavour(&self) -> &'static str {
        match self {
            Self::Merge(_) => "merge",
            Self::Json(_) => "json",
            Self::Strategic(_) => "strategic",
        }
    }
}

/// What a `wait` waits for.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Until {
    For(Want),
    Condition(String),
}

/// The operation with its options.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Op {
    Get {
        target: KindRef,
        name: String,
    },
    List {
        target: KindRef,
        labels: Option<String>,
        fields: Option<String>,
    },
    Apply {
        manifest: Value,
        force: bool,
    },
    Patch {
        target: KindRef,
        name: String,
        body: PatchBody,
        resource_version: Option<String>,
    },
    Delete {
        target: KindRef,
        name: String,
        propagation: Option<String>,
        wait: bool,
        timeout: Duration,
    },
    Scale {
        target: KindRef,
        name: String,
        replicas: i64,
    },
    Restart {
        target: KindRef,
        name: String,
    },
    Wait {
        target: KindRef,
        name: String,
        until: Until,
        every: Duration,
        timeout: Duration,
    },
    Exec {
        pod: String,
        container: Option<String>,
        command: Vec<String>,
        stdin: Option<String>,
    },
    Logs {
        pod: String,
        container: Option<String>,
        tail: Option<i64>,
        since: Option<Duration>,
        previous: bool,
    },
}

/// A checked, rendered spec.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Spec {
    pub op: Op,
    /// `namespace` as given; `None` means the context's default (or all, for `list`).
    pub namespace: Option<String>,
    pub kubeconfig: Option<String>,
    pub context: Option<String>,
}

fn given<'a>(spec: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    spec.get(key).filter(|v| !v.is_null())
}

fn is_template(value: &Value) -> bool {
    value.as_str().is_some_and(|s| s.contains("{{"))
}

/// A scalar as text (templates render numbers as numbers).
pub(crate) fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn int(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn boolean(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::String(s) => match s.trim() {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

fn duration(value: &Value) -> Result<Duration, String> {
    let Some(text) = text(value) else {
        return Err("must be a duration such as `30s` or `5m`".into());
    };
    humantime::parse_duration(text.trim()).map_err(|e| format!("invalid duration `{text}`: {e}"))
}

/// The operation key of a spec. `wait` next to `delete` is delete's option, not an op.
pub(crate) fn op_key(spec: &Map<String, Value>) -> Result<&'static str, String> {
    let found: Vec<&'static str> = OPS
        .iter()
        .copied()
        .filter(|op| spec.contains_key(*op))
        .filter(|op| !(*op == "wait" && spec.contains_key("delete")))
        .collect();
    match found.as_slice() {
        [op] => Ok(op),
        [] => Err(format!(
            "`{KIND}` needs one operation: one of `{}`",
            OPS.join("`, `")
        )),
        many => Err(format!(
            "`{KIND}` takes exactly one operation, not `{}`",
            many.join("` and `")
        )),
    }
}

/// Every problem of a spec, as `(field, message)`. With `rendered == false`, values that are
/// still templates are not judged.
pub(crate) fn check(spec: &Value, rendered: bool) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    let Some(map) = spec.as_object() else {
        problems.push((KIND.to_owned(), format!("`{KIND}` must be a mapping")));
        return problems;
    };
    let op = match op_key(map) {
        Ok(op) => op,
        Err(message) => {
            problems.push((KIND.to_owned(), message));
            return problems;
        }
    };
    let mut push = |field: &str, message: String| problems.push((field.to_owned(), message));
    // A value to judge: present, and rendered (or not a template).
    let judge = |key: &str| given(map, key).filter(|v| rendered || !is_template(v));

    for key in map.keys() {
        let key = key.as_str();
        if key == op || COMMON.contains(&key) || allowed(op).contains(&key) {
            continue;
        }
        // Another operation is reported by `op_key`; an unknown field by the loader's
        // "did you mean" (and by serde at run time).
        let is_field = super::FIELDS.iter().any(|f| f.name == key);
        if is_field && !OPS.contains(&key) {
            push(key, format!("`{key}` does not apply to `{op}`"));
        }
    }

    for key in [
        "name",
        "namespace",
        "api_version",
        "kubeconfig",
        "context",
        "container",
    ] {
        if let Some(v) = judge(key) {
            match text(v) {
                Some(s) if s.trim().is_empty() && key != "namespace" => {
                    push(key, format!("`{key}` must not be empty"));
                }
                Some(_) => {}
                None => push(key, format!("`{key}` must be a string")),
            }
        }
    }
    if let Some(v) = judge("api_version") {
        if let Some(s) = text(v) {
            if s.split('/').count() > 2 || s.ends_with('/') || s.starts_with('/') {
                push(
                    "api_version",
                    format!("`api_version` must be `group/version` or `version`, not `{s}`"),
                );
            }
        }
    }

    // The op's own value.
    let op_value = given(map, op);
    match op {
        "apply" => check_manifest(op_value, rendered, &mut push),
        "exec" | "logs" => match op_value {
            None => push(op, format!("`{op}` needs the pod's name")),
            Some(v) if !rendered && is_template(v) => {}
            Some(v) => match text(v) {
                Some(s) if !s.trim().is_empty() => {}
                _ => push(op, format!("`{op}` must be the pod's name")),
            },
        },
        _ => match op_value {
            None => push(op, format!("`{op}` needs a kind, e.g. `{op}: StatefulSet`")),
            Some(v) if !rendered && is_template(v) => {}
            Some(v) => match v.as_str().map(str::trim) {
                Some(kind) if !kind.is_empty() => {
                    if op == "restart" && !RESTARTABLE.contains(&canonical_kind(kind)) {
                        push(
                            op,
                            format!(
                                "`restart` works on {}, not `{kind}`",
                                RESTARTABLE.join(", ")
                            ),
                        );
                    }
                }
                _ => push(
                    op,
                    format!("`{op}` must name a kind, e.g. `{op}: StatefulSet`"),
                ),
            },
        },
    }
    if NAMED.contains(&op) && given(map, "name").is_none() {
        push(op, format!("`{op}` needs `name`"));
    }

    match op {
        "list" => {
            if op_value.and_then(Value::as_str).map(str::trim) == Some(EVERY_KIND) {
                match given(map, "namespace") {
                    Some(v) if !text(v).is_some_and(|s| s.trim().is_empty()) => {}
                    _ => push(
                        "list",
                        "`list: \"*\"` needs `namespace`: it lists every kind in one namespace"
                            .into(),
                    ),
                }
                if given(map, "api_version").is_some() {
                    push(
                        "api_version",
                        "`api_version` does not apply to `list: \"*\"` (every kind is listed)"
                            .into(),
                    );
                }
            }
            if let Some(v) = judge("labels") {
                if let Err(e) = labels(v) {
                    push("labels", e);
                }
            }
            if let Some(v) = judge("fields") {
                if !v.is_string() {
                    push(
                        "fields",
                        "`fields` must be a string such as `status.phase=Running`".into(),
                    );
                }
            }
        }
        "apply" => {
            if let Some(v) = judge("force") {
                if boolean(v).is_none() {
                    push("force", "`force` must be true or false".into());
                }
            }
        }
        "patch" => {
            let flavours: Vec<&str> = ["merge", "json", "strategic"]
                .into_iter()
                .filter(|k| given(map, k).is_some())
                .collect();
            if flavours.len() != 1 {
                let message = if flavours.is_empty() {
                    "`patch` needs one of `merge`, `json` or `strategic`".to_owned()
                } else {
                    format!(
                        "`patch` takes one of `merge`, `json` or `strategic`, not `{}`",
                        flavours.join("` and `")
                    )
                };
                push(flavours.get(1).copied().unwrap_or("patch"), message);
            }
            for key in ["merge", "strategic"] {
                if let Some(v) = judge(key) {
                    if !v.is_object() {
                        push(
                            key,
                            format!("`{key}` must be a mapping (the patch document)"),
                        );
                    }
                }
            }
            if let Some(v) = judge("json") {
                match v.as_array() {
                    Some(ops) => {
                        for (i, item) in ops.iter().enumerate() {
                            if !rendered && is_template(item) {
                                continue;
                            }
                            let ok = item.get("op").and_then(Value::as_str).is_some()
                                && item.get("path").and_then(Value::as_str).is_some();
                            if !ok {
                                push(
                                    "json",
                                    format!(
                                        "`json[{i}]` must be a JSON patch operation with `op` \
                                         and `path`"
                                    ),
                                );
                            }
                        }
                    }
                    None => push(
                        "json",
                        "`json` must be a list of JSON patch operations".into(),
                    ),
                }
            }
            if let Some(v) = judge("resource_version") {
                if text(v).is_none_or(|s| s.trim().is_empty()) {
                    push(
                        "resource_version",
                        "`resource_version` must be a string such as \"12345\"".into(),
                    );
                }
            }
        }
        "delete" => {
            if let Some(v) = judge("propagation") {
                let ok = text(v).is_some_and(|s| {
                    PROPAGATIONS
                        .iter()
                        .any(|p| p.eq_ignore_ascii_case(s.trim()))
                });
                if !ok {
                    push(
                        "propagation",
                        format!("`propagation` must be one of {}", PROPAGATIONS.join(", ")),
                    );
                }
            }
            if let Some(v) = judge("wait") {
                if boolean(v).is_none() {
                    push(
                        "wait",
                        "`wait` (next to `delete`) must be true or false".into(),
                    );
                }
            }
        }
        "scale" => match judge("replicas") {
            Some(v) if int(v).is_none_or(|n| n < 0) => {
                push(
                    "replicas",
                    "`replicas` must be a whole number, 0 or more".into(),
                );
            }
            None if given(map, "replicas").is_none() => {
                push("scale", "`scale` needs `replicas`".into());
            }
            Some(_) | None => {}
        },
        "wait" => {
            match (given(map, "for"), given(map, "condition")) {
                (None, None) => push("wait", "`wait` needs `for` or `condition`".into()),
                (Some(_), Some(_)) => push(
                    "condition",
                    "give either `for` or `condition`, not both".into(),
                ),
                _ => {}
            }
            if let Some(v) = judge("for") {
                match text(v).as_deref().and_then(Want::parse) {
                    None => push("for", format!("`for` must be one of {}", WANTS.join(", "))),
                    Some(want) => {
                        let kind = judge("wait").and_then(Value::as_str).map(canonical_kind);
                        if let (Some(kinds), Some(kind)) = (want.kinds(), kind) {
                            if !kinds.contains(&kind) {
                                push(
                                    "for",
                                    format!(
                                        "`for: {want}` is defined for {}, not `{kind}`",
                                        kinds.join(", ")
                                    ),
                                );
                            }
                        }
                    }
                }
            }
            if let Some(v) = judge("condition") {
                if !v.is_string() {
                    push(
                        "condition",
                        "`condition` must be a Rhai condition over `object`".into(),
                    );
                }
            }
        }
        "exec" => match given(map, "command") {
            None => push("exec", "`exec` needs `command` (a list: the argv)".into()),
            Some(v) => match v.as_array() {
                Some(argv) if argv.is_empty() => {
                    push("command", "`command` must not be empty".into());
                }
                Some(argv) => {
                    if argv.iter().any(|a| text(a).is_none()) {
                        push("command", "`command` must be a list of strings".into());
                    }
                }
                None if !rendered && is_template(v) => {}
                None => push(
                    "command",
                    "`command` must be a list (the argv), not a string".into(),
                ),
            },
        },
        "logs" => {
            if let Some(v) = judge("tail") {
                if int(v).is_none_or(|n| n < 0) {
                    push("tail", "`tail` must be a whole number, 0 or more".into());
                }
            }
            if let Some(v) = judge("previous") {
                if boolean(v).is_none() {
                    push("previous", "`previous` must be true or false".into());
                }
            }
        }
        _ => {}
    }
    if op == "exec" {
        if let Some(v) = judge("stdin") {
            if !v.is_string() {
                push("stdin", "`stdin` must be a string".into());
            }
        }
    }
    for key in ["timeout", "every", "since"] {
        if let Some(v) = judge(key) {
            match duration(v) {
                Ok(d) if d.is_zero() && key == "every" => {
                    push(key, "`every` must be more than 0s".into());
                }
                Ok(_) => {}
                Err(e) => push(key, format!("`{key}`: {e}")),
            }
        }
    }
    problems
}

fn check_manifest(value: Option<&Value>, rendered: bool, push: &mut impl FnMut(&str, String)) {
    let Some(value) = value else {
        push(
            "apply",
            "`apply` needs the manifest (a mapping with apiVersion, kind and metadata.name)".into(),
        );
        return;
    };
    if !rendered && is_template(value) {
        return;
    }
    let Some(manifest) = value.as_object() else {
        push(
            "apply",
            "`apply` must be a manifest: a mapping with apiVersion, kind and metadata.name".into(),
        );
        return;
    };
    for key in ["apiVersion", "kind", "metadata.name"] {
        let path = key;
        let found = match path.split_once('.') {
            Some((a, b)) => manifest.get(a).and_then(|m| m.get(b)),
            None => manifest.get(path),
        };
        match found {
            Some(v) if !rendered && is_template(v) => {}
            Some(Value::String(s)) if !s.trim().is_empty() => {}
            _ => push("apply", format!("the manifest needs `{key}`")),
        }
    }
}

/// A label selector from a string (`a=b,c!=d`) or a mapping (`{a: b}`).
pub(crate) fn labels(value: &Value) -> Result<String, String> {
    match value {
        Value::String(s) => Ok(s.trim().to_owned()),
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| match text(v) {
                Some(v) => Ok(format!("{k}={v}")),
                None => Err(format!("`labels.{k}` must be a string")),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|pairs| pairs.join(",")),
        _ => Err(
            "`labels` must be a selector string such as `app=openbao,tier!=web` or a \
                  mapping of labels"
                .into(),
        ),
    }
}

fn string(map: &Map<String, Value>, key: &str) -> Option<String> {
    given(map, key).and_then(text).map(|s| s.trim().to_owned())
}

impl Spec {
    /// Parses a rendered spec; the first problem is a spec error.
    pub(crate) fn parse(value: &Value) -> Result<Self, StepError> {
        // Unknown fields first: serde says which field and lists the known ones.
        serde_json::from_value::<RawSpec>(value.clone()).map_err(|e| spec_error(e.to_string()))?;
        if let Some((_, message)) = check(value, true).into_iter().next() {
            return Err(spec_error(message));
        }
        let map = value.as_object().expect("checked: a mapping");
        let op = op_key(map).map_err(spec_error)?;
        let target = || KindRef {
            kind: string(map, op)
                .map(|k| canonical_kind(&k).to_owned())
                .unwrap_or_default(),
            api_version: string(map, "api_version"),
        };
        let name = || string(map, "name").unwrap_or_default();
        let dur = |key: &str, default: Duration| {
            given(map, key)
                .map(|v| duration(v).map_err(spec_error))
                .transpose()
                .map(|d| d.unwrap_or(default))
        };
        let op = match op {
            "get" => Op::Get {
                target: target(),
                name: name(),
            },
            "list" => Op::List {
                target: target(),
                labels: given(map, "labels")
                    .map(labels)
                    .transpose()
                    .map_err(spec_error)?
                    .filter(|s| !s.is_empty()),
                fields: string(map, "fields").filter(|s| !s.is_empty()),
            },
            "apply" => Op::Apply {
                manifest: map["apply"].clone(),
                force: given(map, "force").and_then(boolean).unwrap_or(false),
            },
            "patch" => {
                let body = if let Some(v) = given(map, "merge") {
                    PatchBody::Merge(v.clone())
                } else if let Some(v) = given(map, "strategic") {
                    PatchBody::Strategic(v.clone())
                } else {
                    PatchBody::Json(
                        given(map, "json")
                            .and_then(Value::as_array)
                            .cloned()
                            .unwrap_or_default(),
                    )
                };
                Op::Patch {
                    target: target(),
                    name: name(),
                    body,
                    resource_version: string(map, "resource_version"),
                }
            }
            "delete" => Op::Delete {
                target: target(),
                name: name(),
                propagation: string(map, "propagation").map(|p| {
                    PROPAGATIONS
                        .iter()
                        .find(|known| known.eq_ignore_ascii_case(&p))
                        .map_or(p, |known| (*known).to_owned())
                }),
                wait: given(map, "wait").and_then(boolean).unwrap_or(false),
                timeout: dur("timeout", DEFAULT_DELETE_TIMEOUT)?,
            },
            "scale" => Op::Scale {
                target: target(),
                name: name(),
                replicas: given(map, "replicas").and_then(int).unwrap_or_default(),
            },
            "restart" => Op::Restart {
                target: target(),
                name: name(),
            },
            "wait" => Op::Wait {
                target: target(),
                name: name(),
                until: match string(map, "condition") {
                    Some(expr) => Until::Condition(expr),
                    None => Until::For(
                        string(map, "for")
                            .as_deref()
                            .and_then(Want::parse)
                            .expect("checked: a known `for`"),
                    ),
                },
                every: dur("every", DEFAULT_EVERY)?,
                timeout: dur("timeout", DEFAULT_WAIT_TIMEOUT)?,
            },
            "exec" => Op::Exec {
                pod: string(map, "exec").unwrap_or_default(),
                container: string(map, "container"),
                command: given(map, "command")
                    .and_then(Value::as_array)
                    .map(|argv| argv.iter().filter_map(text).collect())
                    .unwrap_or_default(),
                stdin: given(map, "stdin").and_then(text),
            },
            "logs" => Op::Logs {
                pod: string(map, "logs").unwrap_or_default(),
                container: string(map, "container"),
                tail: given(map, "tail").and_then(int),
                since: given(map, "since")
                    .map(|v| duration(v).map_err(spec_error))
                    .transpose()?,
                previous: given(map, "previous").and_then(boolean).unwrap_or(false),
            },
            other => return Err(spec_error(format!("unknown operation `{other}`"))),
        };
        Ok(Self {
            op,
            namespace: string(map, "namespace"),
            kubeconfig: string(map, "kubeconfig"),
            context: string(map, "context"),
        })
    }
}
