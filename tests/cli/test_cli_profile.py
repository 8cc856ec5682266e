"""CLI profiles: file mode, selection order, environment overrides, masking."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from opencs.cli import profile as p


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for var in (*p.ENV_OVERRIDES.values(), p.ENV_PROFILE):
        monkeypatch.delenv(var, raising=False)
    cfg = tmp_path / "cfg" / "config.json"
    monkeypatch.setenv(p.ENV_CONFIG, str(cfg))
    return cfg


def test_save_and_resolve(clean_env: Path) -> None:
    assert p.config_path() == clean_env
    p.save_profile(p.Profile("default", "http://a:1", "AK1", "SECRET1"))
    p.save_profile(p.Profile("prod", "http://b:2", "AK2", "SECRET2", "acs3"))
    assert stat.S_IMODE(clean_env.stat().st_mode) == 0o600
    assert stat.S_IMODE(clean_env.parent.stat().st_mode) == 0o700
    data = json.loads(clean_env.read_text())
    assert data["current"] == "prod" and set(data["profiles"]) == {"default", "prod"}
    assert p.resolve_profile().access_key_id == "AK2"
    assert p.resolve_profile("default").endpoint == "http://a:1"
    with pytest.raises(p.ProfileError, match="nope"):
        p.resolve_profile("nope")


def test_env_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    p.save_profile(p.Profile("default", "http://a:1", "AK1", "SECRET1"))
    monkeypatch.setenv("OPENCS_ENDPOINT", "http://env:9")
    monkeypatch.setenv("OPENCS_ACCESS_KEY_SECRET", "ENVSECRET")
    prof = p.resolve_profile()
    assert (prof.endpoint, prof.access_key_id, prof.access_key_secret) == ("http://env:9", "AK1", "ENVSECRET")
    monkeypatch.setenv("OPENCS_PROFILE", "other")
    assert p.resolve_profile().name == "other"  # missing profile is fine when not explicit
    assert p.resolve_profile().missing() == ["access_key_id"]


def test_env_only_without_file(monkeypatch: pytest.MonkeyPatch, clean_env: Path) -> None:
    clean_env.parent.mkdir()
    clean_env.write_text("{not json")
    with pytest.raises(p.ProfileError, match="not valid JSON"):
        p.resolve_profile()
    monkeypatch.setenv("OPENCS_ENDPOINT", "http://env:9")
    monkeypatch.setenv("OPENCS_ACCESS_KEY_ID", "AK")
    monkeypatch.setenv("OPENCS_ACCESS_KEY_SECRET", "S")
    assert p.resolve_profile("whatever").missing() == []


def test_bad_scheme(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENCS_SCHEME", "md5")
    with pytest.raises(p.ProfileError, match="scheme"):
        p.resolve_profile()


def test_mask_secret() -> None:
    assert p.mask_secret("") == ""
    assert p.mask_secret("short") == "********"
    long = "abcdefghijklmnopqrstuvwxyz"
    assert p.mask_secret(long) == "********wxyz" and long not in p.mask_secret(long)
