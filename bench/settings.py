"""The project's settings with one extra route for the framework ceiling (bench/urls.py)."""

from escrow_project.settings import *  # noqa: F403

ROOT_URLCONF = "bench.urls"
