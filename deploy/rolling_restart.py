"""Restart a running fleet's web instances one at a time: ``scripts/rolling_restart.sh``.

For each instance of the fleet that ``make fleet`` supervises (found in
``<state-dir>/fleet.json``): SIGTERM it (it stops accepting, closes its
sockets so their clients reconnect to the others through nginx, and exits),
wait for it to exit, wait for the supervisor to start it again and for its
``/readyz`` to answer 200, and only then go on to the next. At most one
instance is ever down, so the fleet keeps serving throughout.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def read_state(state_dir: Path) -> dict[str, Any]:
    path = state_dir / "fleet.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise SystemExit(f"no fleet state in {path}: start the fleet first (make fleet)") from None


def alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie waiting for the supervisor to reap it counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1.0) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def wait(check: Any, timeout: float, what: str) -> float:
    """Seconds until ``check()`` held; an error after ``timeout``."""
    started = time.monotonic()
    deadline = started + timeout
    while time.monotonic() < deadline:
        if check():
            return time.monotonic() - started
        time.sleep(0.05)
    raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}")


def restart_one(state_dir: Path, name: str, timeout: float) -> dict[str, Any]:
    info = read_state(state_dir)["processes"][name]
    pid, port = info["pid"], info["port"]
    if pid is None:
        raise SystemExit(f"{name} is not running; is the fleet up?")
    started = time.monotonic()
    os.kill(pid, signal.SIGTERM)
    stopped = wait(lambda: not alive(pid), timeout, f"{name} (pid {pid}) to exit")

    def replaced() -> bool:
        current = read_state(state_dir)["processes"][name]["pid"]
        return current is not None and current != pid and ready(port)

    wait(replaced, timeout, f"{name} to be restarted and ready on port {port}")
    new_pid = read_state(state_dir)["processes"][name]["pid"]
    return {"name": name, "old_pid": pid, "new_pid": new_pid, "stop_s": stopped, "total_s": time.monotonic() - started}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/rolling_restart.sh", description=__doc__.split("\n\n")[0])
    p.add_argument("--state-dir", default=os.environ.get("FLEET_STATE_DIR", str(ROOT / "data" / "fleet")))
    p.add_argument("--timeout", type=float, default=60.0, help="seconds allowed for each step")
    p.add_argument("--pause", type=float, default=1.0, help="seconds between instances, to let clients settle")
    args = p.parse_args(argv)
    state_dir = Path(args.state_dir).resolve()
    state = read_state(state_dir)
    names = sorted(n for n in state["processes"] if n.startswith("web."))
    if not names:
        raise SystemExit("the fleet has no web instances")
    for i, name in enumerate(names):
        step = restart_one(state_dir, name, args.timeout)
        print(
            f"{name}: pid {step['old_pid']} -> {step['new_pid']}, exited in {step['stop_s']:.1f}s, "
            f"ready again after {step['total_s']:.1f}s",
            flush=True,
        )
        if i < len(names) - 1:
            time.sleep(args.pause)
    print(f"rolling restart done: {len(names)} instances", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
