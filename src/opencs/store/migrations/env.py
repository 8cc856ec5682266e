"""Alembic environment: opencs passes its own connection (see store.db.migrate)."""

from alembic import context

from opencs.store.models import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
