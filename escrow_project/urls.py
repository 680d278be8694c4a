from django.contrib import admin
from django.urls import include, path

from apps.gateway.public import MFAAdminAuthenticationForm

# The admin login asks staff for their TOTP code (allauth.mfa); see apps/gateway/mfa.py.
admin.site.login_form = MFAAdminAuthenticationForm
admin.site.login_template = "admin/mfa_login.html"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/discord/", include("apps.discord.urls")),
    path("api/v1/", include("apps.gateway.urls")),
    # allauth: headless sign-in for browsers and app clients (JWT), and Discord's OAuth callback.
    path("_allauth/", include("allauth.headless.urls")),
    path("accounts/", include("allauth.urls")),
    path("", include("apps.web.urls")),
]

handler400 = "apps.gateway.views.bad_request"
handler404 = "apps.gateway.views.not_found"
handler500 = "apps.gateway.views.server_error"
