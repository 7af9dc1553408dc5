"""Alembic's environment: migrations run on the connection cryoclust.core.schema hands over
(holding the migration lock), or else on a new connection to the settings' database URL.
"""

from __future__ import annotations

from alembic import context

from cryoclust.core.tables import Base


def run() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:
        from cryoclust.core.db import make_engine
        from cryoclust.core.settings import Settings

        engine = make_engine(Settings().database_url)
        with engine.connect() as connection:
            _migrate(connection)
        engine.dispose()
    else:
        _migrate(connection)


def _migrate(connection) -> None:
    # render_as_batch: SQLite alters a table by copying it; Alembic's batch mode does that.
    context.configure(
        connection=connection, target_metadata=Base.metadata, render_as_batch=True, compare_type=True
    )
    with context.begin_transaction():
        context.run_migrations()


run()
