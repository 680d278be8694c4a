"""Adds the request's correlation id and trace to every log line."""

from __future__ import annotations

import logging

from apps.outbox import context


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        trace = context.current()
        if trace.correlation_id and not hasattr(record, "correlation_id"):
            record.correlation_id = trace.correlation_id
        if trace.traceparent and not hasattr(record, "traceparent"):
            record.traceparent = trace.traceparent
        return True
