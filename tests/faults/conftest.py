"""The fault suites reuse the payments suite's loopback provider fakes."""

from tests.payments.conftest import fake_stripe, local_server  # noqa: F401 - fixtures, found by name
