"""Runs one app's subscriber from Kafka: the same handlers and the same dedupe as the in-process bus.

- Consumer group = the app's name, so each app reads every message once per group, however many
  processes it runs.
- Each record is applied with `apply.handle_with_dedupe` (its own transaction, with the processed-id
  record); offsets are committed only after those transactions commit, so a crash re-delivers and the
  dedupe record turns the repeat into a no-op.
- A record that keeps failing (or cannot be decoded) is published to `<topic>.dlq` with the error in
  its headers, and the consumer moves on.
- While the database is away the record is kept (offset unmoved, no attempt spent): the consumer backs
  off and resumes by itself when it is back.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from django.conf import settings

from apps.outbox import messages, outage
from apps.outbox.apply import handle_with_dedupe
from apps.outbox.kafka.catalog import dlq_for
from apps.outbox.kafka.client import LoopRunner, bootstrap_servers, make_consumer, make_producer
from apps.outbox.kafka.envelope import EnvelopeError, delivery_from_record
from apps.outbox.kafka.schema_registry import unframe
from apps.outbox.registry import get_subscriber

log = logging.getLogger(__name__)


@dataclass
class ConsumerStats:
    received: int = 0
    applied: int = 0
    duplicates: int = 0
    dead_lettered: int = 0

    def summary(self) -> str:
        return (
            f"received={self.received} applied={self.applied} duplicates={self.duplicates} "
            f"dead_lettered={self.dead_lettered}"
        )


class AppConsumer:
    def __init__(
        self,
        *,
        app: str,
        servers: str | None = None,
        group_id: str | None = None,
        max_attempts: int | None = None,
        retry_base_seconds: float | None = None,
        report: Callable[[str], None] | None = None,
    ) -> None:
        self.subscriber = get_subscriber(app)
        self.servers = bootstrap_servers(servers)
        self.group_id = group_id or app
        self.max_attempts = max_attempts or settings.KAFKA_CONSUMER_MAX_ATTEMPTS
        self.retry_base_seconds = (
            retry_base_seconds if retry_base_seconds is not None else settings.BUS_RETRY_BASE_SECONDS
        )
        self.report = report or (lambda line: log.info(line))
        self.stopping = threading.Event()
        self.stats = ConsumerStats()
        self._runner = LoopRunner()
        self._consumer: AIOKafkaConsumer | None = None
        self._dlq: AIOKafkaProducer | None = None

    def stop(self) -> None:
        self.stopping.set()

    def run(self, *, until_caught_up: bool = False) -> ConsumerStats:
        """Consumes until stopped; with `until_caught_up`, until every assigned partition is read to
        its end (for scripts and tests)."""
        self._consumer = self._runner.build(
            lambda: make_consumer(
                *sorted(self.subscriber.topics),
                servers=self.servers,
                group_id=self.group_id,
                client_id=f"escrow-{self.group_id}",
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                session_timeout_ms=settings.KAFKA_SESSION_TIMEOUT_MS,
                heartbeat_interval_ms=settings.KAFKA_HEARTBEAT_INTERVAL_MS,
                rebalance_timeout_ms=settings.KAFKA_SESSION_TIMEOUT_MS,
            )
        )
        self._dlq = self._runner.build(lambda: make_producer(self.servers, client_id=f"escrow-{self.group_id}-dlq"))
        try:
            self._runner.run(self._consumer.start())
            self._runner.run(self._dlq.start())
            self.report(f"consuming {sorted(self.subscriber.topics)} as group {self.group_id!r}")
            while not self.stopping.is_set():
                batches = self._runner.run(self._consumer.getmany(timeout_ms=500, max_records=500))
                for partition, records in batches.items():
                    self._handle_partition(partition, records)
                if until_caught_up and not batches and self._caught_up():
                    break
            return self.stats
        finally:
            self._close()

    def _caught_up(self) -> bool:
        """Every assigned partition read up to the high watermark of its latest fetch response (the
        fetch's watermark, not ListOffsets: some brokers answer that with the last batch's base offset)."""
        assert self._consumer is not None
        assigned = self._consumer.assignment()
        if not assigned:
            return False
        for tp in assigned:
            high = self._consumer.highwater(tp)
            if high is None or self._runner.run(self._consumer.position(tp)) < high:
                return False
        return True

    def _handle_partition(self, partition: TopicPartition, records: list[ConsumerRecord]) -> None:
        assert self._consumer is not None
        for record in records:
            self.stats.received += 1
            self._handle(record)
            # The record's effect (or its dead letter) is durable: now, and only now, move the offset.
            self._runner.run(self._consumer.commit({partition: record.offset + 1}))

    def _handle(self, record: ConsumerRecord) -> None:
        attempts = 0
        outages = 0
        while True:
            attempts += 1
            try:
                delivery = delivery_from_record(topic=record.topic, key=record.key, headers=record.headers)
                if self.subscriber.handler_for(delivery.type) is None:
                    return  # another app's message on a shared topic
                # Values framed for the Schema Registry are unframed and checked against the type header.
                message = messages.decode(delivery.type, unframe(record.value or b"", type_name=delivery.type))
                if handle_with_dedupe(self.subscriber, message, delivery):
                    self.stats.applied += 1
                else:
                    self.stats.duplicates += 1
                return
            except (EnvelopeError, messages.UnknownMessageType) as exc:
                # Retrying cannot fix a record that does not parse.
                self._dead_letter(record, attempts, exc)
                return
            except Exception as exc:  # noqa: BLE001 - any handler failure is retried, then dead-lettered
                if outage.connection_lost(exc):
                    # The database is away: not the record's fault. Keep it (offset unmoved) and wait for
                    # the database, without spending an attempt; stopping leaves it for the next run.
                    attempts -= 1
                    outages += 1
                    self._wait_for_database(record, outages, exc)
                    continue
                if attempts >= self.max_attempts:
                    self._dead_letter(record, attempts, exc)
                    return
                delay = self.retry_base_seconds * (4 ** (attempts - 1))
                log.warning(
                    "kafka handler failed, will retry",
                    extra={
                        "subscriber": self.subscriber.name,
                        "topic": record.topic,
                        "key": record.key,
                        "partition": record.partition,
                        "offset": record.offset,
                        "attempt": attempts,
                        "error": repr(exc),
                    },
                )
                time.sleep(delay)

    def _wait_for_database(self, record: ConsumerRecord, outages: int, exc: BaseException) -> None:
        if self.stopping.is_set():
            raise outage.DatabaseUnavailable("stopping while the database is away") from exc
        delay = outage.backoff_seconds(outages)
        log.warning(
            "kafka consumer: database unavailable, will retry",
            extra={
                "subscriber": self.subscriber.name,
                "topic": record.topic,
                "offset": record.offset,
                "failures": outages,
                "retry_in_s": delay,
                "error": repr(exc),
            },
        )
        outage.reset_connection()
        # Waiting on the client's loop keeps the group membership alive (heartbeats) meanwhile.
        self._runner.run(asyncio.sleep(delay))

    def _dead_letter(self, record: ConsumerRecord, attempts: int, exc: BaseException) -> None:
        assert self._dlq is not None
        error = "".join(traceback.format_exception(exc))[-4000:]
        headers = [
            *(record.headers or ()),
            ("dlq.subscriber", self.subscriber.name.encode()),
            ("dlq.error", repr(exc)[:1000].encode()),
            ("dlq.traceback", error.encode()),
            ("dlq.attempts", str(attempts).encode()),
            ("dlq.source", f"{record.topic}/{record.partition}/{record.offset}".encode()),
        ]
        # Waits for the ack: the offset may only move once the dead letter is safe on the broker.
        self._runner.run(
            self._dlq.send_and_wait(dlq_for(record.topic), value=record.value, key=record.key, headers=headers)
        )
        self.stats.dead_lettered += 1
        log.error(
            "kafka message dead-lettered",
            extra={
                "subscriber": self.subscriber.name,
                "topic": record.topic,
                "offset": record.offset,
                "attempts": attempts,
                "error": repr(exc),
            },
        )

    def _close(self) -> None:
        for client in (self._consumer, self._dlq):
            if client is not None:
                try:
                    self._runner.run(client.stop())
                except Exception:  # noqa: BLE001
                    log.warning("kafka client did not close cleanly", exc_info=True)
        self._runner.close()
