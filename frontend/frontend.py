"""The fleetchat pages and the Reflex app."""

from __future__ import annotations

import reflex as rx

from frontend.components.header import header
from frontend.components.messages import composer, message_list, typing_line
from frontend.components.sidebar import sidebar
from frontend.state import MAX_NAME, ChatState


def start_page() -> rx.Component:
    """Pick a name; each tab is its own user."""
    return rx.center(
        rx.card(
            rx.form(
                rx.vstack(
                    rx.heading("fleetchat", size="7"),
                    rx.text("Pick a name to start chatting.", color_scheme="gray"),
                    rx.input(
                        id="name-input",
                        name="name",
                        placeholder="Your name",
                        default_value=ChatState.name,
                        max_length=MAX_NAME,
                        auto_focus=True,
                        size="3",
                        width="100%",
                    ),
                    rx.cond(
                        ChatState.form_error != "",
                        rx.text(ChatState.form_error, id="name-error", color_scheme="red", size="2"),
                    ),
                    rx.button("Start chatting", id="name-submit", type="submit", size="3", width="100%"),
                    spacing="3",
                    width="100%",
                ),
                on_submit=ChatState.pick_name,
            ),
            width="min(92vw, 380px)",
            size="3",
        ),
        rx.box(rx.color_mode.button(variant="ghost"), position="fixed", top="12px", right="12px"),
        height="100dvh",
        padding="12px",
    )


def chat_page() -> rx.Component:
    return rx.flex(
        header(),
        rx.flex(
            sidebar(),
            rx.flex(
                message_list(),
                typing_line(),
                composer(),
                direction="column",
                flex="1",
                min_width="0",
                height="100%",
            ),
            flex="1",
            min_height="0",
            width="100%",
            position="relative",
        ),
        direction="column",
        height="100dvh",
        width="100%",
        overflow="hidden",
    )


app = rx.App(stylesheets=["/chat.css"])
app.add_page(start_page, route="/", title="fleetchat")
app.add_page(chat_page, route="/chat", title="fleetchat", on_load=[ChatState.enter_chat, ChatState.listen])
