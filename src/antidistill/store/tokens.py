"""API key tokens: ``ad-<keyid>-<secret>`` (pure functions, no I/O).

``keyid`` is 12 lowercase hex characters, public, and the primary key of the ``api_keys`` row, so
authentication is one indexed lookup. ``secret`` is ``secrets.token_urlsafe(32)`` (256 random bits);
only ``sha256(secret)`` is stored. A fast hash is right here (unlike for passwords): with 256 bits
of entropy there is nothing to brute-force, and the lookup runs on every request.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

TOKEN_PREFIX = "ad-"
KEY_ID_HEX_CHARS = 12
_MAX_TOKEN_CHARS = 200
# explicit ASCII classes: `\d` or `\w` would also accept other scripts' digits and letters
_TOKEN_RE = re.compile(r"ad-([0-9a-f]{12})-([A-Za-z0-9_-]{16,160})")
# compared against when the key id is unknown, so a miss costs the same as a wrong secret
_DUMMY_HASH = hashlib.sha256(b"antidistill-no-such-key").hexdigest()


def new_key_id() -> str:
    return secrets.token_hex(KEY_ID_HEX_CHARS // 2)


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def format_token(key_id: str, secret: str) -> str:
    return f"{TOKEN_PREFIX}{key_id}-{secret}"


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def parse_token(token: object) -> tuple[str, str] | None:
    """``(key_id, secret)`` of a well-formed token, else None (never raises, whatever the input)."""
    if not isinstance(token, str) or len(token) > _MAX_TOKEN_CHARS:
        return None
    m = _TOKEN_RE.fullmatch(token)
    if m is None:
        return None
    return m.group(1), m.group(2)


def secret_matches(stored_hash: str | None, secret: str) -> bool:
    """Constant-time comparison; with ``stored_hash=None`` (unknown key) a dummy hash is compared."""
    candidate = hash_secret(secret)
    same = hmac.compare_digest(stored_hash if stored_hash is not None else _DUMMY_HASH, candidate)
    return same and stored_hash is not None
