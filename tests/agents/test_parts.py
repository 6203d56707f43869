"""The agents' small parts on their own: where a redelivered turn resumes, what the
worker remembers of a log and when it forgets, which hosts a tool reaches and which it
may, and the agent settings refused at start with the setting named."""

from __future__ import annotations

import pytest

from tollhouse.agents import known as known_module
from tollhouse.agents.known import KnownLogs, LogRow
from tollhouse.agents.tools import host_allowed, hosts
from tollhouse.agents.worker import _resume
from tollhouse.config import load_settings
from tollhouse.errors import ConfigError


def row(seq: int, kind: str, type_: str, **body: object) -> LogRow:
    event = {"event_id": f"evt_{seq:08d}", "type": type_, **body}
    return LogRow(seq, event["event_id"], kind, type_, event)


def test_a_turn_resumes_from_its_last_step():
    assert _resume([]) == (0, [])  # fresh
    text = row(2, "assistant_event", "message", step=0)
    assert _resume([text]) == (None, [])  # answered: only its end is missing
    call = row(3, "assistant_event", "tool_call", step=0, call_id="c1", tool="echo")
    assert _resume([text, call]) == (1, [{"call_id": "c1", "tool": "echo", "arguments": {}}])
    later = row(4, "assistant_event", "message", step=1)
    assert _resume([text, call, later]) == (None, [])


def test_the_worker_remembers_a_log_while_it_follows_on(monkeypatch):
    logs = KnownLogs()
    message = {"event_id": "evt_1", "session_id": "ses_a", "type": "message", "seq": 1}
    assert logs.history(message) is None  # nothing read yet
    logs.read("ses_a", [row(1, "conversation_event", "message")])
    logs.saw({"event_id": "evt_2", "session_id": "ses_a", "type": "delta"}, "assistant_event", 2)
    logs.saw({"event_id": "evt_3", "session_id": "ses_a", "type": "done"}, "assistant_event", 3)
    follows = {"event_id": "evt_4", "session_id": "ses_a", "type": "message", "seq": 4}
    history = logs.history(follows)
    assert [r.seq for r in history or []] == [1, 3, 4]  # the delta is not history
    gap = {"event_id": "evt_9", "session_id": "ses_a", "type": "message", "seq": 9}
    assert logs.history(gap) is None  # someone else wrote in between: read the log
    logs.read("ses_a", [row(1, "conversation_event", "message")])
    logs.forget("ses_a")
    assert logs.history({**follows, "seq": 2}) is None

    monkeypatch.setattr(known_module, "_SESSIONS", 2)
    monkeypatch.setattr(known_module, "_ROWS", 2)
    for name in ("ses_1", "ses_2", "ses_3"):  # the least recently used goes
        logs.read(name, [row(1, "conversation_event", "message")])
    one = {"event_id": "evt_x", "session_id": "ses_1", "type": "message", "seq": 2}
    assert logs.history(one) is None
    assert logs.history({**one, "session_id": "ses_3"}) is not None  # two rows: kept
    assert logs.history({**one, "session_id": "ses_3", "seq": 3}) is None  # three: too long
    logs.read("ses_4", [row(n, "conversation_event", "message") for n in (1, 2, 3)])
    assert logs.history({**one, "session_id": "ses_4", "seq": 4}) is None


def test_the_hosts_a_tool_reaches_and_the_allow_list():
    assert hosts("http_get", {"url": "https://API.example.com/x"}) == ["api.example.com"]
    assert hosts("http_get", {"url": "nonsense"}) == []
    assert hosts("python", {"code": "1"}) == []
    allowed = ["example.org", ".example.com"]
    assert host_allowed("example.org.", allowed)
    assert host_allowed("a.b.example.com", allowed) and host_allowed("example.com", allowed)
    assert not host_allowed("badexample.com", allowed)
    assert not host_allowed("example.org.evil.net", allowed)


@pytest.mark.parametrize(
    ("setting", "value", "says"),
    [
        ("agent_tools", "echo,rm", "unknown tool 'rm'"),
        ("agent_budget_window", "a day", "Invalid reset duration"),
        ("agent_persona_token_budgets", "{not json", "must be a JSON object"),
        ("agent_persona_token_budgets", '{"support": -1}', "tokens >= 0"),
    ],
)
def test_agent_settings_are_checked_at_start(setting, value, says):
    with pytest.raises(ConfigError) as refused:
        load_settings(env={f"TOLLHOUSE_{setting.upper()}": value})
    assert setting in refused.value.message and says in refused.value.message


def test_persona_budgets_come_from_the_environment_as_json():
    settings = load_settings(env={"TOLLHOUSE_AGENT_PERSONA_TOKEN_BUDGETS": '{"*": 5}'})
    assert settings.agent_persona_token_budgets == {"*": 5}
