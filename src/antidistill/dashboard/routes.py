"""The dashboard's HTTP side: routes under ``/dashboard``, the login gate, forms and error pages.

The gateway mounts these routes next to its API (``gateway/app.py``); they find the runtime objects
on ``request.app.state.rt`` (settings, store, clock; optionally ``operator_changed`` and ``enforcer``),
so this package never imports the gateway. Store calls run in worker threads. Every page except
the login form needs a valid session (``auth.py``); without one, pages redirect to the login form and
the JSON feed answers 401. Failures render an error page with the right status; nothing crashes.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import jinja2
import orjson
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from antidistill.dashboard import audits, pages
from antidistill.dashboard.auth import (
    COOKIE_PATH,
    LOGIN_COOKIE,
    SESSION_COOKIE,
    Session,
    SessionSigner,
    cookie_secure,
    safe_next,
    same_origin,
)
from antidistill.dashboard.series import SettledCounts
from antidistill.errors import (
    AntidistillError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    RejectedDataError,
    StoreError,
)
from antidistill.policy import Policy
from antidistill.policy import operator as op
from antidistill.settings import Settings
from antidistill.store import SqlStore

log = logging.getLogger("antidistill.dashboard")

HERE = Path(__file__).resolve().parent
MAX_FORM_BYTES = 16 * 1024
MAX_PAGE = 10_000
MAX_PATH_PARAM = 256
LOGIN_FAIL_DELAY_S = 0.5
ACTIONS = ("allow", "throttle", "block", "reset", "reverse")
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
    "script-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}
# an audit report is our own generated HTML with inline styles and data: images; sandboxed anyway
REPORT_HEADERS = {
    "content-security-policy": "default-src 'none'; img-src data:; style-src 'unsafe-inline'; sandbox",
    "x-content-type-options": "nosniff",
    "cache-control": "no-store",
}


def _utc(ts: float | None) -> str:
    if ts is None:
        return "—"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["utc"] = _utc
    env.filters["score"] = lambda v: "—" if v is None else f"{v:.4f}"
    env.filters["q"] = lambda v: urllib.parse.quote(str(v), safe="")
    env.filters["count"] = lambda v: f"{v:,}"
    return env


class Dashboard:
    """The dashboard of one gateway app: its templates, session signer and count cache."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.env = _environment()
        token = settings.server.admin_token
        ttl = settings.dashboard.session_ttl_s
        self.signer = None if token is None else SessionSigner(token.get_secret_value(), ttl)
        self.counts = SettledCounts()
        self._warming = False
        self.audits_dir = Path(settings.dashboard.audits_dir).expanduser()

    # -- plumbing --------------------------------------------------------------------------------
    def render(self, request: Request, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        session: Session | None = getattr(request.state, "session", None)
        body = self.env.get_template(name).render(
            session=session,
            poll_interval_s=self.settings.dashboard.poll_interval_s,
            path=request.url.path,
            **ctx,
        )
        return HTMLResponse(body, status_code=status, headers=SECURITY_HEADERS)

    def error(self, request: Request, status: int, message: str) -> HTMLResponse:
        return self.render(request, "error.html", status=status, status_code=status, message=message)

    def _now(self, request: Request) -> float:
        rt = request.app.state.rt
        return float(rt.clock.now())

    def store(self, request: Request) -> SqlStore:
        store = request.app.state.rt.store
        if not isinstance(store, SqlStore):
            raise PermissionDeniedError("the dashboard needs the SQL store (sqlite:// or postgresql://)")
        return store

    def policy(self, request: Request) -> Policy | None:
        rt = request.app.state.rt
        if not self.settings.policy.enabled:
            return None
        enforcer = getattr(rt, "enforcer", None)
        if enforcer is not None:
            return enforcer.policy
        return Policy.load(self.settings.policy.file)

    async def operator_changed(self, request: Request, account_id: str | None) -> None:
        """Tell the gateway an operator changed an account (decision caches; other replicas)."""
        rt = request.app.state.rt
        notify = getattr(rt, "operator_changed", None)
        if notify is not None:
            await notify(account_id)
            return
        enforcer = getattr(rt, "enforcer", None)
        if enforcer is not None and account_id is not None:
            enforcer.forget(account_id)

    def session(self, request: Request) -> Session | None:
        if self.signer is None:
            return None
        return self.signer.verify(request.cookies.get(SESSION_COOKIE), time.time())

    async def form(self, request: Request) -> dict[str, str]:
        """A urlencoded form (at most MAX_FORM_BYTES; the last value of a repeated field wins)."""
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > MAX_FORM_BYTES):
            raise InvalidRequestError("form too large")
        buf = bytearray()
        async for piece in request.stream():
            buf += piece
            if len(buf) > MAX_FORM_BYTES:
                raise InvalidRequestError("form too large")
        try:
            pairs = urllib.parse.parse_qsl(buf.decode("utf-8"), keep_blank_values=True, max_num_fields=50)
        except (UnicodeDecodeError, ValueError):
            raise InvalidRequestError("the form is not valid UTF-8 urlencoded data") from None
        return dict(pairs)

    # -- the gate ----------------------------------------------------------------------------------
    def page(
        self, fn: Callable[[Request], Awaitable[Response]], *, api: bool = False, post: bool = False
    ) -> Callable[[Request], Awaitable[Response]]:
        """Wrap a handler: admin credential configured, a valid session (and on POST a CSRF token
        and no foreign Origin), errors as pages (or JSON for the feed)."""

        async def handler(request: Request) -> Response:
            if self.signer is None:
                return self.error(
                    request,
                    403,
                    "The dashboard is disabled: set server.admin_token (ANTIDISTILL_SERVER__ADMIN_TOKEN).",
                )
            session = self.session(request)
            if session is None:
                if api:
                    return Response(
                        orjson.dumps({"error": {"message": "log in to the dashboard", "code": "login"}}),
                        status_code=401,
                        media_type="application/json",
                        headers={"cache-control": "no-store"},
                    )
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                if post:
                    target = COOKIE_PATH + "/"
                return RedirectResponse(
                    f"{COOKIE_PATH}/login?next={urllib.parse.quote(target, safe='')}", status_code=303
                )
            request.state.session = session
            try:
                for value in request.path_params.values():
                    if len(value) > MAX_PATH_PARAM or any(ord(c) < 32 for c in value):
                        raise InvalidRequestError(f"not a valid id: {value[:80]!r}")
                if post:
                    if not same_origin(request):
                        return self.error(request, 403, "Refused: the form was sent from another site.")
                    form = await self.form(request)
                    assert self.signer is not None
                    if not self.signer.csrf_ok(session, form.get("csrf")):
                        return self.error(
                            request, 403, "Refused: missing or wrong form token (reload the page and retry)."
                        )
                    request.state.form = form
                return await fn(request)
            except NotFoundError as e:
                return self.error(request, 404, e.message)
            except RejectedDataError as e:
                return self.error(request, 400, f"The store refused this value: {e.message}")
            except StoreError as e:
                log.warning("dashboard: store error on %s: %s", request.url.path, e.message)
                return self.error(request, 503, f"The store is not reachable right now: {e.message}")
            except AntidistillError as e:
                return self.error(request, e.status, e.message)
            except Exception:
                log.exception("dashboard: unhandled error on %s %s", request.method, request.url.path)
                return self.error(request, 500, "Internal error (logged on the server).")

        handler.__name__ = getattr(fn, "__name__", "handler")
        return handler

    # -- login / logout ----------------------------------------------------------------------------
    async def login_form(self, request: Request) -> Response:
        if self.signer is None:
            return self.error(
                request,
                403,
                "The dashboard is disabled: set server.admin_token (ANTIDISTILL_SERVER__ADMIN_TOKEN).",
            )
        nonce = request.cookies.get(LOGIN_COOKIE) or _nonce()
        resp = self.render(
            request, "login.html", next=safe_next(request.query_params.get("next")), nonce=nonce, failed=False
        )
        self._set_cookie(request, resp, LOGIN_COOKIE, nonce, 3600)
        return resp

    async def login(self, request: Request) -> Response:
        if self.signer is None:
            return self.error(request, 403, "The dashboard is disabled: set server.admin_token.")
        try:
            form = await self.form(request)
        except InvalidRequestError as e:
            return self.error(request, 400, e.message)
        nonce = request.cookies.get(LOGIN_COOKIE)
        target = safe_next(form.get("next"))
        if not same_origin(request) or not nonce or form.get("nonce") != nonce:
            return self.error(request, 403, "Refused: the login form expired or came from another site.")
        try:
            name = op.actor_of(form.get("operator", "")).removeprefix("operator:")
        except InvalidRequestError as e:
            return self._login_again(request, target, nonce, e.message)
        if not self.signer.token_matches(form.get("token", "")):
            await asyncio.sleep(LOGIN_FAIL_DELAY_S)
            log.warning(
                "dashboard: failed login as %r from %s", name, request.client.host if request.client else "?"
            )
            return self._login_again(request, target, nonce, "Wrong admin credential.")
        cookie, _ = self.signer.issue(name, time.time())
        resp = RedirectResponse(target, status_code=303)
        self._set_cookie(request, resp, SESSION_COOKIE, cookie, int(self.signer.ttl_s))
        resp.delete_cookie(LOGIN_COOKIE, path=COOKIE_PATH)
        log.info("dashboard: operator %r logged in", name)
        return resp

    def _login_again(self, request: Request, target: str, nonce: str, message: str) -> Response:
        return self.render(request, "login.html", status=401, next=target, nonce=nonce, failed=message)

    async def logout(self, request: Request) -> Response:
        resp = RedirectResponse(f"{COOKIE_PATH}/login", status_code=303)
        resp.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH)
        return resp

    def _set_cookie(self, request: Request, resp: Response, name: str, value: str, max_age: int) -> None:
        resp.set_cookie(
            name,
            value,
            max_age=max_age,
            path=COOKIE_PATH,
            httponly=True,
            samesite="strict",
            secure=cookie_secure(request, self.settings.dashboard.secure_cookie),
        )

    # -- pages -------------------------------------------------------------------------------------
    async def overview(self, request: Request) -> Response:
        store, now = self.store(request), self._now(request)
        if not self._warming:
            self._warming = True
            threading.Thread(target=self.counts.warm, args=(store, now), daemon=True).start()
        rng = request.query_params.get("range")
        ctx = await anyio.to_thread.run_sync(lambda: pages.overview(store, self.counts, now, rng))
        return self.render(request, "overview.html", **ctx)

    async def accounts(self, request: Request) -> Response:
        q = request.query_params.get("q", "").strip()
        if q:
            return RedirectResponse(
                f"{COOKIE_PATH}/accounts/{urllib.parse.quote(q, safe='')}", status_code=303
            )
        return await self._subjects(request, "account")

    async def clusters(self, request: Request) -> Response:
        return await self._subjects(request, "cluster")

    async def _subjects(self, request: Request, kind: str) -> Response:
        store = self.store(request)
        page = _int(request, "page", 0, MAX_PAGE)
        flagged = request.query_params.get("flagged", "1") != "0"
        order = request.query_params.get("order", "score")
        ctx = await anyio.to_thread.run_sync(lambda: pages.subject_list(store, kind, flagged, order, page))
        return self.render(request, f"{kind}s.html", **ctx)

    async def account(self, request: Request) -> Response:
        store, now, policy = self.store(request), self._now(request), self.policy(request)
        ref = request.path_params["account_id"]
        rng, before = request.query_params.get("range"), request.query_params.get("before")
        ctx = await anyio.to_thread.run_sync(lambda: pages.account_page(store, policy, ref, now, rng, before))
        return self.render(request, "account.html", notice=request.query_params.get("done"), **ctx)

    async def decide(self, request: Request) -> Response:
        store = self.store(request)
        ref = request.path_params["account_id"]
        form: dict[str, str] = request.state.form
        session: Session = request.state.session
        action = form.get("action", "")
        if action not in ACTIONS:
            raise InvalidRequestError(f"action must be one of {', '.join(ACTIONS)}", param="action")
        reason = form.get("reason", "").strip() or f"{action} from the dashboard"
        params: dict[str, Any] | None = None
        if action == "throttle" and form.get("rpm", "").strip():
            try:
                params = {"rpm": int(form["rpm"])}
            except ValueError:
                raise InvalidRequestError("rpm must be a whole number", param="rpm") from None

        def work() -> str:
            if action == "reverse":
                account, _ = op.reverse(store, ref, session.operator)
            else:
                account, _ = op.decide(store, ref, action, session.operator, reason, params)
            return account.id

        account_id = await anyio.to_thread.run_sync(work)
        await self.operator_changed(request, account_id)
        log.info("dashboard: operator %r: %s account %s", session.operator, action, account_id)
        url = f"{COOKIE_PATH}/accounts/{urllib.parse.quote(account_id, safe='')}?done={action}"
        return RedirectResponse(url, status_code=303)

    async def cluster(self, request: Request) -> Response:
        store = self.store(request)
        cid = request.path_params["cluster_id"]
        page = _int(request, "page", 0, MAX_PAGE)
        ctx = await anyio.to_thread.run_sync(lambda: pages.cluster_page(store, cid, page))
        return self.render(request, "cluster.html", notice=request.query_params.get("done"), **ctx)

    async def block_cluster(self, request: Request) -> Response:
        """Operator block of every member account, plus a decision on the cluster itself (the record
        of what the operator did to the campaign)."""
        store = self.store(request)
        cid = request.path_params["cluster_id"]
        session: Session = request.state.session
        form: dict[str, str] = request.state.form
        reason = form.get("reason", "").strip() or f"cluster {cid} blocked from the dashboard"

        def work() -> int:
            members = pages.cluster_member_ids(store, cid)
            state = store.risk_state("cluster", cid)
            if not members and state is None:
                raise NotFoundError(f"no cluster {cid[:80]!r}")
            for aid in members:
                op.decide(store, aid, "block", session.operator, f"{reason} (member of cluster {cid})")
            store.record_decision(
                "cluster",
                cid,
                "block",
                op.actor_of(session.operator),
                f"{reason}: blocked {len(members)} member accounts",
                None if state is None else state.last_finding_id,
                {"accounts": len(members)},
            )
            return len(members)

        n = await anyio.to_thread.run_sync(work)
        await self.operator_changed(request, None)
        log.info("dashboard: operator %r blocked cluster %s (%d accounts)", session.operator, cid, n)
        return RedirectResponse(
            f"{COOKIE_PATH}/clusters/{urllib.parse.quote(cid, safe='')}?done=blocked-{n}", status_code=303
        )

    async def audits(self, request: Request) -> Response:
        page = _int(request, "page", 0, MAX_PAGE)
        found, total = await anyio.to_thread.run_sync(
            lambda: audits.list_audits(self.audits_dir, pages.PAGE, page * pages.PAGE)
        )
        return self.render(
            request,
            "audits.html",
            audits=found,
            total=total,
            page=page,
            more=total > (page + 1) * pages.PAGE,
            audits_dir=str(self.audits_dir),
        )

    async def audit_file(self, request: Request) -> Response:
        name, filename = request.path_params["name"], request.path_params["filename"]
        path = await anyio.to_thread.run_sync(lambda: audits.report_file(self.audits_dir, name, filename))
        if path is None:
            raise NotFoundError(f"no report {filename[:40]!r} in audit {name[:80]!r}")
        media = "text/html; charset=utf-8" if filename.endswith(".html") else "application/json"
        return FileResponse(path, media_type=media, headers=REPORT_HEADERS)

    async def live(self, request: Request) -> Response:
        store = self.store(request)
        after = _int(request, "after", 0, None)
        body = await anyio.to_thread.run_sync(lambda: pages.live(store, after))
        return Response(
            orjson.dumps(body),
            media_type="application/json",
            headers={"cache-control": "no-store", "x-content-type-options": "nosniff"},
        )

    async def not_found(self, request: Request) -> Response:
        return self.error(request, 404, f"No dashboard page at {request.url.path[:200]}.")

    # -- routes ------------------------------------------------------------------------------------
    def routes(self) -> list[BaseRoute]:
        p = self.page
        return [
            Route(COOKIE_PATH, lambda r: RedirectResponse(f"{COOKIE_PATH}/", 307), methods=["GET"]),
            Route(f"{COOKIE_PATH}/", p(self.overview), methods=["GET"]),
            Route(f"{COOKIE_PATH}/login", self.login_form, methods=["GET"]),
            Route(f"{COOKIE_PATH}/login", self.login, methods=["POST"]),
            Route(f"{COOKIE_PATH}/logout", p(self.logout, post=True), methods=["POST"]),
            Route(f"{COOKIE_PATH}/accounts", p(self.accounts), methods=["GET"]),
            Route(f"{COOKIE_PATH}/accounts/{{account_id}}", p(self.account), methods=["GET"]),
            Route(
                f"{COOKIE_PATH}/accounts/{{account_id}}/decision", p(self.decide, post=True), methods=["POST"]
            ),
            Route(f"{COOKIE_PATH}/clusters", p(self.clusters), methods=["GET"]),
            Route(f"{COOKIE_PATH}/clusters/{{cluster_id}}", p(self.cluster), methods=["GET"]),
            Route(
                f"{COOKIE_PATH}/clusters/{{cluster_id}}/block",
                p(self.block_cluster, post=True),
                methods=["POST"],
            ),
            Route(f"{COOKIE_PATH}/audits", p(self.audits), methods=["GET"]),
            Route(f"{COOKIE_PATH}/audits/{{name}}/{{filename}}", p(self.audit_file), methods=["GET"]),
            Route(f"{COOKIE_PATH}/api/live", p(self.live, api=True), methods=["GET"]),
            Mount(
                f"{COOKIE_PATH}/static", app=StaticFiles(directory=HERE / "static"), name="dashboard-static"
            ),
            Route(f"{COOKIE_PATH}/{{rest:path}}", p(self.not_found), methods=["GET", "POST"]),
        ]


def _nonce() -> str:
    import secrets

    return secrets.token_urlsafe(24)


def _int(request: Request, name: str, default: int, hi: int | None) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidRequestError(f"{name} must be a whole number (got {raw[:20]!r})", param=name) from None
    if value < 0 or (hi is not None and value > hi):
        raise InvalidRequestError(
            f"{name} must be between 0 and {hi if hi is not None else 'any'}", param=name
        )
    return value


def dashboard_routes(settings: Settings) -> list[BaseRoute]:
    """The dashboard's routes for the gateway app (none when ``dashboard.enabled`` is false)."""
    if not settings.dashboard.enabled:
        return []
    return Dashboard(settings).routes()
