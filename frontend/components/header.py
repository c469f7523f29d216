"""The top bar: room title, who I am, connection badge, colour mode."""

from __future__ import annotations

import reflex as rx

from frontend import chat
from frontend.components.badge import connection_badge
from frontend.components.search import search_box


def header() -> rx.Component:
    return rx.hstack(
        rx.heading("fleetchat", size="4", class_name="desktop-only"),
        rx.button(
            "Rooms",
            rx.badge(chat.members.length(), radius="full", variant="surface"),
            id="rooms-toggle",
            on_click=chat.action("toggleSidebar"),
            size="2",
            variant="soft",
            class_name="mobile-only",
        ),
        rx.text(chat.room_title, id="room-title", size="4", weight="bold", class_name="room-title", flex="1"),
        rx.cond(
            chat.can_leave,
            rx.button(
                "Leave room", id="leave-room", size="1", variant="ghost", on_click=chat.action("leaveRoom", chat.room)
            ),
        ),
        search_box(),
        rx.text(chat.name, id="me", size="2", color_scheme="gray", class_name="room-title", max_width="30%"),
        connection_badge(),
        rx.button(
            rx.cond(chat.guest, "Leave chat", "Sign out"),
            id="sign-out",
            size="1",
            variant="soft",
            color_scheme="gray",
            on_click=chat.action("signOut"),
        ),
        rx.color_mode.button(id="color-mode", size="2", variant="ghost"),
        align="center",
        spacing="3",
        padding="8px 12px",
        border_bottom="1px solid var(--gray-a5)",
        width="100%",
        min_width="0",
    )
