"""opencs Python SDK: both APIs of the Container Service (2015-12-15), sync and async.

    from opencs.sdk import Client
    with Client("http://127.0.0.1:8990", access_key_id, access_key_secret) as cs:
        print([c.name for c in cs.list_clusters()])
        with cs.app(cluster_id) as app:          # the cluster's Application API over mTLS
            print(app.list_projects())

``AsyncClient``/``AsyncAppClient`` have the same methods as coroutines. Replies are typed models
(:mod:`opencs.sdk.models`) that are also read-only mappings of the reply as sent. Every failure is
an :class:`OpencsError` subclass.
"""

from opencs.auth.signature import ACS3, ROA
from opencs.sdk import models
from opencs.sdk.aio import AsyncClient
from opencs.sdk.app import AppClient, AsyncAppClient, mtls_context
from opencs.sdk.client import Client, normalize_scheme
from opencs.sdk.errors import (
    AuthError,
    BadRequestError,
    ConflictError,
    NotFoundError,
    OpencsError,
    ProjectFailed,
    ServerError,
    TaskFailed,
    TaskTimeout,
    TransportError,
    WaitTimeout,
)

__all__ = [
    "ACS3",
    "ROA",
    "AppClient",
    "AsyncAppClient",
    "AsyncClient",
    "AuthError",
    "BadRequestError",
    "Client",
    "ConflictError",
    "NotFoundError",
    "OpencsError",
    "ProjectFailed",
    "ServerError",
    "TaskFailed",
    "TaskTimeout",
    "TransportError",
    "WaitTimeout",
    "models",
    "mtls_context",
    "normalize_scheme",
]
