"""The ssh provider against a real sshd in front of a real dockerd (a netns host of our own, sshhost.py).

No mocks: logins, host-key pinning, the unix-socket tunnel, the engine behind it, and the API/CLI path
through a real `opencs server` process.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import stat
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import asyncssh
import docker
import pytest
from cryptography.fernet import Fernet
from typer.testing import CliRunner

from opencs.cli.main import app
from opencs.engines.swarm.node import DockerEngine
from opencs.providers import localnet as net
from opencs.providers.base import InstanceNotFound, InstanceSpec, InstanceState, ProviderUnavailable
from opencs.providers.ssh import SshError, SshProvider
from opencs.sdk import Client
from opencs.sdk.errors import OpencsError
from opencs.secretbox import SecretBox

from .conftest import busybox_rootfs_tar
from .sshhost import TEST_USER, SshHost, new_tmp, skip_reason

pytestmark = pytest.mark.docker


def client(docker_host: str) -> docker.DockerClient:
    c = docker.DockerClient(base_url=docker_host, version="1.41", timeout=20)
    c.api.trust_env = False
    return c


@pytest.fixture(scope="module")
def host() -> Iterator[SshHost]:
    if reason := skip_reason():
        pytest.skip(reason)
    h = SshHost(new_tmp())
    try:
        yield h.start()
    finally:
        problems = h.close()
        shutil.rmtree(h.tmp, ignore_errors=True)
        assert problems == [], problems


@pytest.fixture
def box() -> SecretBox:
    return SecretBox(Fernet.generate_key())


_roots = iter(range(1000))


@pytest.fixture
def provider(host: SshHost, box: SecretBox) -> Iterator[SshProvider]:
    p = SshProvider(host.tmp / f"ssh{next(_roots)}", box, runtime=DockerEngine())
    try:
        yield p
    finally:
        for iid in p._ids():  # whatever a failed test left registered
            p.destroy(iid)
        p.close()


def register_root(p: SshProvider, host: SshHost, **kw: Any) -> Any:
    args: dict[str, Any] = {"private_key": host.root_key_pem, "known_host_key": host.host_key_pub,
                            "remote_socket": host.engine_socket}
    return p.register(f"root@{host.ip}", **(args | kw))


def wait_state(p: SshProvider, iid: str, want: InstanceState, timeout: float = 15.0) -> InstanceState:
    deadline = time.monotonic() + timeout
    while (st := p.inspect(iid).state) != want and time.monotonic() < deadline:
        time.sleep(0.2)
    return st


def test_register_tunnel_adopt_destroy(host: SshHost, box: SecretBox) -> None:
    root = host.tmp / "ssh-adopt"
    p1 = SshProvider(root, box, runtime=DockerEngine())
    p2: SshProvider | None = None
    try:
        inst = register_root(p1, host)
        iid = inst.instance_id
        assert re.fullmatch(r"i-[a-z0-9]{20}", iid)
        assert (inst.provider, inst.private_ip, inst.state) == ("ssh", host.ip, InstanceState.RUNNING)
        assert inst.tls_port is None and inst.details["tls"] is None
        sock = net.socket_path(root, iid)
        assert inst.docker_host == f"unix://{sock}"
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600  # whoever connects is root on the host
        assert inst.details["host_key_source"] == "given"
        assert inst.details["auth"] == "key"

        # the engine behind the tunnel is the netns host's own dockerd
        direct = client(f"unix://{host.engine_socket}").info()
        with closing(client(inst.docker_host)) as c:
            info = c.info()
            assert (info["ID"], info["Name"]) == (direct["ID"], direct["Name"])
            assert c.version()["ApiVersion"]
        assert inst.details["engine_id"] == direct["ID"]

        # credentials only as a SecretBox token; nothing secret in the instance
        record = (root / iid / "host.json").read_text()
        key_body = host.root_key_pem.splitlines()[1]
        assert key_body not in record and "PRIVATE KEY" not in record
        assert box.decrypt(json.loads(record)["secret"]).count(key_body) == 1
        assert stat.S_IMODE((root / iid / "host.json").stat().st_mode) == 0o600
        assert key_body not in json.dumps(inst.details)
        assert [i.instance_id for i in p1.list()] == [iid]

        with pytest.raises(SshError) as dup:
            register_root(p1, host)
        assert dup.value.code == "InstanceAlreadyRegistered" and iid in dup.value.message

        # "restart": the old process is gone and left a stale socket file behind
        p1.close()
        assert not sock.exists()
        with socket.socket(socket.AF_UNIX) as s:
            s.bind(str(sock))
        p2 = SshProvider(root, box, runtime=DockerEngine())
        adopted = p2.adopt()
        assert [(i.instance_id, i.state) for i in adopted] == [(iid, InstanceState.RUNNING)]
        with closing(client(adopted[0].docker_host)) as c:
            assert c.info()["ID"] == direct["ID"]
            # the SSH connection drops (sshd restarted, network blip): the next call dials again
            assert host.kill_sessions() > 0
            time.sleep(0.2)
            assert c.info()["ID"] == direct["ID"]
        # a new client right after the drop, before the loss is noticed (a client's pooled keep-alive
        # connection dies with the SSH link, like a TCP connection to a rebooted host)
        assert host.kill_sessions() > 0
        with closing(client(adopted[0].docker_host)) as c:
            assert c.info()["ID"] == direct["ID"]

        p2.destroy(iid)
        with pytest.raises(InstanceNotFound):
            p2.inspect(iid)
        assert not (root / iid).exists() and p2.list() == []
        p2.destroy(iid)  # idempotent
        assert client(f"unix://{host.engine_socket}").info()["ID"] == direct["ID"]  # host untouched
    finally:
        for p in (p1, p2):
            if p is not None:
                for i in p._ids():
                    p.destroy(i)
                p.close()


def test_login_errors_are_clear(host: SshHost, provider: SshProvider) -> None:
    other_key = asyncssh.generate_private_key("ssh-ed25519")
    with pytest.raises(SshError) as e:
        register_root(provider, host, private_key=other_key.export_private_key("openssh").decode())
    assert e.value.code == "SshAuthFailed" and "authentication rejected" in e.value.message

    with pytest.raises(SshError) as e:
        register_root(provider, host, known_host_key=other_key.export_public_key("openssh").decode())
    assert e.value.code == "SshHostKeyMismatch"

    with pytest.raises(SshError) as e:
        provider.register(f"{TEST_USER}@{host.ip}", password="wrong-" + host.user_password)
    assert e.value.code == "SshAuthFailed"
    assert host.user_password not in str(e.value)

    with pytest.raises(SshError) as e:
        register_root(provider, host, private_key="-----BEGIN OPENSSH PRIVATE KEY-----\nnope\n")
    assert e.value.code == "InvalidCredentials" and "nope" not in e.value.message

    for bad in ("no-user-part", f"root@{host.ip}:99999", "root@bad host"):
        with pytest.raises(SshError) as e:
            provider.register(bad, password="x")
        assert e.value.code == "InvalidTarget"
    assert provider.list() == []


def test_docker_checks_and_password_login(host: SshHost, provider: SshProvider) -> None:
    with pytest.raises(SshError) as e:
        register_root(provider, host, remote_socket=str(host.tmp / "no-docker" / "docker.sock"))
    assert e.value.code == "DockerNotFound" and "does not exist" in e.value.message

    # a root-only socket: the password user logs in fine but may not use it
    root_only = host.tmp / "root-only.sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(root_only))
        root_only.chmod(0o600)
        with pytest.raises(SshError) as e:
            provider.register(f"{TEST_USER}@{host.ip}", password=host.user_password, remote_socket=str(root_only))
    assert e.value.code == "DockerPermissionDenied" and TEST_USER in e.value.message

    # password login, host key trusted on first use and pinned
    inst = provider.register(f"{TEST_USER}@{host.ip}", password=host.user_password,
                             remote_socket=host.engine_socket)
    assert inst.state == InstanceState.RUNNING
    assert (inst.details["auth"], inst.details["host_key_source"]) == ("password", "first-use")
    pinned = asyncssh.import_public_key(host.host_key_pub).get_fingerprint("sha256")
    assert inst.details["host_key"] == pinned
    assert host.user_password not in (provider.root_dir / inst.instance_id / "host.json").read_text()
    with closing(client(inst.docker_host)) as c:
        assert c.ping()
    provider.destroy(inst.instance_id)
    assert provider.list() == []


def test_engine_down_reset_and_refusals(host: SshHost, provider: SshProvider) -> None:
    inst = register_root(provider, host)
    iid = inst.instance_id
    with pytest.raises(ProviderUnavailable, match="registered, not created"):
        provider.create(InstanceSpec())
    for op in (provider.start, provider.stop):
        with pytest.raises(ProviderUnavailable, match="does not power"):
            op(iid)
    with pytest.raises(ProviderUnavailable, match="has no 'kubernetes' node runtime"):  # none configured here
        provider.reset(iid, InstanceSpec(runtime="kubernetes"))

    host.stop_engine()
    try:
        down = provider.inspect(iid)
        assert down.state == InstanceState.UNHEALTHY and down.details["last_error"]
        with pytest.raises(SshError) as e:
            register_root(provider, host)
        assert e.value.code in ("DockerNotFound", "DockerNotAnswering"), e.value
    finally:
        host.start_engine()
    assert wait_state(provider, iid, InstanceState.RUNNING) == InstanceState.RUNNING

    # reset = leave the swarm and remove what the cluster made, keep the host's own containers
    c = client(inst.docker_host)
    with closing(c):
        c.swarm.init(advertise_addr=host.ip, listen_addr=f"{host.ip}:2377")
        assert c.info()["Swarm"]["LocalNodeState"] == "active"
        tar = busybox_rootfs_tar()
        ours = theirs = None
        if tar is not None:
            c.api.import_image_from_data(tar, repository="ocxbb", tag="1")
            ours = c.containers.run("ocxbb:1", ["sleep", "300"], labels={"opencs.cluster": "c-test"}, detach=True)
            theirs = c.containers.run("ocxbb:1", ["sleep", "300"], detach=True)

        def no_tls(ip: str) -> Any:
            raise AssertionError("reset must not ask for a TLS certificate")

        after = provider.reset(iid, InstanceSpec(tls_factory=no_tls))
        assert after.state == InstanceState.RUNNING and after.tls_port is None
        assert c.info()["Swarm"]["LocalNodeState"] == "inactive"
        if ours is not None and theirs is not None:
            left = {x.id for x in c.containers.list(all=True)}
            assert ours.id not in left and theirs.id in left
            theirs.remove(force=True)
            c.images.remove("ocxbb:1", force=True)
    provider.destroy(iid)


def test_api_and_cli_register(host: SshHost, server_factory: Any, tmp_path: Path) -> None:
    srv = server_factory(data_dir=host.tmp / "server", workers=1).start()
    key_file = tmp_path / "id_ed25519"
    key_file.write_text(host.root_key_pem)
    key_file.chmod(0o600)
    with Client(f"http://{srv.endpoint}", srv.ak, srv.secret, retries=0, timeout=60) as api:
        obj = {"client_factory": lambda: Client(f"http://{srv.endpoint}", srv.ak, srv.secret, timeout=60)}
        res = CliRunner().invoke(app, ["instances", "register", "--ssh", f"root@{host.ip}", "--key-file",
                                       str(key_file), "--docker-socket", host.engine_socket], obj=obj)
        assert res.exit_code == 0, res.output
        reg = json.loads(res.output)
        assert reg["source"] == "ssh" and reg["state"] == "running" and reg["ip_address"] == [host.ip]
        assert "PRIVATE KEY" not in res.output
        listed = {i["instance_id"]: i for i in api.list_instances(free_only=True)}
        assert listed[reg["instance_id"]]["source"] == "ssh"

        res = CliRunner().invoke(app, ["instances", "register", "--ssh", f"root@{host.ip}"], obj=obj)
        assert res.exit_code == 2  # neither --password-stdin nor --key-file

        bad = asyncssh.generate_private_key("ssh-ed25519").export_private_key("openssh").decode()
        for body, code in (
            ({"ssh": f"root@{host.ip}", "private_key": bad, "remote_socket": host.engine_socket}, "SshAuthFailed"),
            ({"ssh": "root@", "password": "x"}, "InvalidTarget"),
            ({"ssh": f"root@{host.ip}", "private_key": host.root_key_pem, "remote_socket": "/nonexistent.sock"},
             "DockerNotFound"),
        ):
            with pytest.raises(OpencsError) as e:
                api.request("POST", "/instances/register", body=body)
            assert (e.value.status, e.value.code) == (400, code), e.value
            assert "PRIVATE KEY" not in e.value.message
        with pytest.raises(OpencsError) as e:
            api.request("POST", "/instances/register",
                        body={"ssh": f"root@{host.ip}", "private_key": host.root_key_pem,
                              "remote_socket": host.engine_socket})
        assert (e.value.status, e.value.code) == (409, "InstanceAlreadyRegistered")

        task = api.delete_instance(reg["instance_id"])
        api.wait_task(task["task_id"], timeout=60)
        assert reg["instance_id"] not in {i["instance_id"] for i in api.list_instances()}
    assert not any((host.tmp / "server" / "ssh").glob("i-*"))
    srv.stop()
