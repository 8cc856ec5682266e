"""EndpointRepo, the endpoint manager's reads: the targets and managers of a scan, the ports live
clusters hold (ports_taken, read when an endpoint starts) without decoding the spec column (it
carries each endpoint's certificate and key), and the change mark; on both stores."""

from __future__ import annotations

from pathlib import Path

from opencs.store.db import Database, migrate, utcnow
from opencs.store.models import Cluster, InstanceRow
from opencs.store.repos.endpoints import EndpointRepo


def test_scan_reads_targets_managers_and_taken_ports(tmp_path: Path, database_url: str | None) -> None:
    db = Database(database_url or f"sqlite:///{tmp_path / 'opencs.db'}")
    migrate(db.engine)
    now = utcnow()
    tls = {"cert": "C" * 2000, "key_enc": "K" * 2000, "sans": ["127.0.0.1"]}
    with db.session() as s:
        for cid, state, spec in (("c-run", "running", {"appapi_port": 17001, "appapi_tls": tls}),
                                 ("c-new", "launching", {}),
                                 ("c-failed", "failed", {"appapi_port": 17002}),  # holds its port, not served
                                 ("c-gone", "deleted", {"appapi_port": 17003})):
            s.add(Cluster(cluster_id=cid, name=cid, state=state, spec=spec, created=now, updated=now))
        for iid, role, state in (("i-m", "manager", "running"), ("i-w", "worker", "running"),
                                 ("i-m2", "manager", "stopped")):
            s.add(InstanceRow(instance_id=iid, provider="local", cluster_id="c-run", role=role, state=state,
                              swarm_node_id=f"n-{iid}", docker_host=f"unix:///{iid}.sock", created=now, updated=now))
    repo = EndpointRepo(db)
    targets = repo.scan()
    assert repo.ports_taken() == {17001, 17002}
    assert set(targets) == {"c-run", "c-new"}
    assert targets["c-run"].has_nodes and targets["c-run"].managers == ["unix:///i-m.sock"]
    assert not targets["c-new"].has_nodes and targets["c-new"].state == "launching"
    db.close()
