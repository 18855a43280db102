//! `list: "*"`: every object in one namespace, of every kind the API server can list there —
//! what an operator looks through when a namespace will not go away (which objects still hold
//! finalizers?), as the namespace controller itself does.
//!
//! The kinds come from discovery at the time of the step (so a CRD installed a moment ago
//! counts), each group at its preferred version, groups in kubectl's alphabetical order (the
//! core group first). Kinds that cannot be listed (`bindings`, the access reviews) are
//! skipped. An object served by two groups — the core `events` and `events.k8s.io` — is listed
//! once, under the first group. A kind whose list is refused (403) fails the whole operation:
//! a partial answer would look like a complete one. A kind that vanished between discovery and
//! its list (404: its CRD was just deleted) has nothing left to list and is skipped.

use std::collections::HashSet;

use ::kube::api::{Api, DynamicObject, ListParams};
use ::kube::core::ApiResource;
use ::kube::discovery::{ApiCapabilities, Discovery, Scope, verbs};
use futures_util::{StreamExt as _, TryStreamExt as _, stream};
use serde_json::{Value, json};

use super::client::Conn;
use super::errors::{api_error, discovery_error};
use crate::StepError;

/// How many lists are in flight at once.
const PARALLEL_LISTS: usize = 8;

/// The resources worth listing in a namespace, in the order given.
pub(crate) fn listable(
    resources: impl IntoIterator<Item = (ApiResource, ApiCapabilities)>,
) -> Vec<ApiResource> {
    resources
        .into_iter()
        .filter(|(_, caps)| caps.scope == Scope::Namespaced && caps.supports_operation(verbs::LIST))
        .map(|(resource, _)| resource)
        .collect()
}

/// The items of every list, in order, each with its `apiVersion` and `kind` (list items come
/// without them), and each object once: an item whose `metadata.uid` came earlier is dropped.
pub(crate) fn merge(lists: Vec<(ApiResource, Vec<Value>)>) -> Vec<Value> {
    let mut seen = HashSet::new();
    let mut items = Vec::new();
    for (resource, objects) in lists {
        for mut object in objects {
            let uid = object
                .pointer("/metadata/uid")
                .and_then(Value::as_str)
                .map(str::to_owned);
            if let Some(uid) = uid {
                if !seen.insert(uid) {
                    continue;
                }
            }
            if let Some(map) = object.as_object_mut() {
                map.entry("apiVersion")
                    .or_insert_with(|| json!(resource.api_version));
                map.entry("kind").or_insert_with(|| json!(resource.kind));
            }
            items.push(object);
        }
    }
    items
}

/// `plural.group` (or `plural` for the core group), as `kubectl api-resources` names a resource.
fn resource_name(resource: &ApiResource) -> String {
    if resource.group.is_empty() {
        resource.plural.clone()
    } else {
        format!("{}.{}", resource.plural, resource.group)
    }
}

/// Lists every listable kind in `namespace` with the given selectors: `{items}`.
pub(crate) async fn list_every_kind(
    conn: &Conn,
    namespace: &str,
    labels: Option<&str>,
    fields: Option<&str>,
) -> Result<Value, StepError> {
    let discovery = Discovery::new(conn.client.clone())
        .run()
        .await
        .map_err(|e| discovery_error(conn, "the kinds it serves", e))?;
    let resources = listable(
        discovery
            .groups_alphabetical()
            .into_iter()
            .flat_map(::kube::discovery::ApiGroup::recommended_resources),
    );
    let mut params = ListParams::default();
    if let Some(labels) = labels {
        params = params.labels(labels);
    }
    if let Some(fields) = fields {
        params = params.fields(fields);
    }
    let selectors: Vec<&str> = [labels, fields].into_iter().flatten().collect();
    let suffix = if selectors.is_empty() {
        String::new()
    } else {
        format!(" ({})", selectors.join("; "))
    };
    let lists: Vec<(ApiResource, Vec<Value>)> = stream::iter(resources)
        .map(|resource| {
            let api: Api<DynamicObject> =
                Api::namespaced_with(conn.client.clone(), namespace, &resource);
            let params = params.clone();
            let shown = format!("{} in {namespace}{suffix}", resource_name(&resource));
            async move {
                match api.list(&params).await {
                    Ok(listed) => {
                        let objects = listed
                            .items
                            .iter()
                            .map(|o| serde_json::to_value(o).unwrap_or(Value::Null))
                            .collect();
                        Ok((resource, objects))
                    }
                    Err(::kube::Error::Api(r)) if r.code == 404 => Ok((resource, Vec::new())),
                    Err(e) => Err(api_error(conn, "listing", &shown, e)),
                }
            }
        })
        .buffered(PARALLEL_LISTS)
        .try_collect()
        .await?;
    Ok(json!({ "items": merge(lists) }))
}

#[cfg(test)]
mod tests {
    use ::kube::core::GroupVersionKind;

    use super::*;

    fn resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
    }

    fn caps(scope: Scope, operations: &[&str]) -> ApiCapabilities {
        ApiCapabilities {
            scope,
            subresources: Vec::new(),
            operations: operations.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn only_namespaced_kinds_that_can_be_listed_are_listed() {
        let found = listable([
            (
                resource("", "v1", "ConfigMap", "configmaps"),
                caps(Scope::Namespaced, &["create", "get", "list", "delete"]),
            ),
            (
                resource("", "v1", "Binding", "bindings"),
                caps(Scope::Namespaced, &["create"]),
            ),
            (
                resource("", "v1", "Node", "nodes"),
                caps(Scope::Cluster, &["get", "list"]),
            ),
            (
                resource("runbook.test", "v1", "Widget", "widgets"),
                caps(Scope::Namespaced, &["get", "list", "patch"]),
            ),
        ]);
        let names: Vec<String> = found.iter().map(resource_name).collect();
        assert_eq!(names, ["configmaps", "widgets.runbook.test"]);
    }

    #[test]
    fn items_carry_their_kind_and_an_object_served_twice_is_listed_once() {
        let event = |uid: &str| json!({"metadata": {"name": "e", "uid": uid}});
        let items = merge(vec![
            (
                resource("", "v1", "Event", "events"),
                vec![event("u1"), event("u2")],
            ),
            (resource("", "v1", "ConfigMap", "configmaps"), vec![]),
            (
                resource("events.k8s.io", "v1", "Event", "events"),
                vec![event("u2"), event("u3")],
            ),
            (
                resource("runbook.test", "v1", "Widget", "widgets"),
                vec![json!({"metadata": {"name": "no-uid"}})],
            ),
        ]);
        let shown: Vec<(String, String, String)> = items
            .iter()
            .map(|i| {
                (
                    i["apiVersion"].as_str().unwrap().to_owned(),
                    i["kind"].as_str().unwrap().to_owned(),
                    i["metadata"]["uid"].as_str().unwrap_or("-").to_owned(),
                )
            })
            .collect();
        assert_eq!(
            shown,
            [
                ("v1".into(), "Event".into(), "u1".into()),
                ("v1".into(), "Event".into(), "u2".into()),
                ("events.k8s.io/v1".into(), "Event".into(), "u3".into()),
                ("runbook.test/v1".into(), "Widget".into(), "-".into()),
            ]
        );
        assert_eq!(
            resource_name(&resource("apps", "v1", "Deployment", "deployments")),
            "deployments.apps"
        );
    }
}
