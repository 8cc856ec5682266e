"""Identifiers in the formats the spec observed (§2.3)."""

from __future__ import annotations

import os
import secrets
import string
import time
import uuid

_ALNUM = string.ascii_lowercase + string.digits


def request_id() -> str:
    return str(uuid.uuid4()).upper()


def cluster_id() -> str:
    return "c" + secrets.token_hex(16)


def task_id() -> str:
    # "T-" + 24 hex like a Mongo ObjectId: 4 bytes time, 8 bytes random -> sortable by creation
    return "T-" + f"{int(time.time()):08x}" + os.urandom(8).hex()


def instance_id() -> str:
    return "i-" + "".join(secrets.choice(_ALNUM) for _ in range(20))


def access_key_id() -> str:
    return "LTAI" + "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(20))


def access_key_secret() -> str:
    return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(30))
