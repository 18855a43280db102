//! The kinds a runbook can name without an `api_version`: common built-in resources, by kind,
//! plural or short name (any case). Other kinds are looked up by discovery.

use ::kube::core::{ApiResource, GroupVersionKind};

/// One built-in resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Builtin {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub namespaced: bool,
    /// Short names, as `kubectl api-resources` lists them.
    pub short: &'static [&'static str],
}

impl Builtin {
    /// `group/version`, or `version` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub fn api_resource(&self) -> ApiResource {
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(self.group, self.version, self.kind),
            self.plural,
        )
    }
}

const fn b(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
    short: &'static [&'static str],
) -> Builtin {
    Builtin {
        group,
        version,
        kind,
        plural,
        namespaced,
        short,
    }
}

/// The built-in table.
pub(crate) const BUILTINS: &[Builtin] = &[
    b("", "v1", "Pod", "pods", true, &["po"]),
    b("", "v1", "ConfigMap", "configmaps", true, &["cm"]),
    b("", "v1", "Secret", "secrets", true, &[]),
    b("", "v1", "Service", "services", true, &["svc"]),
    b("", "v1", "ServiceAccount", "serviceaccounts", true, &["sa"]),
    b("", "v1", "Endpoints", "endpoints", true, &["ep"]),
    b("", "v1", "Event", "events", true, &["ev"]),
    b(
        "",
        "v1",
        "PersistentVolumeClaim",
        "persistentvolumeclaims",
        true,
        &["pvc"],
    ),
    b(
        "",
        "v1",
        "PersistentVolume",
        "persistentvolumes",
        false,
        &["pv"],
    ),
    b("", "v1", "Namespace", "namespaces", false, &["ns"]),
    b("", "v1", "Node", "nodes", false, &["no"]),
    b("apps", "v1", "StatefulSet", "statefulsets", true, &["sts"]),
    b("apps", "v1", "Deployment", "deployments", true, &["deploy"]),
    b("apps", "v1", "DaemonSet", "daemonsets", true, &["ds"]),
    b("apps", "v1", "ReplicaSet", "replicasets", true, &["rs"]),
    b("batch", "v1", "Job", "jobs", true, &[]),
    b("batch", "v1", "CronJob", "cronjobs", true, &["cj"]),
    b(
        "policy",
        "v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
        true,
        &["pdb"],
    ),
    b(
        "networking.k8s.io",
        "v1",
        "Ingress",
        "ingresses",
        true,
        &["ing"],
    ),
    b(
        "networking.k8s.io",
        "v1",
        "NetworkPolicy",
        "networkpolicies",
        true,
        &["netpol"],
    ),
    b("coordination.k8s.io", "v1", "Lease", "leases", true, &[]),
    b(
        "autoscaling",
        "v2",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
        true,
        &["hpa"],
    ),
    b(
        "rbac.authorization.k8s.io",
        "v1",
        "Role",
        "roles",
        true,
        &[],
    ),
    b(
        "rbac.authorization.k8s.io",
        "v1",
        "RoleBinding",
        "rolebindings",
        true,
        &[],
    ),
    b(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRole",
        "clusterroles",
        false,
        &[],
    ),
    b(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
        false,
        &[],
    ),
    b(
        "storage.k8s.io",
        "v1",
        "StorageClass",
        "storageclasses",
        false,
        &["sc"],
    ),
    b(
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        false,
        &["crd", "crds"],
    ),
];

/// The built-in resource a runbook means by `name` (a kind, plural or short name, any case).
pub(crate) fn builtin(name: &str) -> Option<&'static Builtin> {
    let name = name.trim();
    BUILTINS.iter().find(|r| {
        r.kind.eq_ignore_ascii_case(name)
            || r.plural.eq_ignore_ascii_case(name)
            || r.short.iter().any(|s| s.eq_ignore_ascii_case(name))
    })
}

/// The built-in resource for an exact `apiVersion` and kind, as a manifest names them.
pub(crate) fn builtin_exact(api_version: &str, kind: &str) -> Option<&'static Builtin> {
    BUILTINS
        .iter()
        .find(|r| r.kind == kind && r.api_version() == api_version)
}

/// The canonical kind for `name` if it is built in, else `name` as written.
pub(crate) fn canonical_kind(name: &str) -> &str {
    builtin(name).map_or(name, |r| r.kind)
}

/// Splits `group/version` (or a core `version`) into its parts.
pub(crate) fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.trim().split_once('/') {
        Some((group, version)) => (group, version),
        None => ("", api_version.trim()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_found_by_kind_plural_or_short_name() {
        for name in ["StatefulSet", "statefulset", "statefulsets", "sts", "STS"] {
            let r = builtin(name).unwrap();
            assert_eq!(
                (r.group, r.version, r.plural),
                ("apps", "v1", "statefulsets")
            );
        }
        assert_eq!(builtin("pvc").unwrap().kind, "PersistentVolumeClaim");
        assert!(!builtin("ns").unwrap().namespaced);
        assert_eq!(builtin("Widget"), None);
        assert_eq!(canonical_kind("deploy"), "Deployment");
        assert_eq!(canonical_kind("Widget"), "Widget");
        let ar = builtin("Job").unwrap().api_resource();
        assert_eq!(
            (
                ar.api_version.as_str(),
                ar.kind.as_str(),
                ar.plural.as_str()
            ),
            ("batch/v1", "Job", "jobs")
        );
        assert_eq!(builtin("cm").unwrap().api_version(), "v1");
        assert_eq!(
            builtin_exact("apps/v1", "Deployment").unwrap().plural,
            "deployments"
        );
        assert_eq!(builtin_exact("apps/v1beta1", "Deployment"), None);
        assert_eq!(split_api_version("apps/v1"), ("apps", "v1"));
        assert_eq!(split_api_version("v1"), ("", "v1"));
    }
}
