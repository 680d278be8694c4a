"""The Kafka topic catalog (DESIGN.md): every topic with its retention, plus a dead-letter topic each.

Event topics use cleanup.policy=delete: compaction would keep only an escrow's last event and break
replay and audit.
"""

from __future__ import annotations

from dataclasses import dataclass

from apps.outbox import messages

DAY_MS = 24 * 60 * 60 * 1000
DLQ_SUFFIX = ".dlq"


@dataclass(frozen=True)
class TopicSpec:
    name: str
    retention_days: int

    @property
    def configs(self) -> dict[str, str]:
        return {"retention.ms": str(self.retention_days * DAY_MS), "cleanup.policy": "delete"}


CATALOG: tuple[TopicSpec, ...] = (
    TopicSpec(messages.ESCROW_COMMANDS, 7),
    TopicSpec(messages.ESCROW_EVENTS, 90),
    TopicSpec(messages.PAYMENTS_COMMANDS, 7),
    TopicSpec(messages.PAYMENTS_EVENTS, 90),
    TopicSpec(messages.WEBHOOK_EVENTS, 90),
)


def dlq_for(topic: str) -> str:
    return topic + DLQ_SUFFIX


def all_topics() -> list[TopicSpec]:
    return [*CATALOG, *(TopicSpec(dlq_for(spec.name), 30) for spec in CATALOG)]
