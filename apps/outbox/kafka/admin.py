"""Creating and verifying the catalog's topics. Idempotent: existing topics are reported, not changed."""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka.admin import NewTopic
from django.conf import settings

from apps.outbox.kafka.catalog import TopicSpec, all_topics
from apps.outbox.kafka.client import make_admin


@dataclass(frozen=True)
class TopicStatus:
    name: str
    created: bool
    partitions: int


async def ensure_topics(
    *,
    servers: str,
    partitions: int,
    replication_factor: int,
    min_insync_replicas: int | None = None,
    specs: list[TopicSpec] | None = None,
) -> list[TopicStatus]:
    """Creates the missing topics with `replication_factor` replicas and `min.insync.replicas` (default
    KAFKA_MIN_INSYNC_REPLICAS): with acks=all, a write is acknowledged only once that many replicas have
    it (3 and 2 in production: one broker may be down, none lost)."""
    specs = specs if specs is not None else all_topics()
    insync = min_insync_replicas if min_insync_replicas is not None else settings.KAFKA_MIN_INSYNC_REPLICAS
    if not 1 <= insync <= replication_factor:
        raise ValueError(f"min.insync.replicas must be between 1 and the replication factor ({replication_factor})")
    admin = make_admin(servers, client_id="escrow-topics")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [spec for spec in specs if spec.name not in existing]
        if missing:
            await admin.create_topics(
                [
                    NewTopic(
                        name=spec.name,
                        num_partitions=partitions,
                        replication_factor=replication_factor,
                        topic_configs={**spec.configs, "min.insync.replicas": str(insync)},
                    )
                    for spec in missing
                ]
            )
        described = await admin.describe_topics([spec.name for spec in specs])
        counts = {topic["topic"]: len(topic.get("partitions") or []) for topic in described}
        created = {spec.name for spec in missing}
        return [TopicStatus(spec.name, spec.name in created, counts.get(spec.name, 0)) for spec in specs]
    finally:
        await admin.close()
