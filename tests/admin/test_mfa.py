"""Staff second factor on the admin login (/admin/login/): allauth.mfa TOTP, through the Django test client."""

from __future__ import annotations

import time
from io import StringIO
from typing import Any

import pytest
from allauth.mfa import app_settings as mfa_settings
from allauth.mfa.models import Authenticator
from django.core.cache import cache
from django.core.management import CommandError, call_command
from django.test import Client

from apps.gateway.mfa import current_code, enroll_totp
from tests.admin.conftest import PASSWORD
from tests.factories import UserFactory

NEXT = "/admin/escrow/escrow/disputes/"


@pytest.fixture
def enrolled(agent: Any) -> Any:
    enroll_totp(user=agent)
    return agent


def fresh_code(user: Any) -> str:
    """The current code, taken early enough in its time step that it is still valid when the form checks it."""
    period = mfa_settings.TOTP_PERIOD
    if time.time() % period > period - 3:
        time.sleep(period - time.time() % period + 0.1)
    return current_code(user=user)


def post_login(user: Any, *, password: str = PASSWORD, code: str | None = None) -> tuple[Client, Any]:
    client = Client()
    data = {"username": user.username, "password": password, "next": NEXT}
    if code is not None:
        data["otp_code"] = code
    return client, client.post(f"/admin/login/?next={NEXT}", data)


def assert_refused(client: Client, response: Any, message: str) -> None:
    assert response.status_code == 200
    assert message in response.content.decode()
    assert "_auth_user_id" not in client.session
    assert client.get(NEXT).status_code == 302  # still sent to the login page


def test_password_and_current_code_log_in(enrolled: Any) -> None:
    client, response = post_login(enrolled, code=fresh_code(enrolled))
    assert response.status_code == 302 and response["Location"] == NEXT
    assert client.session["_auth_user_id"] == str(enrolled.pk)
    assert client.get(NEXT).status_code == 200
    assert Authenticator.objects.get(user=enrolled).last_used_at is not None


def test_the_login_page_asks_for_the_code(enrolled: Any) -> None:
    page = Client().get("/admin/login/").content.decode()
    assert 'name="otp_code"' in page and 'autocomplete="one-time-code"' in page


@pytest.mark.parametrize("code", ["000000", "12345a", "123"])
def test_a_wrong_code_is_refused(enrolled: Any, code: str) -> None:
    if code == current_code(user=enrolled):
        code = "999999" if code != "999999" else "000001"
    client, response = post_login(enrolled, code=code)
    assert_refused(client, response, "")
    assert response.context["form"].errors
    assert Authenticator.objects.get(user=enrolled).last_used_at is None


def test_a_missing_code_is_refused(enrolled: Any) -> None:
    client, response = post_login(enrolled)
    assert_refused(client, response, "Enter the 6-digit code from your authenticator app.")
    client, response = post_login(enrolled, code="")
    assert_refused(client, response, "Enter the 6-digit code from your authenticator app.")


def test_a_used_code_is_refused(enrolled: Any) -> None:
    code = fresh_code(enrolled)
    first, response = post_login(enrolled, code=code)
    assert response.status_code == 302
    again, response = post_login(enrolled, code=code)
    assert_refused(again, response, "That authenticator code is wrong, expired or already used.")


def test_a_used_code_is_refused_by_another_process(enrolled: Any) -> None:
    """allauth's own guard is the cache, which is per process; the step kept on the row still refuses it."""
    code = fresh_code(enrolled)
    _, response = post_login(enrolled, code=code)
    assert response.status_code == 302
    cache.clear()  # as another worker process would see it: no used-code mark
    again, response = post_login(enrolled, code=code)
    assert_refused(again, response, "That authenticator code is wrong, expired or already used.")


def test_a_wrong_password_does_not_use_up_the_code(enrolled: Any) -> None:
    code = fresh_code(enrolled)
    client, response = post_login(enrolled, password="not the password", code=code)
    assert_refused(client, response, "Please enter the correct username and password")
    client, response = post_login(enrolled, code=code)
    assert response.status_code == 302 and client.session["_auth_user_id"] == str(enrolled.pk)


def test_staff_without_totp_are_refused_and_told_to_enroll(agent: Any) -> None:
    client, response = post_login(agent, code="123456")
    assert_refused(client, response, "manage.py enroll_totp")
    assert not Authenticator.objects.exists()


def test_staff_without_totp_log_in_when_mfa_is_not_required(agent: Any, settings: Any) -> None:
    settings.ADMIN_REQUIRE_MFA = False
    client, response = post_login(agent)
    assert response.status_code == 302 and client.session["_auth_user_id"] == str(agent.pk)


def test_an_enrolled_user_needs_the_code_even_when_mfa_is_not_required(enrolled: Any, settings: Any) -> None:
    settings.ADMIN_REQUIRE_MFA = False
    client, response = post_login(enrolled)
    assert_refused(client, response, "Enter the 6-digit code from your authenticator app.")


def test_enroll_totp_prints_the_uri_once_and_stores_the_secret_encrypted(agent: Any) -> None:
    out = StringIO()
    call_command("enroll_totp", agent.username, stdout=out)
    uri = out.getvalue().strip()
    assert uri.startswith(f"otpauth://totp/{agent.username}?secret=")
    secret = uri.split("secret=")[1].split("&")[0]
    stored = Authenticator.objects.get(user=agent, type=Authenticator.Type.TOTP).data["secret"]
    assert secret not in stored and len(stored) > len(secret)
    # a second enrollment would strand the device already set up: refused, nothing replaced
    with pytest.raises(CommandError, match="already has a TOTP authenticator"):
        call_command("enroll_totp", agent.username, stdout=StringIO())
    assert Authenticator.objects.get(user=agent).data["secret"] == stored


def test_enroll_totp_refuses_unknown_and_non_staff_users(transactional_db: None) -> None:
    customer = UserFactory(username="just_a_buyer", is_staff=False)
    with pytest.raises(CommandError, match="not staff"):
        call_command("enroll_totp", customer.username, stdout=StringIO())
    with pytest.raises(CommandError, match="no user"):
        call_command("enroll_totp", "nobody_here", stdout=StringIO())
    assert not Authenticator.objects.exists()
