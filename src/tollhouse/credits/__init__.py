"""Prepaid credits: the journal, grants, admission, and the Stripe top-ups that fund them."""
