"""Fewer, cheaper garbage collections once the app has started.

Everything allocated by start-up (modules, the app, its routes) lives as long
as the process: ``gc.freeze()`` moves it out of the collector's sight, so
full collections no longer walk it. A larger young-generation threshold (the
default is 700 allocations) makes collections rarer on a hot path that
allocates a few objects per delivery and frees them at once. Measured on the
fan-out scenario: p99 delivery latency about 17 -> 9 ms (bench/README.md).
The gc module's API is public; the gate is on the interpreter whose
collector the threshold was tuned for.
"""

from __future__ import annotations

import gc

from backend.accel.base import PYTHON, Cut

YOUNG_THRESHOLD = 20_000


def settle() -> None:
    """Freeze what start-up allocated and raise the young threshold: call once serving starts."""
    if not CUT.applied:
        return
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)


CUT = Cut(
    name="quiet_gc",
    library="CPython gc",
    requires={PYTHON: "3.11"},
    buys="fan-out p99 delivery latency about 17 -> 9 ms",
)
