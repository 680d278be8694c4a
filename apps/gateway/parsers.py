"""The API's JSON parser: DRF's strict one (no NaN or Infinity), plus a bound on nesting. Python's
decoder recurses once per level, so a small body of nested brackets would otherwise exhaust the stack
and turn into a 500 instead of a 400."""

from __future__ import annotations

from io import BytesIO
from typing import Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

# No request of the REST contract nests deeper than a few levels.
MAX_JSON_DEPTH = 32


def _too_deep(raw: bytes, limit: int) -> bool:
    """Counts bracket depth outside strings, without parsing (so it cannot recurse itself)."""
    depth = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > limit:
                return True
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
    return False


class BoundedJSONParser(JSONParser):
    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        raw = stream.read() if stream is not None else b""
        if _too_deep(raw, MAX_JSON_DEPTH):
            raise ParseError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
        try:
            return super().parse(BytesIO(raw), media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON nested too deeply") from None
