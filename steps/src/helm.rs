//! The `helm` step kind: one Helm operation per step, run by the real `helm` binary, its
//! answers read from helm's `-o json`.
//!
//! ```yaml
//! helm: { upgrade: openbao-server, chart: oci://registry.example/team/helm-openbao-server,
//!         version: 0.22.1, namespace: vault-system, values: [openbao-values.yaml],
//!         set: { server: { image: { tag: "2.7.2" } } },
//!         wait: true, wait_for_jobs: true, timeout: 15m }   # → {release, exit_code, stdout, …}
//! helm: { rollback: openbao-server, revision: 2, wait: true }  # revision 0 or none: the previous
//! helm: { uninstall: openbao-server, wait: true, keep_history: false }
//! helm: { status: openbao-server }             # → {name, namespace, revision, status, chart, …}
//! helm: { history: openbao-server, max: 10 }   # → {revisions, latest, deployed}
//! helm: { get_values: openbao-server }         # → the values map (`all: true`: with defaults)
//! helm: { list: true, filter: "^openbao" }     # → {releases}
//! ```
//!
//! # Which helm, which cluster
//!
//! The binary is the spec's `helm`, else `$RUNBOOK_HELM`, else `helm` on `PATH`. The cluster is
//! found in the `kube` kind's order: the spec's `kubeconfig` (passed as `--kubeconfig`), else
//! `$RUNBOOK_KUBECONFIG`, else `$KUBECONFIG` (either is given to helm as its `KUBECONFIG`, so a
//! `:`-separated list is merged as kubectl merges it), else `~/.kube/config`, else the pod's
//! service account (helm's own fallbacks). `context` is `--kube-context`; `namespace` is
//! `--namespace`, by default the context's, except that `list` without one lists every
//! namespace. `args` adds flags helm has and the spec does not name (`--plain-http`,
//! `--ca-file`, `--post-renderer`); it may not change the output format.
//!
//! # Values
//!
//! `values` is a list of values files (`-f`, in order; relative to runbook's working directory)
//! or one inline mapping; `set` is an inline mapping applied after them. Inline values are
//! written as JSON (which helm reads as YAML) to a file in a fresh owner-only directory, passed
//! with `-f`, and removed when the step ends, however it ends — never as `--set` strings, so
//! numbers, booleans, lists and nesting reach the chart as written, and no value appears on a
//! command line. The file never reaches the journal (the journal keeps the rendered spec, in
//! which the engine masks secret values). Keys are keys, not paths: `image: { tag: x }` sets
//! `image.tag`; a dotted key at the top of a mapping is refused as the slip it almost always is.
//!
//! # Outputs
//!
//! Operators never parse helm's text. `status` gives `{name, namespace, revision, status,
//! chart, chart_name, chart_version, app_version, updated, first_deployed, description, notes,
//! info}` (from `helm status` and `helm get metadata` of that revision; never the release's
//! values or manifest, which may hold secrets); `history` gives `{revisions: [{revision,
//! updated, status, chart, app_version, description}], latest, deployed}` (the newest revision
//! and the deployed one, null when none); `get_values` the values map itself (`{}` when none
//! were given); `list` `{releases: [{name, namespace, revision, updated, status, chart,
//! app_version}]}`.
//!
//! `upgrade`, `rollback` and `uninstall` run their command, then read the release as `status`
//! does, so the output says what the release is *after* the command — also when it failed:
//! `{release, exit_code, stdout, stderr, duration_ms}`, where `release` is null when there is
//! none (uninstalled without history) and stdout and stderr are the last [`TAIL_BYTES`] of each.
//!
//! # How an operation can end
//!
//! - helm exits 0: the output.
//! - helm exits otherwise: [`StepError::Failed`] with helm's own error (`helm upgrade
//!   vault-system/openbao-server failed: UPGRADE FAILED: post-upgrade hooks failed: …`) and the
//!   output attached, so `on_failure` and `assert` see the failed release. A release that does
//!   not exist adds `not_found: true` to the output of a read.
//! - helm cannot be started: [`StepError::Failed`] naming the binary and how to name another.
//! - The engine cancels the step (its `timeout`, Ctrl-C): helm's process group gets SIGTERM —
//!   on which helm marks an upgrade or rollback in flight as failed instead of leaving the
//!   release `pending-upgrade` — then, after `grace` (default 10s), SIGKILL. The step ends
//!   [`StepError::Cancelled`], never `Failed`.
//!
//! `timeout` is helm's own `--timeout` (how long it waits for resources and hook Jobs), for
//! `upgrade`, `rollback` and `uninstall`; helm's default is 5m.
//!
//! # Idempotency
//!
//! `status`, `history`, `get_values` and `list` only read. `upgrade` is idempotent (with the
//! default `--install`): the same chart and values give the same objects. Running it again does
//! add a revision and runs the chart's upgrade hooks again — give the step `idempotent: false`
//! when a hook must not run twice. `rollback` is not (rolling back to "the previous" revision
//! twice moves twice; give it a `check`), nor is `uninstall` unless `ignore_not_found: true`
//! (then a second uninstall finds nothing and succeeds). If runbook itself is killed (SIGKILL), the
//! helm it started runs on and holds the release's lock; an `upgrade` re-run on resume then
//! fails with helm's "another operation (install/upgrade/rollback) is in progress" instead of
//! racing it. A helm killed with SIGKILL leaves the release `pending-*` for good; `helm
//! rollback` clears it.

use std::ffi::{OsStr, OsString};
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::unistd::Pid;
use serde_json::{Map, Value, json};
use tokio::process::Command;
use tokio::time::Instant;
use tracing::Instrument;

use crate::orphans::{self, Attempt};
use crate::shell::{Capture, Reader, drain, signal_name, stop, tap};
use crate::util::{duration_ms, excerpt, is_template, json_type, parse_duration};
use crate::{
    BoxFuture, CancelReason, Field, FieldType, OutputStream, StepContext, StepError, StepKind,
};

const KIND: &str = "helm";

/// How long helm gets between SIGTERM and SIGKILL unless the spec says otherwise: on SIGTERM
/// it records the operation in flight as failed, which takes a round trip or two to the API.
const DEFAULT_GRACE: Duration = Duration::from_secs(10);

/// Bytes read from each of helm's streams: a release's status JSON holds its whole manifest.
const CAPTURE_LIMIT: usize = 64 * 1024 * 1024;

/// Bytes of each of helm's streams kept in an output (the end, where helm's error is).
pub(crate) const TAIL_BYTES: usize = 8 * 1024;

/// Longest release name helm accepts.
const MAX_RELEASE_NAME: usize = 53;

/// The `helm` step kind.
pub struct Helm;

/// The operation keys; the key's value is the release's name (`list: true` lists them).
pub(crate) const OPS: &[&str] = &[
    "upgrade",
    "rollback",
    "uninstall",
    "status",
    "history",
    "get_values",
    "list",
];

/// Fields every operation takes.
const COMMON: &[&str] = &[
    "namespace",
    "kubeconfig",
    "context",
    "helm",
    "args",
    "grace",
];

/// The fields each operation takes besides its own key and [`COMMON`].
fn allowed(op: &str) -> &'static [&'static str] {
    match op {
        "upgrade" => &[
            "chart",
            "version",
            "repo",
            "values",
            "set",
            "install",
            "wait",
            "wait_for_jobs",
            "timeout",
            "atomic",
            "create_namespace",
            "reset_values",
            "reuse_values",
            "reset_then_reuse_values",
            "cleanup_on_fail",
            "description",
            "history_max",
        ],
        "rollback" => &[
            "revision",
            "wait",
            "wait_for_jobs",
            "timeout",
            "cleanup_on_fail",
            "history_max",
        ],
        "uninstall" => &[
            "wait",
            "timeout",
            "keep_history",
            "ignore_not_found",
            "description",
        ],
        "status" => &["revision"],
        "history" => &["max"],
        "get_values" => &["all", "revision"],
        "list" => &["all", "filter"],
        _ => &[],
    }
}

static FIELDS: &[Field] = &[
    // Operations: exactly one is given.
    Field::optional("upgrade", FieldType::String),
    Field::optional("rollback", FieldType::String),
    Field::optional("uninstall", FieldType::String),
    Field::optional("status", FieldType::String),
    Field::optional("history", FieldType::String),
    Field::optional("get_values", FieldType::String),
    Field::optional("list", FieldType::Bool),
    // The connection and the binary.
    Field::optional("namespace", FieldType::String),
    Field::optional("kubeconfig", FieldType::String),
    Field::optional("context", FieldType::String),
    Field::optional("helm", FieldType::String),
    Field::optional("args", FieldType::List),
    Field::optional("grace", FieldType::Duration),
    // upgrade
    Field::optional("chart", FieldType::String),
    Field::optional("version", FieldType::String),
    Field::optional("repo", FieldType::String),
    Field::optional("values", FieldType::Any),
    Field::optional("set", FieldType::Map),
    Field::optional("install", FieldType::Bool),
    Field::optional("atomic", FieldType::Bool),
    Field::optional("create_namespace", FieldType::Bool),
    Field::optional("reset_values", FieldType::Bool),
    Field::optional("reuse_values", FieldType::Bool),
    Field::optional("reset_then_reuse_values", FieldType::Bool),
    // upgrade, uninstall
    Field::optional("description", FieldType::String),
    // upgrade, rollback, uninstall
    Field::optional("wait", FieldType::Bool),
    Field::optional("timeout", FieldType::Duration),
    // upgrade, rollback
    Field::optional("wait_for_jobs", FieldType::Bool),
    Field::optional("cleanup_on_fail", FieldType::Bool),
    Field::optional("history_max", FieldType::Int),
    // rollback, status, get_values
    Field::optional("revision", FieldType::Int),
    // uninstall
    Field::optional("keep_history", FieldType::Bool),
    Field::optional("ignore_not_found", FieldType::Bool),
    // history
    Field::optional("max", FieldType::Int),
    // get_values, list
    Field::optional("all", FieldType::Bool),
    // list
    Field::optional("filter", FieldType::String),
];

fn spec_error(message: impl Into<String>) -> StepError {
    StepError::Spec {
        kind: KIND,
        message: message.into(),
    }
}

impl StepKind for Helm {
    fn name(&self) -> &'static str {
        KIND
    }

    fn fields(&self) -> &'static [Field] {
        FIELDS
    }

    fn validate(&self, spec: &Value) -> Vec<(String, String)> {
        read(spec, false).1
    }

    fn idempotent(&self, spec: &Value) -> bool {
        let Some(map) = spec.as_object() else {
            return false;
        };
        match op_key(map) {
            Ok("status" | "history" | "get_values" | "list" | "upgrade") => true,
            Ok("uninstall") => map.get("ignore_not_found").and_then(boolean) == Some(true),
            _ => false,
        }
    }

    fn describe(&self, spec: &Value) -> String {
        excerpt(&describe(spec))
    }

    fn run<'a>(
        &'a self,
        spec: Value,
        ctx: &'a StepContext,
    ) -> BoxFuture<'a, Result<Value, StepError>> {
        let op = spec.as_object().and_then(|m| op_key(m).ok()).unwrap_or("?");
        let span = tracing::info_span!(
            "helm",
            run_id = %ctx.run_id,
            path = %ctx.path,
            attempt = ctx.attempt,
            op
        );
        Box::pin(run_attempt(spec, ctx).instrument(span))
    }
}

// ---------------------------------------------------------------------------------------------
// The spec

/// Which stored values an upgrade starts from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Base {
    /// helm's default: the chart's values, or the last release's when no values are given.
    #[default]
    Default,
    /// `--reset-values`: the chart's values only.
    Reset,
    /// `--reuse-values`: the last release's values.
    Reuse,
    /// `--reset-then-reuse-values`: the chart's values, then the last release's.
    ResetThenReuse,
}

/// An `upgrade` (with `--install` unless `install: false`).
#[derive(Clone, Debug, Default, PartialEq)]
struct Upgrade {
    chart: String,
    version: Option<String>,
    repo: Option<String>,
    /// Values files, in order.
    files: Vec<String>,
    /// `values` given as a mapping.
    inline: Option<Map<String, Value>>,
    /// `set`.
    set: Option<Map<String, Value>>,
    install: bool,
    wait: bool,
    wait_for_jobs: bool,
    timeout: Option<Duration>,
    atomic: bool,
    create_namespace: bool,
    base: Base,
    cleanup_on_fail: bool,
    description: Option<String>,
    history_max: Option<u64>,
}

/// The operation with its options; each names its release.
#[derive(Clone, Debug, PartialEq)]
enum Op {
    Upgrade(Box<Upgrade>),
    Rollback {
        /// 0: the previous revision.
        revision: u64,
        wait: bool,
        wait_for_jobs: bool,
        timeout: Option<Duration>,
        cleanup_on_fail: bool,
        history_max: Option<u64>,
    },
    Uninstall {
        wait: bool,
        timeout: Option<Duration>,
        keep_history: bool,
        ignore_not_found: bool,
        description: Option<String>,
    },
    Status {
        revision: Option<u64>,
    },
    History {
        max: Option<u64>,
    },
    GetValues {
        all: bool,
        revision: Option<u64>,
    },
    List {
        all: bool,
        filter: Option<String>,
    },
}

impl Op {
    /// The helm command, as an operator types it.
    fn command(&self) -> &'static str {
        match self {
            Self::Upgrade(_) => "upgrade",
            Self::Rollback { .. } => "rollback",
            Self::Uninstall { .. } => "uninstall",
            Self::Status { .. } => "status",
            Self::History { .. } => "history",
            Self::GetValues { .. } => "get values",
            Self::List { .. } => "list",
        }
    }

    /// Whether it changes the release (and so reports the release after it).
    fn mutates(&self) -> bool {
        matches!(
            self,
            Self::Upgrade(_) | Self::Rollback { .. } | Self::Uninstall { .. }
        )
    }
}

/// A checked, rendered spec.
#[derive(Clone, Debug, PartialEq)]
struct Spec {
    op: Op,
    /// Empty for `list`.
    release: String,
    namespace: Option<String>,
    kubeconfig: Option<String>,
    context: Option<String>,
    helm: Option<String>,
    args: Vec<String>,
    grace: Duration,
}

impl Spec {
    fn parse(spec: &Value) -> Result<Self, StepError> {
        match read(spec, true) {
            (Some(spec), problems) if problems.is_empty() => Ok(spec),
            (_, problems) => {
                Err(spec_error(problems.into_iter().next().map_or_else(
                    || format!("`{KIND}` is not valid"),
                    |(_, message)| message,
                )))
            }
        }
    }

    /// `vault-system/openbao-server`, or the bare name without a namespace.
    fn target(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{ns}/{}", self.release),
            None => self.release.clone(),
        }
    }
}

/// A scalar as text (templates render numbers as numbers).
fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
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

fn uint(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The operation key of a spec.
fn op_key(spec: &Map<String, Value>) -> Result<&'static str, String> {
    let found: Vec<&'static str> = OPS
        .iter()
        .copied()
        .filter(|op| spec.contains_key(*op))
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

/// Why `name` is not a release name helm accepts (lowercase DNS labels joined by dots, at most
/// 53 characters), if it is not.
fn release_name_problem(name: &str) -> Option<String> {
    if name.trim().is_empty() {
        return Some("the release name must not be empty".into());
    }
    if name.chars().count() > MAX_RELEASE_NAME {
        return Some(format!(
            "release name `{name}` is longer than {MAX_RELEASE_NAME} characters"
        ));
    }
    let label_ok = |label: &str| {
        let bytes = label.as_bytes();
        !bytes.is_empty()
            && bytes
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
            && bytes[0] != b'-'
            && bytes[bytes.len() - 1] != b'-'
    };
    if name.split('.').all(label_ok) {
        None
    } else {
        Some(format!(
            "release name `{name}` is not valid: use lowercase letters, digits, `-` and `.`, \
             starting and ending with a letter or digit"
        ))
    }
}

/// Why an inline values mapping is suspicious, if it is: a dotted key at its top is a
/// `--set`-style path that helm would take as one literal key.
fn dotted_key_problem(field: &str, values: &Map<String, Value>) -> Option<String> {
    let key = values
        .keys()
        .find(|k| k.contains('.') && !k.contains("{{"))?;
    let mut parts = key.split('.');
    let first = parts.next().unwrap_or_default();
    let rest: Vec<&str> = parts.collect();
    Some(format!(
        "`{field}` takes nested mappings, not dotted paths: write `{first}: {{ {}: … }}` for \
         `{key}`",
        rest.join(".")
    ))
}

/// Reads the fields of one spec, recording problems as `(field, message)` and carrying on.
/// With `rendered == false` (load time), values that are still templates are not judged.
struct SpecReader<'a> {
    map: &'a Map<String, Value>,
    rendered: bool,
    problems: Vec<(String, String)>,
}

impl<'a> SpecReader<'a> {
    fn problem(&mut self, field: &str, message: impl Into<String>) {
        self.problems.push((field.to_owned(), message.into()));
    }

    /// The value to judge: present, not null, and rendered (or not a template).
    fn judged(&self, key: &str) -> Option<&'a Value> {
        let map: &'a Map<String, Value> = self.map;
        map.get(key)
            .filter(|v| !v.is_null())
            .filter(|v| self.rendered || !is_template(v))
    }

    fn text(&mut self, key: &str) -> Option<String> {
        let value = self.judged(key)?;
        match text(value) {
            Some(s) if s.trim().is_empty() => {
                self.problem(key, format!("`{key}` must not be empty"));
                None
            }
            Some(s) => Some(s),
            None => {
                let found = json_type(value);
                self.problem(key, format!("`{key}` must be a string, not {found}"));
                None
            }
        }
    }

    fn flag_or(&mut self, key: &str, default: bool) -> bool {
        let Some(value) = self.judged(key) else {
            return default;
        };
        boolean(value).unwrap_or_else(|| {
            self.problem(key, format!("`{key}` must be true or false"));
            default
        })
    }

    fn flag(&mut self, key: &str) -> bool {
        self.flag_or(key, false)
    }

    fn uint(&mut self, key: &str, min: u64) -> Option<u64> {
        let value = self.judged(key)?;
        match uint(value) {
            Some(n) if n >= min => Some(n),
            _ => {
                self.problem(
                    key,
                    format!("`{key}` must be a whole number, {min} or more"),
                );
                None
            }
        }
    }

    fn duration(&mut self, key: &str) -> Option<Duration> {
        let value = self.judged(key)?;
        let Some(given) = text(value) else {
            let found = json_type(value);
            self.problem(
                key,
                format!("`{key}` must be a duration such as `30s` or `5m`, not {found}"),
            );
            return None;
        };
        match parse_duration(key, Some(&given)) {
            Ok(d) => d,
            Err(message) => {
                self.problem(key, message);
                None
            }
        }
    }

    /// An inline values mapping (`set`, or `values` as a mapping).
    fn inline(&mut self, key: &str, value: &Value) -> Option<Map<String, Value>> {
        let Value::Object(values) = value else {
            let found = json_type(value);
            self.problem(
                key,
                format!("`{key}` must be a mapping of values, not {found}"),
            );
            return None;
        };
        if let Some(message) = dotted_key_problem(key, values) {
            self.problem(key, message);
        }
        Some(values.clone())
    }

    /// `values`: files, one file, or a mapping.
    fn values(&mut self) -> (Vec<String>, Option<Map<String, Value>>) {
        let Some(value) = self.judged("values").cloned() else {
            return (Vec::new(), None);
        };
        match value {
            Value::String(file) if !file.trim().is_empty() => (vec![file], None),
            Value::Array(items) => {
                let mut files = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    match item.as_str() {
                        Some(file) if !file.trim().is_empty() => files.push(file.to_owned()),
                        _ => self.problem(
                            "values",
                            format!(
                                "`values[{i}]` must be the path of a values file, not {}",
                                json_type(item)
                            ),
                        ),
                    }
                }
                (files, None)
            }
            Value::Object(_) => (Vec::new(), self.inline("values", &value)),
            other => {
                self.problem(
                    "values",
                    format!(
                        "`values` must be a list of values files or a mapping of values, not {}",
                        json_type(&other)
                    ),
                );
                (Vec::new(), None)
            }
        }
    }

    fn args(&mut self) -> Vec<String> {
        let Some(value) = self.judged("args").cloned() else {
            return Vec::new();
        };
        let Value::Array(items) = value else {
            let found = json_type(&value);
            self.problem(
                "args",
                format!("`args` must be a list of flags, not {found}"),
            );
            return Vec::new();
        };
        let mut args = Vec::new();
        for (i, item) in items.iter().enumerate() {
            if !self.rendered && is_template(item) {
                continue;
            }
            let Some(arg) = text(item) else {
                let found = json_type(item);
                self.problem("args", format!("`args[{i}]` must be a string, not {found}"));
                continue;
            };
            let output_flag = arg == "-o"
                || arg.starts_with("-o=")
                || (arg.starts_with("-o") && arg.len() > 2 && !arg.starts_with("--"))
                || arg == "--output"
                || arg.starts_with("--output=");
            if output_flag {
                self.problem(
                    "args",
                    format!("`args` must not set helm's output format (`{arg}`): the step reads its JSON"),
                );
            }
            args.push(arg);
        }
        args
    }
}

/// Reads a spec: the checked spec when everything could be judged and was right, and every
/// problem found. One set of checks serves load time (`rendered == false`) and run time.
fn read(spec: &Value, rendered: bool) -> (Option<Spec>, Vec<(String, String)>) {
    let Some(map) = spec.as_object() else {
        return (
            None,
            vec![(KIND.to_owned(), format!("`{KIND}` must be a mapping"))],
        );
    };
    let op = match op_key(map) {
        Ok(op) => op,
        Err(message) => return (None, vec![(KIND.to_owned(), message)]),
    };
    let mut r = SpecReader {
        map,
        rendered,
        problems: Vec::new(),
    };

    for key in map.keys() {
        let key = key.as_str();
        if key == op || COMMON.contains(&key) || allowed(op).contains(&key) {
            continue;
        }
        if OPS.contains(&key) {
            // Reported by `op_key`.
        } else if FIELDS.iter().any(|f| f.name == key) {
            r.problem(key, format!("`{key}` does not apply to `{op}`"));
        } else if rendered {
            // At load time the loader reports unknown fields, with a "did you mean"; a spec
            // that reaches the kind unchecked gets the list.
            let names: Vec<&str> = FIELDS.iter().map(|f| f.name).collect();
            r.problem(
                key,
                format!(
                    "unknown field `{key}`, expected one of `{}`",
                    names.join("`, `")
                ),
            );
        }
    }

    // The operation's own value: the release, or `true` for `list`.
    let mut complete = true;
    let release = if op == "list" {
        match r.judged("list") {
            Some(v) if boolean(v) == Some(true) => {}
            Some(_) => r.problem(
                "list",
                "`list` must be true (narrow it with `filter` and `namespace`)",
            ),
            None => complete = false,
        }
        String::new()
    } else {
        match r.judged(op).cloned() {
            Some(value) => match text(&value) {
                Some(name) => {
                    if let Some(message) = release_name_problem(&name) {
                        r.problem(op, format!("`{op}`: {message}"));
                    }
                    name
                }
                None => {
                    let found = json_type(&value);
                    r.problem(
                        op,
                        format!("`{op}` must be the release's name, not {found}"),
                    );
                    String::new()
                }
            },
            None => {
                if map.get(op).is_none_or(Value::is_null) {
                    r.problem(op, format!("`{op}` needs the release's name"));
                }
                complete = false;
                String::new()
            }
        }
    };

    let namespace = r.text("namespace");
    let kubeconfig = r.text("kubeconfig");
    let context = r.text("context");
    let helm = r.text("helm");
    let args = r.args();
    let grace = r.duration("grace").unwrap_or(DEFAULT_GRACE);

    let op = match op {
        "upgrade" => read_upgrade(&mut r, &mut complete),
        "rollback" => Op::Rollback {
            revision: r.uint("revision", 0).unwrap_or(0),
            wait: r.flag("wait"),
            wait_for_jobs: r.flag("wait_for_jobs"),
            timeout: r.duration("timeout"),
            cleanup_on_fail: r.flag("cleanup_on_fail"),
            history_max: r.uint("history_max", 0),
        },
        "uninstall" => Op::Uninstall {
            wait: r.flag("wait"),
            timeout: r.duration("timeout"),
            keep_history: r.flag("keep_history"),
            ignore_not_found: r.flag("ignore_not_found"),
            description: r.text("description"),
        },
        "status" => Op::Status {
            revision: r.uint("revision", 1),
        },
        "history" => Op::History {
            max: r.uint("max", 1),
        },
        "get_values" => Op::GetValues {
            all: r.flag("all"),
            revision: r.uint("revision", 1),
        },
        _ => Op::List {
            all: r.flag("all"),
            filter: r.text("filter"),
        },
    };
    let problems = r.problems;
    let spec = (complete && problems.is_empty()).then(|| Spec {
        op,
        release,
        namespace,
        kubeconfig,
        context,
        helm,
        args,
        grace,
    });
    (spec, problems)
}

fn read_upgrade(r: &mut SpecReader<'_>, complete: &mut bool) -> Op {
    let chart = r.text("chart");
    if chart.is_none() {
        if r.map.get("chart").is_none_or(Value::is_null) {
            r.problem(
                "upgrade",
                "`upgrade` needs `chart` (a chart directory or archive, `repo/name`, or an \
                 `oci://` reference)",
            );
        }
        *complete = false;
    }
    let (files, inline) = r.values();
    let set = r.judged("set").cloned().and_then(|v| r.inline("set", &v));
    let install = r.flag_or("install", true);
    let create_namespace = r.flag("create_namespace");
    if create_namespace && !install {
        r.problem(
            "create_namespace",
            "`create_namespace` needs `install` (only an install creates the namespace)",
        );
    }
    let bases: Vec<(&str, Base)> = [
        ("reset_values", Base::Reset),
        ("reuse_values", Base::Reuse),
        ("reset_then_reuse_values", Base::ResetThenReuse),
    ]
    .into_iter()
    .filter(|(key, _)| r.flag(key))
    .collect();
    let base = match bases.as_slice() {
        [] => Base::Default,
        [(_, base)] => *base,
        [(first, _), (second, _), ..] => {
            r.problem(
                second,
                format!("give one of `reset_values`, `reuse_values` and `reset_then_reuse_values`, not `{first}` and `{second}`"),
            );
            Base::Default
        }
    };
    Op::Upgrade(Box::new(Upgrade {
        chart: chart.unwrap_or_default(),
        version: r.text("version"),
        repo: r.text("repo"),
        files,
        inline,
        set,
        install,
        wait: r.flag("wait"),
        wait_for_jobs: r.flag("wait_for_jobs"),
        timeout: r.duration("timeout"),
        atomic: r.flag("atomic"),
        create_namespace,
        base,
        cleanup_on_fail: r.flag("cleanup_on_fail"),
        description: r.text("description"),
        history_max: r.uint("history_max", 0),
    }))
}

// ---------------------------------------------------------------------------------------------
// What the step prints about itself

fn field(spec: &Value, key: &str) -> Option<String> {
    spec.get(key)
        .and_then(text)
        .filter(|s| !s.trim().is_empty())
}

fn describe(spec: &Value) -> String {
    let Some(map) = spec.as_object() else {
        return KIND.to_owned();
    };
    let Ok(op) = op_key(map) else {
        return KIND.to_owned();
    };
    let namespace = field(spec, "namespace");
    let target = {
        let release = field(spec, op).unwrap_or_else(|| "?".into());
        match &namespace {
            Some(ns) => format!("{ns}/{release}"),
            None => release,
        }
    };
    match op {
        "upgrade" => {
            let install = map.get("install").and_then(boolean) != Some(false);
            let chart = field(spec, "chart").unwrap_or_else(|| "?".into());
            let mut text = format!(
                "upgrade{} {target} {chart}",
                if install { " --install" } else { "" }
            );
            if let Some(version) = field(spec, "version") {
                text = format!("{text} --version {version}");
            }
            text
        }
        "rollback" => match field(spec, "revision").filter(|r| r != "0") {
            Some(revision) => format!("rollback {target} to revision {revision}"),
            None => format!("rollback {target} to the previous revision"),
        },
        "uninstall" => format!("uninstall {target}"),
        "status" => format!("status {target}"),
        "history" => format!("history {target}"),
        "get_values" => format!("get values {target}"),
        _ => {
            let mut text = match &namespace {
                Some(ns) => format!("list in {ns}"),
                None => "list in all namespaces".to_owned(),
            };
            if let Some(filter) = field(spec, "filter") {
                text = format!("{text} matching {filter}");
            }
            text
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Command lines

/// helm's `--timeout`, in a form Go's `time.ParseDuration` reads.
fn go_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis().max(1))
    }
}

/// Which cluster helm talks to: a `--kubeconfig` flag or a `KUBECONFIG` for its environment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Cluster {
    flag: Option<PathBuf>,
    env: Option<OsString>,
}

/// `~/x` → `$HOME/x`.
fn expand(path: &str, home: Option<&OsStr>) -> PathBuf {
    match (path.strip_prefix("~/"), home) {
        (Some(rest), Some(home)) => Path::new(home).join(rest),
        _ => PathBuf::from(path),
    }
}

/// The helm binary and the cluster for a spec, from the spec and the environment `env`.
fn locate(spec: &Spec, env: impl Fn(&str) -> Option<OsString>) -> (OsString, Cluster) {
    let home = env("HOME");
    let set = |name: &str| env(name).filter(|v| !v.is_empty());
    let binary = match &spec.helm {
        Some(path) => expand(path, home.as_deref()).into_os_string(),
        None => set("RUNBOOK_HELM").unwrap_or_else(|| "helm".into()),
    };
    let cluster = match &spec.kubeconfig {
        Some(path) => Cluster {
            flag: Some(expand(path, home.as_deref())),
            env: None,
        },
        // helm reads `KUBECONFIG` itself, then `~/.kube/config`, then the service account.
        None => Cluster {
            flag: None,
            env: set("RUNBOOK_KUBECONFIG"),
        },
    };
    (binary, cluster)
}

/// The connection flags every command gets.
fn connection(spec: &Spec, cluster: &Cluster, all_namespaces: bool) -> Vec<OsString> {
    let mut args: Vec<OsString> = Vec::new();
    if let Some(ns) = &spec.namespace {
        args.extend(["--namespace".into(), ns.into()]);
    } else if all_namespaces {
        args.push("--all-namespaces".into());
    }
    if let Some(path) = &cluster.flag {
        args.extend(["--kubeconfig".into(), path.clone().into_os_string()]);
    }
    if let Some(context) = &spec.context {
        args.extend(["--kube-context".into(), context.into()]);
    }
    args
}

/// The command line of the spec's operation; `files` are the generated values files, in
/// order (`values` as a mapping, then `set`).
fn argv(spec: &Spec, cluster: &Cluster, files: &[PathBuf]) -> Vec<OsString> {
    let mut args: Vec<OsString> = Vec::new();
    let mut push = |items: &[&str]| args.extend(items.iter().map(OsString::from));
    let release = spec.release.as_str();
    let timeout = |t: &Option<Duration>| t.map(go_duration);
    match &spec.op {
        Op::Upgrade(u) => {
            push(&["upgrade", release, &u.chart]);
            if u.install {
                push(&["--install"]);
            }
            if let Some(version) = &u.version {
                push(&["--version", version]);
            }
            if let Some(repo) = &u.repo {
                push(&["--repo", repo]);
            }
            for file in &u.files {
                push(&["--values", file]);
            }
            // `--wait-for-jobs` does nothing without `--wait`.
            if u.wait || u.wait_for_jobs {
                push(&["--wait"]);
            }
            if u.wait_for_jobs {
                push(&["--wait-for-jobs"]);
            }
            if let Some(t) = timeout(&u.timeout) {
                push(&["--timeout", &t]);
            }
            if u.atomic {
                push(&["--atomic"]);
            }
            if u.create_namespace {
                push(&["--create-namespace"]);
            }
            match u.base {
                Base::Default => {}
                Base::Reset => push(&["--reset-values"]),
                Base::Reuse => push(&["--reuse-values"]),
                Base::ResetThenReuse => push(&["--reset-then-reuse-values"]),
            }
            if u.cleanup_on_fail {
                push(&["--cleanup-on-fail"]);
            }
            if let Some(description) = &u.description {
                push(&["--description", description]);
            }
            if let Some(n) = u.history_max {
                push(&["--history-max", &n.to_string()]);
            }
            for file in files {
                args.extend(["--values".into(), file.clone().into_os_string()]);
            }
        }
        Op::Rollback {
            revision,
            wait,
            wait_for_jobs,
            timeout: t,
            cleanup_on_fail,
            history_max,
        } => {
            push(&["rollback", release]);
            // No revision means the previous one (so does 0).
            if *revision > 0 {
                push(&[&revision.to_string()]);
            }
            if *wait || *wait_for_jobs {
                push(&["--wait"]);
            }
            if *wait_for_jobs {
                push(&["--wait-for-jobs"]);
            }
            if let Some(t) = timeout(t) {
                push(&["--timeout", &t]);
            }
            if *cleanup_on_fail {
                push(&["--cleanup-on-fail"]);
            }
            if let Some(n) = history_max {
                push(&["--history-max", &n.to_string()]);
            }
        }
        Op::Uninstall {
            wait,
            timeout: t,
            keep_history,
            ignore_not_found,
            description,
        } => {
            push(&["uninstall", release]);
            if *wait {
                push(&["--wait"]);
            }
            if let Some(t) = timeout(t) {
                push(&["--timeout", &t]);
            }
            if *keep_history {
                push(&["--keep-history"]);
            }
            if *ignore_not_found {
                push(&["--ignore-not-found"]);
            }
            if let Some(description) = description {
                push(&["--description", description]);
            }
        }
        Op::Status { revision } => {
            push(&["status", release, "--output", "json"]);
            if let Some(r) = revision {
                push(&["--revision", &r.to_string()]);
            }
        }
        Op::History { max } => {
            push(&["history", release, "--output", "json"]);
            if let Some(n) = max {
                push(&["--max", &n.to_string()]);
            }
        }
        Op::GetValues { all, revision } => {
            push(&["get", "values", release, "--output", "json"]);
            if *all {
                push(&["--all"]);
            }
            if let Some(r) = revision {
                push(&["--revision", &r.to_string()]);
            }
        }
        Op::List { all, filter } => {
            push(&["list", "--output", "json"]);
            if *all {
                push(&["--all"]);
            }
            if let Some(filter) = filter {
                push(&["--filter", filter]);
            }
        }
    }
    args.extend(connection(
        spec,
        cluster,
        matches!(spec.op, Op::List { .. }),
    ));
    args.extend(spec.args.iter().map(OsString::from));
    args
}

/// The reads that describe a release after a change: its status, then the chart of that
/// revision. The spec's `args` are left out: they are flags of the operation.
fn status_argv(spec: &Spec, cluster: &Cluster) -> Vec<OsString> {
    let mut args: Vec<OsString> = ["status", &spec.release, "--output", "json"]
        .iter()
        .map(OsString::from)
        .collect();
    args.extend(connection(spec, cluster, false));
    args
}

fn metadata_argv(spec: &Spec, cluster: &Cluster, revision: u64) -> Vec<OsString> {
    let mut args: Vec<OsString> = [
        "get",
        "metadata",
        &spec.release,
        "--output",
        "json",
        "--revision",
        &revision.to_string(),
    ]
    .iter()
    .map(OsString::from)
    .collect();
    args.extend(connection(spec, cluster, false));
    args
}

// ---------------------------------------------------------------------------------------------
// Inline values

/// Writes the inline values, in order, as JSON files in a new owner-only directory; the
/// directory and its files go when the returned guard is dropped.
fn write_values(
    maps: &[&Map<String, Value>],
) -> std::io::Result<Option<(tempfile::TempDir, Vec<PathBuf>)>> {
    if maps.is_empty() {
        return Ok(None);
    }
    let dir = tempfile::Builder::new()
        .prefix("runbook-helm-")
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir()?;
    let mut files = Vec::new();
    for (i, values) in maps.iter().enumerate() {
        let path = dir.path().join(format!("values-{i}.json"));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        serde_json::to_writer(&mut file, values)?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        files.push(path);
    }
    Ok(Some((dir, files)))
}

// ---------------------------------------------------------------------------------------------
// Reading helm's answers

/// The part of a stream kept in an output: its last [`TAIL_BYTES`], on a character boundary.
fn tail(capture: &Capture) -> String {
    let text = String::from_utf8_lossy(&capture.bytes);
    if text.len() <= TAIL_BYTES {
        return text.into_owned();
    }
    let mut start = text.len() - TAIL_BYTES;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &text[start..])
}

/// helm's error from its stderr: the `Error: …` it prints last, on one line (helm's multi-error
/// lists span lines), else the last line.
fn helm_error(stderr: &str) -> Option<String> {
    let lines: Vec<&str> = stderr.lines().collect();
    let start = lines.iter().rposition(|l| l.starts_with("Error: "));
    let text = match start {
        Some(i) => {
            let joined = lines[i..].join(" ");
            joined["Error: ".len()..].to_owned()
        }
        None => (*lines.iter().rfind(|l| !l.trim().is_empty())?).to_owned(),
    };
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    (!one_line.is_empty()).then_some(one_line)
}

/// Whether helm said the release does not exist.
fn not_found(stderr: &str) -> bool {
    stderr.contains("release: not found")
}

/// A release as `status` reports it, from `helm status -o json` and `helm get metadata -o
/// json` of the same revision. The release's values (`config`), manifest and hooks are left
/// out: they may hold secrets and are not a status.
fn release_view(status: &Value, metadata: &Value) -> Value {
    let info = status.get("info").cloned().unwrap_or(Value::Null);
    let info_field = |key: &str| info.get(key).cloned().unwrap_or(Value::Null);
    let meta = |key: &str| metadata.get(key).cloned().unwrap_or(Value::Null);
    let chart = match (metadata.get("chart"), metadata.get("version")) {
        (Some(Value::String(name)), Some(Value::String(version))) => {
            json!(format!("{name}-{version}"))
        }
        _ => Value::Null,
    };
    json!({
        "name": status.get("name").cloned().unwrap_or(Value::Null),
        "namespace": status.get("namespace").cloned().unwrap_or(Value::Null),
        "revision": status.get("version").cloned().unwrap_or(Value::Null),
        "status": info_field("status"),
        "chart": chart,
        "chart_name": meta("chart"),
        "chart_version": meta("version"),
        "app_version": meta("appVersion"),
        "updated": info_field("last_deployed"),
        "first_deployed": info_field("first_deployed"),
        "description": info_field("description"),
        "notes": info_field("notes"),
        "info": info,
    })
}

/// `helm history -o json`, with the newest and the deployed revision.
fn history_view(history: &Value) -> Result<Value, String> {
    let Value::Array(revisions) = history else {
        return Err(format!(
            "expected a list of revisions, got {}",
            json_type(history)
        ));
    };
    let revision = |r: &Value| r.get("revision").and_then(Value::as_u64);
    let latest = revisions.iter().filter_map(revision).max();
    let deployed = revisions
        .iter()
        .filter(|r| r.get("status").and_then(Value::as_str) == Some("deployed"))
        .filter_map(revision)
        .max();
    Ok(json!({ "revisions": revisions, "latest": latest, "deployed": deployed }))
}

/// `helm get values -o json`: the map; helm prints `null` when no values were given.
fn values_view(values: Value) -> Result<Value, String> {
    match values {
        Value::Null => Ok(json!({})),
        Value::Object(_) => Ok(values),
        other => Err(format!(
            "expected a mapping of values, got {}",
            json_type(&other)
        )),
    }
}

/// `helm list -o json`, with revisions as numbers (helm prints them as strings).
fn list_view(list: Value) -> Result<Value, String> {
    let Value::Array(mut releases) = list else {
        return Err(format!(
            "expected a list of releases, got {}",
            json_type(&list)
        ));
    };
    for release in &mut releases {
        if let Some(slot) = release.get_mut("revision") {
            if let Some(n) = slot.as_str().and_then(|s| s.parse::<u64>().ok()) {
                *slot = json!(n);
            }
        }
    }
    Ok(json!({ "releases": releases }))
}

// ---------------------------------------------------------------------------------------------
// Running helm

/// One helm process that ran to its end.
struct Ran {
    exit_code: Option<i32>,
    signal: Option<String>,
    stdout: Capture,
    stderr: Capture,
    took: Duration,
}

impl Ran {
    fn ok(&self) -> bool {
        self.exit_code == Some(0)
    }

    fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout.bytes).into_owned()
    }

    fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr.bytes).into_owned()
    }

    /// `{exit_code, signal?, stdout, stderr, duration_ms}`, the streams cut to their tails.
    fn streams(&self) -> Map<String, Value> {
        let mut out = Map::new();
        out.insert("exit_code".into(), json!(self.exit_code));
        if let Some(signal) = &self.signal {
            out.insert("signal".into(), json!(signal));
        }
        out.insert("stdout".into(), json!(tail(&self.stdout)));
        out.insert("stderr".into(), json!(tail(&self.stderr)));
        out.insert("duration_ms".into(), duration_ms(self.took));
        out
    }

    /// Why it failed, in a sentence.
    fn failure(&self, spec: &Spec, command: &str) -> String {
        let what = match &spec.op {
            Op::List { .. } => format!("helm {command}"),
            _ => format!("helm {command} {}", spec.target()),
        };
        match (&self.exit_code, &self.signal) {
            (_, Some(signal)) => format!("{what}: helm was killed by signal {signal}"),
            (code, None) => match helm_error(&self.stderr_text()) {
                Some(error) => format!("{what} failed: {}", excerpt(&error)),
                None => format!(
                    "{what} failed: helm exited with code {}",
                    code.map_or_else(|| "?".to_owned(), |c| c.to_string())
                ),
            },
        }
    }
}

/// How running helm ended.
enum Outcome {
    Ran(Ran),
    /// The engine stopped the step; helm was stopped.
    Stopped {
        ran: Ran,
        reason: CancelReason,
        how: String,
    },
}

/// Where and how helm runs for one step.
struct Helmsman<'a> {
    binary: OsString,
    cluster: Cluster,
    grace: Duration,
    ctx: &'a StepContext,
}

impl Helmsman<'_> {
    /// Runs helm with `args` to its end, or until the engine cancels the step.
    async fn exec(&self, args: &[OsString]) -> Result<Outcome, StepError> {
        let mut cmd = Command::new(&self.binary);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(kubeconfig) = &self.cluster.env {
            cmd.env("KUBECONFIG", kubeconfig);
        }
        // Its own group (a Ctrl-C at the terminal reaches only runbook, which then stops helm
        // and any plugin or post-renderer it started deliberately), and the attempt it
        // belongs to, so that it dies with this executor (see `orphans`).
        let attempt = Attempt::of(self.ctx);
        orphans::mark(&mut cmd, &attempt);
        let started = Instant::now();
        let mut child = cmd.spawn().map_err(|e| StepError::Failed {
            message: format!(
                "cannot run helm `{}`: {e}; install helm, or name it with the step's `helm` \
                 or $RUNBOOK_HELM",
                self.binary.to_string_lossy()
            ),
            output: None,
        })?;
        let pid = child.id().expect("a child that was just spawned has a pid");
        // The child leads its own group, so the group id is its pid.
        let group = Pid::from_raw(i32::try_from(pid).expect("pids fit in an i32"));
        let tracked = orphans::track(pid, &attempt, self.grace);
        tracing::debug!(pid, ?args, "helm started");
        let readers = [
            Reader::start(
                child.stdout.take(),
                CAPTURE_LIMIT,
                tap(self.ctx, OutputStream::Stdout),
            ),
            Reader::start(
                child.stderr.take(),
                CAPTURE_LIMIT,
                tap(self.ctx, OutputStream::Stderr),
            ),
        ];
        let ended = tokio::select! {
            biased;
            status = child.wait() => Ok(status),
            reason = self.ctx.cancel.cancelled() => Err(reason),
        };
        match ended {
            Ok(Ok(status)) => {
                // Helm was waited for: what it left running on purpose is its own business.
                tracked.reaped();
                let [stdout, stderr] = drain(readers).await;
                Ok(Outcome::Ran(Ran {
                    exit_code: status.code(),
                    signal: status.signal().map(signal_name),
                    stdout,
                    stderr,
                    took: started.elapsed(),
                }))
            }
            Ok(Err(e)) => {
                stop(&mut child, group, Duration::ZERO).await;
                tracked.reaped();
                drain(readers).await;
                Err(StepError::Failed {
                    message: format!("failed to wait for helm: {e}"),
                    output: None,
                })
            }
            Err(reason) => {
                tracing::info!(%reason, "stopping helm");
                let stopped = stop(&mut child, group, self.grace).await;
                tracked.reaped();
                let [stdout, stderr] = drain(readers).await;
                Ok(Outcome::Stopped {
                    ran: Ran {
                        exit_code: stopped.status.and_then(|s| s.code()),
                        signal: Some(stopped.signal.as_str().to_owned()),
                        stdout,
                        stderr,
                        took: started.elapsed(),
                    },
                    reason,
                    how: stopped.how,
                })
            }
        }
    }

    /// Runs helm; a stop by the engine becomes the step's [`StepError::Cancelled`], with
    /// `output` (or helm's streams) attached.
    async fn run(
        &self,
        args: &[OsString],
        shown: &str,
        output: Option<&Map<String, Value>>,
    ) -> Result<Ran, StepError> {
        if let Some(reason) = self.ctx.cancel.reason() {
            return Err(StepError::Cancelled {
                message: format!("{reason}; {shown} was not started"),
                reason,
                output: output.cloned().map(Value::Object),
            });
        }
        match self.exec(args).await? {
            Outcome::Ran(ran) => Ok(ran),
            Outcome::Stopped { ran, reason, how } => Err(StepError::Cancelled {
                message: format!("{reason}; {shown} {how}"),
                reason,
                output: Some(Value::Object(
                    output.cloned().unwrap_or_else(|| ran.streams()),
                )),
            }),
        }
    }

    /// Parses what a read printed, or says why it could not.
    fn parsed(ran: &Ran, what: &str) -> Result<Value, StepError> {
        serde_json::from_str(ran.stdout_text().trim()).map_err(|e| StepError::Failed {
            message: format!(
                "{what}: helm's output is not JSON ({e}): {}",
                excerpt(ran.stdout_text().trim())
            ),
            output: Some(Value::Object(ran.streams())),
        })
    }

    /// The release as `status` reports it. `context` is the output of the operation before,
    /// attached if the step is cancelled meanwhile (the only error).
    async fn release(
        &self,
        spec: &Spec,
        context: &Map<String, Value>,
    ) -> Result<Release, StepError> {
        let shown = format!("helm status {}", spec.target());
        let ran = self
            .run(&status_argv(spec, &self.cluster), &shown, Some(context))
            .await?;
        if !ran.ok() {
            if not_found(&ran.stderr_text()) {
                return Ok(Release::Missing);
            }
            return Ok(Release::Unreadable(ran.failure(spec, "status")));
        }
        let status = match Self::parsed(&ran, &shown) {
            Ok(status) => status,
            Err(e) => return Ok(Release::Unreadable(e.to_string())),
        };
        let Some(revision) = status.get("version").and_then(Value::as_u64) else {
            return Ok(Release::Unreadable(format!(
                "{shown}: helm's answer has no revision"
            )));
        };
        let shown = format!("helm get metadata {}", spec.target());
        let ran = self
            .run(
                &metadata_argv(spec, &self.cluster, revision),
                &shown,
                Some(context),
            )
            .await?;
        if !ran.ok() {
            return Ok(Release::Unreadable(ran.failure(spec, "get metadata")));
        }
        Ok(match Self::parsed(&ran, &shown) {
            Ok(metadata) => Release::Found(release_view(&status, &metadata)),
            Err(e) => Release::Unreadable(e.to_string()),
        })
    }
}

/// A release read after a change.
enum Release {
    Found(Value),
    /// helm says there is none.
    Missing,
    /// It could not be read; why.
    Unreadable(String),
}

async fn run_attempt(spec: Value, ctx: &StepContext) -> Result<Value, StepError> {
    let shown = format!("helm {}", describe(&spec));
    let spec = Spec::parse(&spec)?;
    if let Some(reason) = ctx.cancel.reason() {
        return Err(StepError::Cancelled {
            message: format!("{reason}; {shown} was not started"),
            reason,
            output: None,
        });
    }
    let (binary, cluster) = locate(&spec, |name| std::env::var_os(name));
    let helm = Helmsman {
        binary,
        cluster,
        grace: spec.grace,
        ctx,
    };

    // Inline values go to files that live until this function returns.
    let inline: Vec<&Map<String, Value>> = match &spec.op {
        Op::Upgrade(u) => u.inline.iter().chain(u.set.iter()).collect(),
        _ => Vec::new(),
    };
    let written = write_values(&inline).map_err(|e| StepError::Failed {
        message: format!("failed to write the inline values for helm: {e}"),
        output: None,
    })?;
    let files = written
        .as_ref()
        .map(|(_, files)| files.as_slice())
        .unwrap_or_default();

    let command = spec.op.command();
    let ran = helm
        .run(&argv(&spec, &helm.cluster, files), &shown, None)
        .await?;
    if spec.op.mutates() {
        return after_change(&spec, &helm, &ran).await;
    }
    if !ran.ok() {
        let mut output = ran.streams();
        if not_found(&ran.stderr_text()) {
            output.insert("not_found".into(), json!(true));
        }
        return Err(StepError::Failed {
            message: ran.failure(&spec, command),
            output: Some(Value::Object(output)),
        });
    }
    let answer = Helmsman::parsed(&ran, &shown)?;
    let view = match &spec.op {
        Op::Status { .. } => {
            let revision = answer.get("version").and_then(Value::as_u64).unwrap_or(0);
            let shown = format!("helm get metadata {}", spec.target());
            let meta = helm
                .run(&metadata_argv(&spec, &helm.cluster, revision), &shown, None)
                .await?;
            if !meta.ok() {
                return Err(StepError::Failed {
                    message: meta.failure(&spec, "get metadata"),
                    output: Some(Value::Object(meta.streams())),
                });
            }
            Ok(release_view(&answer, &Helmsman::parsed(&meta, &shown)?))
        }
        Op::History { .. } => history_view(&answer),
        Op::GetValues { .. } => values_view(answer),
        _ => list_view(answer),
    };
    view.map_err(|e| StepError::Failed {
        message: format!("{shown}: unexpected answer from helm: {e}"),
        output: Some(Value::Object(ran.streams())),
    })
}

/// After `upgrade`, `rollback` or `uninstall`: the release as it is now, with the command's
/// streams; a failure if the command failed.
async fn after_change(spec: &Spec, helm: &Helmsman<'_>, ran: &Ran) -> Result<Value, StepError> {
    let streams = ran.streams();
    let mut output = Map::new();
    match helm.release(spec, &streams).await? {
        Release::Found(release) => {
            output.insert("release".into(), release);
        }
        Release::Missing => {
            output.insert("release".into(), Value::Null);
        }
        Release::Unreadable(message) => {
            tracing::warn!(%message, "failed to read the release after the change");
            output.insert("release".into(), Value::Null);
            output.insert("release_error".into(), json!(message));
        }
    }
    output.extend(streams);
    if ran.ok() {
        Ok(Value::Object(output))
    } else {
        Err(StepError::Failed {
            message: ran.failure(spec, spec.op.command()),
            output: Some(Value::Object(output)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{ctx, failed, first_poll, spec_message};
    use crate::{Cancel, CancelSource};

    fn problems(spec: &Value) -> Vec<(String, String)> {
        Helm.validate(spec)
    }

    fn p(field: &str, message: &str) -> (String, String) {
        (field.to_owned(), message.to_owned())
    }

    fn parse(spec: &Value) -> Spec {
        Spec::parse(spec).unwrap_or_else(|e| panic!("{spec}: {e}"))
    }

    fn words(args: &[OsString]) -> Vec<String> {
        args.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    // -- Captured from helm v3.22.0 against the kubernetes testbed (manifest and hooks cut).

    /// `helm status ob -n vault-system -o json --revision 3` after an upgrade whose hook failed.
    const STATUS_FAILED: &str = r#"{"name":"ob","info":{"first_deployed":"2026-12-01T06:16:58.839656466Z","last_deployed":"2026-12-01T06:17:15.314031652Z","deleted":"","description":"Upgrade \"ob\" failed: post-upgrade hooks failed: 1 error occurred:\n\t* job ob-migrations failed: BackoffLimitExceeded\n\n","status":"failed","notes":"OpenBao 2.8.0 in vault-system: 4 replica(s) of StatefulSet ob.\n"},"config":{"image":{"tag":"2.8.0"},"migrations":{"fail":true},"replicaCount":4},"manifest":"---\n# Source: openbao/templates/service.yaml\n...","hooks":[{"name":"ob-initialize-cluster","kind":"Job","path":"openbao/templates/job-initialize.yaml","manifest":"...","events":["post-install"],"last_run":{"started_at":"","completed_at":"","phase":""},"delete_policies":["before-hook-creation"]}],"version":3,"namespace":"vault-system"}"#;

    /// `helm get metadata ob -n vault-system -o json --revision 3`.
    const METADATA: &str = r#"{"name":"ob","chart":"openbao","version":"0.22.1","appVersion":"2.6.2","namespace":"vault-system","revision":3,"status":"failed","deployedAt":"2026-12-01T06:17:15Z"}"#;

    /// `helm history ob -n vault-system -o json` after a failed upgrade and a rollback.
    const HISTORY: &str = r#"[{"revision":1,"updated":"2026-12-01T06:16:58.839656466Z","status":"superseded","chart":"openbao-0.22.1","app_version":"2.6.2","description":"Install complete"},{"revision":2,"updated":"2026-12-01T06:17:07.139511845Z","status":"superseded","chart":"openbao-0.22.1","app_version":"2.6.2","description":"Upgrade complete"},{"revision":3,"updated":"2026-12-01T06:17:15.314031652Z","status":"failed","chart":"openbao-0.22.1","app_version":"2.6.2","description":"Upgrade \"ob\" failed: post-upgrade hooks failed: 1 error occurred:\n\t* job ob-migrations failed: BackoffLimitExceeded\n\n"},{"revision":4,"updated":"2026-12-01T06:17:23.319727783Z","status":"deployed","chart":"openbao-0.22.1","app_version":"2.6.2","description":"Rollback to 2"}]"#;

    /// `helm list -n vault-system -o json`: revisions are strings there.
    const LIST: &str = r#"[{"name":"ob","namespace":"vault-system","revision":"4","updated":"2026-12-01 06:17:23.319727783 +0000 UTC","status":"deployed","chart":"openbao-0.22.1","app_version":"2.6.2"}]"#;

    /// helm's stderr for the upgrade whose post-upgrade Job failed, after a warning.
    const UPGRADE_FAILED: &str = "WARNING: Kubernetes configuration file is group-readable. \
        This is insecure. Location: /tmp/k/kubeconfig\nError: UPGRADE FAILED: post-upgrade hooks \
        failed: 1 error occurred:\n\t* job ob-migrations failed: BackoffLimitExceeded\n\n";

    #[test]
    fn every_field_is_listed_once_and_every_operation_is_a_field() {
        let mut names: Vec<&str> = FIELDS.iter().map(|f| f.name).collect();
        let count = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), count);
        for op in OPS {
            assert!(names.contains(op), "{op}");
            for field in allowed(op) {
                assert!(names.contains(field), "{op}: {field}");
            }
        }
        for field in COMMON {
            assert!(names.contains(field), "{field}");
        }
    }

    #[test]
    fn a_spec_names_exactly_one_operation() {
        assert_eq!(
            problems(&json!({"namespace": "x"})),
            [p(
                "helm",
                "`helm` needs one operation: one of `upgrade`, `rollback`, `uninstall`, \
                 `status`, `history`, `get_values`, `list`"
            )]
        );
        assert_eq!(
            problems(&json!({"status": "ob", "history": "ob"})),
            [p(
                "helm",
                "`helm` takes exactly one operation, not `status` and `history`"
            )]
        );
        assert_eq!(
            problems(&json!({"list": false})),
            [p(
                "list",
                "`list` must be true (narrow it with `filter` and `namespace`)"
            )]
        );
        assert_eq!(problems(&json!({"list": true, "filter": "^openbao"})), []);
        assert_eq!(
            problems(&json!(["upgrade"])),
            [p("helm", "`helm` must be a mapping")]
        );
    }

    #[test]
    fn release_names_are_checked_as_helm_checks_them() {
        for good in ["openbao-server", "a", "nats.v2", "cassandra-0"] {
            assert_eq!(problems(&json!({"status": good})), [], "{good}");
        }
        assert_eq!(
            problems(&json!({"status": "OpenBao"})),
            [p(
                "status",
                "`status`: release name `OpenBao` is not valid: use lowercase letters, digits, \
                 `-` and `.`, starting and ending with a letter or digit"
            )]
        );
        for bad in ["-x", "x-", "a..b", "a_b", "a b"] {
            assert_eq!(problems(&json!({"history": bad})).len(), 1, "{bad}");
        }
        assert_eq!(
            problems(&json!({"rollback": "x".repeat(54)})),
            [p(
                "rollback",
                &format!(
                    "`rollback`: release name `{}` is longer than 53 characters",
                    "x".repeat(54)
                )
            )]
        );
        assert_eq!(
            problems(&json!({"uninstall": null})),
            [p("uninstall", "`uninstall` needs the release's name")]
        );
        assert_eq!(
            problems(&json!({"get_values": ["ob"]})),
            [p(
                "get_values",
                "`get_values` must be the release's name, not a list"
            )]
        );
    }

    #[test]
    fn an_upgrade_needs_a_chart_and_refuses_what_helm_would_misread() {
        assert_eq!(
            problems(&json!({"upgrade": "ob"})),
            [p(
                "upgrade",
                "`upgrade` needs `chart` (a chart directory or archive, `repo/name`, or an \
                 `oci://` reference)"
            )]
        );
        // A `--set`-style path would be one literal key to helm.
        assert_eq!(
            problems(&json!({"upgrade": "ob", "chart": "./c",
                             "set": {"image.tag": "2.7.2", "replicaCount": 3}})),
            [p(
                "set",
                "`set` takes nested mappings, not dotted paths: write `image: { tag: … }` for \
                 `image.tag`"
            )]
        );
        // Deeper down, dots are ordinary key characters (annotations, labels).
        assert_eq!(
            problems(&json!({"upgrade": "ob", "chart": "./c",
                             "values": {"podAnnotations": {"prometheus.io/scrape": "true"}}})),
            []
        );
        assert_eq!(
            problems(&json!({"upgrade": "ob", "chart": "./c", "values": [1]})),
            [p(
                "values",
                "`values[0]` must be the path of a values file, not a number"
            )]
        );
        assert_eq!(
            problems(&json!({"upgrade": "ob", "chart": "./c", "values": true})),
            [p(
                "values",
                "`values` must be a list of values files or a mapping of values, not a bool"
            )]
        );
        assert_eq!(
            problems(
                &json!({"upgrade": "ob", "chart": "./c", "reset_values": true,
                             "reuse_values": true})
            ),
            [p(
                "reuse_values",
                "give one of `reset_values`, `reuse_values` and `reset_then_reuse_values`, not \
                 `reset_values` and `reuse_values`"
            )]
        );
        assert_eq!(
            problems(&json!({"upgrade": "ob", "chart": "./c", "install": false,
                             "create_namespace": true})),
            [p(
                "create_namespace",
                "`create_namespace` needs `install` (only an install creates the namespace)"
            )]
        );
        assert_eq!(
            problems(&json!({"upgrade": "ob", "chart": "./c",
                             "args": ["--plain-http", "-o", "table"]})),
            [p(
                "args",
                "`args` must not set helm's output format (`-o`): the step reads its JSON"
            )]
        );
        assert_eq!(
            problems(&json!({"upgrade": "ob", "chart": "./c", "args": ["--output=yaml"]})).len(),
            1
        );
        assert_eq!(
            problems(&json!({"upgrade": "ob", "chart": "./c", "timeout": "soon",
                             "history_max": -1})),
            [
                p(
                    "timeout",
                    "`timeout`: invalid duration `soon`: expected number at 0"
                ),
                p(
                    "history_max",
                    "`history_max` must be a whole number, 0 or more"
                ),
            ]
        );
    }

    #[test]
    fn fields_of_other_operations_are_reported() {
        assert_eq!(
            problems(&json!({"status": "ob", "chart": "./c", "wait": true})),
            [
                p("chart", "`chart` does not apply to `status`"),
                p("wait", "`wait` does not apply to `status`"),
            ]
        );
        assert_eq!(
            problems(&json!({"rollback": "ob", "set": {"a": 1}})),
            [p("set", "`set` does not apply to `rollback`")]
        );
        assert_eq!(
            problems(&json!({"history": "ob", "max": 0})),
            [p("max", "`max` must be a whole number, 1 or more")]
        );
        // Unknown fields are the loader's to report, with a "did you mean".
        assert_eq!(problems(&json!({"status": "ob", "nmespace": "x"})), []);
    }

    #[test]
    fn templates_are_not_judged_before_rendering() {
        assert_eq!(
            problems(&json!({
                "upgrade": "{{params.release}}", "chart": "{{params.chart}}",
                "namespace": "{{params.namespace}}", "values": "{{steps.backup.output}}",
                "set": "{{steps.saved.output}}", "wait": "{{params.wait}}",
                "timeout": "{{params.timeout}}", "args": ["{{params.flag}}"],
            })),
            []
        );
        assert_eq!(
            problems(&json!({"rollback": "ob", "revision": "{{steps.before.output.revision}}"})),
            []
        );
        // Rendered, the same spec is judged.
        let message = spec_message(
            Spec::parse(&json!({"rollback": "ob", "revision": "two"})),
            "helm",
        );
        assert_eq!(message, "`revision` must be a whole number, 0 or more");
    }

    #[test]
    fn parse_errors_are_spec_errors() {
        let message = |spec: Value| spec_message(Spec::parse(&spec), "helm");
        assert!(
            message(json!({"status": "ob", "nmespace": "x"}))
                .starts_with("unknown field `nmespace`, expected one of `upgrade`, `rollback`"),
        );
        assert_eq!(
            message(json!({"upgrade": "ob", "chart": "./c", "wait": "yes"})),
            "`wait` must be true or false"
        );
        assert_eq!(
            message(json!({"upgrade": "ob", "chart": "", "namespace": ""})),
            "`namespace` must not be empty"
        );
    }

    #[test]
    fn parse_fills_helms_defaults() {
        let spec = parse(&json!({"upgrade": "ob", "chart": "./c"}));
        let Op::Upgrade(u) = &spec.op else {
            panic!("{spec:?}")
        };
        assert!(u.install);
        assert!(!u.wait && !u.wait_for_jobs && !u.atomic);
        assert_eq!(u.base, Base::Default);
        assert_eq!(spec.grace, DEFAULT_GRACE);
        assert_eq!(spec.namespace, None);
        // Rendered templates give numbers and booleans as text or as values.
        let spec = parse(&json!({"rollback": "ob", "revision": "2", "wait": "true"}));
        assert_eq!(
            spec.op,
            Op::Rollback {
                revision: 2,
                wait: true,
                wait_for_jobs: false,
                timeout: None,
                cleanup_on_fail: false,
                history_max: None,
            }
        );
    }

    #[test]
    fn command_lines_per_operation() {
        let cluster = Cluster {
            flag: Some("/k/config".into()),
            env: None,
        };
        let line = |spec: Value, files: &[PathBuf]| words(&argv(&parse(&spec), &cluster, files));
        assert_eq!(
            line(
                json!({"upgrade": "openbao-server", "chart": "oci://r.example/helm-openbao",
                       "version": "0.22.1", "namespace": "vault-system", "context": "prod",
                       "values": ["base.yaml", "site.yaml"], "set": {"a": 1},
                       "wait_for_jobs": true, "timeout": "15m", "create_namespace": true,
                       "reuse_values": true, "history_max": 5, "args": ["--plain-http"]}),
                &["/tmp/d/values-0.json".into()]
            ),
            [
                "upgrade",
                "openbao-server",
                "oci://r.example/helm-openbao",
                "--install",
                "--version",
                "0.22.1",
                "--values",
                "base.yaml",
                "--values",
                "site.yaml",
                "--wait",
                "--wait-for-jobs",
                "--timeout",
                "900s",
                "--create-namespace",
                "--reuse-values",
                "--history-max",
                "5",
                "--values",
                "/tmp/d/values-0.json",
                "--namespace",
                "vault-system",
                "--kubeconfig",
                "/k/config",
                "--kube-context",
                "prod",
                "--plain-http",
            ]
        );
        assert_eq!(
            line(
                json!({"upgrade": "ob", "chart": "./c", "install": false, "atomic": true,
                       "timeout": 1.5, "repo": "https://charts.example"}),
                &[]
            ),
            [
                "upgrade",
                "ob",
                "./c",
                "--repo",
                "https://charts.example",
                "--timeout",
                "1500ms",
                "--atomic",
                "--kubeconfig",
                "/k/config",
            ]
        );
        assert_eq!(
            line(json!({"rollback": "ob", "revision": 0, "wait": true}), &[]),
            ["rollback", "ob", "--wait", "--kubeconfig", "/k/config"]
        );
        assert_eq!(
            line(
                json!({"rollback": "ob", "revision": 2, "timeout": "2m"}),
                &[]
            ),
            [
                "rollback",
                "ob",
                "2",
                "--timeout",
                "120s",
                "--kubeconfig",
                "/k/config"
            ]
        );
        assert_eq!(
            line(
                json!({"uninstall": "ob", "namespace": "n", "wait": true, "keep_history": true,
                       "ignore_not_found": true}),
                &[]
            ),
            [
                "uninstall",
                "ob",
                "--wait",
                "--keep-history",
                "--ignore-not-found",
                "--namespace",
                "n",
                "--kubeconfig",
                "/k/config"
            ]
        );
        assert_eq!(
            line(json!({"status": "ob", "revision": 3}), &[]),
            [
                "status",
                "ob",
                "--output",
                "json",
                "--revision",
                "3",
                "--kubeconfig",
                "/k/config"
            ]
        );
        assert_eq!(
            line(json!({"get_values": "ob", "all": true}), &[])[..6],
            ["get", "values", "ob", "--output", "json", "--all"]
        );
        assert_eq!(
            line(json!({"history": "ob", "max": 5}), &[])[..6],
            ["history", "ob", "--output", "json", "--max", "5"]
        );
        // Without a namespace a list covers every namespace, as the kube kind's does.
        assert_eq!(
            line(json!({"list": true, "filter": "^nats$"}), &[]),
            [
                "list",
                "--output",
                "json",
                "--filter",
                "^nats$",
                "--all-namespaces",
                "--kubeconfig",
                "/k/config"
            ]
        );
        assert_eq!(
            line(json!({"list": true, "namespace": "nats-system"}), &[])[3..5],
            ["--namespace", "nats-system"]
        );
    }

    #[test]
    fn the_binary_and_the_cluster_come_from_the_spec_then_the_environment() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| OsString::from(v))
            }
        };
        let bare = parse(&json!({"status": "ob"}));
        assert_eq!(
            locate(&bare, env(&[])),
            (OsString::from("helm"), Cluster::default())
        );
        assert_eq!(
            locate(
                &bare,
                env(&[
                    ("RUNBOOK_HELM", "/opt/helm"),
                    ("RUNBOOK_KUBECONFIG", "/a:/b"),
                    ("KUBECONFIG", "/c")
                ])
            ),
            (
                OsString::from("/opt/helm"),
                Cluster {
                    flag: None,
                    env: Some("/a:/b".into())
                }
            )
        );
        // An empty variable counts as unset; helm then reads KUBECONFIG itself.
        assert_eq!(
            locate(
                &bare,
                env(&[("RUNBOOK_HELM", ""), ("RUNBOOK_KUBECONFIG", "")])
            ),
            (OsString::from("helm"), Cluster::default())
        );
        let named = parse(&json!({"status": "ob", "helm": "~/bin/helm",
                                  "kubeconfig": "~/.kube/prod"}));
        assert_eq!(
            locate(
                &named,
                env(&[
                    ("HOME", "/home/op"),
                    ("RUNBOOK_HELM", "/opt/helm"),
                    ("RUNBOOK_KUBECONFIG", "/a")
                ])
            ),
            (
                OsString::from("/home/op/bin/helm"),
                Cluster {
                    flag: Some("/home/op/.kube/prod".into()),
                    env: None
                }
            )
        );
    }

    #[test]
    fn idempotency_per_operation() {
        for spec in [
            json!({"status": "ob"}),
            json!({"history": "ob"}),
            json!({"get_values": "ob"}),
            json!({"list": true}),
            json!({"upgrade": "ob", "chart": "./c"}),
            json!({"uninstall": "ob", "ignore_not_found": true}),
        ] {
            assert!(Helm.idempotent(&spec), "{spec}");
        }
        for spec in [
            json!({"rollback": "ob"}),
            json!({"rollback": "ob", "revision": 2}),
            json!({"uninstall": "ob"}),
            json!({"nothing": 1}),
        ] {
            assert!(!Helm.idempotent(&spec), "{spec}");
        }
    }

    #[test]
    fn describe_names_the_operation_and_release_but_never_values() {
        let d = |spec: Value| Helm.describe(&spec);
        assert_eq!(
            d(
                json!({"upgrade": "openbao-server", "namespace": "vault-system",
                     "chart": "./charts/openbao", "version": "0.22.1",
                     "set": {"token": "s3cret"}, "values": {"password": "hunter2"}})
            ),
            "upgrade --install vault-system/openbao-server ./charts/openbao --version 0.22.1"
        );
        assert_eq!(
            d(json!({"upgrade": "ob", "chart": "./c", "install": false})),
            "upgrade ob ./c"
        );
        assert_eq!(
            d(json!({"rollback": "ob", "namespace": "n", "revision": 2})),
            "rollback n/ob to revision 2"
        );
        assert_eq!(
            d(json!({"rollback": "ob", "revision": 0})),
            "rollback ob to the previous revision"
        );
        assert_eq!(d(json!({"uninstall": "ob"})), "uninstall ob");
        assert_eq!(d(json!({"get_values": "ob"})), "get values ob");
        assert_eq!(
            d(json!({"list": true, "filter": "^nats"})),
            "list in all namespaces matching ^nats"
        );
        assert_eq!(Helm.name(), "helm");
    }

    #[test]
    fn a_status_is_read_from_helms_json_without_values_or_manifest() {
        let status: Value = serde_json::from_str(STATUS_FAILED).unwrap();
        let metadata: Value = serde_json::from_str(METADATA).unwrap();
        let view = release_view(&status, &metadata);
        assert_eq!(
            view,
            json!({
                "name": "ob",
                "namespace": "vault-system",
                "revision": 3,
                "status": "failed",
                "chart": "openbao-0.22.1",
                "chart_name": "openbao",
                "chart_version": "0.22.1",
                "app_version": "2.6.2",
                "updated": "2026-12-01T06:17:15.314031652Z",
                "first_deployed": "2026-12-01T06:16:58.839656466Z",
                "description": "Upgrade \"ob\" failed: post-upgrade hooks failed: 1 error occurred:\n\t* job ob-migrations failed: BackoffLimitExceeded\n\n",
                "notes": "OpenBao 2.8.0 in vault-system: 4 replica(s) of StatefulSet ob.\n",
                "info": status["info"],
            })
        );
        // The user's values (which may be secrets) stay out.
        assert!(!view.to_string().contains("replicaCount"));
    }

    #[test]
    fn a_history_gives_every_revision_the_latest_and_the_deployed_one() {
        let view = history_view(&serde_json::from_str(HISTORY).unwrap()).unwrap();
        assert_eq!(view["latest"], 4);
        assert_eq!(view["deployed"], 4);
        let statuses: Vec<&str> = view["revisions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["status"].as_str().unwrap())
            .collect();
        assert_eq!(statuses, ["superseded", "superseded", "failed", "deployed"]);
        assert_eq!(view["revisions"][3]["description"], "Rollback to 2");
        // A release whose only revision failed has no deployed one.
        let view = history_view(&json!([{"revision": 1, "status": "failed"}])).unwrap();
        assert_eq!(view["deployed"], Value::Null);
        assert_eq!(view["latest"], 1);
        assert_eq!(
            history_view(&json!({})).unwrap_err(),
            "expected a list of revisions, got a mapping"
        );
    }

    #[test]
    fn values_and_lists_are_normalised() {
        assert_eq!(values_view(Value::Null).unwrap(), json!({}));
        assert_eq!(
            values_view(json!({"image": {"tag": "2.7.2"}, "replicaCount": 4})).unwrap(),
            json!({"image": {"tag": "2.7.2"}, "replicaCount": 4})
        );
        let view = list_view(serde_json::from_str(LIST).unwrap()).unwrap();
        assert_eq!(view["releases"][0]["revision"], 4);
        assert_eq!(view["releases"][0]["chart"], "openbao-0.22.1");
    }

    #[test]
    fn helms_error_is_read_from_its_stderr() {
        assert_eq!(
            helm_error(UPGRADE_FAILED).as_deref(),
            Some(
                "UPGRADE FAILED: post-upgrade hooks failed: 1 error occurred: * job \
                 ob-migrations failed: BackoffLimitExceeded"
            )
        );
        assert_eq!(
            helm_error("Error: release: not found\n").as_deref(),
            Some("release: not found")
        );
        assert_eq!(
            helm_error("panic\nsomething odd\n").as_deref(),
            Some("something odd")
        );
        assert_eq!(helm_error(" \n"), None);
        assert!(not_found("Error: release: not found\n"));
        assert!(!not_found(UPGRADE_FAILED));
    }

    #[test]
    fn a_streams_tail_is_its_end() {
        let capture = Capture {
            bytes: format!("{}é{}", "a".repeat(TAIL_BYTES), "Error: boom").into_bytes(),
            truncated: false,
        };
        let tail = tail(&capture);
        assert!(tail.starts_with('…'));
        assert!(tail.ends_with("éError: boom"));
        assert_eq!(go_duration(Duration::from_secs(300)), "300s");
        assert_eq!(go_duration(Duration::from_millis(250)), "250ms");
    }

    // -- A fake helm: a script that logs how it was called and answers like helm.

    struct Fake {
        dir: tempfile::TempDir,
    }

    impl Fake {
        /// A fake helm whose `upgrade`/`rollback`/`uninstall` runs `body`; `status` and `get
        /// metadata` answer with the captured samples, other reads with `reads`.
        fn new(body: &str, reads: &str) -> Self {
            let dir = tempfile::tempdir().unwrap();
            let script = format!(
                r#"#!/bin/sh
here="$(dirname "$0")"
printf '%s\n' "$*" >> "$here/calls"
printf '%s\n' "${{KUBECONFIG:-unset}}" >> "$here/kubeconfigs"
case "$1" in
  upgrade|rollback|uninstall)
    prev=""
    for a in "$@"; do
      if [ "$prev" = "--values" ] && [ -f "$a" ]; then
        stat -c '%a' "$(dirname "$a")" >> "$here/modes"
        stat -c '%a' "$a" >> "$here/modes"
        echo "$a" >> "$here/files"
        cat "$a" >> "$here/contents"
      fi
      prev="$a"
    done
    {body}
    ;;
  status) printf '%s\n' '{status}' ;;
  get) if [ "$2" = metadata ]; then printf '%s\n' '{metadata}'; else {reads}; fi ;;
  *) {reads} ;;
esac
"#,
                status = STATUS_FAILED.replace('\'', r"'\''"),
                metadata = METADATA,
            );
            let path = dir.path().join("helm");
            std::fs::write(&path, script).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            Self { dir }
        }

        fn helm(&self) -> String {
            self.dir.path().join("helm").to_str().unwrap().to_owned()
        }

        fn read(&self, name: &str) -> String {
            std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
        }

        async fn run(&self, mut spec: Value) -> Result<Value, StepError> {
            spec["helm"] = json!(self.helm());
            Helm.run(spec, &ctx(Cancel::never())).await
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn inline_values_reach_helm_as_an_owner_only_file_removed_afterwards() {
        let fake = Fake::new("echo 'Release \"ob\" has been upgraded.'", "exit 3");
        let out = fake
            .run(json!({
                "upgrade": "ob", "chart": "./c", "namespace": "vault-system",
                "kubeconfig": "/k/config",
                "values": {"image": {"tag": "2.7.2"}, "replicaCount": 4, "debug": false},
                "set": {"token": "s3cret", "ratio": 0.5, "list": [1, "two"]},
            }))
            .await
            .unwrap();
        // Types and nesting arrive as written, in order: `values` first, then `set`.
        let contents: Vec<Value> = fake
            .read("contents")
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            contents,
            [
                json!({"image": {"tag": "2.7.2"}, "replicaCount": 4, "debug": false}),
                json!({"token": "s3cret", "ratio": 0.5, "list": [1, "two"]}),
            ]
        );
        assert_eq!(fake.read("modes"), "700\n600\n700\n600\n");
        for file in fake.read("files").lines() {
            assert!(!Path::new(file).exists(), "{file} is left behind");
            assert!(!Path::new(file).parent().unwrap().exists());
        }
        // The secret is on no command line.
        assert!(!fake.read("calls").contains("s3cret"));
        // The release after the upgrade, read with the same connection.
        let calls: Vec<&str> = fake.read("calls").leak().lines().collect();
        assert_eq!(calls.len(), 3, "{calls:?}");
        assert!(calls[0].starts_with("upgrade ob ./c --install --values /"));
        assert_eq!(
            calls[1],
            "status ob --output json --namespace vault-system --kubeconfig /k/config"
        );
        assert_eq!(
            calls[2],
            "get metadata ob --output json --revision 3 --namespace vault-system --kubeconfig \
             /k/config"
        );
        assert_eq!(out["release"]["revision"], 3);
        assert_eq!(out["release"]["chart"], "openbao-0.22.1");
        assert_eq!(out["exit_code"], 0);
        assert_eq!(out["stdout"], "Release \"ob\" has been upgraded.\n");
        assert_eq!(out["stderr"], "");
        assert!(out["duration_ms"].is_u64());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_upgrade_fails_with_helms_error_and_the_release_after_it() {
        let fake = Fake::new(
            &format!(
                "printf '%s' '{}' >&2; exit 1",
                UPGRADE_FAILED.replace('\t', "    ")
            ),
            "exit 3",
        );
        let (message, output) = failed(
            fake.run(
                json!({"upgrade": "ob", "chart": "./c", "namespace": "vault-system",
                            "wait": true}),
            )
            .await,
        );
        assert_eq!(
            message,
            "helm upgrade vault-system/ob failed: UPGRADE FAILED: post-upgrade hooks failed: 1 \
             error occurred: * job ob-migrations failed: BackoffLimitExceeded"
        );
        let output = output.unwrap();
        assert_eq!(output["exit_code"], 1);
        assert_eq!(output["release"]["status"], "failed");
        assert_eq!(output["release"]["revision"], 3);
        assert!(
            output["stderr"]
                .as_str()
                .unwrap()
                .contains("UPGRADE FAILED")
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_parse_helms_json_and_a_missing_release_is_not_found() {
        let fake = Fake::new("exit 0", &format!("printf '%s\\n' '{LIST}'"));
        let out = fake.run(json!({"list": true})).await.unwrap();
        assert_eq!(out["releases"][0]["revision"], 4);
        assert!(
            fake.read("calls")
                .contains("list --output json --all-namespaces")
        );
        // The status of a release is two reads: status, then the chart of that revision.
        let out = fake.run(json!({"status": "ob"})).await.unwrap();
        assert_eq!(out["status"], "failed");
        assert_eq!(out["app_version"], "2.6.2");

        let fake = Fake::new("exit 0", "echo 'Error: release: not found' >&2; exit 1");
        let (message, output) = failed(fake.run(json!({"history": "ob", "namespace": "n"})).await);
        assert_eq!(message, "helm history n/ob failed: release: not found");
        let output = output.unwrap();
        assert_eq!(output["not_found"], true);
        assert_eq!(output["exit_code"], 1);

        let fake = Fake::new("exit 0", "echo 'NAME  NAMESPACE'");
        let (message, _) = failed(fake.run(json!({"get_values": "ob"})).await);
        assert!(
            message.starts_with("helm get values ob: helm's output is not JSON"),
            "{message}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_uninstalled_release_is_null_after_the_uninstall() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("helm");
        std::fs::write(
            &path,
            "#!/bin/sh\ncase \"$1\" in\n  uninstall) echo 'release \"ob\" uninstalled' ;;\n  \
             *) echo 'Error: release: not found' >&2; exit 1 ;;\nesac\n",
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let out = Helm
            .run(
                json!({"uninstall": "ob", "helm": path.to_str().unwrap()}),
                &ctx(Cancel::never()),
            )
            .await
            .unwrap();
        assert_eq!(out["release"], Value::Null);
        assert_eq!(out["stdout"], "release \"ob\" uninstalled\n");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cancelling_stops_helms_process_group() {
        // Like helm, the script records the cancellation on SIGTERM and exits; its child
        // (the `sleep`) is in the same group and gets the signal too. The child is started
        // before the trap is set: a child forked with the trap inherited and signalled before
        // its exec records the signal for a trap its exec then drops, and sleeps on.
        let fake = Fake::new(
            r#"sleep 30 & trap 'echo "Release ob has been cancelled."; exit 1' TERM; echo $$ > "$here/pid"; wait"#,
            "exit 3",
        );
        let source = CancelSource::new();
        let context = ctx(source.token());
        let spec = json!({"upgrade": "ob", "chart": "./c", "helm": fake.helm(),
                          "set": {"a": 1}, "grace": "3s"});
        let fut = Helm.run(spec, &context);
        tokio::pin!(fut);
        while fake.read("pid").trim().is_empty() {
            assert!(first_poll(fut.as_mut()).await.is_pending());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        source.cancel(CancelReason::Timeout(Duration::from_secs(1)));
        match fut.await {
            Err(StepError::Cancelled {
                reason,
                message,
                output,
            }) => {
                assert_eq!(reason, CancelReason::Timeout(Duration::from_secs(1)));
                assert_eq!(
                    message,
                    "timed out after 1s; helm upgrade --install ob ./c stopped with SIGTERM"
                );
                let output = output.unwrap();
                assert_eq!(output["stdout"], "Release ob has been cancelled.\n");
                assert_eq!(output["signal"], "SIGTERM");
            }
            other => panic!("expected Cancelled, got {other:?}"),
        }
        // Gone, or zombies that pid 1 has not reaped yet.
        let pgid = Pid::from_raw(fake.read("pid").trim().parse().unwrap());
        assert!(
            !crate::shell::group_alive(pgid),
            "helm's group {pgid} lives on"
        );
        // The inline values went with the step.
        for file in fake.read("files").lines() {
            assert!(!Path::new(file).exists(), "{file} is left behind");
        }
        // Nothing was read after a stop: the step returns at once.
        assert_eq!(fake.read("calls").lines().count(), 1);
    }

    #[tokio::test]
    async fn a_missing_binary_says_how_to_name_another() {
        let (message, output) = failed(
            Helm.run(
                json!({"status": "ob", "helm": "/no/such/helm"}),
                &ctx(Cancel::never()),
            )
            .await,
        );
        assert_eq!(
            message,
            "cannot run helm `/no/such/helm`: No such file or directory (os error 2); install \
             helm, or name it with the step's `helm` or $RUNBOOK_HELM"
        );
        assert_eq!(output, None);
    }
}
