"""JSON log lines: valid JSON with the event's structured fields."""

from __future__ import annotations

import io
import json
import logging
from datetime import datetime
from decimal import Decimal

import pytest

from tollhouse.ops.logging import JsonFormatter, configure_logging


@pytest.fixture
def json_logger():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("tollhouse.test.json")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    yield logger, stream
    logger.handlers[:] = []
    logger.propagate = True


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_line_has_standard_fields_and_extras(json_logger):
    logger, stream = json_logger
    logger.info(
        "usage write failed; retrying",
        extra={"pending": 3, "request_id": "req_1", "cost": Decimal("0.000001"), "ok": True},
    )
    (entry,) = lines(stream)
    assert entry["message"] == "usage write failed; retrying"
    assert entry["level"] == "info"
    assert entry["logger"] == "tollhouse.test.json"
    assert datetime.fromisoformat(entry["time"]).utcoffset().total_seconds() == 0
    assert entry["pending"] == 3
    assert entry["request_id"] == "req_1"
    assert entry["cost"] == "0.000001"  # not a float
    assert entry["ok"] is True
    for internal in ("args", "msg", "levelno", "pathname", "exc_info", "taskName"):
        assert internal not in entry


def test_json_line_formats_arguments_and_odd_values(json_logger):
    logger, stream = json_logger
    logger.warning('quote " newline \n tab \t %s', "snow ☃", extra={"obj": object()})
    (entry,) = lines(stream)  # one line: the newline is escaped
    assert entry["message"] == 'quote " newline \n tab \t snow ☃'
    assert entry["level"] == "warning"
    assert entry["obj"].startswith("<object object")


def test_json_line_carries_the_exception(json_logger):
    logger, stream = json_logger
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("unhandled error", extra={"path": "/v1/chat/completions"})
    (entry,) = lines(stream)
    assert entry["level"] == "error"
    assert entry["path"] == "/v1/chat/completions"
    assert "ValueError: boom" in entry["exception"]
    assert "Traceback" in entry["exception"]


def test_private_extras_are_left_out(json_logger):
    logger, stream = json_logger
    logger.info("x", extra={"_internal": 1, "public": 2})
    (entry,) = lines(stream)
    assert "_internal" not in entry
    assert entry["public"] == 2


@pytest.fixture
def restore_root_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    uvicorn = {
        name: (logging.getLogger(name).handlers[:], logging.getLogger(name).propagate)
        for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
    }
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, (hs, propagate) in uvicorn.items():
        logging.getLogger(name).handlers[:] = hs
        logging.getLogger(name).propagate = propagate


@pytest.mark.usefixtures("restore_root_logging")
@pytest.mark.parametrize(("fmt", "kind"), [("json", JsonFormatter), ("text", logging.Formatter)])
def test_configure_logging(fmt, kind):
    configure_logging("warning", fmt)
    root = logging.getLogger()
    (handler,) = root.handlers
    assert type(handler.formatter) is kind
    assert root.level == logging.WARNING
    assert logging.getLogger("uvicorn.error").propagate is True
    assert logging.getLogger("uvicorn.error").handlers == []
