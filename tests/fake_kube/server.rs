//! The HTTP side: authentication, routing of the REST paths, the verbs, discovery documents.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use super::patch;
use super::selector::{Fields, Labels};
use super::store::{
    ApiError, Managed, RESOURCES, Res, State, Via, at, key, obj_at, resource_at, str_at,
};

pub type Body = Full<Bytes>;

pub async fn serve(listener: TcpListener, state: Arc<State>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(state.clone(), req));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}

/// What a route answers.
pub enum Reply {
    Json(u16, Value),
    Text(String),
}

pub fn json_response(code: u16, value: &Value) -> Response<Body> {
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(value.to_string())))
        .expect("response")
}

fn error_response(e: &ApiError) -> Response<Body> {
    json_response(e.code, &e.status())
}

/// The query string as pairs, percent-decoded.
pub fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

pub fn param<'a>(query: &'a [(String, String)], name: &str) -> Option<&'a str> {
    query
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

pub fn flag(query: &[(String, String)], name: &str) -> bool {
    matches!(param(query, name), Some("true" | "1"))
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = query_pairs(req.uri().query());
    let content_type = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let agent = req
        .headers()
        .get(USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    {
        let mut line = format!("{method} {path}");
        if let Some(q) = req.uri().query() {
            line = format!("{line}?{q}");
        }
        if !content_type.is_empty() {
            line = format!("{line} [{content_type}]");
        }
        state.lock().requests.push(line);
    }
    let expected = format!("Bearer {}", state.options.token);
    let authorized = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == expected);
    if !authorized {
        return Ok(error_response(&ApiError::new(
            401,
            "Unauthorized",
            "Unauthorized",
        )));
    }
    let segments: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .map(str::to_owned)
        .collect();
    if method == Method::GET {
        if let Some((ns, pod)) = exec_target(&segments) {
            return Ok(super::exec::upgrade(&state, req, &ns, &pod, &query));
        }
    }
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return Ok(error_response(&ApiError::bad_request(format!(
                "cannot read the body: {e}"
            ))));
        }
    };
    let call = Call {
        method: &method,
        query: &query,
        content_type: &content_type,
        agent: &agent,
        body: &body,
    };
    let reply = route(&state, &segments, &call);
    Ok(match reply {
        Ok(Reply::Json(code, value)) => json_response(code, &value),
        Ok(Reply::Text(text)) => Response::builder()
            .status(StatusCode::OK)
            .header(CONTENT_TYPE, "text/plain")
            .body(Full::new(Bytes::from(text)))
            .expect("response"),
        Err(e) => error_response(&e),
    })
}

/// `api/v1/namespaces/NS/pods/NAME/exec`.
fn exec_target(segments: &[String]) -> Option<(String, String)> {
    match segments {
        [api, v1, namespaces, ns, pods, name, exec]
            if api == "api"
                && v1 == "v1"
                && namespaces == "namespaces"
                && pods == "pods"
                && exec == "exec" =>
        {
            Some((ns.clone(), name.clone()))
        }
        _ => None,
    }
}

struct Call<'a> {
    method: &'a Method,
    query: &'a [(String, String)],
    content_type: &'a str,
    agent: &'a str,
    body: &'a [u8],
}

impl Call<'_> {
    fn json_body(&self) -> Result<Value, ApiError> {
        serde_json::from_slice(self.body).map_err(|e| {
            ApiError::bad_request(format!(
                "the body of the request was in an unknown format: {e}"
            ))
        })
    }

    /// The field manager: `fieldManager`, else the user agent's product, as the server does.
    fn manager(&self) -> String {
        if let Some(m) = param(self.query, "fieldManager") {
            return m.to_owned();
        }
        match self.agent.split('/').next() {
            Some(p) if !p.is_empty() => p.to_owned(),
            _ => "unknown".to_owned(),
        }
    }
}

fn not_found_path() -> ApiError {
    ApiError::new(
        404,
        "NotFound",
        "the server could not find the requested resource",
    )
}

fn route(state: &State, segments: &[String], call: &Call<'_>) -> Result<Reply, ApiError> {
    let seg: Vec<&str> = segments.iter().map(String::as_str).collect();
    let get = *call.method == Method::GET;
    match seg.as_slice() {
        ["version"] if get => Ok(Reply::Json(
            200,
            json!({"major": "1", "minor": "32", "gitVersion": "v1.32.0-fake",
                   "gitCommit": "fake", "platform": "linux/amd64", "goVersion": "go1.23"}),
        )),
        ["api"] if get => Ok(Reply::Json(
            200,
            json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}),
        )),
        ["apis"] if get => Ok(Reply::Json(200, group_list())),
        ["apis", group] if get => group_doc(group)
            .map(|g| Reply::Json(200, g))
            .ok_or_else(not_found_path),
        ["api", "v1"] if get => Ok(Reply::Json(200, resource_list("", "v1"))),
        ["apis", group, version] if get => {
            if RESOURCES
                .iter()
                .any(|r| r.group == *group && r.version == *version)
            {
                Ok(Reply::Json(200, resource_list(group, version)))
            } else {
                Err(not_found_path())
            }
        }
        ["api", "v1", rest @ ..] => resource_call(state, "", "v1", rest, call),
        ["apis", group, version, rest @ ..] => resource_call(state, group, version, rest, call),
        _ => Err(not_found_path()),
    }
}

fn group_doc(group: &str) -> Option<Value> {
    let r = RESOURCES
        .iter()
        .find(|r| r.group == group && !group.is_empty())?;
    let gv = json!({"groupVersion": r.api_version(), "version": r.version});
    Some(
        json!({"kind": "APIGroup", "apiVersion": "v1", "name": group,
                "versions": [gv.clone()], "preferredVersion": gv}),
    )
}

fn group_list() -> Value {
    let mut groups: Vec<&str> = RESOURCES
        .iter()
        .map(|r| r.group)
        .filter(|g| !g.is_empty())
        .collect();
    groups.dedup();
    let groups: Vec<Value> = groups.into_iter().filter_map(group_doc).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

fn resource_list(group: &str, version: &str) -> Value {
    let mut resources = Vec::new();
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        resources.push(json!({
            "name": r.plural, "singularName": r.singular, "namespaced": r.namespaced,
            "kind": r.kind, "shortNames": r.short,
            "verbs": ["create", "delete", "deletecollection", "get", "list", "patch",
                      "update", "watch"],
        }));
        if r.status_sub {
            resources.push(
                json!({"name": format!("{}/status", r.plural), "singularName": "",
                "namespaced": r.namespaced, "kind": r.kind, "verbs": ["get", "patch", "update"]}),
            );
        }
        if r.scale_sub {
            resources.push(
                json!({"name": format!("{}/scale", r.plural), "singularName": "",
                "namespaced": r.namespaced, "group": "autoscaling", "version": "v1",
                "kind": "Scale", "verbs": ["get", "patch", "update"]}),
            );
        }
        if r.kind == "Pod" {
            resources.push(
                json!({"name": "pods/exec", "singularName": "", "namespaced": true,
                "kind": "PodExecOptions", "verbs": ["create", "get"]}),
            );
            resources.push(
                json!({"name": "pods/log", "singularName": "", "namespaced": true,
                "kind": "Pod", "verbs": ["get"]}),
            );
        }
    }
    let gv = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
           "resources": resources})
}

/// A resource path: `[namespaces/NS/]PLURAL[/NAME[/SUB]]`.
fn resource_call(
    state: &State,
    group: &str,
    version: &str,
    rest: &[&str],
    call: &Call<'_>,
) -> Result<Reply, ApiError> {
    let namespaced_path = rest.len() >= 3
        && rest[0] == "namespaces"
        && resource_at(group, version, rest[2]).is_some_and(|r| r.namespaced);
    let (ns, rest) = if namespaced_path {
        (Some(rest[1]), &rest[2..])
    } else {
        (None, rest)
    };
    let Some(plural) = rest.first() else {
        return Err(not_found_path());
    };
    let res = resource_at(group, version, plural).ok_or_else(not_found_path)?;
    let name = rest.get(1).copied();
    let sub = rest.get(2).copied();
    if rest.len() > 3 || (res.namespaced && ns.is_none() && name.is_some()) {
        return Err(not_found_path());
    }
    let ns = ns.unwrap_or("");
    let method = call.method.clone();
    match (method, name, sub) {
        (Method::GET, None, None) => list(state, res, ns, call),
        (Method::POST, None, None) => create(state, res, ns, call),
        (Method::GET, Some(name), None | Some("status")) => {
            let inner = state.lock();
            inner
                .get(res, ns, name)
                .cloned()
                .map(|o| Reply::Json(200, o))
                .ok_or_else(|| ApiError::not_found(res, name))
        }
        (Method::GET, Some(name), Some("scale")) if res.scale_sub => {
            let inner = state.lock();
            let object = inner
                .get(res, ns, name)
                .ok_or_else(|| ApiError::not_found(res, name))?;
            Ok(Reply::Json(200, scale_of(object)))
        }
        (Method::GET, Some(name), Some("log")) if res.kind == "Pod" => {
            logs(state, ns, name, call.query)
        }
        (Method::PUT, Some(name), None | Some("status")) => {
            replace(state, res, ns, name, sub == Some("status"), call)
        }
        (Method::PUT | Method::PATCH, Some(name), Some("scale")) if res.scale_sub => {
            scale(state, res, ns, name, call)
        }
        (Method::PATCH, Some(name), None | Some("status")) => {
            patch_object(state, res, ns, name, sub == Some("status"), call)
        }
        (Method::DELETE, Some(name), None) => delete(state, res, ns, name, call),
        _ => Err(ApiError::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )),
    }
}

fn list(state: &State, res: &'static Res, ns: &str, call: &Call<'_>) -> Result<Reply, ApiError> {
    if flag(call.query, "watch") {
        return Err(ApiError::bad_request(
            "the fake API server does not serve watches",
        ));
    }
    let labels = Labels::parse(param(call.query, "labelSelector").unwrap_or(""))?;
    let fields = Fields::parse(param(call.query, "fieldSelector").unwrap_or(""), res.kind)?;
    let inner = state.lock();
    let q = res.qualified();
    let items: Vec<Value> = inner
        .objects
        .iter()
        .filter(|((r, n, _), _)| *r == q && (ns.is_empty() || n == ns))
        .map(|(_, v)| v)
        .filter(|v| labels.matches(v) && fields.matches(v))
        .map(|v| {
            // Items of a typed list carry no apiVersion and kind.
            let mut v = v.clone();
            if let Some(m) = v.as_object_mut() {
                m.remove("apiVersion");
                m.remove("kind");
            }
            v
        })
        .collect();
    Ok(Reply::Json(
        200,
        json!({"kind": format!("{}List", res.kind), "apiVersion": res.api_version(),
               "metadata": {"resourceVersion": inner.rv.to_string()}, "items": items}),
    ))
}

fn check_identity(res: &Res, ns: &str, name: Option<&str>, body: &Value) -> Result<(), ApiError> {
    let body_ns = str_at(body, "metadata.namespace");
    if res.namespaced && !body_ns.is_empty() && body_ns != ns {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the \
             request",
        ));
    }
    let kind = str_at(body, "kind");
    if !kind.is_empty() && kind != res.kind {
        return Err(ApiError::bad_request(format!(
            "the kind of the provided object ({kind}) does not match the resource ({})",
            res.plural
        )));
    }
    if let Some(name) = name {
        let body_name = str_at(body, "metadata.name");
        if !body_name.is_empty() && body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL \
                 ({name})"
            )));
        }
    }
    Ok(())
}

fn namespace_must_exist(inner: &super::store::Inner, res: &Res, ns: &str) -> Result<(), ApiError> {
    if res.namespaced && !inner.namespace_exists(ns) {
        let ns_res = resource_at("", "v1", "namespaces").expect("namespaces");
        return Err(ApiError::not_found(ns_res, ns));
    }
    Ok(())
}

/// The managedFields entry of a client's write (create, replace, patch) that sent `body`.
fn updated_by<'a>(manager: &'a str, body: &Value) -> Managed<'a> {
    Managed {
        manager,
        operation: "Update",
        fields: patch::fields_v1(body),
    }
}

fn create(state: &State, res: &'static Res, ns: &str, call: &Call<'_>) -> Result<Reply, ApiError> {
    let body = call.json_body()?;
    check_identity(res, ns, None, &body)?;
    let mut inner = state.lock();
    let mut name = str_at(&body, "metadata.name").to_owned();
    if name.is_empty() {
        let prefix = str_at(&body, "metadata.generateName");
        if prefix.is_empty() {
            return Err(ApiError::invalid(
                res,
                "",
                "metadata.name",
                "Required value: name or generateName is required",
            ));
        }
        name = format!("{prefix}{:05x}", inner.rv + 1);
    }
    namespace_must_exist(&inner, res, ns)?;
    if inner.get(res, ns, &name).is_some() {
        return Err(ApiError::already_exists(res, &name));
    }
    let manager = call.manager();
    let managed = Some(updated_by(&manager, &body));
    let stored = inner.write(res, ns, &name, body, Via::Main, managed)?;
    Ok(Reply::Json(201, stored))
}

fn replace(
    state: &State,
    res: &'static Res,
    ns: &str,
    name: &str,
    status: bool,
    call: &Call<'_>,
) -> Result<Reply, ApiError> {
    let body = call.json_body()?;
    check_identity(res, ns, Some(name), &body)?;
    let mut inner = state.lock();
    let old = inner
        .get(res, ns, name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(res, name))?;
    let sent = str_at(&body, "metadata.resourceVersion");
    if !sent.is_empty() && sent != str_at(&old, "metadata.resourceVersion") {
        return Err(ApiError::conflict(res, name));
    }
    let manager = call.manager();
    let managed = Some(updated_by(&manager, &body));
    let stored = inner.write(
        res,
        ns,
        name,
        body,
        if status { Via::Status } else { Via::Main },
        managed,
    )?;
    Ok(Reply::Json(200, stored))
}

/// The `Scale` view of a workload.
fn scale_of(object: &Value) -> Value {
    let selector = at(object, "spec.selector.matchLabels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    json!({
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": str_at(object, "metadata.name"),
            "namespace": str_at(object, "metadata.namespace"),
            "uid": str_at(object, "metadata.uid"),
            "resourceVersion": str_at(object, "metadata.resourceVersion"),
            "creationTimestamp": str_at(object, "metadata.creationTimestamp"),
        },
        "spec": {"replicas": at(object, "spec.replicas").cloned().unwrap_or(json!(1))},
        "status": {"replicas": at(object, "status.replicas").cloned().unwrap_or(json!(0)),
                   "selector": selector},
    })
}

fn scale(
    state: &State,
    res: &'static Res,
    ns: &str,
    name: &str,
    call: &Call<'_>,
) -> Result<Reply, ApiError> {
    let body = call.json_body()?;
    let mut inner = state.lock();
    let old = inner
        .get(res, ns, name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(res, name))?;
    let mut view = scale_of(&old);
    if *call.method == Method::PUT {
        view = body;
    } else {
        apply_patch(res, name, call.content_type, &mut view, &body)?;
    }
    let sent = str_at(&view, "metadata.resourceVersion");
    if !sent.is_empty() && sent != str_at(&old, "metadata.resourceVersion") {
        return Err(ApiError::conflict(res, name));
    }
    let mut object = old;
    obj_at(&mut object, "spec").insert(
        "replicas".into(),
        at(&view, "spec.replicas").cloned().unwrap_or(json!(0)),
    );
    let stored = inner.write(res, ns, name, object, Via::Main, None)?;
    Ok(Reply::Json(200, scale_of(&stored)))
}

fn apply_patch(
    res: &Res,
    name: &str,
    content_type: &str,
    doc: &mut Value,
    body: &Value,
) -> Result<(), ApiError> {
    let media = content_type.split(';').next().unwrap_or("").trim();
    match media {
        "application/merge-patch+json" => patch::merge(doc, body),
        "application/strategic-merge-patch+json" => patch::strategic(doc, body),
        "application/json-patch+json" => patch::json(doc, body).map_err(|e| {
            ApiError::invalid(
                res,
                name,
                "patch",
                &format!("the JSON patch did not apply: {e}"),
            )
        })?,
        other => {
            return Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                format!(
                    "the body of the request was in an unknown format - accepted media types \
                     include: application/json-patch+json, application/merge-patch+json, \
                     application/apply-patch+yaml (got {other})"
                ),
            ));
        }
    }
    Ok(())
}

fn patch_object(
    state: &State,
    res: &'static Res,
    ns: &str,
    name: &str,
    status: bool,
    call: &Call<'_>,
) -> Result<Reply, ApiError> {
    let body = call.json_body()?;
    let apply = call
        .content_type
        .starts_with("application/apply-patch+yaml");
    let mut inner = state.lock();
    let old = inner.get(res, ns, name).cloned();
    if apply {
        let Some(manager) = param(call.query, "fieldManager") else {
            return Err(ApiError::invalid(
                res,
                name,
                "fieldManager",
                "Required value: is required for apply patch",
            ));
        };
        check_identity(res, ns, Some(name), &body)?;
        if str_at(&body, "apiVersion").is_empty() || str_at(&body, "kind").is_empty() {
            return Err(ApiError::bad_request(
                "apiVersion and kind must be set in an applied configuration",
            ));
        }
        let fields = patch::fields_v1(&body);
        let managed = Some(Managed {
            manager,
            operation: "Apply",
            fields,
        });
        return match old {
            None => {
                namespace_must_exist(&inner, res, ns)?;
                let stored = inner.write(res, ns, name, body, Via::Main, managed)?;
                Ok(Reply::Json(201, stored))
            }
            Some(old) => {
                let sent = str_at(&body, "metadata.resourceVersion");
                if !sent.is_empty() && sent != str_at(&old, "metadata.resourceVersion") {
                    return Err(ApiError::conflict(res, name));
                }
                let mut doc = old;
                patch::apply(&mut doc, &body);
                let via = if status { Via::Status } else { Via::Main };
                let stored = inner.write(res, ns, name, doc, via, managed)?;
                Ok(Reply::Json(200, stored))
            }
        };
    }
    let old = old.ok_or_else(|| ApiError::not_found(res, name))?;
    let mut doc = old.clone();
    apply_patch(res, name, call.content_type, &mut doc, &body)?;
    // A resourceVersion in the patched object is a precondition.
    if str_at(&doc, "metadata.resourceVersion") != str_at(&old, "metadata.resourceVersion") {
        return Err(ApiError::conflict(res, name));
    }
    if str_at(&doc, "metadata.name") != name {
        return Err(ApiError::bad_request(
            "metadata.name cannot be changed by a patch",
        ));
    }
    let manager = call.manager();
    let managed = Some(updated_by(&manager, &body));
    let stored = inner.write(
        res,
        ns,
        name,
        doc,
        if status { Via::Status } else { Via::Main },
        managed,
    )?;
    Ok(Reply::Json(200, stored))
}

fn delete(
    state: &State,
    res: &'static Res,
    ns: &str,
    name: &str,
    call: &Call<'_>,
) -> Result<Reply, ApiError> {
    let options: Value = if call.body.is_empty() {
        json!({})
    } else {
        call.json_body()?
    };
    let propagation = param(call.query, "propagationPolicy")
        .map(str::to_owned)
        .or_else(|| str_at(&options, "propagationPolicy").to_owned().into())
        .filter(|p| !p.is_empty());
    let grace = at(&options, "gracePeriodSeconds")
        .and_then(Value::as_i64)
        .or_else(|| param(call.query, "gracePeriodSeconds").and_then(|g| g.parse().ok()));
    let mut inner = state.lock();
    let old = inner
        .get(res, ns, name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(res, name))?;
    let precondition = str_at(&options, "preconditions.resourceVersion");
    if !precondition.is_empty() && precondition != str_at(&old, "metadata.resourceVersion") {
        return Err(ApiError::conflict(res, name));
    }
    let success = || {
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
               "details": {"name": name, "group": res.group, "kind": res.plural,
                           "uid": str_at(&old, "metadata.uid")}})
    };
    let marked =
        |inner: &super::store::Inner| inner.get(res, ns, name).cloned().unwrap_or(Value::Null);
    let has_finalizers = at(&old, "metadata.finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty());
    match res.kind {
        "Pod" if grace == Some(0) => {
            inner.remove(res, ns, name);
            Ok(Reply::Json(200, success()))
        }
        "Pod" => {
            inner.terminate_pod(ns, name);
            Ok(Reply::Json(200, marked(&inner)))
        }
        "Namespace" => {
            inner.mark_deleting(res, ns, name, None);
            if let Some(object) = inner.objects.get_mut(&key(res, "", name)) {
                obj_at(object, "status").insert("phase".into(), json!("Terminating"));
            }
            Ok(Reply::Json(200, marked(&inner)))
        }
        _ => {
            // batch/v1 Jobs orphan their pods unless told otherwise, for compatibility.
            let default = if res.kind == "Job" {
                "Orphan"
            } else {
                "Background"
            };
            match propagation.as_deref().unwrap_or(default) {
                "Foreground" => {
                    inner.mark_deleting(res, ns, name, Some("foregroundDeletion"));
                    Ok(Reply::Json(200, marked(&inner)))
                }
                "Orphan" | "Background" | "" if has_finalizers => {
                    inner.mark_deleting(res, ns, name, None);
                    Ok(Reply::Json(200, marked(&inner)))
                }
                "Orphan" => {
                    orphan_dependents(&mut inner, str_at(&old, "metadata.uid"));
                    inner.remove(res, ns, name);
                    Ok(Reply::Json(200, success()))
                }
                "Background" => {
                    inner.remove(res, ns, name);
                    Ok(Reply::Json(200, success()))
                }
                other => Err(ApiError::invalid(
                    res,
                    name,
                    "propagationPolicy",
                    &format!(
                        "Unsupported value: \"{other}\": supported values: \"Foreground\", \
                         \"Background\", \"Orphan\""
                    ),
                )),
            }
        }
    }
}

/// Strips owner references to `uid` from every object.
fn orphan_dependents(inner: &mut super::store::Inner, uid: &str) {
    for object in inner.objects.values_mut() {
        let Some(refs) = object
            .get_mut("metadata")
            .and_then(|m| m.get_mut("ownerReferences"))
            .and_then(Value::as_array_mut)
        else {
            continue;
        };
        refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(uid));
    }
}

fn logs(
    state: &State,
    ns: &str,
    name: &str,
    query: &[(String, String)],
) -> Result<Reply, ApiError> {
    let pod_res = resource_at("", "v1", "pods").expect("pods");
    let inner = state.lock();
    let pod = inner
        .get(pod_res, ns, name)
        .ok_or_else(|| ApiError::not_found(pod_res, name))?;
    let containers: Vec<&str> = at(pod, "spec.containers")
        .and_then(Value::as_array)
        .map(|c| {
            c.iter()
                .filter_map(|c| c.get("name").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default();
    match param(query, "container") {
        Some(c) if !containers.contains(&c) => {
            return Err(ApiError::bad_request(format!(
                "container {c} is not valid for pod {name}"
            )));
        }
        None if containers.len() > 1 => {
            return Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                containers.join(" ")
            )));
        }
        _ => {}
    }
    if flag(query, "previous") {
        return Err(ApiError::bad_request(format!(
            "previous terminated container \"{}\" in pod \"{name}\" not found",
            param(query, "container")
                .or(containers.first().copied())
                .unwrap_or("")
        )));
    }
    let since = param(query, "sinceSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .map(|s| SystemTime::now() - Duration::from_secs(s));
    let mut lines: Vec<&str> = inner
        .logs
        .get(&(ns.to_owned(), name.to_owned()))
        .map(|l| {
            l.iter()
                .filter(|(t, _)| since.is_none_or(|s| *t >= s))
                .map(|(_, line)| line.as_str())
                .collect()
        })
        .unwrap_or_default();
    if let Some(tail) = param(query, "tailLines").and_then(|t| t.parse::<usize>().ok()) {
        let skip = lines.len().saturating_sub(tail);
        lines.drain(..skip);
    }
    let mut text = lines.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    Ok(Reply::Text(text))
}
