from __future__ import annotations

from tests.support import flushed


async def test_chat_plain_is_recorded(gateway, app, upstream):
    response = await gateway.post(
        "/v1/chat/completions",
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert response.status_code == 200, response.text
    await flushed(app)
    usage = (await gateway.get("/api/usage")).json()
    assert usage["count"] == 1
    assert usage["usage"][0]["model"] == "gpt-4o-mini"


def test_live_gateway_openai_sdk(live_gateway):
    import openai

    client = openai.OpenAI(base_url=f"{live_gateway.url}/v1", api_key="x", max_retries=0)
    reply = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], max_tokens=5
    )
    assert reply.usage.completion_tokens == 5
    records = live_gateway.usage()
    assert len(records) == 1
