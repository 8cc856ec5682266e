"""What the endpoint manager needs to put a Kubernetes cluster's checking endpoint in front of its
apiserver (opencs.loops.endpoints.KubeBackends): the apiserver's URL and a front-proxy-client
credential of the cluster's front-proxy CA, derived from the cluster CA (opencs.engines.kubernetes.pki)."""

from __future__ import annotations

from collections.abc import Callable

from opencs.engines.kubernetes.driver import KubernetesDriver
from opencs.engines.kubernetes.pki import ClusterPKI


class FrontProxyBackends:
    cluster_types = (KubernetesDriver.cluster_type, "ManagedKubernetes")  # what KubernetesDriver.check records

    def __init__(self, api_url: Callable[[str], str], cluster_ca: Callable[[str], tuple[str, str]]) -> None:
        self.api_url = api_url  # the driver's: the master's or the HA load balancer's https:// URL, "" for none
        self.cluster_ca = cluster_ca  # (CA certificate, CA key) of a cluster

    def apiservers(self, cluster_id: str) -> list[str]:
        url = self.api_url(cluster_id)
        return [url] if url else []

    def front_proxy(self, cluster_id: str) -> tuple[str, str, str]:
        pki = ClusterPKI.from_ca(*self.cluster_ca(cluster_id))
        cred = pki.front_proxy_client()
        return pki.ca.cert_pem, cred.cert_pem, cred.key_pem
