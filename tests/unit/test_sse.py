from __future__ import annotations

import pytest

from antidistill.backends.sse import DONE, SSEError, SSEParser, format_sse

STREAM = (
    b": keep-alive comment\r\n"
    b"event: message\r\n"
    b'data: {"a": 1}\r\n'
    b"\r\n"
    b"id: 7\n"
    b"data:first line\n"
    b"data:  second line keeps one space\n"
    b"retry: 100\n"
    b"\n"
    b'data: {"b": 2}\r\r'
    b"data\n\n"
    b"data: [DONE]\n\n"
)
EXPECTED = [b'{"a": 1}', b"first line\n second line keeps one space", b'{"b": 2}', b"", DONE]


def _feed_all(parser: SSEParser, pieces: list[bytes]) -> list[bytes]:
    out: list[bytes] = []
    for piece in pieces:
        out.extend(parser.feed(piece))
    return out


def test_whole_stream_in_one_chunk() -> None:
    p = SSEParser()
    assert p.feed(STREAM) == EXPECTED
    assert not p.pending


def test_split_at_every_byte() -> None:
    p = SSEParser()
    assert _feed_all(p, [STREAM[i : i + 1] for i in range(len(STREAM))]) == EXPECTED
    assert not p.pending


@pytest.mark.parametrize("cut", range(1, len(STREAM)))
def test_split_into_two_at_every_position(cut: int) -> None:
    assert _feed_all(SSEParser(), [STREAM[:cut], STREAM[cut:]]) == EXPECTED


def test_crlf_split_between_cr_and_lf_is_one_line_end() -> None:
    p = SSEParser()
    assert p.feed(b"data: a\r") == []
    assert p.feed(b"\ndata: b\r") == []
    assert p.feed(b"\n\r") == []
    assert p.feed(b"\n") == [b"a\nb"]


def test_event_without_data_is_not_dispatched_and_bom_is_skipped() -> None:
    p = SSEParser()
    assert p.feed(b"\xef\xbb") == []
    assert p.feed(b"\xbfevent: ping\n\n: hi\n\ndata: x\n\n") == [b"x"]


def test_pending_reports_a_cut_stream() -> None:
    p = SSEParser()
    assert p.feed(b'data: {"x": 1}\n\ndata: {"cho') == [b'{"x": 1}']
    assert p.pending
    q = SSEParser()
    q.feed(b"data: complete line but no blank line\n")
    assert q.pending


def test_oversized_event_raises() -> None:
    p = SSEParser(max_event_bytes=64)
    with pytest.raises(SSEError):
        p.feed(b"data: " + b"x" * 100)
    q = SSEParser(max_event_bytes=64)
    with pytest.raises(SSEError):
        for _ in range(20):
            q.feed(b"data: 0123456789\n")


@pytest.mark.parametrize(
    "payload", [b'{"a": 1}', b"", b"two\nlines", b"crlf\r\nand\rcr", b"trailing\n", b"[DONE]"]
)
def test_format_sse_round_trips(payload: bytes) -> None:
    frame = format_sse(payload)
    assert frame.endswith(b"\n\n")
    expected = payload.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    assert SSEParser().feed(frame) == [expected]


def test_format_sse_simple_frame() -> None:
    assert format_sse(b'{"x":1}') == b'data: {"x":1}\n\n'
