"""The fleetchat page and the Reflex app.

The app has no server-side state: the tab's chat engine (assets/fleetchat.js)
runs in the browser and talks to the chat fleet itself, so `reflex run`
serves a page and nothing per message (README: "The UI tier").
"""

from __future__ import annotations

import reflex as rx
from reflex_base.event import FORM_DATA

from frontend import chat
from frontend.components.header import header
from frontend.components.messages import composer, message_list, typing_line
from frontend.components.sidebar import sidebar


def start_card() -> rx.Component:
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
                        max_length=chat.MAX_NAME,
                        auto_focus=True,
                        size="3",
                        width="100%",
                    ),
                    rx.cond(
                        chat.form_error != "",
                        rx.text(chat.form_error, id="name-error", color_scheme="red", size="2"),
                    ),
                    rx.button("Start chatting", id="name-submit", type="submit", size="3", width="100%"),
                    spacing="3",
                    width="100%",
                ),
                on_submit=chat.action("pickName", FORM_DATA),
            ),
            width="min(92vw, 380px)",
            size="3",
        ),
        rx.box(rx.color_mode.button(variant="ghost"), position="fixed", top="12px", right="12px"),
        height="100dvh",
        padding="12px",
    )


def chat_view() -> rx.Component:
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


def index() -> rx.Component:
    return rx.fragment(
        chat.FleetchatClient.create(urls=chat.backend_urls()),
        rx.cond(chat.named, chat_view(), start_card()),
    )


app = rx.App(stylesheets=["/chat.css"], head_components=[chat.no_reflex_socket()])
app.add_page(index, route="/", title="fleetchat")
app.add_page(index, route="/chat", title="fleetchat")
