"""What a conversation worker remembers of its sessions' logs, so that a turn need not
read the log again to build its prompt.

The worker reads a session's history (``sessions.history``) once, then follows the log
by ``seq``: a client's message comes off the bus with its seq, and every event the
worker writes gets one. While each follows on from the last one known, the history held
here is the log's; the moment one does not (another writer came in between — a client's
second message, a tool's result, another worker before a rebalance), the session is
forgotten and its next turn reads the log. So a stale history is never used: a gap
costs one read, nothing else.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from tollhouse.agents.sessions import type_of

_SESSIONS = 1000  # sessions remembered, the least recently used forgotten first
_ROWS = 5000  # a history longer than this is read each time instead of held


@dataclass(frozen=True, slots=True)
class LogRow:
    """An event of the log, as ``sessions.history`` gives it."""

    seq: int
    event_id: str
    kind: str
    type: str
    body: dict[str, Any]


@dataclass(slots=True)
class _Known:
    rows: list[Any]
    last: int


class KnownLogs:
    def __init__(self) -> None:
        self._logs: OrderedDict[str, _Known] = OrderedDict()

    def history(self, event: dict[str, Any]) -> list[Any] | None:
        """The session's history through ``event`` (a client's message or cancel fresh
        off the bus), or ``None`` when it is not known to follow on."""
        session_id = event["session_id"]
        self.saw(event, "conversation_event")
        known = self._logs.get(session_id)
        return list(known.rows) if known is not None else None

    def saw(self, event: dict[str, Any], kind: str, seq: int | None = None) -> None:
        """``event`` is in the log at ``seq`` (else the seq it carries)."""
        session_id = event["session_id"]
        known = self._logs.get(session_id)
        if known is None:
            return
        seq = seq if seq is not None else event.get("seq")
        if seq != known.last + 1:
            del self._logs[session_id]
            return
        known.last = seq
        self._logs.move_to_end(session_id)
        body = {k: v for k, v in event.items() if k != "seq"}
        kind_of = type_of(kind, body)
        if not (kind == "assistant_event" and kind_of == "delta"):  # as the log's history
            known.rows.append(LogRow(seq, body["event_id"], kind, kind_of, body))
            if len(known.rows) > _ROWS:
                del self._logs[session_id]

    def read(self, session_id: str, rows: list[Any]) -> None:
        """The history just read from the log (what followed it is seen by ``saw``)."""
        if len(rows) > _ROWS:
            self._logs.pop(session_id, None)
            return
        last = max((row.seq for row in rows), default=0)
        self._logs[session_id] = _Known(list(rows), last)
        self._logs.move_to_end(session_id)
        while len(self._logs) > _SESSIONS:
            self._logs.popitem(last=False)

    def forget(self, session_id: str) -> None:
        self._logs.pop(session_id, None)
