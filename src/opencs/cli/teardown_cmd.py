"""`opencs teardown`: remove everything a data dir holds on this host, then release its host claims.

What a stopped server leaves running is what its nodes need (the nodes themselves, their bridge and
its iptables rule); this removes that too: every local node of the data dir (and so every container
on it) by the ids in its state dir, the bridge, the registry, the router's HAProxy and the monitoring
stack by their recorded PIDs, then checks that nothing named by the claims is left and forgets them
(opencs.providers.hostclaims). The data dir itself (store, keys, images) stays; a server started on
it again allocates afresh and finds its local nodes gone. Nodes on SSH hosts are not touched.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

import typer

from opencs.cli.server_cmd import DATA_DIR_OPT
from opencs.config import Settings
from opencs.providers import hostclaims


def _legacy(data_dir: Path) -> hostclaims.HostClaims:
    """A data dir from before records used the settings' values, else the old defaults."""
    s = Settings(data_dir=data_dir)
    return hostclaims.legacy(data_dir, hostclaims.Wanted(s.local_bridge or None, s.local_subnet or None,
                                                         s.local_prefix or None, s.registry_port or None))


def remove_all(data_dir: Path) -> dict[str, object]:
    """Remove what the data dir holds on the host; raises RuntimeError naming what is left."""
    from opencs.monitoring.stack import MonitoringStack
    from opencs.providers.local import LocalProvider, local_provider_leftovers
    from opencs.registry.bundled import BundledRegistry
    from opencs.routing.haproxy import HAProxy

    rec = hostclaims.recorded(data_dir)
    c = rec or _legacy(data_dir)
    prov = LocalProvider(data_dir / "nodes", bridge=c.bridge, subnet=c.subnet, prefix=c.prefix)
    destroyed = []
    for inst in prov.list():
        prov.destroy(inst.instance_id)
        destroyed.append(inst.instance_id)
    BundledRegistry(data_dir / "registry").stop()
    HAProxy(data_dir / "router").stop()
    MonitoringStack(data_dir / "monitoring").stop()
    if rec is None and not destroyed:  # torn down before, or never had nodes: no names to judge
        return {"data_dir": str(data_dir), "destroyed_nodes": [], "released": None}
    if hostclaims.held_by_others(data_dir, c.bridge):  # a legacy dir's defaults, taken by a newer one
        raise RuntimeError(f"bridge {c.bridge} is claimed by another data dir; its nodes were removed, it stays")
    prov.release_network()  # the bridge and its rule, also when no node was ever made
    left = local_provider_leftovers(c.prefix, c.bridge, data_dir / "nodes")
    if left:
        raise RuntimeError("still on the host: " + "; ".join(left))
    hostclaims.release(data_dir)
    return {"data_dir": str(data_dir), "destroyed_nodes": destroyed, "released": c.describe()}


def register(app: typer.Typer) -> None:
    @app.command()
    def teardown(data_dir: Path = DATA_DIR_OPT) -> None:
        """Remove every local node, bridge, registry and listener of a data dir from this host and
        release what it claimed (the server must be stopped first). The data dir's files stay."""
        d = data_dir.resolve()
        if os.geteuid() != 0:
            typer.echo("Error: opencs teardown must run as root (network namespaces, cgroups)", err=True)
            raise typer.Exit(2)
        if not d.is_dir():
            typer.echo(f"Error: no data dir {d}", err=True)
            raise typer.Exit(2)
        fd = os.open(d / hostclaims.IN_USE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:  # held throughout: no server may start on the data dir meanwhile
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                typer.echo(f"Error: a server or worker is running on {d}; stop it first (SIGTERM)", err=True)
                raise typer.Exit(1) from None
            try:
                done = remove_all(d)
            except RuntimeError as e:
                typer.echo(f"Error: {e}", err=True)
                raise typer.Exit(1) from None
        finally:
            os.close(fd)
        typer.echo(json.dumps(done, indent=2))
