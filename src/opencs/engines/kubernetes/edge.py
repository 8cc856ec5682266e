"""Edge clusters (spec §6.5: `ManagedKubernetes` with `profile: "Edge"`), as ACK@Edge runs them: the
control plane is managed (topology.py's managed form, outside the workers), and the workers are of
two kinds, told apart by the `alibabacloud.com/is-edge-worker` label ACK@Edge's components read:

- cloud nodes: the instances the cluster makes itself (`num_of_nodes`, scale-out) — ACK@Edge's
  "cloud management nodes". Labelled `is-edge-worker=false` and tainted
  `node-role.alibabacloud.com/addon=:NoSchedule`, so that edge workloads stay off them; the
  cluster's own add-ons (CoreDNS) tolerate the taint and run there.
- edge nodes: machines joined to a running cluster (POST /clusters/{id}/attach, or the attach
  script of §6.10 run on the machine). Labelled `is-edge-worker=true`, no taint: workloads go there.

Both marks are set by the kubelet when it registers the Node (--node-labels, --register-with-taints),
so no pod is ever scheduled onto a node before it carries them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

EDGE_PROFILE = "Edge"
EDGE_WORKER_LABEL = "alibabacloud.com/is-edge-worker"
ADDON_TAINT_KEY = "node-role.alibabacloud.com/addon"
ADDON_TAINT = f"{ADDON_TAINT_KEY}=:NoSchedule"


def is_edge(settings: Mapping[str, Any]) -> bool:
    """Whether a cluster's Kubernetes settings (spec["kubernetes"]) are an edge cluster's."""
    return settings.get("profile") == EDGE_PROFILE


def node_marks(attached: bool) -> tuple[dict[str, str], tuple[str, ...]]:
    """(labels, taints) of a worker of an edge cluster: an attached machine is an edge node, an
    instance the cluster made a cloud node."""
    if attached:
        return {EDGE_WORKER_LABEL: "true"}, ()
    return {EDGE_WORKER_LABEL: "false"}, (ADDON_TAINT,)


def addon_placement() -> dict[str, Any]:
    """What a management add-on's pod spec gets in an edge cluster: onto the cloud nodes."""
    return {"nodeSelector": {EDGE_WORKER_LABEL: "false"},
            "tolerations": [{"key": ADDON_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}]}
