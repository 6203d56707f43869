"""The CEL batch (what the choke point runs) answers exactly what each condition answers
on its own over the whole document, whatever it remembers: answers per condition and per
decision, contexts per caller and target, forgetting when full. Property-tested over
sequences of decisions by several callers with values that repeat and values that do not."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tollhouse.policies import cel
from tollhouse.policies.decide import Who
from tollhouse.policies.document import Doc, Scope, samples
from tollhouse.policies.engines import EvaluationFailed

CONDITIONS = [
    '(request.model.startsWith("o1") || request.model.startsWith("o3")) && time.hour >= 22',
    "request.stream && request.max_output_tokens > 1000",
    '!resource.region.startsWith("eu") && "eu-only" in principal.tags',
    "size(request.tools) > 0 && !('agents' in principal.tags)",
    "request.input_tokens > 500",
    "10 / (request.max_output_tokens - 7) > 1",  # fails on 7: a failure is an answer too
    "has(request.user) && request.user == 'banned'",
    "size(request) > 3 && time.weekday in [0, 6]",  # request read whole
    'principal.customer.name == "acme" || action == "tool.execute"',
    'request.model.startsWith("gpt-4o") || request.model.startsWith("claude-")',
]
ENGINE = cel.CelEngine()
COMPILED = [ENGINE.compile(source) for source in CONDITIONS]

CALLERS = [
    Who.of(()),
    Who.of((Scope("key", "vk_a", "a", ("agents",)), Scope("customer", "c_1", "acme", ()))),
    Who.of((Scope("key", "vk_b", "b", ("eu-only",)),)),
]
RESOURCES = [
    {"model": "gpt-4o", "provider": "openai", "region": "us"},
    {"model": "claude-3-5", "provider": "anthropic", "region": "eu-west"},
]

decisions = st.lists(
    st.tuples(
        st.integers(0, len(CALLERS) - 1),
        st.integers(0, len(RESOURCES) - 1),
        st.sampled_from(["gpt-4o-mini", "o1-preview", "claude-3-haiku", ""]),
        st.booleans(),
        st.integers(0, 12) | st.integers(990, 1010),  # around 7 and around 1000
        st.integers(0, 1000),
        st.lists(st.sampled_from(["a", "b"]), max_size=2),
        st.sampled_from(["", "banned", "u"]),
        st.integers(0, 23),
        st.integers(0, 6),
    ),
    min_size=1,
    max_size=40,
)


def document(case: tuple[Any, ...]) -> tuple[Doc, Any]:
    caller, target, model, stream, cap, tokens, tools, user, hour, weekday = case
    doc = copy.deepcopy(samples("llm.request")[0])
    doc["principal"] = CALLERS[caller].doc
    doc["resource"] = RESOURCES[target]
    doc["request"].update(
        model=model,
        stream=stream,
        max_output_tokens=cap,
        input_tokens=tokens,
        tools=tools,
        user=user,
    )
    doc["time"].update(hour=hour, weekday=weekday)
    static = (doc["action"], CALLERS[caller], tuple(RESOURCES[target].values()))
    return doc, static


def alone(doc: Doc) -> list[Any]:
    answers: list[Any] = []
    for condition in COMPILED:
        try:
            answers.append(condition.evaluate(ENGINE.prepare(doc)))
        except EvaluationFailed as exc:
            answers.append(f"failed: {exc}")
    return answers


def batched(batch: cel.CelBatch, doc: Doc, static: Any) -> list[Any]:
    return [
        f"failed: {answer}" if isinstance(answer, EvaluationFailed) else answer
        for answer in batch.evaluate(doc, static)
    ]


@settings(max_examples=150, deadline=None)
@given(cases=decisions, repeat=st.booleans())
def test_the_batch_answers_what_each_condition_answers_alone(cases, repeat):
    batch = ENGINE.batch(COMPILED)
    for case in cases + (cases if repeat else []):  # again: answered from what it remembers
        doc, static = document(case)
        assert batched(batch, doc, static) == alone(doc), case


@settings(max_examples=40, deadline=None)
@given(cases=decisions)
def test_forgetting_when_full_changes_no_answer(cases):
    small = pytest.MonkeyPatch()
    try:
        small.setattr(cel, "_CACHED", 2)
        small.setattr(cel, "_SEEN", 2)
        batch = ENGINE.batch(COMPILED)
        for case in cases + cases:
            doc, static = document(case)
            assert batched(batch, doc, static) == alone(doc), case
    finally:
        small.undo()


def test_a_list_in_the_resource_is_a_caller_like_any_other():
    host = cel.CelEngine().compile(
        'resource.hosts.exists(h, h == "evil.test")', None, "tool.execute"
    )
    batch = ENGINE.batch([host])
    doc = copy.deepcopy(samples("tool.execute")[0])
    for hosts, expected in ((["evil.test"], True), (["ok.test"], False), (["evil.test"], True)):
        doc["resource"] = {**doc["resource"], "hosts": hosts}
        static = (doc["action"], Who.of(()), tuple(doc["resource"].values()))
        assert batch.evaluate(doc, static) == [expected]
