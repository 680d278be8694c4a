"""Domain errors of the escrow service. The gateway maps each to one problem+json answer."""

from __future__ import annotations


class EscrowError(Exception):
    code = "escrow_error"

    def __init__(self, detail: str, **extra: object) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class EscrowNotFound(EscrowError):
    code = "escrow_not_found"


class InvalidTransition(EscrowError):
    """The command is not allowed in the escrow's current state (for anyone)."""

    code = "invalid_transition"

    def __init__(self, detail: str, *, state: str) -> None:
        super().__init__(detail, state=state)
        self.state = state


class NotAllowed(EscrowError):
    """The command is allowed in this state, but not for this actor."""

    code = "not_allowed"

    def __init__(self, detail: str, *, state: str) -> None:
        super().__init__(detail, state=state)
        self.state = state


class InvalidCommand(EscrowError):
    code = "invalid_command"

    def __init__(self, detail: str, *, field: str) -> None:
        super().__init__(detail, field=field)
        self.field = field
