"""Who runs what in a Kubernetes cluster's control plane, as pure data: the three forms, the etcd
membership of the masters, the load balancer in front of their apiservers, the machines the engine
owns besides the cluster's nodes.

- single: `master_count` 1 (the small-machine extension of spec §6.3) — etcd on the master's
  loopback, its apiserver is the cluster's endpoint.
- ha: `master_count` 3 or 5 — etcd, apiserver, controller manager and scheduler on every master
  (a static etcd cluster over TLS with its own CA, leader election on), and an HAProxy TCP frontend
  in a machine of its own (the SLB of an ACK dedicated cluster) balancing the apiservers that
  answer /readyz: kubeconfigs, kubelets and kube-proxy all dial it, so losing a master, or just
  its apiserver, keeps the API answering.
- managed (`ManagedKubernetes`): etcd and the control plane in a machine opencs owns that is not a
  node of the cluster; the cluster's instances are all workers.

Engine machines are local machines like nodes but never rows of the cluster's instances (not
listed, not counted in `size`); their ids derive from the cluster id, so a re-run after a crash
finds the same machine and delete releases it by id.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

APISERVER_PORT = 6443
ETCD_CLIENT_PORT = 2379
ETCD_PEER_PORT = 2380
LB_ROLE = "apiserver-lb"  # the HA form's load balancer machine
CONTROL_PLANE_ROLE = "control-plane"  # the managed form's control-plane machine
ENGINE_MACHINE_LABEL = "opencs.engine-machine"  # its value: the cluster id (kept by start-up reconciliation)
HA_MASTER_COUNTS = (3, 5)


@dataclass(frozen=True)
class Member:
    """A control-plane member: its name (the machine's instance id) and address."""

    name: str
    ip: str


def kind_of(cluster_type: str, master_count: int) -> str:
    """'single', 'ha' or 'managed'."""
    if cluster_type.lower() == "managedkubernetes":
        return "managed"
    if master_count in HA_MASTER_COUNTS:
        return "ha"
    if master_count == 1:
        return "single"
    raise ValueError(f"master_count {master_count}: 1, 3 or 5")


def engine_machine_id(cluster_id: str, role: str) -> str:
    """The instance id of one of the cluster's engine machines (the provider's 'i-' + 20 form)."""
    return "i-" + hashlib.sha256(f"opencs kubernetes {role} {cluster_id}".encode()).hexdigest()[:20]


def engine_roles(kind: str) -> tuple[str, ...]:
    """The engine machines a control-plane form has."""
    return {"ha": (LB_ROLE,), "managed": (CONTROL_PLANE_ROLE,)}.get(kind, ())


def choose_masters(reserved: Sequence[str], first: str, running: Sequence[str], count: int) -> list[str] | None:
    """Which instances become the masters: those already reserved (a re-run keeps its choice), then
    the first instance up, then the other running ones by id. None while fewer than `count` run."""
    out = [i for i in reserved][:count]
    for iid in [first, *sorted(running)]:
        if len(out) == count:
            break
        if iid in running and iid not in out:
            out.append(iid)
    return out if len(out) == count else None


def server_url(ip: str) -> str:
    return f"https://{ip}:{APISERVER_PORT}"


def etcd_initial_cluster(masters: Sequence[Member]) -> str:
    return ",".join(f"{m.name}=https://{m.ip}:{ETCD_PEER_PORT}" for m in masters)


def etcd_client_urls(masters: Sequence[Member]) -> str:
    return ",".join(f"https://{m.ip}:{ETCD_CLIENT_PORT}" for m in masters)


def haproxy_config(bind_ip: str, backends: Sequence[Member], port: int = APISERVER_PORT) -> str:
    """A TCP frontend on the load balancer's address over every master's apiserver. A backend is
    in rotation while its /readyz answers 200 (anonymous: system:public-info-viewer); a connection
    refused by a dead apiserver is retried on another one (redispatch on every retry)."""
    servers = "".join(f"  server {m.name} {m.ip}:{port}\n" for m in backends)
    return f"""global
  maxconn 4096
  log stderr format short local0 warning

defaults
  mode tcp
  log global
  timeout connect 2s
  timeout client 1h
  timeout server 1h
  retries 3
  option redispatch 1

frontend apiserver
  bind {bind_ip}:{port}
  default_backend masters

backend masters
  balance roundrobin
  option httpchk GET /readyz
  http-check expect status 200
  default-server check check-ssl verify none inter 1s fall 2 rise 1
{servers}"""
