"""Which requests get a reply carrying a secret, and whether their transport may carry it.

Such replies (a cluster's client private key, a trigger secret, an AccessKey secret, a kubeconfig)
are refused over plain HTTP unless the peer is on loopback: beyond it they would cross the network
in clear text. The check runs before the route, so nothing is created or rotated for a refused call.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any
from urllib.parse import parse_qsl

_SECRET_ROUTES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("GET", re.compile(r"^/clusters/[^/]+/certs/?$")),  # client key of the cluster
    ("POST", re.compile(r"^/clusters/[^/]+/triggers/?$")),  # the new trigger's secret
    ("POST", re.compile(r"^/clusters/[^/]+/triggers/[^/]+/rotate/?$")),
    ("GET", re.compile(r"^/k8s/[^/]+/user_config/?$")),  # kubeconfig with the user's credentials
    ("POST", re.compile(r"^/clusters/[^/]+/attachscript/?$")),  # a join token
)
# RAM (RPC style on "/"): actions whose reply holds an AccessKey secret
_SECRET_ACTIONS = frozenset({"createaccesskey"})


def carries_secret(method: str, path: str, headers: list[tuple[bytes, bytes]], query_string: bytes) -> bool:
    if path == "/":
        action = next((v.decode("latin-1") for k, v in headers if k.lower() == b"x-acs-action"), "")
        if not action:
            action = next((v for k, v in parse_qsl(query_string.decode("latin-1")) if k == "Action"), "")
        return action.lower() in _SECRET_ACTIONS
    return any(method == m and rx.match(path) for m, rx in _SECRET_ROUTES)


def loopback_peer(scope: dict[str, Any]) -> bool:
    client = scope.get("client")
    if not client:  # a Unix socket: this host
        return True
    host = str(client[0])
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host == "testclient"  # starlette's TestClient, in-process
    mapped = getattr(ip, "ipv4_mapped", None)
    return bool(ip.is_loopback or (mapped is not None and mapped.is_loopback))


def refusal(scope: dict[str, Any]) -> str | None:
    """The reason to refuse this request, or None to serve it."""
    if scope.get("scheme") != "http" or loopback_peer(scope):
        return None
    if not carries_secret(scope["method"], scope["path"], scope.get("headers", []),
                          scope.get("query_string", b"")):
        return None
    return ("this reply carries a secret and is only sent over HTTPS to a peer beyond loopback; "
            "call the API's https:// URL (the server runs without --insecure-http)")
