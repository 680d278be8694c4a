"""The relay's batching against a real broker: it picks partitions itself (one closed batch per partition),
so the partition must be the default partitioner's, per-key order must hold across batches and across
several batches of one partition, the SQL-built headers must equal the envelope, and a broker that dies
in the middle leaves a delivery-order prefix marked and the rest unpublished."""

from __future__ import annotations

import datetime
import random
import uuid
from collections import defaultdict

import pytest
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from django.db import transaction

from apps.outbox import messages
from apps.outbox.kafka.client import murmur2, partition_for
from apps.outbox.kafka.envelope import headers_for
from apps.outbox.kafka.relay import OutboxRelay, PublishFailed, backlog, publishable_records
from apps.outbox.models import OutboxMessage
from apps.outbox.publish import outbox_append
from apps.outbox.reader import published_rows
from proto.common.v1 import Money
from proto.escrow import v1 as escrow_v1
from tests.kafka.broker import TEST_PARTITIONS, TansuBroker, end_offsets, read_since

pytestmark = pytest.mark.kafka


@pytest.fixture(autouse=True)
def _relay_only(settings) -> None:
    settings.BUS_OUTBOX_SUBSCRIBERS = []  # these synthetic messages are for the relay, not the subscribers


def append_created(
    escrow_id: str, version: int, *, detail: str = "batching", occurred_at: datetime.datetime | None = None
) -> None:
    """A synthetic escrow event of about the size `detail` gives it."""
    outbox_append(
        message=escrow_v1.EscrowNeedsAttention(
            escrow_id=escrow_id,
            reason="batching",
            detail=detail,
            received=Money(amount_minor=1000, currency="USD"),
        ),
        aggregate_id=escrow_id,
        aggregate_version=version,
        event_id=uuid.uuid4(),
        occurred_at=occurred_at,
    )


def seed_interleaved(escrows: int, versions: int, *, detail: str = "batching") -> list[str]:
    """`escrows` keys with `versions` messages each, version by version in separate transactions, so the
    messages of one key are spread over batches and interleaved with the others'."""
    ids = [str(uuid.uuid4()) for _ in range(escrows)]
    for version in range(1, versions + 1):
        with transaction.atomic():
            for escrow_id in ids:
                append_created(escrow_id, version, detail=detail)
    return ids


def test_partition_for_is_the_default_partitioners_choice():
    # Kafka's own murmur2 vectors (the Java client's UtilsTest), as signed 32-bit values.
    for text, expected in [
        ("21", -973932308),
        ("foobar", -790332482),
        ("a-little-bit-long-string", -985981536),
        ("a-little-bit-longer-string", -1486304829),
        ("lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
        ("abc", 479470107),
    ]:
        assert murmur2(text.encode()) - (1 << 32 if murmur2(text.encode()) >= 1 << 31 else 0) == expected
    rng = random.Random(7)
    keys = [str(uuid.uuid4()).encode() for _ in range(2000)]
    keys += [f"pi_{rng.getrandbits(64):x}".encode() for _ in range(500)]  # provider payment ids
    keys += [bytes(rng.randrange(256) for _ in range(length)) for length in range(64) for _ in range(20)]
    default = DefaultPartitioner()
    for key in keys:
        assert murmur2(key) == aiokafka_murmur2(key)
        for count in (1, 3, 12, 50):
            partitions = list(range(count))
            assert partition_for(key, partitions) == default(key, partitions, partitions)
    # and again from the cache
    assert all(partition_for(key, list(range(12))) == default(key, list(range(12)), []) for key in keys)


def test_records_land_on_the_default_partitioners_partition_in_per_key_order(kafka, transactional_db):
    since = end_offsets(kafka, [messages.ESCROW_EVENTS])
    seed_interleaved(escrows=60, versions=5)
    # Large messages for two keys, so one relay batch fills several producer batches of one partition.
    big = [str(uuid.uuid4()) for _ in range(2)]
    for version in range(1, 9):
        with transaction.atomic():
            for escrow_id in big:
                append_created(escrow_id, version, detail="x" * 100_000)
    rows = list(OutboxMessage.objects.order_by("txid", "id"))

    stats = OutboxRelay(servers=kafka, batch_size=37, pipeline_depth=3).run(once=True)

    assert stats.published == len(rows) and backlog().pending == 0
    records = read_since(kafka, since)
    assert len(records) == len(rows)
    partitions = list(range(TEST_PARTITIONS))
    by_key: dict[bytes, list[tuple[int, int, str]]] = defaultdict(list)
    for record in records:
        assert record.partition == DefaultPartitioner()(record.key, partitions, partitions)
        by_key[record.key].append((record.partition, record.offset, dict(record.headers)["event_id"].decode()))
    for key, seen in by_key.items():
        assert len({partition for partition, _, _ in seen}) == 1
        assert [event_id for _, _, event_id in sorted(seen)] == [str(r.event_id) for r in rows if r.key.encode() == key]


def test_headers_and_timestamp_built_in_sql_equal_the_envelope(transactional_db):
    whole_second = datetime.datetime(2025, 3, 1, 12, 0, 5, tzinfo=datetime.UTC)
    with transaction.atomic():
        append_created("esc-1", 1, occurred_at=whole_second)
        append_created("esc-1", 2, occurred_at=whole_second.replace(microsecond=7))
        append_created("esc-1", 3, occurred_at=whole_second.replace(microsecond=999_999))
        append_created("esc-2", 1)
    rows = {row.id: row for row in OutboxMessage.objects.all()}

    records = publishable_records(limit=10)

    assert [record.id for record in records] == sorted(rows)
    for record in records:
        row = rows[record.id]
        assert record.headers == headers_for(row)
        assert record.key == row.key.encode() and record.value == bytes(row.payload) and record.topic == row.topic
        epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
        assert record.timestamp_ms == (row.occurred_at - epoch) // datetime.timedelta(milliseconds=1)


@pytest.mark.postgres_only  # the broker is stopped from the relay's thread while it reads; SQLite is not the point
def test_a_broker_dying_mid_run_leaves_a_delivery_order_prefix_marked_and_the_rest_unpublished(kafka, transactional_db):
    """Batches of 20, three in the pipeline; the broker is stopped while the relay reads its fifth batch.
    Whatever was acknowledged before is marked, in delivery order with no gap; nothing after a failure is;
    a restarted relay publishes exactly the rest."""
    seed_interleaved(escrows=40, versions=5)
    order = list(OutboxMessage.objects.order_by("txid", "id").values_list("id", flat=True))
    broker = TansuBroker()
    broker.start()
    encoded = 0

    def stop_broker_at_the_fifth_batch(topic: str, type_name: str, value: bytes) -> bytes:
        nonlocal encoded
        encoded += 1
        if encoded == 4 * 20 + 1:
            broker.stop()
        return value

    try:
        relay = OutboxRelay(
            servers=broker.bootstrap, batch_size=20, pipeline_depth=3, encode_value=stop_broker_at_the_fifth_batch
        )
        with pytest.raises(PublishFailed):
            relay.run(once=True)

        published = set(published_rows().values_list("id", flat=True))
        assert 0 < len(published) <= 4 * 20 < len(order)
        assert published == set(order[: len(published)])  # a prefix of the delivery order: no gap
        assert relay.stats.published == len(published)

        broker.start()  # same port, empty storage
        assert OutboxRelay(servers=broker.bootstrap).run(once=True).published == len(order) - len(published)
        assert backlog().pending == 0
        arrived = [dict(r.headers)["event_id"].decode() for r in read_since(broker.bootstrap, {})]
        rest = {str(e) for e in OutboxMessage.objects.exclude(id__in=published).values_list("event_id", flat=True)}
        assert sorted(arrived) == sorted(rest)
    finally:
        broker.stop()
