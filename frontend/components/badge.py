"""The connection badge: connected / connecting / reconnecting / offline."""

from __future__ import annotations

import reflex as rx

from frontend import chat


def connection_badge() -> rx.Component:
    return rx.badge(
        chat.status,
        id="conn-badge",
        data_status=chat.status,
        title=chat.backend,
        color_scheme=rx.match(
            chat.status,
            ("connected", "green"),
            ("offline", "red"),
            "amber",
        ),
        variant="soft",
        radius="full",
    )
