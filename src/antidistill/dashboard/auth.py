"""Dashboard sessions: the admin credential, once, buys a signed, short-lived session cookie.

* The operator logs in with ``server.admin_token`` (compared in constant time) and a name; the name
  is the ``operator:<name>`` actor of every decision made in that session (the audit trail).
* The cookie holds ``base64url(json) "." base64url(HMAC-SHA256)``: operator, issue and expiry times
  and a random session id. The HMAC key is derived from the admin token, so rotating the token
  ends every session, and every replica with the same token accepts the cookie. It is HttpOnly,
  ``SameSite=Strict``, scoped to ``/dashboard`` and Secure over https (``dashboard.secure_cookie``).
* POST actions carry a CSRF token derived from the session id (HMAC again) in a hidden form field;
  a request whose ``Origin`` names another host is refused as well. The login form itself uses a
  double-submit token (a random cookie that the form must repeat).

Nothing is stored server-side: logging out deletes the cookie in the browser; a copied cookie stays
valid until it expires (``dashboard.session_ttl_s``, 8 hours by default).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

SESSION_COOKIE = "antidistill_session"
LOGIN_COOKIE = "antidistill_login"
COOKIE_PATH = "/dashboard"
_KEY_LABEL = b"antidistill dashboard session v1"


@dataclass(frozen=True)
class Session:
    operator: str  # the operator's name (actor "operator:<name>")
    sid: str
    issued_at: float
    expires_at: float
    csrf: str  # the token POST forms must carry


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionSigner:
    """Issues and checks session cookies and CSRF tokens for one admin token."""

    def __init__(self, admin_token: str, ttl_s: float) -> None:
        self._token = admin_token.encode()
        self._key = hmac.new(self._token, _KEY_LABEL, hashlib.sha256).digest()
        self.ttl_s = ttl_s

    def token_matches(self, presented: str) -> bool:
        return hmac.compare_digest(presented.encode(), self._token)

    def _mac(self, label: bytes, data: bytes) -> bytes:
        return hmac.new(self._key, label + b"\x00" + data, hashlib.sha256).digest()

    def csrf_for(self, sid: str) -> str:
        return _b64(self._mac(b"csrf", sid.encode()))[:32]

    def issue(self, operator: str, now: float) -> tuple[str, Session]:
        sid = secrets.token_hex(16)
        iat, exp = int(now), int(now + self.ttl_s)
        payload = {"op": operator, "sid": sid, "iat": iat, "exp": exp}
        body = _b64(json.dumps(payload, separators=(",", ":")).encode())
        cookie = f"{body}.{_b64(self._mac(b'session', body.encode()))}"
        return cookie, Session(operator, sid, float(iat), float(exp), self.csrf_for(sid))

    def verify(self, cookie: str | None, now: float) -> Session | None:
        """The session of a cookie, or None when it is absent, forged, malformed or expired."""
        if not cookie or len(cookie) > 1024 or cookie.count(".") != 1:
            return None
        body, mac = cookie.split(".")
        try:
            ok = hmac.compare_digest(_unb64(mac), self._mac(b"session", body.encode()))
            payload: Any = json.loads(_unb64(body)) if ok else None
        except (ValueError, UnicodeDecodeError):
            return None
        if not isinstance(payload, dict):
            return None
        op, sid, iat, exp = (payload.get(k) for k in ("op", "sid", "iat", "exp"))
        if not (
            isinstance(op, str) and isinstance(sid, str) and isinstance(iat, int) and isinstance(exp, int)
        ):
            return None
        if exp <= now:
            return None
        return Session(op, sid, float(iat), float(exp), self.csrf_for(sid))

    def csrf_ok(self, session: Session, presented: str | None) -> bool:
        return bool(presented) and hmac.compare_digest(str(presented).encode(), session.csrf.encode())


def same_origin(request: Request) -> bool:
    """False when the browser says the request comes from another site (``Origin`` header)."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    host = request.headers.get("host", "")
    return origin.split("://", 1)[-1].rstrip("/") == host


def cookie_secure(request: Request, setting: bool | None) -> bool:
    if setting is not None:
        return setting
    proto = request.headers.get("x-forwarded-proto", request.url.scheme)
    return proto.split(",")[0].strip() == "https"


def safe_next(target: str | None) -> str:
    """A post-login redirect target inside the dashboard (never another site: no open redirect)."""
    if (
        not target
        or not (target == COOKIE_PATH or target.startswith(COOKIE_PATH + "/"))
        or "\\" in target
        or any(ord(c) < 32 for c in target)
    ):
        return f"{COOKIE_PATH}/"
    return target
