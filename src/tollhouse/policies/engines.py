"""What a policy engine is: one Protocol, three engines behind it.

A policy's ``condition`` is source text in its engine's language. ``compile`` turns it
into a ``Condition`` once — when the policy is written (refusing what is invalid with
``PolicyInvalid``, a 400 naming the error) and when a server loads its snapshot — and
the choke point (``decide.py``) calls the condition for each action the policy applies
to, with the input document (``document.py``).

A condition answers ``True`` (the policy matches: its effect applies), ``False`` (it does
not), or ``None`` — *undefined*: a Rego rule with no value, an OPA answer without
``result``. Undefined is never read as ``False``: the choke point denies (what OPA's
REST contract and the Rego engine's queries are built to tell apart). Anything else it
cannot answer — an engine error, a value that is not a boolean, a timeout — raises
``EvaluationFailed``, and the policy's ``fail_mode`` decides.

Embedded engines answer synchronously (``is_async`` false: ``evaluate``); the external
OPA answers over HTTP (``is_async`` true: ``evaluate_async``). The choke point calls
the synchronous ones inline, so a request governed by embedded policies awaits nothing.
Each engine turns the document into its own form once per decision (``prepare``): a CEL
context, a Rego input, a JSON body.

The engines:

- ``cel`` (the default): a CEL expression (``cel.py``);
- ``rego``: a Rego module evaluated in-process by ``regopy`` (``rego.py``);
- ``opa``: an external OPA, ``POST <opa_url>/v1/data/<path>`` (``opa.py``).

``tests/policies/test_engine_contract.py`` runs one contract over all three.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, Protocol

from tollhouse.errors import ValidationFailed

EngineName = Literal["cel", "rego", "opa"]
ENGINES: tuple[EngineName, ...] = ("cel", "rego", "opa")

# The names a condition may read: the input document's top level (docs/policies.md).
VARIABLES = frozenset({"action", "principal", "request", "resource", "time"})

Document = Mapping[str, Any]


class PolicyInvalid(ValidationFailed):
    """A condition its engine refuses: a syntax error, an unknown variable, a result
    that is not a boolean. Raised on write, so it never happens at request time."""

    def __init__(self, message: str, *, param: str = "condition") -> None:
        # The admin API's error names no field but in its message: this one leads with it.
        super().__init__(f"{param}: {message}", param=param)


class EvaluationFailed(Exception):
    """A condition that could not be evaluated for one input; ``fail_mode`` decides."""


class Condition(Protocol):
    """One compiled condition. ``prepared`` is the input document as its engine's
    ``prepare`` made it, once per decision for all of that engine's conditions."""

    is_async: bool
    source: str

    def evaluate(self, prepared: Any) -> bool | None:
        """The answer of an embedded engine (``is_async`` false)."""

    async def evaluate_async(self, prepared: Any) -> bool | None:
        """The answer of any engine (an embedded one answers at once)."""


class PolicyEngine(Protocol):
    name: EngineName

    def compile(
        self, source: str, rule: str | None = None, action: str = "llm.request"
    ) -> Condition:
        """``source`` compiled, or ``PolicyInvalid`` naming what is wrong; ``rule`` is
        the Rego rule to query (other engines refuse one); an embedded engine checks the
        condition on the sample documents of ``action`` (``document.samples``)."""

    def prepare(self, doc: Document) -> Any:
        """The input document in the engine's own form (a CEL context, a JSON input)."""


def boolean(value: Any, source: str) -> bool | None:
    """An engine's answer as a decision: a boolean, ``None`` for undefined; anything
    else is an evaluation failure (a condition must answer true or false)."""
    if value is None or isinstance(value, bool):
        return value
    raise EvaluationFailed(
        f"the condition answered {type(value).__name__} {_short(value)!r}, not a boolean"
        f" ({_short(source)})"
    )


def _short(value: Any, limit: int = 64) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
