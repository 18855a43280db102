#!/usr/bin/env python3
"""Stand-in for the GPU-cluster operator (NVCA Operator, self-managed mode) on the Kubernetes
testbed, for the tests of the cluster-agent runbooks. Python's standard library only.

Under kwok nothing runs in a pod, so this process does, against the real API server, the work
of the processes of the chart `testbeds/charts/nvca-operator`:

  nvca-operator.py controller --cluster DIR [--namespace nvca-operator] [--interval 0.3]
      Plays the operator pod. For each new operator pod kwok reports Running (a new pod uid),
      first the bootstrap init container's part (`bootstrap --confirm`: register the cluster
      when the registration ConfigMap has no ids, else keep them), then the operator's start:
      it reads the ids from the registration ConfigMap ONCE and caches them for that pod's life
      (as the real operator does: a re-registration needs an operator restart), creates the
      NVCFBackend named after the cluster if it is missing, and from then on reconciles every
      NVCFBackend of its namespace while that pod runs: a finalizer on it, the agent and
      workload namespaces, the agent Deployment `nvca` (the ids in its env) and the backend's
      `status` (the ids and the operator pod that reconciled it). A backend being deleted:
      the agent Deployment is deleted, and the finalizer removed only once the agent namespace
      has no Deployment and no pod left. With no operator pod running it does nothing at all
      (nobody removes finalizers). SIGTERM/SIGINT end it.

  nvca-operator.py bootstrap --cluster DIR [--namespace nvca-operator] [--confirm]
      The bootstrap CLI (`nvca-self-managed-bootstrap`): reads the cluster's configuration from
      the `nvcfbackend-self-managed` ConfigMap and registers the cluster, writing a new
      `clusterId` and `clusterGroupId` to `nvca-cluster-registration`; with --confirm it keeps
      ids already there (the init container at an operator restart). There is no SIS here: a
      registration is two fresh UUIDs. Prints the ids as JSON. `--cluster` and `--namespace`
      default to $NVCA_TESTBED_CLUSTER and $POD_NAMESPACE, so a kwok ClusterExec can run it as
      `kubectl exec` into the operator pod.

It speaks HTTPS to the API server with the testbed's cluster-admin client certificate
(CLUSTER/pki/admin.crt), not with the operator's ServiceAccount: the chart's RBAC is installed
but not exercised.
"""

import argparse
import json
import os
import signal
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

GROUP = "nvcf.nvidia.io/v1alpha1"
FINALIZER = "nvcf.nvidia.io/agent-cleanup"
SELF_MANAGED = "nvcfbackend-self-managed"
REGISTRATION = "nvca-cluster-registration"
OPERATOR_LABEL = "app.kubernetes.io/name=nvca-operator"
AGENT = "nvca"
MANAGER = "nvca-operator"


def log(msg):
    print(f"{time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)


class Api:
    """The API server of a testbed cluster, as cluster-admin."""

    def __init__(self, cluster):
        env = {}
        with open(os.path.join(cluster, "cluster.env"), encoding="utf-8") as f:
            for line in f:
                if "=" in line and not line.startswith("#"):
                    k, v = line.strip().split("=", 1)
                    env[k] = v.strip('"')
        self.base = env["API_SERVER"]
        pki = os.path.join(cluster, "pki")
        self.tls = ssl.create_default_context(cafile=os.path.join(pki, "ca.crt"))
        self.tls.load_cert_chain(os.path.join(pki, "admin.crt"), os.path.join(pki, "admin.key"))

    def call(self, method, path, body=None, ctype="application/json", query=None):
        """The answer's JSON, or None for a 404."""
        url = self.base + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", ctype)
        try:
            with urllib.request.urlopen(req, context=self.tls, timeout=10) as r:
                return json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None
            raise RuntimeError(f"{method} {path}: {e.code} {e.read()[:300]!r}") from None

    def get(self, path, **query):
        return self.call("GET", path, query=query or None)

    def merge(self, path, patch):
        return self.call("PATCH", path, patch, "application/merge-patch+json")

    def apply(self, path, obj):
        return self.call(
            "PATCH", path, obj, "application/apply-patch+yaml",
            {"fieldManager": MANAGER, "force": "true"},
        )


def cm_path(ns, name):
    return f"/api/v1/namespaces/{ns}/configmaps/{name}"


def backends_path(ns, name=""):
    return f"/apis/{GROUP}/namespaces/{ns}/nvcfbackends" + (f"/{name}" if name else "")


def bootstrap(api, ns, confirm):
    """Registers the cluster (see the module doc); returns (ids, what happened)."""
    config = api.get(cm_path(ns, SELF_MANAGED))
    if config is None:
        raise RuntimeError(f"ConfigMap {ns}/{SELF_MANAGED} not found: is the chart installed?")
    reg = api.get(cm_path(ns, REGISTRATION))
    if reg is None:
        raise RuntimeError(f"ConfigMap {ns}/{REGISTRATION} not found: is the chart installed?")
    data = reg.get("data") or {}
    if confirm and data.get("clusterId") and data.get("clusterGroupId"):
        return data, "confirmed"
    ids = {"clusterId": str(uuid.uuid4()), "clusterGroupId": str(uuid.uuid4())}
    api.merge(cm_path(ns, REGISTRATION), {"data": ids})
    name = (config.get("data") or {}).get("clusterName", "?")
    log(f"registered cluster {name}: {ids['clusterId']} in group {ids['clusterGroupId']}")
    return ids, "registered"


class Operator:
    def __init__(self, api, ns):
        self.api = api
        self.ns = ns
        self.pod = None  # (uid, name) of the operator pod this process plays
        self.ids = None  # the ids read at that pod's start
        self.config = {}

    def running_pod(self):
        pods = self.api.get(f"/api/v1/namespaces/{self.ns}/pods", labelSelector=OPERATOR_LABEL)
        live = [
            p for p in (pods or {}).get("items", [])
            if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
        ]
        return max(live, key=lambda p: p["metadata"]["creationTimestamp"], default=None)

    def tick(self):
        pod = self.running_pod()
        if pod is None:
            if self.pod:
                log(f"operator pod {self.pod[1]} is gone: stopped")
            self.pod, self.ids = None, None
            return
        if self.pod is None or self.pod[0] != pod["metadata"]["uid"]:
            self.start(pod)
        self.reconcile()

    def start(self, pod):
        name = pod["metadata"]["name"]
        ids, how = bootstrap(self.api, self.ns, confirm=True)
        self.config = self.api.get(cm_path(self.ns, SELF_MANAGED))["data"]
        self.ids = {"clusterId": ids["clusterId"], "clusterGroupId": ids["clusterGroupId"]}
        self.pod = (pod["metadata"]["uid"], name)
        log(f"operator pod {name} started: bootstrap {how}, ids {self.ids}")
        backend = self.config["clusterName"]
        if self.api.get(backends_path(self.ns, backend)) is None:
            self.api.call("POST", backends_path(self.ns), {
                "apiVersion": GROUP, "kind": "NVCFBackend",
                "metadata": {"name": backend, "namespace": self.ns, "finalizers": [FINALIZER]},
                "spec": dict(self.ids, clusterName=backend),
            })
            log(f"created NVCFBackend {backend}")

    def reconcile(self):
        agent_ns = self.config["agentNamespace"]
        for b in (self.api.get(backends_path(self.ns)) or {}).get("items", []):
            meta = b["metadata"]
            path = backends_path(self.ns, meta["name"])
            if meta.get("deletionTimestamp"):
                self.clean_up(b, path, agent_ns)
                continue
            finalizers = meta.get("finalizers") or []
            if FINALIZER not in finalizers:
                self.api.merge(path, {"metadata": {"finalizers": finalizers + [FINALIZER]}})
            for ns in (agent_ns, self.config["workloadNamespace"]):
                self.api.apply(f"/api/v1/namespaces/{ns}", {
                    "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
            self.api.apply(f"/apis/apps/v1/namespaces/{agent_ns}/deployments/{AGENT}",
                           self.agent(meta["name"], agent_ns))
            status = dict(self.ids, operatorPod=self.pod[1],
                          agentDeployment=f"{agent_ns}/{AGENT}")
            if b.get("spec", {}).get("clusterId") != self.ids["clusterId"] or b.get("status") != status:
                self.api.merge(path, {"spec": self.ids, "status": status})
                log(f"NVCFBackend {meta['name']}: {status}")

    def agent(self, backend, ns):
        env = [{"name": "NVCF_CLUSTER_ID", "value": self.ids["clusterId"]},
               {"name": "NVCF_CLUSTER_GROUP_ID", "value": self.ids["clusterGroupId"]},
               {"name": "NVCF_BACKEND", "value": f"{self.ns}/{backend}"}]
        image = self.config["agentImage"]
        labels = {"app.kubernetes.io/name": "nvca", "nvcf.nvidia.io/backend": backend}
        return {
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": AGENT, "namespace": ns, "labels": labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [
                        {"name": "nvca", "image": image, "env": env},
                        {"name": "nvca-admission-webhook", "image": image, "args": ["webhook"]},
                        {"name": "vault-agent", "image": "registry.local/openbao:2.7.2"},
                    ]},
                },
            },
        }

    def clean_up(self, backend, path, agent_ns):
        deployments = f"/apis/apps/v1/namespaces/{agent_ns}/deployments"
        if self.api.get(f"{deployments}/{AGENT}") is not None:
            self.api.call("DELETE", f"{deployments}/{AGENT}",
                          {"kind": "DeleteOptions", "apiVersion": "v1",
                           "propagationPolicy": "Background"})
            log(f"deleted Deployment {agent_ns}/{AGENT}")
        left = [
            f"{kind} {o['metadata']['name']}"
            for kind, p in (("deployment", deployments), ("pod", f"/api/v1/namespaces/{agent_ns}/pods"))
            for o in (self.api.get(p) or {}).get("items", [])
        ]
        if left:
            return
        finalizers = [f for f in backend["metadata"].get("finalizers") or [] if f != FINALIZER]
        self.api.merge(path, {"metadata": {"finalizers": finalizers}})
        log(f"NVCFBackend {backend['metadata']['name']}: agent namespace clean, finalizer removed")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("controller", "bootstrap"):
        s = sub.add_parser(name)
        s.add_argument("--cluster", default=os.environ.get("NVCA_TESTBED_CLUSTER"))
        s.add_argument("--namespace", default=os.environ.get("POD_NAMESPACE", "nvca-operator"))
    sub.choices["controller"].add_argument("--interval", type=float, default=0.3)
    sub.choices["bootstrap"].add_argument("--confirm", action="store_true")
    args = p.parse_args()
    if not args.cluster:
        p.error("--cluster (or $NVCA_TESTBED_CLUSTER) is required")
    api = Api(args.cluster)
    if args.command == "bootstrap":
        try:
            ids, _ = bootstrap(api, args.namespace, args.confirm)
        except RuntimeError as e:
            print(f"nvca-self-managed-bootstrap: {e}", file=sys.stderr)
            return 1
        print(json.dumps(ids))
        return 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    operator = Operator(api, args.namespace)
    log(f"watching operator pods in {args.namespace}")
    while True:
        try:
            operator.tick()
        except (RuntimeError, OSError, KeyError) as e:
            # The API server or an object not there yet: the next tick tries again.
            log(f"reconcile: {e!r}")
        time.sleep(args.interval)


if __name__ == "__main__":
    sys.exit(main())
