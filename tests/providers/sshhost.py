"""A throwaway "existing Docker host" reachable by SSH, for the ssh provider tests.

The machine is a local-provider node (its own netns `ocxn…` on bridge `ocx0`, 10.219.0.0/24, own
dockerd) plus an sshd started inside that netns with a generated host key and our own config. Root logs
in by key only (AuthorizedKeysFile in the tmp dir, so the real /root/.ssh is never read); the password
case uses a dedicated user `ocxsshu` created for the test (in group docker, so that a password login can
register) and deleted afterwards. The real root password is never touched.

Everything is torn down by PID/name in `close()`, also after a failure half-way through `start()`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh

from opencs.engines.swarm.node import DockerEngine
from opencs.providers.base import Instance, InstanceSpec, ProviderUnavailable
from opencs.providers.local import LocalProvider, local_provider_leftovers

PREFIX = "ocx"
BRIDGE = "ocx0"
SUBNET = "10.219.0.0/24"
TEST_USER = "ocxsshu"
SSHD = "/usr/sbin/sshd"
PRIVSEP_DIR = Path("/run/sshd")


def skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "ssh provider tests need root (netns, dockerd, sshd, a test user)"
    for b in (SSHD, "dockerd", "useradd", "userdel", "chpasswd"):
        if shutil.which(b) is None and not Path(b).exists():
            return f"ssh provider tests need {b}"
    try:
        LocalProvider(Path("/nonexistent"), BRIDGE, SUBNET, PREFIX).check()
    except ProviderUnavailable as e:
        return str(e)
    return None


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = (d / "stat").read_text()
                ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
                children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


@dataclass
class SshHost:
    tmp: Path
    local: LocalProvider = field(init=False)
    node: Instance | None = None
    ip: str = ""
    engine_socket: str = ""  # the node's dockerd socket, as seen from the sshd (host mount namespace)
    host_key_pub: str = ""
    root_key_pem: str = ""
    user_password: str = ""
    sshd: subprocess.Popen[bytes] | None = None
    made_privsep_dir: bool = False
    made_user: bool = False
    # another test module's own claim (tests/architecture/test_node_namespaces.py), and sshd lines of its own
    prefix: str = PREFIX
    bridge: str = BRIDGE
    subnet: str = SUBNET
    sshd_extra: str = ""
    owns_node: bool = True  # False: `node` is a machine of someone else's (a server's), sshd only runs in it

    def __post_init__(self) -> None:
        self.local = LocalProvider(self.tmp / "nodes", bridge=self.bridge, subnet=self.subnet, prefix=self.prefix,
                                   stop_grace=5.0, runtime=DockerEngine())

    @property
    def sshd_log(self) -> Path:
        return self.tmp / "sshd.log"

    def start(self) -> SshHost:
        # 0711: the test user must be able to reach the node's socket path (to meet its 0660 mode)
        self.tmp.chmod(0o711)
        if self.owns_node:
            self.node = self.local.create(InstanceSpec())
        assert self.node is not None
        self.ip = self.node.private_ip
        self.engine_socket = self.node.details["unix_socket"]

        host_key = asyncssh.generate_private_key("ssh-ed25519")
        (self.tmp / "host_key").write_bytes(host_key.export_private_key("openssh"))
        (self.tmp / "host_key").chmod(0o600)
        self.host_key_pub = host_key.export_public_key("openssh").decode().strip()
        client_key = asyncssh.generate_private_key("ssh-ed25519")
        self.root_key_pem = client_key.export_private_key("openssh").decode()
        keys = self.tmp / "authorized_keys"
        keys.mkdir(mode=0o755)
        (keys / "root").write_bytes(client_key.export_public_key("openssh"))

        self._make_user()
        cfg = self.tmp / "sshd_config"
        cfg.write_text(f"""\
ListenAddress {self.ip}:22
HostKey {self.tmp / "host_key"}
PidFile none
AuthorizedKeysFile {keys}/%u
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication yes
KbdInteractiveAuthentication no
PermitEmptyPasswords no
UsePAM no
AllowStreamLocalForwarding yes
AllowTcpForwarding local
X11Forwarding no
# the config and keys live under /tmp (world-writable): StrictModes would refuse them
StrictModes no
UseDNS no
Subsystem sftp internal-sftp
LogLevel VERBOSE
{self.sshd_extra}""")
        if not PRIVSEP_DIR.exists():
            PRIVSEP_DIR.mkdir(mode=0o755)
            self.made_privsep_dir = True
        netns = self.node.details["netns"]
        with open(self.sshd_log, "ab") as logf:
            # nsenter execs sshd: the PID we hold is sshd's own. Only the network namespace is the
            # host's own (`ip netns exec` would also remount /sys, and a host has its cgroup tree there)
            self.sshd = subprocess.Popen(["nsenter", f"--net=/run/netns/{netns}", "--", SSHD, "-D", "-e", "-f",
                                          str(cfg)],
                                         stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            if self.sshd.poll() is not None:
                raise RuntimeError(f"sshd exited {self.sshd.returncode}: {self.sshd_log.read_text()[-2000:]}")
            with contextlib.suppress(OSError), socket.create_connection((self.ip, 22), timeout=0.5):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"sshd did not listen: {self.sshd_log.read_text()[-2000:]}")
            time.sleep(0.05)
        return self

    def _make_user(self) -> None:
        # a leftover of a killed earlier run: it is ours by name
        if subprocess.run(["id", TEST_USER], capture_output=True).returncode == 0:
            subprocess.run(["userdel", TEST_USER], check=True, capture_output=True)
        subprocess.run(["useradd", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/bin/sh",
                        "--groups", "docker", TEST_USER], check=True, capture_output=True)
        self.made_user = True
        self.user_password = "Pw-" + secrets.token_urlsafe(12)
        subprocess.run(["chpasswd"], input=f"{TEST_USER}:{self.user_password}".encode(), check=True,
                       capture_output=True)

    def kill_sessions(self) -> int:
        """SIGKILL the per-connection sshd processes: every established SSH connection drops."""
        assert self.sshd is not None
        pids = _descendants(self.sshd.pid)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return len(pids)

    def stop_engine(self) -> None:
        assert self.node is not None
        self.local.stop(self.node.instance_id)

    def start_engine(self) -> None:
        assert self.node is not None
        self.local.start(self.node.instance_id)

    def close(self) -> list[str]:
        """Tear down by PID/name; returns what could not be cleaned (empty = clean)."""
        problems: list[str] = []
        if self.sshd is not None:
            # per-connection sshd children outlive the listener: collect their PIDs while we can
            children = _descendants(self.sshd.pid)
            for pid in [*children, self.sshd.pid]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
            try:
                self.sshd.wait(5)
            except subprocess.TimeoutExpired:
                self.sshd.kill()
                self.sshd.wait(5)
            time.sleep(0.2)
            for pid in children:
                with contextlib.suppress(OSError):  # only if the PID is still an sshd (not reused)
                    if Path(f"/proc/{pid}/comm").read_text().strip() == "sshd":
                        os.kill(pid, signal.SIGKILL)
        if self.made_user:
            p = subprocess.run(["userdel", TEST_USER], capture_output=True, text=True)
            if p.returncode != 0:
                problems.append(f"userdel {TEST_USER}: {p.stderr.strip()}")
        if self.node is not None and self.owns_node:
            try:
                self.local.destroy(self.node.instance_id)
            except Exception as e:
                problems.append(f"destroy {self.node.instance_id}: {e!r}")
        if self.made_privsep_dir:
            with contextlib.suppress(OSError):
                PRIVSEP_DIR.rmdir()
        deadline = time.monotonic() + 3
        while self.owns_node and (local_provider_leftovers(self.prefix, self.bridge, self.local.root_dir)
                                  and time.monotonic() < deadline):
            time.sleep(0.1)
        if self.owns_node:
            problems += local_provider_leftovers(self.prefix, self.bridge, self.local.root_dir)
        return problems


def new_tmp() -> Path:
    return Path(tempfile.mkdtemp(prefix="ocxssh-", dir="/tmp"))
