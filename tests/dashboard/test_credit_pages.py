"""Prepaid credits through the dashboard (in-process): accounts listed by owner name
with their balances, a grant through the form moving the balance exactly and showing in
the journal (paged by cursor), the Stripe Checkout top-up link when Stripe is set up and
a plain word when it is not, the settings written as the API writes them, bad input
next to its form, and the viewer refused."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from decimal import Decimal

import httpx
from tests.credits.stripe_support import SECRET_KEY, SUCCESS_URL
from tests.dashboard.conftest import ADMIN_KEY, VIEWER_KEY, csrf_of, log_in

from tollhouse.app import create_app
from tollhouse.credits import service
from tollhouse.credits.schemas import GrantCreate

ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
ACCOUNTS = "/api/credits/accounts"


async def _api(ui, method: str, path: str, status: int = 200, **body):
    answer = await ui.request(method, path, headers=ADMIN, json=body or None)
    assert answer.status_code == status, answer.text
    return answer.json()


async def _account(ui, name: str = "Acme", **more) -> tuple[str, str]:
    """A customer and its prepaid account (through the admin API): their ids."""
    customer = (await _api(ui, "POST", "/api/governance/customers", 201, name=name))["customer"]
    account = await _api(ui, "POST", ACCOUNTS, 201, owner_type="customer",
                         owner_id=customer["id"], **more)  # fmt: skip
    return customer["id"], account["account"]["id"]


async def _balance(ui, account_id: str) -> dict[str, Decimal]:
    account = (await _api(ui, "GET", f"{ACCOUNTS}/{account_id}"))["account"]
    return {name: Decimal(str(value)) for name, value in account["balance"].items()}


async def _post(ui, path: str, page: str, **form: str) -> httpx.Response:
    shown = await ui.get(page)
    assert shown.status_code == 200, shown.text[:500]
    key = shown.text.split('name="idempotency_key" value="')[1].split('"')[0]
    return await ui.post(path, data={"csrf": csrf_of(shown.text), "idempotency_key": key, **form})


async def test_accounts_are_listed_by_owner_name_with_their_balances(ui):
    await log_in(ui)
    customer_id, account_id = await _account(ui, "Acme", low_balance=5)
    await _api(ui, "POST", f"{ACCOUNTS}/{account_id}/grants", 201, amount=25.5)
    listed = await ui.get("/ui/credits")
    assert listed.status_code == 200
    row = listed.text.split('data-testid="credit-row"')[1]
    assert "customer Acme" in row and customer_id not in row.replace(f"/{customer_id}", "")
    assert 'data-testid="credit-available">$25.50<' in row
    page = await ui.get(f"/ui/credits/{account_id}")
    assert 'Credits of <a href="/ui/customers/' in page.text and "customer Acme" in page.text
    assert 'data-testid="tile-funded"><span>Funded</span><strong>$25.5<' in page.text


async def test_a_grant_through_the_form_moves_the_balance_exactly_and_is_in_the_journal(ui):
    await log_in(ui)
    _, account_id = await _account(ui)
    page = f"/ui/credits/{account_id}"
    before = await _balance(ui, account_id)
    shown = await ui.get(page)
    key = shown.text.split('name="idempotency_key" value="')[1].split('"')[0]
    form = {"csrf": csrf_of(shown.text), "amount": "12.345678901", "memo": "welcome credit",
            "idempotency_key": key}  # fmt: skip
    granted = await ui.post(f"{page}/grant", data=form)
    assert granted.status_code == 303 and granted.headers["location"] == f"{page}?granted=1"
    again = await ui.post(f"{page}/grant", data=form)  # a double click: booked once
    assert again.status_code == 303
    after = await _balance(ui, account_id)
    assert after["total"] - before["total"] == Decimal("12.345678901")
    assert after["available"] == Decimal("12.345678901")

    journal = (await _api(ui, "GET", f"{ACCOUNTS}/{account_id}/ledger"))["entries"]
    assert [(e["kind"], Decimal(str(e["amount"])), e["memo"]) for e in journal] == [
        ("grant", Decimal("12.345678901"), "welcome credit")]  # fmt: skip
    shown = await ui.get(f"{page}?granted=1")
    rows = shown.text.split('data-testid="journal-row"')[1:]
    assert len(rows) == 1 and "welcome credit" in rows[0]
    assert 'data-testid="journal-amount">$12.345678901<' in rows[0]
    assert 'data-testid="tile-available"><span>Available</span><strong>$12.345678901<' in (
        shown.text
    )

    # A negative adjustment takes credit away, exactly.
    taken = await _post(ui, f"{page}/grant", page, amount="-2.000000001", category="adjustment")
    assert taken.status_code == 303
    assert (await _balance(ui, account_id))["total"] == Decimal("10.3456789")


async def test_the_journal_pages_by_cursor_newest_first(ui, ui_app):
    await log_in(ui)
    _, account_id = await _account(ui)
    async with ui_app.services.engine.begin() as conn:
        for n in range(1, 53):
            body = GrantCreate.model_validate({"amount": Decimal(n), "memo": f"grant {n}"})
            await service.grant(conn, account_id, body, None)
    first = await ui.get(f"/ui/credits/{account_id}")
    assert first.text.count('data-testid="journal-row"') == 50
    assert first.text.index("grant 52<") < first.text.index("grant 3<")
    older = first.text.split(f'href="/ui/credits/{account_id}?')[1].split('"')[0]
    second = await ui.get(f"/ui/credits/{account_id}?{older.replace('&amp;', '&')}")
    rows = second.text.split('data-testid="journal-row"')[1:]
    assert len(rows) == 2 and "grant 2<" in rows[0] and "grant 1<" in rows[1]
    bad = await ui.get(f"/ui/credits/{account_id}?cursor=x")
    assert bad.status_code == 400 and "<strong>cursor" in bad.text


async def test_invalid_input_is_shown_next_to_its_form_and_nothing_is_written(ui):
    await log_in(ui)
    _, account_id = await _account(ui)
    page = f"/ui/credits/{account_id}"
    for path, form, field in (
        ("grant", {"amount": "ten"}, "amount"),
        ("grant", {"amount": "0"}, "amount"),
        ("grant", {"amount": "1.0000000001"}, "amount"),
        ("grant", {"amount": "5", "expires_at": "tomorrow"}, "expires_at"),
        ("grant", {"amount": "5", "category": "gift"}, "category"),
        ("settings", {"low_balance": "-1"}, "low_balance"),
        ("settings", {"auto_enabled": "on", "auto_threshold": "5"}, "auto_topup"),
        ("settings", {"auto_threshold": "5", "auto_amount": "0.001"}, "auto_topup.amount"),
    ):
        response = await _post(ui, f"{page}/{path}", page, **form)
        assert response.status_code == 400, (form, response.text[-800:])
        assert f"<strong>{field}" in response.text, (field, response.text[-2500:])
        for name, value in form.items():  # what was typed is kept
            if name not in ("auto_enabled", "category"):
                assert f'value="{value}"' in response.text, (name, value)
    assert await _balance(ui, account_id) == {name: Decimal(0) for name in
                                              ("total", "reserved", "available")}  # fmt: skip
    account = (await _api(ui, "GET", f"{ACCOUNTS}/{account_id}"))["account"]
    assert account["low_balance"] is None and account["auto_topup"]["enabled"] is False


async def test_settings_are_written_as_the_api_writes_them(ui):
    await log_in(ui)
    _, account_id = await _account(ui)
    page = f"/ui/credits/{account_id}"
    saved = await _post(ui, f"{page}/settings", page, overdraft_limit="1.5", low_balance="5",
                        auto_enabled="on", auto_threshold="2", auto_amount="20",
                        stripe_customer="cus_123")  # fmt: skip
    assert saved.status_code == 303 and saved.headers["location"] == f"{page}?saved=1"
    account = (await _api(ui, "GET", f"{ACCOUNTS}/{account_id}"))["account"]
    assert Decimal(str(account["overdraft_limit"])) == Decimal("1.5")
    assert Decimal(str(account["low_balance"])) == 5
    auto = account["auto_topup"]
    assert auto["enabled"] is True and Decimal(str(auto["amount"])) == 20
    assert auto["stripe_customer"] == "cus_123"
    shown = await ui.get(page)
    assert 'name="auto_threshold" value="2"' in shown.text and "checked" in shown.text


async def test_without_stripe_the_page_says_so_and_offers_no_button(ui):
    await log_in(ui)
    _, account_id = await _account(ui)
    page = await ui.get(f"/ui/credits/{account_id}")
    assert 'data-testid="stripe-missing"' in page.text
    assert "TOLLHOUSE_STRIPE_SECRET_KEY" in page.text
    assert 'data-testid="checkout-form"' not in page.text
    refused = await ui.post(f"/ui/credits/{account_id}/checkout",
                            data={"csrf": csrf_of(page.text), "amount": "10"})  # fmt: skip
    assert refused.status_code == 503


@contextlib.asynccontextmanager
async def _dashboard(settings) -> AsyncIterator[httpx.AsyncClient]:
    """The ``ui`` fixture's client, for an app with settings of its own."""
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application, client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            yield client


async def test_with_stripe_the_top_up_link_is_a_checkout_session(make_settings, stripe_checkout):
    settings = make_settings(
        admin_key=ADMIN_KEY, viewer_key=VIEWER_KEY, allow_anonymous=False,
        stripe_secret_key=SECRET_KEY, stripe_api_base=stripe_checkout.url,
        stripe_success_url=SUCCESS_URL, stripe_max_network_retries=0,
    )  # fmt: skip
    async with _dashboard(settings) as ui:
        await log_in(ui)
        _, account_id = await _account(ui)
        page = f"/ui/credits/{account_id}"
        assert 'data-testid="stripe-missing"' not in (await ui.get(page)).text
        bad = await _post(ui, f"{page}/checkout", page, amount="10.001")
        assert bad.status_code == 400 and "<strong>amount" in bad.text
        opened = await _post(ui, f"{page}/checkout", page, amount="10.50")
        assert opened.status_code == 200, opened.text[-1500:]
        link = opened.text.split('data-testid="checkout-url">')[1].split("<")[0]
        topups = (await _api(ui, "GET", f"{ACCOUNTS}/{account_id}/topups"))["topups"]
        assert len(topups) == 1 and topups[0]["checkout_url"] == link
        assert Decimal(str(topups[0]["amount"])) == Decimal("10.50")
        assert topups[0]["session_id"] in link
        [request] = [r for r in stripe_checkout.requests() if r["path"] == "/v1/checkout/sessions"]
        assert request["idempotency_key"] == f"tollhouse:checkout:{topups[0]['id']}"


async def test_the_viewer_sees_the_credit_pages_and_cannot_write(ui):
    await log_in(ui)
    _, account_id = await _account(ui)
    await ui.post("/ui/logout", data={"csrf": csrf_of((await ui.get("/ui/credits")).text)})
    await log_in(ui, VIEWER_KEY)
    page = f"/ui/credits/{account_id}"
    shown = await ui.get(page)
    assert shown.status_code == 200 and 'data-testid="grant-submit"' not in shown.text
    assert 'data-testid="settings-save"' not in shown.text
    assert (await ui.get("/ui/credits")).status_code == 200
    token = csrf_of(shown.text)
    for path, form in (("grant", {"amount": "5"}), ("settings", {"low_balance": "1"}),
                       ("checkout", {"amount": "10"})):  # fmt: skip
        refused = await ui.post(f"{page}/{path}", data={"csrf": token, **form})
        assert refused.status_code == 403, path
    assert (await _balance(ui, account_id))["total"] == 0
