//! The `kube` step kind: one Kubernetes API operation per step.
//!
//! The spec names its operation by key; the key's value is the object's kind (built-in kinds by
//! kind, plural or short name; others with `api_version: group/version`, found by discovery),
//! or the pod's name for `exec` and `logs`:
//!
//! ```yaml
//! kube: { get: StatefulSet, name: openbao, namespace: vault-system }          # → the object
//! kube: { list: Pod, namespace: vault-system, labels: { app: openbao },
//!         fields: "status.phase=Running" }                                     # → {items}
//! kube: { list: "*", namespace: stuck }   # every kind the server lists there → {items}
//! kube: { apply: { apiVersion: v1, kind: ConfigMap, metadata: { name: x }, data: {} },
//!         namespace: ops, force: false }             # server-side apply as `runbook` → object
//! kube: { patch: StatefulSet, name: openbao, merge: { spec: { replicas: 3 } },
//!         resource_version: "4711" }        # or json: [ops] / strategic: {…} → the object
//! kube: { delete: Job, name: migrate, propagation: Background, wait: true, timeout: 2m }
//!                                                             # → {deleted, gone}
//! kube: { scale: StatefulSet, name: openbao, replicas: 5 }                    # → the object
//! kube: { restart: Deployment, name: web }                # like `kubectl rollout restart`
//! kube: { wait: StatefulSet, name: openbao, for: rollout-complete, every: 2s, timeout: 10m }
//! kube: { wait: StatefulSet, name: openbao, condition: "object.status.readyReplicas == 3" }
//! kube: { exec: openbao-0, container: openbao, command: [bao, status], stdin: "…" }
//!                                                             # → {stdout, stderr, exit_code}
//! kube: { logs: openbao-0, container: openbao, tail: 100, since: 5m }         # → {text}
//! ```
//!
//! Every operation takes `kubeconfig` and `context` (see [`client`] for the defaults); the
//! namespace defaults to the context's namespace, except that `list` without one lists every
//! namespace.
//!
//! # How an operation can end
//!
//! - Success: the object (or the documented shape) as JSON.
//! - The server refused: [`StepError::Failed`] naming the object, the operation, the HTTP
//!   status and the reason (`StatefulSet vault-system/openbao not found (404)`), with
//!   `{status, reason, message}` as output so a probe can still look at a 404.
//! - A `wait` that runs out of time: a failure naming the condition and why it did not hold
//!   yet, with the last observed object as output. A Job that failed ends a `job-complete`
//!   wait at once.
//! - `exec` with a non-zero exit: a failure with `{stdout, stderr, exit_code}` as output.
//! - The engine cancels the step: the request or poll is dropped and the step ends
//!   [`StepError::Cancelled`]. A write in flight may or may not have reached the server.
//!
//! # Idempotency
//!
//! Reads, `wait`, server-side `apply`, merge and strategic patches (declarative: the same
//! document twice gives the same object), `scale` and `delete` (an object already gone counts as
//! deleted) are idempotent. JSON patches (positional operations), `restart` (a new timestamp
//! starts another rollout) and `exec` (nothing is known about the command) are not.

mod client;
mod conditions;
mod errors;
mod every_kind;
mod ops;
mod resources;
mod spec;

use serde_json::Value;
use tracing::Instrument;

use crate::util::excerpt;
use crate::{BoxFuture, Field, FieldType, StepContext, StepError, StepKind};

use self::spec::{Spec, check, op_key, text};

const KIND: &str = "kube";

/// The `kube` step kind.
pub struct Kube;

pub(crate) static FIELDS: &[Field] = &[
    // Operations: exactly one is given.
    Field::optional("get", FieldType::String),
    Field::optional("list", FieldType::String),
    Field::optional("apply", FieldType::Map),
    Field::optional("patch", FieldType::String),
    Field::optional("delete", FieldType::String),
    Field::optional("scale", FieldType::String),
    Field::optional("restart", FieldType::String),
    // A kind for the `wait` operation, or true/false next to `delete`.
    Field::optional("wait", FieldType::Any),
    Field::optional("exec", FieldType::String),
    Field::optional("logs", FieldType::String),
    // The object and the connection.
    Field::optional("name", FieldType::String),
    Field::optional("namespace", FieldType::String),
    Field::optional("api_version", FieldType::String),
    Field::optional("kubeconfig", FieldType::String),
    Field::optional("context", FieldType::String),
    // list
    Field::optional("labels", FieldType::Any),
    Field::optional("fields", FieldType::String),
    // apply
    Field::optional("force", FieldType::Bool),
    // patch
    Field::optional("merge", FieldType::Map),
    Field::optional("json", FieldType::List),
    Field::optional("strategic", FieldType::Map),
    Field::optional("resource_version", FieldType::String),
    // delete
    Field::optional("propagation", FieldType::String),
    // delete, wait
    Field::optional("timeout", FieldType::Duration),
    // scale
    Field::optional("replicas", FieldType::Int),
    // wait
    Field::optional("for", FieldType::String),
    Field::optional("condition", FieldType::Expr),
    Field::optional("every", FieldType::Duration),
    // exec, logs
    Field::optional("container", FieldType::String),
    Field::optional("command", FieldType::List),
    Field::optional("stdin", FieldType::String),
    Field::optional("tail", FieldType::Int),
    Field::optional("since", FieldType::Duration),
    Field::optional("previous", FieldType::Bool),
];

pub(crate) fn spec_error(message: impl Into<String>) -> StepError {
    StepError::Spec {
        kind: KIND,
        message: message.into(),
    }
}

impl StepKind for Kube {
    fn name(&self) -> &'static str {
        KIND
    }

    fn fields(&self) -> &'static [Field] {
        FIELDS
    }

    fn validate(&self, spec: &Value) -> Vec<(String, String)> {
        check(spec, false)
    }

    fn shell_scripts(&self, spec: &Value) -> Vec<String> {
        // Only `exec` runs a command, in the container: a shell there parses its script.
        match spec.as_object().map(op_key) {
            Some(Ok("exec")) => crate::posix_shell::script_pointers(spec, "command", "stdin"),
            _ => Vec::new(),
        }
    }

    fn idempotent(&self, spec: &Value) -> bool {
        let Some(map) = spec.as_object() else {
            return false;
        };
        match op_key(map) {
            Ok("get" | "list" | "apply" | "scale" | "wait" | "logs" | "delete") => true,
            Ok("patch") => map.get("json").is_none_or(Value::is_null),
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
            "kube",
            run_id = %ctx.run_id,
            path = %ctx.path,
            attempt = ctx.attempt,
            op
        );
        Box::pin(run_attempt(spec, ctx).instrument(span))
    }
}

async fn run_attempt(spec: Value, ctx: &StepContext) -> Result<Value, StepError> {
    let shown = describe(&spec);
    let parsed = Spec::parse(&spec)?;
    if let Some(reason) = ctx.cancel.reason() {
        return Err(StepError::Cancelled {
            message: format!("{reason}; {shown} was not started"),
            reason,
            output: None,
        });
    }
    tokio::select! {
        biased;
        reason = ctx.cancel.cancelled() => {
            tracing::info!(%reason, "abandoning the operation");
            Err(StepError::Cancelled {
                message: format!("{reason}; {shown} was abandoned"),
                reason,
                output: None,
            })
        }
        result = ops::run(parsed, ctx) => result,
    }
}

fn field(spec: &Value, key: &str) -> Option<String> {
    spec.get(key)
        .and_then(text)
        .filter(|s| !s.trim().is_empty())
}

/// `StatefulSet vault-system/openbao`, or `StatefulSet openbao` without a namespace.
fn object(spec: &Value, kind: &str, name: Option<String>) -> String {
    let kind = resources::canonical_kind(kind);
    match (field(spec, "namespace"), name) {
        (Some(ns), Some(name)) => format!("{kind} {ns}/{name}"),
        (None, Some(name)) => format!("{kind} {name}"),
        (_, None) => kind.to_owned(),
    }
}

fn describe(spec: &Value) -> String {
    let Some(map) = spec.as_object() else {
        return KIND.to_owned();
    };
    let Ok(op) = op_key(map) else {
        return KIND.to_owned();
    };
    let kind = field(spec, op).unwrap_or_default();
    let name = field(spec, "name");
    match op {
        "get" | "restart" => format!("{op} {}", object(spec, &kind, name)),
        "list" => {
            let mut text = if kind.trim() == spec::EVERY_KIND {
                "list every kind".to_owned()
            } else {
                format!("list {}", resources::canonical_kind(&kind))
            };
            if let Some(ns) = field(spec, "namespace") {
                text = format!("{text} in {ns}");
            }
            let labels = map.get("labels").and_then(|v| spec::labels(v).ok());
            let selectors: Vec<String> = [labels, field(spec, "fields")]
                .into_iter()
                .flatten()
                .filter(|s| !s.is_empty())
                .collect();
            if !selectors.is_empty() {
                text = format!("{text} ({})", selectors.join("; "));
            }
            text
        }
        "apply" => {
            let manifest = map.get("apply").cloned().unwrap_or(Value::Null);
            let kind = manifest.get("kind").and_then(Value::as_str).unwrap_or("?");
            let name = manifest.pointer("/metadata/name").and_then(text);
            let ns = manifest
                .pointer("/metadata/namespace")
                .and_then(text)
                .or_else(|| field(spec, "namespace"));
            match (ns, name) {
                (Some(ns), Some(name)) => format!("apply {kind} {ns}/{name}"),
                (None, Some(name)) => format!("apply {kind} {name}"),
                _ => format!("apply {kind}"),
            }
        }
        "patch" => {
            let flavour = ["merge", "json", "strategic"]
                .into_iter()
                .find(|k| map.get(*k).is_some_and(|v| !v.is_null()))
                .unwrap_or("?");
            format!("patch {} ({flavour})", object(spec, &kind, name))
        }
        "delete" => format!("delete {}", object(spec, &kind, name)),
        "scale" => {
            let replicas = field(spec, "replicas").unwrap_or_else(|| "?".into());
            format!("scale {} to {replicas}", object(spec, &kind, name))
        }
        "wait" => {
            let target = object(spec, &kind, name);
            match (field(spec, "for"), field(spec, "condition")) {
                (Some(want), _) => format!("wait for {target} to be {want}"),
                (None, Some(cond)) => format!("wait for {target}: {cond}"),
                (None, None) => format!("wait for {target}"),
            }
        }
        "exec" => {
            let argv: Vec<String> = map
                .get("command")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(text).collect())
                .unwrap_or_default();
            format!(
                "exec in {}: {}",
                object(spec, "Pod", Some(kind)),
                shell_words::join(argv)
            )
        }
        "logs" => format!("logs of {}", object(spec, "Pod", Some(kind))),
        _ => format!("{op} {kind}"),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::test_support::spec_message;

    fn problems(spec: &Value) -> Vec<(String, String)> {
        Kube.validate(spec)
    }

    #[test]
    fn only_an_exec_of_a_shell_has_shell_scripts() {
        let exec = json!({"exec": "pod", "command": ["sh", "-c", "echo"]});
        assert_eq!(Kube.shell_scripts(&exec), ["/command/2"]);
        let exec = json!({"exec": "pod", "command": ["bash"], "stdin": "echo"});
        assert_eq!(Kube.shell_scripts(&exec), ["/stdin"]);
        let exec = json!({"exec": "pod", "command": ["bao", "status"]});
        assert!(Kube.shell_scripts(&exec).is_empty());
        let get = json!({"get": "Pod", "name": "x", "command": ["sh", "-c", "x"]});
        assert!(Kube.shell_scripts(&get).is_empty());
    }

    fn p(field: &str, message: &str) -> (String, String) {
        (field.to_owned(), message.to_owned())
    }

    #[test]
    fn every_field_is_listed_once() {
        let mut names: Vec<&str> = FIELDS.iter().map(|f| f.name).collect();
        let count = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), count);
        for op in spec::OPS {
            assert!(names.contains(op), "{op}");
        }
        let condition = FIELDS.iter().find(|f| f.name == "condition").unwrap();
        assert_eq!(condition.ty, FieldType::Expr);
    }

    #[test]
    fn a_spec_names_exactly_one_operation() {
        assert_eq!(
            problems(&json!({"name": "x"})),
            [p(
                "kube",
                "`kube` needs one operation: one of `get`, `list`, `apply`, `patch`, `delete`, \
                 `scale`, `restart`, `wait`, `exec`, `logs`"
            )]
        );
        assert_eq!(
            problems(&json!({"get": "Pod", "list": "Pod", "name": "x"})),
            [p(
                "kube",
                "`kube` takes exactly one operation, not `get` and `list`"
            )]
        );
        // `wait` next to `delete` is delete's option.
        assert_eq!(
            problems(&json!({"delete": "Pod", "name": "x", "wait": true, "timeout": "1m"})),
            []
        );
        assert_eq!(
            problems(&json!({"delete": "Pod", "name": "x", "wait": "yes"})),
            [p("wait", "`wait` (next to `delete`) must be true or false")]
        );
    }

    #[test]
    fn required_fields_per_operation() {
        assert_eq!(
            problems(&json!({"get": "StatefulSet"})),
            [p("get", "`get` needs `name`")]
        );
        assert_eq!(problems(&json!({"list": "Pod"})), []);
        assert_eq!(
            problems(&json!({"scale": "StatefulSet", "name": "x"})),
            [p("scale", "`scale` needs `replicas`")]
        );
        assert_eq!(
            problems(&json!({"scale": "StatefulSet", "name": "x", "replicas": -1})),
            [p(
                "replicas",
                "`replicas` must be a whole number, 0 or more"
            )]
        );
        assert_eq!(
            problems(&json!({"exec": "openbao-0"})),
            [p("exec", "`exec` needs `command` (a list: the argv)")]
        );
        assert_eq!(
            problems(&json!({"exec": "openbao-0", "command": "bao status"})),
            [p(
                "command",
                "`command` must be a list (the argv), not a string"
            )]
        );
        assert_eq!(
            problems(&json!({"apply": {"kind": "ConfigMap", "metadata": {}}})),
            [
                p("apply", "the manifest needs `apiVersion`"),
                p("apply", "the manifest needs `metadata.name`"),
            ]
        );
        assert_eq!(
            problems(&json!({"apply": {"apiVersion": "v1", "kind": "ConfigMap",
                                       "metadata": {"name": "{{params.name}}"}}})),
            []
        );
    }

    #[test]
    fn listing_every_kind_takes_a_namespace_and_no_api_version() {
        assert_eq!(
            problems(&json!({"list": "*", "namespace": "stuck", "labels": {"app": "x"}})),
            []
        );
        assert_eq!(
            problems(&json!({"list": "*", "namespace": "{{params.ns}}"})),
            []
        );
        let needs_namespace = p(
            "list",
            "`list: \"*\"` needs `namespace`: it lists every kind in one namespace",
        );
        assert_eq!(
            problems(&json!({"list": "*"})),
            std::slice::from_ref(&needs_namespace)
        );
        assert_eq!(
            problems(&json!({"list": "*", "namespace": ""})),
            [needs_namespace]
        );
        assert_eq!(
            problems(&json!({"list": "*", "namespace": "x", "api_version": "v1"})),
            [p(
                "api_version",
                "`api_version` does not apply to `list: \"*\"` (every kind is listed)"
            )]
        );
        assert_eq!(
            Kube.describe(&json!({"list": "*", "namespace": "stuck", "fields": "metadata.name=x"})),
            "list every kind in stuck (metadata.name=x)"
        );
        assert!(Kube.idempotent(&json!({"list": "*", "namespace": "stuck"})));
    }

    #[test]
    fn patches_take_exactly_one_flavour() {
        assert_eq!(
            problems(&json!({"patch": "StatefulSet", "name": "x"})),
            [p(
                "patch",
                "`patch` needs one of `merge`, `json` or `strategic`"
            )]
        );
        assert_eq!(
            problems(&json!({"patch": "StatefulSet", "name": "x", "merge": {}, "json": []})),
            [p(
                "json",
                "`patch` takes one of `merge`, `json` or `strategic`, not `merge` and `json`"
            )]
        );
        assert_eq!(
            problems(&json!({"patch": "StatefulSet", "name": "x", "json": [{"value": 1}]})),
            [p(
                "json",
                "`json[0]` must be a JSON patch operation with `op` and `path`"
            )]
        );
        assert_eq!(
            problems(
                &json!({"patch": "ConfigMap", "name": "x", "merge": {"data": {}},
                             "resource_version": "12"})
            ),
            []
        );
    }

    #[test]
    fn waits_take_for_or_condition() {
        assert_eq!(
            problems(&json!({"wait": "StatefulSet", "name": "x"})),
            [p("wait", "`wait` needs `for` or `condition`")]
        );
        assert_eq!(
            problems(&json!({"wait": "StatefulSet", "name": "x", "for": "ready",
                             "condition": "true"})),
            [p("condition", "give either `for` or `condition`, not both")]
        );
        assert_eq!(
            problems(&json!({"wait": "StatefulSet", "name": "x", "for": "healthy"})),
            [p(
                "for",
                "`for` must be one of ready, rollout-complete, deleted, job-complete"
            )]
        );
        assert_eq!(
            problems(&json!({"wait": "ConfigMap", "name": "x", "for": "rollout-complete"})),
            [p(
                "for",
                "`for: rollout-complete` is defined for Deployment, StatefulSet, DaemonSet, not \
                 `ConfigMap`"
            )]
        );
        assert_eq!(
            problems(
                &json!({"wait": "sts", "name": "x", "for": "rollout-complete",
                             "every": "0s"})
            ),
            [p("every", "`every` must be more than 0s")]
        );
        assert_eq!(
            problems(&json!({"wait": "Job", "name": "x", "for": "job-complete",
                             "timeout": "soon"})),
            [p(
                "timeout",
                "`timeout`: invalid duration `soon`: expected number at 0"
            )]
        );
    }

    #[test]
    fn fields_of_other_operations_are_reported() {
        assert_eq!(
            problems(&json!({"get": "Pod", "name": "x", "replicas": 3, "command": ["ls"]})),
            [
                p("replicas", "`replicas` does not apply to `get`"),
                p("command", "`command` does not apply to `get`"),
            ]
        );
        assert_eq!(
            problems(&json!({"restart": "ConfigMap", "name": "x"})),
            [p(
                "restart",
                "`restart` works on Deployment, StatefulSet, DaemonSet, not `ConfigMap`"
            )]
        );
        assert_eq!(
            problems(&json!({"delete": "Pod", "name": "x", "propagation": "Later"})),
            [p(
                "propagation",
                "`propagation` must be one of Foreground, Background, Orphan"
            )]
        );
        assert_eq!(
            problems(&json!({"list": "Pod", "labels": ["app=x"]})),
            [p(
                "labels",
                "`labels` must be a selector string such as `app=openbao,tier!=web` or a \
                 mapping of labels"
            )]
        );
    }

    #[test]
    fn templates_are_not_judged_before_rendering() {
        assert_eq!(
            problems(
                &json!({"scale": "{{params.kind}}", "name": "{{params.name}}",
                             "replicas": "{{params.n}}", "timeout": "{{params.t}}"})
            ),
            [p("timeout", "`timeout` does not apply to `scale`")]
        );
        assert_eq!(
            problems(&json!({"wait": "StatefulSet", "name": "x", "for": "{{params.want}}"})),
            []
        );
    }

    #[test]
    fn parse_fills_defaults() {
        use spec::{KindRef, Op, PatchBody, Until};
        let parsed = Spec::parse(&json!({
            "patch": "sts", "name": "openbao", "namespace": "vault-system",
            "merge": {"spec": {"replicas": 3}}, "resource_version": 42,
        }))
        .unwrap();
        assert_eq!(
            parsed.op,
            Op::Patch {
                target: KindRef {
                    kind: "StatefulSet".into(),
                    api_version: None
                },
                name: "openbao".into(),
                body: PatchBody::Merge(json!({"spec": {"replicas": 3}})),
                resource_version: Some("42".into()),
            }
        );
        assert_eq!(parsed.namespace.as_deref(), Some("vault-system"));
        let parsed = Spec::parse(&json!({"wait": "Deployment", "name": "web",
                                         "for": "rollout-complete"}))
        .unwrap();
        match parsed.op {
            Op::Wait {
                until,
                every,
                timeout,
                ..
            } => {
                assert_eq!(until, Until::For(conditions::Want::RolloutComplete));
                assert_eq!(every, spec::DEFAULT_EVERY);
                assert_eq!(timeout, spec::DEFAULT_WAIT_TIMEOUT);
            }
            other => panic!("{other:?}"),
        }
        let parsed =
            Spec::parse(&json!({"list": "Pod", "labels": {"app": "openbao", "n": 1}})).unwrap();
        assert_eq!(
            parsed.op,
            Op::List {
                target: KindRef {
                    kind: "Pod".into(),
                    api_version: None
                },
                labels: Some("app=openbao,n=1".into()),
                fields: None,
            }
        );
    }

    #[test]
    fn parse_errors_are_spec_errors() {
        let message = |spec: Value| spec_message(Spec::parse(&spec), "kube");
        assert!(
            message(json!({"get": "Pod", "name": "x", "nmae": "y"}))
                .starts_with("unknown field `nmae`, expected one of `get`, `list`"),
        );
        assert_eq!(message(json!({"get": "Pod"})), "`get` needs `name`");
        assert_eq!(
            message(json!({"scale": "Deployment", "name": "x", "replicas": "three"})),
            "`replicas` must be a whole number, 0 or more"
        );
    }

    #[test]
    fn idempotency_per_operation() {
        let yes = [
            json!({"get": "Pod", "name": "x"}),
            json!({"list": "Pod"}),
            json!({"apply": {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}}),
            json!({"patch": "ConfigMap", "name": "x", "merge": {}}),
            json!({"patch": "ConfigMap", "name": "x", "strategic": {}}),
            json!({"scale": "StatefulSet", "name": "x", "replicas": 3}),
            json!({"wait": "Pod", "name": "x", "for": "ready"}),
            json!({"logs": "x"}),
            json!({"delete": "Pod", "name": "x", "wait": true}),
        ];
        for spec in &yes {
            assert!(Kube.idempotent(spec), "{spec}");
        }
        let no = [
            json!({"patch": "ConfigMap", "name": "x", "json": []}),
            json!({"restart": "Deployment", "name": "x"}),
            json!({"exec": "x", "command": ["ls"]}),
            json!({"nothing": 1}),
        ];
        for spec in &no {
            assert!(!Kube.idempotent(spec), "{spec}");
        }
    }

    #[test]
    fn describe_names_the_operation_and_object() {
        let d = |spec: Value| Kube.describe(&spec);
        assert_eq!(
            d(
                json!({"patch": "StatefulSet", "name": "openbao", "namespace": "vault-system",
                     "merge": {}})
            ),
            "patch StatefulSet vault-system/openbao (merge)"
        );
        assert_eq!(
            d(json!({"get": "sts", "name": "openbao"})),
            "get StatefulSet openbao"
        );
        assert_eq!(
            d(
                json!({"list": "Pod", "namespace": "ops", "labels": {"app": "x"},
                     "fields": "status.phase=Running"})
            ),
            "list Pod in ops (app=x; status.phase=Running)"
        );
        assert_eq!(
            d(json!({"apply": {"apiVersion": "v1", "kind": "ConfigMap",
                               "metadata": {"name": "c", "namespace": "ops"}}})),
            "apply ConfigMap ops/c"
        );
        assert_eq!(
            d(json!({"scale": "StatefulSet", "name": "o", "namespace": "n", "replicas": 5})),
            "scale StatefulSet n/o to 5"
        );
        assert_eq!(
            d(json!({"wait": "StatefulSet", "name": "o", "for": "rollout-complete"})),
            "wait for StatefulSet o to be rollout-complete"
        );
        assert_eq!(
            d(json!({"wait": "Deployment", "name": "w",
                     "condition": "object.status.readyReplicas == 3"})),
            "wait for Deployment w: object.status.readyReplicas == 3"
        );
        assert_eq!(
            d(
                json!({"exec": "openbao-0", "namespace": "v", "command": ["bao", "status", "-format", "json"]})
            ),
            "exec in Pod v/openbao-0: bao status -format json"
        );
        assert_eq!(d(json!({"logs": "openbao-0"})), "logs of Pod openbao-0");
        assert_eq!(
            d(json!({"delete": "Job", "name": "m", "namespace": "n", "wait": true})),
            "delete Job n/m"
        );
        assert_eq!(
            d(json!({"restart": "deploy", "name": "web"})),
            "restart Deployment web"
        );
    }
}
