"""The web app answers at `/`."""

from __future__ import annotations

import pytest
from django.test import Client


@pytest.mark.django_db
def test_the_home_page_is_served() -> None:
    response = Client().get("/")

    assert response.status_code == 200
    assert b"Escrow" in response.content
