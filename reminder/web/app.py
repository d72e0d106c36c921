"""The answers web: a unit's page behind the link in its letter, the supervisors' board
behind the link in their digest. Starlette (an ASGI toolkit: routes, forms, responses;
the pages are server-rendered HTML forms, so nothing of FastAPI's JSON API layer would be
used) on uvicorn, the same Jinja2 sandbox as the messages, the same store.

Security, by construction (each with a test in tests/test_web_security.py):

- a link is a capability: signed, expiring, revocable (``reminder.web.links``); a bad
  one gets a page in Chinese with the office's phone, 403 or 410, and nothing else;
- a unit reaches only its own parts and attachments (``store.answers.part``);
- every form carries a CSRF token matched against a cookie (double submit), and a post
  another site sent (Sec-Fetch-Site, else Origin) is refused;
- every page is escaped (autoescape), framed by nobody, cached by nobody, sent with a
  Content-Security-Policy that allows no script and no referrer (links are secrets);
- bodies are limited (``[web] max_upload_mb`` for a completion report, 64 KiB else),
  uploads are checked by content and served as downloads, never inline;
- posts are limited per link (``POSTS_PER_MINUTE``).

The web is its own process: a crash or a flood here never holds up the daemon (it
reads and writes the store in short transactions, like any command).
"""

from __future__ import annotations

import datetime as dt
import functools
import hmac
import secrets as random
import time
import urllib.parse
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import anyio.to_thread
from jinja2 import FileSystemLoader, StrictUndefined
from jinja2.sandbox import SandboxedEnvironment
from sqlmodel import Session, col
from sqlmodel import select as select_rows
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from reminder.errors import InputError
from reminder.render import BUNDLED, cn_date, weekday
from reminder.rules import Rules
from reminder.settings import Config
from reminder.store import answers
from reminder.store.db import Store
from reminder.store.models import AnswerRow, EventRow, LinkRow
from reminder.web import data, files
from reminder.web.links import Links, Refused
from reminder.web.links import Scope as LinkScope

POSTS_PER_MINUTE = 20
# the store is read and written in threads, at most this many at once (fewer than the
# connection pool holds: a request waits in the event loop, never for a connection)
STORE_THREADS = 8
FORM_LIMIT = 64 * 1024
CSRF_COOKIE = "reminder_csrf"
_R = TypeVar("_R")
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
    "cross-origin-opener-policy": "same-origin",
}
_REFUSED = {
    Refused.TAMPERED: (403, "链接无效", "这个链接不完整或已被改动。请使用督办通知中的原始链接。"),
    Refused.UNKNOWN: (403, "链接无效", "这个链接不存在。请使用督办通知中的原始链接。"),
    Refused.EXPIRED: (410, "链接已过期", "这个链接已超过有效期。请使用最新一期督办通知中的链接。"),
    Refused.REVOKED: (410, "链接已停用", "这个链接已被停用。请使用最新一期督办通知中的链接。"),
}


# what a unit's page says after a form was sent (its ?ok=…)
_DONE = {
    "progress": "进展已报送。",
    "done": "办结情况已报送，等待审核。",
    "closed": "已办结。",
    "extension": "延期申请已提交，等待审批。",
}


class LimitBody:
    """Refuses a body larger than the route allows (413), by its declared length and
    by what actually arrives."""

    def __init__(self, app: ASGIApp, upload_limit: int) -> None:
        self.app = app
        self.upload_limit = upload_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        limit = self.upload_limit + FORM_LIMIT if path.endswith("/done") else FORM_LIMIT
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                await _too_large(send)
                return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await _too_large(send)


class _TooLarge(Exception):
    pass


async def _too_large(send: Send) -> None:
    body = "提交的内容过大（附件不能超过规定大小）。".encode()
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"connection", b"close")]
    headers += [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@dataclass(slots=True)
class _Page:
    template: str
    context: dict[str, Any]
    status: int = 200


class Web:
    """The pages and actions, over one store."""

    def __init__(self, config: Config, store: Store, planning: Rules) -> None:
        self.config = config
        self.settings = config.settings
        self.web = config.settings.web
        self.store = store
        self.planning = planning
        self.zone = config.settings.zone
        self.env = SandboxedEnvironment(
            loader=FileSystemLoader(str(BUNDLED / "web")),
            autoescape=True,
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters.update({"cn_date": cn_date, "weekday": weekday})
        self.links = Links(self.web)  # the secret is read once, not per request
        self.posts: dict[str, deque[float]] = defaultdict(deque)
        self.limiter: anyio.CapacityLimiter | None = None
        origin = urllib.parse.urlsplit(self.web.base_url)
        self.origin = f"{origin.scheme}://{origin.netloc}" if origin.netloc else ""

    # -- plumbing ---------------------------------------------------------------------

    async def run(self, function: Callable[..., _R], *args: Any) -> _R:
        """``function(*args)`` in a worker thread, at most ``STORE_THREADS`` at once."""
        if self.limiter is None:  # made in the event loop that serves
            self.limiter = anyio.CapacityLimiter(STORE_THREADS)
        return await anyio.to_thread.run_sync(
            functools.partial(function, *args), limiter=self.limiter
        )

    def today(self) -> dt.date:
        return dt.datetime.now(self.zone).date()

    def render(self, page: _Page, request: Request) -> Response:
        token = request.cookies.get(CSRF_COOKIE) or random.token_urlsafe(24)
        context = {
            "office": self.settings.office,
            "csrf": token,
            "today": self.today(),
            **page.context,
        }
        body = self.env.get_template(page.template).render(context)
        response = HTMLResponse(body, status_code=page.status)
        if request.cookies.get(CSRF_COOKIE) != token:
            response.set_cookie(
                CSRF_COOKIE,
                token,
                httponly=True,
                samesite="strict",
                secure=self.web.base_url.startswith("https:"),
                path="/",
            )
        return response

    def error(self, status: int, title: str, text: str) -> _Page:
        return _Page("error.html", {"title": title, "text": text}, status)

    def stale_form(self) -> _Page:
        return self.error(403, "请求无效", "页面已过期或来源不明，请重新打开链接后再提交。")

    def refused(self, why: Refused) -> _Page:
        return self.error(*_REFUSED[why])

    def link(self, token: str, scope: LinkScope) -> tuple[LinkRow | None, _Page | None]:
        with self.store.read() as session:
            row, why = self.links.check(session, token, scope)
        if why is not None:
            return None, self.refused(why)
        return row, None

    def _csrf_ok(self, request: Request, form: Any) -> bool:
        cookie = request.cookies.get(CSRF_COOKIE, "")
        sent = str(form.get("csrf", ""))
        if not cookie or not hmac.compare_digest(cookie.encode(), sent.encode()):
            return False
        # where the post comes from: browsers say it in Sec-Fetch-Site; under our
        # no-referrer policy their Origin is "null", so it counts only when it names one
        site = request.headers.get("sec-fetch-site")
        if site is not None:
            return site in ("same-origin", "none")
        origin = request.headers.get("origin")
        if origin and origin != "null":
            return origin in {self.origin, f"{request.url.scheme}://{request.url.netloc}"}
        return True

    def _rate_ok(self, link_id: str) -> bool:
        """Posts through one link in this process (the journal counts across processes:
        ``_journal_ok``)."""
        now = time.monotonic()
        seen = self.posts[link_id]
        while seen and seen[0] < now - 60:
            seen.popleft()
        if len(seen) >= POSTS_PER_MINUTE:
            return False
        seen.append(now)
        return True

    def _journal_ok(self, actor: str) -> bool:
        """What a unit wrote in the last minute, from any web process."""
        since = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
        with self.store.read() as session:
            return answers.recent_actions(session, actor, since) < POSTS_PER_MINUTE

    def watch(self, session: Session, supervisor: str) -> data.Watch:
        """What a supervisor watches (its sections and units in contacts.toml)."""
        found = next((s for s in self.planning.contacts.supervisors if s.name == supervisor), None)
        return data.Watch.of(session, found)

    @staticmethod
    def client(request: Request) -> str:
        return request.client.host if request.client else ""

    # -- a unit -----------------------------------------------------------------------

    def unit_view(
        self, token: str, origin: str, notice: str = "", problem: str = "", status: int = 200
    ) -> _Page:
        row, refused = self.link(token, LinkScope.UNIT)
        if refused is not None or row is None:
            return refused or self.refused(Refused.UNKNOWN)
        now = dt.datetime.now(dt.UTC)
        if row.opened_at is None:
            with self.store.write() as session:
                answers.read_link(session, row, answers.Actor(row.name, origin), now)
        today = self.today()
        with self.store.read() as session:
            tasks = data.unit_page(session, self.planning, row.name, today, self.zone)
        return _Page(
            "unit.html",
            {
                "unit": row.name,
                "token": token,
                "tasks": tasks,
                "open": [t for t in tasks if t["state"] not in ("done",)],
                "done": [t for t in tasks if t["state"] == "done"],
                "notice": notice,
                "problem": problem,
            },
            status,
        )

    async def unit_get(self, request: Request) -> Response:
        token = request.path_params["token"]
        notice = _DONE.get(request.query_params.get("ok", ""), "")
        page = await self.run(self.unit_view, token, self.client(request), notice)
        return self.render(page, request)

    async def unit_post(self, request: Request) -> Response:
        token = request.path_params["token"]
        action = request.path_params["action"]
        row, refused = await self.run(self.link, token, LinkScope.UNIT)
        if refused is not None or row is None:
            return self.render(refused or self.refused(Refused.UNKNOWN), request)
        if not self._rate_ok(row.id) or not await self.run(self._journal_ok, row.name):
            return self.render(
                self.error(429, "提交过于频繁", "请稍后再试。如有急事请电话联系。"), request
            )
        try:
            number = int(request.path_params["no"])
        except ValueError:
            return self.render(self.error(404, "没有这项任务", "请返回任务列表。"), request)
        async with request.form(
            max_files=1 if action == "done" else 0, max_fields=8, max_part_size=FORM_LIMIT
        ) as form:
            if not self._csrf_ok(request, form):
                return self.render(self.stale_form(), request)
            actor = answers.Actor(row.name, self.client(request))
            try:
                outcome = await self.run(self._unit_act, row, action, number, form, actor)
            except InputError as exc:
                page = await self.run(
                    self.unit_view, token, actor.origin, "", f"第{number}项：{exc}", 400
                )
                return self.render(page, request)
        return Response(
            status_code=303,
            headers={"location": f"/l/{token}?ok={outcome}#task-{number}"},
        )

    def _unit_act(
        self, row: LinkRow, action: str, number: int, form: Any, actor: answers.Actor
    ) -> str:
        now = dt.datetime.now(dt.UTC)
        note = str(form.get("note", ""))
        if action == "progress":
            with self.store.write() as session:
                answers.report_progress(session, self.planning, number, row.name, note, actor, now)
            return "progress"
        if action == "done":
            upload = form.get("file")
            attachment = None
            with self.store.read() as session:
                answers.part(session, number, row.name)  # refuse before keeping a file
            if isinstance(upload, UploadFile) and upload.filename:
                attachment = files.keep(
                    self.web.state_dir,
                    upload.file,
                    upload.filename,
                    self.web.max_upload_mb << 20,
                )
            with self.store.write() as session:
                state = answers.report_done(
                    session, self.planning, number, row.name, note, attachment, actor, now
                )
            return "done" if state == "reported" else "closed"
        if action == "extension":
            try:
                due = dt.date.fromisoformat(str(form.get("due", "")))
            except ValueError:
                raise InputError("请填写申请延期至的日期") from None
            with self.store.write() as session:
                answers.request_extension(
                    session, self.planning, number, row.name, due, note, actor, now
                )
            return "extension"
        raise InputError("未知操作")

    async def unit_file(self, request: Request) -> Response:
        token, sha = request.path_params["token"], request.path_params["sha"]
        row, refused = await self.run(self.link, token, LinkScope.UNIT)
        if refused is not None or row is None:
            return self.render(refused or self.refused(Refused.UNKNOWN), request)
        return await self.run(self._file, sha, row.name, request)

    def _file(self, sha: str, unit: str | None, request: Request) -> Response:
        """An attachment, as a download: a unit's own only (None: a supervisor's, any)."""
        with self.store.read() as session:
            found = session.exec(
                select_rows(AnswerRow).where(col(AnswerRow.attachment) == sha).limit(1)
            ).first()
            owner = found.unit if found is not None else None
            name = found.attachment_name if found is not None else "附件"
            if found is None:
                event = session.exec(
                    select_rows(EventRow).where(col(EventRow.attachment) == sha).limit(1)
                ).first()
                owner = event.unit if event is not None else None
        path = files.path_of(self.web.state_dir, sha)
        if owner is None or (unit is not None and owner != unit) or path is None:
            return self.render(self.error(404, "没有这个附件", "请返回任务列表。"), request)
        if not path.is_file():
            return self.render(self.error(404, "附件已不在", "请联系督办办公室。"), request)
        with path.open("rb") as handle:
            kind = files.sniff(handle.read(16)) or "application/octet-stream"
        quoted = urllib.parse.quote(name)
        return FileResponse(
            path,
            media_type=kind,
            headers={
                "content-disposition": f"attachment; filename*=UTF-8''{quoted}",
                "content-security-policy": "default-src 'none'; sandbox",
            },
        )

    # -- a supervisor -----------------------------------------------------------------

    def board_view(self, token: str, params: dict[str, str]) -> _Page:
        row, refused = self.link(token, LinkScope.SUPERVISOR)
        if refused is not None or row is None:
            return refused or self.refused(Refused.UNKNOWN)
        section = params.get("section", "")
        filters = data.Filters(
            section=int(section) if section.isdigit() else None,
            unit=params.get("unit", "")[:100],
            role=params.get("role", ""),
            state=params.get("state", ""),
            page=int(params["page"]) if params.get("page", "").isdigit() else 1,
        )
        with self.store.read() as session:
            scope = self.watch(session, row.name)
            shown = data.board(session, self.planning, self.today(), filters, self.zone, scope)
        return _Page(
            "board.html",
            {
                "supervisor": row.name,
                "token": token,
                "board": shown,
                "labels": data.LIGHT_LABELS,
                "units_listed": data.UNITS_LISTED,
                "query": lambda **changes: urllib.parse.urlencode(shown.filters.query(**changes)),
            },
        )

    async def board_get(self, request: Request) -> Response:
        params = dict(request.query_params.items())
        page = await self.run(self.board_view, request.path_params["token"], params)
        return self.render(page, request)

    def task_view(self, token: str, number: str) -> _Page:
        row, refused = self.link(token, LinkScope.SUPERVISOR)
        if refused is not None or row is None:
            return refused or self.refused(Refused.UNKNOWN)
        if not number.isdigit():
            return self.error(404, "没有这项任务", "请返回督办看板。")
        with self.store.read() as session:
            task = data.task_detail(session, self.planning, int(number), self.today(), self.zone)
        if task is None:
            return self.error(404, "没有这项任务", "请返回督办看板。")
        return _Page("task.html", {"supervisor": row.name, "token": token, "task": task})

    async def task_get(self, request: Request) -> Response:
        page = await self.run(
            self.task_view, request.path_params["token"], request.path_params["no"]
        )
        return self.render(page, request)

    def review_view(self, token: str, notice: str = "", problem: str = "") -> _Page:
        row, refused = self.link(token, LinkScope.SUPERVISOR)
        if refused is not None or row is None:
            return refused or self.refused(Refused.UNKNOWN)
        with self.store.read() as session:
            scope = self.watch(session, row.name)
            waiting = data.pending_answers(session, self.zone, scope)
        return _Page(
            "review.html",
            {
                "supervisor": row.name,
                "token": token,
                "completions": [a for a in waiting if a["kind"] == answers.COMPLETION],
                "extensions": [a for a in waiting if a["kind"] == answers.EXTENSION],
                "completion_policy": self.planning.policy.completion,
                "notice": notice,
                "problem": problem,
            },
            400 if problem else 200,
        )

    async def review_get(self, request: Request) -> Response:
        notice = "已处理。" if request.query_params.get("ok") else ""
        page = await self.run(self.review_view, request.path_params["token"], notice)
        return self.render(page, request)

    async def review_post(self, request: Request) -> Response:
        token = request.path_params["token"]
        row, refused = await self.run(self.link, token, LinkScope.SUPERVISOR)
        if refused is not None or row is None:
            return self.render(refused or self.refused(Refused.UNKNOWN), request)
        if not self._rate_ok(row.id):
            return self.render(self.error(429, "提交过于频繁", "请稍后再试。"), request)
        async with request.form(max_files=0, max_fields=8, max_part_size=FORM_LIMIT) as form:
            if not self._csrf_ok(request, form):
                return self.render(self.stale_form(), request)
            actor = answers.Actor(row.name, self.client(request))
            try:
                await self.run(self._decide, request.path_params["id"], form, actor, row.name)
            except InputError as exc:
                page = await self.run(self.review_view, token, "", str(exc))
                return self.render(page, request)
        return Response(status_code=303, headers={"location": f"/s/{token}/review?ok=1"})

    def _decide(self, answer_id: str, form: Any, actor: answers.Actor, supervisor: str) -> None:
        if not answer_id.isdigit():
            raise InputError("没有这条申请")
        with self.store.read() as session:
            scope = self.watch(session, supervisor)
            mine = {a["id"] for a in data.pending_answers(session, self.zone, scope)}
        if int(answer_id) not in mine:
            raise InputError("这条申请不在待处理之列（已处理，或不属于你的督办范围）")
        verdict = str(form.get("verdict", ""))
        if verdict not in ("approve", "return", "refuse"):
            raise InputError("请选择审核意见")
        due = None
        if verdict == "approve" and str(form.get("due", "")).strip():
            try:
                due = dt.date.fromisoformat(str(form.get("due")).strip())
            except ValueError:
                raise InputError("日期格式应为YYYY-MM-DD") from None
        now = dt.datetime.now(dt.UTC)
        with self.store.write() as session:
            answers.decide(
                session,
                self.planning,
                int(answer_id),
                verdict == "approve",
                str(form.get("note", "")),
                actor,
                now,
                due,
            )

    async def supervisor_file(self, request: Request) -> Response:
        token, sha = request.path_params["token"], request.path_params["sha"]
        row, refused = await self.run(self.link, token, LinkScope.SUPERVISOR)
        if refused is not None or row is None:
            return self.render(refused or self.refused(Refused.UNKNOWN), request)
        return await self.run(self._file, sha, None, request)

    async def export(self, request: Request) -> Response:
        token = request.path_params["token"]
        row, refused = await self.run(self.link, token, LinkScope.SUPERVISOR)
        if refused is not None or row is None:
            return self.render(refused or self.refused(Refused.UNKNOWN), request)
        from reminder.web.export import workbook  # noqa: PLC0415 - openpyxl: for this only

        body = await self.run(self._export, workbook)
        day = self.today().isoformat()
        return Response(
            body,
            media_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            headers={"content-disposition": f"attachment; filename=duban-{day}.xlsx"},
        )

    def _export(self, workbook: Callable[..., bytes]) -> bytes:
        with self.store.read() as session:
            return workbook(session, self.planning, self.settings, self.today())

    # -- the rest ---------------------------------------------------------------------

    async def home(self, request: Request) -> Response:
        page = self.error(200, "督办提醒", "请通过督办通知（邮件、短信）或督办日报中的链接访问。")
        return self.render(page, request)

    async def health(self, request: Request) -> Response:
        return PlainTextResponse("ok")


def create_app(config: Config, store: Store, planning: Rules) -> ASGIApp:
    web = Web(config, store, planning)

    async def not_found(request: Request, exc: Exception) -> Response:
        return web.render(web.error(404, "页面不存在", "请使用督办通知中的链接。"), request)

    async def method_not_allowed(request: Request, exc: Exception) -> Response:
        return web.render(web.error(405, "不支持的操作", "请使用页面上的按钮。"), request)

    routes = [
        Route("/", web.home),
        Route("/healthz", web.health),
        Route("/l/{token}", web.unit_get),
        Route("/l/{token}/task/{no}/{action:str}", web.unit_post, methods=["POST"]),
        Route("/l/{token}/file/{sha}", web.unit_file),
        Route("/s/{token}", web.board_get),
        Route("/s/{token}/task/{no}", web.task_get),
        Route("/s/{token}/review", web.review_get),
        Route("/s/{token}/answer/{id}", web.review_post, methods=["POST"]),
        Route("/s/{token}/file/{sha}", web.supervisor_file),
        Route("/s/{token}/export.xlsx", web.export),
    ]
    app = Starlette(routes=routes, exception_handlers={404: not_found, 405: method_not_allowed})
    return _headers(LimitBody(app, config.settings.web.max_upload_mb << 20))


def _headers(app: ASGIApp) -> ASGIApp:
    """Every response gets the security headers (a download keeps its own CSP)."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [
                    (name.encode(), value.encode())
                    for name, value in SECURITY_HEADERS.items()
                    if name.encode() not in present
                ]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await app(scope, receive, sending)

    return wrapped
