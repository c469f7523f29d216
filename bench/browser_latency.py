"""Scenario (d) of the benchmark: browser tab to browser tab through the Reflex UI.

Starts one embedded-mode chat backend and the Reflex UI built in prod mode
(the e2e harness's `ChatBackend` and `ReflexApp`, so the UI runs exactly as the
browser tests run it), opens two tabs of Debian's Chromium as two users in one
room, then sends messages one at a time: the text is typed in tab A, Enter is
pressed, and the next message waits until this one is in tab B's DOM.

Latency is measured in the browser: a capturing `keydown` listener in tab A
stamps the Enter, a `MutationObserver` in tab B stamps the first DOM mutation
after which the text is in B's message list. Both stamps are
`performance.timeOrigin + performance.now()` (wall-clock based, sub-millisecond),
comparable between the two tabs of one browser. Python only waits for the
result; its polling does not enter the figure.

It runs once per `--held-lines` entry (default 0 and 1000): before measuring,
a third user fills the room until each tab holds that many lines, the way a
long-lived tab in a busy room does, so the two rows show whether the cost of
a message grows with the lines a tab holds (it must not).

    .venv/bin/python -m bench.browser_latency            # 50 messages, at 0 and 1000 lines held
    .venv/bin/python -m bench.browser_latency --smoke    # 5 messages
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.run import host_info, py_version
from deploy.ui_venv import ui_package_version
from tests.e2e.conftest import CHROMIUM_FLAGS, ChatBackend, ReflexApp, free_port, run_async
from tests.e2e.test_chat import post_as

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"

# The chat backend's abuse limits (10 messages/s per connection by default) must
# not pace a sender that fires the next message as soon as the last one arrived.
BACKEND_ENV = {"CHAT_RATE": "100000", "CHAT_RATE_BURST": "100000", "CHAT_CONNECTS_PER_MINUTE": "0"}

# Tab A: stamp the Enter that submits the composer.
SENDER_JS = """() => {
  if (window.__benchEnterHooked) return;
  window.__benchEnterHooked = true;
  window.__benchEnterAt = null;
  document.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && event.target && event.target.id === 'message-input') {
      window.__benchEnterAt = performance.timeOrigin + performance.now();
    }
  }, true);
}"""

# Tab B: stamp the first mutation after which the awaited text is a message in the list.
RECEIVER_JS = """() => {
  if (window.__benchSeen) return;
  window.__benchSeen = {};
  window.__benchPending = null;
  const scan = () => {
    const now = performance.timeOrigin + performance.now();
    const pending = window.__benchPending;
    if (pending === null || window.__benchSeen[pending] !== undefined) return;
    const shown = document.querySelectorAll('#messages .msg-text');
    for (let i = shown.length - 1; i >= 0; i--) {
      if (shown[i].textContent === pending) { window.__benchSeen[pending] = now; return; }
    }
  };
  new MutationObserver(scan).observe(document.body, {childList: true, subtree: true, characterData: true});
}"""


def log(msg: str) -> None:
    print(f"[browser {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of the values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil without floats drifting
    return ordered[int(rank) - 1]


def summarize(latencies: list[float]) -> dict[str, float | None]:
    if not latencies:
        return {"median_ms": None, "p90_ms": None, "max_ms": None, "min_ms": None, "mean_ms": None}
    ordered = sorted(latencies)
    middle = len(ordered) // 2
    median = ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
    return {
        "median_ms": round(median, 2),
        "p90_ms": round(percentile(ordered, 90), 2),
        "max_ms": round(ordered[-1], 2),
        "min_ms": round(ordered[0], 2),
        "mean_ms": round(sum(ordered) / len(ordered), 2),
    }


def machine_info(chromium: str) -> dict[str, Any]:
    browser = subprocess.run([chromium, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    return {
        **host_info(),
        "chromium": browser,
        "reflex": ui_package_version("reflex"),
        "python_socketio": py_version("python-socketio"),
        "hypercorn": py_version("hypercorn"),
        "playwright": py_version("playwright"),
    }


def open_tab(context: Any, name: str, room: str) -> Any:
    """A tab signed in as `name`, connected, in `room` (the e2e tests' open_tab + enter_room)."""
    page = context.new_page()
    page.goto("/")
    page.fill("#name-input", name)
    page.click("#name-submit")
    page.wait_for_selector("#conn-badge[data-status=connected]")
    page.fill("#new-room-input", room)
    page.click("#new-room-submit")
    page.wait_for_function("room => document.querySelector('#room-title')?.textContent === '# ' + room", arg=room)
    return page


def exchange(sender: Any, receiver: Any, text: str, timeout_ms: float) -> float:
    """Type `text` in the sender tab, press Enter, wait until it is in the receiver's DOM; the latency in ms."""
    receiver.evaluate("text => { window.__benchPending = text; }", text)
    sender.fill("#message-input", text)
    sender.evaluate("() => { window.__benchEnterAt = null; }")
    sender.press("#message-input", "Enter")
    receiver.wait_for_function(
        "text => window.__benchSeen[text] !== undefined", arg=text, polling=5, timeout=timeout_ms
    )
    sent_at = sender.evaluate("() => window.__benchEnterAt")
    seen_at = receiver.evaluate("text => window.__benchSeen[text]", text)
    if sent_at is None:
        raise RuntimeError(f"tab A never saw the Enter for {text!r}")
    return seen_at - sent_at


# The messages a tab holds for a room (the engine's log; the page shows the newest of them).
HELD_JS = "room => (window.fleetchat.logs[room] ?? []).length"


def fill_room(backend_url: str, room: str, pages: list[Any], lines: int) -> None:
    """Post messages from a third user until every tab holds `lines` lines (a long-lived tab in a busy room)."""
    held = min(page.evaluate(HELD_JS, room) for page in pages)
    if held >= lines:
        return
    run_async(post_as(backend_url, "filler", room, [f"filler line {i}" for i in range(lines - held)]))
    for page in pages:
        page.wait_for_function(
            "([room, n]) => (window.fleetchat.logs[room] ?? []).length >= n", arg=[room, lines], timeout=120_000
        )


def run_exchanges(
    context: Any, messages: int, warmup: int, timeout_s: float, backend_url: str = "", held_lines: int = 0
) -> dict[str, Any]:
    """Two tabs of one browser context, one room: ``messages`` timed sends from A to B,
    after filling the room until each tab holds ``held_lines`` lines."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    room = f"bench-{uuid.uuid4().hex[:8]}"
    tag = uuid.uuid4().hex[:6]
    latencies: list[float] = []
    missing: list[str] = []
    alice = open_tab(context, "alice", room)
    bob = open_tab(context, "bob", room)
    if held_lines:
        fill_room(backend_url, room, [alice, bob], held_lines)
    lines_held = bob.evaluate(HELD_JS, room)
    bob.wait_for_function("() => document.querySelectorAll('#member-list .member').length === 2")
    alice.wait_for_function("() => document.querySelectorAll('#member-list .member').length === 2")
    alice.evaluate(SENDER_JS)
    bob.evaluate(RECEIVER_JS)
    visibility = {
        "sender": alice.evaluate("() => document.visibilityState"),
        "receiver": bob.evaluate("() => document.visibilityState"),
    }
    for i in range(warmup):
        exchange(alice, bob, f"warm-up {tag} {i}", timeout_s * 1000)
    log(f"{warmup} warm-up messages done; measuring {messages}")
    for i in range(messages):
        text = f"bench {tag} message {i:03d}"
        try:
            latencies.append(exchange(alice, bob, text, timeout_s * 1000))
        except PlaywrightTimeout:
            missing.append(text)
            log(f"{text!r} did not reach tab B within {timeout_s}s")
    shown = bob.locator("#messages .msg-text").all_inner_texts()
    arrived_in_b = sum(1 for i in range(messages) if f"bench {tag} message {i:03d}" in shown)
    return {
        "room": room,
        "lines_held_before": lines_held,
        "visibility": visibility,
        "latencies_ms": [round(v, 3) for v in latencies],
        "sent": messages,
        "arrived": len(latencies),
        "shown_in_receiver_at_end": arrived_in_b,
        "missing": missing,
    }


def measure(args: argparse.Namespace, ui_url: str, backend_url: str, chromium: str) -> list[dict[str, Any]]:
    """One run per entry of --held-lines, side by side in one browser."""
    from playwright.sync_api import sync_playwright

    results = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        try:
            for held in args.held_lines:
                context = browser.new_context(base_url=ui_url, viewport={"width": 1100, "height": 720})
                context.set_default_timeout(30_000)
                log(f"measuring with {held} lines held in each tab")
                results.append(run_exchanges(context, args.messages, args.warmup, args.timeout, backend_url, held))
                context.close()
        finally:
            browser.close()
    return results


def table(report: dict[str, Any]) -> str:
    def fmt(value: float | None) -> str:
        return "—" if value is None else f"{value:.1f}"

    rows = [
        "| scenario | lines held per tab | messages | arrived | median ms | p90 ms | max ms | min ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for result in report["results"]:
        s = summarize(result["latencies_ms"])
        rows.append(
            f"| (d) Reflex tab to tab | {result['lines_held_before']} | {result['sent']} | {result['arrived']} | "
            f"{fmt(s['median_ms'])} | {fmt(s['p90_ms'])} | {fmt(s['max_ms'])} | {fmt(s['min_ms'])} |"
        )
    return "\n".join(rows)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.browser_latency",
        description="Scenario (d): latency from Enter in one Reflex tab to the text in another tab's DOM.",
    )
    parser.add_argument("--messages", type=int, default=50, help="messages measured (default 50)")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured messages sent first (default 3)")
    parser.add_argument("--timeout", type=float, default=15.0, help="seconds one message may take to arrive")
    parser.add_argument("--out-dir", type=Path, default=RESULTS, help="where browser-<timestamp>.json goes")
    parser.add_argument(
        "--held-lines",
        default="0,1000",
        help="comma list: for each, fill the room until each tab holds that many lines, then measure (default 0,1000)",
    )
    parser.add_argument("--smoke", action="store_true", help="5 messages, 1 warm-up")
    args = parser.parse_args(argv)
    args.held_lines = [int(v) for v in str(args.held_lines).split(",") if v.strip()]
    if args.smoke:
        args.messages, args.warmup, args.held_lines = 5, 1, [0]
    if args.messages < 1 or args.warmup < 0:
        parser.error("--messages must be at least 1 and --warmup not negative")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("no `chromium` on PATH: apt-get install -y chromium (never `playwright install`)")
    started = dt.datetime.now(dt.UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    with tempfile.TemporaryDirectory(prefix="fleetchat-browser-bench-") as tmp:
        workdir = Path(tmp)
        ui_port = free_port()
        backend = ChatBackend(workdir, [f"http://localhost:{ui_port}", f"http://127.0.0.1:{ui_port}"])
        backend.env.update(BACKEND_ENV)
        app: ReflexApp | None = None
        try:
            backend.start()
            log(f"chat backend on {backend.url}; building and starting the Reflex UI (prod) on port {ui_port}")
            app = ReflexApp(workdir, ui_port, backend.url)
            log(f"Reflex UI up on {app.url} after {app.startup_seconds:.0f}s")
            results = measure(args, app.url, backend.url, chromium)
        finally:
            if app is not None:
                app.stop()
            backend.stop()
    report = {
        "scenario": "browser_tab_to_tab",
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_info(chromium),
        "params": {
            "messages": args.messages,
            "warmup": args.warmup,
            "timeout_s": args.timeout,
            "smoke": args.smoke,
            "backend": "embedded (hypercorn backend.app:asgi, SQLite)",
            "ui": "reflex run --env prod",
            "backend_env": BACKEND_ENV,
            "held_lines": args.held_lines,
        },
        "ui_startup_s": round(app.startup_seconds, 1),
        "results": results,
        "summaries": [summarize(result["latencies_ms"]) for result in results],
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    out = args.out_dir / f"browser-{stamp}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(table(report))
    log(f"wrote {out}")
    for result in results:
        if result["missing"] or result["arrived"] != args.messages:
            log(f"{len(result['missing'])} of {args.messages} messages never reached tab B")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
