"""Alembic environment: run on the connection the verifier hands over."""

from __future__ import annotations

from alembic import context

from semtrust.fleet.db import metadata

conn = context.config.attributes.get("connection")
if conn is None:
    raise RuntimeError("the fleet migrations run from semtrust.fleet.db.upgrade()")
context.configure(connection=conn, target_metadata=metadata)
with context.begin_transaction():
    context.run_migrations()
