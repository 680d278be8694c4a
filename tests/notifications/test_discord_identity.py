"""The Discord id is the identity: an account is created and linked on first use, never re-pointed."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from apps.notifications.public import DiscordLink, NotificationError, discord_id_for_user, user_for_discord_id
from tests.factories import UserFactory


@pytest.mark.django_db
def test_first_use_creates_an_account_linked_to_the_discord_id() -> None:
    user = user_for_discord_id(discord_user_id=80351110224678912, username_hint="Nelly")

    assert user.username == "nelly"
    assert not user.has_usable_password()
    assert discord_id_for_user(user_id=user.pk) == 80351110224678912


@pytest.mark.django_db
def test_the_same_discord_id_is_the_same_account() -> None:
    first = user_for_discord_id(discord_user_id=42424242, username_hint="trader")
    again = user_for_discord_id(discord_user_id=42424242, username_hint="someone-else")

    assert again.pk == first.pk
    assert get_user_model().objects.count() == 1


@pytest.mark.django_db
def test_a_taken_username_gets_a_suffix_and_a_linked_id_is_never_repointed() -> None:
    existing = UserFactory(username="trader")
    DiscordLink.objects.create(user=existing, discord_user_id=1111)

    newcomer = user_for_discord_id(discord_user_id=2222, username_hint="trader")

    assert newcomer.username == "trader_2"
    assert user_for_discord_id(discord_user_id=1111).pk == existing.pk
    assert DiscordLink.objects.get(discord_user_id=1111).user_id == existing.pk


@pytest.mark.django_db
@pytest.mark.parametrize("bad", [0, -5])
def test_a_non_snowflake_is_refused(bad: int) -> None:
    with pytest.raises(NotificationError):
        user_for_discord_id(discord_user_id=bad)
    assert get_user_model().objects.count() == 0
