//! The agent as its node's kubelet: it registers the Node if it does not exist, then posts the
//! node's status (Ready and the pressure conditions, addresses, node info) and renews the
//! node's Lease in `kube-node-lease` on every heartbeat, which is what keeps the node
//! lifecycle controller from marking the node `NotReady` and tainting it.
//!
//! A heartbeat that fails is logged and the next one tries again; the Lease outlives a few
//! missed heartbeats (its duration is four heartbeats, as a kubelet's 40 s to its 10 s).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeStatus,
    NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};

use crate::retry::{Failed, retry};

/// The namespace of node leases.
const LEASE_NAMESPACE: &str = "kube-node-lease";

/// The conditions a kubelet posts: (type, status, reason, message).
const CONDITIONS: &[(&str, &str, &str, &str)] = &[
    (
        "MemoryPressure",
        "False",
        "KubeletHasSufficientMemory",
        "runbook-node-agent has sufficient memory available",
    ),
    (
        "DiskPressure",
        "False",
        "KubeletHasNoDiskPressure",
        "runbook-node-agent has no disk pressure",
    ),
    (
        "PIDPressure",
        "False",
        "KubeletHasSufficientPID",
        "runbook-node-agent has sufficient PID available",
    ),
    (
        "Ready",
        "True",
        "KubeletReady",
        "runbook-node-agent is posting ready status",
    ),
];

/// The node's status at `now`: our conditions with a fresh heartbeat (keeping each one's
/// transition time while its status stays), other components' conditions as they were.
pub fn node_status(
    prev: &[NodeCondition],
    node_ip: &str,
    name: &str,
    now: DateTime<Utc>,
) -> NodeStatus {
    let mut conditions: Vec<NodeCondition> = CONDITIONS
        .iter()
        .map(|(type_, status, reason, message)| {
            let since = prev
                .iter()
                .find(|c| c.type_ == *type_ && c.status == *status)
                .and_then(|c| c.last_transition_time.clone())
                .unwrap_or(Time(now));
            NodeCondition {
                type_: (*type_).to_owned(),
                status: (*status).to_owned(),
                reason: Some((*reason).to_owned()),
                message: Some((*message).to_owned()),
                last_heartbeat_time: Some(Time(now)),
                last_transition_time: Some(since),
            }
        })
        .collect();
    conditions.extend(
        prev.iter()
            .filter(|c| !CONDITIONS.iter().any(|(t, ..)| *t == c.type_))
            .cloned(),
    );
    let version = concat!("v", env!("CARGO_PKG_VERSION"));
    NodeStatus {
        conditions: Some(conditions),
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: node_ip.to_owned(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: name.to_owned(),
            },
        ]),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint { port: 0 }),
        }),
        node_info: Some(NodeSystemInfo {
            architecture: arch().to_owned(),
            operating_system: std::env::consts::OS.to_owned(),
            kubelet_version: version.to_owned(),
            kube_proxy_version: String::new(),
            container_runtime_version: format!(
                "runbook-node-agent://{}",
                env!("CARGO_PKG_VERSION")
            ),
            kernel_version: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_owned())
                .unwrap_or_default(),
            os_image: "local processes".into(),
            boot_id: std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .map(|s| s.trim().to_owned())
                .unwrap_or_default(),
            machine_id: String::new(),
            system_uuid: String::new(),
        }),
        ..NodeStatus::default()
    }
}

/// Kubernetes' name for this machine's architecture.
fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The node's Lease renewed at `now`, owned by the node (so it goes with it).
pub fn lease(name: &str, node_uid: &str, now: DateTime<Utc>, duration: Duration) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(LEASE_NAMESPACE.to_owned()),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "Node".into(),
                name: name.to_owned(),
                uid: node_uid.to_owned(),
                ..OwnerReference::default()
            }]),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(name.to_owned()),
            lease_duration_seconds: Some(i32::try_from(duration.as_secs()).unwrap_or(i32::MAX)),
            renew_time: Some(MicroTime(now)),
            ..LeaseSpec::default()
        }),
    }
}

/// The node as the API server knows it.
pub struct Registration {
    nodes: Api<Node>,
    leases: Api<Lease>,
    name: String,
    ip: String,
    uid: String,
    lease_duration: Duration,
}

impl Registration {
    /// Finds node `name`, creating it if it does not exist (as a kubelet registers itself).
    pub async fn register(
        client: Client,
        name: &str,
        ip: &str,
        heartbeat: Duration,
    ) -> Result<Self, Failed> {
        let nodes: Api<Node> = Api::all(client.clone());
        let existing = retry("get the node", || nodes.get_opt(name)).await?;
        let node = match existing {
            Some(n) => n,
            None => {
                tracing::info!(node = name, "registering the node");
                let fresh = Node {
                    metadata: ObjectMeta {
                        name: Some(name.to_owned()),
                        labels: Some(BTreeMap::from([
                            ("kubernetes.io/hostname".to_owned(), name.to_owned()),
                            (
                                "kubernetes.io/os".to_owned(),
                                std::env::consts::OS.to_owned(),
                            ),
                            ("kubernetes.io/arch".to_owned(), arch().to_owned()),
                        ])),
                        ..ObjectMeta::default()
                    },
                    spec: None,
                    status: Some(NodeStatus {
                        capacity: Some(capacity()),
                        allocatable: Some(capacity()),
                        ..NodeStatus::default()
                    }),
                };
                let pp = PostParams::default();
                retry("register the node", || nodes.create(&pp, &fresh)).await?
            }
        };
        Ok(Self {
            nodes,
            leases: Api::namespaced(client, LEASE_NAMESPACE),
            name: name.to_owned(),
            ip: ip.to_owned(),
            uid: node.metadata.uid.unwrap_or_default(),
            lease_duration: heartbeat * 4,
        })
    }

    /// Posts the node's status and renews its Lease.
    pub async fn heartbeat(&self) -> Result<(), Failed> {
        let now = crate::status::now();
        let current = retry("read the node", || self.nodes.get(&self.name)).await?;
        let prev = current
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default();
        let status = serde_json::json!({ "status": node_status(&prev, &self.ip, &self.name, now) });
        let (pp, patch) = (PatchParams::default(), Patch::Merge(&status));
        retry("post the node status", || {
            self.nodes.patch_status(&self.name, &pp, &patch)
        })
        .await?;
        let lease = lease(&self.name, &self.uid, now, self.lease_duration);
        let exists = retry("read the node lease", || self.leases.get_opt(&self.name)).await?;
        if exists.is_some() {
            let spec = serde_json::json!({ "spec": lease.spec });
            let patch = Patch::Merge(&spec);
            retry("renew the node lease", || {
                self.leases.patch(&self.name, &pp, &patch)
            })
            .await?;
        } else {
            let pp = PostParams::default();
            retry("create the node lease", || self.leases.create(&pp, &lease)).await?;
        }
        Ok(())
    }

    /// Heartbeats every `every` until the task is dropped.
    pub async fn beat(self, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut healthy = true;
        loop {
            tick.tick().await;
            match self.heartbeat().await {
                Ok(()) if !healthy => {
                    tracing::info!(node = %self.name, "heartbeats go through again");
                    healthy = true;
                }
                Ok(()) => {}
                Err(e) => {
                    tracing::warn!(node = %self.name, error = %e, "heartbeat failed; retrying at the next one");
                    healthy = false;
                }
            }
        }
    }
}

/// What a node the agent registers offers: this machine's CPUs and memory, 110 pods.
fn capacity() -> BTreeMap<String, Quantity> {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let memory_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(1024 * 1024);
    BTreeMap::from([
        ("cpu".to_owned(), Quantity(cpus.to_string())),
        ("memory".to_owned(), Quantity(format!("{memory_kib}Ki"))),
        ("pods".to_owned(), Quantity("110".into())),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + s, 0)
            .single()
            .expect("time")
    }

    #[test]
    fn a_heartbeat_is_ready_keeps_transition_times_and_foreign_conditions() {
        let first = node_status(&[], "127.0.0.1", "agent-1", at(0));
        let mut prev = first.conditions.expect("conditions");
        prev.push(NodeCondition {
            type_: "NetworkUnavailable".into(),
            status: "False".into(),
            ..NodeCondition::default()
        });
        let later = node_status(&prev, "127.0.0.1", "agent-1", at(30));
        let conditions = later.conditions.expect("conditions");
        let ready = conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .expect("Ready");
        assert_eq!(ready.status, "True");
        assert_eq!(ready.last_heartbeat_time, Some(Time(at(30))));
        assert_eq!(ready.last_transition_time, Some(Time(at(0))));
        assert!(conditions.iter().any(|c| c.type_ == "NetworkUnavailable"));
        assert_eq!(
            conditions.iter().filter(|c| c.status == "False").count(),
            4,
            "three pressure conditions and the foreign one"
        );
        let addresses = later.addresses.expect("addresses");
        assert_eq!(addresses[0].type_, "InternalIP");
        assert_eq!(addresses[0].address, "127.0.0.1");

        // A node the lifecycle controller had marked Unknown becomes Ready now.
        let mut unknown = prev.clone();
        unknown
            .iter_mut()
            .filter(|c| c.type_ == "Ready")
            .for_each(|c| c.status = "Unknown".into());
        let back = node_status(&unknown, "127.0.0.1", "agent-1", at(60))
            .conditions
            .expect("c");
        let ready = back.iter().find(|c| c.type_ == "Ready").expect("Ready");
        assert_eq!(ready.last_transition_time, Some(Time(at(60))));
    }

    #[test]
    fn the_lease_is_held_by_the_node_and_owned_by_it() {
        let l = lease("agent-1", "uid-1", at(5), Duration::from_secs(40));
        let v = serde_json::to_value(&l).expect("json");
        assert_eq!(v["metadata"]["namespace"], "kube-node-lease");
        assert_eq!(v["metadata"]["ownerReferences"][0]["uid"], "uid-1");
        assert_eq!(v["spec"]["holderIdentity"], "agent-1");
        assert_eq!(v["spec"]["leaseDurationSeconds"], 40);
        assert_eq!(v["spec"]["renewTime"], "2027-01-15T08:00:05.000000Z");
    }
}
