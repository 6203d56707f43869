"""The request log's page, fragments and export on a ledger written by the real recorder:
filters, cursor pages, the drawer, the tail's fragment and a CSV of every record."""

from __future__ import annotations

import csv
import io
import re
from datetime import timedelta
from decimal import Decimal

from tests.dashboard.conftest import log_in
from tests.ledger.records import T0, usage_record

from tollhouse.dashboard.logs import EXPORT_BATCH, PAGE_SIZE


async def _ledger(app, count: int, **fields) -> list:
    written = []
    for n in range(count):
        record = usage_record(
            id=f"req_{n:05d}",
            created_at=T0 + timedelta(seconds=n),
            cost=Decimal(n) / Decimal(1_000_000),
            status="error" if n % 10 == 0 else "success",
            http_status=502 if n % 10 == 0 else 200,
            model="gpt-4o" if n % 3 == 0 else "gpt-4o-mini",
            **fields,
        )
        app.services.recorder.add(record)
        written.append(record)
    await app.services.recorder.flush()
    return written


def _ids(html: str) -> list[str]:
    return re.findall(r'data-testid="log-row" data-id="([^"]+)"', html)


async def test_filters_and_cursor_pages_walk_the_ledger_newest_first(ui, ui_app):
    await _ledger(ui_app, 130)
    await log_in(ui)
    seen, path = [], "/ui/logs?model=gpt-4o-mini"
    while path:
        page = await ui.get(path)
        assert page.status_code == 200
        assert len(_ids(page.text)) <= PAGE_SIZE
        seen += _ids(page.text)
        older = re.search(r'href="(/ui/logs\?[^"]*cursor=[^"]+)" data-testid="older"', page.text)
        path = older.group(1).replace("&amp;", "&") if older else ""
        assert "tail" not in path
    expected = [f"req_{n:05d}" for n in reversed(range(130)) if n % 3 != 0]
    assert seen == expected
    errors = _ids((await ui.get("/ui/logs?status=error")).text)
    assert errors == [f"req_{n:05d}" for n in reversed(range(0, 130, 10))]
    costly = _ids((await ui.get("/ui/logs?min_cost=0.000120&max_cost=0.000125")).text)
    assert costly == [f"req_{n:05d}" for n in (125, 124, 123, 122, 121, 120)]
    since = (T0 + timedelta(seconds=125)).strftime("%Y-%m-%dT%H:%M:%S")
    recent = _ids((await ui.get(f"/ui/logs?since={since}")).text)
    assert recent == [f"req_{n:05d}" for n in (129, 128, 127, 126, 125)]


async def test_a_bad_filter_is_shown_on_the_page_not_a_failure(ui):
    await log_in(ui)
    for query, field in (("min_cost=cheap", "min_cost"), ("since=yesterday", "since"),
                         ("status=lost", "status"), ("cursor=zzz", "cursor")):  # fmt: skip
        page = await ui.get(f"/ui/logs?{query}")
        assert page.status_code == 400 and 'data-testid="error"' in page.text, query
        assert field in page.text
    fragment = await ui.get("/ui/logs/rows?min_cost=cheap")
    assert fragment.status_code == 400


async def test_the_drawer_shows_one_record_exactly(ui, ui_app):
    await _ledger(ui_app, 3)
    await log_in(ui)
    drawer = await ui.get("/ui/logs/req_00002")
    assert drawer.status_code == 200 and "<html" not in drawer.text
    assert "$0.000002" in drawer.text and "gpt-4o-mini" in drawer.text
    assert (await ui.get("/ui/logs/req_nope")).status_code == 404


async def test_the_tail_fragment_is_the_first_page_alone(ui, ui_app):
    await _ledger(ui_app, 60)
    await log_in(ui)
    page = await ui.get("/ui/logs?tail=1&status=success")
    assert 'hx-trigger="every 5s"' in page.text
    assert 'hx-get="/ui/logs/rows?status=success"' in page.text
    rows = await ui.get("/ui/logs/rows?status=success")
    assert "<html" not in rows.text
    assert _ids(rows.text) == _ids(page.text)[:PAGE_SIZE]
    deeper = await ui.get("/ui/logs?tail=1&cursor=" + _older_cursor(page.text))
    assert "hx-trigger" not in deeper.text  # a later page is not tailed


def _older_cursor(html: str) -> str:
    found = re.search(r"cursor=([^\"&]+)", html)
    assert found
    return found.group(1)


async def test_the_csv_export_streams_every_record_of_the_filters(ui, ui_app):
    count = EXPORT_BATCH * 2 + 7
    written = await _ledger(ui_app, count)
    await log_in(ui)
    response = await ui.get("/ui/logs.csv")
    assert response.status_code == 200
    assert response.headers["content-disposition"].startswith("attachment")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [r["id"] for r in rows] == [r.id for r in reversed(written)]
    by_id = {r.id: r for r in written}
    for row in rows:
        record = by_id[row["id"]]
        assert Decimal(row["cost"]) == record.cost
        assert row["streamed"] == "false" and row["key_name"] == "—"
        assert row["created_at"].endswith("Z")
    errors = list(csv.DictReader(io.StringIO((await ui.get("/ui/logs.csv?status=error")).text)))
    assert len(errors) == len([r for r in written if r.status == "error"])
    assert (await ui.get("/ui/logs.csv?max_cost=x")).status_code == 400


async def test_a_page_the_database_gives_up_on_is_a_notice_not_a_failure(make_settings, pg_url):
    """Filters no index serves (cost) that match nothing make Postgres read the whole
    ledger; past dashboard_query_timeout_s the page says to narrow them (no 5xx)."""
    import httpx
    from sqlalchemy import text
    from tests.dashboard.conftest import ADMIN_KEY, VIEWER_KEY

    from tollhouse.app import create_app

    settings = make_settings(database_url=pg_url, admin_key=ADMIN_KEY, viewer_key=VIEWER_KEY,
                             dashboard_query_timeout_s=0.02)  # fmt: skip
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        async with app.services.engine.begin() as conn:
            await conn.execute(text("SET LOCAL statement_timeout = 0"))
            await conn.execute(text(
                "INSERT INTO usage_records (id, created_at, endpoint, provider, model, "
                "prompt_tokens, completion_tokens, cached_tokens, cost, priced, latency_ms, "
                "status, http_status, streamed) SELECT 'req_' || g, now() - g * interval '1 s', "
                "'chat', 'openai', 'gpt-4o-mini', 1, 1, 0, 0.000001, true, 5, 'success', 200, "
                "false FROM generate_series(1, 400000) g"))  # fmt: skip
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as ui:
            await log_in(ui)
            page = await ui.get("/ui/logs?min_cost=5")
            assert page.status_code == 400, page.text[-500:]
            assert "narrow the time range" in page.text
            rows = await ui.get("/ui/logs/rows?min_cost=5")
            assert rows.status_code == 400
