"""How DATABASE_URL spellings map to the async drivers, and the release phase without one."""

from __future__ import annotations

import os
import subprocess
import sys

from backend.db.urls import driver_url
from tests.support import ROOT


def test_paas_and_libpq_spellings_use_asyncpg() -> None:
    assert driver_url("postgres://u:p@h:5432/db") == "postgresql+asyncpg://u:p@h:5432/db"
    assert driver_url("postgresql://u@h/db") == "postgresql+asyncpg://u@h/db"
    assert driver_url("postgres://u@h/db?sslmode=require") == "postgresql+asyncpg://u@h/db?ssl=require"
    assert driver_url("postgresql+asyncpg://u@h/db") == "postgresql+asyncpg://u@h/db"


def test_sqlite_uses_aiosqlite() -> None:
    assert driver_url("sqlite:///data/chat.db") == "sqlite+aiosqlite:///data/chat.db"
    assert driver_url("sqlite:////abs/chat.db") == "sqlite+aiosqlite:////abs/chat.db"


def test_release_phase_is_a_no_op_without_database_url() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CHAT_DATABASE_URL")}
    done = subprocess.run(
        [sys.executable, "-m", "backend.db.migrate"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "nothing to migrate" in done.stderr
