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

**Speed.** Handing a Python value to CEL costs about 1 µs per string (keys included;
0.15 per number); running a compiled expression over values already handed over, well
under one. So the CEL conditions of a decision run together (``batch``) on a
``cel.Context`` that holds the principal, the resource and the action already converted
— built once per caller and target and kept. A CEL condition is a pure function of what
it reads (found in its source on compiling: ``request.model``, ``time.hour``…; a
variable used whole counts whole), so its answers are remembered by those values, per
condition: a request whose prompt size is new misses only the conditions that read
``request.input_tokens``, and only the fields *they* read are handed over. A decision
seen whole before (the same values for every condition) is answered with one lookup.
Every condition of the batch runs before the decision awaits anything, so no other
decision can change the context under it. The dry run and the impact estimate hand
over the whole document (``prepare``): slower, and the same answers
(``tests/policies/test_cel_batch.py`` holds the batch to them).
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Sequence
from operator import itemgetter
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
_CACHED = 10_000  # callers × targets whose converted context is kept; answers per condition
_SEEN = 1024  # whole decisions remembered: the same request again (small: GC walks them)
_ABSENT = object()  # a field the document does not have (``has()`` may ask)

Needs = dict[str, tuple[str, ...] | None]  # variable → the fields read, None: all of it


class CelBatch:
    """The CEL conditions of one set of policies, run together (see the module)."""

    def __init__(self, conditions: Sequence[CelCondition]) -> None:
        self.conditions = tuple(conditions)
        # The per-request values any condition reads, each taken once per decision.
        self._paths: list[tuple[str, str | None]] = []
        self._needs: list[Needs] = []
        self._keys: list[Any] = []  # per condition: its values out of ``_paths``'
        for condition in self.conditions:
            needs = _needs(condition.paths)
            mine = [(v, f) for v, fields in needs.items() for f in (fields or (None,))]
            for path in mine:
                if path not in self._paths:
                    self._paths.append(path)
            self._needs.append(needs)
            self._keys.append(_picker([self._paths.index(path) for path in mine]))
        self._unions: dict[tuple[int, ...], Needs] = {}
        self._callers: dict[Hashable, int] = {}  # caller and target → a number
        self._contexts: dict[int, Any] = {}
        self._answers: list[dict[Hashable, bool | None | EvaluationFailed]] = [
            {} for _ in self.conditions
        ]
        self._seen: dict[Hashable, list[bool | None | EvaluationFailed]] = {}

    def evaluate(self, doc: Document, static: Hashable) -> list[bool | None | EvaluationFailed]:
        """Every condition's answer (or its failure) for ``doc``; ``static`` names the
        caller and target, whose part of the document is converted once."""
        try:
            caller = self._callers.get(static)
        except TypeError:  # a list in the resource (a tool's hosts)
            static = _frozen(static)
            caller = self._callers.get(static)
        if caller is None:  # keys below hold a number, not a principal hashed again
            if len(self._callers) >= _CACHED:
                self._forget()
            caller = self._callers[static] = len(self._callers)
        values = []
        for variable, name in self._paths:
            value = doc[variable] if name is None else doc[variable].get(name, _ABSENT)
            values.append(_frozen(value) if value.__class__ in (list, dict) else value)
        whole = (caller, *values)
        seen = self._seen.get(whole)
        if seen is not None:  # the same values as a decision before: every answer known
            return seen
        answers: list[Any] = []
        missing: list[int] = []
        for index, pick in enumerate(self._keys):
            known = self._answers[index].get((caller, pick(values)), _ABSENT)
            if known is _ABSENT:
                missing.append(index)
            answers.append(known)
        if missing:
            subset = tuple(missing)
            needs = self._unions.get(subset)
            if needs is None:  # worked out once per subset of conditions that missed
                if len(self._unions) >= _CACHED:
                    self._unions.clear()
                needs = self._unions[subset] = _union([self._needs[i] for i in missing])
            context = self._context(doc, caller, needs)
            for index in missing:
                answer = answers[index] = self._answer(self.conditions[index], context)
                memo = self._answers[index]
                if len(memo) >= _CACHED:
                    memo.clear()
                memo[(caller, self._keys[index](values))] = answer
        if len(self._seen) >= _SEEN:
            self._seen.clear()
        self._seen[whole] = answers
        return answers

    def _forget(self) -> None:
        """Too many callers × targets: start again (numbers are given out anew)."""
        self._callers.clear()
        self._contexts.clear()
        self._seen.clear()
        for memo in self._answers:
            memo.clear()

    def _context(self, doc: Document, caller: int, needs: Needs) -> Any:
        """The caller's and target's context, holding the fields ``needs`` of this
        document: the only values handed over to CEL on this decision."""
        context = self._contexts.get(caller)
        if context is None:
            context = self._contexts[caller] = _library().Context(
                {
                    "principal": doc["principal"],
                    "resource": doc["resource"],
                    "action": doc["action"],
                }
            )
        for variable, fields in needs.items():
            value = doc[variable]
            if fields is not None:
                value = {name: value[name] for name in fields if name in value}
            context.add_variable(variable, value)
        return context

    @staticmethod
    def _answer(condition: CelCondition, context: Any) -> bool | None | EvaluationFailed:
        try:
            value = condition.program.execute(context)
        except Exception as exc:
            return EvaluationFailed(f"CEL: {_first_line(exc)}")
        if value.__class__ is bool:
            return value
        try:  # refused on write; kept so that a surprise is a failure, not a 500
            return boolean(value, condition.source)
        except EvaluationFailed as exc:
            return exc


def _needs(paths: tuple[Path, ...]) -> Needs:
    """What of ``request`` and ``time`` a condition reads (a field per path)."""
    needs: Needs = {}
    for variable in _PER_REQUEST:
        mine = [p for p in paths if p[0] == variable]
        if any(len(p) == 1 for p in mine):
            needs[variable] = None
        elif mine:
            needs[variable] = tuple(sorted({p[1] for p in mine}))
    return needs


def _union(all_needs: Sequence[Needs]) -> Needs:
    union: dict[str, set[str] | None] = {}
    for needs in all_needs:
        for variable, fields in needs.items():
            if fields is None or union.get(variable, set()) is None:
                union[variable] = None
            else:
                union.setdefault(variable, set()).update(fields)  # type: ignore[union-attr]
    return {v: None if f is None else tuple(sorted(f)) for v, f in union.items()}


def _picker(indices: list[int]) -> Any:
    """A condition's values out of the decision's, as one hashable value."""
    if not indices:
        return lambda values: ()
    if len(indices) == 1:
        return itemgetter(indices[0])
    return itemgetter(*indices)


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
