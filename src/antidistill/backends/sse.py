"""Server-sent events on the wire: an incremental parser for reading an upstream's stream and
``format_sse`` for writing one.

Only what OpenAI-compatible streams use is interpreted: ``data:`` fields (several lines of one event
are joined with ``\\n``), comments (``:`` lines) and the ``event:``/``id:``/``retry:`` fields are
skipped, lines may end in ``\\r\\n``, ``\\n`` or ``\\r``, and chunks may split anywhere (even inside
a ``\\r\\n``). The ``[DONE]`` sentinel is returned like any other payload; compare with ``DONE``.
"""

from __future__ import annotations

import re

DONE = b"[DONE]"
_BOM = b"\xef\xbb\xbf"
_NEWLINE = re.compile(rb"\r\n|\r|\n")


class SSEError(ValueError):
    """The stream is not valid SSE (or an event grew past the size limit)."""


class SSEParser:
    """Feed raw bytes in any chunking; get back the ``data`` payload of each complete event.

    >>> p = SSEParser()
    >>> p.feed(b"data: {\\"a\\"") + p.feed(b": 1}\\n\\ndata: [DONE]\\n\\n")
    [b'{"a": 1}', b'[DONE]']
    """

    def __init__(self, max_event_bytes: int = 4 * 1024 * 1024) -> None:
        self._buf = bytearray()
        self._data: list[bytes] = []
        self._event_bytes = 0
        self._max = max_event_bytes
        self._started = False

    @property
    def pending(self) -> bool:
        """True when a partial line or an undispatched event is buffered (a stream cut mid-event)."""
        return bool(self._buf) or bool(self._data)

    def feed(self, chunk: bytes) -> list[bytes]:
        """Consume ``chunk``; return the payloads of the events it completed, in order."""
        buf = self._buf
        buf += chunk
        if not self._started:
            if len(buf) < len(_BOM) and _BOM.startswith(bytes(buf)):
                return []  # could still be a byte-order mark
            self._started = True
            if buf.startswith(_BOM):
                del buf[: len(_BOM)]
        out: list[bytes] = []
        start, n = 0, len(buf)
        while start < n:
            nl = buf.find(b"\n", start)
            cr = buf.find(b"\r", start, nl if nl >= 0 else n)
            if cr >= 0:
                if cr + 1 == n:
                    break  # a trailing \r may be the first half of \r\n: wait for the next byte
                end, start_next = cr, cr + 2 if buf[cr + 1] == 0x0A else cr + 1
            elif nl >= 0:
                end, start_next = nl, nl + 1
            else:
                break
            self._line(bytes(buf[start:end]), out)
            start = start_next
        del buf[:start]
        if len(buf) + self._event_bytes > self._max:
            raise SSEError(f"SSE event larger than {self._max} bytes")
        return out

    def _line(self, line: bytes, out: list[bytes]) -> None:
        if not line:  # blank line: dispatch the event
            if self._data:
                out.append(self._data[0] if len(self._data) == 1 else b"\n".join(self._data))
                self._data = []
                self._event_bytes = 0
            return
        if line[0] == 0x3A:  # ":" comment / keep-alive
            return
        field, sep, value = line.partition(b":")
        if field != b"data":
            return  # event / id / retry / unknown fields do not matter to us
        if sep and value[:1] == b" ":
            value = value[1:]
        self._data.append(value)
        self._event_bytes += len(value) + 1


def format_sse(payload: bytes) -> bytes:
    """One SSE event carrying ``payload`` as its data: ``data: ...\\n\\n`` (multi-line safe)."""
    if b"\n" not in payload and b"\r" not in payload:
        return b"data: " + payload + b"\n\n"
    return b"".join(b"data: " + line + b"\n" for line in _NEWLINE.split(payload)) + b"\n"


__all__ = ["DONE", "SSEError", "SSEParser", "format_sse"]
