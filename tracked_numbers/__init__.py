"""Tracked numbers: routing plans, business hours, provider provisioning."""
