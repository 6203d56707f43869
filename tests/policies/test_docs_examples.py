"""Every policy example in docs/policies.md is a valid body whose condition its engine
compiles (the OPA one: a valid data path), so the page cannot drift from the code."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tollhouse.policies.cel import CelEngine
from tollhouse.policies.opa import OpaEngine
from tollhouse.policies.rego import RegoEngine
from tollhouse.policies.schemas import PolicyCreate
from tollhouse.web.validation import parse

PAGE = Path(__file__).parents[2] / "docs" / "policies.md"
BLOCKS = re.findall(r"```json\n(.*?)```", PAGE.read_text(), re.S)
EXAMPLES = [json.loads(block) for block in BLOCKS]
ENGINES = {
    "cel": CelEngine(),
    "rego": RegoEngine(),
    "opa": OpaEngine("http://127.0.0.1:9", 0.1, lambda: None),  # type: ignore[arg-type,return-value]
}


def test_the_page_has_its_examples():
    assert len([e for e in EXAMPLES if "condition" in e]) >= 14


@pytest.mark.parametrize("example", EXAMPLES, ids=[e["name"] for e in EXAMPLES])
def test_each_example_is_a_policy_its_engine_compiles(example):
    body = parse(PolicyCreate, example)
    if body.condition is not None:
        ENGINES[body.engine].compile(body.condition, body.rule, body.action)
