"""The public catalog: what the gateway serves and at what price (docs/catalog.md)."""

from __future__ import annotations

from tollhouse.catalog.service import Listing, listing

__all__ = ["Listing", "listing"]
