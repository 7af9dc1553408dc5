"""The database schema at start-up: upgrade to the newest revision this code knows, or refuse.

`cryoclust serve` and `cryoclust worker` call `upgrade(engine)` before anything else touches the
database. Several processes may start at once on a fresh or old database, so the upgrade runs
under a lock: a PostgreSQL advisory lock (per schema), or an exclusive lock on a file beside a
SQLite database. A database whose revision this code does not know was upgraded by a newer
cryoclust; it is left untouched and SchemaTooNew says so in one line.

A new revision, after changing tables.py (written from the difference, then read and edited):
    python -m cryoclust.core.schema revision "add jobs.priority"
"""

from __future__ import annotations

import fcntl
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text

from worker.engine.errors import CommandError

# Any fixed number: all cryoclust processes on one PostgreSQL schema take the same lock.
_PG_LOCK_SALT = "cryoclust-schema-migration"


class SchemaTooNew(CommandError):
    """The database was upgraded by a newer cryoclust than this one."""


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration in code (no alembic.ini): the packaged migration scripts."""
    config = Config()
    config.set_main_option("script_location", "cryoclust.core:migrations")
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine) -> str:
    """Bring the database to head (or adopt one made before migrations); returns its revision."""
    scripts = ScriptDirectory.from_config(alembic_config())
    head = scripts.get_current_head()
    with _migration_lock(engine) as connection:
        found = current_revision(connection)
        connection.commit()
        if found is not None and found not in {s.revision for s in scripts.walk_revisions()}:
            raise SchemaTooNew(
                f"the database {engine.url.render_as_string(hide_password=True)} has schema revision "
                f"{found}, newer than this cryoclust knows (up to {head}): upgrade cryoclust, or use "
                "another CRYOCLUST_DATABASE_URL"
            )
        if found != head:
            command.upgrade(alembic_config(connection), "head")
            connection.commit()
    return head


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[Connection]:
    """A connection that holds the one migration lock of this database."""
    with engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            key = "hashtext(current_schema() || :salt)"
            connection.execute(text(f"SELECT pg_advisory_lock({key})"), {"salt": _PG_LOCK_SALT})
            connection.commit()
            try:
                yield connection
            finally:
                connection.rollback()
                connection.execute(text(f"SELECT pg_advisory_unlock({key})"), {"salt": _PG_LOCK_SALT})
                connection.commit()
        elif engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:"):
            lock_path = Path(engine.url.database).with_name(Path(engine.url.database).name + ".migrate-lock")
            with open(lock_path, "a") as lock_file:
                fcntl.flock(lock_file, fcntl.LOCK_EX)  # released when the file closes
                yield connection
        else:
            yield connection


def main(argv: list[str]) -> int:
    """Developer's helper: `revision MESSAGE` writes a new revision from tables.py's difference."""
    if len(argv) != 2 or argv[0] != "revision":
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    from cryoclust.core.db import make_engine
    from cryoclust.core.settings import Settings

    engine = make_engine(Settings().database_url)
    with engine.connect() as connection:
        command.revision(alembic_config(connection), message=argv[1], autogenerate=True)
    engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
