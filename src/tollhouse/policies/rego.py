"""The Rego engine: a condition is a Rego module evaluated in-process by ``regopy``
(rego-cpp), for users who already write Rego; ``rule`` names the rule to query
(``match`` unless told), in the package the module's ``package`` line names.

Compiled once into a *bundle* (``Interpreter.build``): a plan that a separate runner
interpreter executes with ``query_bundle``, several times faster than re-querying a
plain interpreter. The query binds the rule (``answer := data.<package>.<rule>``):
queried bare, regopy reports a ``false`` rule as ``undefined``, the one confusion this
engine must never make (``engines.py``).

Checked on write, as CEL conditions are: the module must parse (regopy's error with its
line and column), have a ``package`` of dotted names and the rule asked for, and answer
a boolean for each sample document of the policy's action (``document.samples``). An
*undefined* answer on a sample is refused too, with the fix (``default match :=
false``): undefined denies the request at the choke point, so a rule without a default
would deny every request its body does not hold for, which is never what a ``match``
rule means. That check is also what catches what rego-cpp 1.5.2 does not refuse itself:
a rule the module does not have, an unsafe variable, an unknown function, a misspelt
field all make a rule silently undefined. A rule that is undefined only for some real
inputs (rules of both values, no default) still answers ``None`` at request time, and
the request is denied.

Per decision the document becomes one ``regopy.Input`` (``prepare``), which every Rego
condition shares: converting the document is most of the cost of a decision. All
conditions of an engine run on its one runner interpreter, which keeps the last input
set, under a lock: evaluation is synchronous, so on the event loop's thread nothing
interleaves anyway, but regopy releases the GIL inside rego-cpp, and the lock keeps a
caller on another thread (a worker, a test) from swapping the input mid-query.
"""

from __future__ import annotations

import json
import re
import threading
from typing import Any

from regopy import Bundle, Input, Interpreter, LogLevel, RegoError  # type: ignore[import-untyped]

from tollhouse.policies.document import samples
from tollhouse.policies.engines import (
    Document,
    EngineName,
    EvaluationFailed,
    PolicyInvalid,
    boolean,
)

MAX_SOURCE = 32768  # characters: a module of a few rules, not a policy library
DEFAULT_RULE = "match"
MODULE_NAME = "policy.rego"  # what regopy's error locations name
_ANSWER = "answer"  # the query's variable; query variables never clash with the module's

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PACKAGE_LINE = re.compile(r"^[ \t]*package[ \t]+([^\s#]+)", re.M)
_RULE_HEAD = re.compile(
    r"^(?:default[ \t]+)?([A-Za-z_][A-Za-z0-9_]*)[ \t]*(?:if\b|:=|=(?!=)|\{|contains\b|\[|\()",
    re.M,
)
_KEYWORDS = frozenset(
    {"as", "contains", "default", "else", "every", "false", "if", "import", "in", "not"}
    | {"null", "package", "some", "true", "with"}
)
# rego-cpp's errors are S-expressions of length-prefixed strings:
# (error 11:policy.rego|40|2 (errormsg 24:Invalid boolean operator) …)
_ERROR_MSG = re.compile(r"\(errormsg (\d+):")
_ERROR_AT = re.compile(r"\(error \d+:" + re.escape(MODULE_NAME) + r"\|(\d+)\|")


class _Runner:
    """The interpreter that executes bundles, with the input it was last given."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.interpreter = Interpreter()
        self.interpreter.log_level = LogLevel.NONE
        self.input: Input | None = None


class RegoCondition:
    is_async = False

    def __init__(self, source: str, query: str, bundle: Bundle, runner: _Runner) -> None:
        self.source = source
        self.query = query
        self._bundle = bundle
        self._runner = runner

    def evaluate(self, prepared: Any) -> bool | None:
        runner = self._runner
        try:
            with runner.lock:
                if runner.input is not prepared:
                    runner.interpreter.set_input(prepared)
                    runner.input = prepared
                output = runner.interpreter.query_bundle(self._bundle)
                ok = output.ok()
                results = output.results
        except json.JSONDecodeError as exc:  # an error term where regopy expects JSON
            raise EvaluationFailed(f"Rego: {_error_text(exc.doc, self.source)}") from None
        except RegoError as exc:
            raise EvaluationFailed(f"Rego: {_error_text(str(exc), self.source)}") from None
        if not ok:  # regopy keeps no message for these
            raise EvaluationFailed(
                f"Rego: {self.query} failed (rules with conflicting values, or a built-in"
                " called with the wrong arguments)"
            )
        bindings = results[0].bindings if results else {}
        if _ANSWER not in bindings:
            return None  # undefined
        value = bindings[_ANSWER]
        if value is None:  # a rule whose value is null is defined: not a boolean
            raise EvaluationFailed(f"Rego: {self.query} answered null, not a boolean")
        return boolean(value, self.query)

    async def evaluate_async(self, prepared: Any) -> bool | None:
        return self.evaluate(prepared)


class RegoEngine:
    name: EngineName = "rego"

    def __init__(self) -> None:
        self._runner = _Runner()

    def compile(
        self, source: str, rule: str | None = None, action: str = "llm.request"
    ) -> RegoCondition:
        rule = DEFAULT_RULE if rule is None else rule
        if not _IDENTIFIER.fullmatch(rule) or rule in _KEYWORDS:
            raise PolicyInvalid(
                f"Rego: the rule {rule[:64]!r} is not a rule name (letters, digits, _)",
                param="rule",
            )
        if not source.strip():
            raise PolicyInvalid("the condition is empty (leave it out to always match)")
        if len(source) > MAX_SOURCE:
            raise PolicyInvalid(f"a Rego module is at most {MAX_SOURCE} characters")
        package = _package(source)
        query = f"{_ANSWER} := data.{package}.{rule}"
        builder = Interpreter()
        builder.log_level = LogLevel.NONE  # rego-cpp prints its errors to stderr otherwise
        try:
            builder.add_module(MODULE_NAME, source)
            bundle = builder.build(query)
        except RegoError as exc:
            raise PolicyInvalid(f"Rego: {_error_text(str(exc), source)}") from None
        if not bundle.ok():
            raise PolicyInvalid("Rego: the module does not compile")
        condition = RegoCondition(source, f"data.{package}.{rule}", bundle, self._runner)
        for sample in samples(action):
            try:
                answer = condition.evaluate(self.prepare(sample))
            except EvaluationFailed as exc:
                where = f"a sample {sample['action']} document"
                raise PolicyInvalid(f"{exc} (on {where}: docs/policies.md)") from None
            if answer is None:
                raise _undefined(condition.query, source, rule)
        return condition

    def prepare(self, doc: Document) -> Any:
        return Input(dict(doc))


def _package(source: str) -> str:
    found = _PACKAGE_LINE.search(source)
    if found is None:
        raise PolicyInvalid("Rego: the module has no package line (package tollhouse.authz)")
    package = found.group(1)
    if not all(_IDENTIFIER.fullmatch(part) for part in package.split(".")):
        raise PolicyInvalid(
            f"Rego: package {package[:64]!r}: a package here is names joined by dots"
            " (package tollhouse.authz)"
        )
    return package


def _undefined(query: str, source: str, rule: str) -> PolicyInvalid:
    """Why the rule is undefined for a sample, as well as can be told: regopy cannot list
    a module's rules (a missing one is just undefined, and the plan's list of them is
    only reachable by saving the bundle, which corrupts memory in regopy 1.5.2), so the
    rules are read from the heads at the start of a line, for the message only."""
    rules = sorted(set(_RULE_HEAD.findall(source)) - _KEYWORDS)
    if rule not in rules:
        known = ", ".join(rules) or "none found"
        return PolicyInvalid(
            f"Rego: the module has no rule {rule!r} ({query} is undefined; its rules: {known})",
            param="rule",
        )
    return PolicyInvalid(
        f"Rego: {query} is undefined for a sample document (docs/policies.md), and "
        f"undefined denies the request: add `default {rule} := false` (or it reads a "
        "variable, function or field that does not exist)"
    )


def _error_text(raw: str, source: str) -> str:
    """regopy's first error message, with its line and column in the module."""
    found = _ERROR_MSG.search(raw)
    if found is None:
        return raw.strip().splitlines()[0][:200] if raw.strip() else "the module is invalid"
    start = found.end()
    message = raw[start : start + int(found.group(1))]
    more = len(_ERROR_MSG.findall(raw)) - 1
    at = _ERROR_AT.search(raw)
    if at is not None:
        before = source.encode()[: int(at.group(1))]
        line = before.count(b"\n") + 1
        column = len(before) - (before.rfind(b"\n") + 1) + 1
        message += f" (line {line}, column {column})"
    if more > 0:
        message += f" and {more} more error{'s' if more > 1 else ''}"
    return message[:300]
