"""The fault suites reuse the payments suite's loopback provider fakes and the Kafka suite's broker."""

from tests.kafka.conftest import fresh_group, kafka, kafka_bootstrap  # noqa: F401 - fixtures, found by name
from tests.payments.conftest import fake_stripe, local_server  # noqa: F401 - fixtures, found by name
