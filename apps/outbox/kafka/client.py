"""aiokafka clients configured from settings, and the private event loop each process drives them on."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from aiokafka import AIOKafkaProducer
from django.conf import settings

T = TypeVar("T")


class KafkaNotConfigured(RuntimeError):
    pass


def bootstrap_servers(override: str | None = None) -> str:
    servers = override or settings.KAFKA_BOOTSTRAP_SERVERS
    if not servers:
        raise KafkaNotConfigured("KAFKA_BOOTSTRAP_SERVERS is not set")
    return servers


class LoopRunner:
    """Runs coroutines on one private event loop from synchronous code (the ORM stays outside it)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def build(self, factory: Callable[[], T]) -> T:
        """aiokafka clients bind to the running loop when constructed, so construct them inside it."""

        async def construct() -> T:
            return factory()

        return self.run(construct())

    def close(self) -> None:
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()


def make_producer(servers: str, **overrides: Any) -> AIOKafkaProducer:
    """acks=all so a message is only acknowledged once every in-sync replica has it."""
    options: dict[str, Any] = {
        "bootstrap_servers": servers,
        "acks": "all",
        "enable_idempotence": settings.KAFKA_ENABLE_IDEMPOTENCE,
        "linger_ms": settings.KAFKA_LINGER_MS,
        "max_batch_size": 256 * 1024,
        "request_timeout_ms": 10_000,
        "retry_backoff_ms": 200,
        "client_id": "escrow-relay",
    }
    options.update(overrides)
    return AIOKafkaProducer(**options)
