"""WeCom (企业微信) and DingTalk (钉钉) group robots: markdown through their webhooks.

A message names whose robot it goes to; the webhook URL (which carries a secret key)
is looked up in contacts.toml only now. DingTalk robots with signing enabled get a
timestamp and an HMAC-SHA256 signature of it (the secret from the environment variable
named by ``robot_secret_env``). Both services accept 20 messages a minute per robot:
messages beyond that are deferred to when a slot frees, without counting as a failure.
A rate-limit answer is retried a minute later; any other error code is permanent.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import datetime as dt
import hashlib
import hmac
import os
import time
import urllib.parse
from collections.abc import Callable, Sequence
from typing import Any

import httpx

from reminder.channels import Outgoing, Report, Result, Window, always_open
from reminder.channels.http import post, system_now
from reminder.contacts import Contacts
from reminder.errors import ConfigError, DeliveryError
from reminder.settings import RobotSettings

WINDOW_S = 60.0
RATE_LIMITED = {45009, 130101}  # WeCom: api freq out of limit; DingTalk: send too fast
WECOM_MAX_BYTES = 4096


def wecom_payload(item: Outgoing) -> dict[str, Any]:
    content = item.body.encode()[: WECOM_MAX_BYTES - 8].decode(errors="ignore")
    return {"msgtype": "markdown", "markdown": {"content": content}}


def dingtalk_payload(item: Outgoing) -> dict[str, Any]:
    """Markdown; a post that @s someone carries the number in ``at`` and in the text."""
    payload: dict[str, Any] = {
        "msgtype": "markdown",
        "markdown": {"title": item.subject or "督办提醒", "text": item.body},
    }
    if item.mention:
        payload["at"] = {"atMobiles": [item.mention], "isAtAll": False}
    return payload


def dingtalk_signed(url: str, secret: str, now_ms: int) -> str:
    """The webhook URL with DingTalk's timestamp and signature appended."""
    to_sign = f"{now_ms}\n{secret}".encode()
    digest = hmac.new(secret.encode(), to_sign, hashlib.sha256).digest()
    sign = urllib.parse.quote_plus(base64.b64encode(digest))
    return f"{url}&timestamp={now_ms}&sign={sign}"


class RobotSender:
    """Posts to the robots; its clocks come in: ``monotonic`` for the rate limit, ``now``
    for DingTalk's signature and Retry-After dates.

    A webhook in plain ``http://`` to a host that is not loopback is refused when the
    sender is made (``ConfigError``: the URL holds the robot's key), as a plaintext SMTP
    server is, unless ``[robots] allow_plaintext``.
    """

    def __init__(
        self,
        settings: RobotSettings,
        contacts: Contacts,
        monotonic: Callable[[], float] = time.monotonic,
        now: Callable[[], dt.datetime] = system_now,
    ) -> None:
        plaintext = [] if settings.allow_plaintext else contacts.plaintext_webhooks()
        if plaintext:
            where, what = plaintext[0]
            raise ConfigError(f"{where}: {what}")
        self.settings = settings
        self.contacts = contacts
        self._monotonic = monotonic
        self._now = now
        self._sent: dict[str, collections.deque[float]] = collections.defaultdict(collections.deque)
        self._client = httpx.AsyncClient(timeout=settings.timeout_s)

    def _slot_in(self, url: str) -> float:
        """Seconds until this robot may take another message (0: now)."""
        sent = self._sent[url]
        now = self._monotonic()
        while sent and now - sent[0] >= WINDOW_S:
            sent.popleft()
        if len(sent) < self.settings.per_minute:
            return 0.0
        return WINDOW_S - (now - sent[0])

    def _target(self, item: Outgoing) -> tuple[str, str]:
        who = self.contacts.reachable(item.to)
        if who is None or not who.webhook:
            raise DeliveryError(f"no webhook for {item.to} in contacts.toml", permanent=True)
        secret = os.environ.get(who.robot_secret_env, "") if who.robot_secret_env else ""
        if who.robot_secret_env and not secret:
            raise DeliveryError(
                f"{who.robot_secret_env} is not set (robot of {item.to})", permanent=False
            )
        return who.webhook, secret

    async def _send_one(self, item: Outgoing, report: Report) -> None:
        try:
            url, secret = self._target(item)
            wait = self._slot_in(url)
            if wait > 0:
                report(Result(item.id, "deferred", None, "robot rate limit", wait))
                return
            self._sent[url].append(self._monotonic())
            if item.channel == "dingtalk":
                payload = dingtalk_payload(item)
                if secret:
                    url = dingtalk_signed(url, secret, int(self._now().timestamp() * 1000))
            else:
                payload = wecom_payload(item)
            response = await post(self._client, url, self._now, json=payload)
            answer = response.json()
        except DeliveryError as error:
            report(Result.failed(item, error))
            return
        except ValueError:
            report(Result(item.id, "dead", response.status_code, "robot answer is not JSON"))
            return
        code = int(answer.get("errcode", -1)) if isinstance(answer, dict) else -1
        if code == 0:
            report(Result.sent(item, response.status_code, "ok"))
        elif code in RATE_LIMITED:
            report(Result(item.id, "retry", code, str(answer)[:200], WINDOW_S))
        else:
            report(Result(item.id, "dead", code, str(answer)[:200]))

    async def send(
        self, items: Sequence[Outgoing], report: Report, window: Window = always_open
    ) -> None:
        by_robot: dict[str, list[Outgoing]] = collections.defaultdict(list)
        for item in items:
            by_robot[item.to].append(item)

        async def one_robot(queue: list[Outgoing]) -> None:
            for item in queue:  # in order, one at a time per robot
                await window()
                await self._send_one(item, report)

        await asyncio.gather(*(one_robot(queue) for queue in by_robot.values()))

    async def close(self) -> None:
        await self._client.aclose()
