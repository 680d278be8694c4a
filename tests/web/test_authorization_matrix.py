"""Every page of the web app (apps/web/urls.py, checkout's included) against every kind of visitor: the
anonymous are sent to sign in, a stranger gets the 404 page for someone else's deal and changes nothing.
A new page that is not in these tables fails the completeness test."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import get_resolver

from apps.escrow.models import Escrow, EscrowEvent
from tests.gateway.support import settle
from tests.web.conftest import new_deal, post_form

# Deal-scoped pages: method and the other form fields.
DEAL_PAGES: dict[str, tuple[str, dict[str, Any]]] = {
    "deal": ("GET", {}),
    "deal-deliver": ("POST", {}),
    "deal-release": ("POST", {}),
    "deal-cancel": ("POST", {"reason": "mine now"}),
    "deal-dispute": ("POST", {"reason": "mine now"}),
    "deal-evidence": ("POST", {"description": "x"}),
}
# Pages of the signed-in person themselves (GET).
OWN_PAGES = {
    "deals": "/deals/",
    "deal-new": "/deals/new",
    "payout-settings": "/settings/payout",
    "notification-settings": "/settings/notifications",
}
OWN_POSTS = {"payout-onboarding": "/settings/payout/onboarding"}
# Open to anyone: the front door and sign-in, and the checkout pages (their capability link is the authority;
# tested in tests/web/test_checkout.py and tests/payments).
PUBLIC = {
    "home",
    "signin",
    "signin-sandbox",
    "signout",
    "checkout:page",
    "checkout:status",
    "checkout:onboarding-return",
    "checkout:onboarding-refresh",
    "checkout:onboarding-sandbox",
}
ACCEPTANCE = {"deal-accept", "deal-decline"}  # deal-scoped too, once two-sided deals exist


def web_url_names() -> set[str]:
    resolver = get_resolver()
    names: set[str] = set()
    web = resolver.namespace_dict["web"][1]
    for pattern in web.url_patterns:
        if getattr(pattern, "name", None):
            names.add(pattern.name)
        for inner in getattr(pattern, "url_patterns", []):
            namespace = getattr(pattern, "namespace", None)
            if inner.name:
                names.add(f"{namespace}:{inner.name}" if namespace else inner.name)
    return names


def test_every_web_page_is_in_the_matrix() -> None:
    assert {"deal", "deals", "checkout:page"} <= web_url_names()
    covered = set(DEAL_PAGES) | set(OWN_PAGES) | set(OWN_POSTS) | PUBLIC | ACCEPTANCE
    assert web_url_names() - covered == set()


@pytest.fixture
def deal(browser_of: Any, buyer: Any, seller: Any) -> str:
    return new_deal(browser_of(buyer), counterparty=seller.username)


def test_a_stranger_gets_the_404_page_everywhere_on_someone_elses_deal(
    browser_of: Any, deal: str, stranger: Any
) -> None:
    as_stranger = browser_of(stranger)
    events = EscrowEvent.objects.count()
    pages = dict(DEAL_PAGES)
    for name in ACCEPTANCE & web_url_names():
        pages[name] = ("POST", {})
    for name, (method, body) in pages.items():
        path = f"/deals/{deal}" + ("" if name == "deal" else "/" + name.removeprefix("deal-"))
        response = as_stranger.get(path) if method == "GET" else post_form(as_stranger, path, body)
        assert response.status_code == 404, name
        assert b"Not found" in response.content, name
    settle()
    assert EscrowEvent.objects.count() == events
    assert Escrow.objects.get(pk=deal).state == "AWAIT_ACCEPTANCE"


def test_the_anonymous_are_sent_to_sign_in(deal: str) -> None:
    anonymous = Client()
    paths = [f"/deals/{deal}"] + list(OWN_PAGES.values())
    for path in paths:
        response = anonymous.get(path)
        assert response.status_code == 302 and response["Location"].startswith("/signin/?next="), path
    events = EscrowEvent.objects.count()
    for name in DEAL_PAGES:
        if DEAL_PAGES[name][0] == "POST":
            path = f"/deals/{deal}/{name.removeprefix('deal-')}"
            response = anonymous.post(path, {})
            assert response.status_code == 302 and response["Location"].startswith("/signin/"), path
    for path in OWN_POSTS.values():
        assert anonymous.post(path).status_code == 302
    assert EscrowEvent.objects.count() == events


def test_each_party_sees_their_own_deal(browser_of: Any, deal: str, buyer: Any, seller: Any) -> None:
    for person in (buyer, seller):
        assert browser_of(person).get(f"/deals/{deal}").status_code == 200
