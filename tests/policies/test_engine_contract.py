"""One contract, three engines: CEL, Rego (regopy, in-process) and OPA (the loopback
stand-in, ``devtools/opa_server.py``, over its REST API).

Each engine writes the same rules in its own language (``RULES``); every test compiles
one and checks the answers the choke point relies on: true matches, false does not,
undefined is ``None`` and never ``False``, anything that is not a boolean raises
``EvaluationFailed``, invalid source is refused on compile naming the problem, and one
compiled condition answers many documents, in turn and at once.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp
import pytest
from devtools.opa_server import OpaServer

from tollhouse.policies.cel import CelEngine
from tollhouse.policies.document import SAMPLES, Doc, moment
from tollhouse.policies.engines import Condition, EvaluationFailed, PolicyEngine, PolicyInvalid
from tollhouse.policies.opa import OpaEngine
from tollhouse.policies.rego import RegoEngine

_EVENING = (
    'default match := false\nmatch if {\n    "intern" in input.principal.tags\n'
    '    input.time.hour >= 18\n    startswith(input.request.model, "gpt-")\n}\n'
)

# The rules, per engine. Rego and OPA share the modules (OPA's path is
# contract/<rule>/match); CEL has no undefined, so no "undefined" rule.
RULES: dict[str, dict[str, str]] = {
    "cel": {
        "stream": "request.stream",
        "admin": '"admin" in principal.tags',
        "evening": '"intern" in principal.tags && time.hour >= 18'
        ' && request.model.startsWith("gpt-")',
        "not_boolean": 'request.model == "weird" ? "yes" : false',
    },
    "rego": {
        "stream": "default match := false\nmatch if input.request.stream\n",
        "admin": 'default match := false\nmatch if "admin" in input.principal.tags\n',
        "evening": _EVENING,
        # Defined for the samples' models (write-time check), undefined for any other.
        "undefined": 'match if input.request.model == "gpt-4o-mini"\n'
        'match := false if input.request.model == ""\n',
        "not_boolean": 'default match := false\nmatch := "yes" if input.request.model == "weird"\n',
    },
}

INVALID = {  # source, what the refusal must name
    "cel": ("request.stream &&", "CEL"),
    "rego": ("package contract.bad\nmatch if input.request.stream ==\n", "line 2, column 31"),
    "opa": ("contract/../match", "'..'"),
}


@dataclass
class Flavor:
    name: str
    engine: PolicyEngine
    compile: Callable[[str], Condition]  # a rule of RULES by name


@pytest.fixture(params=["cel", "rego", "opa"])
def flavor(request: pytest.FixtureRequest) -> Flavor:
    name = request.param
    if name == "cel":
        cel = CelEngine()
        return Flavor(name, cel, lambda rule: cel.compile(RULES["cel"][rule]))
    if name == "rego":
        rego = RegoEngine()
        return Flavor(
            name,
            rego,
            lambda rule: rego.compile(f"package contract.{rule}\n{RULES['rego'][rule]}"),
        )
    server: OpaServer = request.getfixturevalue("opa")
    session: aiohttp.ClientSession = request.getfixturevalue("http")
    opa = OpaEngine(server.url, 2.0, session)

    def compile_opa(rule: str) -> Condition:
        server.put_policy(f"contract_{rule}", f"package contract.{rule}\n{RULES['rego'][rule]}")
        return opa.compile(f"contract/{rule}/match")

    return Flavor(name, opa, compile_opa)


def doc(
    *, tags: list[str] | None = None, hour: int = 12, model: str = "gpt-4o", stream: bool = False
) -> Doc:
    """The full sample document with these fields changed."""
    found = copy.deepcopy(SAMPLES[0])
    found["principal"]["tags"] = ["eu"] if tags is None else tags
    found["time"] = moment(datetime(2026, 5, 4, hour, 15, tzinfo=UTC))
    found["request"]["model"] = found["resource"]["model"] = model
    found["request"]["stream"] = stream
    return found


async def answer(flavor: Flavor, condition: Condition, document: Doc) -> bool | None:
    """The condition's answer, asked the way the choke point asks its engine (and, for an
    embedded engine, both ways, which must agree)."""
    prepared = flavor.engine.prepare(document)
    got = await condition.evaluate_async(prepared)
    if not condition.is_async:
        assert condition.evaluate(prepared) is got
    return got


async def test_a_true_condition_matches(flavor: Flavor):
    condition = flavor.compile("stream")
    assert await answer(flavor, condition, doc(stream=True)) is True


async def test_a_false_condition_does_not_match(flavor: Flavor):
    condition = flavor.compile("admin")
    assert await answer(flavor, condition, doc(tags=["intern"])) is False
    assert await answer(flavor, flavor.compile("stream"), doc(stream=False)) is False


async def test_undefined_is_none_and_never_false(flavor: Flavor):
    if flavor.name == "cel":
        pytest.skip("CEL has no undefined: an expression answers a value, and null is refused")
    condition = flavor.compile("undefined")
    assert await answer(flavor, condition, doc(model="claude-sonnet-4")) is None
    assert await answer(flavor, condition, doc(model="gpt-4o-mini")) is True
    assert await answer(flavor, condition, doc(model="")) is False


async def test_an_answer_that_is_not_a_boolean_fails(flavor: Flavor):
    condition = flavor.compile("not_boolean")
    assert await answer(flavor, condition, doc(model="gpt-4o")) is False
    with pytest.raises(EvaluationFailed, match="not a boolean"):
        await condition.evaluate_async(flavor.engine.prepare(doc(model="weird")))


@pytest.mark.parametrize(
    ("tags", "hour", "model", "expected"),
    [
        (["intern", "eu"], 18, "gpt-4o", True),
        (["intern"], 23, "gpt-4o-mini", True),
        (["intern"], 17, "gpt-4o", False),  # hour comparison
        (["research", "eu"], 20, "gpt-4o", False),  # tags membership
        ([], 20, "gpt-4o", False),
        (["intern"], 20, "claude-sonnet-4", False),  # string prefix
        (["intern"], 20, "gpt", False),
    ],
)
async def test_fields_of_principal_request_and_time(
    flavor: Flavor, tags: list[str], hour: int, model: str, expected: bool
):
    condition = flavor.compile("evening")
    assert await answer(flavor, condition, doc(tags=tags, hour=hour, model=model)) is expected


CASES = [
    (doc(tags=["intern"], hour=19, model="gpt-4o"), True),
    (doc(tags=["intern"], hour=9, model="gpt-4o"), False),
    (doc(tags=["ops"], hour=19, model="gpt-4o"), False),
    (doc(tags=["intern"], hour=19, model="o3"), False),
]


async def test_one_condition_answers_many_documents_in_turn_and_at_once(flavor: Flavor):
    condition = flavor.compile("evening")
    for document, expected in itertools.islice(itertools.cycle(CASES), 40):
        assert await answer(flavor, condition, document) is expected
    batch = list(itertools.islice(itertools.cycle(CASES), 50))
    answers = await asyncio.gather(
        *(condition.evaluate_async(flavor.engine.prepare(d)) for d, _ in batch)
    )
    assert answers == [expected for _, expected in batch]


async def test_two_conditions_share_one_prepared_document(flavor: Flavor):
    evening, stream = flavor.compile("evening"), flavor.compile("stream")
    for hour, streaming in [(19, True), (9, True), (19, False), (9, False)]:
        prepared = flavor.engine.prepare(doc(tags=["intern"], hour=hour, stream=streaming))
        assert await evening.evaluate_async(prepared) is (hour == 19)
        assert await stream.evaluate_async(prepared) is streaming


def test_invalid_source_is_refused_naming_the_problem(flavor: Flavor):
    source, named = INVALID[flavor.name]
    with pytest.raises(PolicyInvalid) as refused:
        flavor.engine.compile(source)
    assert refused.value.param == "condition"
    assert named in refused.value.message


def test_an_empty_condition_is_refused(flavor: Flavor):
    with pytest.raises(PolicyInvalid, match="empty"):
        flavor.engine.compile("  \n")


def test_the_undefined_rule_is_defined_on_the_samples():
    """The "undefined" rule passes Rego's write-time check by naming the samples' models."""
    assert [sample["request"]["model"] for sample in SAMPLES] == ["gpt-4o-mini", ""]
