"""The connection badge: connected / connecting / reconnecting / offline."""

from __future__ import annotations

import reflex as rx

from frontend.state import ChatState


def connection_badge() -> rx.Component:
    return rx.badge(
        ChatState.status,
        id="conn-badge",
        data_status=ChatState.status,
        title=ChatState.backend,
        color_scheme=rx.match(
            ChatState.status,
            ("connected", "green"),
            ("offline", "red"),
            "amber",
        ),
        variant="soft",
        radius="full",
    )
