"""The sandbox sign-in (pick or create a demo person) exists only outside production configurations;
sign-out ends the session and revokes every token the person was issued."""

from __future__ import annotations

import io
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import Client

from apps.gateway.tokens import mint_access_token
from tests.factories import UserFactory


def signin_client() -> tuple[Client, str]:
    client = Client(enforce_csrf_checks=True)
    client.get("/signin/")
    return client, client.cookies["csrftoken"].value


def signed_in_as(client: Client) -> str | None:
    response = client.get("/deals/")
    if response.status_code != 200:
        return None
    return response.context["user"].username


@pytest.mark.django_db
def test_pick_a_demo_person_and_sign_in() -> None:
    person = UserFactory(username="demo_buyer")
    client, token = signin_client()
    page = client.get("/signin/").content.decode()
    assert "SANDBOX" in page and 'id="signin-as-demo_buyer"' in page

    response = client.post("/signin/sandbox", {"csrfmiddlewaretoken": token, "user_id": str(person.pk)})
    assert response.status_code == 302 and response["Location"] == "/deals/"
    assert signed_in_as(client) == "demo_buyer"
    assert "SANDBOX" in client.get("/deals/").content.decode()


@pytest.mark.django_db
def test_create_a_demo_person() -> None:
    client, token = signin_client()
    response = client.post("/signin/sandbox", {"csrfmiddlewaretoken": token, "username": "new_trader"})
    assert response.status_code == 302
    assert signed_in_as(client) == "new_trader"
    user = get_user_model().objects.get(username="new_trader")
    assert not user.has_usable_password() and not user.is_staff


@pytest.mark.django_db
def test_staff_ids_names_and_garbage_are_refused() -> None:
    staff = UserFactory(username="ops_person", is_staff=True)
    taken = UserFactory(username="taken_name")
    client, token = signin_client()
    assert "signin-as-ops_person" not in client.get("/signin/").content.decode()
    for body in (
        {"user_id": str(staff.pk)},
        {"user_id": "999999"},
        {"user_id": "1; drop"},
        {"user_id": ""},
        {"username": "x"},
        {"username": "has space"},
        {"username": "Taken_Name"},
    ):
        response = client.post("/signin/sandbox", {"csrfmiddlewaretoken": token, **body}, follow=True)
        assert response.status_code == 200, body
        assert signed_in_as(client) is None, body
    assert get_user_model().objects.count() == 2
    assert taken.username == "taken_name"


@pytest.mark.django_db
def test_the_sandbox_signin_needs_the_csrf_token() -> None:
    person = UserFactory()
    client = Client(enforce_csrf_checks=True)
    assert client.post("/signin/sandbox", {"user_id": str(person.pk)}).status_code == 403
    assert signed_in_as(client) is None


@pytest.mark.django_db
@pytest.mark.parametrize("production", [{"HTTPS": True}, {"PAYMENTS_PROVIDER": "live"}])
def test_refused_in_a_production_configuration(settings: Any, production: dict[str, Any]) -> None:
    person = UserFactory()
    client, token = signin_client()
    settings.SANDBOX_SIGNIN = True  # switched on by mistake: still refused
    for name, value in production.items():
        setattr(settings, name, value)
    if settings.HTTPS:
        settings.SECURE_SSL_REDIRECT = False  # the test client speaks plain HTTP
    page = client.get("/signin/").content.decode()
    assert "SANDBOX" not in page
    response = client.post("/signin/sandbox", {"csrfmiddlewaretoken": token, "user_id": str(person.pk)})
    assert response.status_code == 403
    assert signed_in_as(client) is None


def test_check_deploy_reports_a_sandbox_signin_left_on(settings: Any) -> None:
    settings.SANDBOX_SIGNIN = True
    with pytest.raises(SystemCheckError, match="web.E001"):
        call_command("check", "--deploy", "--fail-level", "ERROR", stdout=io.StringIO(), stderr=io.StringIO())
    settings.SANDBOX_SIGNIN = False
    out = io.StringIO()
    try:
        call_command("check", "--deploy", "--fail-level", "ERROR", stdout=out, stderr=io.StringIO())
    except SystemCheckError as exc:  # other deploy findings of a dev configuration may be errors too
        assert "web.E001" not in str(exc)
    assert "web.E001" not in out.getvalue()


def test_sandbox_signin_defaults_off_in_production_configurations() -> None:
    import subprocess
    import sys

    code = "import django,os;django.setup();from django.conf import settings;print(settings.SANDBOX_SIGNIN)"
    for env in ({"HTTPS": "1"}, {"PAYMENTS_PROVIDER": "live"}, {}):
        out = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={
                **__import__("os").environ,
                "DJANGO_SETTINGS_MODULE": "escrow_project.settings",
                "HTTPS": "",
                "PAYMENTS_PROVIDER": "",
                **env,
            },
        ).stdout.strip()
        assert out == ("True" if not env else "False"), env


def test_sign_out_ends_the_session_and_revokes_tokens(transactional_db: None) -> None:
    person = UserFactory(username="leaving")
    api_token = mint_access_token(person)
    api = Client()
    assert api.get("/api/v1/escrows", HTTP_AUTHORIZATION=f"Bearer {api_token}").status_code == 200
    other = UserFactory(username="staying")
    other_token = mint_access_token(other)

    client, token = signin_client()
    client.post("/signin/sandbox", {"csrfmiddlewaretoken": token, "user_id": str(person.pk)})
    assert signed_in_as(client) == "leaving"
    token = client.cookies["csrftoken"].value
    response = client.post("/signout", {"csrfmiddlewaretoken": token})
    assert response.status_code == 302
    assert signed_in_as(client) is None
    assert api.get("/api/v1/escrows", HTTP_AUTHORIZATION=f"Bearer {api_token}").status_code == 401
    # someone else's tokens are untouched, and a token minted after the sign-out works
    assert api.get("/api/v1/escrows", HTTP_AUTHORIZATION=f"Bearer {other_token}").status_code == 200
    assert api.get("/api/v1/escrows", HTTP_AUTHORIZATION=f"Bearer {mint_access_token(person)}").status_code == 200


def test_sign_out_needs_a_post_with_the_csrf_token(transactional_db: None) -> None:
    person = UserFactory()
    api_token = mint_access_token(person)
    client = Client(enforce_csrf_checks=True)
    client.force_login(person)
    assert client.get("/signout").status_code == 405
    assert client.post("/signout").status_code == 403
    assert signed_in_as(client) == person.username
    assert Client().get("/api/v1/escrows", HTTP_AUTHORIZATION=f"Bearer {api_token}").status_code == 200


def test_an_app_client_signs_in_under_allauth_and_sign_out_ends_its_token(transactional_db: None) -> None:
    person = UserFactory(username="app_user")
    person.set_password("a long enough password 42")
    person.save()
    app = Client()
    response = app.post(
        "/_allauth/app/v1/auth/login",
        {"username": "app_user", "password": "a long enough password 42"},
        content_type="application/json",
    )
    assert response.status_code == 200, response.content
    access = response.json()["meta"]["access_token"]
    assert app.get("/api/v1/escrows", HTTP_AUTHORIZATION=f"Bearer {access}").status_code == 200
    # nobody signs up with a password here
    signup = app.post(
        "/_allauth/app/v1/auth/signup",
        {"username": "newcomer", "password": "another long password 42"},
        content_type="application/json",
    )
    assert signup.status_code == 403
    assert not get_user_model().objects.filter(username="newcomer").exists()

    browser = Client(enforce_csrf_checks=True)
    browser.force_login(person)
    browser.get("/deals/")
    browser.post("/signout", {"csrfmiddlewaretoken": browser.cookies["csrftoken"].value})
    assert app.get("/api/v1/escrows", HTTP_AUTHORIZATION=f"Bearer {access}").status_code == 401
