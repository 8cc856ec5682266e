"""Kubernetes nodes pull their account's private images from the bundled registry (issue 10 item 4),
on a real 1-master + 1-worker cluster: an image pushed into the account's namespace with the
account's AccessKey (the Docker token flow `docker login` + `docker push` follow) runs in a plain pod
spec, without imagePullSecrets, because each node's containerd holds a node credential of its own
(CRI `registry.configs."<registry>".auth`, file 0600); an image of another account's namespace is
refused by the token server (ErrImagePull / ImagePullBackOff, the token request on the trail granted
nothing); once a node is removed from the cluster its credential is refused and gone from its machine.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from opencs.registry.image import build_busybox_image, push_image
from opencs.sdk import Client
from tests.clusterkit import destroy_everything
from tests.conftest import ServerProcess
from tests.engines.kubernetes.test_k8s_cluster import BODY, _settled, _wait, kube_env, require_kubernetes_host
from tests.registry.test_registry_auth import Bearer
from tests.sdks import core_call, core_client

pytestmark = [pytest.mark.docker, pytest.mark.slow]

PREFIX, SUBNET = "okr", "10.186.0.0/24"  # no other test uses them
REGISTRY_PORT = 5071


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    require_kubernetes_host()
    data = tmp_path / "data"
    s = ServerProcess(data, env=kube_env(PREFIX, SUBNET, REGISTRY_PORT))
    try:
        yield s.start(timeout=90)
    finally:
        s.kill()
        destroy_everything(data, PREFIX, SUBNET)


def _realm(registry: str) -> dict[str, str]:
    r = httpx.get(f"http://{registry}/v2/", trust_env=False)
    assert r.status_code == 401
    return dict(re.findall(r'(\w+)="([^"]*)"', r.headers["www-authenticate"]))


def _push(registry: str, repo: str, user: str, password: str) -> str:
    """Push a busybox image as docker does after `docker login`: a token for push, then the blobs."""
    ch = _realm(registry)
    tok = httpx.get(ch["realm"], params={"service": ch["service"], "scope": f"repository:{repo}:pull,push"},
                    auth=(user, password), trust_env=False)
    assert tok.status_code == 200, tok.text
    image = build_busybox_image()
    return push_image(f"http://{registry}", repo, "v1", image.layers, image.config, auth=Bearer(tok.json()["token"]))


def _pod(name: str, image: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "main", "image": image, "command": ["sleep", "3600"]}]}}


def test_pods_pull_their_accounts_images_and_no_others(server: ServerProcess, tmp_path: Path) -> None:
    from aliyunsdkcs.request.v20151215.CreateClusterRequest import CreateClusterRequest
    from kubernetes import client as k8s
    from kubernetes import config as k8s_config

    core = core_client(server.endpoint, server.ak, server.secret)
    owner = Client(server.url, server.ak, server.secret, retries=0)
    cid = core_call(core, CreateClusterRequest(), {**BODY, "name": "pull", "num_of_nodes": 1})["cluster_id"]
    made = subprocess.run([str(Path(sys.executable).parent / "opencs"), "accounts", "create", "team-b",
                           "--data-dir", str(server.data_dir)], capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    team_b = json.loads(made.stdout)
    registry = json.loads((server.data_dir / "host-claims.json").read_text())["registry"]
    assert _push(registry, "default/app", server.ak, server.secret).startswith("sha256:")
    assert _push(registry, "team-b/app", team_b["access_key_id"], team_b["access_key_secret"]).startswith("sha256:")
    d = _settled(core, cid, "launching", 300)
    assert d["state"] == "running", d

    # every node's containerd holds its own credential, in a file only root reads
    worker = next(n["instance_id"] for n in owner.cluster_nodes(cid)["nodes"] if n["role"] == "worker")
    conf = server.data_dir / "nodes" / worker / "k8s" / "containerd.toml"
    assert conf.stat().st_mode & 0o777 == 0o600
    auth = tomllib.loads(conf.read_text())["plugins"]["io.containerd.grpc.v1.cri"]["registry"]["configs"][registry]
    assert auth["auth"]["username"] == f"node-{worker}"
    password = auth["auth"]["password"]

    kc = tmp_path / "kubeconfig"
    kc.write_text(owner.kubeconfig(cid).config)
    v1 = k8s.CoreV1Api(k8s_config.new_client_from_config(str(kc)))
    v1.create_namespaced_pod("default", _pod("own", f"{registry}/default/app:v1"))  # no imagePullSecrets
    v1.create_namespaced_pod("default", _pod("other", f"{registry}/team-b/app:v1"))
    _wait("own image running", lambda: v1.read_namespaced_pod("own", "default").status.phase == "Running", 180)

    def refused() -> tuple[str, str] | None:
        st = v1.read_namespaced_pod("other", "default").status.container_statuses or []
        waiting = st[0].state.waiting if st else None
        return (waiting.reason, waiting.message or "") if waiting and waiting.reason in (
            "ErrImagePull", "ImagePullBackOff") else None

    reason, message = _wait("other account's image refused", refused, 120)
    assert v1.read_namespaced_pod("other", "default").status.phase == "Pending"
    # the token server's word: the node asked for team-b/app and was granted nothing
    tokens = [e for e in owner.audit_log(action="cr:GetAuthorizationToken", limit=1000)
              if e.user_name.startswith("node-")]
    assert any("default/app:pull" in e.outcome for e in tokens), tokens
    assert any("team-b/app:-" in e.outcome for e in tokens), tokens
    assert not any("team-b/app:pull" in e.outcome for e in tokens), tokens
    # the pod create through master_url is on the trail too (issue 10 item 6)
    made_pods = [e for e in owner.audit_log(action="k8s:create", limit=100)
                 if e.resource.endswith(f"cluster/{cid}/api/v1/namespaces/default/pods")]
    assert [e.outcome for e in made_pods] == ["201", "201"], made_pods
    print(f"refused as {reason}: {message[:200]}")

    # a node that leaves the cluster is refused from then on; its machine is re-imaged without it
    ch = _realm(registry)
    owner.wait_task(owner.remove_nodes(cid, [worker]).task_id, timeout=300)
    gone = httpx.post(ch["realm"], data={"grant_type": "password", "username": f"node-{worker}",
                                         "password": password, "service": ch["service"]}, trust_env=False)
    assert gone.status_code == 401, gone.text
    assert not (conf.parents[1] / "registry-auth.json").exists()  # a free machine: no cluster, no credential
    assert not conf.exists() or "auth]" not in conf.read_text()
    assert password not in server.log.read_text()
