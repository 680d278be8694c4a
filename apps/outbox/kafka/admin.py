"""Creating and verifying the catalog's topics. Idempotent: existing topics are reported, not changed."""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from apps.outbox.kafka.catalog import TopicSpec, all_topics


@dataclass(frozen=True)
class TopicStatus:
    name: str
    created: bool
    partitions: int


async def ensure_topics(*, servers: str, partitions: int, replication_factor: int,
                        specs: list[TopicSpec] | None = None) -> list[TopicStatus]:
    specs = specs if specs is not None else all_topics()
    admin = AIOKafkaAdminClient(bootstrap_servers=servers, client_id="escrow-topics")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [spec for spec in specs if spec.name not in existing]
        if missing:
            await admin.create_topics([
                NewTopic(name=spec.name, num_partitions=partitions, replication_factor=replication_factor,
                         topic_configs=spec.configs)
                for spec in missing
            ])
        described = await admin.describe_topics([spec.name for spec in specs])
        counts = {topic["topic"]: len(topic.get("partitions") or []) for topic in described}
        created = {spec.name for spec in missing}
        return [TopicStatus(spec.name, spec.name in created, counts.get(spec.name, 0)) for spec in specs]
    finally:
        await admin.close()
