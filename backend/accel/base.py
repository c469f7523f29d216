"""What every cut shares: an exact-version gate, one warning when it refuses, an ``applied`` flag.

A cut reaches into a library's internals, so it is only right for the exact
versions it was written and measured against. On any other version it leaves
that library alone (its own, slower code runs) and says so once, at WARNING,
instead of falling back silently: an upgrade then shows up in the log and in
``fleetchat_accel_applied{cut}``, not as a quiet slowdown.
"""

from __future__ import annotations

import importlib.metadata
import logging
import platform
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("fleetchat.accel")

PYTHON = "python"
"""Pseudo-distribution for cuts that read CPython's asyncio internals: its ``major.minor``."""


def installed_version(distribution: str) -> str | None:
    """The installed version of ``distribution`` (``python``: the interpreter's major.minor), or None."""
    if distribution == PYTHON:
        return ".".join(platform.python_version_tuple()[:2])
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


@dataclass
class Cut:
    """One reach into a library, with the versions it is written for.

    ``install`` makes the process-wide part of the cut (a patch where the
    library has no hook) and ``uninstall`` undoes it; cuts that only act
    through fleetchat's own subclasses (``backend.accel.server``) need neither:
    those subclasses read ``applied``.
    """

    name: str
    library: str
    """The distributions it touches, for humans (README, /readyz)."""
    requires: dict[str, str]
    """distribution -> the exact version the cut is written against."""
    buys: str
    install: Callable[[], None] | None = None
    uninstall: Callable[[], None] | None = None
    server_mixin: type | None = None
    """Mixed into fleetchat's ``engineio.AsyncServer`` subclass while applied."""
    socket_mixin: type | None = None
    """Mixed into fleetchat's engine.io socket class while applied."""
    needs: tuple[str, ...] = ()
    """Other cuts this one builds on: it applies only when they did."""
    applied: bool = False
    reason: str = "not configured yet"
    """Why it is (not) applied, for /readyz."""
    _warned: set[str] = field(default_factory=set)

    def refusal(self) -> str | None:
        """None when every required library is at its exact version, else what differs."""
        for dist, wanted in self.requires.items():
            found = installed_version(dist)
            if found != wanted:
                return f"{dist} {found or 'not installed'} installed, the cut is written for {wanted}"
        return None

    def apply(self) -> bool:
        """Apply the cut if its gate passes; one WARNING naming the cut and the version when it refuses."""
        refused = self.refusal()
        if refused is not None:
            if refused not in self._warned:
                self._warned.add(refused)
                log.warning("accel cut %s not applied: %s", self.name, refused)
            self.withdraw(f"refused: {refused}")
            return False
        if not self.applied and self.install is not None:
            self.install()
        self.applied = True
        self.reason = "applied: " + ", ".join(f"{d} {v}" for d, v in self.requires.items())
        return True

    def withdraw(self, reason: str) -> None:
        """Leave the library as it ships (undo the process-wide part, if any)."""
        if self.applied and self.uninstall is not None:
            self.uninstall()
        self.applied = False
        self.reason = reason
