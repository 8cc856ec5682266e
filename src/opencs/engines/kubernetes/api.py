"""The few calls the driver makes to a cluster's apiserver (nodes, drain, add-ons), over HTTPS with
the cluster CA and the admin client certificate the master's plan holds. No client library: the
official one is large and this is a dozen REST calls; errors leave as KubeError."""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per poll of the apiserver otherwise

class KubeError(RuntimeError):
    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


def _ctx(pki_dir: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki_dir / "ca.crt"))
    ctx.load_cert_chain(str(pki_dir / "admin.crt"), str(pki_dir / "admin.key"))
    return ctx


class KubeApi:
    """One apiserver, as the cluster's admin (CN=opencs-admin, O=system:masters) whose credentials
    are in `pki_dir`, or as whoever `ctx` (the cluster CA and a client certificate) names."""

    def __init__(self, server: str, pki_dir: Path | None, timeout: float = 10.0,
                 ctx: ssl.SSLContext | None = None) -> None:
        self.server = server
        if ctx is None:
            if pki_dir is None:
                raise KubeError(f"no credentials for {server}")
            try:
                ctx = _ctx(pki_dir)
            except (OSError, ssl.SSLError) as e:
                raise KubeError(f"no admin credentials for {server} in {pki_dir}: {e}") from e
        # trust_env off: REQUESTS_CA_BUNDLE and proxies of the environment must not apply
        self._c = httpx.Client(base_url=server, verify=ctx, timeout=timeout, trust_env=False)

    def close(self) -> None:
        self._c.close()

    def _req(self, method: str, path: str, ok404: bool = False, **kw: Any) -> Any:
        try:
            r = self._c.request(method, path, **kw)
        except httpx.HTTPError as e:
            raise KubeError(f"{method} {self.server}{path}: {e or type(e).__name__}") from e
        if r.status_code == 404 and ok404:
            return None
        if r.status_code >= 400:
            try:
                msg = r.json().get("message", r.text)
            except ValueError:
                msg = r.text
            raise KubeError(f"{method} {path}: HTTP {r.status_code}: {str(msg)[:300]}", r.status_code)
        return r.json() if r.content else {}

    def ready(self) -> bool:
        try:
            return self._c.get("/readyz").status_code == 200
        except httpx.HTTPError:
            return False

    def get(self, path: str) -> Any:
        """The object, or None if it does not exist."""
        return self._req("GET", path, ok404=True)

    def create(self, path: str, obj: dict[str, Any]) -> None:
        """POST unless it exists already (add-ons are applied idempotently)."""
        try:
            self._req("POST", path, json=obj)
        except KubeError as e:
            if e.status != 409:
                raise

    def patch(self, path: str, body: dict[str, Any]) -> Any:
        return self._req("PATCH", path, ok404=True, json=body,
                         headers={"Content-Type": "application/merge-patch+json"})

    def delete(self, path: str) -> None:
        self._req("DELETE", path, ok404=True)

    def evict(self, namespace: str, name: str) -> bool:
        """True once evicted (or gone); False while a disruption budget forbids it (429)."""
        body = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name, "namespace": namespace}}
        try:
            self._req("POST", f"/api/v1/namespaces/{namespace}/pods/{name}/eviction", ok404=True, json=body)
        except KubeError as e:
            if e.status == 429:
                return False
            raise
        return True

    def nodes(self) -> list[dict[str, Any]]:
        return list(self._req("GET", "/api/v1/nodes").get("items", []))

    def pods_on(self, node: str) -> list[dict[str, Any]]:
        out = self._req("GET", "/api/v1/pods", params={"fieldSelector": f"spec.nodeName={node}"})
        return list(out.get("items", []))


def node_ready(node: dict[str, Any]) -> bool:
    conds = (node.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)


def wait_for(what: str, check: Callable[[], Any], timeout: float, detail: Callable[[], str] = lambda: "",
             interval: float = 0.5) -> Any:
    """Poll `check` until it returns something true; KubeError naming `what` (and `detail()`) if not."""
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        try:
            if result := check():
                return result
        except KubeError as e:
            last = str(e)
        if time.monotonic() > deadline:
            extra = detail()
            raise KubeError(f"{what} not reached in {timeout:.0f}s" + (f": {last}" if last else "")
                            + (f" ({extra})" if extra else ""))
        time.sleep(interval)


@contextmanager
def connect(server: str, pki_dir: Path, timeout: float = 10.0) -> Iterator[KubeApi]:
    api = KubeApi(server, pki_dir, timeout)
    try:
        yield api
    finally:
        api.close()
