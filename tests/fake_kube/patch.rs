//! Patch flavours as the API server applies them: JSON merge patch (RFC 7386), JSON patch
//! (RFC 6902), strategic merge patch (merge patch, but lists with a patch merge key are merged
//! item by item: containers by `name`, ports by `containerPort`, …; `$patch: delete|replace`
//! directives) and server-side apply (a strategic-style merge of the applied configuration;
//! conflicts between managers are not modelled).

use serde_json::{Map, Value};

/// The `patchMergeKey` of a list field, as the Kubernetes types declare it.
fn merge_key(field: &str, items: &[Value]) -> Option<&'static str> {
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "volumeClaimTemplates" => Some("name"),
        "volumeMounts" => Some("mountPath"),
        "volumeDevices" => Some("devicePath"),
        "hostAliases" => Some("ip"),
        "conditions" => Some("type"),
        // Container ports merge on containerPort; Service ports on port.
        "ports" => {
            if items.iter().any(|i| i.get("containerPort").is_some()) {
                Some("containerPort")
            } else {
                Some("port")
            }
        }
        _ => None,
    }
}

/// RFC 7386.
pub fn merge(target: &mut Value, patch: &Value) {
    json_patch::merge(target, patch);
}

/// A strategic merge patch.
pub fn strategic(target: &mut Value, patch: &Value) {
    strategic_in(target, patch, true);
}

/// Server-side apply of an applied configuration onto the live object.
pub fn apply(target: &mut Value, applied: &Value) {
    strategic_in(target, applied, false);
}

fn strategic_in(target: &mut Value, patch: &Value, directives: bool) {
    let Some(patch_map) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if directives && patch_map.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut replaced = patch_map.clone();
        replaced.remove("$patch");
        *target = Value::Object(replaced);
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let target_map = target.as_object_mut().expect("an object");
    for (key, value) in patch_map {
        if key.starts_with('$') {
            continue; // $patch, $retainKeys, $setElementOrder/…: directives, not fields
        }
        if value.is_null() {
            target_map.remove(key);
            continue;
        }
        match (target_map.get_mut(key), value) {
            (Some(existing @ Value::Object(_)), Value::Object(_)) => {
                strategic_in(existing, value, directives);
            }
            (Some(Value::Array(existing)), Value::Array(items)) => match merge_key(key, items) {
                Some(mk) if items.iter().all(Value::is_object) => {
                    merge_list(existing, items, mk, directives);
                }
                _ => existing.clone_from(items),
            },
            _ => {
                let mut fresh = Value::Null;
                strip_directives(&mut fresh, value);
                target_map.insert(key.clone(), fresh);
            }
        }
    }
}

fn strip_directives(out: &mut Value, value: &Value) {
    match value {
        Value::Object(m) => {
            let mut clean = Map::new();
            for (k, v) in m {
                if k.starts_with('$') {
                    continue;
                }
                let mut inner = Value::Null;
                strip_directives(&mut inner, v);
                clean.insert(k.clone(), inner);
            }
            *out = Value::Object(clean);
        }
        Value::Array(items) => {
            *out = Value::Array(
                items
                    .iter()
                    .filter(|i| i.get("$patch").and_then(Value::as_str) != Some("delete"))
                    .map(|i| {
                        let mut inner = Value::Null;
                        strip_directives(&mut inner, i);
                        inner
                    })
                    .collect(),
            );
        }
        other => *out = other.clone(),
    }
}

fn merge_list(existing: &mut Vec<Value>, items: &[Value], mk: &str, directives: bool) {
    for item in items {
        let Some(id) = item.get(mk) else {
            existing.push(item.clone());
            continue;
        };
        let position = existing.iter().position(|e| e.get(mk) == Some(id));
        if directives && item.get("$patch").and_then(Value::as_str) == Some("delete") {
            if let Some(i) = position {
                existing.remove(i);
            }
            continue;
        }
        match position {
            Some(i) => strategic_in(&mut existing[i], item, directives),
            None => {
                let mut fresh = Value::Null;
                strip_directives(&mut fresh, item);
                existing.push(fresh);
            }
        }
    }
}

/// RFC 6902; the error text is the json-patch crate's.
pub fn json(target: &mut Value, ops: &Value) -> Result<(), String> {
    let ops: json_patch::Patch = serde_json::from_value(ops.clone()).map_err(|e| e.to_string())?;
    json_patch::patch(target, &ops).map_err(|e| e.to_string())
}

/// The `fieldsV1` set of an applied configuration: `f:` for fields, `k:{…}` for list items
/// with a merge key, lists without one owned whole.
pub fn fields_v1(applied: &Value) -> Value {
    fn walk(value: &Value, field: Option<&str>) -> Value {
        let mut out = Map::new();
        match value {
            Value::Object(m) => {
                for (k, v) in m {
                    if matches!(k.as_str(), "apiVersion" | "kind") && field.is_none() {
                        continue;
                    }
                    out.insert(format!("f:{k}"), walk(v, Some(k)));
                }
            }
            Value::Array(items) => {
                if let Some(mk) = field.and_then(|f| merge_key(f, items)) {
                    for item in items {
                        if let Some(id) = item.get(mk) {
                            let k = format!("k:{{\"{mk}\":{id}}}");
                            let mut inner = walk(item, None);
                            if let Some(m) = inner.as_object_mut() {
                                m.insert(".".into(), Value::Object(Map::new()));
                            }
                            out.insert(k, inner);
                        }
                    }
                }
            }
            _ => {}
        }
        Value::Object(out)
    }
    let mut set = walk(applied, None);
    if let Some(meta) = set.get_mut("f:metadata").and_then(Value::as_object_mut) {
        meta.remove("f:name");
        meta.remove("f:namespace");
        meta.remove("f:resourceVersion");
    }
    set
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn strategic_merges_containers_by_name() {
        let mut live = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "openbao", "image": "openbao:2.6.1", "ports": [{"containerPort": 8200}]},
            {"name": "sidecar", "image": "busybox"},
        ]}}}});
        strategic(
            &mut live,
            &json!({"spec": {"template": {"spec": {"containers": [
                {"name": "openbao", "image": "openbao:2.7.2"},
                {"name": "sidecar", "$patch": "delete"},
                {"name": "exporter", "image": "exporter:1"},
            ]}}}}),
        );
        assert_eq!(
            live,
            json!({"spec": {"template": {"spec": {"containers": [
                {"name": "openbao", "image": "openbao:2.7.2", "ports": [{"containerPort": 8200}]},
                {"name": "exporter", "image": "exporter:1"},
            ]}}}})
        );
        // A merge patch replaces the list.
        let mut live = json!({"containers": [{"name": "a", "image": "x"}, {"name": "b"}]});
        merge(
            &mut live,
            &json!({"containers": [{"name": "a", "image": "y"}]}),
        );
        assert_eq!(live, json!({"containers": [{"name": "a", "image": "y"}]}));
    }

    #[test]
    fn fields_v1_names_fields_and_keyed_items() {
        let set = fields_v1(&json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "x", "labels": {"a": "b"}}, "data": {"k": "v"},
            "spec": {"containers": [{"name": "c", "image": "i"}]}}));
        assert_eq!(
            set,
            json!({"f:metadata": {"f:labels": {"f:a": {}}}, "f:data": {"f:k": {}},
                   "f:spec": {"f:containers": {"k:{\"name\":\"c\"}": {
                       ".": {}, "f:name": {}, "f:image": {}}}}})
        );
    }
}
