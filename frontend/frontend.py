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
from frontend.components.messages import composer, invite_bar, message_list, typing_line
from frontend.components.search import search_panel
from frontend.components.sidebar import sidebar


def account_form() -> rx.Component:
    """Sign in, or create an account: the same person in every tab, after a reload and a restart."""
    return rx.form(
        rx.vstack(
            rx.input(
                id="auth-username",
                name="username",
                placeholder="Username",
                auto_complete="username",
                max_length=32,
                size="3",
                width="100%",
            ),
            rx.cond(
                chat.show_signup,
                rx.input(
                    id="auth-display-name",
                    name="display_name",
                    placeholder="Display name (optional)",
                    max_length=chat.MAX_NAME,
                    size="3",
                    width="100%",
                ),
            ),
            rx.input(
                id="auth-password",
                name="password",
                type="password",
                placeholder="Password",
                auto_complete=rx.cond(chat.show_signup, "new-password", "current-password"),
                size="3",
                width="100%",
            ),
            rx.cond(chat.auth_error != "", rx.text(chat.auth_error, id="auth-error", color_scheme="red", size="2")),
            rx.button(
                rx.cond(chat.show_signup, "Create account", "Sign in"),
                id="auth-submit",
                type="submit",
                size="3",
                width="100%",
                loading=chat.auth_busy,
            ),
            rx.button(
                rx.cond(chat.show_signup, "I have an account: sign in", "New here? Create an account"),
                id="auth-toggle",
                type="button",
                variant="ghost",
                on_click=chat.action("toggleSignup"),
                size="2",
            ),
            spacing="3",
            width="100%",
        ),
        on_submit=chat.action("submitAccount", FORM_DATA),
        width="100%",
    )


def guest_form() -> rx.Component:
    """A display name of one's choice, for this tab only (where the server admits guests)."""
    return rx.form(
        rx.vstack(
            rx.text("Or chat as a guest, in this tab:", color_scheme="gray", size="2"),
            rx.hstack(
                rx.input(
                    id="name-input",
                    name="name",
                    placeholder="Your name",
                    max_length=chat.MAX_NAME,
                    size="3",
                    flex="1",
                ),
                rx.button("Continue as guest", id="name-submit", type="submit", size="3", variant="soft"),
                width="100%",
            ),
            rx.cond(chat.form_error != "", rx.text(chat.form_error, id="name-error", color_scheme="red", size="2")),
            spacing="2",
            width="100%",
        ),
        on_submit=chat.action("pickName", FORM_DATA),
        width="100%",
    )


def start_card() -> rx.Component:
    """Sign in, create an account, or continue as a guest."""
    return rx.center(
        rx.card(
            rx.vstack(
                rx.heading("fleetchat", size="7"),
                rx.text(
                    rx.cond(chat.show_signup, "Create your account.", "Sign in to chat."),
                    color_scheme="gray",
                ),
                account_form(),
                rx.separator(),
                guest_form(),
                spacing="4",
                width="100%",
            ),
            width="min(92vw, 420px)",
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
                invite_bar(),
                message_list(),
                typing_line(),
                composer(),
                direction="column",
                flex="1",
                min_width="0",
                height="100%",
            ),
            search_panel(),
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
