"""The ``EventBus`` contract (``tollhouse/bus/backends.py``), run on every backend: events
checked on publish and on fetch, a session's events in order and handled by one member,
at least once — what a member fetched and did not commit comes back, first, to the next
owner of its partition, whether the member closed or died — committed events never
again, every partition owned, old events trimmed."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import pytest

from tollhouse.bus import events
from tollhouse.bus.backends import Message

TOPIC = "conversation.inbound"


def message(session: str, n: int) -> dict:
    return {
        "event_id": f"evt_{session[4:]}{n:06d}",
        "session_id": session,
        "type": "message",
        "message": f"{session} #{n}",
        "created_at": events.now(),
    }


def sessions(count: int) -> list[str]:
    return [f"ses_contract{n:04d}" for n in range(count)]


async def drain(sub, want: int, *, rounds: int = 50, commit: bool = True) -> list[Message]:
    got: list[Message] = []
    for _ in range(rounds):
        batch = await sub.fetch(max_count=50, timeout_s=0.2)
        got += batch
        if commit and batch:
            await sub.commit(batch)
        if len(got) >= want:
            break
    return got


async def test_publish_checks_the_event(flavor):
    bus = await flavor.make()
    with pytest.raises(events.InvalidEvent, match="Additional properties"):
        await bus.publish(TOPIC, {**message("ses_contract0000", 1), "surprise": 1})
    with pytest.raises(events.InvalidEvent, match="session_id"):
        await bus.publish(TOPIC, {**message("ses_contract0000", 1), "session_id": "nope"})
    with pytest.raises(events.InvalidEvent, match="no topic"):
        await bus.publish("nowhere", message("ses_contract0000", 1))
    position = await bus.publish(TOPIC, message("ses_contract0000", 1))
    assert isinstance(position, str) and position


async def test_a_sessions_events_arrive_in_order_through_one_member(flavor):
    bus = await flavor.make(partitions=4)
    one = await bus.subscribe(TOPIC, "workers", "one")
    two = await bus.subscribe(TOPIC, "workers", "two")
    names = sessions(12)
    for n in range(10):
        for session in names:
            await bus.publish(TOPIC, message(session, n))

    handled: dict[str, list[tuple[str, int]]] = defaultdict(list)

    async def work(sub, member: str) -> None:
        for _ in range(60):
            batch = await sub.fetch(max_count=7, timeout_s=0.1)
            for m in batch:
                handled[m.key].append((member, int(m.event["message"].split("#")[1])))
            await sub.commit(batch)
            if sum(len(v) for v in handled.values()) >= 120:
                return

    await asyncio.gather(work(one, "one"), work(two, "two"))
    assert sum(len(v) for v in handled.values()) == 120
    for session in names:
        got = handled[session]
        assert [n for _, n in got] == list(range(10)), session  # in order, none twice
        assert len({member for member, _ in got}) == 1, session  # one member each
    assert {member for got in handled.values() for member, _ in got} == {"one", "two"}


async def test_what_a_member_did_not_commit_goes_to_the_next_one_first(flavor):
    bus = await flavor.make(partitions=1)
    first = await bus.subscribe(TOPIC, "workers", "first")
    for n in range(5):
        await bus.publish(TOPIC, message("ses_contract0000", n))
    batch = await first.fetch(max_count=3, timeout_s=1)
    assert [m.event["message"][-1] for m in batch] == ["0", "1", "2"]
    await first.commit(batch[:1])  # #0 done; #1 and #2 in hand when it goes
    await first.close()
    for n in range(5, 7):
        await bus.publish(TOPIC, message("ses_contract0000", n))
    second = await bus.subscribe(TOPIC, "workers", "second")
    got = await drain(second, 6)
    assert [int(m.event["message"].split("#")[1]) for m in got] == [1, 2, 3, 4, 5, 6]


async def test_a_member_that_dies_loses_its_partitions_and_its_batch(flavor):
    bus = await flavor.make(partitions=2, lease_s=0.5)
    dying = await bus.subscribe(TOPIC, "workers", "dying")
    for session in sessions(6):
        await bus.publish(TOPIC, message(session, 0))
    held = await drain(dying, 6, commit=False)
    assert len(held) == 6
    # It neither commits nor fetches again (a crash): after its lease, another takes over.
    await asyncio.sleep(0.7)
    heir = await bus.subscribe(TOPIC, "workers", "heir")
    got = await drain(heir, 6, rounds=40)
    assert sorted(m.event["event_id"] for m in got) == sorted(m.event["event_id"] for m in held)


async def test_committed_events_are_done_for_the_group_not_for_others(flavor):
    bus = await flavor.make(partitions=2)
    sub = await bus.subscribe(TOPIC, "workers", "a")
    for session in sessions(4):
        await bus.publish(TOPIC, message(session, 0))
    assert len(await drain(sub, 4)) == 4
    await sub.close()
    again = await bus.subscribe(TOPIC, "workers", "b")
    assert await again.fetch(max_count=10, timeout_s=0.3) == []
    other = await bus.subscribe(TOPIC, "auditors", "x")  # another group reads them all
    assert len(await drain(other, 4)) == 4


async def test_an_invalid_event_is_skipped_counted_and_never_blocks(flavor):
    bus = await flavor.make(partitions=1)
    sub = await bus.subscribe(TOPIC, "workers", "a")
    await bus.publish(TOPIC, message("ses_contract0000", 0))
    await flavor.inject(bus, TOPIC, "ses_contract0000", b"not json")
    await flavor.inject(bus, TOPIC, "ses_contract0000", b'{"event_id": "evt_x"}')
    await bus.publish(TOPIC, message("ses_contract0000", 1))
    got = await drain(sub, 2)
    assert [m.event["message"][-1] for m in got] == ["0", "1"]
    assert bus.invalid == 2
    await sub.close()
    later = await bus.subscribe(TOPIC, "workers", "b")
    assert await later.fetch(max_count=10, timeout_s=0.3) == []  # skipped for good


async def test_every_partition_has_one_owner(flavor):
    bus = await flavor.make(partitions=6)
    members = [await bus.subscribe(TOPIC, "workers", f"m{n}") for n in range(3)]
    names = sessions(30)
    for session in names:
        await bus.publish(TOPIC, message(session, 0))
    seen: dict[str, set[int]] = {}

    async def work(sub, member: str) -> None:
        for _ in range(20):
            batch = await sub.fetch(max_count=50, timeout_s=0.1)
            seen.setdefault(member, set()).update(m.partition for m in batch)
            await sub.commit(batch)

    await asyncio.gather(*(work(sub, f"m{n}") for n, sub in enumerate(members)))
    owned = [partitions for partitions in seen.values() if partitions]
    assert len(owned) == 3  # every member got work
    assert sum(len(p) for p in owned) == len(set().union(*owned))  # no partition shared


async def test_old_events_are_trimmed(flavor):
    if flavor.name == "kafka":
        pytest.skip("Kafka trims by retention time, not by count")
    bus = await flavor.make(partitions=1, max_len=10)
    for n in range(100):
        await bus.publish(TOPIC, message("ses_contract0000", n))
    sub = await bus.subscribe(TOPIC, "late", "a")
    got = await drain(sub, 100, rounds=10)
    assert 10 <= len(got) < 100  # the oldest are gone (Redis trims approximately)
    assert got[-1].event["message"].endswith("#99")


async def test_a_listener_sees_what_follows_and_its_group_goes_with_it(flavor):
    bus = await flavor.make(partitions=2)
    for session in sessions(3):
        await bus.publish(TOPIC, message(session, 0))  # before it listens: not for it
    listener = await bus.subscribe(TOPIC, "server-1", "me", listener=True)
    assert await listener.fetch(max_count=10, timeout_s=0.2) == []
    for session in sessions(3):
        await bus.publish(TOPIC, message(session, 1))
    got = await drain(listener, 3)
    assert sorted(m.event["message"][-1] for m in got) == ["1", "1", "1"]
    await listener.close()
    for session in sessions(2):
        await bus.publish(TOPIC, message(session, 2))
    again = await bus.subscribe(TOPIC, "server-1", "me", listener=True)
    assert await again.fetch(max_count=10, timeout_s=0.2) == []  # a new group, from now


async def test_listeners_of_one_bus_each_follow_their_topic_from_their_own_start(flavor):
    bus = await flavor.make(partitions=2)
    early = await bus.subscribe(TOPIC, "server-a", "me", listener=True)
    results = await bus.subscribe(events.TOOL_RESULTS, "server-b", "me", listener=True)
    await bus.publish(TOPIC, message("ses_contract0000", 0))
    late = await bus.subscribe(TOPIC, "server-c", "me", listener=True)  # after #0
    await bus.publish(TOPIC, message("ses_contract0000", 1))
    result = {
        "event_id": "evt_contractresult",
        "session_id": "ses_contract0000",
        "call_id": "call_1",
        "tool": "echo",
        "ok": True,
        "created_at": events.now(),
    }
    await bus.publish(events.TOOL_RESULTS, result)
    assert [m.event["message"][-1] for m in await drain(early, 2)] == ["0", "1"]
    assert [m.event["message"][-1] for m in await drain(late, 1)] == ["1"]
    got = await drain(results, 1)
    assert [(m.topic, m.event["call_id"]) for m in got] == [(events.TOOL_RESULTS, "call_1")]
    await early.close()  # the others go on
    await bus.publish(TOPIC, message("ses_contract0000", 2))
    assert [m.event["message"][-1] for m in await drain(late, 1)] == ["2"]
    for listener in (late, results):
        assert await listener.fetch(max_count=10, timeout_s=0.2) == []
