"""The message list, the typing line and the composer."""

from __future__ import annotations

import reflex as rx
from reflex_base.event import FORM_DATA

from frontend import chat

# User text is a text node, never markup; long words wrap instead of widening the page.
TEXT_STYLE = {"white_space": "pre-wrap", "overflow_wrap": "anywhere", "word_break": "break-word"}


def action_bar(line: rx.Var[chat.ChatLine]) -> rx.Component:
    """Reply, react, edit, delete: shown while the pointer is on the message (or it has focus)."""
    icon = {"variant": "ghost", "size": "1", "color_scheme": "gray"}
    return rx.hstack(
        rx.foreach(
            chat.QUICK_REACTIONS,
            lambda emoji: rx.button(
                emoji,
                on_click=chat.action("react", line.id, emoji),
                title="React with " + emoji,
                class_name="msg-react",
                **icon,
            ),
        ),
        rx.button("Reply", on_click=chat.action("startReply", line.id), class_name="msg-reply", **icon),
        rx.cond(
            line.can_edit, rx.button("Edit", on_click=chat.action("startEdit", line.id), class_name="msg-edit", **icon)
        ),
        rx.cond(
            line.can_delete,
            rx.button(
                "Delete",
                on_click=chat.action("remove", line.id),
                class_name="msg-delete",
                **(icon | {"color_scheme": "red"}),
            ),
        ),
        class_name="msg-actions",
        spacing="1",
        wrap="wrap",
    )


def reactions(line: rx.Var[chat.ChatLine]) -> rx.Component:
    return rx.hstack(
        rx.foreach(
            line.reactions,
            lambda r: rx.button(
                r.emoji + " " + r.count.to_string(),
                on_click=chat.action("react", line.id, r.emoji),
                variant=rx.cond(r.mine, "solid", "soft"),
                size="1",
                radius="full",
                class_name=rx.cond(r.mine, "msg-reaction mine", "msg-reaction"),
                data_emoji=r.emoji,
            ),
        ),
        spacing="1",
        wrap="wrap",
    )


def edit_form(line: rx.Var[chat.ChatLine]) -> rx.Component:
    return rx.form(
        rx.hstack(
            rx.input(
                id="edit-input",
                name="text",
                default_value=line.text,
                auto_focus=True,
                max_length=chat.MAX_TEXT,
                auto_complete="off",
                size="2",
                flex="1",
            ),
            rx.button("Save", id="edit-save", type="submit", size="2"),
            rx.button(
                "Cancel", id="edit-cancel", type="button", variant="soft", size="2", on_click=chat.action("cancelEdit")
            ),
            width="100%",
        ),
        on_submit=chat.action("saveEdit", FORM_DATA),
        width="min(80vw, 560px)",
    )


def new_messages_divider() -> rx.Component:
    return rx.hstack(
        rx.separator(flex="1", color_scheme="red"),
        rx.text("New messages", size="1", color_scheme="red", weight="bold"),
        rx.separator(flex="1", color_scheme="red"),
        class_name="new-messages",
        align="center",
        width="100%",
    )


@rx.memo
def message_line(line: rx.Var[chat.ChatLine], rest: rx.RestProp) -> rx.Component:
    """One message. Memoized: a new message renders one line, not the whole list."""
    return rx.fragment(rx.cond(line.first_unread, new_messages_divider()), bubble(line))


def bubble(line: rx.Var[chat.ChatLine]) -> rx.Component:
    return rx.box(
        rx.hstack(
            rx.text(line.user, size="1", weight="bold", class_name="msg-user", style=TEXT_STYLE),
            rx.cond(line.guest, rx.text("guest", size="1", color_scheme="gray", class_name="msg-guest")),
            rx.text(rx.cond(line.pending, "sending…", line.time), size="1", color_scheme="gray", class_name="msg-time"),
            rx.cond(line.edited, rx.text("(edited)", size="1", color_scheme="gray", class_name="msg-edited")),
            spacing="2",
            align="baseline",
        ),
        rx.cond(
            line.has_reply,
            rx.text(
                "↪ ",
                rx.cond(line.reply_user != "", rx.el.strong(line.reply_user + " ")),
                line.reply_text,
                size="1",
                color_scheme="gray",
                class_name="msg-quote",
                style=TEXT_STYLE,
            ),
        ),
        rx.cond(
            line.editing,
            edit_form(line),
            rx.text(
                line.text,
                size="3",
                class_name=rx.cond(line.deleted, "msg-text msg-deleted", "msg-text"),
                style=TEXT_STYLE,
                color=rx.cond(line.deleted, "var(--gray-10)", "inherit"),
                font_style=rx.cond(line.deleted, "italic", "normal"),
            ),
        ),
        rx.cond(line.reactions.length() > 0, reactions(line)),
        rx.cond(line.seen, rx.text("Seen", size="1", color_scheme="gray", class_name="msg-seen", text_align="right")),
        rx.cond(~line.pending & ~line.deleted & ~line.editing, action_bar(line)),
        class_name=rx.cond(line.own, "msg msg-own", "msg"),
        data_key=line.key,
        data_id=line.id,
        tab_index=0,
        position="relative",
        padding="6px 10px",
        border_radius="12px",
        max_width="min(80%, 640px)",
        min_width="0",
        align_self=rx.cond(line.own, "flex-end", "flex-start"),
        background_color=rx.cond(
            line.mention,
            "var(--amber-a4)",
            rx.cond(line.own, "var(--accent-a4)", "var(--gray-a3)"),
        ),
        opacity=rx.cond(line.pending, "0.6", "1"),
    )


def message_list() -> rx.Component:
    # column-reverse keeps the view pinned to the newest message as lines
    # arrive, and keeps it still when older ones are added above.
    return rx.box(
        rx.vstack(
            rx.cond(
                chat.has_older,
                rx.button(
                    rx.cond(chat.loading_older, "Loading…", "Load older messages"),
                    id="load-older",
                    on_click=chat.action("loadOlder"),
                    variant="soft",
                    size="1",
                    align_self="center",
                ),
            ),
            rx.cond(
                chat.lines.length() == 0,
                rx.text("No messages here yet. Say hello!", id="empty-room", color_scheme="gray", align_self="center"),
            ),
            rx.foreach(chat.lines, lambda line: message_line(line=line, key=line.key)),
            spacing="2",
            padding="12px",
            width="100%",
        ),
        id="messages",
        display="flex",
        flex_direction="column-reverse",
        overflow_y="auto",
        flex="1",
        min_height="0",
        width="100%",
    )


def typing_line() -> rx.Component:
    return rx.text(chat.typing_text, id="typing", size="1", color_scheme="gray", height="1.4em", padding_x="12px")


def reply_banner() -> rx.Component:
    return rx.cond(
        chat.replying != "",
        rx.hstack(
            rx.text(
                "Replying to ",
                rx.el.span(chat.replying, id="replying-to"),
                size="1",
                color_scheme="gray",
                style=TEXT_STYLE,
            ),
            rx.button(
                "✕", id="cancel-reply", type="button", variant="ghost", size="1", on_click=chat.action("cancelReply")
            ),
            justify="between",
            width="100%",
        ),
    )


def invite_bar() -> rx.Component:
    """For the owner (or a moderator) of a private room: let someone in."""
    return rx.cond(
        chat.can_invite,
        rx.form(
            rx.hstack(
                rx.text("🔒 Private room", size="1", color_scheme="gray"),
                rx.input(id="invite-input", name="user", placeholder="Invite a username…", size="1", flex="1"),
                rx.button("Invite", id="invite-submit", type="submit", size="1", variant="soft"),
                rx.text(chat.invite_status, id="invite-status", size="1", color_scheme="gray"),
                align="center",
                width="100%",
            ),
            on_submit=chat.action("invite", FORM_DATA),
            reset_on_submit=True,
            padding="4px 12px",
            width="100%",
            border_bottom="1px solid var(--gray-a4)",
        ),
    )


def composer() -> rx.Component:
    return rx.form(
        reply_banner(),
        rx.hstack(
            rx.input(
                id="message-input",
                name="text",
                placeholder="Message #" + chat.room,
                auto_complete="off",
                max_length=chat.MAX_TEXT,
                on_change=chat.action("keyed"),
                size="3",
                flex="1",
            ),
            rx.button("Send", id="send-button", type="submit", size="3"),
            width="100%",
        ),
        rx.cond(chat.send_error != "", rx.text(chat.send_error, id="send-error", color_scheme="red", size="1")),
        id="composer",
        on_submit=chat.action("send", FORM_DATA),
        reset_on_submit=True,
        padding="8px 12px 12px",
        width="100%",
    )
