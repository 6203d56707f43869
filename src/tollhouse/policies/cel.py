"""The CEL engine (the default): a condition is one CEL expression over the input
document, compiled once by ``common-expression-language`` (cel-rust).

Checked on write, so that an accepted condition does not fail at request time for a
reason known in advance: it must parse, read only the document's variables (``action``,
``principal``, ``request``, ``resource``, ``time``), and answer a boolean for each of
the sample documents of the policy's action (``document.samples``: every field present,
lists empty and full, numbers zero and not) — which also refuses a field the document does not have
(``request.modle``) and an operation on the wrong types (``request.stream > 1``). What
only some inputs can raise (a division by zero) obeys the policy's ``fail_mode`` and is
counted.

**Speed.** Handing a Python value to CEL costs about 2.5 µs per string (0.3 per
number); running a compiled expression over values already handed over, well under one.
So the CEL conditions of a decision run together (``batch``) on a ``cel.Context`` that
holds the principal, the resource and the action already converted — built once per
caller and target and kept — into which each decision puts only the fields of
``request`` and ``time`` the conditions read (found in their source on compiling:
``request.model``, ``time.hour``…; a variable used whole is handed over whole). Every
condition of the batch runs before the decision awaits anything, so no other decision
can change the context under it. A CEL condition is a pure function of what it reads, so
the answers are also remembered for the values handed over (``_answers``, bounded): a
caller sending the same shape of request again — same model, stream, caps, within the
same hour if the hour is read — is answered without handing anything over. The dry run
and the impact estimate hand over the whole document (``prepare``): slower, and the
same answers.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Sequence
from typing import Any

from tollhouse.policies.document import samples
from tollhouse.policies.engines import (
    VARIABLES,
    Document,
    EngineName,
    EvaluationFailed,
    PolicyInvalid,
    boolean,
)

MAX_SOURCE = 4096  # characters: an expression, not a program

Path = tuple[str, ...]
# A variable not preceded by a dot or a word character, and the fields read after it.
_READS = re.compile(
    r"(?<![\w.])(" + "|".join(sorted(VARIABLES)) + r")((?:\s*\.\s*[A-Za-z_][A-Za-z0-9_]*)*)"
)

# The names a macro binds (``resource.hosts.all(h, …)``): variables of the expression
# that are not the document's.
_BOUND = re.compile(
    r"\.\s*(?:all|exists|exists_one|map|filter)\s*\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*,"
)


def reads(source: str) -> tuple[Path, ...]:
    """The document paths ``source`` reads (a superset: words in strings count too)."""
    found = set()
    for match in _READS.finditer(source):
        fields = [f.strip() for f in match.group(2).split(".") if f.strip()]
        found.add((match.group(1), *fields))
    # A path read whole covers the longer ones under it.
    return tuple(p for p in sorted(found) if not any(p[: len(q)] == q for q in found if q != p))


class CelCondition:
    is_async = False

    def __init__(self, source: str, program: Any, paths: tuple[Path, ...]) -> None:
        self.source = source
        self.paths = paths
        self.program = program

    def evaluate(self, prepared: Any) -> bool | None:
        """On a context holding the whole document (``CelEngine.prepare``)."""
        return _run(self.program, prepared, self.source)

    async def evaluate_async(self, prepared: Any) -> bool | None:
        return self.evaluate(prepared)


def _frozen(value: Any) -> Hashable:
    """``value`` as a key: dicts and lists as tuples (a document holds nothing else)."""
    if isinstance(value, dict):
        return tuple((name, _frozen(item)) for name, item in value.items())
    if isinstance(value, (list, tuple)):
        return ("[", *(_frozen(item) for item in value))
    return value  # type: ignore[no-any-return]


def _run(program: Any, context: Any, source: str) -> bool | None:
    try:
        value = program.execute(context)
    except Exception as exc:  # cel raises KeyError, TypeError, ZeroDivisionError…
        raise EvaluationFailed(f"CEL: {_first_line(exc)}") from None
    return boolean(value, source)


_PER_REQUEST = ("request", "time")  # what changes with every decision
_CACHED = 10_000  # callers × targets whose converted context is kept


class CelBatch:
    """The CEL conditions of one set of policies, run together (see the module)."""

    def __init__(self, conditions: Sequence[CelCondition]) -> None:
        self.conditions = tuple(conditions)
        reads = {p for c in conditions for p in c.paths}
        # Per variable of the request: the fields read, or None for the whole of it.
        self._fields: dict[str, tuple[str, ...] | None] = {}
        for variable in _PER_REQUEST:
            mine = [p for p in reads if p[0] == variable]
            if any(len(p) == 1 for p in mine):
                self._fields[variable] = None
            elif mine:
                self._fields[variable] = tuple(sorted({p[1] for p in mine}))
        self._contexts: dict[Hashable, Any] = {}
        self._answers: dict[Hashable, list[bool | None | EvaluationFailed]] = {}

    def evaluate(self, doc: Document, static: Hashable) -> list[bool | None | EvaluationFailed]:
        """Every condition's answer (or its failure) for ``doc``; ``static`` names the
        caller and target, whose part of the document is converted once."""
        try:
            hash(static)
        except TypeError:  # a list in the resource (a tool's hosts)
            static = _frozen(static)
        picked = {}
        key: list[Any] = [static]
        for variable, fields in self._fields.items():
            value = doc[variable]
            if fields is not None:
                value = {name: value[name] for name in fields if name in value}
                key.extend(tuple(v) if v.__class__ is list else v for v in value.values())
            else:
                key.append(_frozen(value))
            picked[variable] = value
        try:
            seen: Hashable = tuple(key)
            hash(seen)
        except TypeError:  # a value that cannot be a key: answered without the memo
            seen = None
        if seen is not None:
            known = self._answers.get(seen)
            if known is not None:
                return known
        answers = self._run(doc, static, picked)
        if seen is not None:
            if len(self._answers) >= _CACHED:
                self._answers.clear()
            self._answers[seen] = answers
        return answers

    def _run(
        self, doc: Document, static: Hashable, picked: dict[str, Any]
    ) -> list[bool | None | EvaluationFailed]:
        context = self._contexts.get(static)
        if context is None:
            if len(self._contexts) >= _CACHED:
                self._contexts.clear()
            context = self._contexts[static] = _library().Context(
                {
                    "principal": doc["principal"],
                    "resource": doc["resource"],
                    "action": doc["action"],
                }
            )
        for variable, value in picked.items():
            context.add_variable(variable, value)
        answers: list[bool | None | EvaluationFailed] = []
        for condition in self.conditions:
            try:
                value = condition.program.execute(context)
            except Exception as exc:
                answers.append(EvaluationFailed(f"CEL: {_first_line(exc)}"))
                continue
            if value.__class__ is bool:
                answers.append(value)
            else:  # refused on write; kept so that a surprise is a failure, not a 500
                try:
                    answers.append(boolean(value, condition.source))
                except EvaluationFailed as exc:
                    answers.append(exc)
        return answers


class CelEngine:
    name: EngineName = "cel"

    def compile(
        self, source: str, rule: str | None = None, action: str = "llm.request"
    ) -> CelCondition:
        if rule is not None:
            raise PolicyInvalid("a CEL condition has no rule to name", param="rule")
        if not source.strip():
            raise PolicyInvalid("the condition is empty (leave it out to always match)")
        if len(source) > MAX_SOURCE:
            raise PolicyInvalid(f"a CEL condition is at most {MAX_SOURCE} characters")
        try:
            program = _library().compile(source)
        except ValueError as exc:
            raise PolicyInvalid(f"CEL: {_syntax(exc)}") from None
        bound = set(_BOUND.findall(source))
        unknown = sorted(set(program.variables()) - VARIABLES - bound)
        if unknown:
            raise PolicyInvalid(
                f"CEL: unknown variable {unknown[0]!r}: a condition reads "
                + ", ".join(sorted(VARIABLES))
            )
        condition = CelCondition(source, program, reads(source))
        for sample in samples(action):
            try:
                answer = condition.evaluate(self.prepare(sample))
            except EvaluationFailed as exc:
                where = f"a sample {sample['action']} document"
                raise PolicyInvalid(f"{exc} (on {where}: docs/policies.md)") from None
            if answer is None:
                raise PolicyInvalid("CEL: the condition answered null, not a boolean")
        return condition

    def prepare(self, doc: Document) -> Any:
        return _library().Context(dict(doc))

    def batch(self, conditions: Sequence[CelCondition]) -> CelBatch:
        return CelBatch(conditions)


def _library() -> Any:
    """``cel``, imported on first use: its package also loads a command line (typer,
    rich), half a second every ``tollhouse`` command would pay without a CEL policy."""
    import cel

    return cel


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
