"""Credits API bodies: accounts, grants, the journal, top-ups, and ``GET /v1/credits``.

Requests are read by the toolkit (exact numbers, strict types, a 400 naming the
field); answers are ``Reply`` models (every field present, money exact, one time
format). Amounts are USD with at most 9 decimal places (a nano-dollar), like budgets.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    WithJsonSchema,
    model_validator,
)

from tollhouse.governance.bounds import MAX_BUDGET_USD, places
from tollhouse.governance.fields import (
    NANO,
    USD,
    Kept,
    Name,
    Timestamp,
    null_is_default,
    or_default,
)
from tollhouse.web.query import Count, Filter, Moment, Query
from tollhouse.web.responses import Exact, Reply, Time
from tollhouse.web.validation import Body, number, preview, whole

OwnerType = Literal["customer", "team", "key"]
Category = Literal["promotional", "referral", "adjustment"]
MAX_PRIORITY = 1000


def _signed(value: Decimal) -> Decimal:
    if value == 0:
        raise ValueError("must not be 0")
    if abs(value) > MAX_BUDGET_USD:
        raise ValueError(f"is too large: at most {MAX_BUDGET_USD} USD ({preview(str(value))})")
    return places(value)


SignedUSD = Annotated[
    Decimal,
    BeforeValidator(number),
    AfterValidator(_signed),
    WithJsonSchema(
        {
            "type": "number",
            "minimum": -1_000_000_000,
            "maximum": 1_000_000_000,
            "not": {"const": 0},
            "multipleOf": NANO,
            "description": "USD, echoed exactly; negative only for an adjustment",
        }
    ),
]


def _cents(value: Decimal) -> Decimal:
    if value != value.quantize(Decimal("0.01")) or not Decimal("0.5") <= value <= _MAX_TOP_UP:
        raise ValueError(f"must be whole cents from 0.50 to {_MAX_TOP_UP} USD")
    return value


_MAX_TOP_UP = Decimal("999999.99")
# What Stripe charges in USD: whole cents from 0.50 to 999,999.99.
TopUpUSD = Annotated[
    Decimal,
    BeforeValidator(number),
    AfterValidator(_cents),
    WithJsonSchema(
        {
            "type": "number",
            "minimum": 0.5,
            "maximum": 999999.99,
            "multipleOf": 0.01,
            "description": "USD in whole cents, from 0.50 to 999999.99 (what Stripe charges)",
        }
    ),
]
Priority = Annotated[int, Field(ge=0, le=MAX_PRIORITY), BeforeValidator(whole)]
Reference = Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[^\x00\s]+$")]
Memo = Annotated[str, Field(max_length=1000)]


# --- requests -------------------------------------------------------------------------


class AutoTopupUpdate(Body):
    """Merge into the stored settings; enabled needs a threshold and an amount, given
    here or stored."""

    enabled: StrictBool = False
    threshold: USD | None = None
    amount: TopUpUSD | None = None
    monthly_cap: USD | None = None
    stripe_customer: Reference | None = None
    stripe_payment_method: Reference | None = None


class AutoTopup(Body):
    """Charge the saved card when ``available`` falls below ``threshold``."""

    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [
                {"properties": {"enabled": {"const": False}}},
                {
                    "required": ["threshold", "amount"],
                    "properties": {
                        "threshold": {"type": "number"},
                        "amount": {"type": "number"},
                    },
                },
            ]
        }
    )

    enabled: StrictBool = False
    threshold: USD | None = None
    amount: TopUpUSD | None = None
    monthly_cap: USD | None = None
    stripe_customer: Reference | None = None
    stripe_payment_method: Reference | None = None

    @model_validator(mode="after")
    def _complete(self) -> Self:
        if self.enabled and (self.threshold is None or self.amount is None):
            raise ValueError("auto_topup: enabled needs threshold and amount")
        return self


class AccountCreate(Body):
    """A prepaid account for one customer, team or virtual key (one each at most)."""

    owner_type: OwnerType
    owner_id: Name
    overdraft_limit: Annotated[USD, or_default(lambda: Decimal(0))] = Field(
        default=Decimal(0), json_schema_extra=null_is_default(0)
    )
    low_balance: USD | None = None
    auto_topup: AutoTopup | None = None


class AccountUpdate(Body):
    """Merge: fields left out are unchanged; ``low_balance: null`` turns the alert off."""

    overdraft_limit: Kept[USD] = None
    low_balance: USD | None = None
    auto_topup: AutoTopupUpdate | None = None


class GrantCreate(Body):
    """Credit given by an operator; drawn down by ``priority`` then soonest expiry."""

    # Only an adjustment may be negative, and it takes effect now, for good.
    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [
                {"properties": {"amount": {"exclusiveMinimum": 0}}},
                {
                    "properties": {
                        "category": {"const": "adjustment"},
                        "effective_at": {"type": "null"},
                        "expires_at": {"type": "null"},
                    },
                    "required": ["category"],
                },
            ]
        }
    )

    amount: SignedUSD
    category: Category = "promotional"
    priority: Annotated[Priority, or_default(lambda: 10)] = Field(
        default=10, json_schema_extra=null_is_default(10)
    )
    effective_at: Timestamp | None = None
    expires_at: Timestamp | None = None
    memo: Memo | None = None

    @model_validator(mode="after")
    def _sign(self) -> Self:
        if self.amount < 0 and self.category != "adjustment":
            raise ValueError("amount: only an adjustment may be negative")
        if self.amount < 0 and (self.effective_at or self.expires_at):
            raise ValueError("a negative adjustment takes effect now and does not expire")
        return self


class CheckoutCreate(Body):
    """A Stripe Checkout top-up of ``amount`` USD (whole cents)."""

    amount: TopUpUSD


class AccountsQuery(Query):
    owner_type: Filter = Field(default=None, description="only accounts of this owner type")
    owner_id: Filter = Field(default=None, description="only the account of this owner")


class LedgerQuery(Query):
    limit: Annotated[int, Count(default=100, high=1000)] = 100
    cursor: Filter = Field(default=None, description="next_cursor of the previous page")
    as_of: Moment = Field(default=None, description="only movements booked before this time")


# --- answers --------------------------------------------------------------------------


class BalanceRead(Reply):
    total: Exact
    reserved: Exact
    available: Exact


class AutoTopupRead(Reply):
    enabled: bool
    threshold: Exact | None
    amount: Exact | None
    monthly_cap: Exact | None
    consecutive_failures: int
    disabled_reason: str | None
    skipped_reason: str | None = Field(
        description="why the last check that wanted a charge made none (the monthly cap)"
    )
    stripe_customer: str | None
    has_payment_method: bool


class AccountRead(Reply):
    id: str
    owner_type: OwnerType
    owner_id: str
    overdraft_limit: Exact
    low_balance: Exact | None
    balance: BalanceRead
    alert_state: Literal["ok", "low", "depleted"]
    auto_topup: AutoTopupRead
    created_at: Time
    updated_at: Time


class AccountOne(Reply):
    account: AccountRead


class AccountWritten(Reply):
    message: str
    account: AccountRead


class AccountList(Reply):
    accounts: list[AccountRead]
    count: int


class GrantRead(Reply):
    id: str
    account_id: str
    category: str
    amount: Exact
    remaining: Exact
    priority: int
    effective_at: Time
    expires_at: Time | None
    status: Literal["scheduled", "active", "expired", "booked"]
    memo: str | None
    created_at: Time


class GrantWritten(Reply):
    message: str
    grant: GrantRead


class GrantList(Reply):
    grants: list[GrantRead]
    count: int


class EntryRead(Reply):
    seq: int
    id: str
    key: str = Field(
        description="unique per movement; a post's lists its requests: "
        "GET /api/usage?credit_post=<key>"
    )
    kind: str
    amount: Exact
    balance_after: Exact
    category: str | None
    lot_id: str | None
    request_id: str | None
    payment_intent: str | None
    stripe_event: str | None
    reverses: str | None
    memo: str | None
    created_at: Time


class LedgerPage(Reply):
    entries: list[EntryRead]
    count: int
    next_cursor: str | None


class TopupRead(Reply):
    id: str
    account_id: str
    kind: Literal["checkout", "auto"]
    amount: Exact
    status: Literal["pending", "succeeded", "failed", "expired"]
    session_id: str | None
    checkout_url: str | None
    payment_intent: str | None
    failure_code: str | None
    failure_message: str | None
    expires_at: Time | None
    created_at: Time
    updated_at: Time


class TopupList(Reply):
    topups: list[TopupRead]
    count: int


class CheckoutRead(Reply):
    topup_id: str
    checkout_url: str
    session_id: str
    expires_at: Time


class KeyCredits(Reply):
    """OpenRouter's ``{"total_credits", "total_usage"}``, with the live balance."""

    total_credits: Exact
    total_usage: Exact
    available: Exact
    reserved: Exact


class KeyCreditsReply(Reply):
    data: KeyCredits


class StripeReceipt(Reply):
    received: bool
    status: Literal["booked", "ignored", "duplicate"]


class StripeEventObject(BaseModel):
    model_config = ConfigDict(extra="allow")

    object: dict[str, Any]


class StripeEvent(BaseModel):
    """What Stripe posts (documentation only: the official library reads the body after
    its signature is checked); other fields are Stripe's."""

    model_config = ConfigDict(extra="allow")

    id: Annotated[str, Field(min_length=1)]
    type: Annotated[str, Field(min_length=1)]
    data: StripeEventObject
