"""Webhooks: the outbound HTTP client, the outbox and its deliverer."""
