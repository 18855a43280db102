//! The pods bound to the node, kept current by a list-then-watch on `spec.nodeName`.
//!
//! A watch that ends is resumed from the last resource version seen; one the server expired
//! (410 Gone) or that fails is replaced by a fresh list after a pause (0.5 s, doubling to 5 s
//! while it keeps failing). Every change notifies the reconcile loop. Until the first list has
//! come back the cache is empty, so the agent starts nothing before it knows the node's pods.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, WatchEvent, WatchParams};
use kube::{Api, Client};
use tokio::sync::Notify;

/// The node's pods by uid.
#[derive(Clone, Default)]
pub struct Cache {
    pods: Arc<Mutex<BTreeMap<String, Pod>>>,
}

impl Cache {
    /// A copy of the pods now.
    pub fn snapshot(&self) -> BTreeMap<String, Pod> {
        self.pods
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn replace(&self, pods: Vec<Pod>) {
        let by_uid = pods
            .into_iter()
            .filter_map(|p| Some((p.metadata.uid.clone()?, p)))
            .collect();
        *self.pods.lock().unwrap_or_else(PoisonError::into_inner) = by_uid;
    }

    fn put(&self, pod: Pod) {
        if let Some(uid) = pod.metadata.uid.clone() {
            self.pods
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(uid, pod);
        }
    }

    fn remove(&self, pod: &Pod) {
        if let Some(uid) = &pod.metadata.uid {
            self.pods
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(uid);
        }
    }
}

/// Keeps `cache` current with the pods bound to `node`, notifying `changed`; runs until
/// dropped.
pub async fn watch(client: Client, node: String, cache: Cache, changed: Arc<Notify>) {
    let api: Api<Pod> = Api::all(client);
    let fields = format!("spec.nodeName={node}");
    let mut pause = Duration::from_millis(500);
    loop {
        let mut version = match api.list(&ListParams::default().fields(&fields)).await {
            Ok(list) => {
                cache.replace(list.items);
                changed.notify_one();
                pause = Duration::from_millis(500);
                list.metadata.resource_version.unwrap_or_default()
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the node's pods; trying again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        'watch: loop {
            let params = WatchParams::default().fields(&fields).timeout(290);
            let mut events = match api.watch(&params, &version).await {
                Ok(s) => s.boxed(),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch the node's pods; listing again");
                    break 'watch;
                }
            };
            while let Some(event) = events.next().await {
                match event {
                    Ok(WatchEvent::Added(p) | WatchEvent::Modified(p)) => {
                        version = p.metadata.resource_version.clone().unwrap_or(version);
                        cache.put(p);
                    }
                    Ok(WatchEvent::Deleted(p)) => {
                        version = p.metadata.resource_version.clone().unwrap_or(version);
                        cache.remove(&p);
                    }
                    Ok(WatchEvent::Bookmark(b)) => version = b.metadata.resource_version,
                    Ok(WatchEvent::Error(e)) => {
                        if e.code != 410 {
                            tracing::warn!(error = %e, "the pod watch failed; listing again");
                        }
                        break 'watch;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "the pod watch broke off; resuming");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue 'watch;
                    }
                }
                changed.notify_one();
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}
