"""Authentication reads no table: the token's signature and claims, then one read of the shared cache for
revocations (Redis here, as in production). Sign-out and deactivation still end a token within its life,
and a cache that cannot be read refuses the request rather than falling back to the database."""

from __future__ import annotations

import datetime
from typing import Any

import jwt
from allauth.headless.tokens.strategies.jwt import internal
from django.contrib.auth.models import Group
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps.gateway.tokens import mint_access_token
from tests.factories import UserFactory
from tests.helpers import create_escrow

AUTH_TABLES = ("django_session", "auth_user", "usersessions", "escrow_cache", "auth_group")


def _get(token: str, path: str = "/api/v1/escrows") -> Any:
    return Client().get(path, HTTP_AUTHORIZATION=f"Bearer {token}")


def test_an_authenticated_get_reads_no_auth_table(redis_cache, api_client, buyer, seller):
    escrow_id = create_escrow(api_client(buyer), seller=seller)["escrow_id"]
    token = mint_access_token(buyer)
    with CaptureQueriesContext(connection) as captured:
        response = _get(token, f"/api/v1/escrows/{escrow_id}")
    assert response.status_code == 200, response.content
    sql = [q["sql"] for q in captured.captured_queries]
    assert not [s for s in sql if any(table in s for table in AUTH_TABLES)], sql
    # every query is the read's own: the escrow's view, and the buyer's payment instructions
    assert all("projections_" in s or "payments_" in s for s in sql), sql


def test_a_staff_members_get_reads_no_auth_table_either(redis_cache, api_client, buyer, seller, staff):
    escrow_id = create_escrow(api_client(buyer), seller=seller)["escrow_id"]
    token = mint_access_token(staff)
    with CaptureQueriesContext(connection) as captured:
        response = _get(token, f"/api/v1/escrows/{escrow_id}")
    assert response.status_code == 200, response.content
    assert response.json()["actions"] == ["cancel"]  # staff may cancel a deal awaiting funds
    sql = [q["sql"] for q in captured.captured_queries]
    assert not [s for s in sql if any(table in s for table in AUTH_TABLES)], sql


def test_sign_out_through_allauth_ends_the_token_at_once(redis_cache, transactional_db):
    person = UserFactory(username="app_user")
    person.set_password("a long enough password 42")
    person.save()
    login = Client().post(
        "/_allauth/app/v1/auth/login",
        {"username": "app_user", "password": "a long enough password 42"},
        content_type="application/json",
    )
    assert login.status_code == 200, login.content
    access = login.json()["meta"]["access_token"]
    assert _get(access).status_code == 200
    other = mint_access_token(person)  # another session of the same person

    out = Client().delete("/_allauth/app/v1/auth/session", HTTP_AUTHORIZATION=f"Bearer {access}")
    assert out.status_code == 401, out.content  # allauth's answer to a completed sign-out

    assert _get(access).status_code == 401
    assert _get(other).status_code == 200  # only that session ended


def test_deactivation_ends_every_token_and_reactivation_lets_new_ones_work(redis_cache, transactional_db):
    person = UserFactory(username="leaving")
    tokens = [mint_access_token(person) for _ in range(2)]
    assert all(_get(t).status_code == 200 for t in tokens)
    person.is_active = False
    person.save()
    assert [_get(t).status_code for t in tokens] == [401, 401]
    person.is_active = True
    person.save()
    assert [_get(t).status_code for t in tokens] == [401, 401]  # still revoked: issued before
    assert _get(mint_access_token(person)).status_code == 200


def test_leaving_the_staff_groups_ends_the_staff_token(redis_cache, transactional_db, staff):
    token = mint_access_token(staff)
    assert _get(token).status_code == 200
    staff.groups.remove(Group.objects.get(name="ops"))
    assert _get(token).status_code == 401
    assert _get(mint_access_token(staff)).status_code == 200


def test_a_password_change_ends_earlier_tokens(redis_cache, transactional_db):
    person = UserFactory()
    token = mint_access_token(person)
    person.set_password("a new long enough password 42")
    person.save()
    assert _get(token).status_code == 401


def test_a_token_that_outlives_the_revocation_memory_is_refused(redis_cache, settings, transactional_db):
    person = UserFactory()
    settings.AUTH_TOKEN_MAX_LIFETIME_SECONDS = 600
    assert _get(mint_access_token(person, expires_in=600)).status_code == 200
    assert _get(mint_access_token(person, expires_in=601)).status_code == 401


def test_a_token_without_a_session_id_that_decrypts_is_refused(redis_cache, transactional_db):
    person = UserFactory()
    real = mint_access_token(person)
    config = internal._get_jwt_config()
    payload = jwt.decode(real, options={"verify_signature": False})
    forged = jwt.encode({**payload, "sid": "bm90IGEgc2Vzc2lvbg=="[:8]}, config.signing_key, algorithm=config.algorithm)
    assert _get(forged).status_code == 401


def test_an_unreadable_cache_refuses_the_request_and_reads_no_table(settings, transactional_db):
    person = UserFactory()
    token = mint_access_token(person)
    # Nothing listens on port 9 of the loopback: every cache read fails at once.
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://127.0.0.1:9/0"}
    }
    with CaptureQueriesContext(connection) as captured:
        response = _get(token)
    assert response.status_code == 503, response.content
    assert response.json()["code"] == "auth_unavailable"
    assert response["Retry-After"]
    assert captured.captured_queries == []


def test_expiry_is_still_checked(redis_cache, transactional_db):
    person = UserFactory()
    real = mint_access_token(person)
    config = internal._get_jwt_config()
    payload = jwt.decode(real, options={"verify_signature": False})
    past = int((datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=1)).timestamp())
    expired = jwt.encode({**payload, "exp": past}, config.signing_key, algorithm=config.algorithm)
    assert _get(expired).status_code == 401


def test_a_token_checked_once_is_not_decoded_again_and_still_expires(redis_cache, transactional_db, monkeypatch):
    import dataclasses
    import time

    from apps.gateway import auth

    person = UserFactory()
    token = mint_access_token(person)
    assert _get(token).status_code == 200
    decoded = []
    real_decode = internal.decode_token
    monkeypatch.setattr(internal, "decode_token", lambda *a, **k: decoded.append(1) or real_decode(*a, **k))
    assert _get(token).status_code == 200
    assert decoded == []  # the signature and claims were checked on the first request

    # Its expiry is checked on every use all the same.
    auth._verified[token] = dataclasses.replace(auth._verified[token], expires_at=int(time.time()) - 1)
    assert _get(token).status_code == 401
    assert token not in auth._verified
    # And a revocation ends it as before.
    other = mint_access_token(person)
    assert _get(other).status_code == 200
    person.is_active = False
    person.save()
    assert _get(other).status_code == 401


def _cache_rows(prefix: str) -> int:
    """Rows of the database cache table whose key starts with `prefix` (after Django's ":1:" version
    prefix). The table is not emptied between tests, so a test counts its own keys only."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT COUNT(*) FROM escrow_cache WHERE cache_key LIKE %s", [f"%:{prefix}%"])
        return cursor.fetchone()[0]


def test_the_database_cache_never_culls_a_revocation(transactional_db):
    """The embedded default keeps revocations in the database cache table. Past Django's default of 300
    entries it would cull a third of them in key order ("auth:revoked:..." sorts early), and a signed-out
    token would work again: the table is never culled; the bus worker deletes expired rows instead."""
    from django.core.cache import cache

    from apps.gateway.public import expired_cache_entries_purge

    person = UserFactory()
    token = mint_access_token(person)
    assert _get(token).status_code == 200
    person.is_active = False
    person.save()
    assert _get(token).status_code == 401
    # Many other entries (rate-limit counters and the like), some already expired.
    cache.set_many({f"other:{n}": n for n in range(400)}, timeout=3600)
    cache.set_many({f"stale:{n}": n for n in range(50)}, timeout=-1)
    cache.set("one-more", 1, timeout=3600)  # past MAX_ENTRIES, a set is what culls
    assert _get(token).status_code == 401

    assert (_cache_rows("stale:"), _cache_rows("other:")) == (50, 400)
    assert expired_cache_entries_purge(force=True) == 0  # nothing for the bus
    assert (_cache_rows("stale:"), _cache_rows("other:")) == (0, 400)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT COUNT(*) FROM escrow_cache WHERE expires < %s", [timezone.now() - datetime.timedelta(seconds=1)]
        )
        assert cursor.fetchone()[0] == 0
    assert cache.get("other:399") == 399 and _get(token).status_code == 401
    cache.delete_many([f"other:{n}" for n in range(400)] + ["one-more"])  # the table outlives the test


def test_the_cache_purge_runs_at_most_once_per_interval(transactional_db, settings):
    """The bus worker's clock ticks every few seconds; the purge does its DELETE at most once per
    CACHE_PURGE_EVERY_SECONDS in a process (forced, it always runs)."""
    from django.core.cache import cache

    from apps.gateway.public import expired_cache_entries_purge

    settings.CACHE_PURGE_EVERY_SECONDS = 3600
    expired_cache_entries_purge(force=True)  # the interval starts now
    cache.set_many({f"interval-stale:{n}": n for n in range(3)}, timeout=-1)
    expired_cache_entries_purge()
    assert _cache_rows("interval-stale:") == 3  # within the interval: nothing done
    settings.CACHE_PURGE_EVERY_SECONDS = 0
    expired_cache_entries_purge()
    assert _cache_rows("interval-stale:") == 0  # the interval has passed
