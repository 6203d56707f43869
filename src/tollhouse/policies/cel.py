"""The CEL engine (the default): a condition is one CEL expression over the input
document, compiled once by ``common-expression-language`` (cel-rust).

Checked on write, so that an accepted condition does not fail at request time for a
reason known in advance: it must parse, read only the document's variables (``action``,
``principal``, ``request``, ``resource``, ``time``), and answer a boolean for each of
the sample documents (``document.SAMPLES``: every field present, lists empty and full,
numbers zero and not) — which also refuses a field the document does not have
(``request.modle``) and an operation on the wrong types (``request.stream > 1``). What
only some inputs can raise (``principal.tags[0]`` with no tags, were it not caught by the
samples) obeys the policy's ``fail_mode`` and is counted.

Per decision the document is turned into a CEL ``Context`` once (``prepare``), and every
CEL condition runs against it: converting the document is most of the cost of a
decision, running a compiled expression well under a microsecond.
"""

from __future__ import annotations

from typing import Any

import cel as _cel

from tollhouse.policies.document import SAMPLES
from tollhouse.policies.engines import (
    VARIABLES,
    Document,
    EngineName,
    EvaluationFailed,
    PolicyInvalid,
    boolean,
)

MAX_SOURCE = 4096  # characters: an expression, not a program


class CelCondition:
    is_async = False

    def __init__(self, source: str, program: Any) -> None:
        self.source = source
        self._program = program

    def evaluate(self, prepared: Any) -> bool | None:
        try:
            value = self._program.execute(prepared)
        except Exception as exc:  # cel raises KeyError, TypeError, IndexError, RuntimeError…
            raise EvaluationFailed(f"CEL: {_first_line(exc)}") from None
        return boolean(value, self.source)

    async def evaluate_async(self, prepared: Any) -> bool | None:
        return self.evaluate(prepared)


class CelEngine:
    name: EngineName = "cel"

    def compile(self, source: str, rule: str | None = None) -> CelCondition:
        if rule is not None:
            raise PolicyInvalid("a CEL condition has no rule to name", param="rule")
        if not source.strip():
            raise PolicyInvalid("the condition is empty (leave it out to always match)")
        if len(source) > MAX_SOURCE:
            raise PolicyInvalid(f"a CEL condition is at most {MAX_SOURCE} characters")
        try:
            program = _cel.compile(source)
        except ValueError as exc:
            raise PolicyInvalid(f"CEL: {_syntax(exc)}") from None
        unknown = sorted(set(program.variables()) - VARIABLES)
        if unknown:
            raise PolicyInvalid(
                f"CEL: unknown variable {unknown[0]!r}: a condition reads "
                + ", ".join(sorted(VARIABLES))
            )
        condition = CelCondition(source, program)
        for sample in SAMPLES:
            try:
                answer = condition.evaluate(self.prepare(sample))
            except EvaluationFailed as exc:
                raise PolicyInvalid(f"{exc} (on a sample document: docs/policies.md)") from None
            if answer is None:
                raise PolicyInvalid("CEL: the condition answered null, not a boolean")
        return condition

    def prepare(self, doc: Document) -> Any:
        return _cel.Context(dict(doc))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, KeyError):
        return f"no field {text}"
    first = text.splitlines()[0]
    return first.split(". ", 1)[0][:200]  # cel-rust's hints follow the first sentence


def _syntax(exc: ValueError) -> str:
    """cel-rust's parse error, less its echo of the whole expression."""
    lines = [line for line in str(exc).splitlines() if line.strip()]
    found = next((line for line in lines if "ERROR" in line), lines[0] if lines else "")
    return found.split("ERROR: ", 1)[-1][:200] or "the expression does not parse"
