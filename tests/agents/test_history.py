"""What a turn's model call is told of its session (``history.messages``): each message
then its own turn's answer, whatever the log's interleaving; tool results right after
their calls, first answer kept, a failed call's error with what it printed, a call
left without a result answered as such; deltas and ends of turns left out; a turn sees
the messages up to its own."""

from __future__ import annotations

from typing import Any

from tollhouse.agents.history import messages
from tollhouse.agents.known import LogRow


class Log:
    def __init__(self) -> None:
        self.rows: list[LogRow] = []

    def add(self, kind: str, **body: Any) -> str:
        seq = len(self.rows) + 1
        event_id = f"evt_{seq:08d}"
        body = {"event_id": event_id, **body}
        self.rows.append(LogRow(seq, event_id, kind, str(body.get("type", kind)), body))
        return event_id

    def said(self, text: str) -> str:
        return self.add("conversation_event", type="message", message=text)

    def answer(self, turn: str, kind: str, **body: Any) -> str:
        return self.add("assistant_event", type=kind, turn_id=turn, **body)


def test_a_message_sent_during_a_turn_comes_after_that_turn_s_answer():
    log = Log()
    first = log.said("one")
    log.answer(first, "delta", text="re", step=0)
    second = log.said("two")  # double-texted while the first turn ran
    log.answer(first, "message", text="reply one", step=0)
    log.answer(first, "done")
    assert messages(log.rows) == [
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "reply one"},
        {"role": "user", "content": "two"},
    ]
    # The first turn, had it been asked again, sees only its own message.
    assert messages(log.rows, until_seq=1) == messages(log.rows)[:2]
    assert second


def test_tool_calls_are_answered_right_after_them():
    log = Log()
    turn = log.said("Calculate 2 + 2")
    log.answer(turn, "message", text="Let me run it", step=0)
    for call in ("c1", "c2"):
        log.answer(turn, "tool_call", call_id=call, tool="python", arguments={"code": "x"}, step=0)
    log.said("and hurry")  # logged before the results came
    log.add("tool_result", call_id="c2", tool="python", ok=False, error="exited with 1",
            output="Traceback …")  # fmt: skip
    log.add("tool_result", call_id="c2", tool="python", ok=True, output="late second answer")
    log.answer(turn, "tool_call", call_id="c3", tool="echo", arguments={}, step=1)
    said = messages(log.rows, system="be brief")
    assert said[0] == {"role": "system", "content": "be brief"}
    assert said[1] == {"role": "user", "content": "Calculate 2 + 2"}
    assert said[2]["content"] == "Let me run it"
    assert [c["id"] for c in said[2]["tool_calls"]] == ["c1", "c2"]  # one step, one message
    assert said[3] == {
        "role": "tool",
        "tool_call_id": "c1",
        "content": "error: no result (the turn ended before it came)",
    }
    assert said[4]["content"] == "error: exited with 1\nTraceback …"  # the first answer
    assert said[5]["content"] is None and [c["id"] for c in said[5]["tool_calls"]] == ["c3"]
    assert said[6]["tool_call_id"] == "c3"
    assert said[7] == {"role": "user", "content": "and hurry"}
