"""One way to start the backend: the Procfile's ``web`` command. The fleet and
every test (``deploy.fleet.backend_argv``, through ``tests.support.Backend``) and
``make run`` (scripts/run.sh) start hypercorn with the same flags."""

from __future__ import annotations

import shlex
from pathlib import Path

from deploy.fleet import backend_argv
from tests.e2e.conftest import ChatBackend
from tests.support import ROOT, Backend


def flags(words: list[str]) -> list[str]:
    """hypercorn's arguments after ``hypercorn``, without the ``--bind`` address
    (each start binds its own) and with the config named relative to the project."""
    words = words[words.index("hypercorn") + 1 :]
    out: list[str] = []
    skip = False
    for i, word in enumerate(words):
        if skip:
            skip = False
            continue
        if word == "--bind":
            skip = True
            continue
        if word.startswith((">", "2>", "&")):
            break  # the shell's redirections
        if i and words[i - 1] == "--config":
            word = str(Path(word).resolve().relative_to(ROOT)) if Path(word).is_absolute() else word
        out.append(word)
    return out


def procfile_flags() -> list[str]:
    web = next(line for line in (ROOT / "Procfile").read_text().splitlines() if line.startswith("web:"))
    return flags(shlex.split(web))


def test_the_procfile_runs_the_config_one_process_and_uvloop() -> None:
    assert procfile_flags() == [
        "--config",
        "deploy/hypercorn.toml",
        "backend.app:asgi",
        "--workers",
        "0",
        "--worker-class",
        "uvloop",
    ]


def test_the_fleet_and_the_tests_start_the_backend_with_the_procfiles_flags(tmp_path: Path) -> None:
    assert flags(backend_argv("127.0.0.1:1")) == procfile_flags()
    for backend in (Backend(db_dir=str(tmp_path)), ChatBackend(tmp_path, ["http://localhost:3000"])):
        argv = backend.argv()
        assert flags(argv)[: len(procfile_flags())] == procfile_flags()
        assert flags(argv)[len(procfile_flags()) :] == ["--graceful-timeout", "3"]  # only what a test shortens


def test_make_run_starts_the_backend_with_the_procfiles_flags() -> None:
    script = (ROOT / "scripts" / "run.sh").read_text().replace("\\\n", " ")
    line = next(line for line in script.splitlines() if "-m hypercorn" in line and "backend.app:asgi" in line)
    assert flags(shlex.split(line)) == procfile_flags()
