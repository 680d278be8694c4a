"""The Kafka suite's fixtures (`kafka_bootstrap`, `kafka`, `fresh_group`) live in tests/conftest.py, so
that every suite using the broker shares one per session."""
