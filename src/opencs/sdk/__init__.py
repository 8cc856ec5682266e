"""opencs Python SDK: a signed client for the Container Service API (2015-12-15).

    from opencs.sdk import Client
    cs = Client("http://127.0.0.1:8990", access_key_id, access_key_secret)
    print(cs.list_clusters())
"""

from opencs.auth.signature import ACS3, ROA
from opencs.sdk.client import Client, normalize_scheme
from opencs.sdk.errors import (
    AuthError,
    BadRequestError,
    ConflictError,
    NotFoundError,
    OpencsError,
    ServerError,
    TaskFailed,
    TaskTimeout,
    TransportError,
)

__all__ = [
    "ACS3",
    "ROA",
    "AuthError",
    "BadRequestError",
    "Client",
    "ConflictError",
    "NotFoundError",
    "OpencsError",
    "ServerError",
    "TaskFailed",
    "TaskTimeout",
    "TransportError",
    "normalize_scheme",
]
