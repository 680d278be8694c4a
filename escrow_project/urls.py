from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("apps.gateway.urls")),
]

handler400 = "apps.gateway.views.bad_request"
handler404 = "apps.gateway.views.not_found"
handler500 = "apps.gateway.views.server_error"
