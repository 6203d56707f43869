"""Agent token budgets: the counters an agent session's model calls claim besides those
of their key (docs/agents.md, *Token budgets*).

A conversation worker's model call carries an ``AgentCall`` on its request context. Its
reservation then also claims, all or nothing with the key's own counters, the tokens of

- the tenant's agent sessions together (``agent_tenant_token_budget``), and
- the tenant's sessions of the call's persona (``agent_persona_token_budgets``: by
  persona id, ``*`` for any persona without its own; a session without a persona is
  persona ``default``),

each per ``agent_budget_window`` (calendar-aligned, UTC). They are ordinary ``tokens``
counters of the meter: reserved with the call's worst case, settled to its usage record,
rebuilt from the ledger's records of those sessions (``session_id``, ``persona_id``), in
memory or shared through Redis like every other counter. A call over one is refused
before it reaches a provider, having consumed nothing (429 ``agent_budget_exceeded``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from tollhouse.admission.meter import Counter, CounterId
from tollhouse.admission.snapshot import KeyInfo, Scope, WindowSpec
from tollhouse.config import Settings
from tollhouse.gateway.context import AgentCall
from tollhouse.ledger.totals import DEFAULT_PERSONA
from tollhouse.windows import parse_duration

PREFIX = "agent:"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class AgentBudgets:
    def __init__(self, settings: Settings) -> None:
        self._tenant = settings.agent_tenant_token_budget
        self._personas = dict(settings.agent_persona_token_budgets)
        self._window = WindowSpec(
            parse_duration(settings.agent_budget_window), _EPOCH, True, ZoneInfo("UTC")
        )

    @property
    def any(self) -> bool:
        return bool(self._tenant or self._personas)

    def counters(self, key: KeyInfo, call: AgentCall) -> dict[CounterId, Counter]:
        """The counters ``call`` claims, by id, new (the caller keeps those it has)."""
        top = key.chain[-1] if key.chain else key.scope  # the sessions' tenant
        tenant = f"{top.kind}:{top.id}"
        found: dict[CounterId, Counter] = {}
        if self._tenant:
            found[("tokens", PREFIX + tenant)] = self._counter(self._tenant, top, tenant)
        persona = call.persona_id or DEFAULT_PERSONA
        limit = self._personas.get(persona, self._personas.get("*"))
        if limit is not None:
            whose = f"{tenant}/{persona}"
            found[("tokens", PREFIX + whose)] = self._counter(limit, top, whose)
        return found

    def _counter(self, limit: int, scope: Scope, payer: str) -> Counter:
        return Counter("tokens", limit, self._window, scope, payer=("agent", payer))


def is_agent(counter_id: CounterId) -> bool:
    return counter_id[1].startswith(PREFIX)
