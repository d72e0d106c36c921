"""reminder.toml and the environment: every setting, validated once, passed down.

Where things are: ``REMINDER_CONFIG`` (the config folder, default ``config/``) and
``REMINDER_DB`` (an SQLAlchemy URL, default ``sqlite:///ledger.db``). Any key of
reminder.toml can be overridden by ``REMINDER_<SECTION>__<KEY>``, as pydantic-settings
does (``REMINDER_LEDGER__SEASON_START=11-01``). Nothing is read at import time.
"""

from __future__ import annotations

import datetime as dt
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from reminder.calendar import WorkCalendar, load_calendar_overrides
from reminder.errors import ConfigError
from reminder.ledger.deadline import SeasonRule
from reminder.policy import Policy

ENV_PREFIX = "REMINDER_"
DEFAULT_CONFIG_DIR = "config"
DEFAULT_DB = "sqlite:///ledger.db"


def _month_day(value: object) -> object:
    """'11-15' → (11, 15); checked against a leap year so 02-29 is allowed."""
    if isinstance(value, str):
        month, sep, day = value.partition("-")
        if not sep or not month.isdigit() or not day.isdigit():
            raise ValueError("must look like MM-DD, e.g. 11-15")
        try:
            dt.date(2000, int(month), int(day))
        except ValueError:
            raise ValueError(f"{value} is not a day of the year") from None
        return (int(month), int(day))
    return value


# NoDecode: a complex type would otherwise be read from the environment as JSON
MonthDay = Annotated[tuple[int, int], NoDecode, BeforeValidator(_month_day)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LedgerSettings(_Section):
    season_start: MonthDay = (11, 15)  # 采暖季 starts …
    season_end: MonthDay = (3, 15)  # … and ends in the next year

    @property
    def season(self) -> SeasonRule:
        return SeasonRule(start=self.season_start, end=self.season_end)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True
    )

    db: str = DEFAULT_DB
    timezone: str = "Asia/Shanghai"
    ledger: LedgerSettings = LedgerSettings()
    policy: Policy = Policy()

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

    def calendar(self, on_uncovered: Callable[[int], None] | None = None) -> WorkCalendar:
        """Working days: chinese-calendar, calendar.toml on top, the policy's choice."""
        days_off, working_days = load_calendar_overrides(self.calendar_path)
        return WorkCalendar(
            days_off,
            working_days,
            on_uncovered,
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


def _validation_message(path: Path, exc: ValidationError, env: Mapping[str, str]) -> str:
    error = exc.errors()[0]
    loc = [str(part) for part in error["loc"]]
    env_name = ENV_PREFIX + "__".join(loc).upper()
    key = f"[{loc[0]}] {'.'.join(loc[1:])}" if len(loc) > 1 else (loc[0] if loc else "")
    origin = f" (from {env_name})" if env_name in env else ""
    got = f" (got {error['input']!r})" if "input" in error and loc else ""
    return f"{path}: {key}: {error['msg']}{got}{origin}"


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
        raise ConfigError(_validation_message(path, exc, os.environ)) from None
    return Config(folder=folder, settings=settings)
