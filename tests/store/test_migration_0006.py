"""Migration 0006 carries the untyped projects.extra of existing rows over into the typed state."""

from __future__ import annotations

import json
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from opencs.store.db import MIGRATIONS, Database
from opencs.store.models import Project
from opencs.store.project_state import ProjectState

EXTRA = {
    "scale": {"worker": 3}, "stopped": ["cache"], "warnings": ["ports: host mode"], "last_error": "boom",
    "images": {"web": {"image": "busybox", "ref": "busybox@sha256:" + "a" * 64}},
    "update_method": "blue-green", "previous_environment": {"A": "1"}, "previous_latest_image": True,
    "previous_images": {"web": {"image": "busybox", "ref": "busybox@sha256:" + "b" * 64}},
    "blue_green": {"state": "serving", "old_version": "1.0", "new_version": "2.0",
                   "weights": {"old": 80, "new": 20}, "slots": {"blue": 80, "green": 20}, "template": "x: 1",
                   "environment": {"B": "2"}, "latest_image": False, "description": "d", "health_timeout": 60,
                   "started": "2026-01-01T00:00:00.000000Z", "warnings": [], "images": {}, "message": None},
    "blue_green_last": {"state": "rolled_back", "old_version": "0.9", "new_version": "1.0",
                        "weights": {"old": 50, "new": 50}, "started": "s", "finished": "f", "message": "why"},
    "something_old": 1,  # keys no model knows are dropped
}


def _upgrade(db: Database, rev: str) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, rev)


def test_extra_becomes_typed_state(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'm.db'}")
    _upgrade(db, "0005_cluster_names")
    with db.engine.begin() as conn:
        for name, extra in (("p", EXTRA), ("empty", {})):
            conn.execute(sa.text(
                "INSERT INTO projects (cluster_id, name, description, version, template, environment, latest_image,"
                " desired_state, current_state, extra, created, updated) VALUES ('c1', :n, '', '1.0', 'x', '{}', 0,"
                " 'running', 'running', :e, '2026-01-01 00:00:00', '2026-01-01 00:00:00')"),
                {"n": name, "e": json.dumps(extra)})
    _upgrade(db, "head")
    with db.session() as s:
        row = s.get(Project, ("c1", "p"))
        empty = s.get(Project, ("c1", "empty"))
    assert row is not None and empty is not None
    st = row.state
    assert isinstance(st, ProjectState)
    assert (st.scale, st.stopped, st.last_error) == ({"worker": 3}, ["cache"], "boom")
    assert st.warnings == ["ports: host mode"]
    assert st.images["web"].ref.endswith("a" * 64) and st.previous_images["web"].ref.endswith("b" * 64)
    assert (st.update_method, st.previous_environment, st.previous_latest_image) == ("blue-green", {"A": "1"}, True)
    bg = st.blue_green
    assert bg is not None and (bg.state, bg.new_version, bg.weights.new, bg.slots.green) == ("serving", "2.0", 20, 20)
    assert bg.environment == {"B": "2"} and bg.health_timeout == 60
    assert st.blue_green_last is not None and st.blue_green_last.message == "why"
    assert empty.state == ProjectState()
    with db.engine.connect() as conn:
        cols = {c["name"] for c in sa.inspect(conn).get_columns("projects")}
    assert "state" in cols and "extra" not in cols
