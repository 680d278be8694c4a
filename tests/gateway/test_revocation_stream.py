"""With Redis as the cache, each process answers revocation checks from its own copy, kept current by a
pub/sub stream (apps/gateway/revocation.py). A revocation reaches another process's copy through the
stream; a copy whose stream is broken, quiet or was interrupted is not trusted, and the check reads the
shared cache instead (never the database)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.core.cache import cache
from django.test import Client

from apps.gateway import revocation
from apps.gateway.tokens import mint_access_token
from tests.factories import UserFactory
from tests.gateway.conftest import REDIS_URL


def _eventually(check: Callable[[], bool], what: str, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.01)


@pytest.fixture
def another_process(redis_cache: str) -> Iterator[Callable[..., revocation.Mirror]]:
    """make(url=..., **timings) -> a copy with its own subscriber connection, as another serving process has."""
    made: list[revocation.Mirror] = []

    def make(url: str = REDIS_URL, **timings: float) -> revocation.Mirror:
        options = {"ping_seconds": 0.05, "stale_seconds": 5.0, "entry_seconds": 60.0, "max_entries": 1000, **timings}
        mirror = revocation.Mirror(url, revocation._channel(), **options)  # type: ignore[arg-type]
        mirror.start()
        made.append(mirror)
        return mirror

    yield make
    for mirror in made:
        mirror.stop()


def _keys(user_id: int, session_key: str = "a-session-key") -> tuple[str, str]:
    return revocation._session_key(session_key), revocation._user_key(user_id)


def test_a_revocation_reaches_another_process_copy_through_the_stream(another_process):
    other = another_process()
    _eventually(other.live, "the other copy subscribed")
    keys = _keys(41)
    assert other.get_many(keys) == {}
    assert other.get_many(keys) == {}
    assert other.reads == 1  # the second check was answered from the copy

    revocation.revoke_user(41)
    _eventually(lambda: keys[1] in other.get_many(keys), "the user's revocation reached the other copy")
    revocation.revoke_session("a-session-key")
    _eventually(lambda: keys[0] in other.get_many(keys), "the session's revocation reached the other copy")
    assert other.reads == 1  # learnt from the stream, not by reading the cache again


def test_a_copy_whose_stream_cannot_subscribe_reads_the_cache_on_every_check(another_process):
    # The cache answers (this test's Redis), the stream does not (nothing listens on port 9).
    broken = another_process(url="redis://127.0.0.1:9/0")
    keys = _keys(42)
    assert broken.get_many(keys) == {}
    cache.set(keys[1], 123, timeout=60)  # written without an announcement: only a read can see it
    assert broken.get_many(keys) == {keys[1]: 123}
    assert broken.reads == 2
    assert not broken.live()


def test_a_quiet_stream_is_not_trusted(another_process):
    # Pings far apart, so nothing refreshes the copy's last word from the stream during the test.
    quiet = another_process(ping_seconds=30.0, stale_seconds=60.0)
    _eventually(quiet.live, "subscribed")
    keys = _keys(43)
    quiet.get_many(keys)
    quiet.get_many(keys)
    assert quiet.reads == 1
    quiet._heard_at -= 120  # as if nothing had been heard for two minutes
    assert not quiet.live()
    cache.set(keys[1], 7, timeout=60)
    assert quiet.get_many(keys) == {keys[1]: 7}
    assert quiet.reads == 2


def test_a_new_subscription_forgets_everything_read_before_it(another_process):
    other = another_process()
    _eventually(other.live, "subscribed")
    keys = _keys(44)
    other.get_many(keys)
    # A reconnection (redis-py resubscribes by itself) may have lost messages: the copy starts empty.
    other._heard({"type": "subscribe", "data": 1}, time.monotonic())
    cache.set(keys[1], 9, timeout=60)
    assert other.get_many(keys) == {keys[1]: 9}
    assert other.reads == 2


def test_a_revocation_announced_during_a_read_is_kept(another_process, monkeypatch):
    other = another_process()
    _eventually(other.live, "subscribed")
    keys = _keys(45)

    class RacingCache:
        def get_many(self, wanted: list[str]) -> dict[str, Any]:
            other.learn(keys[1], 555)  # the message arrives while the read is on the wire
            return {}  # the read saw the cache before the revocation was written

    monkeypatch.setattr(revocation, "cache", RacingCache())
    assert other.get_many(keys) == {keys[1]: 555}
    assert other.get_many(keys) == {keys[1]: 555}  # and stays: the stale "not revoked" did not replace it


def test_the_serving_process_answers_from_its_copy_and_revocations_still_work(redis_cache, transactional_db):
    person = UserFactory()
    token = mint_access_token(person)
    client = Client()

    def status() -> int:
        return client.get("/api/v1/escrows", HTTP_AUTHORIZATION=f"Bearer {token}").status_code

    assert status() == 200
    mirror = revocation._current_mirror(REDIS_URL)
    assert mirror is not None
    _eventually(mirror.live, "this process subscribed")
    assert status() == 200
    reads = mirror.reads
    assert status() == 200
    assert mirror.reads == reads  # answered from the copy: no round trip to the cache

    person.is_active = False
    person.save()  # this process learns it at once, the others through the stream
    assert status() == 401


def test_the_stream_can_be_turned_off(redis_cache, settings, transactional_db):
    settings.AUTH_REVOCATION_STREAM = False
    assert revocation._current_mirror(REDIS_URL) is None
    person = UserFactory()
    token = mint_access_token(person)
    assert Client().get("/api/v1/escrows", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 200
    person.is_active = False
    person.save()
    assert Client().get("/api/v1/escrows", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 401


def test_the_embedded_default_has_no_stream(transactional_db, monkeypatch):
    monkeypatch.setattr(revocation, "_mirror", None)
    assert revocation._redis_url() is None  # the database's cache table
    revocation.start()
    assert revocation._mirror is None
