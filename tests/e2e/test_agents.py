"""Agent sessions with real processes, on each bus: ``tollhouse serve``, and — on Redis
Streams and Kafka — ``tollhouse worker --role conversation`` and ``--role tools`` beside
it (on the memory bus the server runs both), the dev upstream as the model.

One test per bus walks the whole story, sharing the processes' start-up:

1. "Calculate 2 + 2": the model asks ``python``, a leased sandbox runs it, the model
   answers with the result;
2. a WebSocket client that disconnects mid-reply and resumes from the last event it
   received gets the rest: no gap, no duplicate;
3. a tenant over its budget is refused, with nothing consumed;
4. the conversation worker (on the memory bus, the server) is killed with SIGKILL while
   turns are under way; once one is back, every message is answered exactly once;
5. the ledger has a usage record for every model call an agent made.
"""

from __future__ import annotations

import json
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from tollhouse.cli.processes import free_port

from .conftest import Tollhouse

pytestmark = pytest.mark.e2e


@dataclass
class Agents:
    tollhouse: Tollhouse
    bus: str
    env: dict[str, str]
    url: str

    def admin(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = httpx.post(f"{self.url}/api{path}", json=body, timeout=10)
        assert response.status_code in (200, 201), response.text
        found: dict[str, Any] = response.json()
        return found

    def key(self, customer: str, **budget: Any) -> tuple[str, str]:
        body: dict[str, Any] = {"name": customer}
        if budget:
            body["budget"] = budget
        owner = self.admin("/governance/customers", body)["customer"]["id"]
        made = self.admin("/governance/virtual-keys", {"name": customer, "customer_id": owner})
        return made["virtual_key"]["id"], made["virtual_key"]["value"]

    def ask(self, key: str, text: str, session_id: str | None = None) -> tuple[str, str]:
        body = {"message": text, **({"session_id": session_id} if session_id else {})}
        sent = httpx.post(f"{self.url}/v1/session/message", json=body, headers=_auth(key))
        assert sent.status_code == 200, sent.text
        return sent.json()["session_id"], sent.json()["event_id"]

    def log(self, key: str, session_id: str) -> list[dict[str, Any]]:
        page = httpx.get(
            f"{self.url}/v1/session/{session_id}/events",
            params={"limit": "1000"},
            headers=_auth(key),
        )
        assert page.status_code == 200, page.text
        return list(reversed(page.json()["events"]))

    def turn(self, key: str, session_id: str, turn_id: str, seconds: float = 60) -> list[dict]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            mine = [
                e["event"]
                for e in self.log(key, session_id)
                if e["kind"] == "assistant_event" and e["event"].get("turn_id") == turn_id
            ]
            if mine and mine[-1]["type"] == "done":
                return mine
            time.sleep(0.1)
        raise AssertionError(f"turn {turn_id} did not end:\n{self.outputs()}")

    def outputs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.output()}" for p in self.tollhouse.started)

    def records(self, key_id: str) -> list[dict[str, Any]]:
        page = httpx.get(f"{self.url}/api/usage", params={"key_id": key_id, "limit": "1000"})
        assert page.status_code == 200, page.text
        return list(page.json()["usage"])

    def start_worker(self, role: str) -> None:
        self.tollhouse.start(
            f"worker-{role}-{uuid.uuid4().hex[:4]}",
            ["worker", "--role", role],
            self.env,
            f"{self.url}/readyz",
        )


def _auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


@pytest.fixture(params=["memory", "redis", "kafka"])
def agents(request: pytest.FixtureRequest, tollhouse: Tollhouse) -> Iterator[Agents]:
    upstream = tollhouse.dev_upstream("--chunk-delay-ms", "40")
    extra = {
        "TOLLHOUSE_BUS_LEASE_S": "2",
        "TOLLHOUSE_SESSION_HEARTBEAT_S": "1",
        "TOLLHOUSE_AGENT_TOOL_TIMEOUT_S": "60",
        "TOLLHOUSE_ALLOW_ANONYMOUS": "false",
    }
    if request.param == "redis":
        extra |= {
            "TOLLHOUSE_BUS_BACKEND": "redis",
            "TOLLHOUSE_REDIS_URL": request.getfixturevalue("redis_url"),
        }
    elif request.param == "kafka":
        extra |= {
            "TOLLHOUSE_BUS_BACKEND": "kafka",
            "TOLLHOUSE_BUS_KAFKA_BOOTSTRAP": request.getfixturevalue("kafka_bootstrap"),
            "TOLLHOUSE_BUS_NAMESPACE": f"e2e{uuid.uuid4().hex[:8]}",
            "TOLLHOUSE_DATABASE_URL": request.getfixturevalue("pg_url"),
        }
    if request.param != "memory":
        extra["TOLLHOUSE_AGENT_WORKER_IN_PROCESS"] = "false"
    env = tollhouse.env(upstream, **extra)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    tollhouse.start("gateway", ["serve", "--port", str(port)], env, url + "/readyz")
    found = Agents(tollhouse, request.param, env, url)
    if request.param != "memory":
        found.start_worker("conversation")
        found.start_worker("tools")
    yield found


def test_agent_sessions_end_to_end(agents: Agents) -> None:
    agents.admin("/sandboxes/seed", {"count": 1})
    key_id, key = agents.key("acme")
    model_calls = 0

    # 1. Calculate 2 + 2, through a sandbox.
    session_id, turn_id = agents.ask(key, "Calculate 2 + 2")
    got = agents.turn(key, session_id, turn_id)
    call = next(e for e in got if e["type"] == "tool_call")
    assert call["tool"] == "python" and call["arguments"] == {"code": "print(2 + 2)"}
    [result] = [e["event"] for e in agents.log(key, session_id) if e["kind"] == "tool_result"]
    assert result["ok"] is True and result["output"] == "4\n", result
    assert got[-2]["type"] == "message" and got[-2]["text"] == "The result is 4."
    model_calls += 2

    # 2. A stream cut mid-reply and resumed from its last event: no gap, no duplicate.
    _, second = agents.ask(key, "Tell me a story", session_id)
    ws = f"ws://127.0.0.1:{agents.url.rsplit(':', 1)[1]}/v1/session/{session_id}/stream"
    frames = []
    with connect(f"{ws}?after={second}", additional_headers=_auth(key)) as stream:
        while len([f for f in frames if f.get("type") == "delta"]) < 3:
            frame = json.loads(stream.recv(timeout=30))
            if "seq" in frame:
                frames.append({**frame["event"], "seq": frame["seq"], "id": frame["event_id"]})
    with connect(ws, additional_headers={**_auth(key), "Last-Event-ID": frames[-1]["id"]}) as s:
        while frames[-1]["type"] != "done":
            frame = json.loads(s.recv(timeout=30))
            if "seq" in frame:
                frames.append({**frame["event"], "seq": frame["seq"], "id": frame["event_id"]})
    seqs = [f["seq"] for f in frames]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs  # no gap, no duplicate
    text = "".join(f["text"] for f in frames if f["type"] == "delta")
    assert text == next(f["text"] for f in frames if f["type"] == "message")
    model_calls += 1

    # 3. A tenant over its budget: refused, nothing consumed.
    broke_id, broke = agents.key("broke", max_limit=0, reset_duration="1d")
    poor_session, poor_turn = agents.ask(broke, "Say something")
    refused = agents.turn(broke, poor_session, poor_turn)
    assert [e["type"] for e in refused] == ["error", "done"]
    assert refused[0]["code"] == "budget_exceeded"
    # Recorded as a refusal, at no cost (the log shows it; no limit counts it).
    (refusal,) = agents.records(broke_id)
    assert (refusal["status"], refusal["http_status"], refusal["cost"]) == ("refused", 402, 0)
    assert refusal["session_id"] == poor_session

    # 4. The conversation worker killed mid-batch: every message answered exactly once.
    turns = [agents.ask(key, f"Message number {n}") for n in range(4)]
    deadline = time.monotonic() + 30
    while not any(e["event"].get("type") == "delta" for s, _ in turns for e in agents.log(key, s)):
        assert time.monotonic() < deadline, agents.outputs()
        time.sleep(0.05)
    victim = next(
        p
        for p in agents.tollhouse.started
        if p.name.startswith("worker-conversation" if agents.bus != "memory" else "gateway")
    )
    victim.proc.send_signal(signal.SIGKILL)
    victim.proc.wait(timeout=10)
    if agents.bus == "memory":  # the server was the worker: it comes back on its port
        agents.tollhouse.start(
            "gateway-again",
            ["serve", "--port", agents.url.rsplit(":", 1)[1]],
            agents.env,
            f"{agents.url}/readyz",
        )
    else:
        agents.start_worker("conversation")
    for session, turn in turns:
        mine = agents.turn(key, session, turn)
        assert [e["type"] for e in mine].count("message") == 1, mine
        assert [e["type"] for e in mine].count("done") == 1, mine
        assert mine[-1]["usage"]["completion_tokens"] > 0
    model_calls += len(turns)

    # 5. A usage record for every model call an agent made (a call cut by the kill may
    #    have one too: it was under way, and what it streamed is charged).
    time.sleep(0.5)
    assert len(agents.records(key_id)) >= model_calls
