from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from apps.gateway import evidence_views, notification_views, payout_views, views
from apps.gateway.metrics import metrics_view

urlpatterns = [
    path("escrows", views.EscrowCollection.as_view(), name="escrow-list"),
    path("escrows/<uuid:escrow_id>", views.EscrowDetail.as_view(), name="escrow-detail"),
    path("escrows/<uuid:escrow_id>/events", views.EscrowEvents.as_view(), name="escrow-events"),
    path("escrows/<uuid:escrow_id>/accept", views.AcceptEscrow.as_view(), name="escrow-accept"),
    path("escrows/<uuid:escrow_id>/decline", views.DeclineEscrow.as_view(), name="escrow-decline"),
    path("escrows/<uuid:escrow_id>/deliver", views.DeliverEscrow.as_view(), name="escrow-deliver"),
    path("escrows/<uuid:escrow_id>/release", views.ReleaseEscrow.as_view(), name="escrow-release"),
    path("escrows/<uuid:escrow_id>/cancel", views.CancelEscrow.as_view(), name="escrow-cancel"),
    path("escrows/<uuid:escrow_id>/dispute", views.DisputeEscrow.as_view(), name="escrow-dispute"),
    path("escrows/<uuid:escrow_id>/resolve", views.ResolveEscrow.as_view(), name="escrow-resolve"),
    path("escrows/<uuid:escrow_id>/evidence", evidence_views.EscrowEvidence.as_view(), name="escrow-evidence"),
    path("sandbox/escrows/<uuid:escrow_id>/pay", views.SandboxPay.as_view(), name="sandbox-pay"),
    path("payout-destination", payout_views.PayoutDestination.as_view(), name="payout-destination"),
    path("payout-destination/onboarding", payout_views.PayoutOnboarding.as_view(), name="payout-onboarding"),
    path("webhooks/stripe", views.stripe_webhook, name="webhook-stripe"),
    path("webhooks/custodian", views.custodian_webhook, name="webhook-custodian"),
    path("me/discord-link", notification_views.DiscordLinkView.as_view(), name="me-discord-link"),
    path(
        "me/notification-preferences", notification_views.PreferencesView.as_view(), name="me-notification-preferences"
    ),
    path("health", views.Health.as_view(), name="health"),
    path("ready", views.Ready.as_view(), name="ready"),
    path("metrics", metrics_view, name="metrics"),
    path("schema", SpectacularAPIView.as_view(authentication_classes=[], permission_classes=[]), name="schema"),
    # GET only: DRF's OPTIONS answer cannot be rendered by the Swagger UI's HTML renderer (it was a 500).
    path(
        "docs",
        SpectacularSwaggerView.as_view(
            url_name="schema", authentication_classes=[], permission_classes=[], http_method_names=["get", "head"]
        ),
        name="docs",
    ),
    path(
        "redoc",
        SpectacularRedocView.as_view(
            url_name="schema",
            authentication_classes=[],
            permission_classes=[],
            http_method_names=["get", "head"],
            template_name="gateway/redoc.html",
        ),
        name="redoc",
    ),
]
