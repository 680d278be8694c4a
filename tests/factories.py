from __future__ import annotations

from typing import Any

import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from apps.gateway.auth import STAFF_GROUPS


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    is_active = True


class StaffFactory(UserFactory):
    is_staff = True

    @factory.post_generation
    def staff_groups(self, create: bool, extracted: Any, **kwargs: Any) -> None:
        if create:
            for name in extracted or STAFF_GROUPS:
                self.groups.add(Group.objects.get_or_create(name=name)[0])
