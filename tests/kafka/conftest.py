"""The Kafka suite's fixtures (`kafka_bootstrap`, `kafka`, `fresh_group`) live in tests/conftest.py, so
that every suite using the broker shares one per session."""

from tests.payments.conftest import fake_stripe  # noqa: E402, F401 - the live-rail fake, for the split-out payments app
