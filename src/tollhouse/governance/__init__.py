"""Governance: customers → teams → virtual keys, their budgets and rate limits; the
admin API and CLI that manage them. The engine that enforces them is ``tollhouse.admission``."""
