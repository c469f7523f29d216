"""The UI's pure message-log rules: merge without doubles, find gaps, mentions, local time."""

from __future__ import annotations

from datetime import UTC

from frontend.chatlog import LOG_CAP, clock, is_message, lines, mentions, merge, missing_before, zone


def msg(seq: int, text: str = "", client_id: str = "") -> dict:
    return {
        "id": f"{seq:012d}",
        "seq": seq,
        "room": "r",
        "text": text or f"m{seq}",
        "ts": 0,
        "user": {"id": "anon:a", "name": "a"},
        "client_id": client_id,
    }


def test_merge_sorts_by_seq_and_drops_duplicates_and_junk():
    log, added = merge([msg(1), msg(3)], [msg(2), msg(3), {"id": 5}, "junk", msg(4)])
    assert [m["seq"] for m in log] == [1, 2, 3, 4]
    assert [m["seq"] for m in added] == [2, 4]
    same, none = merge(log, [msg(2)])
    assert same is log and none == []


def test_merge_keeps_only_the_newest_messages_of_a_long_log():
    log, _ = merge([], [msg(i) for i in range(1, LOG_CAP + 50)])
    assert len(log) == LOG_CAP and log[-1]["seq"] == LOG_CAP + 49


def test_a_jump_in_seq_counts_the_missed_messages():
    assert missing_before(5, msg(6)) == 0
    assert missing_before(5, msg(9)) == 3
    assert missing_before(0, msg(9)) == 0, "nothing seen yet: no gap to fill"
    assert missing_before(9, msg(7)) == 0


def test_mentions_match_whole_names_case_insensitively():
    assert mentions("hi @Bob!", "bob")
    assert not mentions("hi @bobby", "bob")
    assert not mentions("mail a@bob.c", "bob")
    assert not mentions("anything", "")


def test_clock_shows_local_time_and_survives_bad_values():
    tz = zone("Asia/Kolkata")
    assert clock(0, tz).endswith("05:30")
    assert clock("x", UTC) == "" and clock(True, UTC) == ""
    assert zone("Not/AZone") is UTC


def test_lines_mark_own_mentions_and_pending_sends_once():
    log = [msg(1, "@me hello", client_id="tab1-1"), msg(2, "other", client_id="tab2-1")]
    outbox = [
        {"room": "r", "client_id": "tab1-1", "text": "@me hello"},
        {"room": "r", "client_id": "tab1-2", "text": "queued"},
    ]
    shown = lines(log, outbox, "r", "me", "tab1-", "UTC")
    assert [(line.text, line.own, line.mention, line.pending) for line in shown] == [
        ("@me hello", True, True, False),
        ("other", False, False, False),
        ("queued", True, False, True),
    ]
    assert is_message(log[0]) and not is_message({"id": 1})
