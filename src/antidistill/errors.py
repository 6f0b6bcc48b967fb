"""The one exception hierarchy of antidistill.

Every error knows the HTTP status, OpenAI error ``type`` and ``code`` it maps to, so the edges
(HTTP envelope, CLI line) translate it without if-chains. Library code raises these; it never
builds HTTP responses itself.
"""

from __future__ import annotations


class AntidistillError(Exception):
    """Base class. ``message`` is safe to show to a client (never contains secrets)."""

    status: int = 500
    error_type: str = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers = dict(headers or {})

    def envelope(self) -> dict[str, dict[str, str | None]]:
        """The OpenAI error envelope ``{"error": {"message", "type", "param", "code"}}``."""
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }


class ConfigError(AntidistillError):
    """Bad settings or registry names; raised at start-up."""

    error_type = "configuration_error"
    code = "bad_config"


class InvalidRequestError(AntidistillError):
    status = 400
    error_type = "invalid_request_error"


class RequestTooLargeError(InvalidRequestError):
    status = 413
    code = "request_too_large"


class ModelNotFoundError(InvalidRequestError):
    status = 404
    code = "model_not_found"


class AuthenticationError(AntidistillError):
    status = 401
    error_type = "invalid_request_error"
    code = "invalid_api_key"


class PermissionDeniedError(AntidistillError):
    """The account is known but may not do this (blocked, admin-only, ...)."""

    status = 403
    error_type = "permission_error"
    code = "permission_denied"


BLOCKED_MESSAGE = "This account is blocked. Contact the provider's trust and safety team."


class AccountBlockedError(PermissionDeniedError):
    """The account is blocked (by an operator or by the policy): retrying will not help."""

    code = "account_blocked"

    def __init__(self, message: str = BLOCKED_MESSAGE) -> None:
        super().__init__(message, headers={"x-should-retry": "false"})


class ReverificationRequiredError(PermissionDeniedError):
    """The account must prove again who it is (outside the API) before it may make more requests."""

    code = "reverification_required"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"x-should-retry": "false"})


class NotFoundError(AntidistillError):
    status = 404
    error_type = "invalid_request_error"
    code = "not_found"


class RateLimitError(AntidistillError):
    status = 429
    error_type = "rate_limit_error"
    code = "rate_limit_exceeded"


class BackendError(AntidistillError):
    """The model backend failed (upstream down, garbage reply, generation crashed)."""

    status = 502
    error_type = "server_error"
    code = "upstream_error"


class BackendTimeoutError(BackendError):
    status = 504
    code = "upstream_timeout"


class BackendOverloadedError(BackendError):
    status = 503
    code = "overloaded"


class ClientDisconnectedError(AntidistillError):
    """The client went away before its request was read (nginx's 499); nothing is sent back."""

    status = 499
    error_type = "invalid_request_error"
    code = "client_disconnected"


class GatewayOverloadedError(AntidistillError):
    """The gateway process itself is saturated; the request was refused before any work was done."""

    status = 503
    code = "overloaded"


class StoreError(AntidistillError):
    status = 500
    error_type = "server_error"
    code = "store_error"


class AlreadyExistsError(StoreError):
    """A unique value (e.g. an account name) is taken; the caller sent a conflicting request."""

    status = 409
    error_type = "invalid_request_error"
    code = "already_exists"


class RejectedDataError(StoreError):
    """The database refused these rows as data (bad value, constraint): retrying will not help.

    Any other StoreError means the database could not be used right now (down, locked, timeout).
    The event writer relies on this split: rejected rows are set aside, the rest is retried.
    """

    code = "rejected_data"
