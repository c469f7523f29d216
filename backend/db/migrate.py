"""``alembic upgrade head`` for one URL, callable from code and from the
Procfile's release phase (``python -m backend.db.migrate``).

The Alembic config is built here rather than read from a file, so it works
from any working directory; ``alembic.ini`` at the repository root is only for
running the ``alembic`` command by hand.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
from pathlib import Path

logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)  # one INFO line per plugin, at import

from alembic import command  # noqa: E402
from alembic.config import Config  # noqa: E402

from backend.db.urls import driver_url  # noqa: E402

MIGRATIONS = Path(__file__).resolve().parent / "migrations"

log = logging.getLogger("fleetchat.migrate")


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    # ConfigParser interpolation: a password may contain '%'
    cfg.set_main_option("sqlalchemy.url", driver_url(url).replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database at ``url`` to ``revision``. Alembic's env runs its
    own event loop, so from inside a running loop it runs in a thread."""
    cfg = alembic_config(url)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        command.upgrade(cfg, revision)
        return
    errors: list[BaseException] = []

    def run() -> None:
        try:
            command.upgrade(cfg, revision)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, name="alembic-upgrade")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


def main() -> int:
    """The release phase: upgrade ``DATABASE_URL``, or do nothing without one
    (embedded mode, or a fleet that has no database yet)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
    url = os.environ.get("DATABASE_URL")
    if not url:
        log.info("DATABASE_URL is not set: nothing to migrate")
        return 0
    upgrade(url)
    log.info("database is at the newest revision")
    return 0


if __name__ == "__main__":
    sys.exit(main())
