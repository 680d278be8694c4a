"""The Kafka side of the outbox: the relay (outbox -> Kafka), the topic catalog, and the consumer that
runs an app's subscriber from Kafka with the same handlers and dedupe as the in-process bus.

Django's ORM is synchronous, so each process drives aiokafka from its own private event loop and only
touches the database between awaits, never inside a coroutine.
"""
