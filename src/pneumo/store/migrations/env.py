"""Alembic environment: always run programmatically by ``pneumo.store.migrate.upgrade`` on a given connection."""

from alembic import context

from pneumo.store.schema import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
