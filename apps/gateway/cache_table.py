"""The embedded default's shared cache is a database table (Django's DatabaseCache, `escrow_cache`). It is
configured never to cull (settings: a culled revocation would bring a signed-out token back), so its expired
rows are deleted here instead: a bus worker tick, at most once per CACHE_PURGE_EVERY_SECONDS. Nothing to do
when the cache is Redis (it expires keys itself) or kept in memory."""

from __future__ import annotations

import logging

from django.core.cache import caches
from django.core.cache.backends.db import DatabaseCache
from django.db import connections, router
from django.utils import timezone

from apps.gateway.throttle import AtMostEvery

log = logging.getLogger(__name__)
_purge_due = AtMostEvery("CACHE_PURGE_EVERY_SECONDS")


def expired_cache_entries_purge(*, force: bool = False) -> int:
    """Deletes the database cache's expired rows. Returns 0: a purge puts nothing on the bus."""
    if not _purge_due.due(force=force):
        return 0
    cache = caches["default"]
    if not isinstance(cache, DatabaseCache):
        return 0
    alias = router.db_for_write(cache.cache_model_class)
    connection = connections[alias]
    table = connection.ops.quote_name(cache.cache_model_class._meta.db_table)
    expires = connection.ops.quote_name("expires")
    with connection.cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {table} WHERE {expires} < %s",  # noqa: S608 - names quoted by the backend
            [connection.ops.adapt_datetimefield_value(timezone.now().replace(microsecond=0))],
        )
        purged = cursor.rowcount
    if purged:
        log.info("expired cache entries purged", extra={"purged": purged})
    return 0
