"""The top bar: room title, who I am, connection badge, colour mode."""

from __future__ import annotations

import reflex as rx

from frontend.components.badge import connection_badge
from frontend.state import ChatState


def room_picker_small() -> rx.Component:
    """The room switcher on narrow screens, where the sidebar is hidden."""
    return rx.select(
        ChatState.joined,
        value=ChatState.room,
        on_change=ChatState.open_room,
        size="2",
        id="room-select",
    )


def header() -> rx.Component:
    return rx.hstack(
        rx.heading("fleetchat", size="4", display=["none", "none", "block"]),
        rx.box(room_picker_small(), display=["block", "block", "none"]),
        rx.heading("# ", ChatState.room, id="room-title", size="4", truncate=True, flex="1", min_width="0"),
        rx.badge(ChatState.members.length(), " here", variant="surface", display=["flex", "flex", "none"]),
        rx.cond(
            ChatState.joined.length() > 1,
            rx.button(
                "Leave", id="leave-room", size="1", variant="ghost", on_click=ChatState.leave_room(ChatState.room)
            ),
        ),
        rx.text(ChatState.name, id="me", size="2", color_scheme="gray", truncate=True, max_width="30%"),
        connection_badge(),
        rx.color_mode.button(size="2", variant="ghost"),
        align="center",
        spacing="3",
        padding="8px 12px",
        border_bottom="1px solid var(--gray-a5)",
        width="100%",
    )
