"""Policies admin API bodies: ``/api/policies`` (docs/policies.md).

A policy says what it governs (``action``), what it does when it matches (``effect``),
when it matches (``condition``, in its ``engine``'s language; none: always), whom it
applies to (``attachments``), in which order (``priority``, higher first), and what an
engine error means for it (``fail_mode``). Conditions are compiled when written: an
invalid one is a 400 naming the error (``param: condition``), never a request-time error.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, StrictBool, StrictInt, StrictStr

from tollhouse.governance.fields import Kept, Tag
from tollhouse.policies.engines import EngineName
from tollhouse.web.query import Count, Filter, Query
from tollhouse.web.responses import Reply, Time
from tollhouse.web.validation import Body, at_most, whole

Action = Literal["llm.request", "tool.execute", "sandbox.allocate", "*"]
Effect = Literal["allow", "deny"]
FailMode = Literal["closed", "open"]
PolicyName = Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")]
Ident = Annotated[StrictStr, Field(min_length=1, max_length=64)]
Priority = Annotated[StrictInt, Field(ge=-1000, le=1000), BeforeValidator(whole)]
Source = Annotated[StrictStr, Field(max_length=65536)]
MAX_ATTACHMENTS = 100

_NAME = "unique; letters, digits and _ . : - (it names the policy in headers and errors)"
_CONDITION = (
    "when the policy matches, in its engine's language: a CEL expression, a Rego module, "
    "or an OPA data path (tollhouse/authz/allow); null: always"
)
_RULE = "rego only: the rule queried in the module's package (default: match)"
_FAIL = "on an engine error: closed (a deny policy denies, an allow policy does not allow) or open"


class EveryoneAttachment(Body):
    """Applies to every caller (anonymous ones too)."""

    type: Literal["global"]


class OwnerAttachment(Body):
    """Applies to a customer, team or key, with everything under it (a customer's teams
    and keys, a team's keys)."""

    type: Literal["customer", "team", "key"]
    id: Ident


class TagAttachment(Body):
    """Applies to every key carrying the tag (its own, or its team's)."""

    type: Literal["tag"]
    tag: Tag


Attachment = Annotated[
    EveryoneAttachment | OwnerAttachment | TagAttachment, Field(discriminator="type")
]
Attachments = Annotated[
    list[Attachment], at_most(MAX_ATTACHMENTS), Field(min_length=1, max_length=MAX_ATTACHMENTS)
]


def _everyone() -> list[Attachment]:
    return [EveryoneAttachment(type="global")]


class PolicyCreate(Body):
    name: PolicyName = Field(description=_NAME)
    description: StrictStr | None = None
    action: Action
    effect: Effect
    engine: EngineName = "cel"
    condition: Source | None = Field(default=None, description=_CONDITION)
    rule: PolicyName | None = Field(default=None, description=_RULE)
    priority: Priority = 0
    attachments: Attachments = Field(default_factory=_everyone)
    enabled: StrictBool = True
    fail_mode: FailMode = Field(default="closed", description=_FAIL)


class PolicyUpdate(Body):
    """A merge: what is sent replaces what is stored; the condition is compiled again
    with the engine and rule it will have."""

    name: Kept[PolicyName] = None
    description: StrictStr | None = None
    action: Kept[Action] = None
    effect: Kept[Effect] = None
    engine: Kept[EngineName] = None
    condition: Source | None = None
    rule: PolicyName | None = None
    priority: Kept[Priority] = None
    attachments: Kept[Attachments] = None
    enabled: Kept[StrictBool] = None
    fail_mode: Kept[FailMode] = None


class PolicyTest(Body):
    """A dry run: ``input`` is laid over an empty document (every field typed, empty:
    docs/policies.md), so a test names only what it is about; ``key_id`` fills in the
    principal from a real key (its team, customer and tags)."""

    input: dict[str, Any] = Field(default_factory=dict)
    key_id: Ident | None = None


class PoliciesQuery(Query):
    action: Filter = Field(default=None, description="only policies of this action (or *)")


class DecisionsQuery(Query):
    policy_id: Filter = Field(default=None, description="only decisions this policy made")
    decision: Literal["allow", "deny"] | None = Field(default=None, description="allow or deny")
    limit: Annotated[int, Count(default=50, high=1000)] = Field(
        default=50, description="how many, newest first"
    )
    cursor: Filter = Field(default=None, description="next_cursor of the previous page")


class ImpactQuery(Query):
    limit: Annotated[int, Count(default=1000, high=10000)] = Field(
        default=1000, description="how many of the latest usage records to replay"
    )


class AttachmentRead(Reply):
    type: str
    id: str | None
    tag: str | None


class PolicyRead(Reply):
    id: str
    name: str
    description: str | None
    action: Action
    effect: Effect
    engine: EngineName
    condition: str | None
    rule: str | None
    priority: int
    attachments: list[AttachmentRead]
    enabled: bool
    fail_mode: FailMode
    created_at: Time
    updated_at: Time

    @classmethod
    def from_row(cls, row: Any) -> PolicyRead:
        return cls.model_validate(
            {**row._mapping, "attachments": [_attachment(a) for a in row.attachments]}
        )


def _attachment(stored: dict[str, Any]) -> dict[str, Any]:
    return {"type": stored["type"], "id": stored.get("id"), "tag": stored.get("tag")}


class PolicyList(Reply):
    policies: list[PolicyRead]
    count: int


class PolicyOne(Reply):
    policy: PolicyRead


class PolicyWritten(Reply):
    message: str
    policy: PolicyRead


class PolicyDeleted(Reply):
    message: str


class TestResult(Reply):
    matched: bool | None = Field(description="the condition's answer; null: undefined")
    effect: Effect
    outcome: Literal["allow", "deny", "no match"] = Field(
        description="what this policy alone does with the input: its effect when it "
        "matches (deny when undefined, its fail_mode on an error)"
    )
    error: str | None
    duration_us: int
    input: dict[str, Any] = Field(description="the whole document the condition saw")


class ImpactRead(Reply):
    evaluated: int = Field(description="usage records replayed, newest first")
    matched: int
    would_deny: int = Field(description="requests this policy alone would have denied")
    errors: int
    examples: list[str] = Field(description="request ids it would have denied (up to 10)")
    since: Time | None = Field(description="the oldest record replayed")


class ErrorRead(Reply):
    policy: str
    error: str
    fail_mode: FailMode


class DecisionRead(Reply):
    id: str
    created_at: Time
    action: str
    decision: Effect
    policy_id: str | None
    policy_name: str | None
    reason: str
    applied: list[str]
    errors: list[ErrorRead]
    request_id: str | None
    key_id: str | None
    team_id: str | None
    customer_id: str | None
    resource: dict[str, Any]
    duration_us: int


class DecisionPage(Reply):
    decisions: list[DecisionRead]
    count: int
    next_cursor: str | None
