"""The fault suites reuse the payments suite's loopback provider fakes and the Kafka broker (tests/conftest.py)."""

from tests.payments.conftest import fake_stripe, local_server  # noqa: F401 - fixtures, found by name
