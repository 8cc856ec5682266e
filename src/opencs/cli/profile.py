"""CLI profiles: ``~/.opencs/config.json`` (or ``$OPENCS_CONFIG``), like ``aliyun configure``.

File layout (mode 0600)::

    {"current": "default",
     "profiles": {"default": {"endpoint": "http://127.0.0.1:8990", "access_key_id": "...",
                              "access_key_secret": "...", "scheme": "roa", "ca_file": ""}}}

``OPENCS_ENDPOINT``, ``OPENCS_ACCESS_KEY_ID``, ``OPENCS_ACCESS_KEY_SECRET``, ``OPENCS_SCHEME`` and
``OPENCS_CA_FILE`` override the selected profile's fields. ``ca_file`` is the CA an ``https://``
endpoint's certificate is verified against (empty: the system trust store); ``opencs configure``
writes the CA it pinned next to the config file.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

DEFAULT_PROFILE = "default"
SCHEMES = ("roa", "acs3")

ENV_CONFIG = "OPENCS_CONFIG"
ENV_PROFILE = "OPENCS_PROFILE"
ENV_OVERRIDES = {
    "endpoint": "OPENCS_ENDPOINT",
    "access_key_id": "OPENCS_ACCESS_KEY_ID",
    "access_key_secret": "OPENCS_ACCESS_KEY_SECRET",
    "scheme": "OPENCS_SCHEME",
    "ca_file": "OPENCS_CA_FILE",
}


class ProfileError(Exception):
    """The configuration is missing, unreadable or incomplete."""


@dataclass
class Profile:
    name: str = DEFAULT_PROFILE
    endpoint: str = ""
    access_key_id: str = ""
    access_key_secret: str = ""
    scheme: str = "roa"
    ca_file: str = ""

    def missing(self) -> list[str]:
        """Names of the fields a client needs but this profile lacks."""
        return [f for f in ("endpoint", "access_key_id", "access_key_secret") if not getattr(self, f)]

    def to_json(self) -> dict[str, str]:
        d = asdict(self)
        d.pop("name")
        return d


def config_path() -> Path:
    """``$OPENCS_CONFIG`` or ``~/.opencs/config.json``."""
    env = os.environ.get(ENV_CONFIG)
    return Path(env).expanduser() if env else Path.home() / ".opencs" / "config.json"


def mask_secret(secret: str) -> str:
    """``********abcd`` — never the whole secret (only the last 4 characters of a long one)."""
    if not secret:
        return ""
    return "*" * 8 + (secret[-4:] if len(secret) >= 16 else "")


def load_config(path: Path | None = None) -> dict[str, Any]:
    """The whole config file (an empty config if it does not exist)."""
    path = path or config_path()
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {"current": DEFAULT_PROFILE, "profiles": {}}
    except OSError as e:
        raise ProfileError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        data = json.loads(text) if text.strip() else {}
    except ValueError as e:
        raise ProfileError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ProfileError(f"{path}: expected a JSON object")
    profiles = data.get("profiles")
    if not isinstance(profiles, dict):
        data["profiles"] = {}
    data.setdefault("current", DEFAULT_PROFILE)
    return data


def save_config(data: dict[str, Any], path: Path | None = None) -> Path:
    """Write the config atomically with mode 0600 (directory 0700 when created)."""
    path = path or config_path()
    if not path.parent.exists():
        path.parent.mkdir(parents=True, mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".config-", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.chmod(path, 0o600)
    return path


def selected_name(explicit: str | None, data: dict[str, Any] | None = None) -> str:
    """``--profile`` > ``$OPENCS_PROFILE`` > the file's ``current`` > ``default``."""
    if explicit:
        return explicit
    env = os.environ.get(ENV_PROFILE)
    if env:
        return env
    if data and isinstance(data.get("current"), str) and data["current"]:
        return str(data["current"])
    return DEFAULT_PROFILE


def stored_profile(name: str, data: dict[str, Any]) -> Profile:
    """The profile as saved in the file (no environment overrides)."""
    raw = data.get("profiles", {}).get(name) or {}
    prof = Profile(name=name)
    if isinstance(raw, dict):
        for field in ("endpoint", "access_key_id", "access_key_secret", "scheme", "ca_file"):
            v = raw.get(field)
            if isinstance(v, str) and v:
                setattr(prof, field, v)
    return prof


def resolve_profile(explicit: str | None = None, path: Path | None = None) -> Profile:
    """The effective profile: the stored one with the ``OPENCS_*`` variables applied."""
    env_complete = all(os.environ.get(ENV_OVERRIDES[f]) for f in ("endpoint", "access_key_id",
                                                                   "access_key_secret"))
    try:
        data = load_config(path)
    except ProfileError:
        if not env_complete:
            raise
        data = {"profiles": {}}
    name = selected_name(explicit, data)
    prof = stored_profile(name, data)
    if explicit and name not in data.get("profiles", {}) and not env_complete:
        raise ProfileError(f"profile {name!r} not found in {path or config_path()}; "
                           f"run `opencs configure --profile {name}`")
    for field, var in ENV_OVERRIDES.items():
        v = os.environ.get(var)
        if v:
            setattr(prof, field, v)
    prof.scheme = prof.scheme.lower()
    if prof.scheme not in SCHEMES:
        raise ProfileError(f"unknown signature scheme {prof.scheme!r} (expected roa or acs3)")
    return prof


def pinned_ca_path(profile_name: str, path: Path | None = None) -> Path:
    """Where ``opencs configure`` keeps the CA it pinned for a profile (beside the config file)."""
    return (path or config_path()).parent / f"ca-{profile_name}.pem"


def save_profile(profile: Profile, *, make_current: bool = True, path: Path | None = None) -> Path:
    """Store ``profile`` under its name (keeping the others) and return the file path."""
    data = load_config(path)
    data["profiles"][profile.name] = profile.to_json()
    if make_current:
        data["current"] = profile.name
    return save_config(data, path)
