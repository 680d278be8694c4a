"""The buyer's checkout pages (capability links) and the payout onboarding pages, under the web app."""

from django.urls import path

from apps.web import checkout

app_name = "checkout"

urlpatterns = [
    path("checkout/<str:token>", checkout.checkout_page, name="page"),
    path("checkout/<str:token>/status", checkout.checkout_status, name="status"),
]

urlpatterns += [
    path("payouts/onboarding/return/<str:token>", checkout.onboarding_return, name="onboarding-return"),
    path("payouts/onboarding/refresh/<str:token>", checkout.onboarding_refresh, name="onboarding-refresh"),
    path("payouts/onboarding/sandbox/<str:token>", checkout.onboarding_sandbox, name="onboarding-sandbox"),
]
