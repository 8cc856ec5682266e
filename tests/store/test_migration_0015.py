"""Migration 0015 adds the login profiles to a store as issue 10 left it (users with a registry
password); nothing is lost, no user gets a console password, and the table is the model's."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from opencs.store.db import Database, migrate
from opencs.store.models import LoginProfile
from opencs.store.repos.login_profiles import LoginProfileRepo
from opencs.store.tenancy import ROOT_ACCOUNT_ID


def test_login_profiles_arrive_empty_and_users_stay(tmp_path: Path, database_url: str | None) -> None:
    db = Database(database_url or f"sqlite:///{tmp_path / 'm.db'}")
    migrate(db.engine, "0014_registry_passwords")
    with db.engine.begin() as c:
        c.execute(sa.text("INSERT INTO users (user_id, account_id, user_name, display_name, comments, is_owner,"
                          " created, updated, registry_password) VALUES ('2000000000000002', :a, 'dev', 'dev', '',"
                          " false, '2026-01-01 00:00:00', '2026-01-01 00:00:00', 'argon2-hash')"),
                     {"a": ROOT_ACCOUNT_ID})
    migrate(db.engine)
    with db.engine.connect() as c:
        assert c.execute(sa.text("SELECT user_name, registry_password FROM users WHERE user_id = '2000000000000002'")
                         ).all() == [("dev", "argon2-hash")]
        assert c.execute(sa.text("SELECT count(*) FROM login_profiles")).scalar() == 0
        cols = {col["name"] for col in sa.inspect(c).get_columns("login_profiles")}
    assert cols == set(LoginProfile.__table__.columns.keys())
    repo = LoginProfileRepo(db)
    assert repo.add("2000000000000002", "hash", False, False) and not repo.add("2000000000000002", "h2", False, False)
    found = repo.find("default", "dev")
    assert found is not None and found[0].user_name == "dev" and found[1].password_hash == "hash"
    assert repo.find(ROOT_ACCOUNT_ID, "dev") is not None and repo.find("other", "dev") is None
    db.close()
