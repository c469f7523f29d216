"""A UI process of the fleet: serves the page as `reflex export` built it.

The page keeps no server state and opens no socket to its server (each tab's
chat connection goes from the browser to the web fleet), so a UI process only
serves files. Every UI process must serve the same build, or a page from one
would ask another for assets it does not have: build once, then run as many as
you like behind the load balancer:

    reflex export --frontend-only --no-zip          # once, into .web/build/client
    CHAT_UI_BUILD=.web/build/client hypercorn frontend.serve:app --bind 0.0.0.0:$PORT
"""

from __future__ import annotations

import os
from pathlib import Path

from reflex.utils.precompressed_staticfiles import PrecompressedStaticFiles
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.types import Receive, Scope, Send

BUILD = Path(os.environ.get("CHAT_UI_BUILD", ".web/build/client")).resolve()
IMMUTABLE = (b"cache-control", b"public, max-age=31536000, immutable")


class _Build(PrecompressedStaticFiles):
    """The build's files, as the `.gz` the build wrote beside each one when the browser
    takes gzip (Reflex's own static server does the same: a first visit is ~22% of
    the bytes); hashed assets never change, so browsers keep them for good."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        immutable = scope["type"] == "http" and scope["path"].startswith("/assets/")

        async def send_cached(message: dict) -> None:
            if immutable and message["type"] == "http.response.start" and message["status"] == 200:
                message = {**message, "headers": [*message.get("headers", []), IMMUTABLE]}
            await send(message)

        await super().__call__(scope, receive, send_cached if immutable else send)


if not (BUILD / "index.html").exists():
    raise SystemExit(f"no build in {BUILD}: run `reflex export --frontend-only --no-zip` first (CHAT_UI_BUILD)")

app = Starlette(routes=[Mount("/", app=_Build(directory=BUILD, html=True, encodings=["gzip"]))])
