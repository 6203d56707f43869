"""Prices: the catalog shipped as data, operator overrides, and the unknown-price rule."""

from __future__ import annotations

from tollhouse.pricing.catalog import Catalog, ModelPrice, load_catalog

__all__ = ["Catalog", "ModelPrice", "load_catalog"]
