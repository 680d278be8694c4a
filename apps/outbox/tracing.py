"""OpenTelemetry tracing, off by default (settings `TRACING_ENABLED`).

When off, nothing here creates an SDK object: `tracer()` is None and the W3C `traceparent` keeps
travelling by hand (apps/outbox/context.py). When on, the HTTP middleware and `context.handling` open
real spans, and the traceparent written to outbox rows and Kafka headers is the current span's, so a
trace goes HTTP request -> the messages it wrote -> each subscriber's handling -> the messages that wrote.

The process configures itself from settings on first use; `setup()` reconfigures it (tests hand it an
in-memory exporter). Spans come from this module's own provider; the global OpenTelemetry provider is
left alone.
"""

from __future__ import annotations

import os
import re
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from django.conf import settings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span, SpanKind, Tracer

_UNSET: Any = object()
_tracer: Any = _UNSET  # Tracer when on, None when off, _UNSET before the first use
_provider: TracerProvider | None = None
_lock = threading.Lock()
_propagator: Any = None  # the W3C trace-context propagator, made on first use

EXPORTERS = ("otlp", "console", "none")
# manage.py commands that serve HTTP: the web service itself.
_WEB_COMMANDS = {"serve", "runserver"}
# Options of `manage.py consume` followed by a value, to find its APP argument in argv.
_OPTIONS_WITH_VALUES = {"--bootstrap-servers", "--group", "--settings", "--pythonpath", "--verbosity", "-v"}


def tracer() -> Tracer | None:
    """The tracer, or None when tracing is off. Cheap: one global read after the first call."""
    current = _tracer
    if current is _UNSET:
        with _lock:
            if _tracer is _UNSET:
                setup()
            current = _tracer
    return current


def enabled() -> bool:
    return tracer() is not None


def setup(
    *,
    enabled: bool | None = None,
    exporter: SpanExporter | None = None,
    service_name: str | None = None,
    batch: bool | None = None,
) -> Tracer | None:
    """(Re)configures this process's tracing; the arguments default to the settings.

    `exporter`: where finished spans go (default: the `TRACING_EXPORTER` setting). `batch`: export from
    a background thread (the default for the configured exporters) or as each span ends (the default for
    an exporter passed in, so a test sees its spans at once).
    """
    global _tracer, _provider
    if _provider is not None:
        _provider.shutdown()  # flushes what the previous configuration still held
        _provider = None
    on = settings.TRACING_ENABLED if enabled is None else enabled
    if not on:
        _tracer = None
        return None

    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    name = service_name or settings.TRACING_SERVICE_NAME or default_service_name(sys.argv)
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    if exporter is None:
        exporter = _configured_exporter(settings.TRACING_EXPORTER)
        batch = True if batch is None else batch
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter))
    _provider = provider
    _tracer = provider.get_tracer("escrow")
    return _tracer


def shutdown() -> None:
    """Flushes and forgets the configuration; the next `tracer()` reads the settings again."""
    global _tracer, _provider
    with _lock:
        if _provider is not None:
            _provider.shutdown()
        _provider = None
        _tracer = _UNSET


def _configured_exporter(kind: str) -> SpanExporter | None:
    kind = (kind or "").strip().lower()
    if kind == "otlp":
        # OTLP over HTTP; endpoint, headers and timeout from the standard OTEL_EXPORTER_OTLP_* variables.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    if kind == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if kind == "none":
        return None  # real spans and ids, exported nowhere
    raise ValueError(f"TRACING_EXPORTER must be one of {', '.join(EXPORTERS)}, not {kind!r}")


def default_service_name(argv: Sequence[str]) -> str:
    """`escrow` for the web process; `escrow-<command>` for other manage.py commands, with the app for
    `consume` (`escrow-consume-payments`), so each process of a split deployment is its own service."""
    if len(argv) < 2 or os.path.basename(argv[0]) != "manage.py" or argv[1] in _WEB_COMMANDS:
        return "escrow"
    name = f"escrow-{argv[1]}"
    if argv[1] == "consume":
        args = iter(argv[2:])
        for arg in args:
            if arg in _OPTIONS_WITH_VALUES:
                next(args, None)
            elif not arg.startswith("-"):
                return f"{name}-{arg}"
    return name


# --- spans ----------------------------------------------------------------------------------------


_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


def valid_traceparent(value: str) -> bool:
    """A W3C traceparent of version 00 whose trace and parent ids are not all zeros."""
    match = _TRACEPARENT.match(value or "")
    return match is not None and match.group(1) != "0" * 32 and match.group(2) != "0" * 16


def traceparent_of(span: Span) -> str:
    """The W3C traceparent naming `span` as the parent (version 00)."""
    ctx = span.get_span_context()
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def _parent_context(traceparent: str, tracestate: str = "") -> Any:
    """The OpenTelemetry context whose span is the remote parent named by `traceparent`; an empty
    context (a new trace) when there is none or it is invalid."""
    global _propagator
    from opentelemetry.context import Context

    if not valid_traceparent(traceparent):
        return Context()
    if _propagator is None:
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        _propagator = TraceContextTextMapPropagator()
    carrier = {"traceparent": traceparent}
    if tracestate:
        carrier["tracestate"] = tracestate
    return _propagator.extract(carrier, context=Context())


@contextmanager
def span(
    active: Tracer,
    name: str,
    *,
    parent: str,
    kind: SpanKind,
    tracestate: str = "",
    attributes: Mapping[str, Any] | None = None,
) -> Iterator[Span]:
    """A span that is the current one while the block runs, child of the traceparent `parent` (not of
    whatever span is current: a subscriber drained inside a request belongs to its message's trace).
    An exception leaving the block is recorded on it and sets its status to error."""
    with active.start_as_current_span(
        name, context=_parent_context(parent, tracestate), kind=kind, attributes=attributes
    ) as current:
        yield current
