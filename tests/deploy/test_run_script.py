"""`make run` (scripts/run.sh) as a newcomer uses it: it starts the chat, and Ctrl-C stops everything it started."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from deploy.rolling_restart import alive
from tests.support import ROOT, free_port, http_get, wait_for


def descendants(pid: int) -> set[int]:
    """Every live process below `pid` (by parent pid, from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def test_ctrl_c_on_make_run_stops_every_process_it_started(tmp_path: Path) -> None:
    backend_port, ui_port = free_port(), free_port()
    env = {**os.environ, "PORT": str(backend_port), "UI_PORT": str(ui_port)}
    env.pop("REDIS_URL", None)
    out = (tmp_path / "run.out").open("wb")
    run = subprocess.Popen(
        ["bash", "scripts/run.sh"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        wait_for(
            lambda: run.poll() is None and b"fleetchat is running" in (tmp_path / "run.out").read_bytes(),
            300,
            interval=0.5,
            what=f"scripts/run.sh to start (output: {tmp_path / 'run.out'})",
        )
        assert http_get(f"http://127.0.0.1:{backend_port}/healthz")[0] == 200
        assert http_get(f"http://127.0.0.1:{ui_port}/")[0] == 200
        started = descendants(run.pid)
        assert len(started) >= 2, started

        os.killpg(run.pid, signal.SIGINT)  # Ctrl-C in the terminal
        run.wait(60)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(alive(pid) for pid in started):
            time.sleep(0.1)
        assert [pid for pid in started if alive(pid)] == []
        for port in (backend_port, ui_port):
            with contextlib.suppress(OSError):
                http_get(f"http://127.0.0.1:{port}/", timeout=1)
                raise AssertionError(f"port {port} still answers after Ctrl-C")
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
        for pid in descendants(run.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        out.close()
