"""Admission: the engine that decides, on the request path, whether a keyed request may
go out, and holds its worst case until it has settled (docs/admission.md).

::

    engine.py     Admission: authenticate → allowed_targets → admit → settle | release
    access.py     the key a request presents; allow-lists of models and providers
    plans.py      per key and snapshot: the counters its requests claim, in check order
    meter.py      Counter, CounterId, and the Meter Protocol every strategy implements
    memory.py     MemoryMeter: counters in this process (embedded)
    redis.py      RedisMeter: counters in Redis for every replica (scaled out)
    functions.py  the Redis functions of meter.lua, one method each
    rebuild.py    committed values rebuilt from the ledger (tollhouse.ledger.totals)
    snapshot.py   keys, teams, customers, budgets and rate limits, read whole
    refusals.py   the wording of every refusal
    headers.py    OpenAI's x-ratelimit-* headers
    views.py      what the admin API shows of the counters

The strategy is chosen once, at start-up (``app.py``): ``MemoryMeter`` unless
``redis_url`` is set. The engine calls the ``Meter`` Protocol and never asks which one
it has; ``tests/admission/test_meter_contract.py`` holds both to the same guarantees.
Alerts leave through an ``AlertSink`` passed in at construction, so this package does
not import ``tollhouse.alerts``.

**Where credits go (the next issue).** Prepaid credits will be one more kind of counter,
``("credits", wallet_id)``, claimed in the same all-or-nothing reservation as budgets
and rate limits, never in a second call. The seam is in four places:

- ``meter.Kind`` gains ``"credits"``; a credit counter has no window (like
  ``parallel``) and its limit is the balance;
- ``plans.plan_for`` appends the key's wallet to ``Plan.counters`` after the budgets,
  and ``plans.KIND_INDEX`` picks its amount (the cost bound) from the same amounts;
- ``MemoryMeter.reserve`` and ``tollhouse_reserve`` in ``meter.lua`` already check
  every claimed counter in one loop and reserve all or none: a credit counter is one
  more entry, so both strategies stay atomic with no new call;
- ``rebuild.LedgerTotals`` maps the kind to a ledger total (consumption net of
  top-ups), and ``refusals.over_limit`` words the refusal.
"""

from __future__ import annotations

from tollhouse.admission.engine import Admission, AlertSink
from tollhouse.admission.memory import MemoryMeter
from tollhouse.admission.meter import Counter, CounterId, Meter, MeterUnreachable, Refusal
from tollhouse.admission.rebuild import LedgerTotals

__all__ = [
    "Admission",
    "AlertSink",
    "Counter",
    "CounterId",
    "LedgerTotals",
    "MemoryMeter",
    "Meter",
    "MeterUnreachable",
    "Refusal",
]
