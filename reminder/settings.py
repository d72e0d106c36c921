"""reminder.toml and the environment: every setting, validated once, passed down.

Where things are: ``REMINDER_CONFIG`` (the config folder, default ``config/``) and
``REMINDER_DB`` (an SQLAlchemy URL, default ``sqlite:///ledger.db``). Any key of
reminder.toml can be overridden by ``REMINDER_<SECTION>__<KEY>``, as pydantic-settings
does (``REMINDER_LEDGER__SEASON_START=11-01``). Nothing is read at import time.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import tomllib
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from reminder.calendar import WorkCalendar
from reminder.errors import ConfigError
from reminder.ledger.deadline import SeasonRule
from reminder.policy import MonthDay, Policy

ENV_PREFIX = "REMINDER_"
DEFAULT_CONFIG_DIR = "config"
DEFAULT_DB = "sqlite:///ledger.db"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LedgerSettings(_Section):
    season_start: MonthDay = (11, 15)  # 采暖季 starts …
    season_end: MonthDay = (3, 15)  # … and ends in the next year

    @property
    def season(self) -> SeasonRule:
        return SeasonRule(start=self.season_start, end=self.season_end)


_LOOPBACK = {"localhost", "127.0.0.1", "::1"}


def on_loopback(url: str) -> bool:
    """The URL's host is this machine."""
    return (urllib.parse.urlsplit(url).hostname or "") in _LOOPBACK


def plaintext_http(url: str) -> bool:
    """An ``http://`` URL to a host that is not loopback: what it carries (a token, a
    robot's key) would cross the network in clear."""
    return urllib.parse.urlsplit(url).scheme.lower() == "http" and not on_loopback(url)


class SmtpSettings(_Section):
    """Email goes through SMTP when ``host`` is set, else to the file channel."""

    host: str = ""
    port: int = Field(default=587, ge=1, le=65535)
    tls: Literal["none", "starttls", "tls"] | None = None  # default: starttls, none on loopback
    allow_plaintext: bool = False  # plaintext to a non-loopback server, knowingly
    username: str = ""  # the password: REMINDER_SMTP_PASSWORD[_FILE], credential smtp_password
    from_address: str = "duban@example.org"
    from_name: str = "督办提醒"
    reply_to: str = ""
    connections: int = Field(default=16, ge=1, le=64)
    pipelining: bool = True  # RFC 2920, where the server offers it (false: one command at a time)
    timeout_s: float = Field(default=30.0, gt=0)
    ca_file: str = ""  # a CA bundle for a server with a private certificate

    @property
    def loopback(self) -> bool:
        return self.host in _LOOPBACK

    @property
    def security(self) -> str:
        if self.tls is not None:
            return self.tls
        return "none" if self.loopback else "starttls"

    @model_validator(mode="after")
    def _no_silent_plaintext(self) -> SmtpSettings:
        if self.host and self.security == "none" and not self.loopback and not self.allow_plaintext:
            raise ValueError(
                f'plaintext SMTP to {self.host} refused: set tls = "starttls" or "tls", '
                "or allow_plaintext = true"
            )
        for name in ("from_address", "reply_to"):
            value = getattr(self, name)
            if value and not _ADDRESS.match(value):
                raise ValueError(f"{name} {value!r} is not an e-mail address")
        return self


_ADDRESS = re.compile(r"^[^\s<>@\"]+@[^\s<>@\"]+\.[^\s<>@\"]+$")


class SmsSettings(_Section):
    """An HTTP SMS gateway; with no ``url`` SMS go to the file channel."""

    url: str = ""  # the token: REMINDER_SMS_TOKEN[_FILE] or credential sms_token
    allow_plaintext: bool = False  # an http:// url to a non-loopback gateway, knowingly
    auth_header: str = "Authorization"
    auth_scheme: str = "Bearer"
    body: str = '{"to": {{ to | tojson }}, "text": {{ text | tojson }}}'
    ok_json: dict[str, Any] = {}  # keys the gateway's JSON answer must have, e.g. {Code = "OK"}
    signature: str = ""  # "" → 【the office's short name】
    max_segments: int = Field(default=3, ge=1, le=10)
    # requests in flight at once, for the whole sender: at ~50 ms a request over the
    # internet, 8 carry ~160 SMS a second. More is slower on a fast gateway (httpx checks
    # every pooled connection for each request: 10,000 SMS to a loopback gateway took
    # 17.2 s of delivery at 4, 18.0 s at 8, 21.3 s at 16); lower it to a rate limit
    concurrency: int = Field(default=8, ge=1, le=64)
    timeout_s: float = Field(default=10.0, gt=0)

    @model_validator(mode="after")
    def _no_silent_plaintext(self) -> SmsSettings:
        # as for SMTP: the token never crosses the network in clear unless asked to
        if self.url and not re.match(r"^https?://[^\s/?#]+", self.url, re.IGNORECASE):
            # the URL itself is not shown: a gateway's may carry a key
            raise ValueError("url is not an http(s) URL (e.g. https://sms.example.org/send)")
        if self.url and plaintext_http(self.url) and not self.allow_plaintext:
            host = urllib.parse.urlsplit(self.url).hostname
            raise ValueError(
                f"plaintext HTTP to {host} refused (the token would travel in clear):"
                " use https://, or allow_plaintext = true"
            )
        return self


class RobotSettings(_Section):
    """WeCom and DingTalk group robots (webhook URLs in contacts.toml)."""

    per_minute: int = Field(default=20, ge=1)  # both services allow 20 messages a minute
    allow_plaintext: bool = False  # http:// webhooks to non-loopback hosts, knowingly
    timeout_s: float = Field(default=10.0, gt=0)


class DeliverySettings(_Section):
    batch: int = Field(default=1000, ge=1)  # messages claimed at once
    # a claim not marked or renewed by then is taken again (a live sender renews its
    # leases every third of this: a dead one's messages go to the others within it)
    lease_s: float = Field(default=20.0, gt=0)
    mark_every: int = Field(default=200, ge=1)  # outcomes committed together (the in-flight window)
    max_attempts: int = Field(default=8, ge=1)
    backoff_s: float = Field(default=60.0, gt=0)  # first retry; doubles each attempt …
    backoff_cap_s: float = Field(default=3600.0, gt=0)  # … up to this
    # `run --once` stops sending after this long; what it has not sent keeps its lease
    # (lease_s) and goes out in a later run
    run_deadline_s: float = Field(default=600.0, gt=0)
    outbox_dir: str = "var/outbox"  # the file channel
    # processes that render and build messages beside the one that sends them; -1: one
    # per CPU but the first (0 on a single CPU), 0: render in the sending process
    render_workers: int = Field(default=-1, ge=-1, le=16)

    @property
    def workers(self) -> int:
        if self.render_workers >= 0:
            return self.render_workers
        return min(4, max(0, (os.cpu_count() or 1) - 1))


class DigestSettings(_Section):
    """The supervisors' daily digest and the units' weekly agenda."""

    at: dt.time = dt.time(8, 30)  # on working days, local time
    agenda: bool = True  # each unit's first letter of a week carries its open tasks


class DaemonSettings(_Section):
    tick_s: float = Field(default=60.0, gt=0)  # how often due reminders are planned and sent
    stop_timeout_s: float = Field(default=10.0, gt=0)  # in-flight sends may finish this long


class OfficeSettings(_Section):
    """The office that sends the letters (落款) and takes the answers."""

    name: str = "济源市环境污染防治攻坚战领导小组办公室"
    short_name: str = "济源市攻坚办"  # SMS signature and robot posts
    contact: str = "攻坚办督办联络员"  # 联系人
    phone: str = "0391-0000000"
    email: str = "gongjianban@example.org"  # where answers go: the Reply-To of every letter
    address: str = ""
    code: str = "大气攻坚"  # 编号: 大气攻坚〔2018〕第8项

    @field_validator("email")
    @classmethod
    def _an_address(cls, value: str) -> str:
        if value and not _ADDRESS.match(value):
            raise ValueError(f"{value!r} is not an e-mail address")
        return value

    def number(self, year: int, task_no: int) -> str:
        """A task's 编号: the office's code, the ledger's year, the task's number."""
        return f"{self.code}〔{year}〕第{task_no}项" if self.code else f"第{task_no}项"


class WebSettings(_Section):
    """The answers web (`reminder web`): where it listens, the address people click, and
    how long a link in a letter or digest stays valid."""

    listen: str = "127.0.0.1:8080"  # host:port
    base_url: str = "http://127.0.0.1:8080"  # the address in the letters ("" = no links)
    link_days: int = Field(default=30, gt=0)
    state_dir: str = "var"  # attachments/ and, on the embedded default, web_secret
    max_upload_mb: int = Field(default=10, gt=0, le=100)

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, _, port = value.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{value!r} is not host:port (e.g. 127.0.0.1:8080)")
        return value

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        value = value.rstrip("/")
        if value and not re.fullmatch(r"https?://[^/\s?#]+(/[^\s?#]*)?", value):
            raise ValueError(
                f"{value!r} is not an http(s) address (e.g. https://duban.example.org)"
            )
        return value

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    @property
    def links_only_here(self) -> bool:
        """The letters' links point at this machine (the embedded default): they open
        only on it, not on a clerk's phone or desk."""
        return on_loopback(self.base_url)


class MessagesSettings(_Section):
    templates: str = ""  # a folder whose templates override the bundled ones


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True
    )

    db: str = DEFAULT_DB
    timezone: str = "Asia/Shanghai"
    ledger: LedgerSettings = LedgerSettings()
    policy: Policy = Policy()
    smtp: SmtpSettings = SmtpSettings()
    sms: SmsSettings = SmsSettings()
    robots: RobotSettings = RobotSettings()
    delivery: DeliverySettings = DeliverySettings()
    office: OfficeSettings = OfficeSettings()
    messages: MessagesSettings = MessagesSettings()
    digest: DigestSettings = DigestSettings()
    daemon: DaemonSettings = DaemonSettings()
    web: WebSettings = WebSettings()

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (e.g. Asia/Shanghai)") from None
        return value

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def reply_to(self) -> str:
        """Where an answer to an e-mail goes: ``[smtp] reply_to``, else the office."""
        return self.smtp.reply_to or self.office.email

    @property
    def sms_signature(self) -> str:
        """``[sms] signature``, else 【the office's short name】."""
        return self.sms.signature or f"【{self.office.short_name}】"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # the environment overrides reminder.toml (passed in as init arguments)
        return (env_settings, init_settings)


@dataclass(frozen=True, slots=True)
class Config:
    """Everything loaded from the config folder and the environment."""

    folder: Path
    settings: Settings

    @property
    def contacts_path(self) -> Path:
        return self.folder / "contacts.toml"

    @property
    def reminder_path(self) -> Path:
        return self.folder / "reminder.toml"

    @property
    def calendar_path(self) -> Path:
        return self.folder / "calendar.toml"

    def calendar(self) -> WorkCalendar:
        """Working days: calendar.toml's notices and exceptions over the packages' tables."""
        return WorkCalendar.from_file(
            self.calendar_path,
            working_days_only=self.settings.policy.working_days_only,
        )


def config_folder(env: Mapping[str, str]) -> Path:
    folder = env.get(f"{ENV_PREFIX}CONFIG")
    if folder is None:
        return Path(DEFAULT_CONFIG_DIR)
    path = Path(folder)
    if not path.is_dir():
        raise ConfigError(f"{ENV_PREFIX}CONFIG={folder}: no such folder")
    return path


def _validation_messages(path: Path, exc: ValidationError, env: Mapping[str, str]) -> list[str]:
    """One message per error: the file, the key, what is wrong, the value and where it came
    from (reminder.toml or an environment variable)."""
    messages = []
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        env_name = ENV_PREFIX + "__".join(loc).upper()
        key = f"[{loc[0]}] {'.'.join(loc[1:])}" if len(loc) > 1 else (loc[0] if loc else "")
        origin = f" (from {env_name})" if env_name in env else ""
        value = error.get("input")
        shown = loc and value is not None and not isinstance(value, dict)
        got = f" (got {value!r})" if shown else ""
        message = error["msg"].removeprefix("Value error, ")
        messages.append(f"{path}: {key}: {message}{got}{origin}")
    return messages


def load_config() -> Config:
    """Read reminder.toml from the config folder and apply the environment on top."""
    folder = config_folder(os.environ)
    path = folder / "reminder.toml"
    data: dict[str, Any] = {}
    if path.exists():
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read: {exc}") from None
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        first, *more = _validation_messages(path, exc, os.environ)
        raise ConfigError(first, more=more) from None
    return Config(folder=folder, settings=settings)
