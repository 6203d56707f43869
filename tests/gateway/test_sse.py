"""The SSE decoder (gateway/sse.py): any split of the bytes gives the same events."""

from __future__ import annotations

import orjson
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from tollhouse.gateway.sse import DONE, Event, SSEDecoder, encode

# Field values never contain line breaks (a line break ends the field).
value = st.text(
    alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)),
    max_size=8,
)
newline = st.sampled_from([b"\n", b"\r\n", b"\r"])


@st.composite
def event_blocks(draw) -> tuple[bytes, tuple[str | None, bytes]]:
    """One event's bytes (with one kind of line ending) and the (name, data) it carries."""
    nl = draw(newline)
    name = draw(st.none() | value.filter(lambda v: v.strip() == v and v != ""))
    datas = draw(st.lists(value, min_size=1, max_size=3))
    lines: list[bytes] = []
    if draw(st.booleans()):
        lines.append(b": keep-alive comment")
    if name is not None:
        lines.append(b"event: " + name.encode())
    for data in datas:
        lines.append(b"data: " + data.encode())
    if draw(st.booleans()):
        lines.append(b"id: 42")
    block = nl.join(lines) + nl + nl
    return block, (name, "\n".join(datas).encode())


streams = st.lists(event_blocks(), min_size=1, max_size=5)


def decode_all(chunks: list[bytes]) -> list[Event]:
    decoder = SSEDecoder()
    events: list[Event] = []
    for chunk in chunks:
        events.extend(decoder.feed(chunk))
    events.extend(decoder.close())
    return events


def split_at(raw: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(raw)) for c in cuts})
    pieces, start = [], 0
    for point in points:
        pieces.append(raw[start:point])
        start = point
    pieces.append(raw[start:])
    return pieces


@given(streams)
def test_events_carry_their_name_and_data(blocks):
    raw = b"".join(block for block, _ in blocks)
    events = decode_all([raw])
    assert [(e.event, e.data) for e in events] == [expected for _, expected in blocks]


# Not shrunk: a failing cut position drifts as the shrinker shortens the stream, and
# shrinking takes a minute. The two tests below fail on the same bugs and shrink fast.
@settings(phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(streams, st.lists(st.integers(0, 300), max_size=10))
def test_any_split_yields_the_same_events(blocks, cuts):
    raw = b"".join(block for block, _ in blocks)
    whole = decode_all([raw])
    assert decode_all(split_at(raw, cuts)) == whole


@given(streams)
def test_split_after_every_cr_yields_the_same_events(blocks):
    raw = b"".join(block for block, _ in blocks)
    cuts = [i + 1 for i, byte in enumerate(raw) if byte == ord("\r")]
    assert decode_all(split_at(raw, cuts)) == decode_all([raw])


@given(streams)
def test_byte_by_byte_yields_the_same_events(blocks):
    raw = b"".join(block for block, _ in blocks)
    assert decode_all([raw[i : i + 1] for i in range(len(raw))]) == decode_all([raw])


def test_crlf_split_between_cr_and_lf():
    # A chunk boundary between \r and \n is one line ending, not two (which would end
    # the event early and split "a\nb" into two events).
    expected = [Event(None, b"a\nb", b"data: a\ndata: b\n\n")]
    assert decode_all([b"data: a\r\ndata: b\r\n\r\n"]) == expected
    assert decode_all([b"data: a\r", b"\ndata: b\r\n\r\n"]) == expected


def test_crlf_and_cr_line_endings():
    assert decode_all([b"event: x\r\ndata: 1\r\n\r\n"]) == [
        Event("x", b"1", b"event: x\ndata: 1\n\n")
    ]
    assert decode_all([b"data: 1\r\rdata: 2\r\r"]) == [
        Event(None, b"1", b"data: 1\n\n"),
        Event(None, b"2", b"data: 2\n\n"),
    ]


def test_raw_bytes_are_forwarded_as_sent():
    raw = b'event: message_start\ndata: {"type":"message_start"}\n\n'
    (event,) = decode_all([raw])
    assert event.raw == raw
    assert event.event == "message_start"
    assert orjson.loads(event.data) == {"type": "message_start"}


def test_field_parsing_rules():
    (event,) = decode_all([b"data:no-space\ndata:  two-spaces\n\n"])
    assert event.data == b"no-space\n two-spaces"
    (event,) = decode_all([b"data\n\n"])  # a field with no colon has an empty value
    assert event.data == b""


def test_comments_and_empty_blocks_yield_nothing():
    assert decode_all([b": ping\n\n", b"\n\n", b": a\n: b\n\n"]) == []


def test_unterminated_last_event_is_returned_by_close():
    decoder = SSEDecoder()
    assert decoder.feed(b"data: [DONE]") == []
    assert decoder.close() == [Event(None, b"[DONE]", b"data: [DONE]\n\n")]
    assert decoder.close() == []


def test_done_marker():
    assert decode_all([DONE]) == [Event(None, b"[DONE]", DONE)]


@given(
    st.dictionaries(value, value | st.integers(-(2**63), 2**63 - 1), max_size=4),
    st.none() | st.just("delta"),
)
def test_encode_round_trips_through_the_decoder(data, name):
    (event,) = decode_all([encode(data, event=name)])
    assert event.event == name
    assert orjson.loads(event.data) == data
