"""Official SDK clients pointed at a live Tollhouse, exactly as users configure them."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import openai
import pytest
from tests.support import LiveServer

API_KEY = "sk-tollhouse-contract"


@pytest.fixture
def openai_client(live_gateway: LiveServer) -> Iterator[openai.OpenAI]:
    # max_retries=0: each SDK call is one gateway request, so the ledger count is exact.
    with openai.OpenAI(base_url=f"{live_gateway.url}/v1", api_key=API_KEY, max_retries=0) as client:
        yield client


@pytest.fixture
def anthropic_client(live_gateway: LiveServer) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=live_gateway.url, api_key=API_KEY, max_retries=0) as client:
        yield client
