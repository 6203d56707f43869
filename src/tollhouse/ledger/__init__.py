"""The usage ledger: one durable record per request, written off the hot path."""

from __future__ import annotations

from tollhouse.ledger.recorder import UsageRecorder
from tollhouse.ledger.schemas import UsageRecord

__all__ = ["UsageRecord", "UsageRecorder"]
