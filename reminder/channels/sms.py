"""SMS through an HTTP gateway (httpx): Aliyun/Tencent-style or in-house.

The request is a POST of a JSON body rendered from ``[sms] body`` (a Jinja2 template in
the sandbox, values through ``tojson``), with the token from REMINDER_SMS_TOKEN (or its
file, or the systemd credential ``sms_token``) in ``[sms] auth_header``. The text is cut to
``max_segments`` SMS segments: 70 characters fit one, a longer text travels in parts of
67, counted as gateways count them, in UTF-16 units (an emoji or a CJK Extension B
character is 2). A 2xx answer is sent unless ``ok_json`` names fields it must carry;
4xx is permanent, 5xx, timeouts and dropped connections are retried, and Retry-After is
honoured.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Callable, Sequence
from typing import Any

import httpx
from jinja2 import StrictUndefined
from jinja2.sandbox import SandboxedEnvironment

from reminder.channels import Outgoing, Report, Result, Window, always_open
from reminder.channels.http import post, system_now
from reminder.errors import ConfigError, DeliveryError
from reminder.settings import SmsSettings
from reminder.text import segments


class SmsSender:
    def __init__(
        self,
        settings: SmsSettings,
        token: str | None,
        now: Callable[[], dt.datetime] = system_now,
    ) -> None:
        self.settings = settings
        self._token = token
        self._now = now
        env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
        try:
            self._body = env.from_string(settings.body)
        except Exception as exc:  # jinja2's syntax errors: report as configuration
            raise ConfigError(f"[sms] body: not a valid template: {exc}") from None
        self._requests: asyncio.Semaphore | None = None
        self._client = httpx.AsyncClient(
            timeout=settings.timeout_s,
            limits=httpx.Limits(max_connections=settings.concurrency),
        )

    def request_body(self, item: Outgoing) -> bytes:
        text = item.body  # signed and cut to size when prepared (files get the same text)
        rendered = self._body.render(to=item.to, text=text, segments=segments(text), key=item.key)
        try:
            json.loads(rendered)
        except json.JSONDecodeError as exc:
            raise DeliveryError(
                f"[sms] body renders to invalid JSON: {exc}", permanent=True
            ) from None
        return rendered.encode()

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json; charset=utf-8"}
        if self._token:
            scheme = f"{self.settings.auth_scheme} " if self.settings.auth_scheme else ""
            headers[self.settings.auth_header] = scheme + self._token
        return headers

    def _check_answer(self, response: httpx.Response) -> None:
        if not self.settings.ok_json:
            return
        try:
            answer: Any = response.json()
        except ValueError:
            raise DeliveryError(
                "gateway answer is not JSON", permanent=True, code=response.status_code
            ) from None
        for field, wanted in self.settings.ok_json.items():
            got = answer.get(field) if isinstance(answer, dict) else None
            if got != wanted:
                raise DeliveryError(
                    f"gateway refused: {field}={got!r}: {str(answer)[:200]}",
                    permanent=True,
                    code=response.status_code,
                )

    async def _send_one(self, item: Outgoing, report: Report) -> None:
        try:
            response = await post(
                self._client,
                self.settings.url,
                self._now,
                content=self.request_body(item),
                headers=self._headers(),
            )
            self._check_answer(response)
        except DeliveryError as error:
            report(Result.failed(item, error))
            return
        report(Result.sent(item, response.status_code, response.text[:200]))

    async def send(
        self, items: Sequence[Outgoing], report: Report, window: Window = always_open
    ) -> None:
        if self._requests is None:  # made in the loop that sends
            self._requests = asyncio.Semaphore(self.settings.concurrency)
        requests = self._requests

        async def one(item: Outgoing) -> None:
            # ``concurrency`` requests in flight for the sender as a whole, however many
            # chunks send side by side (one semaphore per call gave chunks × concurrency)
            async with requests:
                await window()
                await self._send_one(item, report)

        await asyncio.gather(*(one(item) for item in items))

    async def close(self) -> None:
        self._requests = None  # the next run may be on another loop
        await self._client.aclose()
