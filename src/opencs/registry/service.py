"""The bundled registry as a service of the control plane: where it listens, starting or adopting it,
the token its push notifications carry, and its token authentication (the signing key, the realm
on the bridge next to it: `realm_port`, by default the registry's port + 1)."""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import httpx

from opencs.registry.binary_image import seed_binary
from opencs.registry.bundled import BundledRegistry
from opencs.registry.image import seed_busybox
from opencs.registry.pause import PAUSE_REPOSITORY, PAUSE_TAG, seed_pause
from opencs.registry.tokens import RegistryBearer, TokenAuthConfig, TokenSigner

COREDNS_REPOSITORY, COREDNS_TAG = "opencs/coredns", "v1.14.7"  # scripts/build-kubernetes.sh's version


class NodeBridge(Protocol):
    """The network the nodes share (the local provider's bridge); the registry listens on it."""

    @property
    def gateway_address(self) -> str | None: ...

    def ensure_network(self) -> str: ...


class Restartable(Protocol):
    def wait_running(self, timeout: float) -> None: ...


def through_restarts(reg: Restartable, push: Callable[[], object], timeout: float = 30.0) -> None:
    """Run `push` against the data dir's registry, again once it is back if it was refused.

    Several processes share one registry; the one that takes the notifications lease rewrites its
    config and restarts it (a second or two without a listener), so a push of another process's
    task may meet a closed port: that is a wait, not a failed cluster create."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            push()
            return
        except httpx.TransportError:
            left = deadline - time.monotonic()
            if left <= 0:
                raise
            time.sleep(0.2)
            reg.wait_running(left)


class RegistryService:
    def __init__(self, data_dir: Path, port: int, bridge: NodeBridge | None, notify_url: str | None,
                 realm_port: int | None = None) -> None:
        self.data_dir = data_dir
        self.port = port
        self.realm_port = realm_port or port + 1
        self.signer = TokenSigner(data_dir / "registry" / "auth")
        self.bridge = bridge
        self.notify_url = notify_url  # None: this process does not serve /hook/registry (opencs worker)
        # whether the registry's pushes are announced to this process (its lease; see take_notifications)
        self.owns_notifications = False
        self._lock = threading.Lock()
        self._seeded = False
        self._kube_images: dict[str, str] | None = None
        self.running: BundledRegistry | None = None

    def endpoint(self) -> str | None:
        """host:port of the clusters' registry, on the nodes' bridge (None without local nodes)."""
        gw = self.bridge.gateway_address if self.bridge is not None else None
        return f"{gw}:{self.port}" if gw else None

    def realm_address(self) -> tuple[str, int] | None:
        """Where the token realm listens: the bridge's gateway, beside the registry."""
        gw = self.bridge.gateway_address if self.bridge is not None else None
        return (gw, self.realm_port) if gw else None

    def token_auth(self, gateway: str) -> TokenAuthConfig:
        return TokenAuthConfig(realm=f"http://{gateway}:{self.realm_port}/token", rootcertbundle=self.signer.ensure())

    def bearer(self) -> RegistryBearer:
        """Auth of opencs's own pushes (the seeded images)."""
        return RegistryBearer(self.signer)

    def node_key(self) -> bytes:
        """The key the clusters' node credentials are derived from (data dir, 0600)."""
        return self._secret_file("registry-node.key").encode()

    def ensure(self) -> str | None:
        """Start (or adopt) Debian's docker-registry on the bridge and seed library/busybox."""
        endpoint = self.endpoint()
        if endpoint is None or self.bridge is None:
            return None
        with self._lock:
            self.bridge.ensure_network()  # the registry listens on the bridge
            auth = self.token_auth(endpoint.rsplit(":", 1)[0])
            reg = BundledRegistry(self.data_dir / "registry", listen=endpoint, notify_url=self.notify_url,
                                  notify_token=self.notify_token(), token_auth=auth)
            # a process that does not own the notifications adopts the registry wherever it sends them
            reg.ensure_running(any_notifications=not self.owns_notifications)
            if not self._seeded:
                through_restarts(reg, lambda: seed_busybox(reg.url, auth=self.bearer()))
                self._seeded = True
            self.running = reg
        return endpoint

    def take_notifications(self) -> None:
        """From now on the registry announces its pushes to this process (it holds their lease)."""
        self.owns_notifications = self.notify_url is not None

    def drop_notifications(self) -> None:
        self.owns_notifications = False

    def keep_notifications(self) -> None:
        """If the data dir's registry runs, make it announce its pushes here (restarting it if it sends
        them elsewhere: to a process that has died or lost the lease, or nowhere). Never starts one
        where none runs: the first cluster does."""
        if not self.owns_notifications:
            return
        reg = BundledRegistry(self.data_dir / "registry")
        if reg.recorded_pid() is not None and reg.recorded_notify_url() != self.notify_url:
            self.ensure()

    def stop(self) -> None:
        """Stop the data dir's registry by its recorded PID (the last process of the data dir stops)."""
        with self._lock:
            BundledRegistry(self.data_dir / "registry").stop()
            self.running, self._seeded, self._kube_images = None, False, None

    def seed_kubernetes(self, coredns: Path | None) -> dict[str, str]:
        """The images a Kubernetes cluster pulls from the bundled registry: the project's pause
        (sandbox) image, and CoreDNS from the given binary if there is one. Returns their references
        by name ({"pause": host:port/repo:tag, "coredns": ...}); pushed once per process."""
        endpoint = self.ensure()
        if endpoint is None:
            return {}
        with self._lock:
            if self._kube_images is None:
                url = f"http://{endpoint}"
                reg = self.running
                assert reg is not None  # ensure() set it
                through_restarts(reg, lambda: seed_pause(url, auth=self.bearer()))
                images = {"pause": f"{endpoint}/{PAUSE_REPOSITORY}:{PAUSE_TAG}"}
                if coredns is not None and coredns.exists():
                    through_restarts(reg, lambda: seed_binary(url, COREDNS_REPOSITORY, COREDNS_TAG, coredns,
                                                              "coredns", auth=self.bearer()))
                    images["coredns"] = f"{endpoint}/{COREDNS_REPOSITORY}:{COREDNS_TAG}"
                self._kube_images = images
            return dict(self._kube_images)

    def notify_token(self) -> str:
        """Bearer token the bundled registry sends with its notifications; kept in the data dir so
        that a restarted control plane adopts the running registry (same config)."""
        return self._secret_file("registry-notify.token")

    def _secret_file(self, name: str) -> str:
        path = self.data_dir / name
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            token = secrets.token_urlsafe(32)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                return path.read_text().strip()
            with os.fdopen(fd, "w") as f:
                f.write(token)
            return token
