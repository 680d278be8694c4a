"""The web app's pages, mounted at `/`."""

from django.urls import include, path

from apps.web import views

app_name = "web"

urlpatterns = [
    path("", views.home, name="home"),
    path("signin/", views.signin_page, name="signin"),
    path("signin/sandbox", views.signin_sandbox, name="signin-sandbox"),
    path("signout", views.signout, name="signout"),
    path("deals/", views.deal_list, name="deals"),
    path("deals/new", views.deal_new, name="deal-new"),
    path("deals/<uuid:escrow_id>", views.deal_page, name="deal"),
    path("deals/<uuid:escrow_id>/accept", views.accept, name="deal-accept"),
    path("deals/<uuid:escrow_id>/decline", views.decline, name="deal-decline"),
    path("deals/<uuid:escrow_id>/deliver", views.deliver, name="deal-deliver"),
    path("deals/<uuid:escrow_id>/release", views.release, name="deal-release"),
    path("deals/<uuid:escrow_id>/cancel", views.cancel, name="deal-cancel"),
    path("deals/<uuid:escrow_id>/dispute", views.dispute, name="deal-dispute"),
    path("deals/<uuid:escrow_id>/evidence", views.evidence, name="deal-evidence"),
    path("settings/payout", views.payout_settings, name="payout-settings"),
    path("settings/payout/onboarding", views.payout_onboarding, name="payout-onboarding"),
    path("settings/notifications", views.notification_settings, name="notification-settings"),
    path("", include("apps.web.checkout_urls")),
]
