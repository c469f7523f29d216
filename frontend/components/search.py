"""Search: the box in the header and the panel of results.

A hit's text arrives as segments (``backend.search.highlight``); each is a text
node, the matched ones in a Radix ``mark``, so a message can never inject markup.
"""

from __future__ import annotations

import reflex as rx
from reflex_base.event import FORM_DATA

from frontend import chat
from frontend.components.messages import TEXT_STYLE


def search_box() -> rx.Component:
    return rx.form(
        rx.input(
            rx.input.slot(rx.icon("search", size=14)),
            id="search-input",
            name="q",
            placeholder="Search messages",
            max_length=200,
            auto_complete="off",
            type="search",
            size="2",
            width="100%",
        ),
        id="search-form",
        on_submit=chat.action("search", FORM_DATA),
        width="min(40vw, 260px)",
    )


def segment(seg: rx.Var[chat.Segment]) -> rx.Component:
    return rx.cond(seg.match, rx.el.mark(seg.text, class_name="search-match"), rx.el.span(seg.text))


def result(hit: rx.Var[chat.SearchResult]) -> rx.Component:
    return rx.box(
        rx.hstack(
            rx.text("# " + hit.room, size="1", weight="bold", class_name="search-room"),
            rx.text(hit.user, size="1", class_name="search-user", style=TEXT_STYLE),
            rx.text(hit.time, size="1", color_scheme="gray", class_name="search-time"),
            spacing="2",
            align="baseline",
        ),
        rx.text(rx.foreach(hit.segments, segment), size="2", class_name="search-text", style=TEXT_STYLE),
        class_name="search-result",
        data_room=hit.room,
        data_id=hit.id,
        tab_index=0,
        on_click=chat.action("openResult", hit.room, hit.id),
        padding="6px 8px",
        border_radius="8px",
        cursor="pointer",
        _hover={"background_color": "var(--gray-a3)"},
        width="100%",
    )


def search_panel() -> rx.Component:
    return rx.cond(
        chat.search_open,
        rx.vstack(
            rx.hstack(
                rx.text("Search results", size="2", weight="bold"),
                rx.button(
                    "✕",
                    id="search-close",
                    variant="ghost",
                    size="1",
                    on_click=chat.action("closeSearch"),
                    title="Close search",
                ),
                justify="between",
                width="100%",
            ),
            rx.cond(chat.searching, rx.text("Searching…", id="search-busy", size="2", color_scheme="gray")),
            rx.cond(
                chat.search_error != "", rx.text(chat.search_error, id="search-error", size="2", color_scheme="gray")
            ),
            rx.foreach(chat.search_results, lambda hit: result(hit)),
            id="search-results",
            spacing="1",
            padding="10px",
            position="absolute",
            top="0",
            right="0",
            bottom="0",
            z_index="30",
            width="min(92vw, 380px)",
            overflow_y="auto",
            background="var(--color-panel-solid)",
            box_shadow="var(--shadow-5)",
        ),
    )
