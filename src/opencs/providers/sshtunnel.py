"""SSH plumbing for the `ssh` provider: targets, logins, engine probes and the docker-socket tunnels.

A tunnel is a unix socket on the control-plane machine; every connection made to it becomes one
SSH direct-streamlocal channel to the host's Docker socket (what `ssh -L local.sock:/var/run/docker.sock`
does). We own the listening socket instead of using asyncssh's `forward_local_path`, because that
listener belongs to one SSH connection and dies with it: ours outlives dropped connections and
re-dials SSH on demand, when the next client connects.

All coroutines here run on one `LoopThread` (an asyncio loop in a daemon thread), so the blocking
Provider methods can be called from any thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ipaddress
import json
import logging
import os
import posixpath
import re
import shlex
import stat
import threading
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import asyncssh

from opencs.machine import ShellResult
from opencs.providers.base import RegistrationFailed

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_REMOTE_SOCKET = "/var/run/docker.sock"
_USER_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}\$?$")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST_RE = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*$")
_UNIX_PATH_MAX = 107  # sun_path is 108 bytes including the NUL


class SshError(RegistrationFailed):
    """Registering or reaching a host failed. `code` is the API error code; the message names what
    failed and never contains a credential."""


# --- targets and credentials -------------------------------------------------------------------------


@dataclass(frozen=True)
class SshTarget:
    user: str
    host: str  # hostname or IP address as given (IPv6 without brackets)
    port: int = 22

    @classmethod
    def parse(cls, text: str) -> SshTarget:
        """`user@host[:port]`, IPv6 as `user@[addr][:port]`."""
        user, sep, rest = text.strip().partition("@")
        if not sep or not _USER_RE.match(user):
            raise SshError("InvalidTarget", f"ssh target {text!r}: expected user@host[:port]")
        port_s = ""
        if rest.startswith("["):
            host, close, tail = rest[1:].partition("]")
            if not close or (tail and not tail.startswith(":")):
                raise SshError("InvalidTarget", f"ssh target {text!r}: bad [IPv6] address")
            port_s = tail[1:]
            try:
                ipaddress.IPv6Address(host)
            except ValueError:
                raise SshError("InvalidTarget", f"ssh target {text!r}: {host!r} is not an IPv6 address") from None
        else:
            host, _, port_s = rest.partition(":")
            if not _HOST_RE.match(host):
                raise SshError("InvalidTarget", f"ssh target {text!r}: {host!r} is not a host name or address")
        port = 22
        if port_s or rest.endswith(":"):
            if not port_s.isdigit() or not 0 < int(port_s) < 65536:
                raise SshError("InvalidTarget", f"ssh target {text!r}: port must be 1-65535")
            port = int(port_s)
        return cls(user, host, port)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user}@{host}:{self.port}"


@dataclass(frozen=True, repr=False)
class SshAuth:
    """Login secrets. repr() hides them so that they cannot end up in a log or a traceback."""

    password: str | None = None
    private_key: str | None = None  # PEM / OpenSSH private key text

    def __repr__(self) -> str:
        hide = {k: "***" if v else None for k, v in (("password", self.password), ("private_key", self.private_key))}
        return f"SshAuth(password={hide['password']}, private_key={hide['private_key']})"

    @property
    def kind(self) -> str:
        return "+".join(k for k, v in (("key", self.private_key), ("password", self.password)) if v)

    def client_keys(self) -> list[asyncssh.SSHKey] | None:
        if not self.private_key:
            return None
        try:
            return [asyncssh.import_private_key(self.private_key)]
        except asyncssh.KeyEncryptionError:
            raise SshError("InvalidCredentials", "the private key is passphrase-protected: not supported") from None
        except (asyncssh.KeyImportError, ValueError):
            # never echo the key text back
            raise SshError("InvalidCredentials", "the private key is not a valid PEM/OpenSSH private key") from None

    def to_json(self) -> str:
        return json.dumps({"password": self.password, "private_key": self.private_key})

    @classmethod
    def from_json(cls, text: str) -> SshAuth:
        d = json.loads(text)
        return cls(password=d.get("password"), private_key=d.get("private_key"))


def parse_host_key(text: str) -> asyncssh.SSHKey:
    """An OpenSSH public key (`ssh-ed25519 AAAA… [comment]`) or a known_hosts line (`host key…`)."""
    text = text.strip()
    for candidate in (text, text.split(None, 1)[1] if " " in text else ""):
        with contextlib.suppress(asyncssh.KeyImportError, ValueError, IndexError):
            if candidate:
                return asyncssh.import_public_key(candidate)
    raise SshError("InvalidHostKey", "known_host_key is not an OpenSSH public key or known_hosts line")


def host_key_text(key: asyncssh.SSHKey) -> str:
    return key.export_public_key("openssh").decode().strip()


# --- connections and probes --------------------------------------------------------------------------


async def connect(target: SshTarget, auth: SshAuth, host_key: asyncssh.SSHKey | None,
                  timeout: float) -> asyncssh.SSHClientConnection:
    """Log in. host_key None = accept whatever the host presents (first use; the caller pins it)."""
    keys = auth.client_keys()
    if keys is None and not auth.password:
        raise SshError("InvalidCredentials", "give a password or a private key")
    try:
        return await asyncssh.connect(
            target.host,
            target.port,
            username=target.user,
            password=auth.password,
            client_keys=keys,
            known_hosts=([host_key], [], []) if host_key is not None else None,
            # only what we were given: no ~/.ssh/config, default keys, agent or GSSAPI of the server's user
            config=[],
            agent_path=None,
            gss_auth=False,
            gss_kex=False,
            connect_timeout=timeout,
            login_timeout=timeout,
            keepalive_interval=15,  # notice a dead host instead of hanging on it
            keepalive_count_max=3,
        )
    except asyncssh.PermissionDenied:
        raise SshError("SshAuthFailed", f"ssh login to {target} failed: authentication rejected "
                                        f"({auth.kind or 'no credentials'})") from None
    except asyncssh.HostKeyNotVerifiable:
        raise SshError("SshHostKeyMismatch", f"ssh host key of {target} does not match the pinned key "
                                             "(host re-installed, or someone in between?)") from None
    except TimeoutError:
        raise SshError("SshUnreachable", f"cannot reach ssh at {target}: timed out after {timeout:.0f}s") from None
    except asyncssh.DisconnectError as e:
        raise SshError("SshUnreachable", f"ssh to {target} failed: {e.reason}") from None
    except OSError as e:
        raise SshError("SshUnreachable", f"cannot reach ssh at {target}: {e.strerror or e}") from None


async def engine_get(conn: asyncssh.SSHClientConnection, remote_socket: str, path: str,
                     timeout: float) -> dict[str, Any]:
    """GET an engine API path through one direct-streamlocal channel (raises asyncssh.ChannelOpenError)."""
    reader, writer = await conn.open_unix_connection(remote_socket)
    try:
        writer.write(f"GET {path} HTTP/1.0\r\nHost: docker\r\nConnection: close\r\n\r\n".encode())
        raw = await asyncio.wait_for(reader.read(-1), timeout)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0]
    if not status.startswith(b"HTTP/1.") or b" 200 " not in status:
        raise SshError("DockerNotAnswering", f"the engine answered {status.decode(errors='replace')!r}")
    try:
        out = json.loads(body)
    except ValueError:
        raise SshError("DockerNotAnswering", "the engine's reply is not JSON (is this a Docker socket?)") from None
    return out if isinstance(out, dict) else {}


# line 1: ok|noperm|notsocket|missing (the socket, as the login user sees it)
# line 2: engine-ok | engine-err <first error line of `docker version`> | nocli
_DIAG = r"""
LC_ALL=C; export LC_ALL
s=$1
if [ -S "$s" ]; then
  if [ -r "$s" ] && [ -w "$s" ]; then echo ok; else echo noperm; fi
elif [ -e "$s" ]; then echo notsocket
elif ls -d -- "$s" 2>&1 | grep -q 'Permission denied'; then echo noperm
else echo missing; fi
if command -v docker >/dev/null 2>&1; then
  if out=$(DOCKER_HOST="unix://$s" docker version --format '{{.Server.Version}}' 2>&1); then echo engine-ok
  else echo "engine-err $(printf '%s\n' "$out" | grep -v '^$' | head -n 1)"; fi
else echo nocli; fi
"""

_FORWARDING = "(sshd_config: AllowStreamLocalForwarding yes, and AllowTcpForwarding yes or local)"


async def explain_no_engine(conn: asyncssh.SSHClientConnection, target: SshTarget, remote_socket: str,
                            cause: Exception) -> SshError:
    """Why the engine socket could not be used, looked at on the host itself. (OpenSSH reports a refused
    forwarding and a dead socket alike, as "open failed", so the channel error alone cannot tell.)"""
    try:
        res = await asyncio.wait_for(
            conn.run(f"sh -c {shlex.quote(_DIAG)} sh {shlex.quote(remote_socket)}", check=False), 30)
        lines = str(res.stdout or "").splitlines()
    except (asyncssh.Error, OSError, TimeoutError) as e:
        lines = []
        log.debug("diagnosis on %s failed: %s", target, e)
    verdict = lines[0].strip() if lines else "unknown"
    engine = lines[1].strip() if len(lines) > 1 else "nocli"
    where = f"{remote_socket} on {target.host}"
    if verdict == "missing":
        return SshError("DockerNotFound", f"no Docker engine on {target.host}: {remote_socket} does not exist")
    if verdict == "noperm":
        return SshError("DockerPermissionDenied", f"permission denied: user {target.user!r} cannot use {where} "
                                                  "(add it to the docker group, or register as root)")
    if verdict == "notsocket":
        return SshError("DockerNotFound", f"{where} is not a unix socket")
    if isinstance(cause, SshError):
        return cause  # the socket answered, but not like a Docker engine
    if verdict == "ok" and engine == "engine-ok":
        return SshError("SshForwardingDisabled", f"the engine on {target.host} answers locally, but its ssh "
                                                 f"server refuses to forward to {remote_socket} {_FORWARDING}")
    if engine.startswith("engine-err"):
        return SshError("DockerNotAnswering", f"the Docker engine at {where} does not answer: "
                                              f"{engine.removeprefix('engine-err').strip()}")
    reason = getattr(cause, "reason", None) or str(cause) or type(cause).__name__
    return SshError("DockerNotAnswering", f"cannot reach the Docker engine at {where} through ssh ({reason}): "
                                          f"engine not running, or forwarding refused {_FORWARDING}")


# --- the event loop ----------------------------------------------------------------------------------


class LoopThread:
    """An asyncio loop in a daemon thread; `run()` executes a coroutine on it from any other thread."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:
            fut.cancel()  # do not leave the work running behind the caller's back
            raise

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self.loop.close()


async def run_script(conn: asyncssh.SSHClientConnection, script: str, timeout: float) -> ShellResult:
    """A shell script as the login (its shell, its PATH)."""
    r = await asyncio.wait_for(conn.run(script, check=False), timeout)
    out, err = r.stdout, r.stderr
    return ShellResult(r.exit_status if r.exit_status is not None else -1,
                       out if isinstance(out, str) else "", err if isinstance(err, str) else "")


async def socket_answers(conn: asyncssh.SSHClientConnection, remote_socket: str) -> bool:
    """Something accepts connections on a unix socket of the host (a direct-streamlocal channel)."""
    try:
        _r, w = await conn.open_unix_connection(remote_socket)
    except (asyncssh.Error, OSError):
        return False
    w.close()
    return True


async def sftp_put(conn: asyncssh.SSHClientConnection, files: Mapping[str, tuple[bytes, int]]) -> None:
    """Files over one SFTP session: each written beside its place, then renamed over it."""
    async with conn.start_sftp_client() as sftp:
        for path, (data, mode) in files.items():
            await sftp.makedirs(posixpath.dirname(path), exist_ok=True)
            tmp = f"{path}.ocs-new"
            async with sftp.open(tmp, "wb", asyncssh.SFTPAttrs(permissions=mode)) as f:
                await f.write(data)
            await sftp.chmod(tmp, mode)
            await sftp.posix_rename(tmp, path)


class LoopShell:
    """A HostShell (opencs.machine) over coroutines of a LoopThread: commands and SFTP uploads as
    the host's registered login, their failures as OSError."""

    def __init__(self, name: str, loop: Callable[[], LoopThread],
                 run: Callable[[str, float], Coroutine[Any, Any, ShellResult]],
                 put: Callable[[Mapping[str, tuple[bytes, int]]], Coroutine[Any, Any, None]]) -> None:
        self._name, self._lt, self._run, self._put = name, loop, run, put

    def run(self, script: str, timeout: float = 60.0) -> ShellResult:
        return self._call(self._run(script, timeout), timeout + 30, "command")

    def put(self, files: Mapping[str, tuple[bytes, int]]) -> None:
        self._call(self._put(files), 120, "SFTP upload")

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float, what: str) -> T:
        try:
            return self._lt().run(coro, timeout)
        except SshError as e:
            raise OSError(e.message) from None
        except (asyncssh.Error, TimeoutError, concurrent.futures.TimeoutError) as e:
            raise OSError(f"ssh host {self._name}: {what} failed: {e or 'timed out'}") from None


# --- tunnels -----------------------------------------------------------------------------------------


class HostTunnel:
    """The docker socket of one registered host, served on a local unix socket (see module doc)."""

    def __init__(self, name: str, target: SshTarget, auth: SshAuth, host_key: asyncssh.SSHKey,
                 remote_socket: str, local_path: Path, connect_timeout: float) -> None:
        self.name = name
        self.target = target
        self._auth = auth
        self._host_key = host_key
        self.remote_socket = remote_socket
        self.local_path = local_path
        self.connect_timeout = connect_timeout
        self._server: asyncio.AbstractServer | None = None
        self._inode: int | None = None
        self._conn: asyncssh.SSHClientConnection | None = None
        self._dial_lock = asyncio.Lock()
        self._retry_at = 0.0  # after a failed dial, fail fast until then (a dead host must not stall callers)
        self._backoff = 0.0
        self.last_error: str | None = None
        self._clients: set[asyncio.Task[None]] = set()

    # listening side

    async def listen(self) -> None:
        """Serve local_path (again), unless this process already serves it or another live process does."""
        if self._server is not None and self._serving_ours():
            return
        if self._server is not None:  # our file was removed or replaced
            self._server.close()
            self._server = None
        if await self._someone_else_serves():
            return
        if len(os.fsencode(self.local_path)) > _UNIX_PATH_MAX:
            raise SshError("InternalError", f"tunnel socket path too long for a unix socket: {self.local_path}")
        # 0700 dir + 0600 socket: whoever can connect drives the remote engine, i.e. is root on that host
        # (no umask dance: the umask is process-wide and other threads create files meanwhile)
        self.local_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.local_path.unlink()  # stale file of a dead process
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.local_path))
        os.chmod(self.local_path, 0o600)
        self._inode = os.stat(self.local_path).st_ino

    def _serving_ours(self) -> bool:
        try:
            st = os.stat(self.local_path)
        except FileNotFoundError:
            return False
        return stat.S_ISSOCK(st.st_mode) and st.st_ino == self._inode

    async def _someone_else_serves(self) -> bool:
        # another opencs process on the same data dir may serve it; do not steal a working socket
        try:
            _r, w = await asyncio.wait_for(asyncio.open_unix_connection(str(self.local_path)), 2)
        except (OSError, TimeoutError):
            return False
        w.close()
        return True

    # SSH side

    async def connection(self) -> asyncssh.SSHClientConnection:
        async with self._dial_lock:
            if self._conn is not None and not self._conn.is_closed():
                return self._conn
            if time.monotonic() < self._retry_at:
                raise SshError("SshUnreachable", self.last_error or f"ssh to {self.target} failed recently")
            try:
                self._conn = await connect(self.target, self._auth, self._host_key, self.connect_timeout)
            except SshError as e:
                self._backoff = min(30.0, max(2.0, self._backoff * 2))
                self._retry_at = time.monotonic() + self._backoff
                if e.message != self.last_error:
                    log.warning("ssh host %s (%s): %s", self.name, self.target, e.message)
                self.last_error = e.message
                raise
            if self.last_error:
                log.info("ssh host %s (%s): connected again", self.name, self.target)
            self._backoff, self._retry_at, self.last_error = 0.0, 0.0, None
            return self._conn

    async def _serve(self, lr: asyncio.StreamReader, lw: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._clients.add(task)
        rw: asyncssh.SSHWriter[bytes] | None = None
        try:
            # dial only once the client speaks: probes that connect and hang up cost no SSH login
            first = await lr.read(65536)
            if not first:
                return
            for attempt in (1, 2):
                conn = await self.connection()
                try:
                    rr, rw = await conn.open_unix_connection(self.remote_socket)
                    self.last_error = None
                    break
                except (asyncssh.Error, OSError) as e:
                    if isinstance(e, asyncssh.ChannelOpenError) and not conn.is_closed():
                        self.last_error = f"engine socket {self.remote_socket}: {e.reason}"
                        return
                    # the connection died before we noticed (host rebooted, sshd restarted): dial once more
                    if self._conn is conn:
                        self._conn = None
                    conn.close()
                    if attempt == 2:
                        raise
            assert rw is not None
            rw.write(first)
            async with asyncio.TaskGroup() as tg:
                tg.create_task(_pump(lr, rw))
                tg.create_task(_pump(rr, lw))
        except SshError:
            pass  # already logged by connection(); the client sees its connection closed
        except asyncio.CancelledError:
            pass  # close(): end quietly (asyncio's stream callback would log a cancelled task as an error)
        except Exception as e:
            log.debug("ssh host %s: tunnel connection ended: %r", self.name, e)
        finally:
            if rw is not None:
                rw.close()
            lw.close()
            if task is not None:
                self._clients.discard(task)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
            if self._serving_ours():  # never unlink a socket another process now serves
                with contextlib.suppress(FileNotFoundError):
                    self.local_path.unlink()
        for t in list(self._clients):
            t.cancel()
        if self._conn is not None:
            self._conn.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._conn.wait_closed(), 5)
            self._conn = None


async def _pump(src: asyncio.StreamReader | asyncssh.SSHReader[bytes],
                dst: asyncio.StreamWriter | asyncssh.SSHWriter[bytes]) -> None:
    while data := await src.read(65536):
        dst.write(data)
        await dst.drain()
    # half-close: the other direction may still carry the reply (HTTP, `docker attach`)
    with contextlib.suppress(OSError, asyncssh.Error):
        if dst.can_write_eof():
            dst.write_eof()
