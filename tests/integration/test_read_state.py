"""Read state across connections, instances and reconnects: one account on two
connections (two devices), embedded and on two instances of a fleet."""

from __future__ import annotations

import uuid

from tests.security.helpers import request
from tests.support import async_wait_for, new_account


def room() -> str:
    return "read-" + uuid.uuid4().hex[:10]


async def test_reading_on_one_device_clears_the_unread_count_on_the_other(urls, clients):
    r = room()
    me = new_account(urls[0])
    name = me["user"]["username"]
    phone = await clients(urls[0], name, token=me["token"])
    laptop = await clients(urls[1], name, token=me["token"])
    first = await phone.join(r)
    assert (first["read_seq"], first["unread"]) == (0, 0), "a room joined for the first time starts read"
    await laptop.join(r)
    friend = await clients(urls[1], "friend")
    await friend.join(r)
    acks = [await friend.send(r, f"news {i}") for i in range(3)]

    ack = await phone.call("read", {"room": r, "seq": acks[-1]["seq"]})
    assert ack == {"ok": True, "read_seq": 3}
    await async_wait_for(lambda: laptop.events["read"], what="the laptop hears of the read")
    assert laptop.events["read"] == [{"room": r, "seq": 3}]
    assert phone.events["read"] == [], "the connection that read is not told again"

    await friend.send(r, "one more")
    await laptop.close()
    laptop = await clients(urls[1], name, token=me["token"])
    back = await laptop.join(r)
    assert (back["read_seq"], back["unread"]) == (3, 1), "after a reconnect the count is right"
    status, _, body = request(f"{urls[0]}/api/me/rooms", headers={"Authorization": "Bearer " + me["token"]})
    assert status == 200
    mine = {entry["room"]: entry for entry in body["rooms"]}
    assert mine[r] == {"room": r, "unread": 1, "last_seq": 4, "read_seq": 3, "private": False, "dm": False}


async def test_a_read_mark_only_moves_forward_and_never_past_the_last_message(urls, clients):
    r = room()
    me = new_account(urls[0])
    client = await clients(urls[0], me["user"]["username"], token=me["token"])
    await client.join(r)
    for i in range(5):
        await client.send(r, f"m{i}")
    assert (await client.call("read", {"room": r, "seq": 4}))["read_seq"] == 4
    assert (await client.call("read", {"room": r, "seq": 2}))["read_seq"] == 4
    assert (await client.call("read", {"room": r, "seq": 10**9}))["read_seq"] == 5
    for bad in ({"room": r}, {"room": r, "seq": -1}, {"room": r, "seq": "3"}, {"room": room(), "seq": 1}):
        ack = await client.call("read", bad)
        assert ack["ok"] is False and ack["error"] in ("bad_request", "not_in_room"), (bad, ack)


async def test_the_room_list_needs_a_token(urls):
    status, _, body = request(f"{urls[0]}/api/me/rooms")
    assert status == 401 and body["error"] == "unauthorized"
