//! The operations, each one or a few API calls on a connection.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ::kube::api::{
    Api, AttachParams, DeleteParams, DynamicObject, ListParams, LogParams, Patch, PatchParams,
    PropagationPolicy,
};
use ::kube::client::UpgradeConnectionError;
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Map, Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::time::Instant;

use super::client::{Conn, Resolved, connect};
use super::conditions::{Verdict, Want};
use super::errors::{api_error, exec_refusal, refused_upgrade, transient, what};
use super::every_kind::list_every_kind;
use super::spec::{EVERY_KIND, KindRef, Op, PatchBody, Spec, Until};
use super::spec_error;
use crate::util::excerpt;
use crate::{StepContext, StepError};

/// The annotation `kubectl rollout restart` sets on the pod template.
pub(crate) const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";

/// How often `delete` with `wait: true` looks whether the object is gone.
const DELETE_POLL: Duration = Duration::from_millis(500);

/// Bytes of exec output kept per stream.
const EXEC_LIMIT: usize = 1024 * 1024;

fn failed(message: impl Into<String>, output: Option<Value>) -> StepError {
    StepError::Failed {
        message: message.into(),
        output,
    }
}

fn to_json(object: &DynamicObject) -> Value {
    serde_json::to_value(object).unwrap_or(Value::Null)
}

/// A resolved kind with the namespace an operation uses (`None` for cluster-scoped kinds and
/// for listing across all namespaces).
struct Target {
    resolved: Resolved,
    namespace: Option<String>,
}

impl Target {
    fn kind(&self) -> &str {
        &self.resolved.resource.kind
    }

    fn api(&self, conn: &Conn) -> Api<DynamicObject> {
        match &self.namespace {
            Some(ns) if self.resolved.namespaced => {
                Api::namespaced_with(conn.client.clone(), ns, &self.resolved.resource)
            }
            _ => Api::all_with(conn.client.clone(), &self.resolved.resource),
        }
    }

    fn what(&self, name: &str) -> String {
        what(self.kind(), self.namespace.as_deref(), name)
    }
}

/// The namespace given in the spec, else the connection's default.
fn namespace(spec_ns: Option<&str>, conn: &Conn) -> String {
    match spec_ns {
        Some(ns) if !ns.is_empty() => ns.to_owned(),
        _ => conn.namespace.clone(),
    }
}

async fn target(conn: &Conn, kind: &KindRef, spec_ns: Option<&str>) -> Result<Target, StepError> {
    let resolved = conn
        .resolve(&kind.kind, kind.api_version.as_deref())
        .await?;
    let namespace = resolved.namespaced.then(|| namespace(spec_ns, conn));
    Ok(Target {
        resolved,
        namespace,
    })
}

/// Runs a parsed spec.
pub(crate) async fn run(spec: Spec, ctx: &StepContext) -> Result<Value, StepError> {
    let conn = connect(spec.kubeconfig.as_deref(), spec.context.as_deref()).await?;
    let ns = spec.namespace.as_deref();
    match spec.op {
        Op::Get { target: kind, name } => {
            let t = target(&conn, &kind, ns).await?;
            let object = t
                .api(&conn)
                .get(&name)
                .await
                .map_err(|e| api_error(&conn, "getting", &t.what(&name), e))?;
            Ok(to_json(&object))
        }
        Op::List {
            target: kind,
            labels,
            fields,
        } => list(&conn, &kind, ns, labels, fields).await,
        Op::Apply { manifest, force } => apply(&conn, manifest, ns, force).await,
        Op::Patch {
            target: kind,
            name,
            body,
            resource_version,
        } => {
            let t = target(&conn, &kind, ns).await?;
            patch(&conn, &t, &name, body, resource_version).await
        }
        Op::Delete {
            target: kind,
            name,
            propagation,
            wait,
            timeout,
        } => {
            let t = target(&conn, &kind, ns).await?;
            delete(
                &conn,
                &t,
                &name,
                propagation.as_deref(),
                wait.then_some(timeout),
            )
            .await
        }
        Op::Scale {
            target: kind,
            name,
            replicas,
        } => {
            let t = target(&conn, &kind, ns).await?;
            let body = json!({"spec": {"replicas": replicas}});
            let object = t
                .api(&conn)
                .patch(&name, &PatchParams::default(), &Patch::Merge(&body))
                .await
                .map_err(|e| api_error(&conn, "scaling", &t.what(&name), e))?;
            Ok(to_json(&object))
        }
        Op::Restart { target: kind, name } => {
            let t = target(&conn, &kind, ns).await?;
            let now = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
            let body = json!({"spec": {"template": {"metadata": {"annotations": {
                RESTARTED_AT: now,
            }}}}});
            let object = t
                .api(&conn)
                .patch(&name, &PatchParams::default(), &Patch::Merge(&body))
                .await
                .map_err(|e| api_error(&conn, "restarting", &t.what(&name), e))?;
            Ok(to_json(&object))
        }
        Op::Wait {
            target: kind,
            name,
            until,
            every,
            timeout,
        } => {
            let t = target(&conn, &kind, ns).await?;
            wait(&conn, &t, &name, &until, every, timeout, ctx).await
        }
        Op::Exec {
            pod,
            container,
            command,
            stdin,
        } => {
            let ns = namespace(ns, &conn);
            exec(&conn, &ns, &pod, container, &command, stdin).await
        }
        Op::Logs {
            pod,
            container,
            tail,
            since,
            previous,
        } => {
            let ns = namespace(ns, &conn);
            let params = LogParams {
                container,
                tail_lines: tail,
                since_seconds: since.map(|d| i64::try_from(d.as_secs().max(1)).unwrap_or(i64::MAX)),
                previous,
                ..LogParams::default()
            };
            let text = Api::<Pod>::namespaced(conn.client.clone(), &ns)
                .logs(&pod, &params)
                .await
                .map_err(|e| {
                    api_error(&conn, "reading logs of", &what("Pod", Some(&ns), &pod), e)
                })?;
            Ok(json!({ "text": text }))
        }
    }
}

async fn list(
    conn: &Conn,
    kind: &KindRef,
    ns: Option<&str>,
    labels: Option<String>,
    fields: Option<String>,
) -> Result<Value, StepError> {
    if kind.kind == EVERY_KIND {
        let ns = ns.filter(|n| !n.is_empty()).ok_or_else(|| {
            spec_error("`list: \"*\"` needs `namespace`: it lists every kind in one namespace")
        })?;
        return list_every_kind(conn, ns, labels.as_deref(), fields.as_deref()).await;
    }
    let resolved = conn
        .resolve(&kind.kind, kind.api_version.as_deref())
        .await?;
    // For `list`, no namespace (or "") means every namespace, not the context's.
    let namespace = ns
        .filter(|n| !n.is_empty() && resolved.namespaced)
        .map(str::to_owned);
    let t = Target {
        resolved,
        namespace,
    };
    let mut params = ListParams::default();
    if let Some(labels) = &labels {
        params = params.labels(labels);
    }
    if let Some(fields) = &fields {
        params = params.fields(fields);
    }
    let mut shown = match &t.namespace {
        Some(ns) => format!("{} in {ns}", t.resolved.resource.plural),
        None if t.resolved.namespaced => {
            format!("{} in all namespaces", t.resolved.resource.plural)
        }
        None => t.resolved.resource.plural.clone(),
    };
    let selectors: Vec<&str> = [labels.as_deref(), fields.as_deref()]
        .into_iter()
        .flatten()
        .collect();
    if !selectors.is_empty() {
        shown = format!("{shown} ({})", selectors.join("; "));
    }
    let listed = t
        .api(conn)
        .list(&params)
        .await
        .map_err(|e| api_error(conn, "listing", &shown, e))?;
    // List items come without apiVersion and kind; fill them in so each item stands alone.
    let items: Vec<Value> = listed
        .items
        .iter()
        .map(|item| {
            let mut value = to_json(item);
            if let Some(map) = value.as_object_mut() {
                map.entry("apiVersion")
                    .or_insert_with(|| json!(t.resolved.resource.api_version));
                map.entry("kind")
                    .or_insert_with(|| json!(t.resolved.resource.kind));
            }
            value
        })
        .collect();
    Ok(json!({ "items": items }))
}

fn manifest_str<'a>(manifest: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter()
        .try_fold(manifest, |v, key| v.get(key))
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

async fn apply(
    conn: &Conn,
    manifest: Value,
    spec_ns: Option<&str>,
    force: bool,
) -> Result<Value, StepError> {
    let (Some(api_version), Some(kind), Some(name)) = (
        manifest_str(&manifest, &["apiVersion"]),
        manifest_str(&manifest, &["kind"]),
        manifest_str(&manifest, &["metadata", "name"]),
    ) else {
        return Err(spec_error(
            "`apply` must be a manifest: a mapping with apiVersion, kind and metadata.name",
        ));
    };
    let resolved = conn.resolve(kind, Some(api_version)).await?;
    let manifest_ns = manifest_str(&manifest, &["metadata", "namespace"]);
    let spec_ns = spec_ns.filter(|n| !n.is_empty());
    if let (Some(a), Some(b)) = (manifest_ns, spec_ns) {
        if a != b {
            return Err(spec_error(format!(
                "the manifest's metadata.namespace `{a}` differs from `namespace: {b}`"
            )));
        }
    }
    let namespace = resolved
        .namespaced
        .then(|| namespace(manifest_ns.or(spec_ns), conn));
    let t = Target {
        resolved,
        namespace,
    };
    let mut params = PatchParams::apply("runbook");
    if force {
        params = params.force();
    }
    let object = t
        .api(conn)
        .patch(name, &params, &Patch::Apply(&manifest))
        .await
        .map_err(|e| api_error(conn, "applying", &t.what(name), e))?;
    Ok(to_json(&object))
}

async fn patch(
    conn: &Conn,
    t: &Target,
    name: &str,
    body: PatchBody,
    resource_version: Option<String>,
) -> Result<Value, StepError> {
    let flavour = body.flavour();
    // A resourceVersion in the patched object is a precondition: the server answers 409
    // Conflict when the object has changed since.
    let with_version = |mut doc: Value| {
        if let (Some(rv), Some(map)) = (&resource_version, doc.as_object_mut()) {
            let metadata = map
                .entry("metadata")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Some(metadata) = metadata.as_object_mut() {
                metadata.insert("resourceVersion".into(), json!(rv));
            }
        }
        doc
    };
    let api = t.api(conn);
    let params = PatchParams::default();
    let result = match body {
        PatchBody::Merge(doc) => {
            api.patch(name, &params, &Patch::Merge(with_version(doc)))
                .await
        }
        PatchBody::Strategic(doc) => {
            api.patch(name, &params, &Patch::Strategic(with_version(doc)))
                .await
        }
        PatchBody::Json(mut ops) => {
            if let Some(rv) = &resource_version {
                ops.insert(
                    0,
                    json!({"op": "replace", "path": "/metadata/resourceVersion", "value": rv}),
                );
            }
            let ops: json_patch::Patch = serde_json::from_value(Value::Array(ops))
                .map_err(|e| spec_error(format!("`json` is not a valid JSON patch: {e}")))?;
            api.patch(name, &params, &Patch::<()>::Json(ops)).await
        }
    };
    let object = result.map_err(|e| {
        api_error(
            conn,
            "patching",
            &format!("{} ({flavour})", t.what(name)),
            e,
        )
    })?;
    Ok(to_json(&object))
}

async fn delete(
    conn: &Conn,
    t: &Target,
    name: &str,
    propagation: Option<&str>,
    wait_for: Option<Duration>,
) -> Result<Value, StepError> {
    let api = t.api(conn);
    let params = DeleteParams {
        propagation_policy: propagation.map(|p| match p {
            "Foreground" => PropagationPolicy::Foreground,
            "Orphan" => PropagationPolicy::Orphan,
            _ => PropagationPolicy::Background,
        }),
        ..DeleteParams::default()
    };
    let shown = t.what(name);
    let gone_at_once = match api.delete(name, &params).await {
        // Already absent: the effect a delete wants is in place, which is what makes a
        // resumed or retried delete safe.
        Err(::kube::Error::Api(r)) if r.code == 404 => {
            return Ok(json!({"deleted": false, "gone": true}));
        }
        Err(e) => return Err(api_error(conn, "deleting", &shown, e)),
        // The server answers with a Status when the object is gone at once, and with the
        // object (marked for deletion) when finalizers or dependents hold it.
        Ok(answer) => answer.is_right(),
    };
    if gone_at_once {
        return Ok(json!({"deleted": true, "gone": true}));
    }
    let Some(limit) = wait_for else {
        let gone = api
            .get_opt(name)
            .await
            .map_err(|e| api_error(conn, "deleting", &shown, e))?
            .is_none();
        return Ok(json!({"deleted": true, "gone": gone}));
    };
    let deadline = Instant::now() + limit;
    loop {
        let observed = api
            .get_opt(name)
            .await
            .map_err(|e| api_error(conn, "deleting", &shown, e))?;
        let verdict = Want::Deleted.check(t.kind(), observed.as_ref().map(to_json).as_ref());
        match verdict {
            Verdict::Met => return Ok(json!({"deleted": true, "gone": true})),
            Verdict::Pending(why) if Instant::now() + DELETE_POLL > deadline => {
                return Err(failed(
                    format!(
                        "{shown} was not gone within {} of its deletion: {why}",
                        humantime::format_duration(limit)
                    ),
                    Some(json!({"deleted": true, "gone": false})),
                ));
            }
            _ => tokio::time::sleep(DELETE_POLL).await,
        }
    }
}

/// "to be rollout-complete" / "to satisfy `expr`", for messages.
fn wanted(until: &Until) -> String {
    match until {
        Until::For(Want::Deleted) => "to be deleted".to_owned(),
        Until::For(want) => format!("to be {want}"),
        Until::Condition(expr) => format!("to satisfy `{expr}`"),
    }
}

/// Looks at one observation.
fn judge(until: &Until, kind: &str, object: Option<&Value>, ctx: &StepContext) -> Verdict {
    match until {
        Until::For(want) => want.check(kind, object),
        Until::Condition(expr) => {
            let Some(object) = object else {
                return Verdict::Pending("it does not exist".into());
            };
            let Some(conditions) = &ctx.conditions else {
                return Verdict::Failed("no condition evaluator is available to this step".into());
            };
            match conditions.holds(expr, object) {
                Ok(true) => Verdict::Met,
                Ok(false) => Verdict::Pending("the condition is false".into()),
                // Often a status field that is not reported yet; keep polling, and say so
                // if the wait times out.
                Err(e) => Verdict::Pending(format!("the condition could not be evaluated: {e}")),
            }
        }
    }
}

async fn wait(
    conn: &Conn,
    t: &Target,
    name: &str,
    until: &Until,
    every: Duration,
    timeout: Duration,
    ctx: &StepContext,
) -> Result<Value, StepError> {
    let api = t.api(conn);
    let shown = t.what(name);
    let deadline = Instant::now() + timeout;
    let mut last: Option<Value> = None;
    loop {
        let why = match api.get_opt(name).await {
            Ok(observed) => {
                let observed = observed.as_ref().map(to_json);
                let verdict = judge(until, t.kind(), observed.as_ref(), ctx);
                last = observed;
                match verdict {
                    Verdict::Met => {
                        return Ok(last.unwrap_or_else(|| json!({"deleted": true})));
                    }
                    Verdict::Failed(why) => {
                        return Err(failed(
                            format!("waiting for {shown} {} failed: {why}", wanted(until)),
                            last,
                        ));
                    }
                    Verdict::Pending(why) => why,
                }
            }
            Err(e) if transient(&e) => {
                let why = match api_error(conn, "getting", &shown, e) {
                    StepError::Failed { message, .. } => message,
                    other => other.to_string(),
                };
                tracing::debug!(%why, "transient error while waiting");
                why
            }
            Err(e) => return Err(api_error(conn, "getting", &shown, e)),
        };
        tracing::debug!(%why, "not yet");
        if Instant::now() + every > deadline {
            return Err(failed(
                format!(
                    "timed out after {} waiting for {shown} {}: {why}",
                    humantime::format_duration(timeout),
                    wanted(until)
                ),
                last,
            ));
        }
        // Cancellation is handled by the caller, which drops this future.
        tokio::time::sleep(every).await;
    }
}

/// The exit code in an exec's closing status: 0 for `Success`, the `ExitCode` cause of a
/// `NonZeroExitCode` failure, else an error message.
fn exit_code(
    status: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Status>,
) -> Result<i32, String> {
    let Some(status) = status else {
        return Ok(0);
    };
    if status.status.as_deref() == Some("Success") {
        return Ok(0);
    }
    if status.reason.as_deref() == Some("NonZeroExitCode") {
        let code = status
            .details
            .as_ref()
            .and_then(|d| d.causes.as_ref())
            .and_then(|causes| {
                causes
                    .iter()
                    .find(|c| c.reason.as_deref() == Some("ExitCode"))
            })
            .and_then(|c| c.message.as_deref())
            .and_then(|m| m.trim().parse::<i32>().ok());
        if let Some(code) = code {
            return Ok(code);
        }
    }
    Err(status
        .message
        .clone()
        .unwrap_or_else(|| "the command failed without a message".into()))
}

async fn read_capped(reader: Option<impl tokio::io::AsyncRead + Unpin>) -> String {
    let Some(reader) = reader else {
        return String::new();
    };
    let mut buf = Vec::new();
    let mut limited = reader.take(EXEC_LIMIT as u64);
    let _ = limited.read_to_end(&mut buf).await;
    // Keep draining past the cap so the remote side is never blocked on a full pipe.
    let mut rest = limited.into_inner();
    let _ = tokio::io::copy(&mut rest, &mut tokio::io::sink()).await;
    String::from_utf8_lossy(&buf).into_owned()
}

async fn exec(
    conn: &Arc<Conn>,
    ns: &str,
    pod: &str,
    container: Option<String>,
    command: &[String],
    stdin: Option<String>,
) -> Result<Value, StepError> {
    let shown_pod = what("Pod", Some(ns), pod);
    let shown_cmd = shell_words::join(command);
    let mut params = AttachParams::default()
        .stdin(stdin.is_some())
        .stdout(true)
        .stderr(true);
    if let Some(c) = &container {
        params = params.container(c.clone());
    }
    let api = Api::<Pod>::namespaced(conn.client.clone(), ns);
    let mut process = match api.exec(pod, command.to_vec(), &params).await {
        Ok(process) => process,
        // The server's reason for a refused upgrade is lost on the way (only the status is
        // kept): look at the pod for it. A 404 already says what is wrong.
        Err(::kube::Error::UpgradeConnection(UpgradeConnectionError::ProtocolSwitch(status)))
            if status.is_client_error() && status.as_u16() != 404 =>
        {
            let observed = api.get_opt(pod).await.ok().flatten();
            let why = observed
                .and_then(|p| serde_json::to_value(p).ok())
                .and_then(|p| exec_refusal(&p, container.as_deref()))
                .unwrap_or_else(|| format!("the server answered {status} instead of upgrading"));
            return Err(refused_upgrade(
                conn,
                "running a command in",
                &shown_pod,
                (status.as_u16(), status.canonical_reason().unwrap_or("")),
                why,
            ));
        }
        Err(e) => return Err(api_error(conn, "running a command in", &shown_pod, e)),
    };
    let stdout = process.stdout();
    let stderr = process.stderr();
    let writer = process.stdin();
    let status = process.take_status();
    let feed = async move {
        if let (Some(mut writer), Some(data)) = (writer, stdin) {
            let _ = writer.write_all(data.as_bytes()).await;
            let _ = writer.shutdown().await;
        }
    };
    let status = async move {
        match status {
            Some(status) => status.await,
            None => None,
        }
    };
    let ((), out, err, status) =
        tokio::join!(feed, read_capped(stdout), read_capped(stderr), status);
    if let Err(e) = process.join().await {
        return Err(failed(
            format!("running `{shown_cmd}` in {shown_pod} broke off: {e}"),
            Some(json!({"stdout": out, "stderr": err})),
        ));
    }
    match exit_code(status.as_ref()) {
        Ok(code) => {
            let output = json!({"stdout": out, "stderr": err, "exit_code": code});
            if code == 0 {
                Ok(output)
            } else {
                let mut message = format!("`{shown_cmd}` in {shown_pod} exited with code {code}");
                let tail = err.trim();
                if !tail.is_empty() {
                    message = format!("{message}: {}", excerpt(tail));
                }
                Err(failed(message, Some(output)))
            }
        }
        Err(why) => Err(failed(
            format!("`{shown_cmd}` in {shown_pod} failed: {why}"),
            Some(json!({"stdout": out, "stderr": err})),
        )),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Status, StatusCause, StatusDetails};

    use super::*;

    #[test]
    fn exit_codes_come_from_the_closing_status() {
        assert_eq!(exit_code(None), Ok(0));
        let ok = Status {
            status: Some("Success".into()),
            ..Status::default()
        };
        assert_eq!(exit_code(Some(&ok)), Ok(0));
        let nonzero = Status {
            status: Some("Failure".into()),
            reason: Some("NonZeroExitCode".into()),
            message: Some("command terminated with non-zero exit code: exit status 3".into()),
            details: Some(StatusDetails {
                causes: Some(vec![StatusCause {
                    reason: Some("ExitCode".into()),
                    message: Some("3".into()),
                    ..StatusCause::default()
                }]),
                ..StatusDetails::default()
            }),
            ..Status::default()
        };
        assert_eq!(exit_code(Some(&nonzero)), Ok(3));
        let other = Status {
            status: Some("Failure".into()),
            message: Some("executable file not found in $PATH".into()),
            ..Status::default()
        };
        assert_eq!(
            exit_code(Some(&other)),
            Err("executable file not found in $PATH".into())
        );
    }

    #[test]
    fn waits_name_what_they_wait_for() {
        assert_eq!(wanted(&Until::For(Want::Ready)), "to be ready");
        assert_eq!(wanted(&Until::For(Want::Deleted)), "to be deleted");
        assert_eq!(
            wanted(&Until::Condition("object.status.readyReplicas == 3".into())),
            "to satisfy `object.status.readyReplicas == 3`"
        );
    }
}
