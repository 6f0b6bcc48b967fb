"""How ``UpstreamBackend`` failures become gateway errors: HTTP statuses from the upstream, aiohttp
transport failures, and the redaction that keeps credentials out of every message.

Messages never carry the upstream API key, URL credentials or host: upstream error texts go through
``Redactor``, and aiohttp exception texts (which name the host and URL) are never echoed.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterable

import aiohttp

from antidistill.backends.upstream_shape import INVALID_RESPONSE, error_fields
from antidistill.errors import (
    AntidistillError,
    BackendError,
    BackendOverloadedError,
    BackendTimeoutError,
    InvalidRequestError,
)

# what an aiohttp request can raise besides our own errors (ServerTimeoutError is a TimeoutError)
TRANSPORT_ERRORS = (aiohttp.ClientError, TimeoutError)
_TOKEN_LIKE = re.compile(r"(?i)\b(sk-|bearer\s+)[\w.*~+/=-]{4,}")


class Redactor:
    """Replaces the given secrets, and anything that looks like a key or bearer token, with ``***``."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self._secrets = [s for s in secrets if len(s) >= 4]

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return _TOKEN_LIKE.sub(r"\1***", text)


def status_error(status: int, retry_after: str | None, content: bytes, redact: Redactor) -> AntidistillError:
    """The error for an upstream answer with HTTP status >= 300 (``content`` is its body)."""
    if status in (429, 503):
        return BackendOverloadedError(
            "the model upstream is overloaded; retry later",
            headers={"retry-after": retry_after} if retry_after else None,
        )
    if status in (408, 504):
        return BackendTimeoutError("the model upstream timed out")
    if status in (401, 403):  # our credentials, not the client's fault; never echo the upstream text
        return BackendError("the model upstream refused the gateway's credentials", code="upstream_auth")
    if status == 404:
        return BackendError("the model upstream does not serve this model or endpoint")
    if 400 <= status < 500:
        msg, param, code = error_fields(content)
        if msg is None:
            return InvalidRequestError(f"the model upstream rejected the request (HTTP {status})")
        return InvalidRequestError(redact(msg)[:1000], param=param, code=code)
    return BackendError(f"the model upstream failed (HTTP {status})")


def transport_error(exc: BaseException, read_timeout: float, pool_full: bool) -> BackendError:
    """The error for an aiohttp exception or timeout. ``pool_full``: more requests were in flight
    than the pool has connections, so a connect timeout most likely was a wait for a free one."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):  # waiting for a pooled or a new connection
        if pool_full:
            return BackendOverloadedError("too many requests in flight to the model upstream")
        return BackendTimeoutError("the model upstream did not accept a connection in time")
    if isinstance(exc, TimeoutError):  # includes aiohttp's SocketTimeoutError (sock_read)
        return BackendTimeoutError(f"the model upstream sent nothing for {read_timeout:g}s")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return BackendError(f"upstream unreachable: {_connect_reason(exc)}", code="upstream_unavailable")
    # reset connections, truncated bodies, protocol errors, bad encodings
    return BackendError(INVALID_RESPONSE)


def _connect_reason(exc: aiohttp.ClientConnectorError) -> str:
    """Why a connection failed, without the host or address that aiohttp puts in its messages."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return "TLS certificate verification failed"
    if isinstance(exc, aiohttp.ClientSSLError):
        return "TLS handshake failed"
    err = exc.os_error
    if isinstance(err, socket.gaierror):
        return f"name resolution failed ({err.strerror})" if err.strerror else "name resolution failed"
    if err.errno:
        return os.strerror(err.errno)
    return "connection failed"
