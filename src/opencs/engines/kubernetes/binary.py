"""Where the Kubernetes multicall binary built by scripts/build-kubernetes.sh lives."""

from __future__ import annotations

import os
from pathlib import Path

# The version build/kubernetes/go.mod pins (a unit test keeps the two equal).
KUBERNETES_VERSION = "v1.34.4"
COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "kubectl", "etcd")


class BinaryMissing(RuntimeError):
    pass


def cache_dir() -> Path:
    return Path(os.environ.get("OPENCS_CACHE_DIR") or Path.home() / ".cache" / "opencs")


def bin_dir() -> Path:
    """$OPENCS_KUBERNETES_BIN_DIR, else the build script's versioned cache directory."""
    if explicit := os.environ.get("OPENCS_KUBERNETES_BIN_DIR"):
        return Path(explicit)
    return cache_dir() / "kubernetes" / KUBERNETES_VERSION / "bin"


def binary() -> Path:
    """The multicall binary (run as `kubernetes COMMAND ...`); a clear error when it is not built."""
    path = bin_dir() / "kubernetes"
    if not os.access(path, os.X_OK):
        raise BinaryMissing(
            f"Kubernetes {KUBERNETES_VERSION} is not built ({path} missing): run scripts/build-kubernetes.sh"
        )
    return path
