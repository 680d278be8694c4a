"""What the project wiring uses of the Discord edge: the bus worker's follow-up tick."""

from apps.discord.followups import send_due_followups

__all__ = ["send_due_followups"]
