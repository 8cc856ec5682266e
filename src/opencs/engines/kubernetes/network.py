"""The pod network between a cluster's machines, kindnet style: every node's pod CIDR (allocated by
kube-controller-manager into Node.spec.podCIDR) is routed to that node's address in every other
machine's network namespace; no overlay, no masquerade. Routes carry protocol ROUTE_PROTO so that
ours can be told from the machine's own, and are also written to k8s/routes for the machine's
supervisor to restore at boot."""

from __future__ import annotations

import subprocess
from pathlib import Path

from opencs.engines.kubernetes.runtime import ROUTE_PROTO

NETNS_DIR = Path("/run/netns")
DEVICE = "eth0"


class RouteError(RuntimeError):
    pass


def _ip(netns: str, *args: str) -> str:
    p = subprocess.run(["nsenter", f"--net={NETNS_DIR / netns}", "--", "ip", *args],
                       capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=30)
    if p.returncode != 0:
        raise RouteError(f"in {netns}: ip {' '.join(args)}: {p.stderr.strip()}")
    return p.stdout


def route_to(netns: str, dst: str) -> str:
    """`ip -o route get dst` in a machine, or why there is none."""
    try:
        return _ip(netns, "-o", "route", "get", dst)
    except RouteError as e:
        return str(e)


def routes_text(routes: dict[str, str]) -> str:
    """{destination CIDR: next hop, or "" for on-link} as the supervisor's k8s/routes file."""
    return "".join(f"{dst} {via}".rstrip() + "\n" for dst, via in sorted(routes.items()))


def sync_routes(netns: str, routes: dict[str, str]) -> None:
    """Make our routes in one machine exactly `routes` (others of the machine are left alone)."""
    if not (NETNS_DIR / netns).exists():
        raise RouteError(f"network namespace {netns} does not exist")
    have = set()
    for line in _ip(netns, "route", "show", "proto", ROUTE_PROTO).splitlines():
        if line.strip():
            have.add(line.split()[0])
    for dst, via in sorted(routes.items()):
        hop = ["via", via] if via else []
        _ip(netns, "route", "replace", dst, *hop, "dev", DEVICE, "proto", ROUTE_PROTO)
    for dst in sorted(have - set(routes)):
        _ip(netns, "route", "del", dst, "proto", ROUTE_PROTO)


def wanted_routes(me: str, pod_cidrs: dict[str, tuple[str, str]], service_cidr: str) -> dict[str, str]:
    """The routes of machine `me`: {node: (pod CIDR, ip)} of every other node, and the service CIDR
    on-link (host-network processes reach ClusterIPs; kube-proxy's DNAT does the rest)."""
    out = {service_cidr: ""}
    for name, (cidr, ip) in pod_cidrs.items():
        if name != me and cidr and ip:
            out[cidr] = ip
    return out
