"""Reflex configuration for the fleetchat UI.

Ports come from REFLEX_FRONTEND_PORT / REFLEX_BACKEND_PORT (Reflex reads every
`REFLEX_*` variable itself); they are fixed rather than auto-incremented so the
origin below is the one the browser really uses. Reflex's own Socket.IO server
only accepts that origin and those in CHAT_UI_ORIGINS (comma-separated: where a
load balancer in front serves the UI, as in `make fleet`).
"""

from __future__ import annotations

import os

import reflex as rx

# Reflex's backend would default to 8000, the chat backend's port.
frontend_port = int(os.environ.get("REFLEX_FRONTEND_PORT", "3000"))
backend_port = int(os.environ.get("REFLEX_BACKEND_PORT", "3001"))

config = rx.Config(
    app_name="frontend",
    # frontend_port comes from REFLEX_FRONTEND_PORT when set (Reflex reads it), and
    # is not named here: `reflex run --backend-only` refuses a frontend port.
    backend_port=backend_port,
    cors_allowed_origins=[
        f"http://localhost:{frontend_port}",
        f"http://127.0.0.1:{frontend_port}",
        *[origin.strip() for origin in os.environ.get("CHAT_UI_ORIGINS", "").split(",") if origin.strip()],
    ],
    show_built_with_reflex=False,
    telemetry_enabled=False,
    disable_plugins=[rx.plugins.SitemapPlugin],
    plugins=[rx.plugins.RadixThemesPlugin(theme=rx.theme(accent_color="indigo", radius="large"))],
)
