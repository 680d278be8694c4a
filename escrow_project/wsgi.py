import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "escrow_project.settings")
application = get_wsgi_application()

# Each worker subscribes to the token revocation stream as it boots, not on its first request.
from apps.gateway.public import start_revocation_stream  # noqa: E402 - needs the apps loaded above

start_revocation_stream()
