"""Governance: customers → teams → virtual keys, budgets, rate limits, admission."""
