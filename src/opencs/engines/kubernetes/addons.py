"""Cluster add-ons the driver installs: CoreDNS (as kubeadm deploys it), so Service names resolve.

The image is upstream CoreDNS built by scripts/build-kubernetes.sh, put into the bundled registry
by the control plane (`images["coredns"]`). The machines have no upstream resolver, so the
Corefile answers the cluster domain only (no `forward`): other names fail fast.
"""

from __future__ import annotations

from typing import Any

from opencs.engines.kubernetes.api import KubeApi, wait_for
from opencs.engines.kubernetes.config import ClusterNetwork

NS = "kube-system"
COREDNS_TIMEOUT = 120.0

COREFILE = """.:53 {{
    errors
    health {{
        lameduck 5s
    }}
    ready
    kubernetes {domain} in-addr.arpa ip6.arpa {{
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }}
    cache 30
    loop
    reload
    loadbalance
}}
"""


def coredns_objects(image: str, net: ClusterNetwork, placement: dict[str, Any] | None = None,
                    ) -> list[tuple[str, dict[str, Any]]]:
    """(collection path, object) in creation order; `placement`: a nodeSelector and further
    tolerations for the pod (an edge cluster's add-ons run on its cloud nodes)."""
    placement = placement or {}
    labels = {"k8s-app": "kube-dns"}
    rbac = "/apis/rbac.authorization.k8s.io/v1"
    port_specs = [("dns", 53, "UDP"), ("dns-tcp", 53, "TCP"), ("metrics", 9153, "TCP")]
    container = {
        "name": "coredns",
        "image": image,
        "command": ["/coredns", "-conf", "/etc/coredns/Corefile"],
        "ports": [{"name": n, "containerPort": p, "protocol": proto} for n, p, proto in port_specs],
        "resources": {"requests": {"cpu": "50m", "memory": "32Mi"}, "limits": {"memory": "170Mi"}},
        "volumeMounts": [{"name": "config-volume", "mountPath": "/etc/coredns", "readOnly": True}],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": 8181}, "periodSeconds": 2},
        "livenessProbe": {"httpGet": {"path": "/health", "port": 8080}, "initialDelaySeconds": 30,
                          "timeoutSeconds": 5, "failureThreshold": 5},
    }
    pod = {
        "metadata": {"labels": labels},
        "spec": {
            "serviceAccountName": "coredns",
            "priorityClassName": "system-cluster-critical",
            "dnsPolicy": "Default",
            "tolerations": [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"},
                            {"key": "CriticalAddonsOnly", "operator": "Exists"}, *placement.get("tolerations", [])],
            **({"nodeSelector": placement["nodeSelector"]} if placement.get("nodeSelector") else {}),
            "containers": [container],
            "volumes": [{"name": "config-volume", "configMap": {"name": "coredns"}}],
        },
    }
    return [
        (f"/api/v1/namespaces/{NS}/serviceaccounts",
         {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "coredns", "namespace": NS}}),
        (f"{rbac}/clusterroles", {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "system:coredns"},
            "rules": [
                {"apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"],
                 "verbs": ["list", "watch"]},
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
            ],
        }),
        (f"{rbac}/clusterrolebindings", {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "system:coredns"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:coredns"},
            "subjects": [{"kind": "ServiceAccount", "name": "coredns", "namespace": NS}],
        }),
        (f"/api/v1/namespaces/{NS}/configmaps", {
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "coredns", "namespace": NS},
            "data": {"Corefile": COREFILE.format(domain=net.dns_domain)},
        }),
        (f"/apis/apps/v1/namespaces/{NS}/deployments", {
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "coredns", "namespace": NS, "labels": labels},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": pod},
        }),
        (f"/api/v1/namespaces/{NS}/services", {
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kube-dns", "namespace": NS, "labels": {**labels, "kubernetes.io/name": "CoreDNS"}},
            "spec": {"selector": labels, "clusterIP": net.dns_service_ip,
                     "ports": [{"name": n, "port": p, "protocol": proto} for n, p, proto in port_specs]},
        }),
    ]  # fmt: skip


# GET /clusters/{id}/certs hands out the cluster's user certificate (opencs.pki.ca: O=opencs, issued by
# this cluster's CA only): its holder administers the cluster, as the Swarm certificates do
USER_BINDING: tuple[str, dict[str, Any]] = ("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", {
    "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
    "metadata": {"name": "opencs:cluster-certificate"},
    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
    "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "opencs"}],
})


def ensure(api: KubeApi, images: dict[str, str], net: ClusterNetwork, placement: dict[str, Any] | None = None,
           ) -> None:
    """Install the add-ons that are missing and wait until they are available."""
    path, binding = USER_BINDING
    if api.get(f"{path}/{binding['metadata']['name']}") is None:
        api.create(path, binding)
    image = images.get("coredns")
    if not image:
        return  # no CoreDNS image on this server (the build has none): the driver said so at create
    for path, obj in coredns_objects(image, net, placement):
        if api.get(f"{path}/{obj['metadata']['name']}") is None:
            api.create(path, obj)

    def available() -> bool:
        d = api.get(f"/apis/apps/v1/namespaces/{NS}/deployments/coredns") or {}
        return int((d.get("status") or {}).get("availableReplicas") or 0) >= 1

    wait_for("CoreDNS available", available, COREDNS_TIMEOUT)
