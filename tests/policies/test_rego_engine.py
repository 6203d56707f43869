"""The Rego engine's own checks on write, and its answers beyond the shared contract."""

from __future__ import annotations

import copy
import threading

import pytest

from tollhouse.policies.document import SAMPLES, Doc
from tollhouse.policies.engines import EvaluationFailed, PolicyInvalid
from tollhouse.policies.rego import RegoEngine

engine = RegoEngine()


def refused(source: str, rule: str | None = None) -> PolicyInvalid:
    with pytest.raises(PolicyInvalid) as info:
        engine.compile(source, rule)
    return info.value


def with_model(model: str) -> Doc:
    found = copy.deepcopy(SAMPLES[0])
    found["request"]["model"] = model
    return found


def test_a_syntax_error_names_regopy_s_message_and_where():
    error = refused("package p\n\ndefault match := false\nmatch if input.request.stream ==\n")
    assert error.message == "condition: Rego: Invalid boolean operator (line 4, column 31)"
    assert error.param == "condition"


def test_a_module_without_a_package_is_refused():
    assert "no package line" in refused("default match := false\n").message
    assert "names joined by dots" in refused('package a["b-c"]\nmatch := true\n').message


@pytest.mark.parametrize("rule", ["1st", "allow-all", "if", "", "data.p.match"])
def test_a_rule_that_is_not_a_name_is_refused(rule: str):
    error = refused("package p\ndefault match := false\n", rule)
    assert error.param == "rule" and "not a rule name" in error.message


def test_a_rule_the_module_does_not_have_is_refused_listing_those_it_has():
    error = refused("package p\ndefault match := false\ndefault other := true\n", "allow")
    assert error.param == "rule"
    assert "no rule 'allow'" in error.message and "match, other" in error.message


def test_the_rule_to_query_can_be_named_and_packages_can_be_nested():
    condition = engine.compile(
        "package tollhouse.authz\n\ndefault allow := false\nallow if input.request.stream\n",
        "allow",
    )
    assert condition.query == "data.tollhouse.authz.allow"
    assert [condition.evaluate(engine.prepare(s)) for s in SAMPLES] == [True, False]


def test_undefined_on_a_sample_is_refused_with_the_fix():
    # Undefined denies at the choke point: without a default, this rule would deny every
    # request that does not stream, which a `match` rule never means.
    error = refused("package p\nmatch if input.request.stream\n")
    assert "undefined for a sample document" in error.message
    assert "default match := false" in error.message


@pytest.mark.parametrize(
    "body",
    [
        "match if y > 1",  # an unsafe variable: rego-cpp 1.5.2 compiles it as undefined
        'match if input.request.modle == "gpt-4o-mini"',
    ],
)
def test_what_regopy_does_not_refuse_is_caught_as_undefined(body: str):
    assert "undefined" in refused(f"package p\n{body}\n").message


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ("match := input.request.model", "str"),
        ("match contains tag if some tag in input.principal.tags", "list"),
        ("match := null", "null"),
        ("match := input.request.max_output_tokens", "int"),
    ],
)
def test_an_answer_that_is_not_a_boolean_is_refused_on_write(body: str, named: str):
    error = refused(f"package p\n{body}\n")
    assert "not a boolean" in error.message and named in error.message


def test_an_error_on_a_sample_is_refused():
    assert "Recursion" in refused("package p\nmatch if match\n").message
    unknown = refused("package p\nmatch if no_such_function(input.request.model)\n")
    assert "Function not found: no_such_function" in unknown.message


def test_an_error_only_some_inputs_raise_fails_the_evaluation():
    condition = engine.compile(
        "package p\ndefault match := false\n"
        'match := true if input.request.model == "x"\n'
        'match := false if input.request.model == "x"\n'
    )
    assert condition.evaluate(engine.prepare(with_model("y"))) is False
    with pytest.raises(EvaluationFailed, match="conflicting"):
        condition.evaluate(engine.prepare(with_model("x")))


def test_the_shared_runner_answers_threads_evaluating_at_once():
    """regopy releases the GIL inside rego-cpp; the runner's lock keeps one thread from
    swapping the input under another's query."""
    prefix = engine.compile(
        'package p\ndefault match := false\nmatch if startswith(input.request.model, "gpt")\n'
    )
    exact = engine.compile(
        'package q\ndefault match := false\nmatch if input.request.model == "o3"\n'
    )
    models = ["gpt-4o", "o3", "claude", "gpt-5"]
    prepared = {model: engine.prepare(with_model(model)) for model in models}
    wrong: list[str] = []

    def work(offset: int) -> None:
        for i in range(150):
            model = models[(i + offset) % len(models)]
            if prefix.evaluate(prepared[model]) is not model.startswith("gpt"):
                wrong.append(model)
            if exact.evaluate(prepared[model]) is not (model == "o3"):
                wrong.append(model)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []


def test_an_oversized_or_empty_module_is_refused():
    assert "at most" in refused("package p\n" + "# padding\n" * 4000).message
    assert "empty" in refused("\n\t").message
