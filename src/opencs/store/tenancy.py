"""Which account a new row belongs to.

The authorization step of a signed call sets `current_account` for the request; rows of owned
tables (clusters, instances) inserted while it runs take that account. Work outside a request (task
workers, the CLI on the data dir, rows of a single-tenant data dir upgraded in place) belongs to the
first account, whose ids are fixed so that the migration and fresh stores agree.
"""

from __future__ import annotations

from contextvars import ContextVar

ROOT_ACCOUNT_ID = "1000000000000001"
ROOT_OWNER_USER_ID = "2000000000000001"
ROOT_ACCOUNT_NAME = "default"
ROOT_OWNER_NAME = "owner"

current_account: ContextVar[str | None] = ContextVar("opencs_current_account", default=None)


def owning_account() -> str:
    return current_account.get() or ROOT_ACCOUNT_ID
