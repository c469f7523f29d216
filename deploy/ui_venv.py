"""Where the Reflex UI's Python lives.

The UI has a virtualenv of its own (``.venv-ui``, from requirements-ui.txt): reflex
0.10.1 declares ``redis<8`` while the backend pins redis-py 8.1. Everything that runs
``reflex`` or ``hypercorn frontend.serve:app`` (tests, bench, ``make fleet``) starts it
with this interpreter instead of ``sys.executable``.
"""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def ui_venv() -> Path:
    """The UI virtualenv: ``FLEETCHAT_UI_VENV`` if set (scripts/env.sh sets it), else ``.venv-ui``."""
    return Path(os.environ.get("FLEETCHAT_UI_VENV") or ROOT / ".venv-ui")


def ui_python() -> str:
    """The UI virtualenv's interpreter; fails with the command that creates it."""
    python = ui_venv() / "bin" / "python"
    if not python.exists():
        raise RuntimeError(f"no UI virtualenv at {ui_venv()}: run `scripts/bootstrap.sh ui` (or `make setup`)")
    return str(python)


def ui_env(env: dict[str, str]) -> dict[str, str]:
    """`env` with the UI virtualenv's bin/ first on PATH, so what reflex spawns is its own."""
    env = dict(env)
    env["PATH"] = os.pathsep.join([str(ui_venv() / "bin"), env.get("PATH", "")])
    env["VIRTUAL_ENV"] = str(ui_venv())
    return env


@functools.cache
def ui_package_version(name: str) -> str | None:
    """A package's version in the UI virtualenv (the backend's has no reflex), or None."""
    code = (
        "import importlib.metadata as m, sys\ntry: print(m.version(sys.argv[1]))\nexcept m.PackageNotFoundError: pass\n"
    )
    try:
        out = subprocess.run([ui_python(), "-c", code, name], capture_output=True, text=True, timeout=60, check=True)
    except (RuntimeError, OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None
