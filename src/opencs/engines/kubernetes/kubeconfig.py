"""kubeconfig files: the cluster's endpoint and CA with one user's client certificate, all embedded,
the format kubectl, the components and the official Python client read."""

from __future__ import annotations

import base64

import yaml

from opencs.pki import IssuedCert


def _b64(pem: str) -> str:
    return base64.b64encode(pem.encode("ascii")).decode("ascii")


def kubeconfig(server: str, ca_pem: str, cred: IssuedCert, cluster: str = "kubernetes", user: str = "user") -> str:
    """YAML text; `server` is https://host:port. Holds a private key: write it mode 0600."""
    context = f"{user}@{cluster}"
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster, "cluster": {"server": server, "certificate-authority-data": _b64(ca_pem)}}],
        "users": [
            {
                "name": user,
                "user": {"client-certificate-data": _b64(cred.cert_pem), "client-key-data": _b64(cred.key_pem)},
            }
        ],
        "contexts": [{"name": context, "context": {"cluster": cluster, "user": user}}],
        "current-context": context,
        "preferences": {},
    }
    return yaml.safe_dump(doc, sort_keys=False)
