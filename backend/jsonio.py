"""orjson behind the ``json`` module interface python-socketio expects."""

from __future__ import annotations

import json
from typing import Any

import orjson


class OrjsonModule:
    """Encodes Socket.IO packets and pub/sub envelopes with orjson (several
    times faster than the stdlib); ``loads`` raises ``ValueError`` subclasses
    on bad input just like ``json``."""

    @staticmethod
    def dumps(obj: Any, **_: Any) -> str:
        return orjson.dumps(obj).decode()

    @staticmethod
    def loads(data: str | bytes) -> Any:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            # What orjson refuses but Python's json (and so a python-socketio
            # client) writes: NaN, Infinity, lone surrogates. Decode it so the
            # sender gets a ``bad_request`` ack instead of silence.
            return json.loads(data)
