//! The object store: resources the fake serves, objects by (resource, namespace, name), the
//! global resourceVersion counter, and the write path every verb and controller goes through
//! (metadata bookkeeping, generation, status-subresource rules, events).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Instant, SystemTime};

use serde_json::{Map, Value, json};

use super::{FakeEvent, Options, Stamped};

/// A resource the fake serves.
#[derive(Debug, PartialEq, Eq)]
pub struct Res {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub namespaced: bool,
    /// Whether `status` is a subresource (writes to the main resource leave it alone).
    pub status_sub: bool,
    /// Whether `scale` is a subresource.
    pub scale_sub: bool,
    pub short: &'static [&'static str],
}

impl Res {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `statefulsets.apps`, `pods`: how the real server names a resource in messages.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_owned()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `StatefulSet.apps`, `Pod`: how the real server names a kind in validation messages.
    pub fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.to_owned()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }
}

#[allow(clippy::too_many_arguments)] // one row of the table below
const fn res(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    singular: &'static str,
    namespaced: bool,
    subs: (bool, bool),
    short: &'static [&'static str],
) -> Res {
    Res {
        group,
        version,
        kind,
        plural,
        singular,
        namespaced,
        status_sub: subs.0,
        scale_sub: subs.1,
        short,
    }
}

pub static RESOURCES: &[Res] = &[
    res("", "v1", "Pod", "pods", "pod", true, (true, false), &["po"]),
    res(
        "",
        "v1",
        "ConfigMap",
        "configmaps",
        "configmap",
        true,
        (false, false),
        &["cm"],
    ),
    res(
        "",
        "v1",
        "Secret",
        "secrets",
        "secret",
        true,
        (false, false),
        &[],
    ),
    res(
        "",
        "v1",
        "Service",
        "services",
        "service",
        true,
        (true, false),
        &["svc"],
    ),
    res(
        "",
        "v1",
        "ServiceAccount",
        "serviceaccounts",
        "serviceaccount",
        true,
        (false, false),
        &["sa"],
    ),
    res(
        "",
        "v1",
        "PersistentVolumeClaim",
        "persistentvolumeclaims",
        "persistentvolumeclaim",
        true,
        (true, false),
        &["pvc"],
    ),
    res(
        "",
        "v1",
        "Namespace",
        "namespaces",
        "namespace",
        false,
        (true, false),
        &["ns"],
    ),
    res(
        "apps",
        "v1",
        "StatefulSet",
        "statefulsets",
        "statefulset",
        true,
        (true, true),
        &["sts"],
    ),
    res(
        "apps",
        "v1",
        "Deployment",
        "deployments",
        "deployment",
        true,
        (true, true),
        &["deploy"],
    ),
    res(
        "apps",
        "v1",
        "DaemonSet",
        "daemonsets",
        "daemonset",
        true,
        (true, false),
        &["ds"],
    ),
    res(
        "batch",
        "v1",
        "Job",
        "jobs",
        "job",
        true,
        (true, false),
        &[],
    ),
    res(
        "runbook.test",
        "v1",
        "Widget",
        "widgets",
        "widget",
        true,
        (true, false),
        &["wg"],
    ),
];

/// The resource for a kind, plural or short name (any case).
pub fn resource(name: &str) -> Option<&'static Res> {
    RESOURCES.iter().find(|r| {
        r.kind.eq_ignore_ascii_case(name)
            || r.plural.eq_ignore_ascii_case(name)
            || r.short.iter().any(|s| s.eq_ignore_ascii_case(name))
    })
}

/// The resource at `group/version/plural`.
pub fn resource_at(group: &str, version: &str, plural: &str) -> Option<&'static Res> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Objects are kept by (qualified resource, namespace, name); namespace "" when cluster-scoped.
pub type Key = (String, String, String);

pub fn key(res: &Res, ns: &str, name: &str) -> Key {
    let ns = if res.namespaced { ns } else { "" };
    (res.qualified(), ns.to_owned(), name.to_owned())
}

/// A pod's life as the fake kubelet tracks it.
#[derive(Debug)]
pub struct PodLife {
    pub uid: String,
    pub created: Instant,
    pub running_at: Option<Instant>,
    /// `on_pod_started` finished (or there is none): readiness may be polled.
    pub started_hook_done: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// The latest readiness answer: 0 none yet, 1 not ready, 2 ready.
    pub probe: std::sync::Arc<std::sync::atomic::AtomicU8>,
    pub probe_in_flight: std::sync::Arc<std::sync::atomic::AtomicBool>,
    pub last_probe: Option<Instant>,
    pub terminating_at: Option<Instant>,
    /// `on_pod_stopped` was started; true once it returned.
    pub stopped_hook: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
    /// `on_pod_started` was started.
    pub started_hook_begun: bool,
}

#[derive(Default)]
pub struct Inner {
    pub objects: BTreeMap<Key, Value>,
    pub rv: u64,
    pub uid: u64,
    pub events: Vec<Stamped>,
    pub logs: HashMap<(String, String), Vec<(SystemTime, String)>>,
    pub requests: Vec<String>,
    pub pods: HashMap<(String, String), PodLife>,
    /// StatefulSet revisions: (namespace, name) → revision → pod template.
    pub revisions: HashMap<(String, String), HashMap<String, Value>>,
    /// When a Deployment/DaemonSet/Job generation was first seen by its controller.
    pub rollouts: HashMap<Key, (i64, Instant)>,
}

pub struct State {
    pub options: Options,
    pub inner: Mutex<Inner>,
    pub started: Instant,
}

/// Now, RFC 3339 with seconds, as the API server writes times.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// An error the API answers, as a `Status` object.
#[derive(Debug)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    pub fn not_found(res: &Res, name: &str) -> Self {
        Self {
            details: Some(json!({"name": name, "group": res.group, "kind": res.plural})),
            ..Self::new(
                404,
                "NotFound",
                format!("{} \"{name}\" not found", res.qualified()),
            )
        }
    }

    pub fn conflict(res: &Res, name: &str) -> Self {
        Self {
            details: Some(json!({"name": name, "group": res.group, "kind": res.plural})),
            ..Self::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{name}\": the object has been \
                     modified; please apply your changes to the latest version and try again",
                    res.qualified()
                ),
            )
        }
    }

    pub fn already_exists(res: &Res, name: &str) -> Self {
        Self {
            details: Some(json!({"name": name, "group": res.group, "kind": res.plural})),
            ..Self::new(
                409,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", res.qualified()),
            )
        }
    }

    pub fn invalid(res: &Res, name: &str, field: &str, detail: &str) -> Self {
        Self {
            details: Some(json!({"name": name, "group": res.group, "kind": res.kind,
                "causes": [{"reason": "FieldValueInvalid", "message": detail, "field": field}]})),
            ..Self::new(
                422,
                "Invalid",
                format!(
                    "{} \"{name}\" is invalid: {field}: {detail}",
                    res.qualified_kind()
                ),
            )
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

/// `path` (dot-separated) inside `v`.
pub fn at<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, k| v.get(k))
}

pub fn str_at<'a>(v: &'a Value, path: &str) -> &'a str {
    at(v, path).and_then(Value::as_str).unwrap_or("")
}

/// The mapping at `path`, created if needed.
pub fn obj_at<'a>(v: &'a mut Value, path: &str) -> &'a mut Map<String, Value> {
    let mut current = v;
    for k in path.split('.') {
        if !current.is_object() {
            *current = Value::Object(Map::new());
        }
        let map = current.as_object_mut().expect("an object");
        current = map
            .entry(k.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    if !current.is_object() {
        *current = Value::Object(Map::new());
    }
    current.as_object_mut().expect("an object")
}

/// Everything but `metadata` and `status`: what counts as the spec for `generation`.
fn spec_part(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
        m.remove("apiVersion");
        m.remove("kind");
    }
    v
}

/// The API server's defaulting, for what runbooks read back.
fn defaults(res: &Res, object: &mut Value) {
    match res.kind {
        "StatefulSet" => {
            let spec = obj_at(object, "spec");
            spec.entry("replicas").or_insert(json!(1));
            spec.entry("podManagementPolicy")
                .or_insert(json!("OrderedReady"));
            spec.entry("revisionHistoryLimit").or_insert(json!(10));
            let strategy = spec
                .entry("updateStrategy")
                .or_insert_with(|| json!({"type": "RollingUpdate"}));
            if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
                let rolling = obj_at(strategy, "rollingUpdate");
                rolling.entry("partition").or_insert(json!(0));
            }
        }
        "Deployment" => {
            let spec = obj_at(object, "spec");
            spec.entry("replicas").or_insert(json!(1));
            spec.entry("progressDeadlineSeconds").or_insert(json!(600));
        }
        "Job" => {
            let spec = obj_at(object, "spec");
            spec.entry("completions").or_insert(json!(1));
            spec.entry("parallelism").or_insert(json!(1));
            spec.entry("backoffLimit").or_insert(json!(6));
        }
        _ => {}
    }
}

/// Checks a few field types the real validation rejects, so runbooks learn of a template
/// that rendered a string where an integer belongs.
fn validate(res: &Res, name: &str, object: &Value) -> Result<(), ApiError> {
    let ints: &[&str] = match res.kind {
        "StatefulSet" => &[
            "spec.replicas",
            "spec.updateStrategy.rollingUpdate.partition",
        ],
        "Deployment" => &["spec.replicas"],
        _ => &[],
    };
    for path in ints {
        if let Some(v) = at(object, path) {
            match v.as_i64() {
                Some(n) if n >= 0 => {}
                Some(n) => {
                    return Err(ApiError::invalid(
                        res,
                        name,
                        path,
                        &format!("Invalid value: {n}: must be greater than or equal to 0"),
                    ));
                }
                None => {
                    return Err(ApiError::invalid(
                        res,
                        name,
                        path,
                        &format!("Invalid value: {v}: {path} in body must be of type integer"),
                    ));
                }
            }
        }
    }
    let name_ok = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !name_ok {
        return Err(ApiError::invalid(
            res,
            name,
            "metadata.name",
            &format!(
                "Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower \
                 case alphanumeric characters, '-' or '.', and must start and end with an \
                 alphanumeric character"
            ),
        ));
    }
    Ok(())
}

/// A managedFields entry a write records.
pub struct Managed<'a> {
    pub manager: &'a str,
    /// `Apply` or `Update`.
    pub operation: &'a str,
    /// The `fieldsV1` set.
    pub fields: Value,
}

/// How a write reaches the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// A client wrote the main resource: status is kept from the stored object.
    Main,
    /// A client or controller wrote the `status` subresource: only status changes.
    Status,
    /// A test seeded the object: taken as given.
    Seed,
}

impl State {
    pub fn new(options: Options) -> Self {
        let state = Self {
            options,
            inner: Mutex::default(),
            started: Instant::now(),
        };
        {
            let mut inner = state.lock();
            for ns in ["default", "kube-system", state.options.namespace.as_str()] {
                let ns_res = resource("Namespace").expect("namespaces");
                if !inner.objects.contains_key(&key(ns_res, "", ns)) {
                    let object = json!({"metadata": {"name": ns}, "status": {"phase": "Active"}});
                    inner
                        .write(ns_res, "", ns, object, Via::Seed, None)
                        .expect("seed namespace");
                }
            }
        }
        state
    }

    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn seed(&self, object: Value) -> Value {
        let kind = str_at(&object, "kind").to_owned();
        let res = resource(&kind).unwrap_or_else(|| panic!("the fake does not serve {kind}"));
        let name = str_at(&object, "metadata.name").to_owned();
        let ns = match str_at(&object, "metadata.namespace") {
            "" if res.namespaced => self.options.namespace.clone(),
            ns => ns.to_owned(),
        };
        let mut inner = self.lock();
        if res.namespaced {
            inner.ensure_namespace(&ns);
        }
        let stored = inner
            .write(res, &ns, &name, object, Via::Seed, None)
            .unwrap_or_else(|e| panic!("cannot seed {kind} {ns}/{name}: {}", e.message));
        if res.kind == "Pod" && at(&stored, "status.phase").is_none() {
            inner.track_pod(&ns, &name, &stored);
        }
        stored
    }

    pub fn get(&self, kind: &str, ns: &str, name: &str) -> Option<Value> {
        let res = resource(kind)?;
        self.lock().objects.get(&key(res, ns, name)).cloned()
    }

    pub fn list(&self, kind: &str, ns: &str) -> Vec<Value> {
        let Some(res) = resource(kind) else {
            return Vec::new();
        };
        let q = res.qualified();
        self.lock()
            .objects
            .iter()
            .filter(|((r, n, _), _)| *r == q && (ns.is_empty() || n == ns))
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub fn append_log(&self, ns: &str, pod: &str, line: &str) {
        self.lock().log(ns, pod, line);
    }

    pub fn timeline(&self) -> Vec<Stamped> {
        self.lock().events.clone()
    }

    pub fn requests(&self) -> Vec<String> {
        self.lock().requests.clone()
    }
}

impl Inner {
    pub fn event(&mut self, event: FakeEvent) {
        self.events.push(Stamped {
            at: Instant::now(),
            event,
        });
    }

    pub fn log(&mut self, ns: &str, pod: &str, line: &str) {
        self.logs
            .entry((ns.to_owned(), pod.to_owned()))
            .or_default()
            .push((SystemTime::now(), line.to_owned()));
    }

    fn next_rv(&mut self) -> String {
        self.rv += 1;
        self.rv.to_string()
    }

    pub fn ensure_namespace(&mut self, ns: &str) {
        let ns_res = resource("Namespace").expect("namespaces");
        if !self.objects.contains_key(&key(ns_res, "", ns)) {
            let object = json!({"metadata": {"name": ns}, "status": {"phase": "Active"}});
            let _ = self.write(ns_res, "", ns, object, Via::Seed, None);
        }
    }

    pub fn namespace_exists(&self, ns: &str) -> bool {
        let ns_res = resource("Namespace").expect("namespaces");
        self.objects.contains_key(&key(ns_res, "", ns))
    }

    pub fn get(&self, res: &Res, ns: &str, name: &str) -> Option<&Value> {
        self.objects.get(&key(res, ns, name))
    }

    /// Starts the kubelet's tracking of a new pod.
    pub fn track_pod(&mut self, ns: &str, name: &str, pod: &Value) {
        self.pods.insert(
            (ns.to_owned(), name.to_owned()),
            PodLife {
                uid: str_at(pod, "metadata.uid").to_owned(),
                created: Instant::now(),
                running_at: None,
                started_hook_done: std::sync::Arc::default(),
                probe: std::sync::Arc::default(),
                probe_in_flight: std::sync::Arc::default(),
                last_probe: None,
                terminating_at: None,
                stopped_hook: None,
                started_hook_begun: false,
            },
        );
    }

    /// Stores `object` as `res` `ns/name`, doing the API server's bookkeeping. `old` is the
    /// stored object a client's write started from (for status and metadata it keeps).
    /// `manager` records a managedFields entry for an update.
    pub fn write(
        &mut self,
        res: &'static Res,
        ns: &str,
        name: &str,
        mut object: Value,
        via: Via,
        manager: Option<Managed<'_>>,
    ) -> Result<Value, ApiError> {
        let k = key(res, ns, name);
        let old = self.objects.get(&k).cloned();
        if !object.is_object() {
            return Err(ApiError::bad_request("the body must be a JSON object"));
        }
        if via == Via::Status {
            // Only status changes through the status subresource.
            let Some(old) = &old else {
                return Err(ApiError::not_found(res, name));
            };
            let status = object.get("status").cloned();
            object = old.clone();
            match status {
                Some(s) => {
                    object["status"] = s;
                }
                None => {
                    object.as_object_mut().expect("object").remove("status");
                }
            }
        } else if via == Via::Main && res.status_sub {
            let map = object.as_object_mut().expect("object");
            match old.as_ref().and_then(|o| o.get("status")) {
                Some(s) => {
                    map.insert("status".into(), s.clone());
                }
                None if res.kind == "Pod" => {
                    map.insert("status".into(), json!({"phase": "Pending"}));
                }
                None => {
                    map.remove("status");
                }
            }
        }
        if via != Via::Status {
            defaults(res, &mut object);
            validate(res, name, &object)?;
        }
        let rv = self.next_rv();
        {
            let map = object.as_object_mut().expect("object");
            map.insert("apiVersion".into(), json!(res.api_version()));
            map.insert("kind".into(), json!(res.kind));
        }
        let old_meta = old.as_ref().and_then(|o| o.get("metadata")).cloned();
        let generation = {
            let old_gen = old_meta
                .as_ref()
                .and_then(|m| m.get("generation"))
                .and_then(Value::as_i64);
            match (&old, old_gen) {
                (Some(o), Some(g)) if spec_part(o) != spec_part(&object) => g + 1,
                (Some(_), Some(g)) => g,
                _ => 1,
            }
        };
        self.uid += 1;
        let fresh_uid = format!("00000000-0000-4000-8000-{:012x}", self.uid);
        let meta = obj_at(&mut object, "metadata");
        meta.insert("name".into(), json!(name));
        if res.namespaced {
            meta.insert("namespace".into(), json!(ns));
        } else {
            meta.remove("namespace");
        }
        let keep = |meta: &mut Map<String, Value>, field: &str, fallback: Value| {
            let value = old_meta
                .as_ref()
                .and_then(|m| m.get(field))
                .cloned()
                .unwrap_or(fallback);
            meta.insert(field.into(), value);
        };
        if via == Via::Seed && old.is_none() {
            meta.entry("uid").or_insert(json!(fresh_uid));
            meta.entry("creationTimestamp")
                .or_insert(json!(now_rfc3339()));
        } else {
            keep(meta, "uid", json!(fresh_uid));
            keep(meta, "creationTimestamp", json!(now_rfc3339()));
        }
        if old_meta
            .as_ref()
            .and_then(|m| m.get("deletionTimestamp"))
            .is_some()
        {
            keep(meta, "deletionTimestamp", Value::Null);
        }
        meta.insert("resourceVersion".into(), json!(rv));
        meta.insert("generation".into(), json!(generation));
        if let Some(Managed {
            manager,
            operation,
            fields,
        }) = manager
        {
            let api_version = res.api_version();
            let entries = meta.entry("managedFields").or_insert_with(|| json!([]));
            if let Some(list) = entries.as_array_mut() {
                list.retain(|e| {
                    !(e.get("manager").and_then(Value::as_str) == Some(manager)
                        && e.get("operation").and_then(Value::as_str) == Some(operation))
                });
                list.push(json!({
                    "manager": manager,
                    "operation": operation,
                    "apiVersion": api_version,
                    "time": now_rfc3339(),
                    "fieldsType": "FieldsV1",
                    "fieldsV1": fields,
                }));
            }
        } else if via != Via::Seed {
            keep(meta, "managedFields", Value::Null);
            if meta.get("managedFields").is_some_and(Value::is_null) {
                meta.remove("managedFields");
            }
        }
        if meta.get("deletionTimestamp").is_some_and(Value::is_null) {
            meta.remove("deletionTimestamp");
        }
        if res.kind == "StatefulSet" {
            self.sts_events(name, old.as_ref(), &object);
        }
        if res.kind == "Pod" && old.is_none() {
            let revision = str_at(&object, "metadata.labels.controller-revision-hash").to_owned();
            let image = first_image(&object);
            self.event(FakeEvent::PodCreated {
                pod: name.to_owned(),
                revision,
                image,
            });
        }
        self.objects.insert(k, object.clone());
        if res.kind == "Pod" && old.is_none() && via == Via::Main {
            self.track_pod(ns, name, &object);
        }
        Ok(object)
    }

    fn sts_events(&mut self, name: &str, old: Option<&Value>, new: &Value) {
        let partition = |v: &Value| {
            at(v, "spec.updateStrategy.rollingUpdate.partition").and_then(Value::as_i64)
        };
        let image = |v: &Value| {
            at(v, "spec.template.spec.containers")
                .and_then(|c| c.get(0))
                .and_then(|c| c.get("image"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let new_partition = partition(new);
        if let Some(p) = new_partition {
            if old.and_then(partition) != Some(p) {
                self.event(FakeEvent::PartitionChanged {
                    sts: name.to_owned(),
                    partition: p,
                });
            }
        }
        if let Some(i) = image(new) {
            if old.and_then(image) != Some(i.clone()) {
                self.event(FakeEvent::ImageChanged {
                    sts: name.to_owned(),
                    image: i,
                });
            }
        }
    }

    /// Changes a stored object in place (as a controller does), bumping its resourceVersion.
    pub fn edit(&mut self, res: &Res, ns: &str, name: &str, f: impl FnOnce(&mut Value)) {
        let rv = self.next_rv();
        if let Some(object) = self.objects.get_mut(&key(res, ns, name)) {
            f(object);
            obj_at(object, "metadata").insert("resourceVersion".into(), json!(rv));
        }
    }

    /// Removes an object at once; returns it.
    pub fn remove(&mut self, res: &Res, ns: &str, name: &str) -> Option<Value> {
        let removed = self.objects.remove(&key(res, ns, name));
        if removed.is_some() && res.kind == "Pod" {
            self.pods.remove(&(ns.to_owned(), name.to_owned()));
            self.event(FakeEvent::PodDeleted {
                pod: name.to_owned(),
            });
        }
        removed
    }

    /// Marks an object as being deleted (deletionTimestamp, finalizers), bumping its
    /// resourceVersion.
    pub fn mark_deleting(&mut self, res: &Res, ns: &str, name: &str, finalizer: Option<&str>) {
        let rv = self.next_rv();
        let Some(object) = self.objects.get_mut(&key(res, ns, name)) else {
            return;
        };
        let meta = obj_at(object, "metadata");
        if meta.get("deletionTimestamp").is_none() {
            meta.insert("deletionTimestamp".into(), json!(now_rfc3339()));
        }
        if let Some(f) = finalizer {
            let list = meta.entry("finalizers").or_insert_with(|| json!([]));
            if let Some(list) = list.as_array_mut() {
                if !list.iter().any(|x| x == f) {
                    list.push(json!(f));
                }
            }
        }
        meta.insert("resourceVersion".into(), json!(rv));
    }

    /// Starts a pod's graceful termination (the kubelet finishes it).
    pub fn terminate_pod(&mut self, ns: &str, name: &str) {
        let pod_res = resource("Pod").expect("pods");
        let Some(pod) = self.get(pod_res, ns, name) else {
            return;
        };
        if at(pod, "metadata.deletionTimestamp").is_some() {
            return;
        }
        let pod = pod.clone();
        self.mark_deleting(pod_res, ns, name, None);
        if let Some(object) = self.objects.get_mut(&key(pod_res, ns, name)) {
            obj_at(object, "metadata").insert("deletionGracePeriodSeconds".into(), json!(30));
        }
        let life = self
            .pods
            .entry((ns.to_owned(), name.to_owned()))
            .or_insert_with(|| PodLife {
                uid: str_at(&pod, "metadata.uid").to_owned(),
                created: Instant::now(),
                running_at: None,
                started_hook_done: std::sync::Arc::default(),
                probe: std::sync::Arc::default(),
                probe_in_flight: std::sync::Arc::default(),
                last_probe: None,
                terminating_at: None,
                stopped_hook: None,
                started_hook_begun: false,
            });
        life.terminating_at = Some(Instant::now());
        self.event(FakeEvent::PodTerminating {
            pod: name.to_owned(),
        });
    }
}

/// The image of a pod's (or pod template's spec's) first container.
pub fn first_image(pod: &Value) -> String {
    at(pod, "spec.containers")
        .and_then(|c| c.get(0))
        .and_then(|c| c.get("image"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned()
}
