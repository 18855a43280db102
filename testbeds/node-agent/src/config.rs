//! The agent's config: which pods it backs, and with which local process.
//!
//! A JSON file (the tests write it) listing backends; the first backend whose selector matches
//! a pod backs it:
//!
//! ```json
//! {"backends": [{
//!   "name": "openbao",
//!   "selector": {"namespace": "vault-system", "statefulset": "openbao"},
//!   "container": "openbao",
//!   "command": ["bash", "-c", "echo {tag} > {dir}/node-{n1}.version; exec bash {dir}/node-{n1}.cmd"],
//!   "env": {"BAO_LOG_LEVEL": "info"},
//!   "log": "{dir}/node-{n1}.log",
//!   "probe_url": "{addr}{probe_path}",
//!   "grace_period": "30s",
//!   "vars": {"dir": "/tmp/bao"},
//!   "members": [{"addr": "http://127.0.0.1:20001"}, {"addr": "…"}, {"addr": "…"}]
//! }]}
//! ```
//!
//! - `selector`: `namespace` (optional) and at least one of `statefulset` (the pod's owner)
//!   and `labels` (all must match).
//! - `container`: the container the process stands for (default: the pod's first); the pod's
//!   other containers are reported as never started.
//! - `command`, `env`, `log`, `probe_url` are templates (see [`crate::template`]) over the
//!   pod's variables: `pod`, `namespace`, `uid`, `node`, `container`, `image`, `tag` (the image
//!   tag: what picks the binary version), `n` and `n1` (the StatefulSet ordinal and ordinal + 1),
//!   every key of `vars`, and every key of `members[n]` (per-ordinal values such as addresses);
//!   `probe_url` is rendered once for each of the container's probes, with `probe_scheme`,
//!   `probe_port` and `probe_path` from that probe's `httpGet`.
//! - Probes (see [`crate::probe`]): the container's `startupProbe` and `readinessProbe`, each
//!   at `probe_url` (or, without it, the probe's own `httpGet` on the node's address) with the
//!   probe's period, timeout and thresholds. Without either, a pod is Ready once its process
//!   runs, as with a kubelet. Liveness probes are not run.
//! - `grace_period` overrides the pod's grace period when it is deleted.
//!
//! Every problem is reported as `FILE:LINE:COLUMN: message` when the file is loaded; unknown
//! fields are refused, as are templates naming variables that do not exist.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Deserialize;

use crate::image;
use crate::probe::{HttpProbe, Probes};
use crate::template::Template;

/// Variables every template has.
const POD_VARS: &[&str] = &[
    "pod",
    "namespace",
    "uid",
    "node",
    "container",
    "image",
    "tag",
    "n",
    "n1",
];
/// Variables `probe_url` has besides (from the probe it is rendered for).
const PROBE_VARS: &[&str] = &["probe_scheme", "probe_port", "probe_path"];

/// The label the StatefulSet controller puts the ordinal in (Kubernetes 1.28+).
const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

/// Why the config cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read the config {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid config.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
}

/// The whole config.
#[derive(Debug)]
pub struct Config {
    /// In order: the first that matches a pod backs it.
    pub backends: Vec<Backend>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    backends: Vec<RawBackend>,
}

/// Which pods a backend backs.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    statefulset: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// One kind of pod and the process that backs it.
#[derive(Debug)]
pub struct Backend {
    /// For logs.
    pub name: String,
    selector: Selector,
    container: Option<String>,
    command: Vec<Template>,
    env: BTreeMap<String, Template>,
    log: Option<Template>,
    probe_url: Option<Template>,
    grace_period: Option<Duration>,
    vars: BTreeMap<String, String>,
    members: Vec<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackend {
    name: String,
    selector: Selector,
    #[serde(default)]
    container: Option<String>,
    command: Vec<Template>,
    #[serde(default)]
    env: BTreeMap<String, Template>,
    #[serde(default)]
    log: Option<Template>,
    #[serde(default)]
    probe_url: Option<Template>,
    #[serde(default)]
    grace_period: Option<String>,
    #[serde(default)]
    vars: BTreeMap<String, String>,
    #[serde(default)]
    members: Vec<BTreeMap<String, String>>,
}

/// A backend that does not check out: the message, and the JSON text it is about (to point
/// at in the file).
struct Problem {
    message: String,
    near: String,
}

/// `text` as it appears in the JSON file.
fn quoted(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_default()
}

impl TryFrom<RawBackend> for Backend {
    type Error = Problem;

    fn try_from(raw: RawBackend) -> Result<Self, Problem> {
        let name = raw.name;
        let fail = |what: String, near: &str| Problem {
            message: format!("backend `{name}`: {what}"),
            near: near.to_owned(),
        };
        if raw.selector.statefulset.is_none() && raw.selector.labels.is_empty() {
            return Err(fail(
                "the selector needs `statefulset` or `labels` (a namespace alone would take every pod in it)".into(),
                &quoted("selector"),
            ));
        }
        if raw.command.is_empty() {
            return Err(fail("`command` is empty".into(), &quoted("command")));
        }
        for key in raw.vars.keys() {
            if POD_VARS.contains(&key.as_str()) || PROBE_VARS.contains(&key.as_str()) {
                return Err(fail(
                    format!("vars.{key} would hide the pod's own `{key}`"),
                    &quoted(key),
                ));
            }
        }
        // A member variable must exist for every member, so no ordinal lacks it.
        let member_keys: BTreeSet<&str> = raw
            .members
            .iter()
            .flat_map(|m| m.keys().map(String::as_str))
            .collect();
        for key in &member_keys {
            if POD_VARS.contains(key) || PROBE_VARS.contains(key) || raw.vars.contains_key(*key) {
                return Err(fail(
                    format!("members[].{key} would hide the variable `{key}`"),
                    &quoted(key),
                ));
            }
            if let Some(i) = raw.members.iter().position(|m| !m.contains_key(*key)) {
                return Err(fail(
                    format!("members[{i}] has no `{key}` (every member needs the same keys)"),
                    &quoted("members"),
                ));
            }
        }
        let known = |extra: &[&str]| -> BTreeSet<String> {
            POD_VARS
                .iter()
                .chain(extra)
                .map(|s| (*s).to_owned())
                .chain(raw.vars.keys().cloned())
                .chain(member_keys.iter().map(|s| (*s).to_owned()))
                .collect()
        };
        let (pod_vars, probe_vars) = (known(&[]), known(PROBE_VARS));
        let check = |field: String, t: &Template, known: &BTreeSet<String>| {
            t.vars().find(|v| !known.contains(*v)).map_or(Ok(()), |v| {
                let shell = if t.to_string().contains(&format!("${{{v}}}")) {
                    format!("; for the shell's ${{{v}}} write ${{{{{v}}}}}")
                } else {
                    String::new()
                };
                Err(fail(
                    format!(
                        "{field} uses {{{v}}}, which is not a variable here (known: {}){shell}",
                        known.iter().cloned().collect::<Vec<_>>().join(", ")
                    ),
                    &quoted(&t.to_string()),
                ))
            })
        };
        for (i, t) in raw.command.iter().enumerate() {
            check(format!("command[{i}]"), t, &pod_vars)?;
        }
        for (k, t) in &raw.env {
            check(format!("env.{k}"), t, &pod_vars)?;
        }
        if let Some(t) = &raw.log {
            check("log".into(), t, &pod_vars)?;
        }
        if let Some(t) = &raw.probe_url {
            check("probe_url".into(), t, &probe_vars)?;
        }
        let grace_period = raw
            .grace_period
            .map(|g| {
                humantime::parse_duration(&g).map_err(|e| {
                    fail(
                        format!("grace_period `{g}`: {e} (e.g. 30s, 2m)"),
                        &quoted(&g),
                    )
                })
            })
            .transpose()?;
        Ok(Self {
            name,
            selector: raw.selector,
            container: raw.container,
            command: raw.command,
            env: raw.env,
            log: raw.log,
            probe_url: raw.probe_url,
            grace_period,
            vars: raw.vars,
            members: raw.members,
        })
    }
}

impl Config {
    /// Reads and checks the config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses and checks config text read from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let invalid = |line, column, message| ConfigError::Invalid {
            path: path.to_owned(),
            line,
            column,
            message,
        };
        let raw: RawConfig = serde_json::from_str(text).map_err(|e| {
            // serde_json ends its message with the position, which the error shows up front.
            let full = e.to_string();
            let suffix = format!(" at line {} column {}", e.line(), e.column());
            let message = full.strip_suffix(&suffix).unwrap_or(&full).to_owned();
            invalid(e.line(), e.column(), message)
        })?;
        let mut seen = BTreeSet::new();
        let mut backends = Vec::new();
        for b in raw.backends {
            let start = backend_start(text, &b.name);
            if !seen.insert(b.name.clone()) {
                let (line, column) = line_column(text, backend_start_after(text, &b.name, start));
                return Err(invalid(
                    line,
                    column,
                    format!("two backends are named `{}`", b.name),
                ));
            }
            let backend = Backend::try_from(b).map_err(|p| {
                let at = text[start..].find(&p.near).map_or(start, |i| start + i);
                let (line, column) = line_column(text, at);
                invalid(line, column, p.message)
            })?;
            backends.push(backend);
        }
        Ok(Self { backends })
    }

    /// The backend for `pod`: the first whose selector matches.
    pub fn backend_for(&self, pod: &Pod) -> Option<&Backend> {
        self.backends.iter().find(|b| b.matches(pod))
    }
}

/// Where the backend named `name` starts in the file: its `"name": "…"` (0 if not found).
fn backend_start(text: &str, name: &str) -> usize {
    backend_start_after(text, name, 0)
}

/// The first `"name": "<name>"` at or after `from`, skipping the one at `from` itself.
fn backend_start_after(text: &str, name: &str, from: usize) -> usize {
    let value = quoted(name);
    let skip = usize::from(from > 0);
    text.match_indices("\"name\"")
        .filter(|(i, _)| *i >= from)
        .filter(|(i, key)| {
            let rest = text[i + key.len()..].trim_start();
            rest.strip_prefix(':')
                .is_some_and(|r| r.trim_start().starts_with(&value))
        })
        .nth(skip)
        .map_or(from, |(i, _)| i)
}

/// Line and column (1-based, in characters) of byte `offset` of `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before[before.rfind('\n').map_or(0, |i| i + 1)..]
        .chars()
        .count()
        + 1;
    (line, column)
}

/// What the agent runs for one pod, and how it tells that the process is ready.
#[derive(Clone, Debug, PartialEq)]
pub struct Binding {
    /// The backend's name.
    pub backend: String,
    /// The container the process stands for.
    pub container: String,
    /// That container's image.
    pub image: String,
    /// The command, rendered.
    pub argv: Vec<String>,
    /// Environment added to the agent's, rendered.
    pub env: Vec<(String, String)>,
    /// Where the process's output is appended (None: the agent's stderr).
    pub log: Option<PathBuf>,
    /// The startup and readiness probes (neither: Ready once running).
    pub probes: Probes,
    /// The backend's grace period, overriding the pod's.
    pub grace_period: Option<Duration>,
}

/// The StatefulSet ordinal of a pod: its pod-index label, else the number its name ends in
/// when a StatefulSet owns it.
pub fn ordinal(pod: &Pod) -> Option<u32> {
    let meta = &pod.metadata;
    if let Some(i) = meta.labels.as_ref().and_then(|l| l.get(POD_INDEX_LABEL)) {
        return i.parse().ok();
    }
    let owned = meta
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == "StatefulSet");
    owned
        .then(|| meta.name.as_deref()?.rsplit_once('-')?.1.parse().ok())
        .flatten()
}

impl Backend {
    /// Whether this backend backs `pod`.
    pub fn matches(&self, pod: &Pod) -> bool {
        let meta = &pod.metadata;
        let s = &self.selector;
        let namespace_ok = s
            .namespace
            .as_ref()
            .is_none_or(|ns| meta.namespace.as_ref() == Some(ns));
        let owner_ok = s.statefulset.as_ref().is_none_or(|sts| {
            meta.owner_references
                .iter()
                .flatten()
                .any(|o| o.kind == "StatefulSet" && &o.name == sts)
        });
        let labels_ok = s.labels.iter().all(|(k, v)| {
            meta.labels
                .as_ref()
                .and_then(|l| l.get(k))
                .is_some_and(|have| have == v)
        });
        namespace_ok && owner_ok && labels_ok
    }

    /// What to run for `pod` on node `node` (address `node_ip`); an error says why the pod
    /// cannot be run (it is reported on the pod).
    pub fn bind(&self, pod: &Pod, node: &str, node_ip: &str) -> Result<Binding, String> {
        let spec = pod.spec.as_ref().ok_or("the pod has no spec")?;
        let container = match &self.container {
            Some(name) => spec
                .containers
                .iter()
                .find(|c| &c.name == name)
                .ok_or_else(|| {
                    format!(
                        "the pod has no container `{name}` (backend `{}`)",
                        self.name
                    )
                })?,
            None => spec.containers.first().ok_or("the pod has no containers")?,
        };
        if spec.init_containers.as_ref().is_some_and(|c| !c.is_empty()) {
            return Err("the node agent does not run init containers".into());
        }
        let image = container.image.clone().unwrap_or_default();
        let ordinal = ordinal(pod);
        let member = ordinal.and_then(|n| self.members.get(n as usize));
        let meta = &pod.metadata;
        let mut vars: BTreeMap<&str, String> = BTreeMap::new();
        vars.insert("pod", meta.name.clone().unwrap_or_default());
        vars.insert("namespace", meta.namespace.clone().unwrap_or_default());
        vars.insert("uid", meta.uid.clone().unwrap_or_default());
        vars.insert("node", node.to_owned());
        vars.insert("container", container.name.clone());
        vars.insert("tag", image::tag(&image).to_owned());
        vars.insert("image", image.clone());
        if let Some(n) = ordinal {
            vars.insert("n", n.to_string());
            vars.insert("n1", (n + 1).to_string());
        }
        for (k, v) in &self.vars {
            vars.insert(k, v.clone());
        }
        for (k, v) in member.into_iter().flatten() {
            vars.insert(k, v.clone());
        }
        let missing_member = |e: crate::template::MissingVar| match ordinal {
            Some(n) if self.members.first().is_some_and(|m| m.contains_key(&e.var)) => format!(
                "{e}: backend `{}` lists {} members, none for ordinal {n}",
                self.name,
                self.members.len()
            ),
            _ => e.to_string(),
        };
        let render = |t: &Template, vars: &BTreeMap<&str, String>| {
            t.render(|k| vars.get(k).cloned()).map_err(missing_member)
        };
        let argv = self
            .command
            .iter()
            .map(|t| render(t, &vars))
            .collect::<Result<Vec<_>, _>>()?;
        let env = self
            .env
            .iter()
            .map(|(k, t)| Ok((k.clone(), render(t, &vars)?)))
            .collect::<Result<Vec<_>, String>>()?;
        let log = self
            .log
            .as_ref()
            .map(|t| render(t, &vars).map(PathBuf::from))
            .transpose()?;
        let mut probe = |probe: &Option<Probe>, what: &str| {
            probe
                .as_ref()
                .map(|p| self.http_probe(p, what, container, node_ip, &mut vars, &render))
                .transpose()
        };
        let probes = Probes {
            startup: probe(&container.startup_probe, "startupProbe")?,
            readiness: probe(&container.readiness_probe, "readinessProbe")?,
        };
        Ok(Binding {
            backend: self.name.clone(),
            container: container.name.clone(),
            image,
            argv,
            env,
            log,
            probes,
            grace_period: self.grace_period,
        })
    }
}

impl Backend {
    /// `probe` of `container` (`what` names it in errors) as an HTTP probe: at `probe_url`
    /// rendered with the probe's `httpGet` (`vars` gets its `probe_*`), else at that `httpGet`
    /// on the node's address.
    fn http_probe(
        &self,
        probe: &Probe,
        what: &str,
        container: &Container,
        node_ip: &str,
        vars: &mut BTreeMap<&str, String>,
        render: &impl Fn(&Template, &BTreeMap<&str, String>) -> Result<String, String>,
    ) -> Result<HttpProbe, String> {
        let url = match &probe.http_get {
            Some(get) => {
                vars.insert(
                    "probe_scheme",
                    get.scheme.as_deref().unwrap_or("HTTP").to_ascii_lowercase(),
                );
                vars.insert(
                    "probe_port",
                    port_number(&get.port, container, what)?.to_string(),
                );
                vars.insert("probe_path", get.path.clone().unwrap_or_else(|| "/".into()));
                match &self.probe_url {
                    Some(t) => render(t, vars)?,
                    None => format!(
                        "{}://{}:{}{}",
                        vars["probe_scheme"],
                        get.host.as_deref().unwrap_or(node_ip),
                        vars["probe_port"],
                        vars["probe_path"]
                    ),
                }
            }
            None => match &self.probe_url {
                Some(t) => render(t, vars)?,
                None => {
                    return Err(format!(
                        "the node agent probes over HTTP only: container `{}` has a {what} without httpGet and backend `{}` has no probe_url",
                        container.name, self.name
                    ));
                }
            },
        };
        Ok(HttpProbe::from_probe(url, probe))
    }
}

/// A probe's port: a number, or the name of one of the container's ports.
fn port_number(port: &IntOrString, container: &Container, what: &str) -> Result<i32, String> {
    match port {
        IntOrString::Int(n) => Ok(*n),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name))
            .map(|p| p.container_port)
            .ok_or_else(|| {
                format!(
                    "the {what} names port `{name}`, which container `{}` does not declare",
                    container.name
                )
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(backends: &serde_json::Value) -> Result<Config, String> {
        let text = serde_json::to_string_pretty(&json!({ "backends": backends })).expect("json");
        Config::parse(Path::new("agent.json"), &text).map_err(|e| e.to_string())
    }

    fn openbao() -> serde_json::Value {
        json!({
            "name": "openbao",
            "selector": {"namespace": "vault-system", "statefulset": "openbao"},
            "command": ["bash", "-c", "echo {tag} > {dir}/node-{n1}.version; exec bash {dir}/node-{n1}.cmd"],
            "log": "{dir}/node-{n1}.log",
            "probe_url": "{addr}{probe_path}",
            "vars": {"dir": "/tmp/bao"},
            "members": [{"addr": "http://127.0.0.1:1"}, {"addr": "http://127.0.0.1:2"}, {"addr": "http://127.0.0.1:3"}],
        })
    }

    fn pod(v: &serde_json::Value) -> Pod {
        serde_json::from_value(v.clone()).expect("pod")
    }

    fn sts_pod(name: &str, ordinal: u32, image: &str) -> Pod {
        pod(&json!({
            "metadata": {
                "name": format!("{name}-{ordinal}"), "namespace": "vault-system", "uid": "u-1",
                "labels": {"app": name, POD_INDEX_LABEL: ordinal.to_string()},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": name, "uid": "s", "controller": true}],
            },
            "spec": {"containers": [{
                "name": "openbao", "image": image,
                "readinessProbe": {"httpGet": {"path": "/v1/sys/health?standbyok=true", "port": 8200},
                                   "periodSeconds": 1, "failureThreshold": 2},
            }]},
        }))
    }

    #[test]
    fn a_statefulset_pod_binds_to_its_member_and_image_tag() {
        let c = config(&json!([openbao()])).expect("valid");
        let p = sts_pod("openbao", 2, "quay.io/openbao/openbao:2.7.2");
        let b = c
            .backend_for(&p)
            .expect("matches")
            .bind(&p, "agent-1", "127.0.0.1")
            .expect("binds");
        assert_eq!(
            b.argv,
            [
                "bash",
                "-c",
                "echo 2.7.2 > /tmp/bao/node-3.version; exec bash /tmp/bao/node-3.cmd"
            ]
        );
        assert_eq!(b.log, Some(PathBuf::from("/tmp/bao/node-3.log")));
        let r = b.probes.readiness.expect("probed");
        assert_eq!(r.url, "http://127.0.0.1:3/v1/sys/health?standbyok=true");
        assert_eq!(r.period, Duration::from_secs(1));
        assert_eq!(r.failure_threshold, 2);
        assert_eq!(r.success_threshold, 1);
        assert_eq!(r.timeout, Duration::from_secs(1));
        assert_eq!(b.probes.startup, None);
    }

    #[test]
    fn each_probe_renders_the_probe_url_with_its_own_path_and_port() {
        // The NATS chart: startup on the strict /healthz, readiness on the server alone.
        let c = config(&json!([{
            "name": "nats", "selector": {"statefulset": "nats"}, "command": ["run"],
            "probe_url": "http://127.0.0.1:1{probe_port}{probe_path}",
        }]))
        .expect("valid");
        let p = pod(&json!({
            "metadata": {"name": "nats-0", "namespace": "nats",
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "nats", "uid": "s"}]},
            "spec": {"containers": [{
                "name": "nats", "image": "nats:2.15",
                "ports": [{"name": "monitor", "containerPort": 8222}],
                "startupProbe": {"httpGet": {"path": "/healthz", "port": "monitor"},
                                 "periodSeconds": 2, "failureThreshold": 90},
                "readinessProbe": {"httpGet": {"path": "/healthz?js-server-only=true", "port": 8223}},
            }]},
        }));
        let b = c.backends[0].bind(&p, "n", "127.0.0.1").expect("binds");
        let startup = b.probes.startup.expect("startup probe");
        assert_eq!(startup.url, "http://127.0.0.1:18222/healthz");
        assert_eq!(
            (startup.period, startup.failure_threshold),
            (Duration::from_secs(2), 90)
        );
        let readiness = b.probes.readiness.expect("readiness probe");
        assert_eq!(
            readiness.url,
            "http://127.0.0.1:18223/healthz?js-server-only=true"
        );
        assert_eq!(readiness.failure_threshold, 3);
    }

    #[test]
    fn selectors_match_namespace_owner_and_labels() {
        let c = config(&json!([
            openbao(),
            {"name": "web", "selector": {"labels": {"app": "web"}}, "command": ["true"]},
        ]))
        .expect("valid");
        let name = |p: &Pod| c.backend_for(p).map(|b| b.name.clone());
        assert_eq!(
            name(&sts_pod("openbao", 0, "x:1")).as_deref(),
            Some("openbao")
        );
        // Another StatefulSet in the namespace, or the same name elsewhere, is not it.
        assert_eq!(name(&sts_pod("other", 0, "x:1")), None);
        let mut elsewhere = sts_pod("openbao", 0, "x:1");
        elsewhere.metadata.namespace = Some("default".into());
        assert_eq!(name(&elsewhere), None);
        assert_eq!(name(&sts_pod("web", 0, "x:1")).as_deref(), Some("web"));
    }

    #[test]
    fn without_probe_url_the_pods_own_http_probe_is_used_on_the_node_address() {
        let c = config(&json!([{
            "name": "web", "selector": {"labels": {"app": "web"}}, "command": ["serve", "{pod}"],
        }]))
        .expect("valid");
        let p = pod(&json!({
            "metadata": {"name": "web-x", "namespace": "default", "labels": {"app": "web"}},
            "spec": {"containers": [{
                "name": "web", "image": "web",
                "ports": [{"name": "http", "containerPort": 8080}],
                "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}},
            }]},
        }));
        let b = c.backends[0].bind(&p, "n", "127.0.0.2").expect("binds");
        assert_eq!(b.argv, ["serve", "web-x"]);
        let r = b.probes.readiness.expect("probed");
        assert_eq!(r.url, "http://127.0.0.2:8080/ready");
        // The kubelet's defaults when the probe gives none.
        assert_eq!(
            (r.period, r.failure_threshold),
            (Duration::from_secs(10), 3)
        );
    }

    #[test]
    fn a_pod_that_cannot_be_bound_says_why() {
        let c = config(&json!([openbao()])).expect("valid");
        let p = sts_pod("openbao", 3, "openbao:2.7.2");
        assert_eq!(
            c.backends[0]
                .bind(&p, "n", "127.0.0.1")
                .expect_err("no member 3"),
            "template `{addr}{probe_path}` uses {addr}, which has no value for this pod: backend `openbao` lists 3 members, none for ordinal 3"
        );
        let c = config(&json!([{
            "name": "x", "selector": {"labels": {"app": "x"}}, "command": ["run", "{n1}"],
        }]))
        .expect("valid");
        let p = pod(
            &json!({"metadata": {"name": "x", "labels": {"app": "x"}}, "spec": {"containers": [{"name": "x"}]}}),
        );
        assert_eq!(
            c.backends[0]
                .bind(&p, "n", "127.0.0.1")
                .expect_err("no ordinal"),
            "template `{n1}` uses {n1}, which has no value for this pod"
        );
        let c = config(&json!([{
            "name": "x", "selector": {"labels": {"app": "x"}}, "command": ["run"],
        }]))
        .expect("valid");
        let p = pod(&json!({"metadata": {"name": "x", "labels": {"app": "x"}},
            "spec": {"containers": [{"name": "x", "readinessProbe": {"exec": {"command": ["true"]}}}]}}));
        assert!(
            c.backends[0]
                .bind(&p, "n", "127.0.0.1")
                .expect_err("exec probe")
                .starts_with("the node agent probes over HTTP only")
        );
    }

    #[test]
    fn the_ordinal_comes_from_the_pod_index_label_or_the_owned_name() {
        assert_eq!(ordinal(&sts_pod("openbao", 7, "x")), Some(7));
        let mut p = sts_pod("openbao", 7, "x");
        p.metadata.labels = None;
        p.metadata.name = Some("openbao-12".into());
        assert_eq!(ordinal(&p), Some(12));
        p.metadata.owner_references = None;
        assert_eq!(ordinal(&p), None);
    }

    #[test]
    fn bad_configs_point_at_the_problem() {
        let bad = |text: &str| {
            Config::parse(Path::new("agent.json"), text)
                .expect_err("invalid")
                .to_string()
        };
        let good = r#"{"backends": [
  {"name": "web", "selector": {"labels": {"app": "web"}}, "command": ["serve"]},
  {"name": "openbao",
   "selector": {"statefulset": "openbao"},
   "command": ["bash", "-c", "exec {dir}/run {addr}"],
   "vars": {"dir": "/tmp"},
   "members": [{"addr": "a"}, {"addr": "b"}]}
]}"#;
        Config::parse(Path::new("agent.json"), good).expect("the base is valid");
        assert_eq!(
            bad(&good.replace("{addr}", "{nope}")),
            "agent.json:5:30: backend `openbao`: command[2] uses {nope}, which is not a variable here \
             (known: addr, container, dir, image, n, n1, namespace, node, pod, tag, uid)"
        );
        assert_eq!(
            bad(&good.replace(r#"{"addr": "b"}"#, r#"{"adr": "b"}"#)),
            "agent.json:7:4: backend `openbao`: members[1] has no `addr` (every member needs the same keys)"
        );
        assert_eq!(
            bad(&good.replace(r#""statefulset": "openbao""#, r#""namespace": "x""#)),
            "agent.json:4:4: backend `openbao`: the selector needs `statefulset` or `labels` \
             (a namespace alone would take every pod in it)"
        );
        assert_eq!(
            bad(&good.replace(r#""vars""#, r#""grace_period": "soon", "vars""#)),
            "agent.json:6:20: backend `openbao`: grace_period `soon`: expected number at 0 (e.g. 30s, 2m)"
        );
        assert_eq!(
            bad(&good.replace(r#""dir": "/tmp""#, r#""tag": "/tmp""#)),
            "agent.json:6:13: backend `openbao`: vars.tag would hide the pod's own `tag`"
        );
        assert_eq!(
            bad(&good.replace(r#""vars""#, r#""comand": [], "vars""#)),
            "agent.json:6:11: unknown field `comand`, expected one of `name`, `selector`, `container`, \
             `command`, `env`, `log`, `probe_url`, `grace_period`, `vars`, `members`"
        );
        assert_eq!(
            bad(&good.replace("{addr}", "${HOME}")),
            "agent.json:5:30: backend `openbao`: command[2] uses {HOME}, which is not a variable here \
             (known: addr, container, dir, image, n, n1, namespace, node, pod, tag, uid); \
             for the shell's ${HOME} write ${{HOME}}"
        );
        assert_eq!(
            bad(&good.replace("{addr}", "${HOME:-/}")),
            "agent.json:5:57: template `exec {dir}/run ${HOME:-/}`: a variable name has only letters, digits and _ \
             at byte 21 (write {{ and }} for literal braces)"
        );
        assert_eq!(
            bad(&good.replace(r#""name": "web""#, r#""name": "openbao""#)),
            "agent.json:3:4: two backends are named `openbao`"
        );
        assert_eq!(bad(r#"{"backends": [}"#), "agent.json:1:15: expected value");
    }
}
