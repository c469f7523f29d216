"""Rooms (with member and unread counts), room creation, and who is here."""

from __future__ import annotations

import reflex as rx
from reflex_base.event import FORM_DATA

from frontend import chat


def room_item(room: rx.Var[chat.RoomInfo]) -> rx.Component:
    return rx.button(
        rx.text(
            rx.cond(room.dm, "@ ", rx.cond(room.private, "🔒 ", "# ")),
            room.label,
            truncate=True,
            flex="1",
            text_align="left",
        ),
        rx.cond(
            room.unread > 0,
            rx.badge(room.unread, color_scheme="red", variant="solid", radius="full", class_name="unread"),
        ),
        rx.badge(room.members, variant="surface", radius="full", title="members", class_name="member-count"),
        on_click=chat.action("openRoom", room.name),
        variant=rx.cond(room.current, "solid", rx.cond(room.joined, "soft", "ghost")),
        width="100%",
        justify="start",
        class_name=rx.cond(room.private, "room-item room-private", "room-item"),
        data_room=room.name,
        key=room.name,
    )


def new_room_form() -> rx.Component:
    return rx.form(
        rx.hstack(
            rx.input(
                id="new-room-input", name="room", placeholder="New room", max_length=chat.MAX_ROOM, size="2", flex="1"
            ),
            rx.button("Join", id="new-room-submit", type="submit", size="2"),
            width="100%",
        ),
        rx.cond(
            ~chat.guest,
            rx.el.label(
                rx.el.input(type="checkbox", name="private", id="new-room-private"),
                " private (invited members only)",
                style={"font_size": "12px", "color": "var(--gray-11)"},
            ),
        ),
        on_submit=chat.action("createRoom", FORM_DATA),
        reset_on_submit=True,
        width="100%",
    )


def guest_badge(guest: rx.Var[bool], class_name: str) -> rx.Component:
    """Guests chose their name; accounts signed in. The badge tells them apart."""
    return rx.cond(guest, rx.badge("guest", size="1", variant="outline", color_scheme="gray", class_name=class_name))


def member_item(member: rx.Var[chat.Member]) -> rx.Component:
    return rx.hstack(
        rx.text(member.name, size="2", class_name="member", truncate=True),
        guest_badge(member.guest, "member-guest"),
        spacing="1",
        align="center",
        width="100%",
        key=member.name,
    )


def member_list() -> rx.Component:
    return rx.vstack(
        rx.text("Here now (", chat.members.length(), ")", size="2", weight="bold", color_scheme="gray"),
        rx.foreach(chat.members, member_item),
        id="member-list",
        spacing="1",
        width="100%",
    )


def dm_form() -> rx.Component:
    """ "New message to…": the direct messages with another account."""
    return rx.form(
        rx.hstack(
            rx.input(id="dm-input", name="user", placeholder="Message a username…", size="2", flex="1"),
            rx.button("Chat", id="dm-submit", type="submit", size="2", variant="soft"),
            width="100%",
        ),
        on_submit=chat.action("openDm", FORM_DATA),
        reset_on_submit=True,
        width="100%",
    )


def sidebar() -> rx.Component:
    return rx.vstack(
        rx.text("Rooms", size="2", weight="bold", color_scheme="gray"),
        rx.vstack(rx.foreach(chat.directory, room_item), id="room-list", spacing="1", width="100%"),
        new_room_form(),
        rx.cond(
            ~chat.guest,
            rx.vstack(
                rx.text("Direct messages", size="2", weight="bold", color_scheme="gray"),
                rx.vstack(rx.foreach(chat.dms, room_item), id="dm-list", spacing="1", width="100%"),
                dm_form(),
                rx.el.label(
                    rx.el.input(
                        type="checkbox",
                        id="receipts-toggle",
                        checked=chat.receipts,
                        on_change=chat.action("toggleReceipts"),
                    ),
                    " send read receipts",
                    style={"font_size": "12px", "color": "var(--gray-11)"},
                ),
                spacing="2",
                width="100%",
            ),
        ),
        rx.cond(chat.form_error != "", rx.text(chat.form_error, color_scheme="red", size="1")),
        rx.separator(),
        member_list(),
        spacing="3",
        padding="12px",
        width="240px",
        min_width="240px",
        height="100%",
        overflow_y="auto",
        border_right="1px solid var(--gray-a5)",
        id="sidebar",
        class_name=rx.cond(chat.sidebar_open, "chat-sidebar open", "chat-sidebar"),
    )
