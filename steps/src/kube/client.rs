//! Connections to an API server: where the configuration comes from, and one client per
//! `(kubeconfig, context)` kept for the life of the process.
//!
//! The configuration is, in order: the spec's `kubeconfig` (with `context`); the environment's
//! `RUNBOOK_KUBECONFIG` (the CLI may set it), then `KUBECONFIG` (a `:`-separated list, merged
//! as kubectl does); `~/.kube/config`; and last the in-cluster service account. The namespace
//! defaults to the context's namespace, else `default`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use ::kube::config::{KubeConfigOptions, Kubeconfig};
use ::kube::core::{ApiResource, GroupVersionKind};
use ::kube::discovery::{self, Discovery, Scope};
use ::kube::{Client, Config};

use super::resources::{builtin, builtin_exact, canonical_kind, split_api_version};
use crate::StepError;
use crate::util::{cause, install_crypto_provider};

/// Where a connection's configuration comes from; equal keys share a client.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Source {
    /// One or more kubeconfig files, merged in order.
    Files(Vec<PathBuf>),
    /// The pod's service account.
    InCluster,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    source: Source,
    context: Option<String>,
}

/// A resolved kind: how to address it.
#[derive(Clone, Debug)]
pub(crate) struct Resolved {
    pub resource: ApiResource,
    pub namespaced: bool,
}

/// A client with what messages need to know about it.
pub(crate) struct Conn {
    pub client: Client,
    /// The context's namespace, else `default`.
    pub namespace: String,
    /// The API server's URL.
    pub server: String,
    /// Where the credentials came from, e.g. "kubeconfig /home/op/.kube/config (context prod)".
    pub origin: String,
    /// Kinds found by discovery, by `(api_version, kind)`.
    discovered: Mutex<HashMap<(String, String), Resolved>>,
}

fn failed(message: impl Into<String>) -> StepError {
    StepError::Failed {
        message: message.into(),
        output: None,
    }
}

type Conns = Mutex<HashMap<Key, Arc<Conn>>>;

fn conns() -> MutexGuard<'static, HashMap<Key, Arc<Conn>>> {
    static CONNS: OnceLock<Conns> = OnceLock::new();
    CONNS
        .get_or_init(Conns::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

/// `~/x` → `$HOME/x`.
fn expand(path: &str) -> PathBuf {
    match path.strip_prefix("~/") {
        Some(rest) => std::env::var_os("HOME")
            .map_or_else(|| PathBuf::from(path), |home| Path::new(&home).join(rest)),
        None => PathBuf::from(path),
    }
}

/// Splits a `KUBECONFIG`-style list; files that do not exist are skipped, as kubectl does.
fn path_list(list: &str) -> Vec<PathBuf> {
    list.split(':')
        .filter(|p| !p.trim().is_empty())
        .map(|p| expand(p.trim()))
        .filter(|p| p.exists())
        .collect()
}

fn source(kubeconfig: Option<&str>) -> Source {
    if let Some(path) = kubeconfig {
        // Named explicitly: a missing file is an error, reported when it is read.
        return Source::Files(vec![expand(path)]);
    }
    for var in ["RUNBOOK_KUBECONFIG", "KUBECONFIG"] {
        if let Ok(list) = std::env::var(var) {
            let paths = path_list(&list);
            if !paths.is_empty() {
                return Source::Files(paths);
            }
        }
    }
    if let Some(home) = std::env::var_os("HOME") {
        let default = Path::new(&home).join(".kube").join("config");
        if default.exists() {
            return Source::Files(vec![default]);
        }
    }
    Source::InCluster
}

/// The shared connection for a spec's `kubeconfig` and `context`.
pub(crate) async fn connect(
    kubeconfig: Option<&str>,
    context: Option<&str>,
) -> Result<Arc<Conn>, StepError> {
    let key = Key {
        source: source(kubeconfig),
        context: context.map(str::to_owned),
    };
    if let Some(conn) = conns().get(&key) {
        return Ok(conn.clone());
    }
    let conn = Arc::new(build(&key).await?);
    Ok(conns().entry(key).or_insert(conn).clone())
}

fn shown(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":")
}

async fn build(key: &Key) -> Result<Conn, StepError> {
    // rustls needs a process-wide provider; ring, as for the http and nats kinds.
    install_crypto_provider();
    let (config, origin) = match &key.source {
        Source::Files(paths) => {
            let mut merged: Option<Kubeconfig> = None;
            for path in paths {
                let one = Kubeconfig::read_from(path).map_err(|e| {
                    failed(format!(
                        "cannot read kubeconfig {}: {}",
                        path.display(),
                        cause(&e)
                    ))
                })?;
                merged = Some(match merged {
                    None => one,
                    Some(m) => m.merge(one).map_err(|e| {
                        failed(format!("cannot merge kubeconfig {}: {e}", path.display()))
                    })?,
                });
            }
            let kubeconfig = merged.unwrap_or_default();
            let files = shown(paths);
            let context = match &key.context {
                Some(c) => c.clone(),
                None => kubeconfig.current_context.clone().ok_or_else(|| {
                    failed(format!(
                        "kubeconfig {files} sets no current-context; give `context`"
                    ))
                })?,
            };
            if !kubeconfig.contexts.iter().any(|c| c.name == context) {
                let known: Vec<&str> = kubeconfig
                    .contexts
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect();
                return Err(failed(format!(
                    "kubeconfig {files} has no context `{context}` (it has: {})",
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                )));
            }
            let options = KubeConfigOptions {
                context: Some(context.clone()),
                ..KubeConfigOptions::default()
            };
            let config = Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|e| {
                    failed(format!(
                        "cannot use context `{context}` of kubeconfig {files}: {e}"
                    ))
                })?;
            (config, format!("kubeconfig {files} (context {context})"))
        }
        Source::InCluster => {
            let config = Config::incluster().map_err(|e| {
                failed(format!(
                    "no Kubernetes configuration: no `kubeconfig` in the spec, \
                     RUNBOOK_KUBECONFIG and KUBECONFIG unset, no ~/.kube/config, and not in a \
                     cluster ({e})"
                ))
            })?;
            (config, "the in-cluster service account".to_owned())
        }
    };
    let namespace = config.default_namespace.clone();
    let server = config.cluster_url.to_string();
    let server = server.trim_end_matches('/').to_owned();
    let client = Client::try_from(config).map_err(|e| {
        failed(format!(
            "cannot build a Kubernetes client for {origin}: {}",
            cause(&e)
        ))
    })?;
    tracing::debug!(%server, %origin, %namespace, "connected");
    Ok(Conn {
        client,
        namespace,
        server,
        origin,
        discovered: Mutex::default(),
    })
}

impl Conn {
    /// How to address `kind` (with `api_version` if given): the built-in table, else
    /// discovery (a pinned group/version, or a search of every group).
    pub(crate) async fn resolve(
        &self,
        kind: &str,
        api_version: Option<&str>,
    ) -> Result<Resolved, StepError> {
        let from_builtin = |b: &super::resources::Builtin| Resolved {
            resource: b.api_resource(),
            namespaced: b.namespaced,
        };
        match api_version {
            None => {
                if let Some(b) = builtin(kind) {
                    return Ok(from_builtin(b));
                }
            }
            Some(av) => {
                if let Some(b) = builtin_exact(av, canonical_kind(kind)) {
                    return Ok(from_builtin(b));
                }
            }
        }
        let cache_key = (api_version.unwrap_or("").to_owned(), kind.to_owned());
        if let Some(found) = self
            .discovered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&cache_key)
        {
            return Ok(found.clone());
        }
        let found = match api_version {
            Some(av) => {
                let (group, version) = split_api_version(av);
                let gvk = GroupVersionKind::gvk(group, version, kind);
                let (resource, caps) =
                    discovery::pinned_kind(&self.client, &gvk)
                        .await
                        .map_err(|e| {
                            super::errors::discovery_error(self, &format!("{kind} in {av}"), e)
                        })?;
                Resolved {
                    resource,
                    namespaced: caps.scope == Scope::Namespaced,
                }
            }
            None => {
                let all = Discovery::new(self.client.clone())
                    .run()
                    .await
                    .map_err(|e| super::errors::discovery_error(self, kind, e))?;
                let mut matches = Vec::new();
                for group in all.groups() {
                    for (resource, caps) in group.recommended_resources() {
                        if resource.kind.eq_ignore_ascii_case(kind)
                            || resource.plural.eq_ignore_ascii_case(kind)
                        {
                            matches.push(Resolved {
                                resource,
                                namespaced: caps.scope == Scope::Namespaced,
                            });
                        }
                    }
                }
                match matches.len() {
                    0 => {
                        return Err(failed(format!(
                            "the API server at {} serves no kind `{kind}`",
                            self.server
                        )));
                    }
                    1 => matches.remove(0),
                    _ => {
                        let versions: Vec<String> = matches
                            .iter()
                            .map(|m| m.resource.api_version.clone())
                            .collect();
                        return Err(failed(format!(
                            "kind `{kind}` is served by several API groups ({}); give \
                             `api_version`",
                            versions.join(", ")
                        )));
                    }
                }
            }
        };
        self.discovered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(cache_key, found.clone());
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubeconfig_lists_skip_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        std::fs::write(&a, "").unwrap();
        let list = format!("{}:{}:", a.display(), dir.path().join("missing").display());
        assert_eq!(path_list(&list), vec![a.clone()]);
        assert_eq!(
            source(Some("/nowhere/config")),
            Source::Files(vec![PathBuf::from("/nowhere/config")])
        );
    }

    #[tokio::test]
    async fn a_missing_context_names_the_ones_there_are() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        std::fs::write(
            &path,
            "apiVersion: v1\nkind: Config\ncurrent-context: a\nclusters:\n- name: c\n  cluster: \
             {server: 'http://127.0.0.1:1'}\nusers:\n- name: u\n  user: {token: t}\ncontexts:\n\
             - name: a\n  context: {cluster: c, user: u, namespace: ops}\n",
        )
        .unwrap();
        let path_text = path.display().to_string();
        let message = match connect(Some(&path_text), Some("b")).await {
            Err(StepError::Failed { message, .. }) => message,
            Err(other) => panic!("unexpected {other:?}"),
            Ok(_) => panic!("context b does not exist"),
        };
        assert_eq!(
            message,
            format!("kubeconfig {path_text} has no context `b` (it has: a)")
        );
        let conn = connect(Some(&path_text), None).await.unwrap();
        assert_eq!(conn.namespace, "ops");
        assert_eq!(conn.server, "http://127.0.0.1:1");
        assert_eq!(conn.origin, format!("kubeconfig {path_text} (context a)"));
        let again = connect(Some(&path_text), None).await.unwrap();
        assert!(
            Arc::ptr_eq(&conn, &again),
            "clients are cached per (kubeconfig, context)"
        );

        let Err(StepError::Failed {
            message: missing, ..
        }) = connect(Some("/no/such/kubeconfig"), None).await
        else {
            panic!("expected a failure")
        };
        assert!(
            missing.starts_with("cannot read kubeconfig /no/such/kubeconfig: "),
            "{missing}"
        );
    }
}
