"""What the contract suite cannot show on Kafka alone: a member whose process is killed
(no LeaveGroup, no more heartbeats — unlike the contract's member that merely stops
fetching and leaves by itself after its lease) is dropped by the broker once its session
times out, and its partitions and its uncommitted batch go to the next member; topics
and groups carry the namespace; a position is ``<partition>-<offset>``; a closed
subscription refuses to fetch; a fetch does not ask where the log ends; listeners
share one consumer, in no group."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import uuid
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from tests.bus.test_contract import TOPIC, drain, message, sessions

import tollhouse
from tollhouse.bus import events
from tollhouse.bus.kafka import KafkaBus

SESSION_S = 2.0

# A member in a process of its own: it fetches the six events, prints their ids, and
# goes on fetching (alive, heartbeating, holding its partitions) without committing,
# until it is killed.
MEMBER = """
import asyncio, json, sys
from tollhouse.bus.kafka import KafkaBus

async def main(bootstrap, namespace, session_s):
    bus = KafkaBus(bootstrap, namespace=namespace, partitions=2, session_timeout_s=session_s)
    sub = await bus.subscribe("conversation.inbound", "workers", "doomed")
    print("joined", flush=True)
    got = []
    while len(got) < 6:
        got += await sub.fetch(max_count=50, timeout_s=0.2)
    print(json.dumps([m.event["event_id"] for m in got]), flush=True)
    while True:
        await sub.fetch(max_count=50, timeout_s=0.2)

asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
"""


async def test_a_killed_member_loses_its_partitions_and_its_batch(kafka_bootstrap):
    namespace = f"t{uuid.uuid4().hex[:10]}"
    bus = KafkaBus(kafka_bootstrap, namespace=namespace, partitions=2, session_timeout_s=SESSION_S)
    await bus.start()
    src = str(Path(tollhouse.__file__).parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    member = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        MEMBER,
        kafka_bootstrap,
        namespace,
        str(SESSION_S),
        stdout=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        assert member.stdout is not None
        async with asyncio.timeout(30):
            assert (await member.stdout.readline()).strip() == b"joined"
            for session in sessions(6):
                await bus.publish(TOPIC, message(session, 0))
            held = json.loads(await member.stdout.readline())
        assert len(held) == 6
        member.send_signal(signal.SIGKILL)  # as a crash: it says nothing to the broker
        await member.wait()
        killed = time.monotonic()
        heir = await bus.subscribe(TOPIC, "workers", "heir")
        # Not before the dead member's session ran out: it was dropped, it did not leave.
        assert time.monotonic() - killed >= SESSION_S
        got = await drain(heir, 6, rounds=40)
        assert sorted(m.event["event_id"] for m in got) == sorted(held)
    finally:
        if member.returncode is None:
            member.kill()
            await member.wait()
        await bus.close()


async def test_topics_and_groups_carry_the_namespace_and_positions_are_offsets(kafka_bootstrap):
    namespace = f"t{uuid.uuid4().hex[:10]}"
    bus = KafkaBus(kafka_bootstrap, namespace=namespace, partitions=3, session_timeout_s=SESSION_S)
    await bus.start()
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        positions = [await bus.publish(TOPIC, message("ses_contract0001", n)) for n in range(3)]
        partition = positions[0].split("-")[0]
        assert positions == [f"{partition}-{n}" for n in range(3)]  # one key, one partition
        sub = await bus.subscribe(TOPIC, "workers", "a")
        got = await drain(sub, 3)
        assert [(m.topic, m.partition, m.position) for m in got] == [
            (TOPIC, int(partition), str(n)) for n in range(3)
        ]
        assert f"{namespace}.{TOPIC}" in await admin.list_topics()
        groups = {group[0] for group in await admin.list_consumer_groups()}
        assert f"{namespace}.workers" in groups
        await sub.close()
        await sub.close()  # once is enough
        with pytest.raises(RuntimeError, match="closed"):
            await sub.fetch()
        with pytest.raises(events.InvalidEvent, match="no topic"):
            await bus.subscribe("nowhere", "workers", "b")
    finally:
        await admin.close()
        await bus.close()


async def test_a_fetch_does_not_ask_the_broker_where_the_log_ends(kafka_bootstrap, monkeypatch):
    """The top-up to ``max_count`` goes as far as the broker's last fetch answer and this
    process's own acknowledged publishes say the log goes: no ListOffsets on the way of
    every event."""
    from aiokafka import AIOKafkaConsumer

    asked: list[object] = []

    async def end_offsets(self, partitions):
        asked.append(partitions)
        return {}

    monkeypatch.setattr(AIOKafkaConsumer, "end_offsets", end_offsets)
    namespace = f"t{uuid.uuid4().hex[:10]}"
    buses = [
        KafkaBus(kafka_bootstrap, namespace=namespace, partitions=1, session_timeout_s=SESSION_S)
        for _ in range(2)
    ]
    here, there = buses
    try:
        sub = await here.subscribe(TOPIC, "workers", "a")
        for n in range(3):  # this process's own
            await here.publish(TOPIC, message("ses_contract0001", n))
        batch = await sub.fetch(max_count=10, timeout_s=2)
        assert [m.event["message"][-1] for m in batch] == ["0", "1", "2"]
        await sub.commit(batch)
        for n in range(3, 6):  # another process's
            await there.publish(TOPIC, message("ses_contract0001", n))
        got = await drain(sub, 3)
        assert [m.event["message"][-1] for m in got] == ["3", "4", "5"]
        assert asked == []
    finally:
        for bus in buses:
            await bus.close()


async def test_listeners_share_one_consumer_in_no_group(kafka_bootstrap):
    namespace = f"t{uuid.uuid4().hex[:10]}"
    bus = KafkaBus(kafka_bootstrap, namespace=namespace, partitions=2, session_timeout_s=SESSION_S)
    await bus.start()
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        topics = (events.INBOUND, events.OUTBOUND, events.TOOL_RESULTS)
        listeners = [
            await bus.subscribe(topic, f"server-{n}", "me", listener=True)
            for n, topic in enumerate(topics)
        ]
        consumer = bus._listening._consumer
        assert {(tp.topic, tp.partition) for tp in consumer.assignment()} == {
            (f"{namespace}.{topic}", n) for topic in topics for n in range(2)
        }
        groups = {group[0] for group in await admin.list_consumer_groups()}
        assert not {group for group in groups if group.startswith(namespace)}
        await listeners[0].close()  # its topic is let go, the others kept
        assert {tp.topic for tp in consumer.assignment()} == {
            f"{namespace}.{topic}" for topic in topics[1:]
        }
        for listener in listeners[1:]:
            await listener.close()
        assert bus._listening._consumer is None  # the last one stops it
    finally:
        await admin.close()
        await bus.close()
