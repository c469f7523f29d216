"""Payload validation, the token bucket and mention parsing."""

from __future__ import annotations

import pytest

from backend.limits import TokenBucket
from backend.mentions import mention_key, mentioned
from backend.models import ChatError, ConnectAuth, JoinRequest, SendRequest, message_id, parse


def test_room_names_are_trimmed_lowercased_slugs():
    assert parse(JoinRequest, {"room": "  General "}).room == "general"
    for bad in ["", "a b", "-x", "x" * 41, "<script>", "room/..", "é"]:
        with pytest.raises(ChatError) as info:
            parse(JoinRequest, {"room": bad})
        assert info.value.code == "bad_request"


def test_names_are_one_to_32_printable_characters():
    assert parse(ConnectAuth, {"name": "  Ann Lee "}).name == "Ann Lee"
    for bad in ["", "   ", "x" * 33, "a\nb", "a\u200bb", 5, None]:
        with pytest.raises(ChatError):
            parse(ConnectAuth, {"name": bad})


def test_payloads_are_strict_and_ignore_unknown_keys():
    req = parse(SendRequest, {"room": "a", "text": "hi", "client_id": "c-1", "user": {"name": "someone else"}})
    assert not hasattr(req, "user")
    for bad in [[], "text", 3, {"room": "a", "text": 1}, {"room": "a", "text": "x", "client_id": "a b"}]:
        with pytest.raises(ChatError):
            parse(SendRequest, bad)


def test_message_ids_sort_like_their_sequence_numbers():
    ids = [message_id(s) for s in (1, 2, 9, 10, 99, 100, 123456)]
    assert ids == sorted(ids)


def test_token_bucket_allows_a_burst_then_the_rate():
    bucket = TokenBucket(rate=10, burst=3)
    t = bucket._stamp
    assert [bucket.take(t) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(t + 0.1)
    assert not bucket.take(t + 0.1)
    assert bucket.retry_after() > 0


def test_mentions_find_names_but_not_emails_or_the_sender():
    msg = {"text": "hi @Bob and @ann, mail a@b.c, @alice", "user": {"name": "Alice"}}
    assert mentioned(msg) == {"bob", "ann"}
    assert mention_key("Ann Lee") == "annlee"
