"""The overview on a ledger written by the real recorder: tiles equal to the records,
the series by key (the largest eight and the rest), and bad choices shown, not failed."""

from __future__ import annotations

import html as htmllib
import json
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from tests.dashboard.conftest import log_in
from tests.ledger.records import usage_record


def _chart(page: str) -> dict:
    found = re.search(r'<script type="application/json" id="chart-data">(.*?)</script>', page, re.S)
    assert found, page[-2000:]
    return json.loads(htmllib.unescape(found.group(1)))


async def _ledger(app, keys: int) -> list:
    now = datetime.now(UTC).replace(minute=30)
    written = []
    for k in range(keys):
        for n in range(k + 1):  # key k: k + 1 requests, dearer keys higher up
            record = usage_record(
                id=f"req_{k:02d}_{n:02d}", created_at=now - timedelta(hours=n % 5),
                key_id=f"vk_{k:02d}", cost=Decimal(k + 1) / 1000,
                status="refused" if n == 3 else "success", latency_ms=40.0,
            )  # fmt: skip
            app.services.recorder.add(record)
            written.append(record)
    await app.services.recorder.flush()
    return written


async def test_tiles_are_the_records_sums_and_the_key_series_add_up(ui, ui_app):
    written = await _ledger(ui_app, 12)
    await log_in(ui)
    page = await ui.get("/ui?range=24h")
    assert page.status_code == 200
    spend = sum((r.cost for r in written), Decimal(0))
    assert f"${spend:,.2f}" in page.text
    assert f">{len(written)}<" in page.text  # requests
    assert "refused" in page.text  # the errors tile says how many were refused
    by_key = _chart((await ui.get("/ui?range=24h&group=key")).text)
    labels = [s["label"] for s in by_key["series"]]
    assert len(labels) == 9 and labels[-1] == "others"
    # Unknown keys are named as deleted ones, never blank; the dearest first.
    assert labels[0].startswith("deleted key vk_11")
    total = sum(sum(s["values"]) for s in by_key["series"])
    assert abs(total - float(spend)) < 1e-9
    requests = _chart((await ui.get("/ui?range=24h&group=key&metric=requests")).text)
    assert sum(sum(s["values"]) for s in requests["series"]) == len(written)
    overlay = _chart((await ui.get("/ui?range=24h&key=vk_00&key=vk_01")).text)
    assert len(overlay["series"]) == 2


async def test_bad_choices_are_shown_on_the_page(ui):
    await log_in(ui)
    for query, word in (("range=1y", "range"), ("group=color", "group"),
                        ("metric=joy", "metric"), ("since=2026-02-01&until=2026-01-01", "since"),
                        ("since=tomorrow", "since")):  # fmt: skip
        page = await ui.get(f"/ui?{query}")
        assert page.status_code == 400 and word in page.text, query
