"""Test support: real servers (PostgreSQL, Redis), signed webhooks, configuration fixtures."""
